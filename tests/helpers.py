"""What the tests share: the project's commands run in-process or as a child process, and small synthetic images,
codes and label files. Tests import these from here, never from one another."""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from models.codes import CodeWriter
from models.errors import run_cli
from models.labels import save_labels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS_PREFIX = os.path.join(REPO, "models", "resnet-50")
CODE_SHAPE = (8, 2, 2)
CODES_META = {"model": "models/fake", "model_sha256": "ab" * 32, "layer": "fake_layer", "resize": "crop",
              "input_size": 224, "precision": "fp32"}
PALETTE = [(200, 40, 40), (40, 160, 40), (40, 40, 200), (200, 200, 40)]


def run_script(*args, timeout=600, **kwargs):
    """Run a project command (e.g. ``run_script("train.py", ...)`` or ``run_script("-m", "models.pretrained")``)."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def cli(main, argv, capsys):
    """Run an entry point as its ``__main__`` does; returns (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as stop:
        run_cli(main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return stop.value.code, out, err


def fail(main, argv, capsys):
    """Run a command that must fail with a one-line 'error: ...'; returns that line."""
    status, _, err = cli(main, argv, capsys)
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert status == 2 and len(lines) == 1, err
    return lines[0]


def run_quietly(main, argv):
    """Run an entry point as its ``__main__`` does; returns its exit status."""
    with pytest.raises(SystemExit) as stop:
        run_cli(main, [str(a) for a in argv])
    return stop.value.code


def read_params(path):
    import mxnet as mx

    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def read_tree(root):
    """Every file under ``root`` (relative path -> bytes)."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


def save_gray(path, pixels):
    """Write a 2-D array as an 8-bit gray PNG (values clipped to 0..255)."""
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)


def write_class_images(root, per_class, draw, seed=0, name="{label}_{i:02d}.png", folders=True):
    """ROOT/<label>/<file> (``folders``) or ROOT/<file> for each label of ``per_class`` ({label: count}):
    ``draw(rng, label, i)`` gives each image's pixels (a 2-D array) from one seeded generator; returns {file: label},
    what a label file holds."""
    rng = np.random.default_rng(seed)
    labels = {}
    for label, count in per_class.items():
        folder = os.path.join(root, label) if folders else os.fspath(root)
        os.makedirs(folder, exist_ok=True)
        for i in range(count):
            file = name.format(label=label, i=i)
            save_gray(os.path.join(folder, file), draw(rng, label, i))
            labels[file] = label
    return labels


def write_noise_pngs(folder, count, size=256, seed=0, prefix="img"):
    """``count`` distinct grayscale PNGs (smooth random blobs, so the network sees some structure)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        small = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        image = Image.fromarray(small).resize((size, size), Image.BICUBIC)
        names.append(f"{prefix}{i:04d}.png")
        image.save(os.path.join(folder, names[-1]))
    return names


def write_class_folders(root, per_class=14):
    """Two classes a backbone tells apart: bright discs on dark vs dark discs on bright, at random places."""
    yy, xx = np.mgrid[:160, :160]
    colours = {"disc_bright": (230, 30), "disc_dark": (30, 230)}

    def disc(rng, label, i):
        cy, cx, r = rng.integers(50, 110), rng.integers(50, 110), rng.integers(20, 40)
        pixels = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, *colours[label])
        return pixels + rng.normal(0, 10, pixels.shape)

    return write_class_images(root, dict.fromkeys(colours, per_class), disc, seed=7)


def make_split(folder, classes, per_class, seed, shape=CODE_SHAPE, meta=CODES_META, separation=3.0):
    """Images (one flat colour per class), codes (class centre + noise) and labels; returns the three paths."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).normal(size=(len(classes),) + tuple(shape))  # same in every split
    images, codes_dir, labels_path = folder / "imgs", folder / "codes", folder / "labels.json"
    images.mkdir(parents=True)
    names, codes, labels = [], [], {}
    for c, name in enumerate(classes):
        for i in range(per_class):
            file = f"{name}_{i:03d}.png"
            image = Image.new("RGB", (16, 16), PALETTE[c % len(PALETTE)])
            image.putpixel((0, 0), (i % 256, seed % 256, c))  # every file's bytes differ, across splits too
            image.save(images / file)
            names.append(file)
            labels[file] = name
            codes.append(separation * centres[c] + rng.normal(size=shape))
    order = np.argsort(names)
    writer = CodeWriter(codes_dir, [names[i] for i in order], shape, meta, image_dir=images)
    writer.write(np.asarray(codes, np.float32)[order])
    save_labels(labels_path, classes, labels)
    return str(images), str(codes_dir), str(labels_path)


def check_report_against_csv(out_dir):
    """Recompute report.json's numbers from predictions.csv without scikit-learn; returns the report."""
    report = json.load(open(out_dir / "report.json"))
    classes = report["classes"]
    with open(out_dir / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    truth = np.array([classes.index(r["true_class"]) for r in rows])
    probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
    assert report["n"] == len(rows)
    if len(classes) == 2:
        positive = classes.index(report["operating_point"]["positive_class"])
        threshold = report["operating_point"]["threshold"]
        predicted = np.where(probs[:, positive] >= threshold, positive, 1 - positive)
        check_scores(report["at_0.5"], truth, np.where(probs[:, positive] >= 0.5, positive, 1 - positive), classes)
    else:
        positive, predicted = None, probs.argmax(axis=1)
    assert [classes[i] for i in predicted] == [r["predicted_class"] for r in rows]
    check_scores(report, truth, predicted, classes)

    def rank_auc(hits, scores):  # Mann-Whitney: P(score of a positive > score of a negative)
        pos, neg = scores[hits], scores[~hits]
        return ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))

    if positive is not None:
        expected_auc = rank_auc(truth == positive, probs[:, positive])
    else:
        expected_auc = np.mean([rank_auc(truth == i, probs[:, i]) for i in range(len(classes))])
    assert report["roc_auc"]["value"] == pytest.approx(expected_auc)
    low, high = report["roc_auc"]["ci95"]
    assert low <= expected_auc <= high and high - low < 1
    return report


