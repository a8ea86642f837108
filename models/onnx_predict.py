"""A classifier exported by ``models.export`` applied to new X-rays with ONNX Runtime alone: no MXNet.

    python -m models.onnx_predict OUT.onnx IMAGE_OR_FOLDER... [--out DIR] [--batch-size 32]
    xvision-onnx-predict OUT.onnx IMAGE_OR_FOLDER...   # the same, installed (pyproject.toml), from any folder

Reads every image with the project's one loader (``models.images``: PNG, JPEG, TIFF, 16-bit, DICOM mapped as a viewer
shows it) as the file's metadata says the backbone saw them, runs the file, and writes what ``models.predict`` writes:
one line per image (the class, its probabilities, a mark where it is unlike the training films), OUT/predictions.csv
with the same columns and OUT/predictions.html, and the unreadable files named. Needs only what requirements-onnx.txt
lists (ONNX Runtime, numpy, Pillow, pydicom and its decoders, tqdm, Jinja2), in any Python and numpy version they
support: from the repository, or from any folder once ``pip install -r requirements-onnx.txt REPOSITORY`` has installed
the command ``xvision-onnx-predict`` (pyproject.toml).
"""

import argparse
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from models.cli import add_batch_size_argument, add_scope_arguments, add_new_films_depth_argument, scope_of
from models.errors import UserError, counted, run_cli
from models.fileio import check_output_folder, write_json
from models.images import as_rgb, image_paths, scoring_view, warn_of_reading
from models.metrics import decide
from models.predictions import PROVENANCE_FILE, announce_replacing, finished_line, predictions_file
from models.predictions_page import write_predictions_page
from models.progress import progress_bar
from models.runtime import DECODE_THREADS

METADATA_KEY = "xvision_mx"  # the file's metadata this runner reads and models.export writes
FORMAT = "xvision-mx onnx v1"
INPUT, PROBABILITIES, DISTANCE = "images", "probabilities", "training_distance"  # the graph's input and outputs
WRITTEN_BY = "models.onnx_predict"  # provenance.json's "written_by": the run that wrote an output folder


def default_out(model_path):
    """The output folder when --out is not given: predict-NAME beside NAME.onnx, never models.predict's predict/."""
    stem = os.path.splitext(os.path.basename(model_path))[0]
    return os.path.join(os.path.dirname(os.path.abspath(model_path)), f"predict-{stem}")


def load_session(path):
    """(ONNX Runtime session, the file's metadata); UserError for a file that is not an ONNX classifier of this
    project."""
    import onnxruntime

    if not os.path.isfile(path):
        raise UserError(f"no such ONNX file: {path!r}; write one with python -m models.export MODELS_DIR OUT.onnx")
    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types, for a damaged file as for a foreign one
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise UserError(f"{path} is not a readable ONNX model ({reason}); give a file written by models.export") \
            from None
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    try:
        metadata = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise UserError(f"{path} is an ONNX model but not a classifier exported by models.export (no '{METADATA_KEY}' "
                        f"metadata of format '{FORMAT}'): export it with python -m models.export MODELS_DIR OUT.onnx")
    return session, metadata


def read_batch(paths, view, write, pool=None):
    """(float32 N x 3 x size x size batch of the readable images, their paths, {unreadable path: why}); decoded on
    ``pool``'s threads if given, what is said of each file (``warn_of_reading``) said with ``write``."""
    images, read, failed = [], [], {}
    for path, (decoded, why) in zip(paths, (pool.map if pool else map)(view.decode_or_why, paths)):
        warn_of_reading(write, path, decoded, why)
        if why is not None:
            failed[path] = why
            continue
        images.append(as_rgb(decoded.pixels).transpose(2, 0, 1))
        read.append(path)
    batch = np.stack(images).astype(np.float32) if images else np.zeros((0, 3, view.size, view.size), np.float32)
    return batch, read, failed


