"""What models.predict and models.onnx_predict leave behind (issue 36): every input has its row in predictions.csv
(the unreadable ones with a skipped_reason), a run that scores nothing exits 2 and leaves the earlier outputs as they
were, the two runners write to distinct default folders, overlays keep the images' relative paths, and a run that
replaces another's outputs says so."""

import csv
import io
import json
import os
import shutil

from helpers import run_script
from models.heatmaps import overlay_names
from models.onnx_predict import default_out
from models.errors import counted
from models.predictions import PROVENANCE_FILE, SKIPPED_COLUMN, PredictionsFile, announce_replacing, finished_line


def test_skipped_inputs_have_rows_with_their_reason_and_nothing_scored_is_an_error():
    for with_truth in (False, True):
        out = io.StringIO()
        rows = PredictionsFile(csv.writer(out), ["normal", "pneumonia"], None, None, with_truth)
        rows.add("a/x.png", [0.25, 0.75], 1, truth=1 if with_truth else None)
        rows.skip("b/bad.png", "not a readable image (truncated)")
        table = list(csv.DictReader(io.StringIO(out.getvalue())))
        assert list(table[0])[-1] == SKIPPED_COLUMN and ("group" in table[0]) == with_truth
        assert [row["file"] for row in table] == ["a/x.png", "b/bad.png"]
        assert table[0][SKIPPED_COLUMN] == "" and table[0]["p_pneumonia"] == "0.75"
        assert table[1][SKIPPED_COLUMN] == "not a readable image (truncated)"
        assert table[1]["predicted_class"] == table[1]["p_normal"] == ""
        rows.require_scored("out")  # one scored: no error
    nothing = PredictionsFile(csv.writer(io.StringIO()), ["normal", "pneumonia"], None, None)
    nothing.skip("bad.png", "not a readable image")
    try:
        nothing.require_scored("out")
    except Exception as err:
        assert "the image given could not be read" in str(err) and "out left as it was" in str(err)
    else:
        raise AssertionError("a run that scored nothing must be an error")


def test_the_last_line_counts_in_words_and_names_skipped_inputs_only_where_there_are_some():
    assert counted(1, "image") == "1 image" and counted(0, "image") == "0 images" and counted(2, "code") == "2 codes"
    assert finished_line(1, 0, "p.csv") == "1 image classified; predictions in p.csv"
    assert finished_line(3, 2, "p.csv") == "3 images classified, 2 skipped (named above); predictions in p.csv"


def test_overlays_keep_the_relative_path():
    names = overlay_names(["a/x.png", "b/x.png", "b/c/y.jpg"])
    assert names == {"a/x.png": "a/x.png", "b/x.png": "b/x.png", "b/c/y.jpg": os.path.join("b", "c", "y.png")}
    assert overlay_names(["/data/films/x.dcm"]) == {"/data/films/x.dcm": "x.png"}
    assert overlay_names(["f/x.png", "f/x.jpg"]) == {"f/x.png": "x.png.png", "f/x.jpg": "x.jpg.png"}


def test_the_onnx_runner_writes_apart_from_models_predict(tmp_path):
    assert default_out(tmp_path / "models" / "classifier.onnx") == str(tmp_path / "models" / "predict-classifier")
    out, said = tmp_path / "out", []
    out.mkdir()
    announce_replacing(str(out), "models.predict", "/m", said.append)
    assert said == []  # nothing there yet
    (out / "predictions.csv").write_text("file\n")
    (out / PROVENANCE_FILE).write_text(json.dumps({"written_by": "models.predict", "source": "/m"}))
    announce_replacing(str(out), "models.predict", "/m", said.append)
    announce_replacing(str(out), "models.onnx_predict", "/m/c.onnx", said.append)
    assert len(said) == 2 and all(line.startswith("notice: ") and "models.predict of /m" in line for line in said)
    assert "--out" not in said[0] and "another run or model: give --out DIR to keep both" in said[1]


