"""The unit every interval of a report resamples: whole groups (patients, reports) where an image shares its group with
another, images where none does.

Films of one patient are not independent: resampling them one by one treats a patient with four films as four
patients and gives intervals that are too narrow. ``Resampling`` draws the same seeded bootstrap resamples for every
statistic of one report, each of whole groups drawn within each class (a group's class: that of its first image), so
every resample holds both classes and every interval of the report says the same unit.
"""

import numpy as np

from models.splits import group_ids

BOOTSTRAP_RESAMPLES = 2000


class Resampling:
    """Seeded bootstrap resamples of ``truth``'s images (class indices), by the groups given.

    ``groups``: each image's group (None: every image its own); ``unit``: what a group is, plural ("patients",
    "reports"; None: "groups"). Where no group holds two images, the unit is images.
    """

    def __init__(self, truth, groups=None, unit=None, resamples=BOOTSTRAP_RESAMPLES, seed=0):
        self.truth = np.asarray(truth)
        ids = group_ids(groups, len(self.truth))
        self.members = [np.flatnonzero(ids == g) for g in range(ids.max() + 1)] if len(ids) else []
        self.grouped = any(len(rows) > 1 for rows in self.members)
        self.unit = (unit or "groups") if self.grouped else "images"
        self.resamples, self.seed = resamples, seed
        self._samples = None

    @property
    def count(self):
        """How many units are resampled: groups, or images."""
        return len(self.members)

    def text(self):
        """One line for a report: "patients: 142 groups" / "images: no groups known"."""
        if self.grouped:
            return f"{self.unit}: {self.count} groups of {len(self.truth)} images"
        return f"images: no groups known ({len(self.truth)} images)"

    def record(self):
        """report.json's "intervals": what every ci95 in it resamples, and how."""
        return {"unit": self.unit, "units": self.count, "images": int(len(self.truth)), "text": self.text(),
                "method": self.method()}

    def method(self):
        """The ci_method of an interval from these resamples."""
        whole = f"whole {self.unit}" if self.grouped else "images"
        return (f"percentile, {self.resamples} bootstrap resamples of {whole} drawn within each class, "
                f"seed {self.seed}")

    def samples(self):
        """The resamples, each an array of image positions (drawn once, then reused by every statistic)."""
        if self._samples is None:
            first_class = np.array([self.truth[rows[0]] for rows in self.members])
            pools = [np.flatnonzero(first_class == c) for c in np.unique(first_class)]
            rng = np.random.default_rng(self.seed)
            self._samples = []
            for _ in range(self.resamples):
                chosen = np.concatenate([rng.choice(pool, len(pool)) for pool in pools])
                self._samples.append(np.concatenate([self.members[g] for g in chosen]))
        return self._samples

    def values(self, statistic):
        """``statistic(positions)`` on every resample, as an array; those where it is None (undefined) left out."""
        return np.array([value for value in map(statistic, self.samples()) if value is not None], dtype=np.float64)

    def interval(self, statistic):
        """95% percentile interval of ``statistic(positions)`` over the resamples (those where it is None left out);
        None where it is None on every one."""
        values = self.values(statistic)
        if not len(values):
            return None
        low, high = np.percentile(values, [2.5, 97.5])
        return [float(low), float(high)]

    def intervals(self, statistic):
        """Like ``interval`` for a statistic giving several numbers at once (an array, NaN where undefined): one
        interval (or None) each."""
        values = np.array([statistic(sample) for sample in self.samples()], dtype=np.float64)
        bounds = []
        for column in values.T:
            column = column[~np.isnan(column)]
            bounds.append([float(v) for v in np.percentile(column, [2.5, 97.5])] if len(column) else None)
        return bounds
