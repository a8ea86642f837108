"""Xvision-MX benchmark (issue 5): one command, one machine, one table and bench/results.json.

    .venv/bin/python -m bench.run            # the full bench (`make bench`), ~9 minutes on an idle 2-core machine
    .venv/bin/python -m bench.run --quick    # 32 images, 1 run, a smoke test of the harness (tests/test_bench.py)

Rows (each one line in bench/rows.py's ROWS; a row whose requirement is missing is listed as skipped with the reason):
- forward-only images/s of the project's Backbone on a uint8 batch already in memory (fp32, bf16 where the CPU has
  native bfloat16, int8);
- end-to-end images/s of train.py's own code path (PNG files on disk -> codes on disk), timed inside the process around
  extract_folder so that the one-off model load is reported apart (fp32; ``train.py --bf16``; ``train.py --int8``);
- the PyTorch peer: the same cut ResNet-50 v1 with the same weights in bench/.venv, best of jit.trace +
  optimize_for_inference and torch.compile (inductor, freezing), channels_last, inference_mode, all cores; and, as the
  peer of ``--bf16``, torch.compile under bfloat16 autocast;
- the fp32 ceiling: the best fp32 GFLOP/s oneDNN reaches here (3x3 conv, GEMM) / GFLOP per image of the cut network;
- the CPU cost of decoding one PNG into a float32 input batch (View.decode + put_image, one thread), which end-to-end
  pays on top of the network; and the same for one 2,048 x 2,500 12-bit film as a 16-bit PNG, as an uncompressed
  DICOM and as a JPEG 2000 lossless DICOM (read at the level the view needs); train.py end to end on --films such
  films as 16-bit PNGs and as JPEG 2000 DICOMs;
- files in, probabilities out: a fresh models.predict process (the recorded backbone in MXNet, then the head) beside a
  fresh models.onnx_predict process running the same head's ONNX export (python -m models.export) in ONNX Runtime,
  over the same PNGs, img/s of their wall clocks (model loads included);
- head training samples/s of train_model.py --recipe xvision (20 epochs on generated codes), and two GEMM-bound
  rates: the issue's (3x the forward GEMMs) and a tight one (every GEMM of a step timed alone, best of numpy /
  MXNet dot / oneDNN); the wall clock of train_model.py's defaults (--layout auto, whose inner cross-validation trains
  a head of both layouts 5 times, then the winner once) beside one fixed-layout fit (--layout flat --folds 0) on the same 1,024 codes;
- peak memory (ru_maxrss of a child train.py) for two image counts, and for two large (--big-size, 9400x9400: under
  PIL's pixel cap) gray PNGs in 8 bits and the same picture in 16 bits, which must cost at most 1.5x the 8-bit peak.
Each row of the project's network records the precision that ran (``precision``; for end-to-end rows, what train.py's
speed self-check kept, which may be fp32 where bf16 / int8 is not faster) next to ``precision_requested``.
Every row is measured once per round, --runs rounds one after the other, and reported as the median; a ratio is the
median of its per-round ratios, so that a machine drifting in speed during the bench moves both sides of it together.
Nothing here asserts a time. The CPU time other processes took during each row is recorded, since a busy machine makes
every number wrong.

This module runs the rounds and writes the results; the rows and ratios are in bench.rows, how each row is measured in
bench.measure, the files it measures on in bench.inputs, the child processes in bench.children, what rows share within
a round in bench.shared, the machine and its load in bench.machine, the merged rows, ratios and table in bench.report.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from bench import report
from bench.children import BENCH, REPO
from bench.inputs import Inputs
from bench.machine import OTHER_CPU_LIMIT, CpuWatch, machine_info, wait_idle
from bench.measure import TRAIN_PY_INT8_SAMPLES, Measurements
from bench.rows import ROWS
from models.provenance import git_commit
from models.runtime import setup_runtime

RESULTS = os.path.join(BENCH, "results.json")
SCHEMA = "xvision-mx bench v1"


def measure_row(measurements, row):
    """Measure ``row`` on an idle machine if one can be had: wait for idle, measure, and again if it got busy."""
    args, attempts = measurements.args, []
    measurements.shared.row = row.key
    for attempt in range(args.retries + 1):
        waited = wait_idle(args.wait_idle) if args.wait_idle > 0 else 0.0
        if attempt:
            measurements.shared.forget(row.key)
        watch = CpuWatch()
        measured = row.measure(measurements)
        measured.update(label=row.label, unit=row.unit, median=statistics.median(measured["runs"]),
                        cpu=dict(watch.report(), waited_for_idle_s=round(waited, 1)))
        attempts.append(measured)
        if measured["cpu"]["other_cpu_fraction"] <= OTHER_CPU_LIMIT or attempt == args.retries:
            break
        print(f"  other processes took {measured['cpu']['other_cpu_fraction']:.0%} of the CPU: measuring again",
              flush=True)
    best = min(attempts, key=lambda m: m["cpu"]["other_cpu_fraction"])  # the least disturbed attempt
    best["attempts"] = len(attempts)
    return best


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 32 images, 1 run, 2 epochs, small memory set (numbers are not meaningful)")
    parser.add_argument("--images", type=int, default=256, help="PNGs for end-to-end and the small memory set")
    parser.add_argument("--mem-images", type=int, default=1024, help="PNGs of the large memory set")
    parser.add_argument("--head-samples", type=int, default=1024, help="codes the head trains on")
    parser.add_argument("--epochs", type=int, default=20, help="head training epochs")
    parser.add_argument("--runs", type=int, default=3,
                        help="rounds: each measures every row once, in turn; medians and per-round ratios are "
                             "reported (default: %(default)s)")
    parser.add_argument("--mem-runs", type=int, default=1, help="runs of the large memory set (first round only)")
    parser.add_argument("--big-size", type=int, default=9400,
                        help="side of the two large PNGs of mem_8bit_large / mem_16bit (default: %(default)s)")
    parser.add_argument("--films", type=int, default=32,
                        help="2,048 x 2,500 films per format of the decode_film_* and e2e_film_* rows (default: "
                             "%(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8, help="batches per timed forward-only run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed forward-only batches first")
    parser.add_argument("--torch-variants", default="jit,compile",
                        help="PyTorch ways to time, best reported: eager, jit, compile (default: %(default)s)")
    parser.add_argument("--torch-bf16-variant", default="compile_bf16", choices=("compile_bf16", "eager_bf16"),
                        help="the PyTorch peer of --bf16 (default: %(default)s)")
    parser.add_argument("--no-torch", action="store_true", help="leave out the PyTorch peer")
    parser.add_argument("--int8-samples", "--calib-images", type=int, default=TRAIN_PY_INT8_SAMPLES, metavar="N",
                        help="images the int8 network is quantised on (default: train.py's default, %(default)s)")
    parser.add_argument("--wait-idle", type=float, default=120,
                        help="before each row, wait up to this many seconds for other processes to leave the CPU "
                             "idle (default: %(default)s; 0: do not wait)")
    parser.add_argument("--retries", type=int, default=2,
                        help="measure a row again (up to this many times) when other processes took >5%% of the CPU "
                             "during it (default: %(default)s)")
    parser.add_argument("--only", help="comma-separated row keys to measure (the others are skipped)")
    parser.add_argument("--skip", default="", help="comma-separated row keys to leave out")
    parser.add_argument("--out", default=RESULTS, help="results file (default: bench/results.json)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (PNGs, codes)")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.mem_images, args.head_samples, args.epochs, args.batch_size = 32, 64, 32, 2, 8
        args.big_size, args.films = 2048, 1
        args.runs, args.mem_runs, args.batches, args.warmup = 1, 1, 1, 1
        args.torch_variants, args.torch_bf16_variant = "eager", "eager_bf16"
        args.int8_samples, args.wait_idle, args.retries = 8, 0, 0
    return args


def main(argv=None):
    args = parse_args(argv)
    setup_runtime()  # OMP_NUM_THREADS as the project's steps set it, for every child
    watch_all = CpuWatch()
    results = {"schema": SCHEMA, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "command": " ".join([os.path.relpath(sys.executable, REPO), "-m", "bench.run"] + sys.argv[1:]),
               "quick": args.quick, "git": git_commit(REPO), "machine": machine_info(),
               "rows": {}, "rounds": {}, "skipped": {}, "ratios": {}, "warnings": []}
    work = tempfile.mkdtemp(prefix="xvision-bench-")
    inputs = Inputs(args, work)
    measurements = Measurements(args, inputs)
    results["settings"] = {}
    try:
        print(f"generating PNGs in {work} ...", flush=True)
        inputs.prepare()
        results["settings"] = dict(inputs.settings, images=args.images, mem_images=args.mem_images,
                                   head_samples=args.head_samples, epochs=args.epochs, runs=args.runs,
                                   mem_runs=args.mem_runs, batch_size=args.batch_size,
                                   batches_per_forward_run=args.batches, warmup_batches=args.warmup)
        only, skip = set(args.only.split(",")) if args.only else None, set(filter(None, args.skip.split(",")))
        rows = []
        for row in ROWS:
            reason = "not in --only" if only and row.key not in only else "--skip" if row.key in skip \
                else row.needs(args) if row.needs else None
            if reason:
                results["skipped"][row.key] = reason
            else:
                rows.append(row)
        # every row once per round, rounds one after the other: a machine that drifts slower or faster over the
        # minutes of a run moves the rows of a round together, so their ratios (taken per round) stay true
        for number in range(1, args.runs + 1):
            measurements.shared.new_round()
            for row in rows:
                if row.key in results["skipped"] or (number > 1 and not row.every_round):
                    continue
                print(f"round {number}/{args.runs}, {row.key}: {row.label} ...", flush=True)
                try:
                    measured = measure_row(measurements, row)
                except (RuntimeError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as err:
                    results["skipped"][row.key] = f"failed: {err}"
                    results["rounds"].pop(row.key, None)
                    print(f"  failed: {err}", file=sys.stderr)
                    continue
                results["rounds"].setdefault(row.key, []).append(measured)
                print(f"  {report.fmt(measured['median'])} {row.unit}", flush=True)
        for key, rounds in results.pop("rounds").items():
            results["rows"][key] = report.merge_rounds(rounds)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    rows = results["rows"]
    results["ratios"] = report.ratios(rows)
    targets = {k: r["met"] for k, r in results["ratios"].items() if r["target"] is not None}
    results["targets_met"] = targets
    results["all_targets_met"] = all(v is True for v in targets.values())
    results["cpu"] = watch_all.report()
    results["warnings"] += report.warnings(rows, args.quick)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    report.print_table(results)
    print(f"\nwrote {os.path.relpath(args.out)} in {results['cpu']['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
