"""bench.run's rows (what it measures, each one line: key, label, unit, how, what it needs) and the ratios between
them it reports, with the targets the issues set."""

import os
from dataclasses import dataclass

from bench.children import TORCH_PYTHON


@dataclass
class Row:
    key: str
    label: str
    unit: str
    measure: object  # bench.measure.Measurements -> {"runs": [numbers], **details}
    needs: object = None  # args -> None if measurable, else the reason it is skipped
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


def needs_torch(args):
    if args.no_torch:
        return "--no-torch"
    if not os.path.exists(TORCH_PYTHON):
        return "bench/.venv is absent (make it: python3.11 -m venv bench/.venv && bench/.venv/bin/pip install " \
               "torch==2.13.0 numpy)"
    return None


def needs_bf16(args=None):
    from models.devices import NATIVE_BF16_FLAGS, has_native_bf16

    return None if has_native_bf16() else \
        f"this CPU has no native bfloat16 ({' / '.join(NATIVE_BF16_FLAGS)}): train.py --bf16 refuses to run"


def needs_torch_bf16(args):
    return needs_torch(args) or needs_bf16(args)


ROWS = [
    Row("fwd_fp32", "project forward-only fp32 (uint8 batch in memory)", "img/s", lambda m: m.forward("fp32")),
    Row("e2e_fp32", "project end-to-end fp32: train.py, PNG -> codes", "img/s", lambda m: m.extract(())),
    Row("peer_torch", "PyTorch peer forward-only fp32 (best expert way)", "img/s", lambda m: m.torch_peer(),
        needs_torch),
    Row("ceiling_fp32", "fp32 ceiling: peak oneDNN GFLOP/s / GFLOP per image", "img/s", lambda m: m.ceiling()),
    Row("decode_ms", "PNG decode + crop + resize into a batch, 1 thread", "ms/img", lambda m: m.decode()),
    Row("decode_film_png16_ms", "a 2048x2500 12-bit film as a 16-bit PNG: decode into a batch, 1 thread", "ms/img",
        lambda m: m.film_decode("png16")),
    Row("decode_film_dicom_ms", "the same film as DICOM, uncompressed (its window to 8 bits)", "ms/img",
        lambda m: m.film_decode("dicom")),
    Row("decode_film_j2k_ms", "the same film as DICOM, JPEG 2000 lossless (decoded at the level the view needs)",
        "ms/img", lambda m: m.film_decode("j2k")),
    Row("e2e_film_png16", "train.py end to end on the 2048x2500 12-bit films as 16-bit PNGs", "films/s",
        lambda m: m.film_extract("png16")),
    Row("e2e_film_j2k", "train.py end to end on the same films as JPEG 2000 lossless DICOMs", "films/s",
        lambda m: m.film_extract("j2k")),
    Row("fwd_bf16", "project forward-only bf16 (train.py --bf16's network)", "img/s", lambda m: m.forward("bf16"),
        needs_bf16),
    Row("e2e_bf16", "project end-to-end bf16: train.py --bf16", "img/s", lambda m: m.extract(("--bf16",)),
        needs_bf16),
    Row("peer_torch_bf16", "PyTorch peer forward-only bf16 (compile + autocast)", "img/s",
        lambda m: m.torch_peer(m.args.torch_bf16_variant), needs_torch_bf16),
    Row("fwd_int8", "project forward-only int8 (models.quantize)", "img/s", lambda m: m.forward("int8")),
    Row("e2e_int8", "project end-to-end int8: train.py --int8", "img/s", lambda m: m.int8_extract()),
    Row("predict_mxnet", "models.predict (MXNet): PNG files -> class probabilities, a fresh process", "img/s",
        lambda m: m.predict("mxnet")),
    Row("predict_onnx", "models.onnx_predict (ONNX Runtime, no MXNet): the same files, the exported classifier",
        "img/s", lambda m: m.predict("onnx")),
    Row("head_train", "head training: train_model.py, wall clock", "samples/s", lambda m: m.head_training()),
    Row("head_auto_s", "train_model.py defaults (--layout auto: inner 5-fold CV, then one fit), wall clock", "s",
        lambda m: m.head_wall()),
    Row("head_flat_s", "train_model.py --layout flat --folds 0 (one fit), wall clock", "s",
        lambda m: m.head_wall("--layout", "flat", "--folds", "0")),
    Row("head_gemm_bound", "head training GEMM-bound (3x forward GEMMs)", "samples/s", lambda m: m.head_gemm_bound()),
    Row("head_gemm_tight", "head training, each GEMM of a step timed alone", "samples/s",
        lambda m: m.head_gemm_tight()),
    Row("mem_small", "extraction peak memory (ru_maxrss), small set", "MiB", lambda m: m.memory(m.args.images)),
    Row("mem_large", "extraction peak memory (ru_maxrss), large set", "MiB", lambda m: m.memory(m.args.mem_images),
        every_round=False),
    Row("mem_8bit_large", "extraction peak memory, 2 large 8-bit PNGs", "MiB", lambda m: m.big_memory(8),
        every_round=False),
    Row("mem_16bit", "extraction peak memory, the same 2 PNGs in 16-bit", "MiB", lambda m: m.big_memory(16),
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
