"""The lung field: what a View shows of an image, `train.py --field lungs` recorded and enforced downstream, and the
lung-field audit (`make audit`, bench/audit.py) on images whose class is written outside or inside the lung box."""

import argparse
import json
import os

import numpy as np
import pytest
from PIL import Image

from helpers import run_script, write_class_images
from models.cli import lung_box_arg
from models.images import LUNG_BOX, View


def test_a_view_keeps_or_hides_the_lung_box_in_the_images_own_coordinates(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (200, 300), dtype=np.uint8)  # wide: crop cuts its sides
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    whole = View().read(tmp_path / "wide.png")
    # crop: the centre 200x200 square (x 50-250) becomes 224x224; the box's x 45-255 reaches past it, its y 24-176 not
    assert View().field_box(300, 200) == (0, 27, 224, 197)
    assert View(resize="squash").field_box(300, 200) == (34, 27, 190, 197)
    lungs, outside = View(field="lungs").read(tmp_path / "wide.png"), View(field="outside").read(tmp_path / "wide.png")
    fill = np.uint8(round(whole.mean()))
    np.testing.assert_array_equal(lungs[27:197], whole[27:197])
    assert np.all(lungs[:27] == fill) and np.all(lungs[197:] == fill)
    assert np.all(outside[27:197] == fill) and np.array_equal(outside[:27], whole[:27])

    Image.new("RGB", (100, 120), (10, 200, 30)).save(tmp_path / "colour.png")  # colour: filled per channel
    assert View(field="lungs", resize="squash").load(tmp_path / "colour.png")[0, 0].tolist() == [10, 200, 30]
    assert View(field="lungs").read(tmp_path / "colour.png").shape == (224, 224, 3)


