"""Splits by group (models/splits.py): a hold-out keeps every group (patient) on one side and each class in
proportion, drawn by the seed; group ids come from a file-name pattern's first capture group, with one-line errors."""

import pytest

from models.errors import UserError
from models.splits import grouped_holdout, groups_from_pattern


def test_grouped_holdout_keeps_groups_whole_and_classes_in_proportion():
    labels = ["a"] * 12 + ["b"] * 6
    groups = [f"p{i // 2}" for i in range(18)]  # pairs
    kept, held = grouped_holdout(labels, groups, ["a", "b"], 0.34, seed=1)
    assert sorted(kept + held) == list(range(18))
    assert not {groups[i] for i in kept} & {groups[i] for i in held}
    assert sum(labels[i] == "a" for i in held) == 4 and sum(labels[i] == "b" for i in held) == 2
    assert grouped_holdout(labels, groups, ["a", "b"], 0.34, seed=1) == (kept, held)
    assert grouped_holdout(labels, groups, ["a", "b"], 0.34, seed=2) != (kept, held)


def test_groups_from_pattern_take_the_first_capture_group_or_say_what_is_wrong():
    assert groups_from_pattern(["00001_000.png", "00001_001.png", "00002_000.png"], r"^(\d+)_") == \
        ["00001", "00001", "00002"]
    with pytest.raises(UserError, match=r"matches no group id in 1 of 2 file names: 'scan.png'"):
        groups_from_pattern(["00001_000.png", "scan.png"], r"^(\d+)_")
    with pytest.raises(UserError, match="no capture group"):
        groups_from_pattern(["00001_000.png"], r"^\d+_")
    with pytest.raises(UserError, match="not a regular expression"):
        groups_from_pattern(["00001_000.png"], r"^(\d+_")