def test_a_run_that_reads_nothing_exits_2_and_every_input_has_a_row(demo_run, tmp_path):
    """Acceptance: two films given as a/x.png and b/x.png and a corrupt file: three rows, two overlays; then the
    corrupt file alone: exit 2, one error line, the earlier predictions.csv unchanged."""
    models_dir, test = demo_run.out / "models", demo_run.out / "split" / "test"
    films = sorted(os.listdir(test))[:2]
    for folder, film in zip("ab", films):
        os.makedirs(tmp_path / folder)
        shutil.copy(test / film, tmp_path / folder / "x.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not a film")
    given = ["a/x.png", "b/x.png", "corrupt.png"]
    out = tmp_path / "pred"
    ran = run_script("-m", "models.predict", models_dir, *[tmp_path / name for name in given], "--out", out,
                     "--heatmaps")
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert f"warning: skipped {tmp_path / 'corrupt.png'}: not a readable image" in ran.stderr
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["file"] for row in rows] == [str(tmp_path / name) for name in given]
    assert [bool(row[SKIPPED_COLUMN]) for row in rows] == [False, False, True] and rows[2]["p_pneumonia"] == ""
    assert (out / "heatmaps" / "a" / "x.png").exists() and (out / "heatmaps" / "b" / "x.png").exists()
    before = (out / "predictions.csv").read_bytes(), (out / PROVENANCE_FILE).read_bytes()

    failed = run_script("-m", "models.predict", models_dir, tmp_path / "corrupt.png", "--out", out)
    assert failed.returncode == 2, failed.stderr[-2000:]
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the image given could not be read" in errors[0], failed.stderr
    assert "notice: " in failed.stdout + failed.stderr  # it said it would replace the earlier run's outputs
    assert ((out / "predictions.csv").read_bytes(), (out / PROVENANCE_FILE).read_bytes()) == before


def test_a_12bit_film_in_a_16bit_file_warns_and_reads_right_with_significant_bits(demo_run, tmp_path):
    """Acceptance: the demo (8-bit films) records 8 significant bits; a test film saved as v x 16 + 8 gets the depth
    warning (not only the other-hospital one), and with --significant-bits 12 the 8-bit film's class and probability
    (within 0.01)."""
    import numpy as np
    from PIL import Image

    models_dir, test = demo_run.out / "models", demo_run.out / "split" / "test"
    assert json.loads((models_dir / "head.json").read_text())["backbone"]["significant_bits"] == 8
    film = test / sorted(os.listdir(test))[0]
    gray = np.asarray(Image.open(film).convert("L")).astype(np.uint16)
    Image.fromarray(gray * 16 + 8).save(tmp_path / "film12.png")
    rows = {}
    for name, path, options in (("8bit", film, []), ("plain", tmp_path / "film12.png", []),
                                ("told", tmp_path / "film12.png", ["--significant-bits", "12"])):
        ran = run_script("-m", "models.predict", models_dir, path, "--out", tmp_path / name, *options)
        assert ran.returncode == 0, ran.stderr[-2000:]
        with open(tmp_path / name / "predictions.csv", newline="") as f:
            rows[name] = next(csv.DictReader(f))
        depth_warning = "likely a 12-bit film in a 16-bit file" in ran.stderr and "--significant-bits 12" in ran.stderr
        assert depth_warning == (name == "plain"), ran.stderr
    assert rows["told"]["predicted_class"] == rows["8bit"]["predicted_class"]
    assert abs(float(rows["told"]["p_pneumonia"]) - float(rows["8bit"]["p_pneumonia"])) < 0.01


def test_models_predict_and_the_onnx_runner_keep_both_outputs(demo_run, tmp_path):
    """Acceptance: a models folder with its ONNX file beside it (as `make onnx` leaves the demo's): each runner into
    its default folder, and both predictions.csv survive, with the same columns and classes."""
    models_dir = tmp_path / "models"
    shutil.copytree(demo_run.out / "models", models_dir, ignore=shutil.ignore_patterns("eval"))
    test = demo_run.out / "split" / "test"
    exported = run_script("-m", "models.export", models_dir, models_dir / "classifier.onnx")
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert run_script("-m", "models.predict", models_dir, test).returncode == 0
    ran = run_script("-m", "models.onnx_predict", models_dir / "classifier.onnx", test)
    assert ran.returncode == 0 and "notice: " not in ran.stdout, ran.stderr[-2000:]
    tables = {}
    for folder, runner in (("predict", "models.predict"), ("predict-classifier", "models.onnx_predict")):
        with open(models_dir / folder / "predictions.csv", newline="") as f:
            tables[folder] = list(csv.DictReader(f))
        assert json.loads((models_dir / folder / PROVENANCE_FILE).read_text())["written_by"] == runner
    mxnet, onnx = tables["predict"], tables["predict-classifier"]
    assert len(mxnet) == len(onnx) == len(os.listdir(test)) and list(mxnet[0]) == list(onnx[0])
    assert [row["predicted_class"] for row in mxnet] == [row["predicted_class"] for row in onnx]