def test_the_view_is_recorded_so_that_older_whole_image_codes_stay_valid():
    assert View().describe() == {"input_size": 224, "resize": "crop"}  # what codes recorded before fields existed
    lungs = View(field="lungs", box=(0.1, 0.1, 0.9, 0.9))
    assert lungs.describe()["field"] == "lungs" and lungs.describe()["lung_box"] == [0.1, 0.1, 0.9, 0.9]
    assert View.of(lungs.describe()) == lungs and View.of({"resize": "squash"}) == View(resize="squash")
    assert lung_box_arg("0.2,0.1,0.8,0.9") == (0.2, 0.1, 0.8, 0.9)
    for bad in ("0.8,0.1,0.2,0.9", "0.1,0.1,0.9", "a,b,c,d", "0,0,1,1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="left,top,right,bottom"):
            lung_box_arg(bad)
    assert LUNG_BOX == (0.15, 0.12, 0.85, 0.88)


def test_codes_of_whole_images_still_fit_heads_trained_before_fields_existed():
    from models.errors import UserError
    from models.headfolder import check_codes_match

    before = {"model": "m", "model_sha256": "abc", "layer": "l", "shape": [512, 7, 7], "precision": "fp32",
              "input_size": 224, "resize": "crop"}  # a codes index of whole images, then as now
    check_codes_match(before, {"backbone": dict(before)}, "codes")
    check_codes_match(dict(before, field="whole"), {"backbone": dict(before)}, "codes")
    lungs = dict(before, **View(field="lungs").describe())
    with pytest.raises(UserError, match="field 'lungs' \\(head trained on 'whole'\\)"):
        check_codes_match(lungs, {"backbone": dict(before)}, "codes")


def test_heatmap_mass_inside_the_lung_box():
    from models.heatmaps import field_shares

    box = View().field_box(400, 400)  # a square image: the box is x 34-190, y 27-197 of the 224 view
    assert box == (34, 27, 190, 197)
    centre, corner, spread = np.zeros((7, 7)), np.zeros((7, 7)), np.ones((7, 7))
    centre[3, 3], corner[0, 0] = 1.0, 1.0
    shares, outside = field_shares(np.stack([centre, corner, spread, np.zeros((7, 7))]), [box] * 3 + [box], 224)
    assert shares[0] == 1.0 and not outside[0]  # evidence in the middle of the film: inside
    assert shares[1] == 0.0 and outside[1]  # in the corner, where side markers are: outside
    assert shares[2] == pytest.approx((190 - 34) * (197 - 27) / 224 ** 2)  # spread evenly: the box's share of the view
    assert np.isnan(shares[3]) and not outside[3]  # no mass: no share
    assert np.isnan(field_shares(np.stack([centre]), [None], 224)[0][0])  # image size unknown


def marked_films(root, per_class, inside, folders=True, seed=3):
    """Two classes of the same smooth random films; class 'marked' carries a bright square, in the middle of the film
    (``inside`` the lung box) or in its top-left corner (outside it, like a side marker). Returns {file: class}."""
    def draw(rng, label, i):
        film = np.asarray(Image.fromarray(rng.integers(60, 200, (6, 6), dtype=np.uint8)).resize((160, 160),
                                                                                               Image.BICUBIC)).copy()
        if label == "marked":
            top, left = (70, 70) if inside else (4, 4)
            film[top:top + 14, left:left + 14] = 255
        return film

    return write_class_images(root, {"marked": per_class, "plain": per_class}, draw, seed=seed, folders=folders)


@pytest.mark.parametrize("inside", [False, True])
def test_the_audit_warns_when_the_signal_lies_outside_the_lung_field(weights, tmp_path, inside):
    marked_films(tmp_path / "films", 12, inside)
    out, png = tmp_path / "audit.json", tmp_path / "audit.png"
    result = run_script("-m", "bench.audit", tmp_path / "films", "--seeds", 1, "--folds", 3, "--jobs", 2, "--out", out,
                        "--png", png, "--cache", tmp_path / "cache", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    films = json.loads(out.read_text())["datasets"]["films"]
    probe = films["scores"]
    as_is, hidden, only = (probe[label]["probe, averaged codes"]["roc_auc"]
                           for label in ("as is", "lungs hidden", "lungs only"))
    verdict = films["verdicts"]["probe, averaged codes"]
    assert as_is > 0.9
    if inside:  # hidden: the mark is gone; only the lungs: it stays
        assert hidden < 0.75 and only > 0.8 and verdict["warning"] is None, (as_is, hidden, only)
    else:
        assert hidden > 0.8 and only < 0.75 and "outside the lung fields" in verdict["warning"], (as_is, hidden, only)
    assert verdict["share_surviving_lungs_hidden"] == pytest.approx((hidden - 0.5) / (as_is - 0.5))
    assert os.path.getsize(png) > 0 and "| head (--layout both) |" in result.stdout
    for field in ("outside", "lungs"):  # each encoding cached apart, recorded as it was made
        index = json.loads((tmp_path / "cache" / f"films-{field}" / "marked" / "index.json").read_text())
        assert index["meta"]["field"] == field and index["meta"]["lung_box"] == list(LUNG_BOX)


def marked_split(root, inside, train=10, test=4):
    """root/train and root/test image folders of ``marked_films`` (``train`` and ``test`` per class) with their label
    files root/train.json and root/test.json, as scraper.process writes them."""
    from models.labels import save_labels

    for side, count, seed in (("train", train, 3), ("test", test, 4)):  # other films: a head never scores its own
        save_labels(root / f"{side}.json", ["plain", "marked"],
                    marked_films(root / side, count, inside, folders=False, seed=seed))


def test_the_report_finds_a_trained_heads_evidence_inside_or_outside_the_lung_box(weights, tmp_path):
    # a head learns the mark, in the middle of the film or in its corner (like a side marker): Grad-CAM of the marked
    # films must lie inside or outside the box accordingly
    fields = {}
    for inside in (True, False):
        root = tmp_path / ("inside" if inside else "outside")
        marked_split(root, inside, train=16)
        codes = [root / "train_codes", root / "test_codes"]
        assert run_script("train.py", root / "train", root / "test", *codes, "--gpus", "none").returncode == 0
        trained = run_script("train_model.py", root / "train", codes[0], root / "train.json", root / "models",
                             "--batch-size", 8, "--folds", 0, "--layout", "avg", "--epochs", 20, "--gpus", "none")
        assert trained.returncode == 0, trained.stderr
        evaluated = run_script("test_model.py", root / "test", codes[1], root / "test.json", root / "models")
        assert evaluated.returncode == 0, evaluated.stderr
        report = json.loads((root / "models" / "eval" / "report.json").read_text())
        assert report["per_class"]["marked"]["recall"] == 1.0  # so their maps are those of the class 'marked'
        fields[inside] = report["lung_field"]
    box = View().field_box(160, 160)
    spread = (box[2] - box[0]) * (box[3] - box[1]) / 224 ** 2  # the share of a map spread evenly over the view
    inside, outside = (fields[where]["mass_inside"]["by_true_class"]["marked"] for where in (True, False))
    assert inside > spread + 0.1 and outside < spread - 0.05 and inside - outside > 0.2, (inside, spread, outside)
    peaking_outside = {where: {name for name in fields[where]["peaks_outside"]["files"] if name.startswith("marked")}
                       for where in (True, False)}
    assert not peaking_outside[True] and len(peaking_outside[False]) == 4, peaking_outside


def test_train_py_field_lungs_is_recorded_enforced_and_followed_by_predict(weights, tmp_path):
    import csv

    marked_split(tmp_path, inside=True)
    lungs = [tmp_path / "lungs_train", tmp_path / "lungs_test"]
    made = run_script("train.py", tmp_path / "train", tmp_path / "test", *lungs, "--field", "lungs", "--gpus", "none")
    assert made.returncode == 0, made.stderr
    meta = json.loads((lungs[0] / "index.json").read_text())["meta"]
    assert meta["field"] == "lungs" and meta["lung_box"] == list(LUNG_BOX)
    models_dir = tmp_path / "models"
    trained = run_script("train_model.py", tmp_path / "train", lungs[0], tmp_path / "train.json", models_dir,
                         "--batch-size", 8, "--folds", 0, "--layout", "avg", "--epochs", 5, "--gpus", "none")
    assert trained.returncode == 0, trained.stderr
    assert json.loads((models_dir / "head.json").read_text())["backbone"]["field"] == "lungs"
    evaluated = run_script("test_model.py", tmp_path / "test", lungs[1], tmp_path / "test.json", models_dir)
    assert evaluated.returncode == 0, evaluated.stderr
    field = json.loads((models_dir / "eval" / "report.json").read_text())["lung_field"]
    assert field["field"] == "lungs" and field["box"] == list(LUNG_BOX) and "lung box on average" in evaluated.stdout
    assert 0 <= field["mass_inside"]["mean"] <= 1 and set(field["mass_inside"]["by_true_class"]) == {"plain", "marked"}
    assert field["peaks_outside"]["count"] == len(field["peaks_outside"]["files"]) <= 8

    # codes of the whole image are refused, with the option that makes the right ones
    whole = [tmp_path / "whole_train", tmp_path / "whole_test"]
    assert run_script("train.py", tmp_path / "train", tmp_path / "test", *whole, "--gpus", "none").returncode == 0
    refused = run_script("test_model.py", tmp_path / "test", whole[1], tmp_path / "test.json", models_dir)
    assert refused.returncode == 2 and "field 'whole' (head trained on 'lungs')" in refused.stderr
    assert "--field lungs --lung-box 0.15,0.12,0.85,0.88" in refused.stderr

    # new images are encoded as the head's training images were: the same probabilities as test_model.py's
    predicted = run_script("-m", "models.predict", models_dir, tmp_path / "test", "--out", tmp_path / "pred",
                           "--gpus", "none")
    assert predicted.returncode == 0, predicted.stderr
    with open(tmp_path / "pred" / "predictions.csv", newline="") as f:
        new = {os.path.basename(r["file"]): float(r["p_marked"]) for r in csv.DictReader(f)}
    with open(models_dir / "eval" / "predictions.csv", newline="") as f:
        old = {r["file"]: float(r["p_marked"]) for r in csv.DictReader(f)}
    assert new.keys() == old.keys() and all(new[name] == pytest.approx(old[name], abs=1e-5) for name in old)
