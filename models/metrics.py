"""Scores of predicted probabilities, shared by validation (every epoch) and the test report.

Two-class scores are about one positive class (``positive``: its column in the probabilities); an image counts as
positive when its probability reaches the threshold.
"""

import math
import re

import numpy as np

from models.errors import UserError
from models.resampling import Resampling
from models.splits import group_ids

Z_95 = 1.959963984540054  # two-sided 95% normal quantile
NEGATIVE_NAMES = re.compile(r"^(normal|healthy|negative|no[ _-]?findings?)$", re.IGNORECASE)


def positive_class(classes, requested=None):
    """Index of the positive class of a two-class problem: ``requested``, else the one class not named like
    normal / no finding when exactly one is, else the second. None for more than two classes."""
    if requested is not None:
        if requested not in classes:
            raise UserError(f"--positive {requested!r} is not one of the classes {list(classes)}")
        if len(classes) != 2:
            raise UserError(f"--positive applies to two classes; these are {len(classes)}: {list(classes)}")
        return list(classes).index(requested)
    if len(classes) != 2:
        return None
    negatives = [i for i, name in enumerate(classes) if NEGATIVE_NAMES.match(name.strip())]
    return 1 - negatives[0] if len(negatives) == 1 else 1


def decide(probabilities, positive=None, threshold=0.5):
    """Predicted class indices: with a positive class, positive where its probability >= threshold; else argmax."""
    if positive is None:
        return probabilities.argmax(axis=1)
    return np.where(probabilities[:, positive] >= threshold, positive, 1 - positive)


def balanced_accuracy(truth, predicted, n_classes):
    """Mean recall over the classes present in ``truth``."""
    recalls = [np.mean(predicted[truth == c] == c) for c in range(n_classes) if np.any(truth == c)]
    return float(np.mean(recalls))


def roc_auc(truth, probabilities, positive=None):
    """Binary AUC of the positive class, or the macro one-vs-rest AUC; None when a class has no example."""
    from sklearn.metrics import roc_auc_score

    n_classes = probabilities.shape[1]
    if positive is not None:
        hits = truth == positive
        return float(roc_auc_score(hits, probabilities[:, positive])) if 0 < hits.sum() < len(hits) else None
    if set(truth.tolist()) != set(range(n_classes)):
        return None
    return float(roc_auc_score(truth, probabilities, multi_class="ovr", average="macro", labels=list(range(n_classes))))


def balanced_threshold(truth, probabilities, positive):
    """The threshold at which sensitivity equals specificity on these examples (as near as they allow): the balanced
    operating point, placed halfway between the score it admits and the next lower one (so the scores it was chosen
    on are not on the edge). It moves smoothly with the examples, where Youden's J (the arg-max of sensitivity +
    specificity) jumps between distant plateaus on a few dozen images: docs/accuracy.md."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(truth == positive, probabilities[:, positive], drop_intermediate=False)
    best = int(np.argmin(np.abs(tpr - (1 - fpr))))
    if best == 0:  # roc_curve's first threshold is above every score: predict nothing positive
        return 1.0
    lower = thresholds[best + 1] if best + 1 < len(thresholds) else 0.0
    return float((thresholds[best] + lower) / 2)


def weighted_log_loss(truth, probabilities, class_weights):
    """Mean cross-entropy, each example weighted by its class's weight (the training objective)."""
    picked = np.clip(probabilities[np.arange(len(truth)), truth], 1e-12, 1.0)
    weights = np.asarray(class_weights, dtype=np.float64)[truth]
    return float(np.sum(-np.log(picked) * weights) / len(truth))


def wilson_interval(successes, n, z=Z_95):
    """Wilson score interval of a binomial proportion (sensible near 0 and 1, unlike the normal approximation)."""
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the edges, where rounding could miss p
    high = 1.0 if successes == n else min(1.0, centre + half)
    return [low, high]


def bootstrap_auc_interval(truth, probabilities, positive=None, resampling=None):
    """95% percentile interval of the ROC-AUC over the bootstrap resamples of ``resampling`` (``Resampling``: whole
    groups where images share them, else images; by default images, seed 0); None where the AUC itself is
    undefined."""
    if roc_auc(truth, probabilities, positive) is None:
        return None
    resampling = resampling or Resampling(truth)
    return resampling.interval(lambda rows: roc_auc(truth[rows], probabilities[rows], positive))


