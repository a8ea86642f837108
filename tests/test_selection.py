"""The head chooses by evidence: the inner cross-validation picks the layout the data call for, and the threshold
comes from every training image's out-of-fold probability (DeLong's AUC intervals: tests/test_metrics.py). Small
generated codes whose signal is positional (only the flattened grid sees it) or shift-invariant (the average sees it,
the grid spreads it over positions); the real radiographs are in `make accuracy`."""

import json
import os
from dataclasses import replace

import numpy as np
import pytest

import test_model
import train_model
from helpers import CODES_META, cli, make_split
from models import head, metrics, selection
from models.classifier import HeadClassifier, TrainSettings, head_record
from models.headfolder import META_FILE, HeadFolder
from models.heatmaps import grad_cam

SHAPE = (16, 4, 4)


def positional_codes(per_class, seed):
    """Both classes carry the same bump in channel 0; class 0 at the top-left cell, class 1 at the bottom-right.
    The channel means are alike, so only a model that sees the grid separates them."""
    rng = np.random.default_rng(seed)
    codes = rng.gamma(2.0, 1.0, size=(2 * per_class,) + SHAPE)
    targets = np.repeat([0, 1], per_class)
    codes[targets == 0, 0, 0, 0] += 6.0
    codes[targets == 1, 0, 3, 3] += 6.0
    return codes.astype(np.float32), targets


def shift_invariant_codes(per_class, seed):
    """Class 1 has a bump in channel 0 at a random cell: its channel mean is higher wherever the bump is."""
    rng = np.random.default_rng(seed)
    codes = rng.gamma(2.0, 1.0, size=(2 * per_class,) + SHAPE)
    targets = np.repeat([0, 1], per_class)
    for i in np.flatnonzero(targets == 1):
        codes[i, 0, rng.integers(4), rng.integers(4)] += 12.0
    return codes.astype(np.float32), targets


SETTINGS = TrainSettings(epochs=10, batch_size=16)


# the layout the signal calls for, and what auto may choose: that one alone, or the heads of both averaged when that
# one does not beat them by more than a standard error (averaging in a weaker head often costs little: see
# test_the_averaged_heads_win_unless_one_layout_beats_them_by_a_standard_error)
@pytest.mark.parametrize("make_codes, right, allowed", [(positional_codes, "flat", {"flat"}),
                                                        (shift_invariant_codes, "avg", {"avg", "both"})])
def test_auto_picks_the_layout_the_signal_calls_for(make_codes, right, allowed):
    codes, targets = make_codes(40, seed=1)
    groups = [f"g{i}" for i in range(len(targets))]
    fitted = HeadClassifier(SETTINGS).fit(codes, targets, groups, classes=["normal", "nodule"])
    choice, point = fitted.selection_, fitted.operating_point_
    assert choice["winner"] in allowed, choice
    candidates = choice["candidates"]
    assert list(candidates) == ["avg", "flat", "both"] and choice["folds"] == 5 and choice["images"] == 80
    for row in candidates.values():
        low, high = row["ci95"]
        assert 0 <= low <= row["roc_auc"] <= high <= 1
    wrong = ({"avg", "flat"} - {right}).pop()
    assert candidates[right]["roc_auc"] > 0.8 and candidates[right]["roc_auc"] > candidates[wrong]["roc_auc"] + 0.1
    assert point["images"] == {"normal": 40, "nodule": 40} and 0 < point["threshold"] < 1

    # what is then trained generalises: the chosen layout on new codes of the same kind, at the out-of-fold threshold
    assert fitted.layout_ == choice["winner"] and fitted.threshold_ == point["threshold"]
    assert fitted.cv_results_[choice["winner"]]["threshold"] == point["threshold_uncalibrated"]
    assert fitted.calibration_.threshold(point["threshold_uncalibrated"]) == point["threshold"]
    test_codes, test_targets = make_codes(30, seed=2)
    assert metrics.roc_auc(test_targets, fitted.predict_proba(test_codes), 1) > 0.8


