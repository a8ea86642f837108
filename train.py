"""Step 3: encode train and test images with a pretrained backbone and cache the feature codes."""

import argparse
import sys

from models.devices import GPU_SPEC_HELP, select_contexts
from models.errors import run_cli
from models.images import RESIZE_MODES, list_images
from models.pretrained import DEFAULT_LAYER, DEFAULT_PREFIX


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Run a pretrained ResNet-50 (cut at an internal layer) over two image folders and save the "
                    "feature codes as memory-mapped .npy with an index. An interrupted run continues where it stopped.")
    parser.add_argument("train_imgs", metavar="TRAIN_IMGS", help="folder of training images (png, jpg, bmp, tif)")
    parser.add_argument("test_imgs", metavar="TEST_IMGS", help="folder of test images")
    parser.add_argument("train_codes", metavar="TRAIN_CODES", help="output folder for the training codes")
    parser.add_argument("test_codes", metavar="TEST_CODES", help="output folder for the test codes")
    parser.add_argument("--model", default=DEFAULT_PREFIX,
                        help="MXNet checkpoint prefix: PREFIX-symbol.json + PREFIX-0000.params, taking raw RGB 0..255 "
                             "(default: the converted ImageNet ResNet-50, %(default)s)")
    parser.add_argument("--layer", default=DEFAULT_LAYER, help="internal output to cut at (default: %(default)s)")
    parser.add_argument("--gpus", default="auto", help=GPU_SPEC_HELP + " (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)")
    parser.add_argument("--resize", choices=RESIZE_MODES, default="crop",
                        help="crop: centre square crop then 224x224 (the original's way); squash: resize the whole "
                             "image to 224x224 (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    for folder in (args.train_imgs, args.test_imgs):
        list_images(folder)  # a missing or empty folder fails before any work starts
    from models.extract import extract_folder
    from models.pretrained import Backbone

    contexts, notice = select_contexts(args.gpus)
    if notice:
        print(f"notice: {notice}", file=sys.stderr)
    backbone = Backbone(args.model, args.layer, contexts, args.batch_size)
    print(f"backbone {args.model} cut at {args.layer}: codes of shape {backbone.output_shape} on {contexts}")
    for folder, codes_dir in ((args.train_imgs, args.train_codes), (args.test_imgs, args.test_codes)):
        writer = extract_folder(backbone, folder, codes_dir, args.resize)
        print(f"{codes_dir}: {len(writer.files) - len(writer.skipped)} codes, {len(writer.skipped)} skipped")


if __name__ == "__main__":
    run_cli(main)
