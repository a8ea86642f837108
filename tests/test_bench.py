"""python -m bench.run --quick: the harness runs every row end to end and writes a complete results.json.

No time is asserted anywhere: the numbers of a quick run mean nothing, only their presence and shape are checked.
"""

import json
import math
import os
import statistics

from bench.children import TORCH_PYTHON
from bench.report import merge_rounds
from bench.rows import RATIOS, ROWS, needs_bf16
from bench.run import SCHEMA
from bench.shared import SharedMeasurements, dependency_key
from helpers import run_script

ALWAYS = ["fwd_fp32", "e2e_fp32", "ceiling_fp32", "decode_ms", "decode_film_png16_ms", "decode_film_dicom_ms",
          "decode_film_j2k_ms", "e2e_film_png16", "e2e_film_j2k", "predict_mxnet", "predict_onnx", "head_train",
          "head_auto_s", "head_flat_s",
          "head_gemm_bound", "head_gemm_tight",
          "mem_small", "mem_large"]


def test_quick_bench_writes_complete_results(weights, tmp_path):
    out = tmp_path / "results.json"
    # the PyTorch peer runs only where bench/.venv exists (made by `make bench`); bf16 only on a CPU with native bf16
    result = run_script("-m", "bench.run", "--quick", "--out", out, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads(out.read_text())

    assert results["schema"] == SCHEMA and results["quick"] is True
    assert "-m bench.run --quick" in results["command"] and results["date"]
    machine = results["machine"]
    assert machine["usable_cores"] >= 1 and isinstance(machine["flags"], list) and machine["cpu"]
    assert machine["omp_num_threads"] == str(machine["usable_cores"])
    assert results["settings"]["images"] == 32 and results["settings"]["png_mean_bytes"] > 0

    rows, skipped = results["rows"], results["skipped"]
    assert set(rows) | set(skipped) == {row.key for row in ROWS}
    assert not [k for k, why in skipped.items() if why.startswith("failed")], skipped
    for key in ALWAYS:
        assert key in rows, skipped.get(key)
    for key, row in rows.items():
        assert row["runs"] and all(math.isfinite(v) and v > 0 for v in row["runs"]), key
        assert row["median"] == statistics.median(row["runs"]), key
        assert row["unit"] and row["label"] and "other_cpu_fraction" in row["cpu"], key
    assert rows["fwd_fp32"]["output_shape"] == [512, 7, 7]
    assert rows["mem_small"]["images"] == 32 and rows["mem_large"]["images"] == 64

    if needs_bf16() is None:
        assert "fwd_bf16" in rows and "e2e_bf16" in rows, skipped
    else:
        assert "native bfloat16" in skipped["fwd_bf16"] and "native bfloat16" in skipped["e2e_bf16"]

    if os.path.exists(TORCH_PYTHON):
        peer = rows["peer_torch"]
        assert peer["output_shape"] == [512, 7, 7]
        # the peer runs the same weights: its output matches the project's (values up to ~4)
        assert peer["check"]["max_abs_diff"] < 1e-3 * max(1.0, peer["check"]["max_abs_output"])
        assert peer["variant"] == "eager" and ("peer_torch_bf16" in skipped or rows["peer_torch_bf16"]["variant"] ==
                                               "eager_bf16")
    else:
        assert "bench/.venv" in skipped["peer_torch"]

    ratios = results["ratios"]
    assert set(ratios) == {ratio.key for ratio in RATIOS}
    for key in ("e2e_fp32 / fwd_fp32", "head_train / head_gemm_bound", "mem_large - mem_small (MiB)"):
        assert ratios[key]["value"] is not None and isinstance(ratios[key]["met"], bool), key
        assert ratios[key]["per_round"] == [ratios[key]["value"]], key  # --quick is one round
    assert ratios["head_auto_s / head_flat_s"]["value"] is not None
    assert rows["head_auto_s"]["flags"] == [] and rows["head_flat_s"]["flags"] == ["--layout", "flat", "--folds", "0"]
    assert set(results["targets_met"]) == {r.key for r in RATIOS if r.target is not None}
    assert isinstance(results["all_targets_met"], bool)
    assert "e2e_fp32 / fwd_fp32" in result.stdout  # the table was printed


def test_rounds_merge_into_one_row():
    cpu = {"other_cpu_fraction": 0.0}
    rounds = [{"runs": [10.0], "median": 10.0, "cpu": cpu, "attempts": 1, "detail": "first"},
              {"runs": [20.0], "median": 20.0, "cpu": dict(cpu, other_cpu_fraction=0.01), "attempts": 2,
               "detail": "last"}]
    row = merge_rounds(rounds)
    assert row["runs"] == [10.0, 20.0] and row["median"] == 15.0 and row["per_round"] == [10.0, 20.0]
    assert row["cpu"]["other_cpu_fraction"] == 0.01 and row["attempts"] == 3 and row["detail"] == "last"


def test_rows_share_a_measurement_while_what_it_depends_on_is_unchanged(tmp_path):
    """A measurement is kept under a digest of its command, its environment and its input files: the same child over
    the same files is measured once whichever row asks, a changed input file, option or environment is measured anew,
    and a row measured again drops what it used, whatever its name."""
    folder = tmp_path / "pngs"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(name.encode())
    command = ["python", "-m", "bench.child", "decode", str(folder), "--runs", "1"]
    key = dependency_key(command)
    assert dependency_key(list(command)) == key
    assert len({key, dependency_key(command, run=1), dependency_key(command, {"OPJ_NUM_THREADS": "1"}),
                dependency_key(command[:-1] + ["2"])}) == 4

    shared, measured = SharedMeasurements(), []

    def measure():
        measured.append(len(measured) + 1)
        return measured[-1]

    shared.row = "e2e_fp32"
    assert shared.get(key, measure) == (1, "e2e_fp32")
    shared.row = "a_row_added_later"
    assert shared.get(dependency_key(command), measure) == (1, "e2e_fp32")  # unchanged: the same runs
    (folder / "b.png").write_bytes(b"another picture")
    changed = dependency_key(command)
    assert changed != key and shared.get(changed, measure) == (2, "a_row_added_later")
    os.remove(folder / "a.png")
    assert dependency_key(command) not in (key, changed)

    shared.forget("a_row_added_later")  # measured again: both measurements it used are measured anew
    assert shared.get(key, measure) == (3, "a_row_added_later") and shared.get(changed, measure)[0] == 4
    shared.row = "e2e_fp32"
    shared.new_round()
    assert shared.get(key, measure) == (5, "e2e_fp32")
