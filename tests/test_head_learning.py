"""How the head learns on small, imbalanced data: class weights, validation by group, the operating point, checkpoint
keeping, and the original recipe kept exact. Small generated codes; the real radiographs are in `make accuracy`. The
layout's inner cross-validation: tests/test_selection.py; the estimator's own arithmetic (class weights,
standardisation, the SGD step): tests/test_classifier.py."""

import json
import os

import numpy as np

import test_model
import train_model
from helpers import (
    CODE_SHAPE,
    check_report_against_csv,
    cli,
    fail,
    make_split,
    read_params,
)
from models import head
from models.classifier import RECIPES, HeadClassifier, TrainSettings
from models.headfolder import META_FILE, params_file
from models.labels import load_labels, save_labels


def imbalanced_codes(n_major, n_minor, seed, signal=0.45):
    """Gamma-distributed (ReLU-like) codes; the minority class is shifted a little along a fixed direction."""
    rng = np.random.default_rng(seed)
    shape = (16, 3, 3)
    direction = np.abs(np.random.default_rng(99).normal(size=shape[0]))
    targets = np.array([0] * n_major + [1] * n_minor)
    shift = (signal * targets[:, None] * direction)[:, :, None, None]
    codes = rng.gamma(2.0, 1.0, size=(len(targets),) + shape) + shift
    return codes.astype(np.float32), targets


def recalls(fitted, codes, targets):
    decided = fitted.predict(codes)
    return [float(np.mean(decided[targets == c] == c)) for c in (0, 1)]


def test_defaults_learn_the_rare_class_where_the_original_recipe_collapses():
    codes, targets = imbalanced_codes(260, 20, seed=3)  # 13:1, the shape of Open-i normal vs nodule
    test_codes, test_targets = imbalanced_codes(130, 10, seed=4)
    groups = [f"g{i}" for i in range(len(targets))]
    fitted = HeadClassifier(TrainSettings()).fit(codes, targets, groups, classes=["normal", "nodule"])
    normal, nodule = recalls(fitted, test_codes, test_targets)
    assert normal > 0.6 and nodule > 0.6, (normal, nodule)
    point = fitted.operating_point_  # from every training image's out-of-fold probability, no hold-out
    assert fitted.threshold_ == point["threshold"] and point["images"] == {"normal": 260, "nodule": 20}
    assert fitted.selection_["folds"] == 5 and not any("val_loss" in entry for entry in fitted.history_)
    original = HeadClassifier(TrainSettings(**RECIPES["xvision"])).fit(codes, targets, groups,
                                                                       classes=["normal", "nodule"])
    assert original.threshold_ == 0.5 and recalls(original, test_codes, test_targets)[1] <= 0.3  # nodules missed


def test_balanced_class_weights_train_the_same_head_as_none_for_equal_classes(tmp_path, capsys):
    train = make_split(tmp_path / "d", ["normal", "nodule"], 12, seed=1)  # equal classes
    common = ["--epochs", 2, "--batch-size", 8, "--val-fraction", 0]
    for weight in ("balanced", "none"):
        assert cli(train_model.main, [*train, tmp_path / weight, *common, "--class-weight", weight], capsys)[0] == 0
    a, b = (read_params(tmp_path / w / params_file(2)) for w in ("balanced", "none"))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_original_recipe_is_plain_sgd_on_flat_codes_exactly(tmp_path, capsys):
    """--recipe xvision against the original's loop written out with gluon.Trainer: the same weights, bit for bit."""
    import mxnet as mx
    from mxnet import autograd, gluon

    images, codes_dir, labels_path = make_split(tmp_path / "d", ["normal", "nodule"], 17, seed=2)
    os.remove(os.path.join(images, "nodule_016.png"))  # 33 images: batches of 8, 8, 8 and 9 (no batch of one)
    assert cli(train_model.main, [images, codes_dir, labels_path, tmp_path / "m", "--recipe", "xvision", "--epochs", 3,
                                  "--batch-size", 8, "--seed", 4], capsys)[0] == 0
    meta = json.load(open(tmp_path / "m" / META_FILE))
    assert meta["head"]["pool"] == "none" and not meta["head"]["standardize"] and meta["best_epoch"] is None
    assert meta["validation"]["images"] == [] and meta["training"]["class_weights"] == {"normal": 1.0, "nodule": 1.0}

    from models.codes import CodeStore
    store, labels = CodeStore(codes_dir), load_labels(labels_path)
    names = sorted(os.listdir(images))
    codes, truth = store.read(names), np.array(labels.indices(names), dtype=np.float32)
    net = head.build_head(2, CODE_SHAPE)
    mx.random.seed(4)
    net.initialize(mx.init.Xavier())
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01})
    for epoch in (1, 2, 3):
        order = np.random.default_rng([4, epoch]).permutation(len(names))
        for batch in (order[:8], order[8:16], order[16:24], order[24:]):
            with autograd.record():
                loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(mx.nd.array(codes[batch])), mx.nd.array(truth[batch]))
            loss.backward()
            trainer.step(len(batch))
    saved = read_params(tmp_path / "m" / params_file(3))
    for name, param in net.collect_params().items():
        prefix = "aux:" if "running" in name else "arg:"
        np.testing.assert_array_equal(saved[prefix + name], param.data().asnumpy(), err_msg=name)


