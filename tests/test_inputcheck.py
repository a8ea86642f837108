"""The input check: a model of the training codes that flags codes unlike them (models.inputcheck), fitted with the
head, stored in its folder and applied by test_model.py and models.predict. Synthetic codes here; real films, their
inverted twins and photographs in tests/test_demo.py."""

import csv
import json

import numpy as np
import pytest

import test_model
import train_model
from helpers import CODES_META, cli, make_split
from models.headfolder import INPUT_CHECK_FILE, HeadFolder
from models.inputcheck import QUANTILE, InputCheck, summary
from models.labels import load_labels, save_labels


def relu_codes(n, seed, shift=0.0, shape=(32, 3, 3)):
    """ReLU-like codes whose channels vary together (a few latent factors), as a backbone's do."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(7).normal(size=(4, shape[0]))  # the same factors for every call
    latent = rng.normal(size=(n, 4)) @ mixing
    codes = np.maximum(latent[:, :, None, None] + rng.normal(scale=0.5, size=(n,) + shape) + 1.0 + shift, 0)
    return codes.astype(np.float32)


def test_a_shifted_cluster_is_flagged_and_the_training_cluster_is_not():
    train = relu_codes(200, seed=1)
    check = InputCheck().fit(train, groups=[f"p{i // 2}" for i in range(200)])
    assert check.record_["training_images"] == 200 and check.record_["training_groups"] == 100
    assert "5 folds" in check.record_["threshold_by"]
    like = check.flag(relu_codes(400, seed=2))[1]
    assert like.mean() < 0.05  # new codes of the same kind: about 1 - QUANTILE / 100 flagged
    assert check.flag(relu_codes(100, seed=3, shift=3.0))[1].all()
    other = relu_codes(100, seed=4)[:, ::-1]  # the same values, in other channels: another kind of image
    assert check.flag(other)[1].mean() > 0.95
    # out-of-fold: the threshold sits above the training codes' own distances, which a check that saw them shrinks
    assert np.mean(check.distance(train) > check.threshold_) < (100 - QUANTILE) / 100


def test_the_check_is_stored_with_the_head_and_applied_by_test_model(tmp_path, capsys):
    train = make_split(tmp_path / "train", ["normal", "nodule"], 20, seed=1, meta=CODES_META)
    models_dir = tmp_path / "m"
    assert cli(train_model.main, [*train, models_dir, "--epochs", 2, "--batch-size", 8, "--folds", 0,
                                  "--layout", "flat"], capsys)[0] == 0
    meta = json.loads((models_dir / "head.json").read_text())
    assert meta["input_check"]["file"] == INPUT_CHECK_FILE and meta["input_check"]["threshold"] > 0
    assert meta["input_check"]["training_images"] == 40 and meta["input_check"]["training_groups"] == 40
    assert "Mahalanobis" in meta["input_check"]["method"]
    check = HeadFolder(models_dir).input_check(meta)
    assert check.threshold_ == meta["input_check"]["threshold"]

    test = make_split(tmp_path / "test", ["normal", "nodule"], 6, seed=2, meta=CODES_META)
    status, out, _ = cli(test_model.main, [*test, models_dir, "--heatmaps", "none"], capsys)
    report = json.loads((models_dir / "eval" / "report.json").read_text())
    assert status == 0 and report["input_check"]["images"] == 12 and report["input_check"]["flagged"] <= 1
    # trained with --folds 0: nothing to recalibrate on, and the report says so
    assert report["calibration"]["method"] == "none" and "folds 0" in report["calibration"]["why"]
    assert "probabilities not recalibrated" in out
    with open(models_dir / "eval" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(float(row["training_distance"]) >= 0 and row["unlike_training"] in ("true", "false") for row in rows)
    assert all(row["group"] == "" for row in rows)  # the label file names no patients
    # codes of another kind: each named, the set warned about, still scored
    odd = make_split(tmp_path / "odd", ["normal", "nodule"], 6, seed=3, meta=CODES_META, separation=12.0)
    odd_labels = load_labels(odd[2])  # patients of two images each: predictions.csv names each image's one
    save_labels(odd[2], odd_labels.classes, odd_labels.labels,
                {name: f"p{i // 2}" for i, name in enumerate(sorted(odd_labels.labels))}, "patients")
    status, out, _ = cli(test_model.main, [*odd, models_dir, "--heatmaps", "none", "--out", tmp_path / "oddeval"],
                         capsys)
    report = json.loads((tmp_path / "oddeval" / "report.json").read_text())
    assert status == 0 and report["input_check"]["flagged"] == 12 and report["n"] == 12
    assert out.count("is unlike the training films") == 12 and "12 of 12 images (100%) are unlike" in out
    with open(tmp_path / "oddeval" / "predictions.csv", newline="") as f:
        groups = {row["file"]: row["group"] for row in csv.DictReader(f)}
    assert groups == {name: f"p{i // 2}" for i, name in enumerate(sorted(odd_labels.labels))}
    # 40 training images: the report and the warning say how little the threshold rests on
    assert report["input_check"]["training_images"] == 40 and report["input_check"]["uncertain"] is True
    assert "rests on 40 training images" in report["input_check"]["note"]
    assert "note: the threshold rests on 40 training images" in out

    # a head trained before the count was kept still loads, and its count is unknown
    del meta["input_check"]["training_images"], meta["input_check"]["training_groups"]
    (models_dir / "head.json").write_text(json.dumps(meta))
    status, out, _ = cli(test_model.main, [*odd, models_dir, "--heatmaps", "none", "--out", tmp_path / "old"], capsys)
    report = json.loads((tmp_path / "old" / "report.json").read_text())
    assert status == 0 and report["input_check"]["training_images"] is None and report["input_check"]["uncertain"]
    assert "unknown number of training images" in out

    # a damaged check is one error line, not a traceback
    (models_dir / INPUT_CHECK_FILE).write_bytes(b"not a zip")
    status, _, err = cli(test_model.main, [*test, models_dir, "--heatmaps", "none"], capsys)
    assert status == 2 and err.count("error:") == 1 and INPUT_CHECK_FILE in err


@pytest.mark.parametrize("n", [9, 17, 32])
def test_the_check_fits_the_covariances_scipys_default_eigensolver_fails_on(n):
    # bench.run --quick's codes: with their first 9 or 17 images, scikit-learn's precision (LAPACK dsyevr in scipy
    # 1.11's OpenBLAS) raised 'Internal Error' on AMD Zen 5
    from sklearn.covariance import LedoitWolf

    from models.inputcheck import pooled

    codes = np.maximum(np.random.default_rng(0).standard_normal((32, 512, 7, 7), dtype=np.float32), 0)[:n]
    check = InputCheck().fit(codes)
    covariance = LedoitWolf(store_precision=False).fit(pooled(codes)).covariance_
    assert np.allclose(check.precision_ @ covariance, np.eye(512), atol=1e-8)
    assert np.isfinite(check.threshold_) and check.threshold_ > 0


@pytest.mark.parametrize("groups", [None, ["one"] * 30])
def test_few_groups_still_give_a_threshold(groups):
    check = InputCheck().fit(relu_codes(30, seed=5), groups)
    assert check.threshold_ > 0 and ("one group" in check.record_["threshold_by"]) == (groups is not None)


def test_the_summary_says_what_the_threshold_rests_on():
    names, distances, flags = ["a", "b", "c"], np.array([1.0, 2.0, 9.0]), np.array([False, False, True])
    record, lines = summary(names, distances, flags, 5.0, trained_on=28)
    assert record["training_images"] == 28 and record["uncertain"] and "28 training images" in record["note"]
    assert "warning: 1 of 3 images" in lines and "note: the threshold rests on 28 training images" in lines
    record, lines = summary(names, distances, flags, 5.0, trained_on=500)
    assert record["training_images"] == 500 and not record["uncertain"] and record["note"] is None
    assert "note:" not in lines
    assert summary(names, distances, np.zeros(3, bool), 5.0, trained_on=28)[1] is None  # nothing flagged: silent
    assert "unknown number" in summary(names, distances, flags, 5.0)[0]["note"]
