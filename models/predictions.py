"""predictions.csv, the one writer: ``models.predict`` (MXNet) and ``models.onnx_predict`` (ONNX Runtime) write a line
per image and the file (the file, the predicted class, the class probabilities, and the input check's distance and
flag), and at the end how many images were unlike the training films; the test report (``models.evaluation``) writes
the same file with each image's true class and, last, its group (the patient, from the label file; empty where the
label file names no groups), so ``models.compare`` can resample whole patients from two report folders alone."""

import csv
import sys
from contextlib import contextmanager

from models import inputcheck
from models.errors import one_line
from models.fileio import atomic_path


class PredictionsFile:
    """Rows of predictions.csv and their lines; ``check``: (threshold, method) of the input check, or None for a head
    trained before input checks existed; ``write``: where each image's line goes (None: no lines); ``with_truth``: a
    true_class column and a last group column (a labelled test set)."""

    def __init__(self, writer, classes, check, write, with_truth=False):
        self.writer, self.classes, self.check, self.write = writer, list(classes), check, write
        self.with_truth = with_truth
        self.scored = []  # (path, distance, flagged) of every image written, with a check
        writer.writerow(["file"] + (["true_class"] if with_truth else []) + ["predicted_class"]
                        + [f"p_{name}" for name in classes] + inputcheck.CSV_COLUMNS
                        + (["group"] if with_truth else []))

    def add(self, path, probabilities, guess, distance=None, flagged=None, truth=None, group=None):
        """One image: its row, and its line (marked where it is unlike the training films); ``truth``: its true class
        index, and ``group``: its group id (None: no groups known), with ``with_truth``."""
        self.writer.writerow([path] + ([self.classes[truth]] if self.with_truth else []) + [self.classes[guess]]
                             + [repr(float(p)) for p in probabilities] + inputcheck.csv_cells(distance, flagged)
                             + (["" if group is None else str(group)] if self.with_truth else []))
        if self.check is not None:
            self.scored.append((path, distance, bool(flagged)))
        if self.write is not None:
            shown = ", ".join(f"{name} {p:.4f}" for name, p in zip(self.classes, probabilities))
            flag = f"; {inputcheck.unlike_text(distance, self.check[0])}" if self.check and flagged else ""
            self.write(f"{one_line(path)}: {self.classes[guess]} ({shown}){flag}")

    def summary(self, log):
        """The input check's count, and the warning about a set with many flagged, after the last image."""
        if self.check is None:
            log(inputcheck.NO_CHECK_NOTICE)
        elif self.scored:
            record, warning = inputcheck.summary(*zip(*self.scored), *self.check)
            log(f"{record['flagged']} of {len(self.scored)} images unlike the training films (input check: distance "
                f"above {self.check[0]:.1f})")
            if warning:
                print(warning, file=sys.stderr)


@contextmanager
def predictions_file(path, classes, check, write=print, with_truth=False):
    """A PredictionsFile writing ``path``, which appears only when every image is in it."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        yield PredictionsFile(csv.writer(f), classes, check, write, with_truth)
