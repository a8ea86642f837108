"""ONNX export (models.export) and the runner that needs only ONNX Runtime (models.onnx_predict): heads of every layout
trained on real codes of the bundled NIH sample give models.predict's classes and probabilities on its test films, the
runner runs where MXNet cannot be imported, and bad input gets one error line. The heads train on the codes of the
session's shared `make demo` run (conftest.demo_run)."""

import csv
import json
import os

import numpy as np
import pytest

from helpers import REPO, run_script

SAMPLE = os.path.join(REPO, "examples", "nih-sample")
# the runner with `import mxnet` failing, as in a venv made from requirements-onnx.txt alone
WITHOUT_MXNET = ("import sys; sys.modules['mxnet'] = None; from models.errors import run_cli; "
                 "from models.onnx_predict import main; run_cli(main, sys.argv[1:])")


@pytest.fixture(scope="module")
def sample_codes(demo_run):
    """The bundled sample split by patient and encoded, as `make demo` left it (the session's shared run): (train
    images, codes, labels), and the test images."""
    out = demo_run.out
    train = (out / "split" / "train", out / "codes" / "train", out / "split" / "train_labels.json")
    return train, out / "split" / "test"


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # heads trained and exported on a whole pipeline's codes
@pytest.mark.parametrize("name, options", [("avg", ["--layout", "avg", "--folds", "0"]),
                                           ("flat", ["--layout", "flat", "--folds", "0"]),
                                           ("both", ["--layout", "both", "--folds", "2"])])  # both: recalibrated
def test_every_layout_exports_and_runs_without_mxnet_as_models_predict_does(sample_codes, tmp_path, name, options):
    import onnx

    train, test = sample_codes
    models_dir = tmp_path / "models"
    trained = run_script("train_model.py", *train, models_dir, "--epochs", 2, "--gpus", "none", *options)
    assert trained.returncode == 0, trained.stderr[-2000:]
    out = tmp_path / "classifier.onnx"
    exported = run_script("-m", "models.export", models_dir, out)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "checked: ONNX Runtime against MXNet" in exported.stdout
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    metadata = json.loads({p.key: p.value for p in model.metadata_props}["xvision_mx"])
    head = json.loads((models_dir / "head.json").read_text())
    assert metadata["classes"] == head["classes"] == ["normal", "pneumonia"]
    assert metadata["positive_class"] == "pneumonia"
    assert metadata["threshold"] == (head["operating_point"] or {}).get("threshold", 0.5)
    assert metadata["input"]["view"]["resize"] == "crop" and metadata["input"]["view"]["field"] == "whole"
    assert metadata["input_check"]["threshold"] == head["input_check"]["threshold"]
    assert json.loads((tmp_path / "classifier.json").read_text()) == metadata
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["probabilities", "training_distance"]

    ran = run_script("-c", WITHOUT_MXNET, out, test, "--out", tmp_path / "onnx")
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert run_script("-m", "models.predict", models_dir, test, "--out", tmp_path / "mxnet").returncode == 0
    onnx_rows = read_rows(tmp_path / "onnx" / "predictions.csv")
    mxnet_rows = read_rows(tmp_path / "mxnet" / "predictions.csv")
    assert len(onnx_rows) == len(mxnet_rows) == len(os.listdir(test)) and list(onnx_rows[0]) == list(mxnet_rows[0])
    for a, b in zip(onnx_rows, mxnet_rows):
        assert (a["file"], a["predicted_class"], a["unlike_training"]) == (b["file"], b["predicted_class"],
                                                                          b["unlike_training"])
        np.testing.assert_allclose([float(a[k]) for k in ("p_normal", "p_pneumonia", "training_distance")],
                                   [float(b[k]) for k in ("p_normal", "p_pneumonia", "training_distance")],
                                   atol=1e-4, rtol=1e-5)
    assert ran.stdout.count(": normal (") + ran.stdout.count(": pneumonia (") == len(onnx_rows)
    assert (head["calibration"]["method"] == "logistic") == (name == "both")  # recalibrated where there are folds


def test_bad_input_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    failed = run_script("-m", "models.export", tmp_path / "empty", tmp_path / "out.onnx")
    assert failed.returncode == 2 and failed.stderr.count("error:") == 1 and "no trained head" in failed.stderr
    (tmp_path / "file").write_text("in the way")
    failed = run_script("-m", "models.export", tmp_path / "empty", tmp_path / "file" / "out.onnx")
    assert failed.returncode == 2 and failed.stderr.count("error:") == 1 and "is a file, not a folder" in failed.stderr
    (tmp_path / "not.onnx").write_bytes(b"\x00\x01 not a model")
    for model in (tmp_path / "not.onnx", tmp_path / "missing.onnx"):
        failed = run_script("-c", WITHOUT_MXNET, model, SAMPLE)
        assert failed.returncode == 2 and failed.stderr.count("error:") == 1, failed.stderr
        assert "models.export" in failed.stderr
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "plain.onnx"))
    failed = run_script("-c", WITHOUT_MXNET, tmp_path / "plain.onnx", SAMPLE)
    assert failed.returncode == 2 and "not a classifier exported by models.export" in failed.stderr
