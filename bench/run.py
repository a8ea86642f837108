"""Xvision-MX benchmark (issue 5): one command, one machine, one table and bench/results.json.

    .venv/bin/python -m bench.run            # the full bench (`make bench`), ~9 minutes on an idle 2-core machine
    .venv/bin/python -m bench.run --quick    # 32 images, 1 run, a smoke test of the harness (tests/test_bench.py)

Rows (each one line in ROWS below; a row whose requirement is missing is listed as skipped with the reason):
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
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import metadata

from models.runtime import setup_runtime

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
CHILD = ["-m", "bench.child"]  # run from REPO
TORCH_PYTHON = os.path.join(BENCH, ".venv", "bin", "python")
TORCH_PEER = os.path.join(BENCH, "torch_peer.py")
RESULTS = os.path.join(BENCH, "results.json")
TRAIN_PY_INT8_SAMPLES = 64  # train.py --int8 quantises on this many images by default; fwd_int8 uses as many
SCHEMA = "xvision-mx bench v1"
FLAGS_THAT_MATTER = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                     "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


# ---------------------------------------------------------------------------------------------------------- rows

@dataclass
class Row:
    key: str
    label: str
    unit: str
    measure: object  # Bench -> {"runs": [numbers], **details}
    needs: object = None  # Bench -> None if measurable, else the reason it is skipped
    every_round: bool = True  # False: measured in the first round only (a memory peak, not a speed)


@dataclass
class Ratio:
    key: str
    numerator: str
    denominator: str
    target: float = None  # met when value >= target (or <= target with at_most)
    at_most: bool = False
    meaning: str = ""
    difference: bool = False  # numerator - denominator instead of numerator / denominator


def needs_torch(bench):
    if bench.args.no_torch:
        return "--no-torch"
    if not os.path.exists(TORCH_PYTHON):
        return "bench/.venv is absent (make it: python3.11 -m venv bench/.venv && bench/.venv/bin/pip install " \
               "torch==2.13.0 numpy)"
    return None


def needs_bf16(bench):
    from models.devices import NATIVE_BF16_FLAGS, has_native_bf16

    return None if has_native_bf16() else \
        f"this CPU has no native bfloat16 ({' / '.join(NATIVE_BF16_FLAGS)}): train.py --bf16 refuses to run"


def needs_torch_bf16(bench):
    return needs_torch(bench) or needs_bf16(bench)


ROWS = [
    Row("fwd_fp32", "project forward-only fp32 (uint8 batch in memory)", "img/s", lambda b: b.forward("fp32")),
    Row("e2e_fp32", "project end-to-end fp32: train.py, PNG -> codes", "img/s", lambda b: b.extract(())),
    Row("peer_torch", "PyTorch peer forward-only fp32 (best expert way)", "img/s", lambda b: b.torch_peer(),
        needs_torch),
    Row("ceiling_fp32", "fp32 ceiling: peak oneDNN GFLOP/s / GFLOP per image", "img/s", lambda b: b.ceiling()),
    Row("decode_ms", "PNG decode + crop + resize into a batch, 1 thread", "ms/img", lambda b: b.decode()),
    Row("decode_film_png16_ms", "a 2048x2500 12-bit film as a 16-bit PNG: decode into a batch, 1 thread", "ms/img",
        lambda b: b.film_decode("png16")),
    Row("decode_film_dicom_ms", "the same film as DICOM, uncompressed (its window to 8 bits)", "ms/img",
        lambda b: b.film_decode("dicom")),
    Row("decode_film_j2k_ms", "the same film as DICOM, JPEG 2000 lossless (decoded at the level the view needs)",
        "ms/img", lambda b: b.film_decode("j2k")),
    Row("e2e_film_png16", "train.py end to end on the 2048x2500 12-bit films as 16-bit PNGs", "films/s",
        lambda b: b.film_extract("png16")),
    Row("e2e_film_j2k", "train.py end to end on the same films as JPEG 2000 lossless DICOMs", "films/s",
        lambda b: b.film_extract("j2k")),
    Row("fwd_bf16", "project forward-only bf16 (train.py --bf16's network)", "img/s", lambda b: b.forward("bf16"),
        needs_bf16),
    Row("e2e_bf16", "project end-to-end bf16: train.py --bf16", "img/s", lambda b: b.extract(("--bf16",)),
        needs_bf16),
    Row("peer_torch_bf16", "PyTorch peer forward-only bf16 (compile + autocast)", "img/s",
        lambda b: b.torch_peer(b.args.torch_bf16_variant), needs_torch_bf16),
    Row("fwd_int8", "project forward-only int8 (models.quantize)", "img/s", lambda b: b.forward("int8")),
    Row("e2e_int8", "project end-to-end int8: train.py --int8", "img/s", lambda b: b.int8_extract()),
    Row("predict_mxnet", "models.predict (MXNet): PNG files -> class probabilities, a fresh process", "img/s",
        lambda b: b.predict("mxnet")),
    Row("predict_onnx", "models.onnx_predict (ONNX Runtime, no MXNet): the same files, the exported classifier",
        "img/s", lambda b: b.predict("onnx")),
    Row("head_train", "head training: train_model.py, wall clock", "samples/s", lambda b: b.head_training()),
    Row("head_auto_s", "train_model.py defaults (--layout auto: inner 5-fold CV, then one fit), wall clock", "s",
        lambda b: b.head_wall()),
    Row("head_flat_s", "train_model.py --layout flat --folds 0 (one fit), wall clock", "s",
        lambda b: b.head_wall("--layout", "flat", "--folds", "0")),
    Row("head_gemm_bound", "head training GEMM-bound (3x forward GEMMs)", "samples/s", lambda b: b.head_gemm_bound()),
    Row("head_gemm_tight", "head training, each GEMM of a step timed alone", "samples/s",
        lambda b: b.head_gemm_tight()),
    Row("mem_small", "extraction peak memory (ru_maxrss), small set", "MiB", lambda b: b.memory(b.args.images)),
    Row("mem_large", "extraction peak memory (ru_maxrss), large set", "MiB", lambda b: b.memory(b.args.mem_images),
        every_round=False),
    Row("mem_8bit_large", "extraction peak memory, 2 large 8-bit PNGs", "MiB", lambda b: b.big_memory(8),
        every_round=False),
    Row("mem_16bit", "extraction peak memory, the same 2 PNGs in 16-bit", "MiB", lambda b: b.big_memory(16),
        every_round=False),
]

RATIOS = [
    Ratio("e2e_fp32 / peer_torch", "e2e_fp32", "peer_torch", 1.2, meaning="end-to-end vs PyTorch forward-only"),
    Ratio("e2e_fp32 / fwd_fp32", "e2e_fp32", "fwd_fp32", 0.85, meaning="end-to-end vs own forward-only"),
    Ratio("fwd_fp32 / ceiling_fp32", "fwd_fp32", "ceiling_fp32", meaning="forward-only vs the fp32 ceiling"),
    Ratio("fwd_fp32 / peer_torch", "fwd_fp32", "peer_torch", meaning="forward-only vs PyTorch forward-only"),
    Ratio("e2e_bf16 / peer_torch", "e2e_bf16", "peer_torch", meaning="train.py --bf16 vs PyTorch fp32 forward-only"),
    Ratio("e2e_bf16 / peer_torch_bf16", "e2e_bf16", "peer_torch_bf16",
          meaning="train.py --bf16 vs PyTorch bf16 forward-only"),
    Ratio("e2e_bf16 / fwd_bf16", "e2e_bf16", "fwd_bf16", meaning="bf16 end-to-end vs bf16 forward-only"),
    Ratio("fwd_bf16 / peer_torch_bf16", "fwd_bf16", "peer_torch_bf16",
          meaning="bf16 forward-only vs PyTorch bf16 forward-only"),
    Ratio("fwd_bf16 / fwd_fp32", "fwd_bf16", "fwd_fp32", meaning="bf16 speed-up, forward-only"),
    Ratio("decode_film_dicom_ms / decode_film_png16_ms", "decode_film_dicom_ms", "decode_film_png16_ms",
          meaning="reading a film from an uncompressed DICOM vs from a 16-bit PNG"),
    Ratio("decode_film_j2k_ms / decode_film_png16_ms", "decode_film_j2k_ms", "decode_film_png16_ms", 1.0,
          at_most=True, meaning="reading a film from a JPEG 2000 DICOM vs from a 16-bit PNG"),
    Ratio("e2e_film_j2k / e2e_film_png16", "e2e_film_j2k", "e2e_film_png16", round(1 / 1.3, 3),
          meaning="train.py on JPEG 2000 DICOM films vs on the same films as 16-bit PNGs (within 1.3x: >= 0.769)"),
    Ratio("e2e_int8 / peer_torch", "e2e_int8", "peer_torch", 3.0,
          meaning="train.py --int8 vs PyTorch fp32 forward-only"),
    Ratio("fwd_int8 / peer_torch", "fwd_int8", "peer_torch", meaning="int8 forward-only vs PyTorch fp32 forward-only"),
    Ratio("e2e_int8 / fwd_int8", "e2e_int8", "fwd_int8", meaning="int8 end-to-end vs int8 forward-only"),
    Ratio("fwd_int8 / fwd_fp32", "fwd_int8", "fwd_fp32", meaning="int8 speed-up, forward-only"),
    Ratio("predict_onnx / predict_mxnet", "predict_onnx", "predict_mxnet",
          meaning="the exported classifier in ONNX Runtime vs train.py's backbone + the head in MXNet, files in, "
                  "probabilities out"),
    Ratio("head_train / head_gemm_bound", "head_train", "head_gemm_bound", 0.5,
          meaning="head training within 2x of its GEMM-bound time"),
    Ratio("head_train / head_gemm_tight", "head_train", "head_gemm_tight",
          meaning="head training vs its step's GEMMs at their fastest"),
    Ratio("head_auto_s / head_flat_s", "head_auto_s", "head_flat_s",
          meaning="what choosing the layout by inner cross-validation costs, in fits of one fixed layout"),
    Ratio("mem_large - mem_small (MiB)", "mem_large", "mem_small", 16, at_most=True, difference=True,
          meaning="peak memory flat in the number of images (codes are 98 KiB/image)"),
    Ratio("mem_16bit / mem_8bit_large", "mem_16bit", "mem_8bit_large", 1.5, at_most=True,
          meaning="16-bit images decoded without wide copies (2 decode threads)"),
]


# ------------------------------------------------------------------------------------------------ the machine

def read_text(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def machine_info():
    from models.devices import cpu_model

    cpuinfo = read_text("/proc/cpuinfo")
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    meminfo = {line.split(":")[0]: line.split(":")[1].strip() for line in read_text("/proc/meminfo").splitlines()
               if ":" in line}
    siblings = read_text("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").strip()
    identity = cpu_model()
    info = {
        "cpu": fields.get("model name", platform.processor()),
        "cpu_family_model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
        "cpu_vendor": identity["vendor"],
        "cpu_generation": identity["generation"],  # from family/model: a VM may call a Zen 4 and a Zen 5 "AMD EPYC"
        "usable_cores": len(os.sched_getaffinity(0)),
        "logical_cpus": os.cpu_count(),
        "threads_per_core": len(siblings.replace("-", ",").split(",")) if siblings else None,
        "flags": [flag for flag in FLAGS_THAT_MATTER if flag in flags],
        "hypervisor": "hypervisor" in flags,
        "memory_total": meminfo.get("MemTotal"),
        "cache": {},
        "os": platform.platform(),
        "python": platform.python_version(),
        "mxnet": package_version("mxnet") or package_version("mxnet-cu112"),
        "numpy": package_version("numpy"),
        "pillow": package_version("pillow"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_start": os.getloadavg(),
    }
    for index in range(4):
        base = f"/sys/devices/system/cpu/cpu0/cache/index{index}"
        level, kind, size = (read_text(f"{base}/{name}").strip() for name in ("level", "type", "size"))
        if level:
            info["cache"][f"L{level}{'d' if kind == 'Data' else 'i' if kind == 'Instruction' else ''}"] = size
    return info


def package_version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_state():
    def git(*args):
        result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else None

    status = git("status", "--porcelain")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


class CpuWatch:
    """CPU seconds the whole machine spent vs this process and its waited-for children: the rest is other processes."""

    def __init__(self):
        self.start_busy, self.start_own, self.start_wall = self.busy(), self.own(), time.perf_counter()

    @staticmethod
    def busy():
        fields = [int(x) for x in read_text("/proc/stat").splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def own():
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def report(self):
        wall = time.perf_counter() - self.start_wall
        foreign = max(0.0, (self.busy() - self.start_busy) - (self.own() - self.start_own))
        return {"wall_s": round(wall, 2), "other_cpu_s": round(foreign, 2),
                "other_cpu_fraction": round(foreign / max(wall * os.cpu_count(), 1e-9), 3)}


# ------------------------------------------------------------------------------------------------ inputs

def make_png(job):
    """One 512x512 8-bit grayscale PNG: smooth anatomy-like shading plus film noise (~150 KB, like an Open-i image)."""
    import numpy as np
    from PIL import Image

    path, seed, size = job
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC), np.float32)
    pixels = np.clip(base + rng.normal(0.0, 4.0, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(path)
    return os.path.getsize(path)


def make_image_set(folder, count, size=512):
    """``count`` distinct PNGs in ``folder``, made by as many processes as there are cores; returns their mean size."""
    os.makedirs(folder, exist_ok=True)
    jobs = [(os.path.join(folder, f"img{i:05d}.png"), i, size) for i in range(count)]
    with ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        sizes = list(pool.map(make_png, jobs, chunksize=16))
    return sum(sizes) / len(sizes)


def make_big_png(job):
    """One large gray PNG of big blocks (~200 KB at 9400x9400, as such scans compress), 8-bit or the same x 257 in
    16-bit, so that both depths give the same 8-bit pixels; returns its size in bytes."""
    import numpy as np
    from PIL import Image

    path, seed, size, depth = job
    blocks = np.random.default_rng(seed).integers(0, 256, (47, 47), dtype=np.uint8)
    side = -(-size // 47)
    gray = np.kron(blocks, np.ones((side, side), np.uint8))[:size, :size]
    Image.fromarray(gray if depth == 8 else gray.astype(np.uint16) * 257).save(path)
    return os.path.getsize(path)


FILM_KINDS = {"png16": ".png", "dicom": ".dcm", "j2k": ".dcm"}


def make_film(job):
    """One 12-bit film in the format ``kind`` (png16: the values x 16 in a 16-bit PNG; dicom: a DX DICOM with its
    window; j2k: the same, JPEG 2000 lossless): a bundled radiograph upsampled, plus detector noise."""
    from PIL import Image

    from bench.films import large_film, write_dicom, write_png16

    path, seed, kind, source = job
    stored, _ = large_film(Image.open(source).convert("L"), seed)
    if kind == "png16":
        write_png16(path, stored * 16)
    else:
        write_dicom(path, stored, window=(2048, 4096), syntax="j2k" if kind == "j2k" else "uncompressed")
    return os.path.getsize(path)


def link_subset(source, folder, count):
    """A folder holding the first ``count`` images of ``source`` (hard links: no copy, same bytes)."""
    os.makedirs(folder, exist_ok=True)
    for name in sorted(os.listdir(source))[:count]:
        os.link(os.path.join(source, name), os.path.join(folder, name))
    return folder


# ------------------------------------------------------------------------------------------------ measurements

def run_json(cmd, timeout=900, env=None):
    """Run a child; its last stdout line is a JSON object. A failure raises with the child's last stderr lines."""
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... failed (exit {result.returncode}):\n{tail}")
    return json.loads(lines[-1])


