"""predictions.html (models.predict, models.onnx_predict) and the pages of make accuracy and make audit
(bench.pages): self-contained, their numbers those of the files beside them, names from the inputs shown as text."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

import train_model
from bench.pages import main as write_bench_pages
from helpers import CODE_SHAPE, REPO, make_split
from models.errors import UserError
from models.predict import predict_images
from test_report_page import Page, needs_browser, render

HOSTILE = "<img src=x onerror=alert(1)>.png"
BENCH = os.path.join(REPO, "bench")


def self_contained(path):
    """The checks every page passes: no script, nothing fetched, every image a data URI; returns the parsed page."""
    page = Page(open(path, encoding="utf-8").read())
    assert "script" not in page.tags
    assert [ref for ref in page.references + page.style_urls() if not ref.startswith(("data:", "#"))] == []
    assert all(src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in page.images)
    return page


class FakeBackbone:
    """Stands in for the ResNet-50: a red film gets a code like the training images of the first class, any other a
    code far from every training image (so the input check flags it)."""
    batch_size = 4

    def input_batch(self):
        return np.zeros((self.batch_size, 3, 224, 224), np.float32)

    def run(self, batch, count):
        centre = 3.0 * np.random.default_rng(123).normal(size=(2,) + CODE_SHAPE)[0]  # make_split's first class
        red = batch[:count, 0].mean(axis=(1, 2)) > 150
        return np.stack([centre if is_red else np.full(CODE_SHAPE, 40.0) for is_red in red]).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_head(tmp_path_factory):
    """A head trained on tiny codes (make_split), its models folder."""
    root = tmp_path_factory.mktemp("tinyhead")
    train = make_split(root / "train", ["normal", "pneumonia"], 30, seed=1)
    train_model.main([*train, str(root / "models"), "--epochs", "2", "--batch-size", "16"])
    return root / "models"


@pytest.fixture()
def predicted(tiny_head, tmp_path, monkeypatch):
    """models.predict on two red films (one named as HTML), two grey ones, a 16-bit one, a corrupt file and a CT
    slice: the output folder."""
    monkeypatch.setattr("models.predict.recorded_backbone", lambda *args: FakeBackbone())
    films = tmp_path / "films"
    films.mkdir()
    for name, colour in ((HOSTILE, (200, 40, 40)), ("a_red.png", (210, 30, 30)), ("b_grey.png", (90, 90, 90)),
                         ("c_grey.png", (60, 60, 60))):
        Image.new("RGB", (300, 260), colour).save(films / name)
    Image.fromarray(np.full((260, 300), 20000, np.uint16)).save(films / "d_16bit.png")  # read as the backbone did
    (films / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not a film")
    shutil.copy(get_testdata_file("CT_small.dcm"), films / "ct_small.dcm")  # pydicom's CT slice: left out by its header
    out = tmp_path / "pred"
    assert predict_images(str(tiny_head), [str(films)], out_dir=str(out), log=lambda *a: None) == 5
    return out


def test_predictions_page_flagged_first_skipped_listed_names_as_text(predicted):
    html = (predicted / "predictions.html").read_text(encoding="utf-8")
    page = self_contained(predicted / "predictions.html")
    assert len(page.images) == 5 and all(src.startswith("data:image/jpeg;base64,") for src in page.images)
    assert max(map(len, page.images)) < 10_000  # a thumbnail, not the film
    assert (page.keyed["scored"], page.keyed["flagged"], page.keyed["skipped"]) == ("5", "3", "2")
    assert (page.keyed["out_of_scope"], page.keyed["unreadable"]) == ("1", "1")
    shown = [text for text in page.text if text.endswith(".png")]
    files = [os.path.basename(text) for text in shown]
    assert files[:3] == ["b_grey.png", "c_grey.png", "d_16bit.png"]  # the flagged first, each part as given
    assert files[3:] == [HOSTILE, "a_red.png", "corrupt.png"]  # "<" sorts before "a"
    assert "not a readable image" in html and "not a chest radiograph: its Modality is CT" in html
    assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;.png" in html


def test_a_film_that_cannot_be_read_again_leaves_its_cell_empty(predicted, tiny_head):
    from models.images import View
    from models.predictions_page import write_predictions_page

    os.remove(next(path for path in (predicted.parent / "films").iterdir() if path.name == "a_red.png"))
    write_predictions_page(str(predicted), ["normal", "pneumonia"], View(), {"written_by": "test", "source": "s",
                                                                             "epoch": 1, "check": (1.0, "test", 200)})
    page = self_contained(predicted / "predictions.html")
    assert len(page.images) == 4 and page.keyed["scored"] == "5"


def test_a_run_that_scores_nothing_writes_no_page(predicted, tiny_head, monkeypatch):
    before = (predicted / "predictions.html").read_bytes()
    with pytest.raises(UserError, match="the image given could not be read"):
        predict_images(str(tiny_head), [str(predicted.parent / "films" / "corrupt.png")], out_dir=str(predicted),
                       log=lambda *a: None)
    assert (predicted / "predictions.html").read_bytes() == before


@needs_browser
def test_a_browser_draws_the_predictions_page_without_a_console_error(predicted, tmp_path):
    pixels, console = render(predicted / "predictions.html", tmp_path / "page.png", "1100,1200")
    assert console == [] and pixels.std() > 20


# the ONNX runner's environment has neither: the page code it imports must not need them
NO_MXNET = """
import sys
for name in ("mxnet", "sklearn", "scipy"):
    sys.modules[name] = None  # an import of any of them now raises ImportError
