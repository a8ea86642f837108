"""The ONNX file away from the project: the runner installed from pyproject.toml into a venv made from
requirements-onnx.txt alone, run from a folder outside the repository, gives models.predict's probabilities; and the
sidecar's ``input.how`` is enough for another program (here numpy and Pillow, no project code) to rebuild the runner's
input of non-square and 16-bit films, and so its probabilities."""

import copy
import csv
import json
import os
import shutil
import subprocess
import sys
import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image

from helpers import REPO, run_script

SAMPLE = os.path.join(REPO, "examples", "nih-sample")
PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")


@pytest.fixture(scope="module")
def exported(weights, tmp_path_factory):
    """(the ONNX file of an avg head trained on real codes of the bundled sample, its models folder, the test films)."""
    root = tmp_path_factory.mktemp("exported")
    assert run_script("-m", "scraper.process", "--from-folders", SAMPLE, root / "split", "--group-pattern",
                      r"^(\d+)_").returncode == 0
    split = root / "split"
    done = run_script("train.py", split / "train", split / "test", root / "codes" / "train", root / "codes" / "test",
                      "--gpus", "none")
    assert done.returncode == 0, done.stderr[-2000:]
    done = run_script("train_model.py", split / "train", root / "codes" / "train", split / "train_labels.json",
                      root / "models", "--epochs", 2, "--gpus", "none", "--layout", "avg", "--folds", "0")
    assert done.returncode == 0, done.stderr[-2000:]
    done = run_script("-m", "models.export", root / "models", root / "classifier.onnx")
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "classifier.onnx", root / "models", split / "test"


@pytest.fixture(scope="module")
def runner_venv(tmp_path_factory):
    """A venv outside the repository with requirements-onnx.txt and the project installed (pyproject.toml), as a
    user makes it: the path of its bin folder."""
    venv = tmp_path_factory.mktemp("runner") / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    done = subprocess.run(pip + ["-r", os.path.join(REPO, "requirements-onnx.txt"), REPO], capture_output=True,
                          text=True, cwd=str(venv.parent), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv / "bin"


# where the runner venv's `models` comes from, whether the repository is on sys.path, and whether MXNet or
# scikit-learn could be imported
PROBE = ("import importlib.util, os, sys, models; print(models.__file__); "
         "print(any(p and os.path.realpath(p) == os.path.realpath(sys.argv[1]) for p in sys.path)); "
         "print(importlib.util.find_spec('mxnet'), importlib.util.find_spec('sklearn'))")


def outside_env():
    """The environment with nothing that would put the repository on sys.path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_installed_command_runs_outside_the_repository_as_models_predict_does(exported, runner_venv, tmp_path):
    model, models_dir, test = exported
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = subprocess.run([str(runner_venv / "python"), "-c", PROBE, REPO],
                           cwd=str(elsewhere), env=outside_env(), capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    where, on_path, missing = probe.stdout.splitlines()
    assert "site-packages" in where and not where.startswith(REPO), where  # the installed copy, not the checkout
    assert on_path == "False" and missing == "None None"  # no repository on sys.path, no MXNet, no scikit-learn

    ran = subprocess.run([str(runner_venv / "xvision-onnx-predict"), str(model), str(test), "--out", "out"],
                         cwd=str(elsewhere), env=outside_env(), capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert (elsewhere / "out" / "predictions.html").exists()  # the page too, rendered without MXNet
    assert run_script("-m", "models.predict", models_dir, test, "--out", tmp_path / "mxnet").returncode == 0
    onnx_rows, mxnet_rows = read_rows(elsewhere / "out" / "predictions.csv"), read_rows(tmp_path / "mxnet" /
                                                                                      "predictions.csv")
    assert len(onnx_rows) == len(mxnet_rows) == len(os.listdir(test))
    for a, b in zip(onnx_rows, mxnet_rows):
        assert (os.path.basename(a["file"]), a["predicted_class"]) == (os.path.basename(b["file"]),
                                                                       b["predicted_class"])
        columns = ("p_normal", "p_pneumonia", "training_distance")
        np.testing.assert_allclose([float(a[k]) for k in columns], [float(b[k]) for k in columns], atol=1e-4,
                                   rtol=1e-5)

    # no GPL decoder in requirements-onnx.txt: a JPEG-LS DICOM is skipped with what to install, a baseline JPEG one read
    dicoms = elsewhere / "dicom"
    dicoms.mkdir()
    for name in ("MR_small_jpeg_ls_lossless.dcm", "SC_rgb_small_odd_jpeg.dcm"):
        shutil.copy(os.path.join(PYDICOM_FILES, name), dicoms / name)
    ran = subprocess.run([str(runner_venv / "xvision-onnx-predict"), str(model), "dicom", "--out", "out_dicom",
                          "--allow-modality", "MR", "OT"],  # pydicom's files are no chest radiographs: read anyway
                         cwd=str(elsewhere), env=outside_env(), capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-2000:]
    skipped = [line for line in ran.stderr.splitlines() if "MR_small_jpeg_ls_lossless.dcm" in line]
    assert len(skipped) == 1 and "pip install pylibjpeg pylibjpeg-libjpeg" in skipped[0], ran.stderr
    rows = read_rows(elsewhere / "out_dicom" / "predictions.csv")  # every input has a row, the skipped one with why
    assert [(os.path.basename(row["file"]), bool(row["skipped_reason"])) for row in rows] == [
        ("MR_small_jpeg_ls_lossless.dcm", True), ("SC_rgb_small_odd_jpeg.dcm", False)]
    page = (elsewhere / "out_dicom" / "predictions.html").read_text(encoding="utf-8")
    assert "MR_small_jpeg_ls_lossless.dcm" in page and "pip install pylibjpeg" in page

    missing = subprocess.run([str(runner_venv / "xvision-onnx-predict"), "nothere.onnx", str(test)],
                             cwd=str(elsewhere), env=outside_env(), capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count("error:") == 1, missing.stderr


# --- another program's reading of the sidecar: numpy and Pillow, the numbers from OUT.json, the rules from its words

def png_sbit(path):
    """The gray channel's sBIT of a PNG (None: none before the image data), read from its chunks."""
    with open(path, "rb") as f:
        data = f.read()
    at = 8
    while at + 8 <= len(data):
        length, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8]
        if kind in (b"IDAT", b"IEND"):
            return None
        if kind == b"sBIT":
            return data[at + 8]
        at += 12 + length
    return None


