"""report.html (models.report_page): one self-contained page per result, parsed as a browser would read it."""

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

import test_model
import train_model
from helpers import make_split

HOSTILE = "<img src=x onerror=alert(1)>"  # a class name, and so part of every file name of that class
CSS_URL = "url("


class Page(HTMLParser):
    """What a page refers to and says: every src / href value, every url() in a style, its images, its text and the
    cells that carry a report.json key."""

    def __init__(self, html):
        super().__init__()
        self.references, self.images, self.text, self.keyed, self.tags = [], [], [], {}, []
        self._key, self._in_style = None, False
        self.styles = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.references += [attrs[name] for name in ("src", "href") if name in attrs]
        if "style" in attrs:
            self.styles.append(attrs["style"])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        self._key = attrs.get("data-key")
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)
        self.text.append(data)
        if self._key:
            self.keyed[self._key] = data.strip()
            self._key = None

    def style_urls(self):
        found = []
        for style in self.styles:
            start = style.find(CSS_URL)
            while start >= 0:
                found.append(style[start + len(CSS_URL):style.find(")", start)].strip("'\" "))
                start = style.find(CSS_URL, start + 1)
        return found


def at(report, dotted):
    for key in dotted.split("."):
        report = report[key]
    return report


def check_page(out_dir):
    """The checks every report page passes; returns (the page, report.json)."""
    html = (out_dir / "report.html").read_text(encoding="utf-8")
    report = json.loads((out_dir / "report.json").read_text())
    page = Page(html)
    assert "script" not in page.tags
    outside = [ref for ref in page.references + page.style_urls() if not ref.startswith(("data:", "#"))]
    assert outside == []
    assert page.images and all(src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,"))
                               for src in page.images)
    assert {"roc_auc.value", "balanced_accuracy", "operating_point.sensitivity.value", "n"} <= set(page.keyed)
    for key, shown in page.keyed.items():
        value = at(report, key)
        assert shown == (str(value) if isinstance(value, int) else f"{value:.4f}"), key
    return page, report


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """A head trained on tiny codes, then tested on 100 images of which half have a class (and so file names) that
    is HTML; heatmaps of every image."""
    root = tmp_path_factory.mktemp("page")
    classes = ["normal", HOSTILE]
    train = make_split(root / "train", classes, 30, seed=1)
    test = make_split(root / "test", classes, 50, seed=2, separation=0.6)
    models_dir = root / "models"
    train_model.main([*train, str(models_dir), "--epochs", "3", "--batch-size", "16"])
    test_model.main([*test, str(models_dir), "--heatmaps", "all"])
    return models_dir / "eval"


def test_the_page_is_self_contained_and_its_numbers_are_report_json_s(hostile_run):
    page, report = check_page(hostile_run)
    assert report["n"] == 100
    assert len(page.images) >= 4  # ROC, calibration, input check, heatmaps
    text = " ".join(page.text)
    assert "not a medical device" in text.lower()
    assert f"{report['input_check']['flagged']}" in page.keyed["input_check.flagged"]


def test_names_from_the_inputs_show_as_text(hostile_run):
    html = (hostile_run / "report.html").read_text(encoding="utf-8")
    page = Page(html)
    assert HOSTILE not in html  # never as markup
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert any(HOSTILE in text for text in page.text)  # as text, where a reader sees it
    assert "x" not in page.images


def test_a_100_image_page_with_heatmaps_stays_small(hostile_run):
    assert len(os.listdir(hostile_run / "heatmaps")) == 100
    assert os.path.getsize(hostile_run / "report.html") < 5_000_000


def browser():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


needs_browser = pytest.mark.skipif(
    browser() is None, reason="no headless Chromium here: apt-get install chromium, or make browser (docs/report.md)")


def render(path, screenshot, size="1100,3000"):
    """Headless Chromium on ``path``: (the screenshot as an array, the console messages it logged)."""
    run = subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                          "--v=0", f"--window-size={size}", f"--screenshot={screenshot}", f"file://{path}"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return np.asarray(Image.open(screenshot).convert("L")), console


