"""A result survives leaving the run that made it: the demo's models folder handed over to another place (the clone
that trained it gone) scores the same; a head never scores images it was trained on; a pipeline re-run on a changed
folder trains a new head instead of continuing or scoring the old one; every result says what made it."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

from helpers import REPO
from models.headfolder import META_FILE
from models.weights import sha256_of

PATIENT_PATTERN = r"^(\d+)_"


def run_elsewhere(cwd, *args):
    """A project command run from ``cwd`` (outside the repository), the repository importable as a second clone's."""
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def probabilities(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {row["file"]: [row[key] for key in row if key.startswith("p_")] for row in rows}


def hand_over(models_dir, to):
    """Copy a models folder (its head only: no eval/ or predict/) to ``to``, as if the clone that trained it were
    deleted: every path head.json records outside the folder now points nowhere."""
    os.makedirs(to)
    for name in os.listdir(models_dir):
        if os.path.isfile(os.path.join(models_dir, name)):
            shutil.copy2(os.path.join(models_dir, name), to)
    meta = json.loads((to / META_FILE).read_text())
    gone = "/nonexistent/old-clone"
    meta["backbone"]["model"] = f"{gone}/models/resnet-50"
    meta["training"].update(train_imgs=f"{gone}/split/train", train_codes=f"{gone}/codes/train",
                            train_labels=f"{gone}/split/train_labels.json")
    (to / META_FILE).write_text(json.dumps(meta))
    return to


def test_a_models_folder_handed_over_scores_what_it_scored(demo_run, tmp_path):
    out = demo_run.out
    moved = hand_over(out / "models", tmp_path / "colleague" / "head")
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()

    tested = run_elsewhere(elsewhere, os.path.join(REPO, "test_model.py"), out / "split" / "test",
                           out / "codes" / "test", out / "split" / "test_labels.json", moved, "--heatmaps", "none")
    assert tested.returncode == 0, tested.stderr[-2000:]
    assert probabilities(moved / "eval" / "predictions.csv") == probabilities(out / "models" / "eval" /
                                                                             "predictions.csv")

    films = sorted((out / "split" / "test").iterdir())[:6]
    mine = run_elsewhere(elsewhere, "-m", "models.predict", out / "models", *films, "--out", tmp_path / "mine")
    theirs = run_elsewhere(elsewhere, "-m", "models.predict", moved, *films, "--out", tmp_path / "theirs")
    assert mine.returncode == 0 and theirs.returncode == 0, theirs.stderr[-2000:]
    assert probabilities(tmp_path / "theirs" / "predictions.csv") == probabilities(tmp_path / "mine" /
                                                                                   "predictions.csv")

    exported = run_elsewhere(elsewhere, "-m", "models.export", moved, tmp_path / "theirs.onnx")
    assert exported.returncode == 0, exported.stderr[-2000:]
    sidecar = json.loads((tmp_path / "theirs.json").read_text())
    assert sidecar["head_params_sha256"] == sha256_of(out / "models" / "head-0020.params")

    # a backbone that is not the recorded one: one line naming what is needed and every place looked
    wrong = tmp_path / "wrong-0000.params"
    wrong.write_bytes(b"not a checkpoint")
    refused = run_elsewhere(elsewhere, "-m", "models.predict", moved, films[0], "--backbone", wrong,
                            "--out", tmp_path / "refused")
    assert refused.returncode == 2 and refused.stderr.count("error:") == 1, refused.stderr
    assert "is not the checkpoint the head's codes were made with" in refused.stderr


def test_a_head_is_not_scored_on_the_images_it_was_trained_on(demo_run, tmp_path):
    out = demo_run.out
    train_names = sorted(os.listdir(out / "split" / "train"))[:2]
    test_names = sorted(os.listdir(out / "split" / "test"))[:4]
    folder = tmp_path / "mixed"
    folder.mkdir()
    labels = {}
    train_labels = json.loads((out / "split" / "train_labels.json").read_text())["labels"]
    test_labels = json.loads((out / "split" / "test_labels.json").read_text())
    for side, names, known in (("train", train_names, train_labels), ("test", test_names, test_labels["labels"])):
        for name in names:
            shutil.copy2(out / "split" / side / name, folder / name)
            labels[name] = known[name]
    (tmp_path / "labels.json").write_text(json.dumps({"classes": test_labels["classes"], "labels": labels}))
    encoded = run_elsewhere(REPO, "train.py", folder, folder, tmp_path / "unused-codes", tmp_path / "codes")
    assert encoded.returncode == 0, encoded.stderr[-2000:]

    args = ["test_model.py", folder, tmp_path / "codes", tmp_path / "labels.json", out / "models", "--heatmaps",
            "none", "--out", tmp_path / "eval"]
    refused = run_elsewhere(REPO, *args)
    assert refused.returncode == 2 and refused.stderr.count("error:") == 1, refused.stderr
    assert "2 of 6 test images are images the head was trained on" in refused.stderr
    assert train_names[0] in refused.stderr and "--allow-overlap" in refused.stderr
    assert not (tmp_path / "eval" / "report.json").exists()

    allowed = run_elsewhere(REPO, *args, "--allow-overlap")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "scored anyway" in allowed.stdout + allowed.stderr
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["training_overlap"] == {"images": 2, "files": train_names, "allowed": True}


def test_a_rerun_on_a_changed_folder_trains_a_new_head_and_the_old_one_refuses_the_new_split(demo_run, tmp_path):
    data = tmp_path / "nih"
    shutil.copytree(os.path.join(REPO, "examples", "nih-sample"), data)
    for i, source in enumerate(sorted((data / "normal").iterdir())[:6]):  # new patients: new bytes, new names
        pixels = np.array(Image.open(source).convert("L"))
        pixels[0, 0] ^= 1
        Image.fromarray(pixels).save(data / "normal" / f"9999{i:04d}_000.png")
    out = tmp_path / "out"
    shutil.copytree(demo_run.out, out)  # the first run, as it was left
    old_report = json.loads((out / "models" / "eval" / "report.json").read_text())

    rerun = subprocess.run(["make", "pipeline", f"DATA={data}", f"OUT={out}", f"GROUP_PATTERN={PATIENT_PATTERN}"],
                           cwd=REPO, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "holds a head trained on other images" in rerun.stdout
    (aside,) = [name for name in os.listdir(out / "models") if name.startswith("replaced-")]
    report = json.loads((out / "models" / "eval" / "report.json").read_text())
    assert report["n"] == len(os.listdir(out / "split" / "test")) and report["same_split_as_head"] is True
    assert report["training_overlap"] == {"images": 0, "files": [], "allowed": False}
    assert json.loads((out / "models" / aside / "eval" / "report.json").read_text()) == old_report

    stale = run_elsewhere(REPO, "test_model.py", out / "split" / "test", out / "codes" / "test",
                          out / "split" / "test_labels.json", out / "models" / aside, "--out", tmp_path / "stale")
    if stale.returncode == 0:  # the new test split happens to hold none of the old head's training films
        assert "another split than the head's" in stale.stdout + stale.stderr
    else:
        assert stale.returncode == 2 and "images the head was trained on" in stale.stderr
        assert not (tmp_path / "stale" / "report.json").exists()


def test_every_result_says_what_made_it(demo_run, tmp_path):
    out = demo_run.out
    head = json.loads((out / "models" / META_FILE).read_text())
    report = json.loads((out / "models" / "eval" / "report.json").read_text())
    for record in (head["provenance"], report["provenance"]):
        assert set(record) >= {"commit", "tree_changed", "date_utc", "python", "packages", "cpu", "consumed"}
        assert {"mxnet", "numpy", "Pillow", "pydicom"} <= set(record["packages"])
    assert head["provenance"]["consumed"] == {
        "train_codes": sha256_of(out / "codes" / "train" / "codes.npy"),
        "train_labels": sha256_of(out / "split" / "train_labels.json"),
        "backbone": head["backbone"]["model_sha256"]}
    assert report["provenance"]["consumed"]["test_labels"] == sha256_of(out / "split" / "test_labels.json")
    assert report["provenance"]["consumed"]["head_params"] == sha256_of(out / "models" / "head-0020.params")
    assert len(head["training"]["images_sha256"]) == len(os.listdir(out / "split" / "train"))

    # the same labels written otherwise: another digest in the new report, the same scores
    labels = json.loads((out / "split" / "test_labels.json").read_text())
    (tmp_path / "labels.json").write_text(json.dumps(labels, indent=1))
    again = run_elsewhere(REPO, "test_model.py", out / "split" / "test", out / "codes" / "test",
                          tmp_path / "labels.json", out / "models", "--heatmaps", "none", "--out", tmp_path / "eval")
    assert again.returncode == 0, again.stderr[-2000:]
    rerun = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert rerun["provenance"]["consumed"]["test_labels"] != report["provenance"]["consumed"]["test_labels"]
    assert rerun["roc_auc"] == report["roc_auc"]
    first = sorted((out / "split" / "test").iterdir())[0]
    predicted = run_elsewhere(REPO, "-m", "models.predict", out / "models", first, "--out", tmp_path / "predict")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    beside = json.loads((tmp_path / "predict" / "provenance.json").read_text())
    assert beside["consumed"]["head_params"] == report["provenance"]["consumed"]["head_params"]