def predict_files(model_path, inputs, out_dir=None, batch_size=32, scope=None, log=print, significant_bits=None):
    """Classify every image of ``inputs`` with the exported classifier; returns the number classified. ``scope``:
    DICOM files read besides the chest radiographs (and what the training allowed); ``significant_bits``: those of
    the high-depth films given, in place of the file's."""
    session, metadata = load_session(model_path)
    out_dir = out_dir or default_out(model_path)
    paths = image_paths(inputs, skip=out_dir)
    check_output_folder(out_dir, "--out", [("the image folder", p) for p in inputs if os.path.isdir(p)])
    described = metadata["input"]["view"]
    view = scoring_view(described, significant_bits, scope, log)
    classes, threshold = metadata["classes"], metadata["threshold"]
    positive = None if metadata["positive_class"] is None else classes.index(metadata["positive_class"])
    check = metadata.get("input_check")
    rule = f"; '{classes[positive]}' from p >= {threshold:.4f}" if positive is not None else ""
    log(f"{model_path} (epoch {metadata['epoch']}, ONNX Runtime): {counted(len(paths), 'image')}{rule}")
    os.makedirs(out_dir, exist_ok=True)
    announce_replacing(out_dir, WRITTEN_BY, os.path.abspath(model_path), log)
    skipped = []
    check_rule = (check["threshold"], check["method"], check.get("training_images")) if check else None
    with progress_bar(total=len(paths), unit="img", desc="predict", leave=False) as bar, \
            ThreadPoolExecutor(DECODE_THREADS) as pool, \
            predictions_file(os.path.join(out_dir, "predictions.csv"), classes, check_rule, bar.write) as written:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            batch, read, failed = read_batch(chunk, view, bar.write, pool)
            skipped += list(failed)
            scores = {}
            if read:
                outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {INPUT: batch})))
                probabilities = outputs[PROBABILITIES].astype(np.float64)
                distances = outputs.get(DISTANCE, [None] * len(read))
                scores = dict(zip(read, zip(probabilities, decide(probabilities, positive, threshold), distances)))
            for path in chunk:  # every input in the order given, the unreadable ones with why
                if path in failed:
                    written.skip(path, failed[path])
                    continue
                probs, guess, distance = scores[path]
                flagged = None if check is None else bool(distance > check["threshold"])
                written.add(path, probs, guess, None if distance is None else float(distance), flagged)
            bar.update(len(failed) + len(read))
        written.require_scored(out_dir)  # nothing scored: every output of an earlier run left as it was
    done = len(paths) - len(skipped)
    write_json(os.path.join(out_dir, PROVENANCE_FILE), {
        "written_by": WRITTEN_BY, "source": os.path.abspath(model_path), "epoch": metadata["epoch"],
        "images": len(paths), "skipped": len(skipped)})
    page = write_predictions_page(out_dir, classes, view, dict(
        written_by=WRITTEN_BY, source=os.path.abspath(model_path), epoch=metadata["epoch"],
        rule=rule.lstrip("; ") or None, check=check_rule))
    written.summary(log)
    log(finished_line(done, len(skipped), os.path.join(out_dir, "predictions.csv")) + f" and {page}")
    return done


def main(argv=None, prog="python -m models.onnx_predict"):
    parser = argparse.ArgumentParser(prog=prog, description=" ".join(
        (__doc__.split("\n\n")[0] + " " + __doc__.split("\n\n")[2]).split()))
    parser.add_argument("model", metavar="OUT.onnx", help="a classifier written by python -m models.export")
    parser.add_argument("inputs", metavar="IMAGE_OR_FOLDER", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--out", metavar="DIR", help="folder for predictions.csv (default: predict-NAME/ beside "
                                                     "NAME.onnx, apart from models.predict's predict/)")
    add_scope_arguments(parser)
    add_new_films_depth_argument(parser, "the file")
    add_batch_size_argument(parser)
    args = parser.parse_args(argv)
    predict_files(args.model, args.inputs, args.out, args.batch_size, scope_of(args),
                  significant_bits=args.significant_bits)


def command():
    """The installed command ``xvision-onnx-predict`` (pyproject.toml's entry point)."""
    run_cli(lambda argv: main(argv, prog="xvision-onnx-predict"))


if __name__ == "__main__":
    run_cli(main)