class Bench:
    def __init__(self, args, work):
        self.args, self.work = args, work
        self.py = sys.executable
        # a row runs once per round (--runs is the number of rounds); what two rows share is kept for the round
        self.extractions = {}  # (flags, images) -> list of child results; the e2e runs also give mem_small
        self.gemm = None  # child.py gemm's timings, for both GEMM-bound rows
        self.classifier = None  # (models folder, ONNX file) the two prediction rows run, made once
        self.settings = {}
        self.done = set()  # rows measured so far in this round
        self.big_sets = {}  # depth -> (folder of BIG_IMAGES large PNGs, their mean size), made when first measured
        self.film_bytes = {}  # format -> mean file size of its --films large films, made when first measured

    def new_round(self):
        """Forget what the last round measured, so that every row runs again."""
        self.extractions.clear()
        self.done.clear()
        self.gemm = None

    def prepare(self):
        started = time.perf_counter()
        n_large = max(self.args.mem_images, self.args.images, self.args.head_samples)
        self.images_all = os.path.join(self.work, "png_all")
        png_bytes = make_image_set(self.images_all, n_large)
        self.sets = {n: link_subset(self.images_all, os.path.join(self.work, f"png_{n}"), n)
                     for n in {self.args.images, self.args.mem_images, self.args.head_samples}}
        self.one_image = link_subset(self.images_all, os.path.join(self.work, "png_1"), 1)
        self.settings.update(png_count=n_large, png_size="512x512 grayscale (mode L)", png_mean_bytes=round(png_bytes),
                             png_generation_s=round(time.perf_counter() - started, 1),
                             page_cache="warm (the PNGs were just written)")

    def int8_sample_paths(self, count):
        folder = self.sets[self.args.images]
        return [os.path.join(folder, name) for name in sorted(os.listdir(folder))[:count]]

    def forward(self, precision):
        a = self.args
        cmd = [self.py, *CHILD, "forward", "--precision", precision, "--batch-size", a.batch_size,
               "--batches", a.batches, "--runs", 1, "--warmup", a.warmup]
        if precision == "int8":
            cmd += ["--int8-samples", *self.int8_sample_paths(a.int8_samples)]
        # child.py builds the Backbone of that precision without train.py's speed self-check: what it times is that
        # network, however it compares with fp32
        return dict(run_json(list(map(str, cmd))), precision_requested=precision, precision=precision)

    def extraction_runs(self, flags, images, runs):
        """``runs`` fresh train.py processes over the ``images`` set (TEST_IMGS: one image), cached per (flags, n)."""
        key = (tuple(flags), images)
        done = self.extractions.setdefault(key, [])
        while len(done) < runs:
            out = os.path.join(self.work, f"codes_{'_'.join(f.strip('-') for f in flags) or 'fp32'}_{images}_"
                                          f"{len(done)}")
            cmd = [self.py, *CHILD, "extract", "--", self.sets[images], self.one_image, f"{out}/train", f"{out}/test",
                   "--batch-size", str(self.args.batch_size), "--gpus", "none", *flags]
            done.append(run_json(cmd))
            shutil.rmtree(out, ignore_errors=True)
        return done[:runs]

    def extract(self, flags):
        results = self.extraction_runs(flags, self.args.images, 1)
        train = [r["folders"][0] for r in results]
        used = sorted({f["precision"] for f in train})  # the Backbone's precision after train.py's speed self-check
        return {"runs": [f["img_per_s"] for f in train], "images": self.args.images,
                "precision_requested": "bf16" if "--bf16" in flags else "int8" if "--int8" in flags else "fp32",
                "precision": used[0] if len(used) == 1 else "mixed: " + ", ".join(used),
                "seconds": [round(f["seconds"], 3) for f in train],
                "process_wall_s": [round(r["wall_s"], 2) for r in results],
                "startup_s": [round(f["started_at_s"], 2) for f in train],
                "process_img_per_s": [self.args.images / r["wall_s"] for r in results],
                "ru_maxrss_mib": [r["ru_maxrss_mib"] for r in results]}

    def forget(self, row):
        """Drop cached extraction runs so that measuring ``row`` again runs them again."""
        if row.key in ("e2e_fp32", "e2e_bf16", "e2e_int8", "mem_small", "mem_large"):
            self.extractions.clear()
        if row.key.startswith("head_gemm"):
            self.gemm = None

    def int8_extract(self):
        samples = () if self.args.int8_samples == TRAIN_PY_INT8_SAMPLES else \
            ("--int8-samples", str(self.args.int8_samples))
        return self.extract(("--int8", *samples))

    def memory(self, images):
        runs = 1 if images == self.args.images else self.args.mem_runs
        results = self.extraction_runs((), images, runs)
        same = {"same_runs_as": "e2e_fp32"} if images == self.args.images and "e2e_fp32" in self.done else {}
        return {**same, "runs": [r["ru_maxrss_mib"] for r in results], "images": images,
                "peak_rss_anon_mib": [round(r["peak_rss_anon_mib"], 1) for r in results],
                "end_rss_file_mib": [round(r["end_rss_file_mib"], 1) for r in results],
                "codes_mib": images * 512 * 7 * 7 * 4 / 2 ** 20}

    BIG_IMAGES = 2  # as many as train.py's decode threads on 2 CPUs (models.runtime.DECODE_THREADS): peaks add up

    def big_set(self, depth):
        """The folder of the large PNGs of ``depth`` bits, made in worker processes (a parent's peak RSS would show in
        its children's ru_maxrss)."""
        if depth not in self.big_sets:
            folder = os.path.join(self.work, f"png_big{depth}")
            os.makedirs(folder)
            jobs = [(os.path.join(folder, f"big{i}.png"), i, self.args.big_size, depth) for i in range(self.BIG_IMAGES)]
            with ProcessPoolExecutor(min(len(jobs), len(os.sched_getaffinity(0)))) as pool:
                sizes = list(pool.map(make_big_png, jobs))
            self.big_sets[depth] = folder, sum(sizes) / len(sizes)
        return self.big_sets[depth]

    def big_memory(self, depth):
        """Peak memory of a fresh train.py over the large PNGs of ``depth`` bits (TEST_IMGS: one small image)."""
        folder, png_bytes = self.big_set(depth)
        out = os.path.join(self.work, f"codes_big{depth}")
        cmd = [self.py, *CHILD, "extract", "--", folder, self.one_image, f"{out}/train", f"{out}/test",
               "--batch-size", str(self.args.batch_size), "--gpus", "none"]
        result = run_json(cmd)
        shutil.rmtree(out, ignore_errors=True)
        size = self.args.big_size
        return {"runs": [result["ru_maxrss_mib"]], "images": self.BIG_IMAGES,
                "png": f"{size}x{size} gray, {depth}-bit", "png_mean_bytes": round(png_bytes),
                "decoded_mib_per_image": size * size * depth // 8 / 2 ** 20,
                "peak_rss_anon_mib": [round(result["peak_rss_anon_mib"], 1)],
                "end_rss_file_mib": [round(result["end_rss_file_mib"], 1)]}

    def ceiling(self):
        out = run_json([self.py, *CHILD, "ceiling"])
        return {"runs": [out["ceiling_img_per_s"]], **out, "best_gflops_runs": [out["best_gflops"]]}

    def film_folder(self, kind):
        """The folder of --films 2,048 x 2,500 films of format ``kind``, each from another bundled radiograph, made in
        worker processes when first asked for."""
        folder = os.path.join(self.work, f"film_{kind}")
        if not os.path.isdir(folder):
            os.makedirs(folder)
            sources = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(REPO, "examples",
                                                                                          "nih-sample"))
                       for name in sorted(names) if name.endswith(".png")]
            jobs = [(os.path.join(folder, f"film{i:03d}{FILM_KINDS[kind]}"), i, kind, sources[i % len(sources)])
                    for i in range(self.args.films)]
            with ProcessPoolExecutor(min(len(jobs), len(os.sched_getaffinity(0)))) as pool:
                sizes = list(pool.map(make_film, jobs))
            self.film_bytes[kind] = round(sum(sizes) / len(sizes))
        return folder

    def film_decode(self, kind):
        """CPU ms to read one large 12-bit film of format ``kind`` into a batch at the view's size (one thread, and
        OpenJPEG on one thread: its own threads' CPU would not show in the thread's time), as ``decode``."""
        folder = self.film_folder(kind)
        out = run_json([self.py, *CHILD, "decode", folder, "--runs", "1"], env=dict(os.environ, OPJ_NUM_THREADS="1"))
        return {"runs": out["cpu_ms"], "wall_ms": out["wall_ms"], "images": out["images"],
                "file_bytes": self.film_bytes[kind]}

    def film_extract(self, kind):
        """Films/s of a fresh train.py over the --films films of format ``kind`` (TEST_IMGS: one small image), timed
        as e2e_fp32 is: inside the process, around the encoding."""
        folder = self.film_folder(kind)
        out = os.path.join(self.work, f"codes_film_{kind}")
        result = run_json([self.py, *CHILD, "extract", "--", folder, self.one_image, f"{out}/train", f"{out}/test",
                           "--batch-size", str(self.args.batch_size), "--gpus", "none"])
        shutil.rmtree(out, ignore_errors=True)
        train = result["folders"][0]
        return {"runs": [train["img_per_s"]], "films": self.args.films, "seconds": [round(train["seconds"], 3)],
                "file_bytes": self.film_bytes[kind], "process_wall_s": [round(result["wall_s"], 2)]}

    def decode(self):
        out = run_json([self.py, *CHILD, "decode", self.sets[self.args.images], "--runs", "1"])
        return {"runs": out["cpu_ms"], "wall_ms": out["wall_ms"], "images": out["images"],
                "note": "CPU ms per image on one thread; end-to-end spends it on top of the forward pass's 2 cores"}

    def torch_peer(self, variants=None):
        """The PyTorch peer: the best of ``--torch-variants`` (fp32), or the given variants (e.g. compile_bf16)."""
        a = self.args
        weights = os.path.join(self.work, "resnet50_cut.npz")
        if not os.path.exists(weights):
            check = self.int8_sample_paths(min(4, a.batch_size))
            self.export = run_json([self.py, *CHILD, "export", weights, *check])
        out = run_json(list(map(str, [TORCH_PYTHON, TORCH_PEER, weights, "--batch-size", a.batch_size,
                                      "--batches", a.batches, "--runs", 1, "--warmup", a.warmup,
                                      "--threads", len(os.sched_getaffinity(0)),
                                      "--variants", variants or a.torch_variants])), timeout=1800)
        chosen = variants or out["best"]
        return {"runs": out["variants"][chosen]["runs"], "variant": chosen, "export": self.export, **out}

    def run_train_model(self, *flags):
        """train_model.py FLAGS in a fresh process on the generated codes: (wall seconds, sum of its epochs' seconds)."""
        a = self.args
        images = self.sets[a.head_samples]
        codes, labels = self.head_data(images)
        models_dir = os.path.join(self.work, "head")
        started = time.perf_counter()
        result = subprocess.run([self.py, "train_model.py", images, codes, labels, models_dir, *flags,
                                 "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--gpus", "none"],
                                cwd=REPO, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"train_model.py failed: {result.stderr.strip().splitlines()[-5:]}")
        with open(os.path.join(models_dir, "head.json")) as f:
            epoch_s_sum = sum(h["seconds"] for h in json.load(f)["history"])
        shutil.rmtree(models_dir, ignore_errors=True)
        return wall, epoch_s_sum

    def head_training(self):
        """train_model.py --recipe xvision (the flat 25,088-feature head the GEMM bounds are computed for);
        samples/s = samples x epochs / wall time."""
        a = self.args
        wall, epoch_s_sum = self.run_train_model("--recipe", "xvision")
        samples = a.head_samples * a.epochs
        return {"runs": [samples / wall], "samples": a.head_samples, "epochs": a.epochs, "batch_size": a.batch_size,
                "per_run": [{"wall_s": round(wall, 2), "epoch_s_sum": round(epoch_s_sum, 2)}],
                "loop_samples_per_s": [samples / epoch_s_sum]}

    def head_wall(self, *flags):
        """Wall clock of train_model.py FLAGS on the generated codes (the layout choice's cost: head_auto_s)."""
        wall, epoch_s_sum = self.run_train_model(*flags)
        return {"runs": [wall], "flags": list(flags), "samples": self.args.head_samples, "epochs": self.args.epochs,
                "per_run": [{"wall_s": round(wall, 2), "epoch_s_sum": round(epoch_s_sum, 2)}]}

    def predict(self, runtime):
        """A fresh models.predict (MXNet) or models.onnx_predict (ONNX Runtime) process over the --images PNGs, with
        the head of ``prediction_classifier``: img/s of its wall clock, the model's load included."""
        models_dir, onnx_file = self.prediction_classifier()
        out = os.path.join(self.work, f"predict_{runtime}")
        command = ["-m", "models.predict", models_dir] if runtime == "mxnet" else \
            ["-m", "models.onnx_predict", onnx_file]
        started = time.perf_counter()
        result = subprocess.run([self.py, *command, self.sets[self.args.images], "--out", out, "--batch-size",
                                 str(self.args.batch_size)], cwd=REPO, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"{command[1]} failed: {result.stderr.strip().splitlines()[-5:]}")
        shutil.rmtree(out, ignore_errors=True)
        return {"runs": [self.args.images / wall], "images": self.args.images, "wall_s": [round(wall, 2)],
                "runtime": runtime}

    def prediction_classifier(self):
        """(models folder, its ONNX export): a --layout avg head trained for one epoch on the generated codes, whose
        index records the real backbone, so that both runners rebuild and run it; made once."""
        if self.classifier is None:
            images = self.sets[self.args.head_samples]
            codes, labels = self.head_data(images)
            models_dir, onnx_file = os.path.join(self.work, "classifier"), os.path.join(self.work, "classifier.onnx")
            for command in (["train_model.py", images, codes, labels, models_dir, "--layout", "avg", "--folds", "0",
                             "--epochs", "1", "--gpus", "none"], ["-m", "models.export", models_dir, onnx_file]):
                result = subprocess.run([self.py, *command], cwd=REPO, capture_output=True, text=True, timeout=3600)
                if result.returncode != 0:
                    raise RuntimeError(f"{command[0]} failed: {result.stderr.strip().splitlines()[-5:]}")
            self.classifier = models_dir, onnx_file
        return self.classifier

    def head_data(self, images):
        """Codes (ReLU'd Gaussian, 512x7x7) and a two-class label file for every image of ``images``, made once."""
        import numpy as np

        from models.codes import CodeWriter
        from models.images import list_images
        from models.labels import save_labels
        from models.pretrained import DEFAULT_LAYER
        from models.weights import DEFAULT_PREFIX, sha256_of

        codes_dir, labels = os.path.join(self.work, "head_codes"), os.path.join(self.work, "head_labels.json")
        if os.path.exists(labels):  # written last
            return codes_dir, labels
        names = list_images(images)
        # recorded as the real backbone's codes, which the prediction rows rebuild and run
        meta = {"model": DEFAULT_PREFIX, "model_sha256": sha256_of(f"{DEFAULT_PREFIX}-0000.params"),
                "layer": DEFAULT_LAYER, "precision": "fp32", "input_size": 224, "resize": "crop",
                "input": "RGB 0..255, NCHW"}
        writer = CodeWriter(codes_dir, names, (512, 7, 7), meta, image_dir=images)
        rng = np.random.default_rng(0)
        for start in range(0, len(names), 256):
            count = min(256, len(names) - start)
            writer.write(np.maximum(rng.standard_normal((count, 512, 7, 7), dtype=np.float32), 0))
        save_labels(labels, ["normal", "abnormal"], {n: ("normal", "abnormal")[i % 2] for i, n in enumerate(names)})
        return codes_dir, labels

    def gemm_timings(self):
        """The head's GEMM timings (child.py gemm), measured once a round for both GEMM-bound rows."""
        a = self.args
        if self.gemm is None:
            self.gemm = run_json([self.py, *CHILD, "gemm", "--batch-size", str(a.batch_size)])
        batches = max(1, a.head_samples // a.batch_size)  # a trailing batch of one joins the previous one
        batches = batches + (1 if a.head_samples - batches * a.batch_size > 1 else 0)
        return self.gemm, batches, a.head_samples * a.epochs

    def head_gemm_bound(self):
        """The issue's GEMM-bound: forward + backward = 3x the forward GEMMs, at the best measured rate per shape."""
        out, batches, samples = self.gemm_timings()
        seconds = 3 * sum(layer["best_fwd_s"] for layer in out["layers"]) * batches * self.args.epochs
        return {"runs": [samples / seconds], "seconds": [seconds], "batches_per_epoch": batches,
                "definition": "3 x the forward GEMMs (x W^T per Dense layer) at the fastest of numpy / MXNet dot / "
                              "oneDNN for each shape, x batches x epochs"}

    def head_gemm_tight(self):
        """Every GEMM of a training step timed alone (forward, weight and input gradients), best implementation each."""
        out, batches, samples = self.gemm_timings()
        seconds = out["seconds_per_batch"] * batches * self.args.epochs
        return {"runs": [samples / seconds], "seconds": [seconds], "batches_per_epoch": batches, **out}


# ------------------------------------------------------------------------------------------------ report

def fmt(value):
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def print_table(results):
    machine = results["machine"]
    print(f"\nXvision-MX bench  {results['date']}  ({'quick' if results['quick'] else 'full'})")
    generation = f", {machine['cpu_generation']}" if machine.get("cpu_generation") else ""
    print(f"machine: {machine['cpu']} (family/model {machine['cpu_family_model']}{generation}), "
          f"{machine['usable_cores']} usable "
          f"cores, {machine['threads_per_core']} thread(s)/core, {machine['memory_total']}, "
          f"{'VM' if machine['hypervisor'] else 'bare metal'}")
    print(f"flags: {' '.join(machine['flags'])}; OMP_NUM_THREADS={machine['omp_num_threads']}; "
          f"mxnet {machine['mxnet']}, torch {results['rows'].get('peer_torch', {}).get('torch', '-')}")
    s = results["settings"]
    if s:
        print(f"inputs: {s['images']} PNGs for end-to-end, {s['mem_images']} for the large memory set "
              f"({s['png_size']}, mean {s['png_mean_bytes'] / 1024:.0f} KiB, page cache {s['page_cache']}); batch "
              f"{s['batch_size']}; medians of {s['runs']} round(s), each row once per round\n")
    width = max(len(r.label) for r in ROWS) + 2
    print(f"{'row':<{width}}{'median':>10}  {'unit':<10}{'runs':<34}{'other CPU':>9}")
    for row in ROWS:
        if row.key in results["skipped"]:
            print(f"{row.label:<{width}}{'skipped':>10}  {'':<10}{results['skipped'][row.key]}")
            continue
        r = results["rows"][row.key]
        runs = " ".join(fmt(v) for v in r["runs"][:6]) + (f"  (n={r['images']})" if "images" in r else "")
        ran = f"  [ran {r['precision']}]" if r.get("precision", r.get("precision_requested")) != \
            r.get("precision_requested") else ""
        print(f"{row.label:<{width}}{fmt(r['median']):>10}  {row.unit:<10}{runs + ran:<34}"
              f"{r['cpu']['other_cpu_fraction'] * 100:>8.0f}%")
    print(f"\n{'ratio':<32}{'value':>8}  {'target':<10}{'met':<5}{'per round':<20}meaning")
    for key, ratio in results["ratios"].items():
        target = "-" if ratio["target"] is None else f"{'<=' if ratio['at_most'] else '>='} {ratio['target']}"
        met = "-" if ratio["met"] is None else ("yes" if ratio["met"] else "NO")
        rounds = " ".join(fmt(v) for v in ratio["per_round"])
        print(f"{key:<32}{fmt(ratio['value']):>8}  {target:<10}{met:<5}{rounds:<20}{ratio['meaning']}")
    for warning in results["warnings"]:
        print(f"warning: {warning}")


OTHER_CPU_LIMIT = 0.05  # fraction of the machine's CPU other processes may take during a row


def wait_idle(limit_s, window_s=2.0):
    """Wait (up to ``limit_s``) until other processes use < OTHER_CPU_LIMIT of the CPU over ``window_s``; seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        watch = CpuWatch()
        time.sleep(window_s)
        if watch.report()["other_cpu_fraction"] < OTHER_CPU_LIMIT:
            break
    return time.perf_counter() - started


def merge_rounds(rounds):
    """One row from its rounds: every run, their median, each round's median (``per_round``, what ratios pair up),
    the most disturbed round's CPU report, and the last round's details."""
    merged = dict(rounds[-1])
    merged["runs"] = [value for measured in rounds for value in measured["runs"]]
    merged["median"] = statistics.median(merged["runs"])
    merged["per_round"] = [measured["median"] for measured in rounds]
    merged["cpu"] = max((measured["cpu"] for measured in rounds), key=lambda cpu: cpu["other_cpu_fraction"])
    merged["attempts"] = sum(measured["attempts"] for measured in rounds)
    if "precision" in merged:  # what ran in each round (train.py's self-check decides anew in every process)
        merged["precision_per_round"] = [measured.get("precision") for measured in rounds]
        used = sorted(set(map(str, merged["precision_per_round"])))
        merged["precision"] = used[0] if len(used) == 1 else "mixed: " + ", ".join(used)
    return merged


def measure_row(bench, row):
    """Measure ``row`` on an idle machine if one can be had: wait for idle, measure, and again if it got busy."""
    attempts = []
    for attempt in range(bench.args.retries + 1):
        waited = wait_idle(bench.args.wait_idle) if bench.args.wait_idle > 0 else 0.0
        if attempt:
            bench.forget(row)
        watch = CpuWatch()
        measured = row.measure(bench)
        measured.update(label=row.label, unit=row.unit, median=statistics.median(measured["runs"]),
                        cpu=dict(watch.report(), waited_for_idle_s=round(waited, 1)))
        attempts.append(measured)
        if measured["cpu"]["other_cpu_fraction"] <= OTHER_CPU_LIMIT:
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
               "quick": args.quick, "git": git_state(), "machine": machine_info(),
               "rows": {}, "rounds": {}, "skipped": {}, "ratios": {}, "warnings": []}
    work = tempfile.mkdtemp(prefix="xvision-bench-")
    bench = Bench(args, work)
    results["settings"] = {}
    try:
        print(f"generating PNGs in {work} ...", flush=True)
        bench.prepare()
        results["settings"] = dict(bench.settings, images=args.images, mem_images=args.mem_images,
                                   head_samples=args.head_samples, epochs=args.epochs, runs=args.runs,
                                   mem_runs=args.mem_runs, batch_size=args.batch_size,
                                   batches_per_forward_run=args.batches, warmup_batches=args.warmup)
        only, skip = set(args.only.split(",")) if args.only else None, set(filter(None, args.skip.split(",")))
        rows = []
        for row in ROWS:
            reason = "not in --only" if only and row.key not in only else "--skip" if row.key in skip \
                else row.needs(bench) if row.needs else None
            if reason:
                results["skipped"][row.key] = reason
            else:
                rows.append(row)
        # every row once per round, rounds one after the other: a machine that drifts slower or faster over the
        # minutes of a run moves the rows of a round together, so their ratios (taken per round) stay true
        for number in range(1, args.runs + 1):
            bench.new_round()
            for row in rows:
                if row.key in results["skipped"] or (number > 1 and not row.every_round):
                    continue
                print(f"round {number}/{args.runs}, {row.key}: {row.label} ...", flush=True)
                try:
                    measured = measure_row(bench, row)
                except (RuntimeError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as err:
                    results["skipped"][row.key] = f"failed: {err}"
                    results["rounds"].pop(row.key, None)
                    print(f"  failed: {err}", file=sys.stderr)
                    continue
                results["rounds"].setdefault(row.key, []).append(measured)
                bench.done.add(row.key)
                print(f"  {fmt(measured['median'])} {row.unit}", flush=True)
        for key, rounds in results.pop("rounds").items():
            results["rows"][key] = merge_rounds(rounds)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    rows = results["rows"]
    for ratio in RATIOS:
        per_round = []
        if ratio.numerator in rows and ratio.denominator in rows:
            pairs = zip(rows[ratio.numerator]["per_round"], rows[ratio.denominator]["per_round"])
            per_round = [a - b if ratio.difference else a / b for a, b in pairs]
        value = statistics.median(per_round) if per_round else None
        met = None if value is None or ratio.target is None else \
            (value <= ratio.target if ratio.at_most else value >= ratio.target)
        results["ratios"][ratio.key] = {"value": value, "per_round": per_round, "target": ratio.target,
                                        "at_most": ratio.at_most, "met": met, "meaning": ratio.meaning}
    targets = {k: r["met"] for k, r in results["ratios"].items() if r["target"] is not None}
    results["targets_met"] = targets
    results["all_targets_met"] = all(v is True for v in targets.values())
    results["cpu"] = watch_all.report()
    for key, row in rows.items():
        if "precision" in row and row["precision"] != row.get("precision_requested"):
            results["warnings"].append(f"{key} ran {row['precision']}, not {row['precision_requested']}: train.py's "
                                       f"speed self-check found {row['precision_requested']} not faster than fp32 on "
                                       f"this CPU (in some or all rounds), so its numbers and ratios are fp32's")
    busy = [k for k, r in rows.items() if r["cpu"]["other_cpu_fraction"] > OTHER_CPU_LIMIT]
    if busy:
        results["warnings"].append(f"other processes used >5% of the CPU during {', '.join(busy)}: those numbers are "
                                   f"low; run the bench on an idle machine")
    if args.quick:
        results["warnings"].append("--quick: a smoke test of the harness, the numbers mean nothing")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print_table(results)
    print(f"\nwrote {os.path.relpath(args.out)} in {results['cpu']['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
