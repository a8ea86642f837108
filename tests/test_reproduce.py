"""`make reproduce` and its last step, bench/reproduce.py: the paper's figures beside ours, each of ours with its 95%
Wilson interval and whether the paper's figure lies inside it; the whole paper experiment offline against the local
Open-i stand-in (tests/openi_server.py)."""

import json
import subprocess

import pytest

from bench.reproduce import compare
from helpers import REPO, wilson_by_hand
from models.errors import UserError
from tests.openi_server import FakeOpenI, make_items


def report_of(counts):
    """The parts of a test_model report that bench.reproduce reads, from a normal/nodule confusion matrix."""
    return {"classes": ["normal", "nodule"], "n": sum(map(sum, counts)),
            "accuracy": {"correct": counts[0][0] + counts[1][1]}, "confusion_matrix": {"counts": counts}}


def test_our_figures_come_from_the_confusion_matrix_with_wilson_intervals():
    # 38 of 50 normal and 15 of 26 nodule called right, 11 nodules called normal: the paper's own precisions and
    # recalls (38/49 = 0.7755, 15/27 = 0.5556, 38/50, 15/26), so each lies inside our interval
    rows = {row["figure"]: row for row in compare(report_of([[38, 12], [11, 15]]))}
    for figure, counts in (("normal precision", (38, 49)), ("normal recall", (38, 50)),
                           ("nodule precision", (15, 27)), ("nodule recall", (15, 26)), ("accuracy", (53, 76))):
        row = rows[figure]
        assert row["ours_counts"] == f"{counts[0]}/{counts[1]}" and row["ours"] == pytest.approx(counts[0] / counts[1])
        assert row["ours_ci95"] == pytest.approx(wilson_by_hand(*counts), abs=1e-9), figure
        if figure != "accuracy":  # the paper's accuracy is 52/75, not these 53/76
            assert row["ours"] == pytest.approx(row["paper"], abs=5e-5), figure
        assert row["paper_inside_ci95"] is True, figure
    assert rows["normal test images"] == {"figure": "normal test images", "paper": 50, "ours": 50}
    assert rows["nodule test images"] == {"figure": "nodule test images", "paper": 26, "ours": 26}


def test_a_figure_outside_our_interval_is_said_to_be():
    # every image right: each of our intervals starts above 0.87, above every figure of the paper
    rows = compare(report_of([[50, 0], [0, 26]]))
    intervals = [row for row in rows if "ours_ci95" in row]
    assert len(intervals) == 5 and all(row["ours_ci95"][0] > 0.87 for row in intervals)
    assert not any(row["paper_inside_ci95"] for row in intervals)


def test_a_report_about_other_classes_is_refused():
    with pytest.raises(UserError, match="not normal and nodule"):
        compare(dict(report_of([[1, 0], [0, 1]]), classes=["normal", "pneumonia"]))


@pytest.mark.slow  # the whole paper experiment: scrape, split, encode, train, evaluate, compare
def test_make_reproduce_against_a_local_openi(weights, tmp_path):
    items, pngs = make_items(200)  # ~80 normal and ~80 nodule reports: enough for 150 normal + 103 nodule images
    out = tmp_path / "repro"
    with FakeOpenI(items, pngs, page_cap=100) as server:
        result = subprocess.run(
            ["make", "reproduce", f"REPRO_OUT={out}",
             f"SCRAPER_ARGS=--base-url {server.base_url} --delay 0 --backoff 0 --quiet"],
            cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    split = json.loads((out / "split" / "split.json").read_text())
    assert split["protocol"] == "xvision" and not split["shortfall"]
    assert split["counts"]["test"]["normal"]["images"] == 50 and split["counts"]["test"]["nodule"]["images"] == 26
    meta = json.loads((out / "models" / "head.json").read_text())
    assert meta["training"]["class_weight"] == "none" and meta["training"]["val_fraction"] == 0
    assert meta["head"]["pool"] == "none" and meta["training"]["n_images"] == 177

    comparison = json.loads((out / "reproduce.json").read_text())
    rows = {row["figure"]: row for row in comparison["rows"]}
    assert rows["normal precision"]["paper"] == 0.7755 and rows["nodule recall"]["paper"] == 0.5769
    assert rows["accuracy"]["paper"] == 0.6933 and "53" in comparison["paper_note"]
    assert rows["normal test images"] == {"figure": "normal test images", "paper": 50, "ours": 50}
    # our accuracy is the report's, its interval Wilson's for the report's counts
    report = json.loads((out / "models" / "eval" / "report.json").read_text())
    correct, n = report["accuracy"]["correct"], report["n"]
    assert rows["accuracy"]["ours"] == report["accuracy"]["value"]
    assert rows["accuracy"]["ours_counts"] == f"{correct}/{n}"
    assert rows["accuracy"]["ours_ci95"] == pytest.approx(wilson_by_hand(correct, n), abs=1e-9)
    assert "| normal precision | 0.7755 |" in result.stdout
