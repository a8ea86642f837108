"""End to end through the real CLIs: synthetic images -> train.py (real ResNet-50 codes) -> train_model.py -> test_model.py.

Two patterns a head can separate from ImageNet features: horizontal vs vertical stripes of random period and phase,
with noise, as grayscale images.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from models.labels import save_labels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKPOINT = os.path.join(ROOT, "models", "resnet-50-0000.params")
CLASSES = ["horizontal", "vertical"]

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHECKPOINT) and os.path.exists(os.path.join(ROOT, "train.py"))),
    reason=f"needs train.py and the converted ResNet-50 ({CHECKPOINT}): run `make setup` first")


def stripes(rng, vertical, size=96):
    period = rng.uniform(8, 20)
    phase = rng.uniform(0, 2 * np.pi)
    axis = np.arange(size)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * axis / period + phase)
    pixels = np.tile(wave, (size, 1)) if vertical else np.tile(wave[:, None], (1, size))
    pixels = 255 * (0.15 + 0.7 * pixels) + rng.normal(0, 20, (size, size))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")


def make_images(folder, per_class, rng):
    os.makedirs(folder)
    labels = {}
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            file = f"{name}_{i:02d}.png"
            stripes(rng, vertical=c == 1).save(os.path.join(folder, file))
            labels[file] = name
    return labels


def run(*args):
    done = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"{args[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_stripes_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    train_imgs, test_imgs = tmp_path / "train", tmp_path / "test"
    save_labels(tmp_path / "train.json", CLASSES, make_images(train_imgs, 24, rng))
    save_labels(tmp_path / "test.json", CLASSES, make_images(test_imgs, 12, rng))
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
