"""predictions.html: the page of a models.predict or models.onnx_predict run, beside its predictions.csv.

One row per image: a thumbnail (the image as the backbone saw it), the predicted class, the class probabilities and
the input check's distance and flag; the flagged images first, then the files that could not be read, with why. Its
numbers are predictions.csv's, read back from the folder. Imports nothing the ONNX runner's environment lacks (no
MXNet, scikit-learn or SciPy). Layout in ``models/templates/predictions.html.j2``."""

import csv
import os

from models.dicom import OUT_OF_SCOPE
from models.images import ImageReadError
from models.inputcheck import sureness_note
from models.pages import photo_uri, write_page
from models.predictions import SKIPPED_COLUMN

PAGE = "predictions.html"
THUMB_WIDTH = 128  # pixels: a JPEG of about 5 KB, so a few hundred images keep the page a few MB
THUMBNAILS = 500  # at most this many rows get a thumbnail (the flagged first): a bigger run stays a page, not a film


def read_table(out_dir):
    """predictions.csv of ``out_dir`` as dicts, every row (the skipped ones too)."""
    with open(os.path.join(out_dir, "predictions.csv"), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def thumbnail(view, path):
    """``path`` as ``view`` shows it, as a small JPEG data URI; None where it cannot be read again."""
    try:
        return photo_uri(view.load(path), THUMB_WIDTH)
    except (ImageReadError, OSError, ValueError):  # moved or damaged since it was scored: an empty cell, no failure
        return None


def scored_row(row, classes):
    """What the page shows of one scored image (its thumbnail added later)."""
    distance = row.get("training_distance")
    return {"file": row["file"], "predicted": row["predicted_class"], "flagged": row.get("unlike_training") == "true",
            "probabilities": [float(row[f"p_{name}"]) for name in classes],
            "distance": float(distance) if distance else None, "thumb": None}


def write_predictions_page(out_dir, classes, view, facts):
    """Write ``out_dir``/predictions.html from the predictions.csv there; ``view``: how the run read the images
    (``models.images.View``), for the thumbnails; ``facts``: {"written_by", "source", "epoch", "check" (the input
    check's (threshold, method, training images), or None), "rule" (the decision rule, a sentence, or None),
    "heatmaps" (the overlays' folder, or None)}. Returns its path."""
    table = read_table(out_dir)
    scored = [scored_row(row, classes) for row in table if not row[SKIPPED_COLUMN]]
    scored.sort(key=lambda image: not image["flagged"])  # stable: the flagged first, each part in the order given
    for image in scored[:THUMBNAILS]:
        image["thumb"] = thumbnail(view, image["file"])
    skipped = [(row["file"], row[SKIPPED_COLUMN]) for row in table if row[SKIPPED_COLUMN]]
    flagged = sum(image["flagged"] for image in scored)
    out_of_scope = sum(reason.startswith(OUT_OF_SCOPE) for _, reason in skipped)
    check = facts.get("check")
    return write_page(os.path.join(out_dir, PAGE), "predictions.html.j2", classes=classes, images=scored,
                      skipped=skipped, out_of_scope=out_of_scope, flagged=flagged, facts=facts,
                      has_check=check is not None,
                      threshold=check[0] if check else None, check_note=_sentence(sureness_note(check[2]))
                      if check else None, thumbnails=THUMBNAILS)


def _sentence(text):
    return None if text is None else text[:1].upper() + text[1:] + "."
