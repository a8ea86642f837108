"""End to end through the real CLIs: synthetic images -> train.py (real ResNet-50 codes) -> train_model.py -> test_model.py.

Two patterns a head can separate from ImageNet features: horizontal vs vertical stripes of random period and phase,
with noise, as grayscale images.
"""

import json
import os

import numpy as np
import pytest

from helpers import run_script, write_class_images
from models.labels import save_labels

pytestmark = pytest.mark.slow  # a whole pipeline

CLASSES = ["horizontal", "vertical"]


def stripes(rng, label, i, size=96):
    period = rng.uniform(8, 20)
    phase = rng.uniform(0, 2 * np.pi)
    axis = np.arange(size)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * axis / period + phase)
    pixels = np.tile(wave, (size, 1)) if label == "vertical" else np.tile(wave[:, None], (1, size))
    return 255 * (0.15 + 0.7 * pixels) + rng.normal(0, 20, (size, size))


def run(*args):
    done = run_script(*args)
    assert done.returncode == 0, f"{args[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_stripes_end_to_end(weights, tmp_path):
    train_imgs, test_imgs = tmp_path / "train", tmp_path / "test"
    for side, folder, count, seed in (("train", train_imgs, 24, 0), ("test", test_imgs, 12, 1)):
        labels = write_class_images(folder, dict.fromkeys(CLASSES, count), stripes, seed=seed, folders=False)
        save_labels(tmp_path / f"{side}.json", CLASSES, labels)
    train_codes, test_codes, models_dir = tmp_path / "codes_train", tmp_path / "codes_test", tmp_path / "models"

    run("train.py", train_imgs, test_imgs, train_codes, test_codes, "--gpus", "none")
    out = run("train_model.py", train_imgs, train_codes, tmp_path / "train.json", models_dir,
              "--epochs", 8, "--batch-size", 8, "--gpus", "none")
    assert "epoch 8/8" in out
    out = run("test_model.py", test_imgs, test_codes, tmp_path / "test.json", models_dir)
    print(out)

    report = json.load(open(models_dir / "eval" / "report.json"))
    meta = json.load(open(models_dir / "head.json"))
    assert meta["backbone"]["layer"] == "stage4_unit2_relu1_output" and len(meta["backbone"]["model_sha256"]) == 64
    assert report["n"] == 24 and report["epoch"] == 8
    assert report["accuracy"]["value"] >= 0.8, report  # chance is 0.5
    assert report["accuracy"]["ci95"][0] > 0.5
    for name in ("predictions.csv", "confusion_matrix.png", "roc_curve.png", "predictions.png"):
        assert os.path.getsize(models_dir / "eval" / name) > 0