def test_validation_keeps_groups_whole_and_scores_every_epoch(tmp_path, capsys):
    images, codes, labels_path = make_split(tmp_path / "d", ["normal", "nodule"], 20, seed=3)
    data = json.load(open(labels_path))
    groups = {name: f"patient{i // 3}" for i, name in enumerate(sorted(data["labels"]))}  # 3 images a patient
    save_labels(tmp_path / "grouped.json", data["classes"], data["labels"], groups)
    models_dir = tmp_path / "m"
    status, out, _ = cli(train_model.main, [images, codes, tmp_path / "grouped.json", models_dir, "--epochs", 3,
                                            "--batch-size", 8, "--val-fraction", 0.3], capsys)
    assert status == 0 and "validation:" in out
    meta = json.load(open(models_dir / META_FILE))
    held = set(meta["validation"]["images"])
    assert 6 <= len(held) <= 18 and meta["training"]["n_images"] == 40 - len(held)
    assert not {groups[n] for n in held} & {groups[n] for n in data["labels"] if n not in held}
    for c in ("normal", "nodule"):
        assert any(data["labels"][n] == c for n in held)
    for entry in meta["history"]:
        assert {"val_loss", "val_accuracy", "val_balanced_accuracy", "val_roc_auc", "threshold"} <= set(entry)
    best = max(meta["history"], key=lambda e: (e["val_roc_auc"], -e["val_loss"]))["epoch"]
    assert meta["best_epoch"] == best
    assert os.path.getsize(models_dir / "training_curve.png") > 0

    # a class that is one group cannot be split: one clear line, nothing written
    save_labels(tmp_path / "one.json", data["classes"], data["labels"],
                {n: ("all-normal" if c == "normal" else n) for n, c in data["labels"].items()})
    line = fail(train_model.main, [images, codes, tmp_path / "one.json", tmp_path / "m2", "--val-fraction", 0.2], capsys)
    assert "--val-fraction 0.2 leaves class 'normal' with no training images left" in line and "1 groups" in line
    assert not (tmp_path / "m2").exists()


