"""The feature-code store (models/codes.py): rows written in pieces and resumed, skipped files left out, other codes
started over, and an incomplete store refused."""

import numpy as np
import pytest

from models.codes import CodeStore, CodeWriter


def test_code_store_round_trip_and_resume(tmp_path):
    files = [f"f{i}.png" for i in range(5)]
    meta = {"model": "m", "layer": "l"}
    writer = CodeWriter(tmp_path, files, (2, 3), meta)
    writer.write(np.ones((2, 2, 3)), {})
    resumed = CodeWriter(tmp_path, files, (2, 3), meta)
    assert resumed.rows_done == 2
    resumed.write(np.full((3, 2, 3), 2.0), {"f3.png": "broken"})
    store = CodeStore(tmp_path)
    assert store.names == ["f0.png", "f1.png", "f2.png", "f4.png"]
    assert store.read(["f4.png", "f0.png"])[:, 0, 0].tolist() == [2.0, 1.0]
    restarted = CodeWriter(tmp_path, files, (2, 3), dict(meta, layer="other"))  # other layer: start over
    assert restarted.rows_done == 0


def test_incomplete_codes_are_refused(tmp_path):
    CodeWriter(tmp_path, ["a.png", "b.png"], (1,), {}).write(np.zeros((1, 1)))
    with pytest.raises(Exception, match="incomplete .*run train.py again"):
        CodeStore(tmp_path)

