"""What a run that scores new images writes, the same for ``models.predict`` (MXNet) and ``models.onnx_predict``
(ONNX Runtime): a line per image, predictions.csv (the file, the predicted class, the class probabilities, and the
input check's distance and flag), and at the end how many images were unlike the training films."""

import csv
import sys
from contextlib import contextmanager

from models import inputcheck
from models.errors import one_line
from models.fileio import atomic_path


class PredictionsFile:
    """Rows of predictions.csv and their lines; ``check``: (threshold, method) of the input check, or None for a head
    trained before input checks existed."""

    def __init__(self, writer, classes, check, write):
        self.writer, self.classes, self.check, self.write = writer, list(classes), check, write
        self.scored = []  # (path, distance, flagged) of every image written, with a check
        writer.writerow(["file", "predicted_class"] + [f"p_{name}" for name in classes] + inputcheck.CSV_COLUMNS)

    def add(self, path, probabilities, guess, distance=None, flagged=None):
        """One image: its row, and its line (marked where it is unlike the training films)."""
        self.writer.writerow([path, self.classes[guess]] + [repr(float(p)) for p in probabilities]
                             + inputcheck.csv_cells(distance, flagged))
        shown = ", ".join(f"{name} {p:.4f}" for name, p in zip(self.classes, probabilities))
        flag = ""
        if self.check is not None:
            self.scored.append((path, distance, bool(flagged)))
            if flagged:
                flag = f"; unlike the training films (distance {distance:.1f} > {self.check[0]:.1f})"
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
def predictions_file(path, classes, check, write=print):
    """A PredictionsFile writing ``path``, which appears only when every image is in it."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        yield PredictionsFile(csv.writer(f), classes, check, write)