def _delong_components(truth, scores):
    """AUC and DeLong's structural components (one per positive, one per negative) of ``scores`` for ``truth``."""
    from scipy.stats import rankdata  # "average": ties share their mean rank (midranks)

    positives, negatives = scores[truth], scores[~truth]
    m, n = len(positives), len(negatives)
    ranks_all = rankdata(np.concatenate([positives, negatives]))
    v10 = (ranks_all[:m] - rankdata(positives)) / n  # per positive: share of negatives it outranks
    v01 = 1.0 - (ranks_all[m:] - rankdata(negatives)) / m  # per negative: share of positives that outrank it
    return float(v10.mean()), v10, v01


def _one_vs_rest_scores(truth, probabilities, positive):
    """[(is-positive mask, score)] per binary problem: one with a positive class, else one per class (macro)."""
    if positive is not None:
        return [(truth == positive, probabilities[:, positive])]
    return [(truth == c, probabilities[:, c]) for c in range(probabilities.shape[1])]


def _clustered_variance(v10, v01, hits, ids, theta):
    """Variance of an AUC (or AUC difference) ``theta`` from its structural components where images come in clusters
    (patients): Obuchowski (1997), the components summed per cluster, so a patient's films count once."""
    clusters = ids.max() + 1
    per_positive = np.bincount(ids[hits], weights=v10, minlength=clusters)
    per_negative = np.bincount(ids[~hits], weights=v01, minlength=clusters)
    m_k, n_k = np.bincount(ids[hits], minlength=clusters), np.bincount(ids[~hits], minlength=clusters)
    m, n = len(v10), len(v01)
    a, b = per_positive - m_k * theta, per_negative - n_k * theta
    scale = clusters / (clusters - 1)
    return float(scale * (np.sum(a * a) / m ** 2 + np.sum(b * b) / n ** 2 + 2 * np.sum(a * b) / (m * n)))


def auc_and_variance(truth, probabilities, positive=None, other=None, groups=None):
    """(AUC, its DeLong variance) of the binary or macro one-vs-rest AUC; with ``other`` (probabilities of a second
    model on the same examples), the AUC difference this minus other and the variance of that difference (paired).
    With ``groups`` where images share a group (a patient's films), the clustered variance (Obuchowski 1997), so the
    unit is the patient, as in the bootstrap intervals; without, or where every group has one image, DeLong's.

    DeLong, DeLong & Clarke-Pearson (1988), via midranks (Sun & Xu 2014): no resampling, so it costs one sort. The
    macro average's variance treats the classes' AUCs as independent (a close approximation for a few classes)."""
    ids = group_ids(groups, len(truth))
    clustered = groups is not None and len(np.unique(ids)) < len(ids)
    problems = _one_vs_rest_scores(truth, probabilities, positive)
    others = _one_vs_rest_scores(truth, other, positive) if other is not None else [None] * len(problems)
    values, variances = [], []
    for (hits, scores), second in zip(problems, others):
        auc, v10, v01 = _delong_components(hits, scores)
        if second is not None:
            auc_b, w10, w01 = _delong_components(hits, second[1])
            auc, v10, v01 = auc - auc_b, v10 - w10, v01 - w01
        if clustered:
            variance = _clustered_variance(v10, v01, hits, ids, auc)
        else:
            variance = (v10.var(ddof=1) if len(v10) > 1 else 0.0) / len(v10) + \
                       (v01.var(ddof=1) if len(v01) > 1 else 0.0) / len(v01)
        values.append(auc)
        variances.append(variance)
    return float(np.mean(values)), float(np.sum(variances) / len(variances) ** 2)


def auc_interval(truth, probabilities, positive=None, z=Z_95, groups=None):
    """95% interval of the (macro) ROC-AUC from its DeLong variance (clustered by ``groups`` where they repeat),
    clipped to 0..1; None where it is undefined."""
    if roc_auc(truth, probabilities, positive) is None:
        return None
    auc, variance = auc_and_variance(truth, probabilities, positive, groups=groups)
    half = z * math.sqrt(variance)
    return [max(0.0, auc - half), min(1.0, auc + half)]


