"""`make reproduce` offline: the whole paper experiment against the local Open-i stand-in (tests/openi_server.py)."""

import json
import subprocess

from helpers import REPO
from tests.openi_server import FakeOpenI, make_items


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
    report = json.loads((out / "models" / "eval" / "report.json").read_text())
    assert rows["accuracy"]["ours"] == report["accuracy"]["value"]
    low, high = rows["accuracy"]["ours_ci95"]
    assert low <= rows["accuracy"]["ours"] <= high
    assert rows["accuracy"]["paper_inside_ci95"] == (low <= 0.6933 <= high)
    assert "| normal precision | 0.7755 |" in result.stdout
