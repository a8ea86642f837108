"""Is an image like the training films? A model of the training images' codes and a distance from it, fitted with the
head (``HeadClassifier.input_check_``) and stored in its models folder, so that every step that scores images can say
which images it has seen nothing like.

The distance is the Mahalanobis distance of an image's code averaged over its grid (one mean per channel: 512 numbers
for the default cut) from the training codes' mean, under their covariance shrunk towards a multiple of the identity
(Ledoit-Wolf: a few hundred images cannot estimate 512 x 512 covariances unaided). An image is flagged when its
distance exceeds the 99th percentile of the training images' out-of-fold distances: each training image measured by
a check fitted without its group, so the threshold is what a new image of the same kind reaches. Chosen on evidence
(docs/pipeline.md, "Input check"): on the NIH sets it flags about 1% of held-out films and every inverted, rotated,
upside-down film, photograph and digit, where the distance on the flattened grid after PCA, or to the nearest
training codes, misses most of them.

Below FIRM training images the percentile rests on the few largest distances, so films like the training ones are
flagged more often than 1 in 100. The reports then say the flags are uncertain. A finite-sample threshold (the
conformal rank, which is the largest distance there) was tried: it let half the demo's inverted films through.
"""

import numpy as np

from models import head
from models.errors import counted
from models.splits import group_ids

METHOD = "Mahalanobis distance of the channel-averaged code, Ledoit-Wolf shrinkage covariance"
QUANTILE = 99  # percentile of the out-of-fold training distances above which an image is flagged
FOLDS = 5  # out-of-fold distances from this many group folds (fewer where there are fewer groups)
POOL_BATCH = 256  # codes pooled at once
FILE_KEYS = ("mean", "precision", "threshold")
FIRM = 100  # training images from which the threshold is taken as firm; below, its flags are called uncertain


def pooled(codes):
    """Channel means (n, channels) in float64 of ``codes`` (an array or ``CodeStore.rows_of``), read in batches."""
    parts = [head.pool_codes(codes[np.arange(start, min(start + POOL_BATCH, len(codes)))], "avg")
             for start in range(0, len(codes), POOL_BATCH)]
    return np.concatenate(parts).astype(np.float64)


def _shrunk_estimate(features):
    """(mean, precision): the features' mean and the inverse of their Ledoit-Wolf shrunk covariance."""
    from sklearn.covariance import LedoitWolf

    estimate = LedoitWolf(store_precision=False).fit(features)
    return estimate.location_, _symmetric_pseudo_inverse(estimate.covariance_)


def _symmetric_pseudo_inverse(matrix):
    """scipy.linalg.pinvh's result (its cutoff) by numpy's divide-and-conquer eigensolver. scikit-learn's own precision
    goes through scipy's default driver, LAPACK dsyevr, which in the OpenBLAS scipy 1.11 ships raises 'Internal Error'
    on some covariances on AMD Zen 5 (bench.run --quick's random codes, for one)."""
    values, vectors = np.linalg.eigh(matrix)
    cutoff = values.max(initial=0.0) * len(values) * np.finfo(values.dtype).eps
    inverse = np.divide(1.0, values, out=np.zeros_like(values), where=values > cutoff)
    return (vectors * inverse) @ vectors.T


def _distances(features, mean, precision):
    """Mahalanobis distance of each row of ``features`` under ``mean`` and ``precision``."""
    centred = features - mean
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", centred, precision, centred), 0.0))


