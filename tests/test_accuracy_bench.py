"""bench/accuracy.py (`make accuracy`) on a tiny generated set: real codes, every model row, a complete JSON.

The real-radiograph figures come from `make accuracy DATA=...`; here only the harness is checked, on images so easy
that every sensible model separates them.
"""

import json

from conftest import run_script
from test_pipeline import write_class_folders


def test_accuracy_bench_cross_validates_every_model(weights, tmp_path):
    write_class_folders(tmp_path / "discs", per_class=12)
    out, cache = tmp_path / "accuracy.json", tmp_path / "cache"
    args = ["bench/accuracy.py", tmp_path / "discs", "--folds", 3, "--subset-every", 2, "--out", out, "--cache", cache]
    result = run_script(*args, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["schema"] == "xvision-mx accuracy v1" and results["classes"] == ["disc_bright", "disc_dark"]
    assert results["positive_class"] == "disc_dark" and results["folds"] == 3
    subsets = results["datasets"]
    assert list(subsets) == ["as is", "imbalanced: every 2th disc_bright image"]
    assert subsets["as is"]["counts"] == {"disc_bright": 12, "disc_dark": 12}
    assert subsets["imbalanced: every 2th disc_bright image"]["counts"] == {"disc_bright": 6, "disc_dark": 12}
    for subset in subsets.values():
        rows = subset["models"]
        assert list(rows)[0] == "head (defaults)" and "probe, averaged codes" in rows and len(rows) == 8
        for row in rows.values():
            assert len(row["roc_auc_folds"]) == 3 and set(row["recall"]) == {"disc_bright", "disc_dark"}
            low, high = row["roc_auc_pooled_ci95"]
            assert 0 <= low <= row["roc_auc_pooled"] <= high <= 1
    assert subsets["as is"]["models"]["head (defaults)"]["roc_auc_pooled"] > 0.8
    assert "| head (defaults) |" in result.stdout

    again = run_script(*args, timeout=600)  # the codes are cached: no second extraction
    assert again.returncode == 0 and "img/s" not in again.stderr
