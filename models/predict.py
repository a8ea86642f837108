"""A trained head applied to new X-rays, no labels needed: a command beside the five steps, for after them.

    python -m models.predict MODELS_DIR IMAGE_OR_FOLDER... [--epoch last|best|N] [--out DIR] [--heatmaps]

Runs the backbone exactly as head.json records it (the checkpoint, checked by its sha256, the layer, the precision
and the resize mode), then the head, recalibrating its probabilities as train_model.py learned; prints one line per
image, marking those unlike the training films (the input check), writes OUT/predictions.csv (the class
probabilities, training_distance and unlike_training), OUT/predictions.html (the same as a page, with thumbnails)
and, with --heatmaps, OUT/heatmaps.npz and one overlay PNG per image in OUT/heatmaps/. Images are read, encoded
and written batch by batch.
"""

import argparse
import os
from contextlib import nullcontext

import numpy as np

from models import inputcheck, metrics
from models.cli import (add_backbone_argument, add_batch_size_argument, add_epoch_argument, add_gpus_argument,
                        add_new_films_depth_argument, add_scope_arguments, scope_of)
from models.errors import UserError, counted, run_cli
from models.headfolder import load_head
from models.fileio import check_output_folder, write_json
from models.images import image_paths, scoring_view
from models.predictions import PROVENANCE_FILE, announce_replacing, finished_line, predictions_file
from models.predictions_page import write_predictions_page
from models.progress import progress_bar
from models.provenance import record
from models.weights import sha256_of
from models.runtime import setup_runtime

WRITTEN_BY = "models.predict"  # provenance.json's "written_by": the run that wrote an output folder


def recorded_backbone(meta, models_dir, batch_size, contexts, given=None):
    """The backbone that made the head's training codes, rebuilt from head.json (found by its sha256: ``given``, the
    models folder, the project's models/; ``pretrained.recorded_checkpoint``); UserError where it cannot be."""
    from models.pretrained import Backbone, recorded_checkpoint

    made = meta["backbone"]
    prefix, precision = recorded_checkpoint(made, models_dir, given), made.get("precision") or "fp32"
    if precision == "int8":
        from models.checkpoint import load_checkpoint

        cached = os.path.join(meta["training"].get("train_codes", ""), "int8-calibration",
                              f"int8-{made.get('int8_calibration')}")
        if not os.path.exists(f"{cached}-0000.params"):
            raise UserError(f"the head was trained on int8 codes whose quantised network ({cached}-*) is not here; "
                            f"run train.py --int8 again into the training codes folder")
        return Backbone(prefix, made["layer"], contexts, batch_size, graph=load_checkpoint(cached), precision="int8",
                        int8_key=made.get("int8_calibration"), model_sha256=made["model_sha256"])
    return Backbone(prefix, made["layer"], contexts if precision == "fp32" else None, batch_size,
                    precision=precision, model_sha256=made["model_sha256"])