def sidecar_input(path, described):
    """The runner's input for one PNG film, rebuilt from the sidecar's ``input`` section ``described`` alone:
    float32 (3, size, size)."""
    how, size = described["how"], described["shape"][2]
    bits = how["significant_bits"]["value"]
    with Image.open(path) as image:
        image.load()
        width, height = image.size
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 'integer_rule'
            values = np.asarray(image).astype(np.int64)
            sbit = png_sbit(path)
            if sbit and values.max() >= 2 ** sbit:
                values = values >> (16 - bits)
            gray = np.clip(np.round(values * 255 / (2 ** bits - 1)), 0, 255).astype(np.uint8)
            image = Image.fromarray(gray, mode="L")
        elif image.mode in ("LA", "1"):
            image = image.convert("L")
        elif image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        if how["crop"]["mode"] == "crop":
            side = min(width, height)
            left, top = (width - side) // 2, (height - side) // 2
            box = (left, top, left + side, top + side)
        else:
            box = (0, 0, width, height)
        pixels = np.asarray(image.resize((size, size), Image.BILINEAR, box=box)).copy()
    if how["field"]["field"] != "whole":
        x0, y0, x1, y1 = how["field"]["lung_box"]
        across = [(f * width - box[0]) * size / (box[2] - box[0]) for f in (x0, x1)]
        down = [(f * height - box[1]) * size / (box[3] - box[1]) for f in (y0, y1)]
        left, right = (int(round(min(max(v, 0), size))) for v in across)
        top, bottom = (int(round(min(max(v, 0), size))) for v in down)
        fill = np.round(pixels.reshape(size * size, -1).mean(axis=0)).astype(np.uint8).reshape(pixels.shape[2:])
        inside = pixels[top:bottom, left:right].copy()
        if how["field"]["field"] == "lungs":
            pixels[:] = fill
            pixels[top:bottom, left:right] = inside
        else:
            pixels[top:bottom, left:right] = fill
    rgb = np.repeat(pixels[:, :, None], 3, axis=2) if pixels.ndim == 2 else pixels
    return rgb.transpose(2, 0, 1).astype(np.float32)