def test_the_positive_class_and_the_operating_point_are_recorded_and_reach_the_test_report(tmp_path, capsys):
    """Which class is positive and where the threshold lies (models.metrics' arithmetic: tests/test_metrics.py), as
    train_model.py records them and test_model.py reports at them."""
    train = make_split(tmp_path / "train", ["nodule", "normal"], 20, seed=5, separation=1.0)
    test = make_split(tmp_path / "test", ["nodule", "normal"], 12, seed=6, separation=1.0)
    models_dir = tmp_path / "m"
    assert cli(train_model.main, [*train, models_dir, "--epochs", 4, "--batch-size", 8, "--val-fraction", 0.25],
               capsys)[0] == 0
    meta = json.load(open(models_dir / META_FILE))
    assert meta["positive_class"] == "nodule"  # the class not named like normal, though it sorts first
    status, out, _ = cli(test_model.main, [*test, models_dir, "--epoch", "best", "--out", tmp_path / "eval"], capsys)
    assert status == 0 and "threshold" in out and "at 0.5" in out and "95% CI" in out
    report = check_report_against_csv(tmp_path / "eval")
    assert report["epoch"] == meta["best_epoch"] and report["epoch_choice"].startswith("best")
    # the threshold comes from the inner cross-validation's out-of-fold probabilities, not the hold-out
    point = report["operating_point"]
    assert point["threshold"] == meta["operating_point"]["threshold"] and point["positive_class"] == "nodule"
    assert point["images"] == {"nodule": 20, "normal": 20} and point["source"].startswith("out-of-fold")
    assert "out-of-fold" in point["chosen_by"] and "20 nodule, 20 normal" in point["chosen_by"]

    # without inner cross-validation the hold-out sets it, epoch by epoch, as before
    assert cli(train_model.main, [*train, tmp_path / "m0", "--epochs", 4, "--batch-size", 8, "--val-fraction", 0.25,
                                  "--folds", 0, "--layout", "avg"], capsys)[0] == 0
    meta = json.load(open(tmp_path / "m0" / META_FILE))
    assert cli(test_model.main, [*test, tmp_path / "m0", "--epoch", "best", "--out", tmp_path / "e0"], capsys)[0] == 0
    entry = next(e for e in meta["history"] if e["epoch"] == meta["best_epoch"])
    point = json.load(open(tmp_path / "e0" / "report.json"))["operating_point"]
    assert {key: point[key] for key in ("positive_class", "threshold", "chosen_by")} == {
        "positive_class": "nodule", "threshold": entry["threshold"],
        "chosen_by": f"the balanced point of the validation images at epoch {entry['epoch']}"}
    assert "binary, positive class 'nodule'" == report["roc_auc"]["method"]
    assert os.path.getsize(tmp_path / "eval" / "roc_curve.png") > 0

    line = fail(train_model.main, [*train, tmp_path / "m2", "--positive", "effusion"], capsys)
    assert "--positive 'effusion'" in line and "nodule" in line
    assert cli(train_model.main, [*train, tmp_path / "m3", "--epochs", 1, "--batch-size", 8, "--positive", "normal"],
               capsys)[0] == 0
    assert json.load(open(tmp_path / "m3" / META_FILE))["positive_class"] == "normal"


def test_keep_removes_old_checkpoints_but_never_the_best(tmp_path, capsys):
    train = make_split(tmp_path / "d", ["normal", "nodule"], 16, seed=7)
    models_dir = tmp_path / "m"
    common = ["--batch-size", 8, "--keep", 2, "--val-fraction", 0.25]
    assert cli(train_model.main, [*train, models_dir, "--epochs", 6, *common], capsys)[0] == 0
    meta = json.load(open(models_dir / META_FILE))
    kept = {5, 6, meta["best_epoch"]}
    assert {e["epoch"] for e in meta["history"] if e["params"]} == kept
    assert {n for n in os.listdir(models_dir) if n.endswith(".params")} == {params_file(e) for e in kept}
    gone = min(set(range(1, 7)) - kept)
    line = fail(test_model.main, [*train, models_dir, "--epoch", gone], capsys)
    assert "removed (--keep)" in line and "kept checkpoints: epochs" in line
    # resuming longer goes on pruning; the best stays whatever its age
    assert cli(train_model.main, [*train, models_dir, "--epochs", 8, *common, "--resume"], capsys)[0] == 0
    meta = json.load(open(models_dir / META_FILE))
    assert {e["epoch"] for e in meta["history"] if e["params"]} == {7, 8, meta["best_epoch"]}
    for bad in (["--keep", 0], ["--val-fraction", 1], ["--dropout", -0.1], ["--lr", "inf"], ["--folds", 1]):
        line = fail(train_model.main, [*train, tmp_path / "bad", *bad], capsys)
        assert bad[0] in line
    assert not (tmp_path / "bad").exists()
