"""`make pipeline DATA=...`: steps 2-5 on a local folder of class folders, end to end with the real weights."""

import json
import os
import subprocess

import pytest

from helpers import REPO, write_class_folders

pytestmark = pytest.mark.slow  # a whole pipeline, run twice


def test_make_pipeline_on_local_folders(weights, tmp_path):
    write_class_folders(tmp_path / "xrays")
    out = tmp_path / "out"
    result = subprocess.run(["make", "pipeline", f"DATA={tmp_path / 'xrays'}", f"OUT={out}"], cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"done: report {out}/models/eval/report.html" in result.stdout
    report = json.loads((out / "models" / "eval" / "report.json").read_text())
    split = json.loads((out / "split" / "split.json").read_text())
    test_count = len(os.listdir(out / "split" / "test"))
    assert report["n"] == test_count and report["classes"] == ["disc_bright", "disc_dark"]
    assert report["accuracy"]["value"] >= 0.8, report
    for plot in ("confusion_matrix.png", "roc_curve.png", "predictions.png"):
        assert (out / "models" / "eval" / plot).stat().st_size > 0
    assert (out / "models" / "training_curve.png").exists()
    assert split["seed"] == 0

    again = subprocess.run(["make", "pipeline", f"DATA={tmp_path / 'xrays'}", f"OUT={out}"], cwd=REPO,
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already made, nothing to do" in again.stdout and "nothing to do" in again.stdout
