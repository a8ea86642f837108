"""Steps 4 and 5 on small generated codes: training, resume, validation, evaluation report and every error path."""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

import test_model
import train_model
from helpers import (
    CODE_SHAPE,
    CODES_META,
    check_report_against_csv,
    cli,
    fail,
    make_split,
    read_params,
    run_quietly,
)
from models import classifier, head
from models.codes import CodeStore
from models.headfolder import META_FILE, HeadFolder, params_file
from models.labels import save_labels


@pytest.fixture(scope="module")
def two_class(tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    return make_split(root / "train", ["normal", "nodule"], 24, seed=1), \
        make_split(root / "test", ["normal", "nodule"], 10, seed=2)


@pytest.fixture(scope="module")
def trained(two_class, tmp_path_factory):
    """A head trained for 6 epochs on the two-class data (shared by the evaluation tests, which only read it)."""
    (train, _), models_dir = two_class, str(tmp_path_factory.mktemp("models") / "head")
    code = run_quietly(train_model.main, [*train, models_dir, "--epochs", 6, "--batch-size", 8, "--gpus", "none"])
    assert code == 0
    return models_dir


def test_training_writes_checkpoints_metadata_and_curve(two_class, trained, capsys):
    meta = json.load(open(os.path.join(trained, META_FILE)))
    assert meta["classes"] == ["normal", "nodule"] and meta["code_shape"] == list(CODE_SHAPE)
    assert meta["backbone"]["layer"] == "fake_layer" and meta["backbone"]["model_sha256"] == CODES_META["model_sha256"]
    assert meta["training"]["epochs"] == 6 and meta["training"]["seed"] == 0
    assert meta["training"]["lr"] == classifier.LAYOUT_LR.get(meta["head"]["layout"])
    assert [e["epoch"] for e in meta["history"]] == list(range(1, 7))
    assert meta["history"][-1]["loss"] < meta["history"][0]["loss"]
    assert list(meta["selection"]["candidates"]) == ["avg", "flat", "both"]
    assert meta["head"] == classifier.head_record(classifier.TrainSettings().for_layout(meta["selection"]["winner"]))
    assert meta["training"]["class_weight"] == "balanced" and meta["positive_class"] == "nodule"
    # --keep 5: epoch 1's params were removed once epoch 6 was written (no hold-out, so no best epoch to keep)
    kept = {e["epoch"] for e in meta["history"] if e["params"]}
    assert kept == set(range(2, 7)) and meta["best_epoch"] is None
    for epoch in range(1, 7):
        assert os.path.exists(os.path.join(trained, params_file(epoch))) == (epoch in kept)
    assert os.path.getsize(os.path.join(trained, "training_curve.png")) > 0
    assert not [n for n in os.listdir(trained) if n.startswith(".tmp-")]


def test_checkpoint_loads_without_training_code_and_batchnorm_uses_running_stats(two_class, trained):
    import mxnet as mx

    (_, (_, codes_dir, _)) = two_class
    net = mx.gluon.SymbolBlock.imports(os.path.join(trained, "head-symbol.json"), ["data"],
                                       os.path.join(trained, "head-0006.params"))
    codes = mx.nd.array(CodeStore(codes_dir).read(CodeStore(codes_dir).names))
    batch = net(codes).asnumpy()
    one_by_one = np.concatenate([net(codes[i:i + 1]).asnumpy() for i in range(len(codes))])
    np.testing.assert_allclose(one_by_one, batch, rtol=1e-4, atol=1e-5)  # no dependence on the batch's statistics

    # the exported symbol pools and standardises by itself: the same logits as the head rebuilt by this code
    meta = json.load(open(os.path.join(trained, META_FILE)))
    rebuilt = head.build_from_meta(meta)
    rebuilt.initialize()
    HeadFolder(trained).load_weights(rebuilt, 6)
    np.testing.assert_allclose(rebuilt(codes).asnumpy(), batch, rtol=1e-4, atol=1e-5)
    params = read_params(os.path.join(trained, "head-0006.params"))
    for stored in ("standardize_mean", "standardize_scale"):  # head_ or, with both, head_avg_
        assert any(name.startswith("arg:head_") and name.endswith(stored) for name in params)


def test_two_classes_evaluate_and_report_agrees_with_predictions_csv(two_class, trained, tmp_path, capsys):
    (_, test) = two_class
    status, out, _ = cli(test_model.main, [*test, trained, "--out", tmp_path], capsys)
    assert status == 0
    assert "precision" in out and "recall" in out and "normal" in out and "nodule" in out and "accuracy" in out
    for name in ("report.json", "predictions.csv", "confusion_matrix.png", "roc_curve.png", "predictions.png"):
        assert os.path.getsize(tmp_path / name) > 0, name
    report = check_report_against_csv(tmp_path)
    assert report["epoch"] == 6 and report["n"] == 20
    assert report["accuracy"]["value"] >= 0.9


def test_test_labels_may_order_classes_differently(two_class, trained, tmp_path, capsys):
    (_, (images, codes, labels)) = two_class
    data = json.load(open(labels))
    save_labels(tmp_path / "reversed.json", ["nodule", "normal"], data["labels"])
    assert cli(test_model.main, [images, codes, tmp_path / "reversed.json", trained, "--out", tmp_path], capsys)[0] == 0
    report = check_report_against_csv(tmp_path)
    assert report["classes"] == ["normal", "nodule"] and report["per_class"]["nodule"]["support"] == 10


def test_three_classes(tmp_path, capsys):
    classes = ["normal", "nodule", "effusion"]
    train = make_split(tmp_path / "train", classes, 16, seed=3)
    test = make_split(tmp_path / "test", classes, 8, seed=4)
    models_dir = tmp_path / "models"
    status, out, _ = cli(train_model.main, [*train, models_dir, "--epochs", 5, "--batch-size", 8, "--gpus", "none"],
                         capsys)
    assert status == 0 and epoch_lines(out) == 5
    status, out, _ = cli(test_model.main, [*test, models_dir, "--epoch", 4], capsys)
    assert status == 0 and "no roc_curve.png" not in out and (models_dir / "eval" / "roc_curve.png").exists()
    report = check_report_against_csv(models_dir / "eval")
    assert report["epoch"] == 4 and report["classes"] == classes
    assert report["roc_auc"]["method"].startswith("macro") and report["accuracy"]["value"] > 0.8


def epoch_lines(out):
    return len(re.findall(r"^epoch \d+/\d+: loss ", out, flags=re.M))


def test_resume_after_ctrl_c_equals_uninterrupted_run(two_class, tmp_path, monkeypatch, capsys):
    (train, _) = two_class
    settings = ["--epochs", 5, "--batch-size", 8, "--seed", 7, "--gpus", "none"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert cli(train_model.main, [*train, whole, *settings], capsys)[0] == 0

    calls, original_read = [], CodeStore.read

    def read_then_interrupt(self, names):  # Ctrl-C in the middle of epoch 3 (48 images: 6 batches per epoch;
        # before the epochs, a read each for the inner folds, the input check and the standardisation)
        calls.append(1)
        if len(calls) == 3 + 6 * 2 + 1:
            raise KeyboardInterrupt
        return original_read(self, names)

    monkeypatch.setattr(CodeStore, "read", read_then_interrupt)
    status, _, err = cli(train_model.main, [*train, parts, *settings], capsys)
    assert status == 130 and "epochs 1..2 are saved" in err and "--resume" in err
    assert [e["epoch"] for e in json.load(open(parts / META_FILE))["history"]] == [1, 2]
    assert not (parts / params_file(3)).exists() and not [n for n in os.listdir(parts) if n.startswith(".tmp-")]
    monkeypatch.setattr(CodeStore, "read", original_read)

    status, out, _ = cli(train_model.main, [*train, parts, *settings, "--resume"], capsys)
    assert status == 0 and "resuming" in out and epoch_lines(out) == 3

    for epoch in (2, 5):
        a, b = read_params(whole / params_file(epoch)), read_params(parts / params_file(epoch))
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"epoch {epoch} {key}")
    history = [json.load(open(d / META_FILE))["history"] for d in (whole, parts)]
    assert [(e["loss"], e["accuracy"]) for e in history[0]] == [(e["loss"], e["accuracy"]) for e in history[1]]

    status, out, _ = cli(train_model.main, [*train, parts, *settings, "--resume"], capsys)
    assert status == 0 and "nothing to do" in out
    line = fail(train_model.main, [*train, parts, *settings[:-2], "--lr", 0.1, "--resume"], capsys)
    assert "lr" in line and "--resume" in line


def test_existing_models_dir_is_refused_without_resume(two_class, trained, capsys):
    (train, _) = two_class
    line = fail(train_model.main, [*train, trained, "--epochs", 1, "--gpus", "none"], capsys)
    assert "--resume" in line and "another MODELS_DIR" in line


def test_training_validation_names_offending_files(tmp_path, capsys):
    images, codes, labels = make_split(tmp_path / "d", ["normal", "nodule"], 8, seed=5)
    models_dir = tmp_path / "models"
    # an image with no label
    data = json.load(open(labels))
    del data["labels"]["nodule_003.png"]
    json.dump(data, open(tmp_path / "fewer.json", "w"))
    line = fail(train_model.main, [images, codes, tmp_path / "fewer.json", models_dir], capsys)
    assert "1 of 16 images" in line and "nodule_003.png (no label" in line
    # images with no code: 12 of them, 10 named
    for i in range(12):
        Image.new("RGB", (8, 8)).save(os.path.join(images, f"extra_{i:02d}.png"))
    data["labels"].update({f"extra_{i:02d}.png": "normal" for i in range(12)}, **{"nodule_003.png": "nodule"})
    json.dump(data, open(tmp_path / "more.json", "w"))
    line = fail(train_model.main, [images, codes, tmp_path / "more.json", models_dir], capsys)
    assert "12 of 28 images" in line and "extra_09.png (no code" in line and "extra_10" not in line
    assert "and 2 more" in line
    assert not models_dir.exists()


def test_training_refuses_skipped_codes_one_class_and_other_codes_on_resume(tmp_path, capsys):
    images, codes, labels = make_split(tmp_path / "d", ["normal", "nodule"], 6, seed=6)
    index = json.load(open(os.path.join(codes, "index.json")))
    index["skipped"] = {"normal_002.png": "normal_002.png: not a readable image (truncated)"}
    json.dump(index, open(os.path.join(codes, "index.json"), "w"))
    line = fail(train_model.main, [images, codes, labels, tmp_path / "m"], capsys)
    assert "normal_002.png (no code: normal_002.png: not a readable image" in line

    only_normal = tmp_path / "only.json"
    save_labels(only_normal, ["normal", "nodule"], {f"normal_{i:03d}.png": "normal" for i in range(6)})
    os.makedirs(tmp_path / "normals")
    for i in range(6):
        os.link(os.path.join(images, f"normal_{i:03d}.png"), tmp_path / "normals" / f"normal_{i:03d}.png")
    index["skipped"] = {}
    json.dump(index, open(os.path.join(codes, "index.json"), "w"))
    line = fail(train_model.main, [tmp_path / "normals", codes, only_normal, tmp_path / "m"], capsys)
    assert "at least 2 classes" in line

    models_dir = tmp_path / "m"
    assert cli(train_model.main, [images, codes, labels, models_dir, "--epochs", 1, "--batch-size", 4], capsys)[0] == 0
    wider = make_split(tmp_path / "wider", ["normal", "nodule"], 6, seed=6, shape=(8, 3, 3))
    line = fail(train_model.main, [*wider, models_dir, "--epochs", 2, "--batch-size", 4, "--resume"], capsys)
    assert "shape" in line


def test_evaluation_error_paths(two_class, trained, tmp_path, capsys):
    (_, (images, codes, labels)) = two_class
    # a label file with a class the model does not know
    data = json.load(open(labels))
    data["classes"].append("effusion")
    data["labels"]["normal_000.png"] = "effusion"
    json.dump(data, open(tmp_path / "unknown.json", "w"))
    line = fail(test_model.main, [images, codes, tmp_path / "unknown.json", trained], capsys)
    assert "effusion" in line and "does not know" in line
    # codes from another layer, from another model, of another shape, in another precision
    for name, meta, shape in [("layer", dict(CODES_META, layer="stage3_unit1_relu1_output"), CODE_SHAPE),
                              ("model_sha256", dict(CODES_META, model_sha256="cd" * 32), CODE_SHAPE),
                              ("shape", CODES_META, (4, 2, 2)),
                              ("precision", dict(CODES_META, precision="int8"), CODE_SHAPE)]:
        other = make_split(tmp_path / name, ["normal", "nodule"], 3, seed=8, meta=meta, shape=shape)
        line = fail(test_model.main, [*other, trained], capsys)
        assert name in line and "train.py" in line
    # no head at all, an epoch that was never trained, a deleted params file
    line = fail(test_model.main, [images, codes, labels, tmp_path / "empty"], capsys)
    assert "no trained head" in line
    line = fail(test_model.main, [images, codes, labels, trained, "--epoch", 99], capsys)
    assert "epoch 99" in line and "no such epoch" in line and "1..6" in line
    line = fail(test_model.main, [images, codes, labels, trained, "--epoch", "first"], capsys)
    assert "--epoch" in line and "best, last" in line


def test_missing_params_file(two_class, tmp_path, capsys):
    (train, test) = two_class
    models_dir = tmp_path / "m"
    assert cli(train_model.main, [*train, models_dir, "--epochs", 2, "--batch-size", 8], capsys)[0] == 0
    os.remove(models_dir / params_file(2))
    line = fail(test_model.main, [*test, models_dir], capsys)
    assert "head-0002.params" in line and "missing" in line
