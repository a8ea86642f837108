"""Step 3: encode train and test images with a pretrained backbone and cache the feature codes.

    python train.py TRAIN_IMGS TEST_IMGS TRAIN_CODES TEST_CODES   # the pipeline's two folders
    python train.py IMGS CODES                                    # one folder of images
"""

import argparse
import os
import sys
import time
from dataclasses import replace

from models.cli import (add_batch_size_argument, add_gpus_argument, add_scope_arguments, add_significant_bits_argument,
                        add_view_arguments, at_least, scope_of)
from models.devices import CPU_SPECS, chosen_contexts
from models.errors import counted, run_cli
from models.fileio import check_output_folder
from models.highdepth import EIGHT_BIT
from models.images import View, list_images, measure_depth
from models.pretrained import DEFAULT_LAYER
from models.progress import progress_bar
from models.runtime import setup_runtime
from models.weights import DEFAULT_PREFIX


FOUR = ("TRAIN_IMGS", "TEST_IMGS", "TRAIN_CODES", "TEST_CODES")
TWO = ("IMGS", "CODES")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python train.py",
        usage=f"%(prog)s {' '.join(FOUR)} [options]\n       %(prog)s {' '.join(TWO)} [options]",
        description="Run a pretrained ResNet-50 (cut at an internal layer) over two image folders, or one, and save "
                    "the feature codes as memory-mapped .npy with an index. An interrupted run continues where it "
                    "stopped.")
    parser.add_argument("folders", nargs="+", metavar="FOLDER",
                        help=f"{' '.join(FOUR)}: the folders of training and test images (PNG, JPEG, BMP, TIFF, "
                             f"DICOM), then an output folder for the codes of each; or {' '.join(TWO)}: one folder "
                             f"of images and the output folder for its codes")
    parser.add_argument("--model", default=DEFAULT_PREFIX,
                        help="MXNet checkpoint prefix: PREFIX-symbol.json + PREFIX-0000.params, taking raw RGB 0..255 "
                             "(default: the converted ImageNet ResNet-50, %(default)s)")
    parser.add_argument("--layer", default=DEFAULT_LAYER, help="internal output to cut at (default: %(default)s)")
    add_gpus_argument(parser)
    add_batch_size_argument(parser)
    add_view_arguments(parser)
    add_scope_arguments(parser)
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--bf16", action="store_true",
                           help="run a bfloat16 copy of the network on the CPU (oneDNN); needs a CPU with avx512_bf16 "
                                "or amx_bf16; codes within ~0.999 cosine similarity of fp32. Its speed depends on the "
                                "CPU (forward-only: 1.8x fp32 on a 2-core AMD EPYC Zen 5, 1.9x on a 2-core Zen 4, "
                                "0.6x on a 16-core Intel Xeon with AMX), so at load it is timed against fp32 (~2.4 s "
                                "on that Zen 5) and, where it is not faster, fp32 runs instead, with a notice; the "
                                "codes' index records the precision that ran")
    precision.add_argument("--int8", action="store_true",
                           help="run an int8-quantised copy of the network on the CPU (oneDNN), quantised on a "
                                "sample of TRAIN_IMGS (--int8-samples), cached in TRAIN_CODES/int8-calibration; codes "
                                "within ~0.98 "
                                "cosine similarity of fp32; forward-only 3.6x fp32 on a 2-core AMD EPYC Zen 5, 3.2x "
                                "on a 16-core Intel Xeon with AMX; checked against fp32 at load like --bf16 (given two "
                                "folders: IMGS and CODES in place of TRAIN_IMGS and TRAIN_CODES)")
    add_significant_bits_argument(parser, "recorded in the codes' index and head.json, so that test_model.py and "
                                          "models.predict map new images the same way (default: measured on "
                                          "TRAIN_IMGS, or on TEST_IMGS where it has none: the largest of what PNG "
                                          "sBIT chunks say and of the bit lengths of the largest values of the "
                                          "others; where neither holds such an image, 8 is recorded: 8-bit films)")
    parser.add_argument("--int8-samples", "--calib-images", type=at_least(int, 1), default=64, metavar="N",
                        help="with --int8: how many training images its activation ranges are measured on (the old "
                             "name --calib-images still works; default: %(default)s)")
    args = parser.parse_intermixed_args(argv)  # options may stand between the folders
    if len(args.folders) not in (len(FOUR), len(TWO)):
        parser.error(f"give four folders ({' '.join(FOUR)}) or two ({' '.join(TWO)}), not {len(args.folders)}")
    if len(args.folders) == len(FOUR):
        args.train_imgs, args.test_imgs, args.train_codes, args.test_codes = args.folders
        args.pairs = [(FOUR[0], args.train_imgs, FOUR[2], args.train_codes),
                      (FOUR[1], args.test_imgs, FOUR[3], args.test_codes)]
    else:
        args.train_imgs, args.train_codes = args.folders
        args.test_imgs = args.test_codes = None
        args.pairs = [(TWO[0], args.train_imgs, TWO[1], args.train_codes)]
    args.view = View(resize=args.resize, field=args.field, box=args.lung_box, bits=args.significant_bits,
                     scope=scope_of(args))
    return args