def test_both_is_its_branches_trained_as_alone_and_exports_the_mean_of_their_probabilities(tmp_path):
    codes, targets = positional_codes(20, seed=3)
    classes = ["normal", "nodule"]
    settings = TrainSettings(epochs=3, batch_size=16, dropout=0.0)  # no dropout: no random masks to differ
    both = HeadClassifier(replace(settings, layout="both", folds=0)).fit(codes, targets, classes=classes)
    together = both.net_.collect_params()
    for name in ("avg", "flat"):  # each branch is bit for bit the layout trained alone (same seed, same batches)
        alone = HeadClassifier(replace(settings, layout=name, folds=0)).fit(codes, targets, classes=classes)
        alone = alone.net_.collect_params()
        assert len(alone.keys()) == len([key for key in together.keys() if key.startswith(f"head_{name}_")])
        for key, param in alone.items():
            np.testing.assert_array_equal(param.data().asnumpy(),
                                          together[key.replace("head_", f"head_{name}_", 1)].data().asnumpy())
    test_codes = positional_codes(10, seed=4)[0]
    proba = {name: both.predict_proba(test_codes, layout=name) for name in ("avg", "flat", "both")}
    np.testing.assert_allclose(proba["both"], (proba["avg"] + proba["flat"]) / 2, atol=1e-6)
    # the checkpoint, loaded without training code, gives the same; Grad-CAM runs through both branches
    folder = HeadFolder(tmp_path)
    folder.save_epoch(both.net_, 1)
    exported = head.predict_proba(folder.load_predictor(1), test_codes)
    np.testing.assert_allclose(exported, proba["both"], atol=1e-6)
    meta = {"classes": classes, "code_shape": list(SHAPE), "head": head_record(settings.for_layout("both"))}
    assert meta["head"]["branches"]["avg"]["lr"] == 0.03 and meta["head"]["branches"]["flat"]["lr"] == 0.01
    maps = grad_cam(head.gradient_net(meta, folder.epoch_weights(1)), test_codes, np.ones(20, dtype=int))
    assert maps.shape == (20, 4, 4) and np.all(np.isfinite(maps)) and maps.max() > 0


def test_inner_folds_keep_groups_whole_and_shrink_for_few_groups():
    targets = np.array([0] * 30 + [1] * 9)
    groups = [f"n{i // 2}" for i in range(30)] + [f"p{i // 3}" for i in range(9)]  # the rarer class: 3 groups
    held_out, note = selection.inner_folds(targets, groups, 5, seed=0)
    assert len(held_out) == 3 and "3 folds instead of 5" in note and "only 3 groups" in note
    assert sorted(np.concatenate(held_out).tolist()) == list(range(39))
    for test in held_out:
        inside = {groups[i] for i in test}
        outside = {groups[i] for i in range(39) if i not in set(test.tolist())}
        assert not inside & outside and 0 in targets[test]
    held_out, note = selection.inner_folds(targets, ["one"] * 30 + [f"p{i}" for i in range(9)], 5, seed=0)
    assert held_out == [] and "only 1 group" in note


def test_too_few_groups_fall_back_to_the_averaged_heads_and_threshold_half():
    codes, targets = positional_codes(6, seed=0)
    groups = ["a"] * 6 + [f"p{i}" for i in range(6)]  # the first class is one patient
    fitted = HeadClassifier(SETTINGS).fit(codes, targets, groups, classes=["normal", "nodule"])
    choice = fitted.selection_
    assert choice["winner"] == "both" and choice["folds"] == 0 and "no cross-validation" in choice["why"]
    assert fitted.operating_point_ is None and fitted.cv_results_ == {} and fitted.layout_ == "both"
    assert fitted.threshold_ == 0.5
    assert fitted.calibration_ is None and "no inner cross-validation" in fitted.calibration_note_


def test_the_averaged_heads_win_unless_one_layout_beats_them_by_a_standard_error():
    rng = np.random.default_rng(0)
    targets = np.repeat([0, 1], 30)
    score = targets + rng.normal(scale=1.0, size=60)
    as_proba = lambda s: np.stack([1 - s, s], axis=1)  # noqa: E731
    results = {"avg": {"proba": as_proba(score + rng.normal(scale=0.3, size=60))},  # almost the same ranking
               "flat": {"proba": as_proba(rng.normal(size=60))}, "both": {"proba": as_proba(score)}}
    aucs = {name: metrics.roc_auc(targets, r["proba"], 1) for name, r in results.items()}
    winner, why = selection.choose(results, targets, 1)
    assert winner == "both", why
    assert "within one standard error" in why if aucs["avg"] > aucs["both"] else "highest" in why
    results["avg"]["proba"] = as_proba(targets * 5.0 + rng.normal(size=60))  # clearly better
    winner, why = selection.choose(results, targets, 1)
    assert winner == "avg" and "more than one standard error" in why and "against flat" in why