def png_with_sbit(path, values, sbit=None):
    """Write ``values`` (uint16) as a 16-bit gray PNG, with an sBIT chunk of ``sbit`` before its image data."""
    Image.fromarray(values.astype(np.uint16)).save(path)
    if sbit is None:
        return
    data = open(path, "rb").read()
    chunk = b"sBIT" + bytes([sbit])
    chunk = len(chunk[4:]).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")
    at = data.index(b"IDAT") - 4
    open(path, "wb").write(data[:at] + chunk + data[at:])


@pytest.fixture
def films(tmp_path):
    """Non-square films: 8-bit gray, 8-bit colour, and 12-bit values in 16-bit PNGs (left-justified with an sBIT
    chunk, left-justified without one, as they are)."""
    rng = np.random.default_rng(3)
    smooth = lambda h, w: np.kron(rng.uniform(0, 1, (h // 16 + 1, w // 16 + 1)), np.ones((16, 16)))[:h, :w]  # noqa
    gray = smooth(389, 517) * 0.8 + rng.uniform(0, 0.2, (389, 517))
    Image.fromarray((gray * 255).astype(np.uint8), mode="L").save(tmp_path / "wide_8bit.png")
    colour = np.stack([smooth(611, 301), smooth(611, 301), rng.uniform(0, 1, (611, 301))], axis=2)
    Image.fromarray((colour * 255).astype(np.uint8), mode="RGB").save(tmp_path / "tall_rgb.png")
    twelve = (smooth(450, 333) * 3900 + rng.integers(0, 190, (450, 333))).astype(np.int64)
    png_with_sbit(tmp_path / "tall_12bit_sbit.png", twelve * 16 + 8, sbit=12)
    png_with_sbit(tmp_path / "tall_12bit_shifted.png", twelve * 16 + 8)
    png_with_sbit(tmp_path / "wide_12bit.png", twelve.T)
    return sorted(str(p) for p in tmp_path.glob("*.png"))


def sidecars(exported_json):
    """The exported sidecar, then as it reads for heads trained on 12-bit films (significant_bits 12), and on the lung
    field of squashed films: the words of each made by the exporter's own description (models.inputspec)."""
    from models.images import View
    from models.inputspec import input_how

    yield "as exported", exported_json
    for changes in ({"significant_bits": 12}, {"significant_bits": 12, "resize": "squash", "field": "lungs",
                                               "lung_box": [0.2, 0.1, 0.9, 0.8]}):
        other = copy.deepcopy(exported_json)
        other["input"]["view"].update(changes)
        other["input"]["how"] = input_how(View.of(other["input"]["view"]))
        yield json.dumps(changes), other


def test_the_sidecar_alone_rebuilds_the_runners_input(exported, films):
    import onnxruntime

    from models.onnx_predict import read_batch
    from models.images import View

    model = exported[0]
    written = json.loads(model.with_suffix(".json").read_text())
    assert set(written["input"]["how"]) >= {"modes", "significant_bits", "crop", "resize", "field", "tensor"}
    assert written["input"]["how"]["significant_bits"]["value"] == 16  # the sample is 8-bit: none measured
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for name, sidecar in sidecars(written):
        described = sidecar["input"]
        runner, read, failed = read_batch(films, View.of(described["view"]), lambda *a, **k: None)
        assert not failed and read == films, failed
        rebuilt = np.stack([sidecar_input(path, described) for path in films])
        assert rebuilt.dtype == runner.dtype == np.float32 and rebuilt.shape == runner.shape
        assert np.abs(rebuilt - runner).max() <= 1e-4, (name, np.abs(rebuilt - runner).reshape(len(films), -1)
                                                        .max(axis=1))
        ours, theirs = (session.run(["probabilities"], {"images": batch})[0] for batch in (runner, rebuilt))
        np.testing.assert_allclose(theirs, ours, atol=1e-4)
    # the 16-bit rule matters: the three 12-bit films differ as significant_bits says they do
    as_16, as_12 = (read_batch(films, View(bits=bits), lambda *a, **k: None)[0] for bits in (None, 12))
    index = {os.path.basename(p): i for i, p in enumerate(films)}
    assert np.abs(as_12[index["tall_12bit_sbit.png"]] - as_12[index["tall_12bit_shifted.png"]]).max() > 10
    assert np.abs(as_16[index["wide_12bit.png"]]).max() < 20  # 0..4095 of 0..65535: nearly black