class InputCheck:
    """Fitted attributes: ``mean_``, ``precision_`` (the inverse shrunk covariance), ``threshold_``, and
    ``record_`` (head.json's "input_check": method, threshold, how it was chosen)."""

    def fit(self, codes, groups=None):
        """Fit on the training images' ``codes``; ``groups`` (patient, report) are kept whole in the folds that give
        the out-of-fold distances. Returns self."""
        from sklearn.model_selection import GroupKFold

        features = pooled(codes)
        groups = group_ids(groups, len(features))
        n, n_groups = len(features), len(set(groups.tolist()))
        k = min(FOLDS, n_groups)
        if k >= 2:
            out_of_fold = np.zeros(n)
            for train, test in GroupKFold(n_splits=k).split(features, groups=groups):
                out_of_fold[test] = _distances(features[test], *_shrunk_estimate(features[train]))
            which = f"the {n} training images' out-of-fold distances ({k} folds, groups kept whole)"
        else:  # one group: no image can be measured by a check that did not see it
            out_of_fold = None
            which = f"the {n} training images' own distances (one group: no out-of-fold ones)"
        self.mean_, self.precision_ = _shrunk_estimate(features)
        distances = self._distance(features) if out_of_fold is None else out_of_fold
        self.threshold_ = float(np.percentile(distances, QUANTILE))
        self.record_ = {"method": METHOD, "threshold": self.threshold_,
                        "threshold_by": f"{QUANTILE}th percentile of {which}",
                        "features": int(features.shape[1]), "training_images": n, "training_groups": n_groups,
                        "training_distance_median": float(np.median(distances))}
        return self

    def _distance(self, features):
        return _distances(features, self.mean_, self.precision_)

    def distance(self, codes):
        """Each code's distance from the training codes (float64, n)."""
        return self._distance(pooled(codes))

    def flag(self, codes):
        """(distances, unlike the training images: distance above the threshold)."""
        distances = self.distance(codes)
        return distances, distances > self.threshold_

    def arrays(self):
        """What the models folder stores (``input_check.npz``), name -> array."""
        return {"mean": self.mean_, "precision": self.precision_, "threshold": np.float64(self.threshold_)}

    @classmethod
    def from_arrays(cls, arrays, record):
        check = cls()
        check.mean_, check.precision_ = np.asarray(arrays["mean"]), np.asarray(arrays["precision"])
        check.threshold_, check.record_ = float(arrays["threshold"]), record
        return check


CSV_COLUMNS = ["training_distance", "unlike_training"]  # predictions.csv: each image's distance and flag
NO_CHECK_NOTICE = ("notice: this head has no input check (trained before it existed): train it again to learn which "
                   "images are unlike its training films")
MANY = 0.10  # a folder with more than this share of its images flagged gets one warning about the whole folder


def unlike_text(distance, threshold):
    """How a flagged image is described, wherever it is named."""
    return f"unlike the training films (distance {distance:.1f} > threshold {threshold:.1f})"


def flagged_line(name, distance, threshold):
    """The warning naming one flagged image."""
    return (f"warning: {name} is {unlike_text(distance, threshold)}: its scores may not mean what they mean for films "
            f"like those")


def training_images(record):
    """How many training images a check's threshold rests on, from head.json's "input_check" ``record``; None for a
    head trained before the count was kept (its "images" is the same count, where it has one)."""
    count = record.get("training_images", record.get("images"))
    return None if count is None else int(count)


def rule_of(check):
    """(threshold, method, training images) of a fitted ``InputCheck``, as ``summary`` and predictions.csv's writer
    take them; None without a check."""
    return None if check is None else (check.threshold_, check.record_["method"], training_images(check.record_))


def sureness_note(count):
    """What the threshold rests on, for a check fitted on ``count`` training images (None: not known); None where
    the threshold is firm."""
    if count is None:
        return ("the threshold rests on an unknown number of training images (the head predates the count): flags "
                "may be uncertain")
    if count < FIRM:
        return (f"the threshold rests on {count} training images: with fewer than {FIRM}, expect some flags on films "
                f"like the training ones too")
    return None


def summary(names, distances, unlike, threshold, method=METHOD, trained_on=None):
    """(report.json's "input_check", the lines to print after the count or None) for the images ``names``, with a
    threshold resting on ``trained_on`` training images (None: not known). The lines: a warning about a set with many
    flagged, and where anything is flagged by an uncertain threshold, what it rests on."""
    count = int(np.sum(unlike))
    note = sureness_note(trained_on)
    record = {"method": method, "threshold": threshold, "images": len(names),
              "flagged": count, "share": count / len(names) if len(names) else 0.0,
              "files": [name for name, flag in zip(names, unlike) if flag],
              "distance_median": float(np.median(distances)) if len(distances) else None,
              "training_images": trained_on, "uncertain": note is not None, "note": note}
    lines = []
    if len(names) and count / len(names) > MANY:
        lines.append(f"warning: {count} of {counted(len(names), 'image')} ({count / len(names):.0%}) are unlike the "
                     f"films the head was trained on: they may come from another kind of film, hospital or export, "
                     f"and their scores may not transfer")
    if count and note:
        lines.append(f"note: {note}")
    return record, "\n".join(lines) or None


def csv_cells(distance, flagged):
    """predictions.csv's input-check cells of one image (empty without a check: ``distance`` None)."""
    if distance is None:
        return ["", ""]
    return [f"{distance:.4f}", "true" if flagged else "false"]
