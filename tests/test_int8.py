"""train.py --int8: the calibrated int8 network gives codes close to fp32, and its calibration is cached."""

import os
import shutil

import numpy as np
import skimage

from conftest import run_script
from models.codes import CodeStore

PHOTOS = ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "horse.png", "hubble_deep_field.jpg",
          "ihc.png", "moon.png", "motorcycle_left.png", "rocket.jpg", "page.png"]


def cosine(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_int8_codes_match_fp32_and_calibration_is_cached(weights, tmp_path):
    data = os.path.join(os.path.dirname(skimage.__file__), "data")
    for folder in ("train", "test"):
        os.makedirs(tmp_path / folder)
    for name in PHOTOS:
        shutil.copy(os.path.join(data, name), tmp_path / "train" / name)
    shutil.copy(os.path.join(data, "rocket.jpg"), tmp_path / "test")

    fp32 = run_script("train.py", tmp_path / "train", tmp_path / "test", tmp_path / "fp32", tmp_path / "fp32_test")
    assert fp32.returncode == 0, fp32.stderr
    args = ["train.py", tmp_path / "train", tmp_path / "test", tmp_path / "int8", tmp_path / "int8_test", "--int8",
            "--calib-images", "8"]
    first = run_script(*args)
    assert first.returncode == 0, first.stderr
    assert "int8: calibrating on 8 images" in first.stdout

    reference, quantized = CodeStore(tmp_path / "fp32"), CodeStore(tmp_path / "int8")
    assert quantized.meta["precision"] == "int8" and reference.meta["precision"] == "fp32"
    assert quantized.shape == reference.shape == (512, 7, 7)
    similarity = cosine(reference.read(PHOTOS), quantized.read(PHOTOS))
    assert similarity.mean() >= 0.95, similarity

    for folder in ("int8", "int8_test"):
        os.remove(tmp_path / folder / "index.json")
    second = run_script(*args)
    assert second.returncode == 0, second.stderr
    assert "int8: using the calibrated network cached in" in second.stdout
    np.testing.assert_array_equal(CodeStore(tmp_path / "int8").read(PHOTOS), quantized.read(PHOTOS))