def wilson_by_hand(successes, n):
    """The 95% Wilson interval of successes / n from its definition: the p with |p_hat - p| = z sqrt(p (1 - p) / n),
    i.e. the roots of a quadratic in p."""
    z, p_hat = 1.959963984540054, successes / n
    a, b, c = 1 + z * z / n, -(2 * p_hat + z * z / n), p_hat * p_hat
    return sorted((-b + s * math.sqrt(b * b - 4 * a * c)) / (2 * a) for s in (-1, 1))


def check_scores(scores, truth, predicted, classes):
    """Accuracy, balanced accuracy, confusion matrix and per-class scores of ``predicted``; each interval a bootstrap
    interval that lies in 0..1. (What the intervals resample is tested on its own in test_resampling.py.)"""
    correct = int((truth == predicted).sum())
    n = len(truth)
    assert scores["accuracy"]["correct"] == correct
    assert scores["accuracy"]["value"] == pytest.approx(correct / n)
    assert "bootstrap resamples of" in scores["accuracy"]["ci_method"]
    for interval in [scores["accuracy"]["ci95"], scores["balanced_accuracy_ci95"]] + \
            [row[key] for row in scores["per_class"].values() for key in ("precision_ci95", "recall_ci95")]:
        assert interval is None or 0 <= interval[0] <= interval[1] <= 1

    matrix = np.zeros((len(classes), len(classes)), int)
    for t, p in zip(truth, predicted):
        matrix[t, p] += 1
    assert scores["confusion_matrix"]["counts"] == matrix.tolist()
    assert scores["confusion_matrix"]["order"] == classes
    recalls = []
    for i, name in enumerate(classes):
        row = scores["per_class"][name]
        tp = matrix[i, i]
        precision = tp / matrix[:, i].sum() if matrix[:, i].sum() else 0.0
        recall = tp / matrix[i].sum()
        recalls.append(recall)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision, recall, f1))
        assert row["support"] == matrix[i].sum()
    assert scores["balanced_accuracy"] == pytest.approx(np.mean(recalls))


