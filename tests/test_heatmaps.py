"""Grad-CAM heatmaps (test_model.py, heatmaps.npz) and `python -m models.predict` on new images."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from helpers import run_script, write_class_images
from models import head
from models.classifier import HeadClassifier, TrainSettings
from models.headfolder import FORMAT, META_FILE, HeadFolder, params_file
from models.heatmaps import grad_cam, heatmap_file, region_of
from models.images import View
from models.labels import save_labels


def spot_codes(count, seed, cell=(1, 2), grid=4, channels=8):
    """Codes whose class is decided by one cell of the grid: class 1 lights channels 0-3 there, class 0 nowhere."""
    rng = np.random.default_rng(seed)
    targets = np.arange(count) % 2
    codes = rng.gamma(1.5, 0.5, size=(count, channels, grid, grid)).astype(np.float32)
    codes[targets == 1, :4, cell[0], cell[1]] += 4.0
    return codes, targets


def spot_head(codes, targets):
    """A head trained with the defaults on ``codes``, and its twin for input gradients."""
    net = HeadClassifier(TrainSettings(layout="avg", folds=0)).fit(codes, targets, classes=["plain", "spot"]).net_
    meta = {"classes": ["plain", "spot"], "code_shape": list(codes.shape[1:]),
            "head": {"pool": "avg", "standardize": True, "dropout": 0.5}}
    return net, head.gradient_net(meta, net.collect_params())


def test_the_map_peaks_on_the_cell_that_decides_the_class():
    codes, targets = spot_codes(80, seed=0)
    _, cam_net = spot_head(codes, targets)
    test, test_targets = spot_codes(20, seed=1)
    maps = grad_cam(cam_net, test, np.ones(20, dtype=int))  # the map of class "spot"
    assert maps.shape == (20, 4, 4) and maps.dtype == np.float32
    spots = maps[test_targets == 1].reshape(10, -1)
    assert np.all(spots.argmax(axis=1) == 1 * 4 + 2), spots.argmax(axis=1)
    assert np.all(spots.std(axis=1) > 0)


def test_input_gradients_are_the_exported_heads_own():
    """Finite differences through the head as exported (BatchNorm as at prediction) against the gradients Grad-CAM
    uses: equal, and each image's gradient is its own (the exported graph's BatchNorm backward would mix them)."""
    import mxnet as mx
    from mxnet import autograd

    codes, targets = spot_codes(60, seed=2)
    net, cam_net = spot_head(codes, targets)
    test = spot_codes(6, seed=3)[0]
    data = mx.nd.array(test)
    data.attach_grad()
    with autograd.record(train_mode=False):
        logits = cam_net(data)
        score = logits[:, 1] - logits[:, 0]
    score.backward()
    grads = data.grad.asnumpy()

    def exported_score(array):
        out = net(mx.nd.array(array)).asnumpy().astype(np.float64)
        return out[:, 1] - out[:, 0]

    step = 1e-3  # float32 logits; a ReLU kink closer than this to a point bends its difference quotient
    errors = []
    for position in zip(*(np.random.default_rng(0).integers(0, n, 16) for n in test.shape)):
        up, down = test.copy(), test.copy()
        up[position] += step
        down[position] -= step
        slope = (exported_score(up) - exported_score(down))[position[0]] / (2 * step)
        errors.append(abs(slope - grads[position]) / max(abs(grads[position]), 1e-2))
    assert np.median(errors) < 0.02 and max(errors) < 0.25, np.round(errors, 3)


def test_regions_follow_the_resize_mode(tmp_path):
    Image.new("L", (300, 200)).save(tmp_path / "wide.png")
    assert region_of(tmp_path / "wide.png", View(resize="crop")) == ((50, 0, 250, 200), (300, 200))
    assert region_of(tmp_path / "wide.png", View(resize="squash")) == ((0, 0, 300, 200), (300, 200))
    (tmp_path / "bad.png").write_text("not an image")
    assert region_of(tmp_path / "bad.png", View()) == ((-1, -1, -1, -1), (-1, -1))


def test_heatmap_file_is_whole_or_absent(tmp_path):
    path = tmp_path / "heatmaps.npz"
    with heatmap_file(path, 3, (2, 2), ["a", "b"]) as writer:
        writer.add(np.ones((2, 2, 2)), ["x.png", "y.png"], [0, 1], [(0, 0, 4, 4)] * 2, [(4, 4)] * 2)
        writer.add(np.zeros((1, 2, 2)), ["z.png"], [1], [(0, 0, 4, 4)], [(4, 4)])
    with np.load(path, allow_pickle=False) as saved:
        assert saved["maps"].shape == (3, 2, 2) and saved["maps"][0, 0, 0] == 1 and saved["maps"][2].sum() == 0
        assert list(saved["files"]) == ["x.png", "y.png", "z.png"] and list(saved["class_names"]) == ["a", "b"]
        assert saved["class_index"].tolist() == [0, 1, 1] and saved["crop_boxes"].shape == (3, 4)
    with pytest.raises(ValueError, match="1 maps written, 3 announced"):
        with heatmap_file(tmp_path / "short.npz", 3, (2, 2), ["a", "b"]) as writer:
            writer.add(np.ones((1, 2, 2)), ["x.png"], [0], [(0, 0, 4, 4)], [(4, 4)])
    assert sorted(os.listdir(tmp_path)) == ["heatmaps.npz"]


def blob_images(folder, count, seed, with_blob):
    """Gray noise; with_blob: a bright disc in the upper-left quarter (the only difference between the classes).
    Returns {file: 'blob' or 'plain'}."""
    yy, xx = np.mgrid[:128, :128]

    def draw(rng, label, i):
        pixels = rng.normal(110, 25, (128, 128))
        if label == "blob":
            cy, cx = rng.integers(22, 42, size=2)
            pixels[(yy - cy) ** 2 + (xx - cx) ** 2 < 14 ** 2] = 245
        return pixels

    return write_class_images(folder, {"blob" if with_blob else "plain": count}, draw, seed,
                              name=f"{{label}}_{seed}_{{i:02d}}.png", folders=False)


def test_real_codes_heatmaps_and_predict_agree_with_test_model(weights, tmp_path):
    labels = {}
    for side, seed in (("train", 0), ("test", 1)):
        for with_blob in (False, True):
            labels.setdefault(side, {}).update(blob_images(tmp_path / side, 16 if side == "train" else 6, seed,
                                                           with_blob))
        save_labels(tmp_path / f"{side}.json", ["plain", "blob"], labels[side])
    codes = [tmp_path / "codes_train", tmp_path / "codes_test"]
    assert run_script("train.py", tmp_path / "train", tmp_path / "test", *codes, "--gpus", "none").returncode == 0
    models_dir = tmp_path / "models"
    trained = run_script("train_model.py", tmp_path / "train", codes[0], tmp_path / "train.json", models_dir,
                         "--batch-size", 8, "--val-fraction", 0, "--gpus", "none")
    assert trained.returncode == 0, trained.stderr
    evaluated = run_script("test_model.py", tmp_path / "test", codes[1], tmp_path / "test.json", models_dir,
                           "--heatmaps", "all")
    assert evaluated.returncode == 0, evaluated.stderr
    eval_dir = models_dir / "eval"
    with np.load(eval_dir / "heatmaps.npz", allow_pickle=False) as saved:
        maps, files, classes = saved["maps"], list(saved["files"]), saved["class_index"]
        assert maps.shape == (12, 7, 7) and files == sorted(labels["test"])
        assert saved["crop_boxes"].tolist() == [[0, 0, 128, 128]] * 12
    assert all(m.std() > 0 for m in maps)  # not constant
    report = json.loads((eval_dir / "report.json").read_text())
    assert report["accuracy"]["value"] >= 0.8, report
    blob_maps = [m for m, f, c in zip(maps, files, classes) if labels["test"][f] == "blob" and c == 1]
    upper_left = np.mean([m[:4, :4].sum() / m.sum() for m in blob_maps])
    assert upper_left > 0.5, upper_left  # the upper-left 4x4 of the 7x7 grid is a third of its area
    assert (eval_dir / "heatmaps.png").stat().st_size > 0
    assert sorted(os.listdir(eval_dir / "heatmaps")) == sorted(labels["test"])  # one overlay PNG per image

    (tmp_path / "test" / "notes.png").write_text("not an image")
    predicted = run_script("-m", "models.predict", models_dir, tmp_path / "test", "--out", tmp_path / "pred",
                           "--gpus", "none", "--heatmaps")
    assert predicted.returncode == 0, predicted.stderr
    assert "12 images classified, 1 skipped" in predicted.stdout and "notes.png" in predicted.stderr
    with open(tmp_path / "pred" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [os.path.basename(r["file"]) for r in rows if r["skipped_reason"]] == ["notes.png"]  # its row, no scores
    new = {os.path.basename(r["file"]): r for r in rows if not r["skipped_reason"]}
    with open(eval_dir / "predictions.csv", newline="") as f:
        old = {r["file"]: r for r in csv.DictReader(f)}
    assert new.keys() == old.keys()
    for name, row in old.items():
        assert new[name]["predicted_class"] == row["predicted_class"]
        for c in ("plain", "blob"):
            assert float(new[name][f"p_{c}"]) == pytest.approx(float(row[f"p_{c}"]), abs=1e-5)
    with np.load(tmp_path / "pred" / "heatmaps.npz", allow_pickle=False) as saved:
        files_given = [os.path.basename(f) for f in saved["files"]]
        unread = files_given.index("notes.png")
        assert saved["maps"].shape == (13, 7, 7) and saved["class_index"][unread] == -1
        assert np.isnan(saved["maps"][unread]).all()
        np.testing.assert_allclose(np.delete(saved["maps"], unread, axis=0), maps, atol=1e-5)


def test_predict_refuses_what_it_cannot_trust(weights, tmp_path):
    blob_images(tmp_path / "imgs", 4, 0, False)
    (tmp_path / "empty").mkdir()
    models_dir = tmp_path / "m"
    models_dir.mkdir()
    result = run_script("-m", "models.predict", models_dir, tmp_path / "imgs")
    assert result.returncode == 2 and "no trained head" in result.stderr
    meta = {"format": FORMAT, "classes": ["a", "b"], "code_shape": [512, 7, 7], "training": {},
            "backbone": {"model": "models/resnet-50", "model_sha256": "0" * 64, "layer": "stage4_unit2_relu1_output",
                         "precision": "fp32"},
            "history": [{"epoch": 1, "params": params_file(1)}]}
    (models_dir / META_FILE).write_text(json.dumps(meta))
    net = head.build_head(2, (512, 7, 7))
    net.initialize()
    HeadFolder(models_dir).save_epoch(net, 1)
    result = run_script("-m", "models.predict", models_dir, tmp_path / "imgs")
    assert result.returncode == 2 and result.stderr.count("error:") == 1
    assert "needs the backbone resnet-50-0000.params with sha256 " + "0" * 64 in result.stderr  # what, and where:
    assert "models/resnet-50-0000.params (another checkpoint)" in result.stderr and "--backbone PATH" in result.stderr
    result = run_script("-m", "models.predict", models_dir, tmp_path / "empty")
    assert result.returncode == 2 and "no image files" in result.stderr
    result = run_script("-m", "models.predict", models_dir, tmp_path / "missing.png")
    assert result.returncode == 2 and "no such image or folder" in result.stderr
    meta["history"] = []
    (models_dir / META_FILE).write_text(json.dumps(meta))
    result = run_script("-m", "models.predict", models_dir, tmp_path / "imgs")
    assert result.returncode == 2 and "no finished epoch" in result.stderr
