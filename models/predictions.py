"""predictions.csv, the one writer: ``models.predict`` (MXNet) and ``models.onnx_predict`` (ONNX Runtime) write a line
per image and the file (the file, the predicted class, the class probabilities, and the input check's distance and
flag), and at the end how many images were unlike the training films; the test report (``models.evaluation``) writes
the same file with each image's true class and, last, its group (the patient, from the label file; empty where the
label file names no groups), so ``models.compare`` can resample whole patients from two report folders alone. Every
file has a last column, skipped_reason: empty for a scored image; for an input that could not be read (a row with no
class and no probabilities) why it was skipped, so each input given has its row."""

import csv
import json
import os
import sys
from contextlib import contextmanager

from models import inputcheck
from models.errors import UserError, counted, one_line
from models.fileio import atomic_path


SKIPPED_COLUMN = "skipped_reason"  # the last column: why an input has no scores (empty for a scored image)


class PredictionsFile:
    """Rows of predictions.csv and their lines; ``check``: (threshold, method, training images) of the input check,
    or None for a head trained before input checks existed; ``write``: where each image's line goes (None: no lines);
    ``with_truth``: a true_class column and a last group column (a labelled test set)."""

    def __init__(self, writer, classes, check, write, with_truth=False):
        self.writer, self.classes, self.check, self.write = writer, list(classes), check, write
        self.with_truth = with_truth
        self.scored = []  # (path, distance, flagged) of every image written, with a check
        self.counts = {"scored": 0, "skipped": 0}
        writer.writerow(["file"] + (["true_class"] if with_truth else []) + ["predicted_class"]
                        + [f"p_{name}" for name in classes] + inputcheck.CSV_COLUMNS
                        + (["group"] if with_truth else []) + [SKIPPED_COLUMN])

    def add(self, path, probabilities, guess, distance=None, flagged=None, truth=None, group=None):
        """One image: its row, and its line (marked where it is unlike the training films); ``truth``: its true class
        index, and ``group``: its group id (None: no groups known), with ``with_truth``."""
        self.writer.writerow([path] + ([self.classes[truth]] if self.with_truth else []) + [self.classes[guess]]
                             + [repr(float(p)) for p in probabilities] + inputcheck.csv_cells(distance, flagged)
                             + (["" if group is None else str(group)] if self.with_truth else []) + [""])
        self.counts["scored"] += 1
        if self.check is not None:
            self.scored.append((path, distance, bool(flagged)))
        if self.write is not None:
            shown = ", ".join(f"{name} {p:.4f}" for name, p in zip(self.classes, probabilities))
            flag = f"; {inputcheck.unlike_text(distance, self.check[0])}" if self.check and flagged else ""
            self.write(f"{one_line(path)}: {self.classes[guess]} ({shown}){flag}")

    def skip(self, path, reason):
        """The row of an input that could not be read: no class, no probabilities, and why (its warning, said where
        it was read, is its line)."""
        blank = 1 + len(self.classes) + len(inputcheck.CSV_COLUMNS) + (2 if self.with_truth else 0)
        self.writer.writerow([path] + [""] * blank + [one_line(reason)])
        self.counts["skipped"] += 1

    def require_scored(self, out_dir):
        """UserError where no input was scored, raised inside ``predictions_file``'s block so that neither this file
        nor any other output of the run replaces what an earlier run left in ``out_dir``."""
        if not self.counts["scored"]:
            skipped = self.counts["skipped"]
            unread = "the image given could not be read (named above)" if skipped == 1 else \
                f"none of the {skipped} images given could be read (each named above)"
            raise UserError(f"{unread}: nothing written, {out_dir} left as it was; give image files (PNG, JPEG, TIFF, "
                            f"DICOM)")

    def summary(self, log):
        """The input check's count, and the warning about a set with many flagged, after the last image."""
        if self.check is None:
            log(inputcheck.NO_CHECK_NOTICE)
        elif self.scored:
            record, warning = inputcheck.summary(*zip(*self.scored), *self.check)
            log(f"{record['flagged']} of {counted(len(self.scored), 'image')} unlike the training films (input "
                f"check: distance above {self.check[0]:.1f})")
            if warning:
                print(warning, file=sys.stderr)


@contextmanager
def predictions_file(path, classes, check, write=print, with_truth=False):
    """A PredictionsFile writing ``path``, which appears only when every image is in it and the block ends without an
    exception (``PredictionsFile.require_scored``: a run that scored nothing replaces nothing)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        yield PredictionsFile(csv.writer(f), classes, check, write, with_truth)


def finished_line(done, skipped, path):
    """The last line of a run that scored ``done`` images of those given, ``skipped`` (each named above) not."""
    unread = f", {skipped} skipped (named above)" if skipped else ""
    return f"{counted(done, 'image')} classified{unread}; predictions in {path}"


PROVENANCE_FILE = "provenance.json"  # beside predictions.csv: which run wrote the folder ("written_by", "source")


def announce_replacing(out_dir, written_by, source, log):
    """Say with ``log`` that the outputs of an earlier run in ``out_dir`` (its predictions.csv; its provenance.json
    says which run) are about to be replaced, so that no run overwrites another's without a word."""
    if not os.path.exists(os.path.join(out_dir, "predictions.csv")):
        return
    try:
        with open(os.path.join(out_dir, PROVENANCE_FILE), encoding="utf-8") as f:
            earlier = json.load(f)
        earlier = earlier if isinstance(earlier, dict) else {}
    except (OSError, ValueError):
        earlier = {}
    who = earlier.get("written_by", "an unrecorded run")
    what = f"{who} of {earlier['source']}" if earlier.get("source") else who
    same = (who, earlier.get("source")) == (written_by, source)
    other = "" if same else ", another run or model: give --out DIR to keep both"
    log(f"notice: {out_dir} holds the outputs of an earlier run ({what}){other}: they are replaced once this run "
        f"scores an image")