@needs_browser
def test_a_browser_draws_the_page_without_a_console_error(hostile_run, tmp_path):
    pixels, console = render(hostile_run / "report.html", tmp_path / "page.png")
    assert console == []
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.01  # text and figures, not a blank page
    # the same browser does report what the page must not do: a reference outside the page, a script
    bad = tmp_path / "bad.html"
    head = (hostile_run / "report.html").read_text(encoding="utf-8").split("<body>")[0]
    bad.write_text(head + '<body><img src="http://127.0.0.1:9/x.png"><script>alert(1)</script></body></html>')
    _, console = render(bad, tmp_path / "bad.png", "400,300")
    assert len(console) == 2 and all("Content Security Policy" in line for line in console)


def test_the_demo_s_page(demo_run):
    page, report = check_page(demo_run.out / "models" / "eval")
    text = " ".join(page.text)
    assert "too few to judge calibration" in text
    assert report["n"] == 25


def test_the_limitations_name_the_audit_of_the_tested_set(hostile_run, tmp_path, monkeypatch):
    from models import report_page
    from models.fileio import write_json

    data = tmp_path / "data"
    data.mkdir()
    write_json(tmp_path / "audit.json", {"datasets": {"mine": {"data": str(data), "verdicts": {report_page.AUDIT_HEAD: {
        "share_surviving_lungs_hidden": 0.97, "warning": "most of this signal is outside the lung fields"}}}}})
    monkeypatch.setattr(report_page, "AUDIT_FILE", str(tmp_path / "audit.json"))
    assert report_page.audit_of(str(tmp_path / "elsewhere")) is None
    audit = report_page.audit_of(f"{data}/")  # the same folder, written otherwise
    report = json.loads((hostile_run / "report.json").read_text())
    said = " ".join(report_page.limitations(report, {"normal": {"images": 50}}, audit))
    assert "Lung-field audit (make audit on mine): of a head trained on this set there, 97 % of its ROC-AUC" in said
    assert "most of this signal is outside the lung fields" in said
    assert "No lung-field audit" in " ".join(report_page.limitations(report, {}, None))


def test_a_page_for_three_classes_and_for_a_head_from_before_the_page(tmp_path):
    from models.report_page import write_report_page

    classes = ["a", "b", "c"]
    train = make_split(tmp_path / "train", classes, 20, seed=1)
    test = make_split(tmp_path / "test", classes, 10, seed=2, separation=0.8)
    train_model.main([*train, str(tmp_path / "m"), "--epochs", "2", "--batch-size", "16"])
    test_model.main([*test, str(tmp_path / "m"), "--heatmaps", "none"])
    out = tmp_path / "m" / "eval"
    text = " ".join(Page((out / "report.html").read_text(encoding="utf-8")).text)
    assert "each class against the rest" in text and "Calibration is measured per class" in text
    report = json.loads((out / "report.json").read_text())
    write_report_page(out, report, {"backbone": {}, "classes": classes})  # head.json of an old head: little recorded
    text = " ".join(Page((out / "report.html").read_text(encoding="utf-8")).text)
    assert "layout n/a" in text and "Not recorded by this head." in text


def test_an_audit_that_found_no_signal_is_said_so(hostile_run, tmp_path, monkeypatch):
    from models import report_page
    from models.fileio import write_json

    write_json(tmp_path / "audit.json", {"datasets": {"mine": {"data": str(tmp_path), "verdicts": {
        report_page.AUDIT_HEAD: {"share_surviving_lungs_hidden": None, "warning": None}}}}})
    monkeypatch.setattr(report_page, "AUDIT_FILE", str(tmp_path / "audit.json"))
    report = json.loads((hostile_run / "report.json").read_text())
    said = " ".join(report_page.limitations(report, {}, report_page.audit_of(str(tmp_path))))
    assert "found no signal" in said
