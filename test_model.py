"""Step 5: evaluate a trained head on the test images' codes.

Example: python test_model.py data/test data/codes/test data/test_labels.json data/models
"""

import argparse
import os

from models.cli import add_epoch_argument, add_significant_bits_argument, fraction
from models.errors import run_cli
from models.runtime import setup_runtime


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python test_model.py",
        description="Predict every test image with a head trained by train_model.py; write report.html (the result "
                    "on one page, to read, print or share: docs/report.md), report.json (accuracy, "
                    "balanced accuracy, per-class precision/recall/F1, confusion matrix, ROC-AUC, with two classes "
                    "sensitivity and specificity at the operating point and at specificity / sensitivity 0.90 and "
                    "0.95, each with a 95% bootstrap interval over patients where the label file groups images, PPV "
                    "/ NPV, and "
                    "how far the probabilities are risks: Brier score, calibration-in-the-large, slope, ECE; the "
                    "input check's count of images unlike the training films), predictions.csv (per image: the "
                    "class probabilities, training_distance, unlike_training and the group from TEST_LABELS), "
                    "confusion_matrix.png, roc_curve.png, calibration.png, input_check.png, predictions.png and "
                    "Grad-CAM heatmaps (heatmaps.png, heatmaps.npz), and print the precision/recall table and every image unlike the training films. "
                    "Probabilities are recalibrated as train_model.py learned (--calibration). With two classes, an "
                    "image is predicted positive when its probability reaches the threshold train_model.py chose on "
                    "the out-of-fold probabilities of its inner cross-validation (else on the validation images for "
                    "that epoch, else 0.5); report.json says which, and the scores at 0.5 are reported beside.")
    parser.add_argument("test_imgs", metavar="TEST_IMGS", help="folder of test images: every one needs a label and a code")
    parser.add_argument("test_codes", metavar="TEST_CODES",
                        help="codes folder made by train.py for TEST_IMGS, with the same --model and --layer as the "
                             "training codes")
    parser.add_argument("test_labels", metavar="TEST_LABELS",
                        help="label file of the test images; its classes must be among the model's")
    parser.add_argument("models_dir", metavar="MODELS_DIR", help="folder written by train_model.py")
    add_epoch_argument(parser, "to evaluate")
    parser.add_argument("--out", metavar="DIR", help="folder for the report files (default: MODELS_DIR/eval)")
    parser.add_argument("--heatmaps", choices=("grid", "all", "none"), default="grid",
                        help="grid: heatmaps.npz (a Grad-CAM map of the predicted class for every test image, at the "
                             "cut layer's 7x7 grid, with the region of the image it lies on) and heatmaps.png (the "
                             "maps over the images of predictions.png); all: also one overlay PNG per image in "
                             "OUT/heatmaps/; none: no heatmaps (default: %(default)s)")
    parser.add_argument("--prevalence", type=fraction, metavar="P",
                        help="two classes: also report PPV and NPV at this prevalence of the positive class (where "
                             "the tool would be used), beside those at the test images' own")
    parser.add_argument("--allow-overlap", action="store_true",
                        help="score the test images even where some are images the head was trained on (byte for "
                             "byte, by head.json's digests), with a warning and report.json's training_overlap "
                             "saying so; without it such a test set is refused")
    add_significant_bits_argument(parser, "here a check, not a mapping: TEST_CODES must have been made from N "
                                          "significant bits (train.py --significant-bits N maps the films when it "
                                          "encodes them); an error names the option where they were not")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    setup_runtime()
    from models.evaluation import evaluate, format_table

    report, out_dir = evaluate(args.test_imgs, args.test_codes, args.test_labels, args.models_dir,
                               epoch=args.epoch, out_dir=args.out, heatmaps=args.heatmaps, prevalence=args.prevalence,
                               allow_overlap=args.allow_overlap, significant_bits=args.significant_bits)
    print(f"epoch {report['epoch']} of {args.models_dir} on {report['n']} test images:\n")
    print(format_table(report))
    print(f"\nreport: {os.path.join(out_dir, 'report.html')} (report.json, predictions.csv and plots beside it)")


if __name__ == "__main__":
    run_cli(main)
