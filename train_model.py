"""Step 4: train the classifier head on the feature codes made by train.py.

Example: python train_model.py data/train data/codes/train data/train_labels.json data/models
"""

import argparse
import os
import sys

from models import head
from models.devices import GPU_SPEC_HELP
from models.errors import run_cli
from models.training import TrainSettings

DEFAULTS = TrainSettings()


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python train_model.py",
        description="Train the head (Dense-BatchNorm-ReLU x2 -> Dense, plain SGD) on cached codes. Saves a checkpoint "
                    "after every epoch into MODELS_DIR (head-symbol.json, head-NNNN.params, head.json) and draws "
                    "training_curve.png there.")
    parser.add_argument("train_imgs", metavar="TRAIN_IMGS", help="folder of training images: every one needs a label and a code")
    parser.add_argument("train_codes", metavar="TRAIN_CODES", help="codes folder made by train.py for TRAIN_IMGS")
    parser.add_argument("train_labels", metavar="TRAIN_LABELS",
                        help='label file: {"classes": [...], "labels": {"<image file>": "<class>"}}; class order fixes '
                             "the class index")
    parser.add_argument("models_dir", metavar="MODELS_DIR", help="folder for checkpoints and metadata")
    parser.add_argument("--epochs", type=int, default=DEFAULTS.epochs,
                        help="total number of epochs to train (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr, help="SGD learning rate (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                        help="images per SGD step (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed,
                        help="seed of the initial weights and of each epoch's shuffle (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue MODELS_DIR from its last finished epoch (same settings and data: the result "
                             "equals an uninterrupted run); without it an existing MODELS_DIR is refused")
    parser.add_argument("--gpus", default="auto", help=f"{GPU_SPEC_HELP}; the head trains on the first one "
                                                       "(default: %(default)s)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from models.devices import select_contexts
    from models.training import train

    contexts, notice = select_contexts(args.gpus)
    if notice:
        print(f"notice: {notice}", file=sys.stderr)
    settings = TrainSettings(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    try:
        meta = train(args.train_imgs, args.train_codes, args.train_labels, args.models_dir, settings,
                     resume=args.resume, context=contexts[0])
    except KeyboardInterrupt:
        saved = os.path.join(args.models_dir, head.META_FILE)
        done = head.finished_epochs(head.read_meta(args.models_dir)) if os.path.exists(saved) else []
        kept = f"epochs 1..{done[-1]} are saved in {args.models_dir}" if done else "no epoch was finished"
        print(f"interrupted: {kept}; run the same command with --resume to continue", file=sys.stderr)
        return 130
    if meta["history"]:
        last = meta["history"][-1]
        print(f"done: epoch {last['epoch']} in {args.models_dir} (training accuracy {last['accuracy']:.3f}); "
              f"evaluate with: python test_model.py TEST_IMGS TEST_CODES TEST_LABELS {args.models_dir}")


if __name__ == "__main__":
    run_cli(main)