def measured_view(view, folders, names, log=print):
    """``view`` with the significant bits of the first of ``folders`` (with their image ``names``) that holds 16-bit
    images, where ``view`` does not give them."""
    if view.bits:
        return view
    for (label, folder), listed in zip(folders, names):
        with progress_bar(total=len(listed), unit="img", desc="depth") as bar:
            bits, how = measure_depth([os.path.join(folder, name) for name in listed], bar)
        if bits:
            log(f"{label}: {how}: values 0..{2 ** bits - 1} map onto 0..255 in both folders")
            return replace(view, bits=bits)
    return replace(view, bits=EIGHT_BIT)  # 8-bit films: recorded as such, their codes made by no depth mapping


def encode_folders(args, log=print):
    """Encode the image folders of ``args`` (``parse_args``: TRAIN_IMGS and TEST_IMGS, or IMGS) as it says; returns
    per folder what was done and how long it took: {"folder", "codes_dir", "images", "skipped", "precision",
    "started" (time.perf_counter()), "seconds"}."""
    names = [list_images(folder) for _, folder, _, _ in args.pairs]  # a missing or empty folder fails before any work
    images = [(label, folder) for label, folder, _, _ in args.pairs]
    written = []
    for _, _, label, codes_dir in args.pairs:
        check_output_folder(codes_dir, label, images + written)
        written.append((label, codes_dir))
    train_names = names[0]
    view = measured_view(args.view, images, names, log)
    from models.extract import extract_folder
    from models.pretrained import Backbone

    if (args.int8 or args.bf16) and args.gpus.strip().lower() not in ("auto",) + CPU_SPECS:
        print(f"notice: --gpus {args.gpus} ignored: the {'int8' if args.int8 else 'bf16'} network runs on the CPU",
              file=sys.stderr)
    if args.int8:
        from models.quantize import int8_backbone, quantization_sample

        sample = quantization_sample([os.path.join(args.train_imgs, n) for n in train_names], args.int8_samples)
        backbone = int8_backbone(args.model, args.layer, sample, args.batch_size, view,
                                 cache_dir=os.path.join(args.train_codes, "int8-calibration"), speed_check=True)
    elif args.bf16:
        backbone = Backbone(args.model, args.layer, batch_size=args.batch_size, precision="bf16", speed_check=True)
    else:
        backbone = Backbone(args.model, args.layer, chosen_contexts(args.gpus), args.batch_size)
    if backbone.notice:  # --bf16 / --int8 not faster than fp32 here: fp32 runs, and the codes' index says so
        print(f"notice: {backbone.notice}", file=sys.stderr)
    check = backbone.speed_check
    checked = f", {check['speedup']:.2f}x fp32 in a {check['check_s']:.1f} s check at load" \
        if check and backbone.precision != "fp32" else ""
    field = "" if args.field == "whole" else f", lung field only (box {','.join(map(str, args.lung_box))})"
    log(f"backbone {args.model} cut at {args.layer} ({backbone.precision}{checked}): codes of shape "
        f"{backbone.output_shape} on {backbone.contexts}{field}")
    done = []
    for _, folder, _, codes_dir in args.pairs:
        started = time.perf_counter()
        writer = extract_folder(backbone, folder, codes_dir, view, log=log)
        seconds = time.perf_counter() - started
        done.append({"folder": folder, "codes_dir": codes_dir, "images": len(writer.files) - len(writer.skipped),
                     "skipped": len(writer.skipped), "precision": backbone.precision, "started": started,
                     "seconds": seconds})
        log(f"{codes_dir}: {counted(done[-1]['images'], 'code')}, {done[-1]['skipped']} skipped ({seconds:.1f} s)")
    return done


def main(argv=None):
    args = parse_args(argv)
    setup_runtime()
    encode_folders(args)


if __name__ == "__main__":
    run_cli(main)