from models.images import View
from models.onnx_predict import predict_files
from models.predictions_page import write_predictions_page
write_predictions_page(sys.argv[1], ["normal", "pneumonia"], View(), {"written_by": "models.onnx_predict",
                       "source": "c.onnx", "epoch": 2, "check": None, "rule": None})
print(sorted(name for name in ("mxnet", "sklearn", "scipy") if sys.modules.get(name) is not None))
"""


def test_the_onnx_runner_renders_its_page_without_mxnet_scikit_learn_or_scipy(tmp_path):
    (tmp_path / "predictions.csv").write_text("file,predicted_class,p_normal,p_pneumonia,training_distance,"
                                              "unlike_training,skipped_reason\n"
                                              "gone.png,normal,0.75,0.25,,,\n"
                                              f"{tmp_path / 'film.png'},pneumonia,0.25,0.75,,,\n"
                                              "bad.dcm,,,,,,not a readable image (truncated)\n")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 240), dtype=np.uint8)).save(tmp_path / "film.png")
    ran = subprocess.run([sys.executable, "-c", NO_MXNET, str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip() == "[]"
    page = self_contained(tmp_path / "predictions.html")
    assert len(page.images) == 1 and "not a readable image (truncated)" in " ".join(page.text)  # film.png's


@pytest.fixture(scope="module")
def bench_pages(tmp_path_factory):
    """bench.pages run on copies of the committed accuracy.json, audit.json and audit.png: the folder."""
    folder = tmp_path_factory.mktemp("bench")
    for name in ("accuracy.json", "audit.json", "audit.png"):
        (folder / name).write_bytes(open(os.path.join(BENCH, name), "rb").read())
    write_bench_pages(["--accuracy", str(folder / "accuracy.json"), "--audit", str(folder / "audit.json")])
    return folder


def test_the_accuracy_page_shows_accuracy_json(bench_pages):
    results = json.loads((bench_pages / "accuracy.json").read_text())
    page = self_contained(bench_pages / "accuracy.html")
    for name, record in results["datasets"].items():
        for model in ("head (defaults: --layout auto)", "probe, averaged codes"):
            for key in ("roc_auc_mean", "balanced_accuracy", "brier"):
                assert page.keyed[f"{name}/{model}/{key}"] == f"{record['models'][model][key]['mean']:.3f}"
        assert page.keyed[f"{name}/verdict"] == record["verdict"]["reading"]
        difference = record["verdict"]["defaults_minus_better_probe"]
        assert page.keyed[f"{name}/verdict/probe"] == f"{difference:+.3f}"


def test_the_audit_page_shows_audit_json_and_its_chart(bench_pages):
    results = json.loads((bench_pages / "audit.json").read_text())
    page = self_contained(bench_pages / "audit.html")
    assert len(page.images) == 1 and page.images[0].startswith("data:image/png;base64,")
    for name, record in results["datasets"].items():
        for encoding, scores in record["scores"].items():
            for model, score in scores.items():
                assert page.keyed[f"{name}/{encoding}/{model}"] == f"{score['roc_auc']:.3f}"
        share = record["verdicts"]["head (--layout both)"]["share_surviving_lungs_hidden"]
        assert page.keyed[f"{name}/share/head (--layout both)"] == f"{share:.2f}"


def test_the_committed_pages_are_those_of_the_committed_json(bench_pages):
    for name in ("accuracy.html", "audit.html"):
        assert (bench_pages / name).read_bytes() == open(os.path.join(BENCH, name), "rb").read(), \
            f"bench/{name} is stale: run .venv/bin/python -m bench.pages"