def predict_images(models_dir, inputs, epoch="last", out_dir=None, heatmaps=False, batch_size=32, contexts=None,
                   backbone=None, scope=None, log=print, significant_bits=None):
    """Classify every image of ``inputs`` (files and folders) with the head in ``models_dir``; returns the number of
    images classified. ``scope``: DICOM files read besides the chest radiographs (and what the training allowed);
    ``significant_bits``: those of the high-depth films given, in place of the head's. Raises UserError for a models
    folder without a finished epoch, a checkpoint that is not the
    recorded one, or inputs that name no image."""
    from models.extract import encode
    from models.heatmaps import heatmap_batch, heatmap_file, overlay_names
    from models.plots import overlay_caption, save_overlay

    model = load_head(models_dir, epoch)  # the head on the CPU: small next to the backbone
    meta, epoch = model.meta_, model.epoch_
    out_dir = out_dir or os.path.join(models_dir, "predict")
    paths = image_paths(inputs, skip=out_dir)
    check_output_folder(out_dir, "--out", [("the image folder", p) for p in inputs if os.path.isdir(p)])
    classes, positive, threshold, check = model.classes_, model.positive_, model.threshold_, model.input_check_
    view = scoring_view(meta["backbone"], significant_bits, scope, log)  # what the training codes saw
    cam_net = model.gradient_net() if heatmaps else None
    backbone = recorded_backbone(meta, models_dir, batch_size, contexts, backbone)
    grid = tuple(meta["code_shape"][1:])
    heatmaps = heatmaps and len(grid) == 2
    os.makedirs(out_dir, exist_ok=True)
    announce_replacing(out_dir, WRITTEN_BY, os.path.abspath(models_dir), log)
    overlays = overlay_names(paths) if heatmaps else {}
    rule = f"; '{classes[positive]}' from p >= {threshold:.4f}" if positive is not None else ""
    log(f"epoch {epoch} of {models_dir}: {counted(len(paths), 'image')}{rule}")
    skipped = []
    check_rule = inputcheck.rule_of(check)
    with progress_bar(total=len(paths), unit="img", desc="predict", leave=False) as bar, \
            predictions_file(os.path.join(out_dir, "predictions.csv"), classes, check_rule, bar.write) as written, \
            (heatmap_file(os.path.join(out_dir, "heatmaps.npz"), len(paths), grid, classes) if heatmaps
             else nullcontext()) as maps_out:
        for chunk, codes, failed, _ in encode(backbone, "", paths, view, bar):  # encode warns about failed ones
            skipped += [path for path in chunk if path in failed]
            probabilities = model.predict_proba(codes)
            predicted = metrics.decide(probabilities, positive, threshold)
            distances, unlike = check.flag(codes) if check else ([None] * len(chunk), [None] * len(chunk))
            for path, guess, probs, distance, flag in zip(chunk, predicted, probabilities, distances, unlike):
                if path in failed:
                    written.skip(path, failed[path])
                else:
                    written.add(path, probs, guess, distance, flag)
            if maps_out is not None:  # one row per image given; an unreadable one gets NaNs and class -1
                maps, boxes, sizes = heatmap_batch(cam_net, codes, predicted, chunk, view)
                unread = np.array([path in failed for path in chunk])
                maps[unread], predicted = np.nan, np.where(unread, -1, predicted)
                maps_out.add(maps, chunk, predicted, boxes, sizes)
                for path, heat, guess, probs, flag in zip(chunk, maps, predicted, probabilities, unlike):
                    if path not in failed:
                        save_overlay(os.path.join(out_dir, "heatmaps", overlays[path]), view.load(path), heat,
                                     f"{path}\n" + overlay_caption(classes, probs, guess, positive, bool(flag)))
        written.require_scored(out_dir)  # nothing scored: every output of an earlier run left as it was
    done = len(paths) - len(skipped)
    write_json(os.path.join(out_dir, PROVENANCE_FILE), dict(
        record({"head_params": sha256_of(model.params_path_), "backbone": meta["backbone"].get("model_sha256")}),
        written_by=WRITTEN_BY, source=os.path.abspath(models_dir), models_dir=os.path.abspath(models_dir),
        epoch=epoch, images=len(paths), skipped=len(skipped)))
    page = write_predictions_page(out_dir, classes, view, dict(
        written_by=WRITTEN_BY, source=os.path.abspath(models_dir), epoch=epoch, rule=rule.lstrip("; ") or None,
        check=check_rule, heatmaps=os.path.join(out_dir, "heatmaps") if heatmaps else None))
    written.summary(log)
    heatmaps_in = f", heatmaps in {os.path.join(out_dir, 'heatmaps')}" if heatmaps else ""
    log(finished_line(done, len(skipped), os.path.join(out_dir, "predictions.csv")) + f" and {page}" + heatmaps_in)
    return done


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m models.predict", description=__doc__.split("\n\n")[0] + " " +
                                     __doc__.split("\n\n")[2].replace("\n", " "))
    parser.add_argument("models_dir", metavar="MODELS_DIR", help="folder written by train_model.py")
    parser.add_argument("inputs", metavar="IMAGE_OR_FOLDER", nargs="+", help="image files and/or folders of images")
    add_epoch_argument(parser, "to apply")
    parser.add_argument("--out", metavar="DIR", help="folder for predictions.csv and the heatmaps "
                                                     "(default: MODELS_DIR/predict)")
    parser.add_argument("--heatmaps", action="store_true",
                        help="also write heatmaps.npz and an overlay PNG per image (Grad-CAM of the predicted class)")
    add_scope_arguments(parser)
    add_new_films_depth_argument(parser, "head.json")
    add_backbone_argument(parser)
    add_batch_size_argument(parser)
    add_gpus_argument(parser)
    args = parser.parse_args(argv)
    setup_runtime()
    from models.devices import chosen_contexts

    predict_images(args.models_dir, args.inputs, args.epoch, args.out, args.heatmaps, args.batch_size,
                   chosen_contexts(args.gpus), args.backbone, scope_of(args), significant_bits=args.significant_bits)


if __name__ == "__main__":
    run_cli(main)
