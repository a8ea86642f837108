"""Step 4: train the classifier head on the feature codes made by train.py.

Example: python train_model.py data/train data/codes/train data/train_labels.json data/models
"""

import argparse
import sys
from dataclasses import replace

from models.cli import add_batch_size_argument, add_gpus_argument, as_flags
from models.errors import run_cli
from models.calibration import METHODS as CALIBRATIONS
from models.classifier import LAYOUT_CHOICES, LAYOUT_LR, RECIPES, TrainSettings
from models.headfolder import HeadFolder, finished_epochs
from models.training import KEEP, check_keep
from models.runtime import setup_runtime

DEFAULTS = TrainSettings()
XVISION = ", ".join(f"--{key.replace('_', '-')} {value if not isinstance(value, bool) else 'on' if value else 'off'}"
                    for key, value in RECIPES["xvision"].items())


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python train_model.py",
        description="Train the head (Dense-BatchNorm-ReLU x2 -> Dense, plain SGD) on cached codes. Saves a checkpoint "
                    "after every epoch into MODELS_DIR (head-symbol.json, head-NNNN.params, head.json) and draws "
                    "training_curve.png there. The defaults learn on small, imbalanced sets: class-balanced loss, "
                    "input dropout, and the input layout (averaged and standardised codes, the raw flattened grid, "
                    "or a head on each with their probabilities averaged) chosen by a grouped, stratified inner "
                    "cross-validation on the training images, whose out-of-fold probabilities also set the "
                    "two-class threshold; then the chosen layout is trained on every training image. --recipe "
                    "xvision trains exactly as the "
                    f"original Xvision ({XVISION}).")
    parser.add_argument("train_imgs", metavar="TRAIN_IMGS", help="folder of training images: every one needs a label and a code")
    parser.add_argument("train_codes", metavar="TRAIN_CODES", help="codes folder made by train.py for TRAIN_IMGS")
    parser.add_argument("train_labels", metavar="TRAIN_LABELS",
                        help='label file: {"classes": [...], "labels": {"<image file>": "<class>"}}; class order fixes '
                             "the class index")
    parser.add_argument("models_dir", metavar="MODELS_DIR", help="folder for checkpoints and metadata")
    parser.add_argument("--epochs", type=int, default=DEFAULTS.epochs,
                        help="total number of epochs to train (default: %(default)s)")
    parser.add_argument("--lr", type=float,
                        help="SGD learning rate (default: the layout's own: "
                             + ", ".join(f"{name} {lr}" for name, lr in LAYOUT_LR.items())
                             + "; with both, each branch its own)")
    add_batch_size_argument(parser, DEFAULTS.batch_size, minimum=2, what="images per SGD step (BatchNorm needs two)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed,
                        help="seed of the initial weights, each epoch's shuffle and the inner folds "
                             "(default: %(default)s)")
    parser.add_argument("--recipe", choices=sorted(RECIPES),
                        help=f"start from a named set of settings; xvision = the original exactly ({XVISION}); "
                             "options given beside it still apply")
    parser.add_argument("--layout", choices=LAYOUT_CHOICES,
                        help="how the 512 x 7 x 7 code enters the head: avg = each channel averaged over the grid and "
                             "standardised (512 features; wins where the finding changes much of the film); flat = "
                             "the raw flattened grid (25,088 features; wins where it is local or its place matters); "
                             "both = one head on each, their class probabilities averaged (in one exported network); "
                             "auto = both, unless avg or flat beats its out-of-fold ROC-AUC in --folds inner "
                             "cross-validation by more than one standard error of the paired difference (default: "
                             f"{DEFAULTS.layout})")
    parser.add_argument("--folds", type=int,
                        help="inner cross-validation on the training images, whole groups per fold, stratified: "
                             "chooses the layout and, with two classes, the threshold from its out-of-fold "
                             "probabilities (fewer folds when a class has fewer groups); 0: none, threshold 0.5 or "
                             f"from --val-fraction (default: {DEFAULTS.folds})")
    parser.add_argument("--class-weight", choices=("balanced", "none"),
                        help="balanced: each class weighs n / (classes x n_class) in the loss, so a rare class counts "
                             "as much as a common one (equal classes: no change); none: plain loss (default: "
                             f"{DEFAULTS.class_weight})")
    parser.add_argument("--val-fraction", type=float, metavar="F",
                        help="share of each class's training images held out, in whole groups (the label file's "
                             "'groups': report, patient), and scored every epoch for the curves in head.json and "
                             "training_curve.png and the best epoch; it sets the threshold only with --folds 0; 0: "
                             f"train on every image (default: {DEFAULTS.val_fraction})")
    parser.add_argument("--dropout", type=float, metavar="P",
                        help="share of the head's input features dropped at random in each training step, against "
                             f"over-fitting a few hundred images; 0: none (default: {DEFAULTS.dropout})")
    parser.add_argument("--positive", metavar="CLASS",
                        help="two classes: the class the ROC-AUC and the threshold are about (default: the class not "
                             "named like normal / no finding when exactly one is, else the second)")
    parser.add_argument("--calibration", choices=CALIBRATIONS,
                        help="auto: recalibrate the class probabilities on the inner cross-validation's out-of-fold "
                             "ones (two classes: logistic recalibration of the log-odds; more: temperature scaling), "
                             "so that p can be read as a risk; the threshold is then stated on them and every "
                             "decision stays the same; none: the head's own probabilities, as before (default: "
                             f"{DEFAULTS.calibration}; without inner folds there is nothing to fit on)")
    parser.add_argument("--keep", type=int, default=KEEP,
                        help="epoch checkpoints kept besides the best one; older ones are removed once a newer one is "
                             "safely written; at least 1, the newest being what --resume continues "
                             "(default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="continue MODELS_DIR from its last finished epoch (same settings and data: the result "
                             "equals an uninterrupted run); without it an existing MODELS_DIR is refused")
    parser.add_argument("--replace-changed", action="store_true",
                        help="with --resume: where MODELS_DIR holds a head trained on other images, classes or codes, "
                             "move it (with its reports) into MODELS_DIR/replaced-<UTC time>/ and train a new one "
                             "(make pipeline passes it: a re-run on a changed folder never continues or scores the "
                             "old head)")
    add_gpus_argument(parser, "the head trains on the first one")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.replace_changed and not args.resume:
        parser.error("--replace-changed goes with --resume (without it an existing MODELS_DIR is refused anyway)")
    setup_runtime()
    from models.devices import chosen_contexts
    from models.training import train

    contexts = chosen_contexts(args.gpus)
    settings = TrainSettings(**RECIPES.get(args.recipe, {}))
    chosen = {"class_weight": args.class_weight, "val_fraction": args.val_fraction, "layout": args.layout,
              "folds": args.folds, "dropout": args.dropout, "lr": args.lr, "calibration": args.calibration}
    settings = replace(settings, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                       positive=args.positive, **{key: value for key, value in chosen.items() if value is not None})
    try:
        settings.check()
        check_keep(args.keep)
    except ValueError as err:
        raise as_flags(err, [*TrainSettings.__dataclass_fields__, "keep"]) from None
    try:
        meta = train(args.train_imgs, args.train_codes, args.train_labels, args.models_dir, settings,
                     resume=args.resume, context=contexts[0], keep=args.keep,
                     replace_changed=args.replace_changed)
    except KeyboardInterrupt:
        folder = HeadFolder(args.models_dir)
        done = finished_epochs(folder.read_meta()) if folder.has_meta() else []
        kept = f"epochs 1..{done[-1]} are saved in {args.models_dir}" if done else "no epoch was finished"
        print(f"interrupted: {kept}; run the same command with --resume to continue", file=sys.stderr)
        return 130
    if meta["history"]:
        last = meta["history"][-1]
        best = f"; best epoch by validation: {meta['best_epoch']}" if meta["best_epoch"] else ""
        print(f"trained: epoch {last['epoch']} of the {meta['head']['layout']} layout in {args.models_dir} (training "
              f"accuracy {last['accuracy']:.3f}){best}; "
              f"evaluate with: python test_model.py TEST_IMGS TEST_CODES TEST_LABELS {args.models_dir}")


if __name__ == "__main__":
    run_cli(main)