def test_operating_point_is_where_out_of_fold_sensitivity_equals_specificity():
    rng = np.random.default_rng(1)
    targets = np.repeat([0, 1], [90, 30])
    leaning = 0.8 + 0.1 * targets + rng.normal(scale=0.05, size=120)  # well ranked, but every score above 0.5
    point = selection.balanced_point(np.stack([1 - leaning, leaning], 1), targets, ["normal", "nodule"], 1)
    decided = metrics.decide(np.stack([1 - leaning, leaning], 1), 1, point["threshold"])
    sensitivity, specificity = np.mean(decided[targets == 1] == 1), np.mean(decided[targets == 0] == 0)
    assert 0.8 < point["threshold"] < 0.9 and abs(sensitivity - specificity) <= 1 / 30
    assert point["out_of_fold_balanced_accuracy"] > point["out_of_fold_balanced_accuracy_at_half"] == 0.5
    assert point["images"] == {"normal": 90, "nodule": 30} and "sensitivity equals specificity" in point["why"]
    few = np.array([0] * 6 + [1] * 40)
    point = selection.balanced_point(np.full((46, 2), 0.5), few, ["normal", "nodule"], 1)
    assert point["threshold"] == 0.5 and "only 6 training images" in point["why"]
    assert point["images"] == {"normal": 6, "nodule": 40}


def test_train_model_records_the_choice_and_resume_keeps_it(tmp_path, capsys):
    train = make_split(tmp_path / "d", ["normal", "nodule"], 15, seed=4, shape=SHAPE, meta=CODES_META)
    models_dir = tmp_path / "m"
    common = ["--epochs", 3, "--batch-size", 8]
    status, out, _ = cli(train_model.main, [*train, models_dir, *common], capsys)
    assert status == 0 and "inner cross-validation, 5 folds on 30 training images" in out
    assert "<- chosen" in out and "threshold for 'nodule'" in out
    meta = json.load(open(models_dir / META_FILE))
    choice = meta["selection"]
    assert choice["winner"] == meta["head"]["layout"] == meta["training"]["layout"]
    assert meta["training"]["layout_requested"] == "auto" and meta["training"]["n_images"] == 30
    assert meta["operating_point"]["images"] == {"normal": 15, "nodule": 15}

    # interrupted after the choice, before epoch 1: --resume goes on without choosing again
    meta["history"], meta["best_epoch"] = [], None
    HeadFolder(models_dir).write_meta(meta)
    status, out, _ = cli(train_model.main, [*train, models_dir, *common, "--resume"], capsys)
    assert status == 0 and "inner cross-validation" not in out
    assert json.load(open(models_dir / META_FILE))["selection"] == choice

    # a fixed layout without inner cross-validation: no selection, no out-of-fold threshold
    status, out, _ = cli(train_model.main, [*train, tmp_path / "fixed", *common, "--layout", "flat", "--folds", 0],
                         capsys)
    fixed = json.load(open(tmp_path / "fixed" / META_FILE))
    assert status == 0 and fixed["selection"] is None and fixed["operating_point"] is None
    assert fixed["head"]["pool"] == "none" and fixed["training"]["lr"] == 0.01
    assert os.path.getsize(tmp_path / "fixed" / "training_curve.png") > 0

    # --layout both forced: its branches are scored too, but it is what is trained, whatever they score; test_model.py
    # evaluates it like any head
    status, out, _ = cli(train_model.main, [*train, tmp_path / "both", *common, "--layout", "both"], capsys)
    forced = json.load(open(tmp_path / "both" / META_FILE))
    assert status == 0 and forced["head"]["layout"] == forced["selection"]["winner"] == "both"
    assert list(forced["selection"]["candidates"]) == ["avg", "flat", "both"]
    assert forced["selection"]["why"] == "layout both, as set" and forced["training"]["lr"] is None
    assert forced["selection"]["candidates"]["both"]["lr"] == {"avg": 0.03, "flat": 0.01}
    test = make_split(tmp_path / "t", ["normal", "nodule"], 6, seed=5, shape=SHAPE, meta=CODES_META)
    status, out, _ = cli(test_model.main, [*test, tmp_path / "both", "--heatmaps", "none"], capsys)
    report = json.load(open(tmp_path / "both" / "eval" / "report.json"))
    assert status == 0 and report["roc_auc"]["value"] > 0.9
