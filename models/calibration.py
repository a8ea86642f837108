"""Probabilities that can be read as risks: a recalibration of the head's class probabilities, fitted with the head on
the out-of-fold probabilities its inner cross-validation gives every training image (``HeadClassifier.calibration_``).

The class-balanced loss that makes the ranking and the balanced operating point good on imbalanced sets shifts every
probability towards the rarer class, and a head trained for 20 epochs on a few hundred images is often over-confident:
the out-of-fold probabilities show by how much. Two classes: logistic recalibration of the log-odds,
p' = sigmoid(slope * logit(p) + intercept), with Platt's targets ((n+ + 1) / (n+ + 2) and 1 / (n- + 2) instead of 1
and 0, so that a set the head separates perfectly does not make the slope infinite). More classes: temperature
scaling, softmax(log(p) / T). Both are monotone, so the ranking, the ROC-AUC and every decision at the recalibrated
threshold stay what they were.
"""

import numpy as np

from models.metrics import logistic_fit, logit

METHODS = ("auto", "none")  # auto: logistic recalibration for two classes, temperature scaling for more
EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1 - EPSILON] before taking logs


def _sigmoid(z):
    return 0.5 * (1 + np.tanh(0.5 * z))  # no overflow warning for large |z|


class Recalibration:
    """Fitted attributes: ``method_`` ("logistic" or "temperature"), ``slope_`` / ``intercept_`` (logistic) or
    ``temperature_``, ``positive_``, and ``record_`` (head.json's "calibration")."""

    def fit(self, proba, targets, positive=None):
        """Fit on out-of-fold class probabilities (n, classes) and the true class indices; ``positive``: the
        positive class of a two-class problem (None: temperature scaling). Returns self, or None where the
        probabilities rank the classes no better than chance (a recalibration would have to reverse them)."""
        from scipy.optimize import minimize_scalar

        proba, targets = np.asarray(proba, dtype=np.float64), np.asarray(targets, dtype=int)
        self.positive_ = positive
        if positive is not None:
            hits = targets == positive
            n_pos, n_neg = int(hits.sum()), int((~hits).sum())
            soft = np.where(hits, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
            slope, intercept = logistic_fit(logit(proba[:, positive], EPSILON), soft)
            if not slope > 0:
                return None
            self.method_, self.slope_, self.intercept_ = "logistic", float(slope), float(intercept)
            how = {"slope": self.slope_, "intercept": self.intercept_,
                   "formula": "p' = sigmoid(slope * logit(p) + intercept), of the positive class",
                   "targets": "Platt's: (n+ + 1) / (n+ + 2) for the positive images, 1 / (n- + 2) for the others"}
        else:
            logs = np.log(np.clip(proba, EPSILON, 1))

            def loss(log_t):
                scaled = logs / np.exp(log_t)
                scaled -= scaled.max(axis=1, keepdims=True)
                return -np.mean(scaled[np.arange(len(targets)), targets] - np.log(np.exp(scaled).sum(axis=1)))

            self.method_, self.temperature_ = "temperature", float(np.exp(minimize_scalar(loss, bounds=(-5, 5),
                                                                                          method="bounded").x))
            how = {"temperature": self.temperature_, "formula": "p' = softmax(log(p) / temperature)"}
        self.record_ = dict(method=self.method_, **how, images=len(targets),
                            fitted_on="out-of-fold probabilities of the training images (inner cross-validation)")
        return self

    def apply(self, proba):
        """Recalibrated class probabilities (n, classes), float64."""
        proba = np.asarray(proba, dtype=np.float64)
        if self.method_ == "logistic":
            p = _sigmoid(self.slope_ * logit(proba[:, self.positive_], EPSILON) + self.intercept_)
            out = np.empty_like(proba)
            out[:, self.positive_], out[:, 1 - self.positive_] = p, 1 - p
            return out
        scaled = np.log(np.clip(proba, EPSILON, 1)) / self.temperature_
        scaled = np.exp(scaled - scaled.max(axis=1, keepdims=True))
        return scaled / scaled.sum(axis=1, keepdims=True)

    def threshold(self, threshold):
        """A two-class threshold on the head's probabilities, as the same decision on recalibrated ones."""
        return float(_sigmoid(self.slope_ * logit(threshold, EPSILON) + self.intercept_))

    @classmethod
    def from_record(cls, record, positive=None):
        """The recalibration head.json's "calibration" describes (None for none)."""
        if not record or record.get("method") not in ("logistic", "temperature"):
            return None
        fitted = cls()
        fitted.method_, fitted.positive_, fitted.record_ = record["method"], positive, record
        if fitted.method_ == "logistic":
            fitted.slope_, fitted.intercept_ = float(record["slope"]), float(record["intercept"])
        else:
            fitted.temperature_ = float(record["temperature"])
        return fitted
