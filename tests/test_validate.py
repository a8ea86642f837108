"""python -m models.validate: a trained head scored on a labelled folder of class folders from elsewhere gives what
test_model.py gives on the same films, plus how the set differs from the training films; what it cannot score it
refuses in one line."""

import csv
import json
import os
import shutil

from pydicom.data import get_testdata_file

from helpers import run_script
from test_report_page import check_page

PATIENT_PATTERN = r"^(\d+)_"


def class_folders_of(split, labels_path, root, rename=str.upper):
    """The films of a split side laid out as ROOT/<CLASS>/<film> (class folder names in another case)."""
    labels = json.loads(labels_path.read_text())["labels"]
    for name, label in labels.items():
        os.makedirs(root / rename(label), exist_ok=True)
        shutil.copy2(split / name, root / rename(label) / name)
    return root


def rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def test_validation_on_the_demo_test_films_is_what_test_model_gives(demo_run, tmp_path):
    out = demo_run.out
    root = class_folders_of(out / "split" / "test", out / "split" / "test_labels.json", tmp_path / "elsewhere")
    shutil.copy2(get_testdata_file("CT_small.dcm"), root / "NORMAL" / "00099999_000.dcm")  # a CT: left out
    done = run_script("-m", "models.validate", out / "models", root, "--out", tmp_path / "val",
                      "--group-pattern", PATIENT_PATTERN, "--heatmaps", "none")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "val" / "eval" / "report.json").read_text())
    tested = json.loads((out / "models" / "eval" / "report.json").read_text())
    assert report["roc_auc"]["value"] == tested["roc_auc"]["value"] and report["n"] == tested["n"]
    assert report["intervals"]["unit"] == "patients" and report["roc_auc"]["ci95"] == tested["roc_auc"]["ci95"]
    mine, theirs = rows(tmp_path / "val" / "eval" / "predictions.csv"), rows(out / "models" / "eval" /
                                                                            "predictions.csv")
    assert {name: row["p_pneumonia"] for name, row in mine.items()} == \
        {name: row["p_pneumonia"] for name, row in theirs.items()}
    shift = report["validation"]
    assert shift["flagged_share"] == tested["input_check"]["share"]
    assert shift["calibration"]["calibration_slope"] == tested["probabilities"]["calibration_slope"]
    assert shift["operating_point"]["sensitivity"] == tested["operating_point"]["sensitivity"]
    assert set(shift["folders"]) == {"NORMAL", "PNEUMONIA"} and sum(shift["folders"].values()) == tested["n"]
    assert "unlike the training films (input check)" in done.stdout
    assert report["flow"]["found"] == tested["n"] + 1 and report["flow"]["left_out"] == {
        "not a chest radiograph (Modality CT)": 1}
    page, _ = check_page(tmp_path / "val" / "eval")
    text = " ".join(page.text)
    assert "External validation" in text and "left out: not a chest radiograph (Modality CT)" in text

    again = run_script("-m", "models.validate", out / "models", root, "--out", tmp_path / "val",
                       "--group-pattern", PATIENT_PATTERN, "--heatmaps", "none")  # resumes: nothing to encode
    assert again.returncode == 0 and "already made, nothing to do" in again.stdout


def test_what_validation_cannot_score_is_refused_in_one_line(demo_run, tmp_path):
    out = demo_run.out
    unknown = class_folders_of(out / "split" / "test", out / "split" / "test_labels.json", tmp_path / "odd",
                               rename=lambda label: "effusion" if label == "normal" else label)
    done = run_script("-m", "models.validate", out / "models", unknown, "--out", tmp_path / "v1")
    assert done.returncode == 2 and done.stderr.count("error:") == 1
    assert "['effusion'] are not classes of the head" in done.stderr

    trained = class_folders_of(out / "split" / "train", out / "split" / "train_labels.json", tmp_path / "train")
    done = run_script("-m", "models.validate", out / "models", trained, "--out", tmp_path / "v2")
    assert done.returncode == 2 and "images the head was trained on" in done.stderr

    done = run_script("-m", "models.validate", out / "models", tmp_path / "nowhere", "--out", tmp_path / "v3")
    assert done.returncode == 2 and "ROOT not found" in done.stderr


def test_files_that_are_not_chest_radiographs_are_left_out_by_name(tmp_path, capsys):
    """pydicom's own CT slice and a written DX abdomen among chest films: named and left out of the linked set (no
    label, no code); --allow-modality / --allow-body-part keep them."""
    import numpy as np
    import pydicom

    from bench.films import write_dicom
    from models.dicom import Scope
    from models.validate import gather

    root = tmp_path / "root"
    for label in ("normal", "nodule"):
        os.makedirs(root / label)
        write_dicom(root / label / f"{label}.dcm", np.full((32, 32), 900, np.uint16), BodyPartExamined="CHEST")
    write_dicom(root / "normal" / "abdomen.dcm", np.full((32, 32), 900, np.uint16), BodyPartExamined="ABDOMEN")
    shutil.copy(os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "CT_small.dcm"),
                root / "nodule" / "ct.dcm")
    labels, counts, left_out = gather(root, tmp_path / "out", ["normal", "nodule"])
    assert sorted(labels) == ["nodule.dcm", "normal.dcm"] and counts == {"nodule": 1, "normal": 1}
    assert sorted(os.listdir(tmp_path / "out" / "images")) == ["nodule.dcm", "normal.dcm"]
    assert str(left_out["nodule/ct.dcm"]).startswith("not a chest radiograph: its Modality is CT (computed tomography)")
    assert "its Body Part Examined is ABDOMEN" in str(left_out["normal/abdomen.dcm"])
    err = capsys.readouterr().err
    assert "warning: leaving out nodule/ct.dcm: not a chest radiograph" in err and "normal/abdomen.dcm" in err
    labels, counts, left_out = gather(root, tmp_path / "all", ["normal", "nodule"],
                                      scope=Scope(["CT"], ["abdomen"]))
    assert len(labels) == 4 and not left_out