def confusion_rates(truth, predicted, n_classes):
    """[accuracy, balanced accuracy, each class's precision, each class's recall] of one set of decisions, as an array
    (NaN where a class has no image or no prediction): what the intervals of ``scores_at`` resample."""
    counts = np.bincount(truth * n_classes + predicted, minlength=n_classes ** 2).reshape(n_classes, n_classes)
    support, said, hits = counts.sum(axis=1), counts.sum(axis=0), np.diag(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision, recall = hits / said, hits / support
    return np.concatenate([[hits.sum() / counts.sum(), recall[support > 0].mean()], precision, recall])


def scores_at(truth, probabilities, classes, positive, threshold, resampling=None):
    """Accuracy, balanced accuracy, per-class scores (each with its interval over ``resampling``'s resamples: by
    default of images) and the confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    resampling = resampling or Resampling(truth)
    labels, n = list(range(len(classes))), len(classes)
    predicted = decide(probabilities, positive, threshold)
    correct = int((predicted == truth).sum())
    # zero_division=0: a class without test examples or predictions gets 0, reported as such, without a warning
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=labels, zero_division=0)
    bounds = resampling.intervals(lambda rows: confusion_rates(truth[rows], predicted[rows], n))
    return predicted, {
        "accuracy": {"value": correct / len(truth), "correct": correct, "ci95": bounds[0],
                     "ci_method": resampling.method()},
        "balanced_accuracy": balanced_accuracy(truth, predicted, n),
        "balanced_accuracy_ci95": bounds[1],
        "per_class": {name: {"precision": float(precision[i]), "precision_ci95": bounds[2 + i],
                             "recall": float(recall[i]), "recall_ci95": bounds[2 + n + i], "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(classes)},
        "confusion_matrix": {"rows": "true class", "columns": "predicted class", "order": list(classes),
                             "counts": confusion_matrix(truth, predicted, labels=labels).tolist()},
    }


def _rates(truth, probabilities, positive, threshold):
    """(false positive rate, true positive rate) of deciding at ``threshold``."""
    said_positive = probabilities[:, positive] >= threshold
    is_positive = truth == positive
    return float(np.mean(said_positive[~is_positive])), float(np.mean(said_positive[is_positive]))


def compute_metrics(truth, probabilities, classes, positive=None, threshold=0.5, threshold_source="0.5", groups=None,
                    prevalence=None, group_unit=None):
    """The numbers of report.json (scores at the operating threshold, and at 0.5 for two classes; how far the
    probabilities are risks; with two classes sensitivity and specificity at the operating point and at fixed rates,
    and PPV / NPV at the test images' prevalence and at ``prevalence``), the ROC curves to draw and the predicted
    classes. Every interval resamples the same unit: whole ``groups`` (``group_unit``: "patients", "reports") where
    images share them, else images; "intervals" says which."""
    from sklearn.metrics import roc_curve

    resampling = Resampling(truth, groups, group_unit)
    predicted, report = scores_at(truth, probabilities, classes, positive, threshold, resampling)
    report = {"n": int(len(truth)), "classes": list(classes), "intervals": resampling.record(), **report}
    curves = []
    auc = roc_auc(truth, probabilities, positive)
    if positive is not None:
        rates = {name: {"value": report["per_class"][classes[c]]["recall"],
                        "ci95": report["per_class"][classes[c]]["recall_ci95"]}
                 for name, c in (("sensitivity", positive), ("specificity", 1 - positive))}
        report["operating_point"] = {"positive_class": classes[positive], "threshold": threshold,
                                     "chosen_by": threshold_source, **rates}
        report["at_0.5"] = scores_at(truth, probabilities, classes, positive, 0.5, resampling)[1]
        if 0 < np.mean(truth == positive) < 1:
            report["probabilities"] = probability_scores(truth, probabilities, positive)
            report["fixed_rates"] = fixed_rate_points(truth, probabilities, positive, resampling)
            sensitivity = report["per_class"][classes[positive]]["recall"]
            specificity = report["per_class"][classes[1 - positive]]["recall"]
            report["predictive_values"] = {
                "at_the_threshold": threshold,
                "test_prevalence": predictive_values(sensitivity, specificity, float(np.mean(truth == positive))),
                "given_prevalence": predictive_values(sensitivity, specificity, prevalence) if prevalence else None}
        if auc is not None:
            fpr, tpr, _ = roc_curve(truth == positive, probabilities[:, positive])
            chosen = [(f"operating threshold {threshold:.3f}", threshold)]
            marks = [(label, _rates(truth, probabilities, positive, t)) for label, t in
                     (chosen if threshold == 0.5 else chosen + [("threshold 0.5", 0.5)])]
            curves.append((f"{classes[positive]} vs {classes[1 - positive]}", fpr, tpr, auc, marks))
        method = f"binary, positive class {classes[positive]!r}"
    else:
        if auc is not None:
            for i, name in enumerate(classes):
                fpr, tpr, _ = roc_curve(truth == i, probabilities[:, i])
                one_vs_rest = np.stack([1 - probabilities[:, i], probabilities[:, i]], axis=1)
                curves.append((f"{name} vs rest", fpr, tpr, roc_auc((truth == i).astype(int), one_vs_rest, 1),
                               []))
        method = "macro average of one-vs-rest AUCs"
        report["probabilities"] = {name: probability_scores((truth == i).astype(int), np.stack(
            [1 - probabilities[:, i], probabilities[:, i]], axis=1), 1) for i, name in enumerate(classes)
            if 0 < np.mean(truth == i) < 1}  # each class against the rest
    if auc is None:
        missing = [classes[i] for i in range(len(classes)) if not np.any(truth == i)]
        report["roc_auc"] = {"value": None, "method": f"undefined: no test images of {missing}"}
    else:
        report["roc_auc"] = {"value": auc, "method": method,
                             "ci95": bootstrap_auc_interval(truth, probabilities, positive, resampling),
                             "ci_method": resampling.method()}
    return report, curves, predicted


CALIBRATION_BINS = 10  # equal-width bins of the predicted probability for the ECE; also the most reliability bins
RELIABILITY_MIN_PER_BIN = 10  # a share observed on fewer images has a 95% interval wider than half the axis
CALIBRATION_MIN_IMAGES = 100  # fewer test images (or fewer than RELIABILITY_MIN_PER_BIN of a class): no curve, a note
HISTOGRAM_BINS = 20  # equal-width bins of the predicted probability for the histogram under the reliability diagram
FIXED_RATES = (0.90, 0.95)  # the specificities and sensitivities a diagnostic report fixes


def logistic_fit(z, targets):
    """(slope, intercept) of the logistic regression of ``targets`` (0..1, soft targets allowed) on ``z``,
    unpenalised, by maximum likelihood."""
    from scipy.optimize import minimize

    z, targets = np.asarray(z, dtype=np.float64), np.asarray(targets, dtype=np.float64)

    def loss(params):
        logits = params[0] * z + params[1]  # log(1 + e^x) without overflow
        return float(np.mean(np.logaddexp(0, logits) - targets * logits))

    return tuple(float(v) for v in minimize(loss, np.array([1.0, 0.0]), method="L-BFGS-B").x)


def logit(p, epsilon=1e-7):
    p = np.clip(np.asarray(p, dtype=np.float64), epsilon, 1 - epsilon)
    return np.log(p) - np.log1p(-p)


def probability_scores(truth, probabilities, positive):
    """How far two-class probabilities of the positive class can be read as risks: the Brier score and its skill
    against always answering the prevalence, calibration-in-the-large (mean p minus the prevalence), the calibration
    slope and intercept (logistic regression of the outcome on logit p: 1 and 0 when calibrated), the expected
    calibration error over CALIBRATION_BINS equal-width bins and those bins; for the reliability diagram, quantile bins
    with their 95% intervals, a histogram of p per true class and whether the images are enough to judge calibration."""
    p = np.asarray(probabilities, dtype=np.float64)[:, positive]
    y = (np.asarray(truth) == positive).astype(np.float64)
    prevalence = float(y.mean())
    brier, reference = float(np.mean((p - y) ** 2)), prevalence * (1 - prevalence)
    slope, intercept = logistic_fit(logit(p), y) if 0 < prevalence < 1 else (None, None)
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, CALIBRATION_BINS - 1)
    bins = [{"from": float(edges[b]), "to": float(edges[b + 1]), "images": int(np.sum(which == b)),
             "mean_predicted": float(p[which == b].mean()) if np.any(which == b) else None,
             "observed": float(y[which == b].mean()) if np.any(which == b) else None} for b in range(CALIBRATION_BINS)]
    ece = sum(row["images"] * abs(row["mean_predicted"] - row["observed"]) for row in bins if row["images"]) / len(p)
    return {"brier": brier, "brier_reference": reference,
            "brier_skill": 1 - brier / reference if reference > 0 else None,
            "calibration_in_the_large": float(p.mean()) - prevalence, "calibration_slope": slope,
            "calibration_intercept": intercept, "ece": float(ece), "prevalence": prevalence, "bins": bins,
            "reliability_bins": reliability_bins(p, y), "histogram": prediction_histogram(p, y),
            **calibration_judgement(y),
            "how": "Brier: mean squared error of p; reference: always answering the prevalence; slope and intercept: "
                   "logistic regression of the outcome on logit p (1 and 0 when calibrated); ECE: mean |mean p - "
                   f"observed share| over {CALIBRATION_BINS} equal-width bins of p, weighted by their images; "
                   "reliability_bins: the images sorted by p and cut into near-equal bins of at least "
                   f"{RELIABILITY_MIN_PER_BIN} (at most {CALIBRATION_BINS}), each observed share with its Wilson 95% "
                   "interval; histogram: images per equal-width bin of p, by true class"}


def reliability_bin_count(n):
    """As many quantile bins as give each at least RELIABILITY_MIN_PER_BIN images, at most CALIBRATION_BINS, at
    least one."""
    return max(1, min(CALIBRATION_BINS, n // RELIABILITY_MIN_PER_BIN))


def reliability_bins(p, y):
    """The images sorted by ``p`` and cut into near-equal bins (``reliability_bin_count``): per bin the range of p,
    its images and positives, the mean p, the observed share of positives and that share's Wilson 95% interval."""
    order = np.argsort(p, kind="stable")
    rows = []
    for members in np.array_split(order, reliability_bin_count(len(p))):
        positives = int(y[members].sum())
        rows.append({"from": float(p[members].min()), "to": float(p[members].max()), "images": len(members),
                     "positives": positives, "mean_predicted": float(p[members].mean()),
                     "observed": positives / len(members), "ci95": wilson_interval(positives, len(members))})
    return rows


def prediction_histogram(p, y):
    """Images per HISTOGRAM_BINS equal-width bins of ``p``, the positives and the others apart."""
    edges = np.linspace(0, 1, HISTOGRAM_BINS + 1)
    count = lambda mask: np.histogram(p[mask], bins=edges)[0].tolist()
    return {"edges": np.round(edges, 6).tolist(), "positives": count(y == 1), "others": count(y == 0)}


def calibration_judgement(y):
    """{"calibration_judgeable", "calibration_note"}: whether these images are enough to read calibration off the
    reliability diagram (CALIBRATION_MIN_IMAGES, and RELIABILITY_MIN_PER_BIN of each class), in a sentence."""
    n, positives = len(y), int(y.sum())
    fewest = min(positives, n - positives)
    if n < CALIBRATION_MIN_IMAGES or fewest < RELIABILITY_MIN_PER_BIN:
        return {"calibration_judgeable": False,
                "calibration_note": f"{n} images ({positives} positive): too few to judge calibration (at least "
                                    f"{CALIBRATION_MIN_IMAGES} needed, {RELIABILITY_MIN_PER_BIN} of each class)"}
    bins = reliability_bin_count(n)
    return {"calibration_judgeable": True,
            "calibration_note": f"{n} images in {bins} bins of at least {n // bins}: calibration can be judged "
                                f"roughly; read each bin with its 95% interval"}


def _rate_at(scores, hits, fixed, of):
    """The best sensitivity with specificity >= ``fixed`` (``of`` 'specificity'), or the best specificity with
    sensitivity >= ``fixed`` ('sensitivity'), deciding positive at score >= some threshold; and that threshold."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(hits, scores, drop_intermediate=False)
    if of == "specificity":
        allowed = np.flatnonzero(1 - fpr >= fixed - 1e-12)
        best = allowed[np.argmax(tpr[allowed])]
        return float(tpr[best]), float(min(thresholds[best], 1.0))
    allowed = np.flatnonzero(tpr >= fixed - 1e-12)
    best = allowed[np.argmax(1 - fpr[allowed])]
    return float(1 - fpr[best]), float(min(thresholds[best], 1.0))


def fixed_rate_points(truth, probabilities, positive, resampling=None):
    """Sensitivity at specificity 0.90 and 0.95 and specificity at sensitivity 0.90 and 0.95 of the test images, each
    with the threshold that gives it and a 95% percentile interval over ``resampling``'s bootstrap resamples (whole
    patients where they repeat; by default images)."""
    scores = np.asarray(probabilities, dtype=np.float64)[:, positive]
    hits = np.asarray(truth) == positive
    if hits.all() or not hits.any():
        return None
    resampling = resampling or Resampling(truth)
    out = {}
    for of, fixed_name in (("specificity", "sensitivity_at_specificity"),
                           ("sensitivity", "specificity_at_sensitivity")):
        out[fixed_name] = {}
        for fixed in FIXED_RATES:
            value, threshold = _rate_at(scores, hits, fixed, of)
            interval = resampling.interval(lambda rows: _rate_at(scores[rows], hits[rows], fixed, of)[0])
            out[fixed_name][f"{fixed:.2f}"] = {"value": value, "threshold": threshold, "ci95": interval}
    out["ci_method"] = resampling.method()
    return out


def predictive_values(sensitivity, specificity, prevalence):
    """PPV and NPV of a test with this sensitivity and specificity where the positive class has this prevalence."""
    true_pos, false_pos = sensitivity * prevalence, (1 - specificity) * (1 - prevalence)
    true_neg, false_neg = specificity * (1 - prevalence), (1 - sensitivity) * prevalence
    return {"prevalence": prevalence,
            "ppv": true_pos / (true_pos + false_pos) if true_pos + false_pos > 0 else None,
            "npv": true_neg / (true_neg + false_neg) if true_neg + false_neg > 0 else None}
