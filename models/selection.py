"""The head's choices made by evidence from the training images alone: the input layout by inner cross-validation, and
the two-class operating point from the same out-of-fold probabilities.

Grouped, stratified k-fold (no group on both sides): in every fold one head of both branches (``--layout both``) is
trained on k-1 folds and predicts the held-out fold; its branches are the single layouts, each trained as it would be
alone, so every training image gets one out-of-fold probability per candidate (avg, flat, both) from one fit per
fold. The heads of both layouts averaged win unless one layout beats their pooled out-of-fold ROC-AUC by more than one
standard error of the paired difference (DeLong): averaging two heads of different inputs rarely costs much and often
gains, where one layout's lead on a few hundred images is often noise (docs/accuracy.md has the evidence: the plain
maximum and the old "smaller layout on a tie" rule each lost 0.006-0.022 ROC-AUC on one of the NIH sets). The
threshold is the balanced operating point of the winner's out-of-fold probabilities, where their sensitivity equals
their specificity: it moves smoothly with the images, where Youden's J (an arg-max) jumps between plateaus and, on a
few dozen images of the rarer class, lost balanced accuracy against 0.5 (docs/accuracy.md).
Learning on arrays only; ``models.classifier.HeadClassifier`` runs it, ``models.training`` records the result in
head.json.
"""

import math
import time

import numpy as np

from models import metrics
from models.splits import group_ids, grouped_folds

MIN_THRESHOLD_IMAGES = 10  # fewer out-of-fold images of a class than this: threshold 0.5, not estimated


def inner_folds(targets, groups, folds, seed):
    """(list of held-out position arrays, a note or None): grouped, stratified ``folds``-fold, fewer folds when a class
    has fewer groups than that; no folds (and a note) when a class has fewer than two groups."""
    targets = np.asarray(targets)
    ids = group_ids(groups)
    fewest = min(len(set(ids[targets == c])) for c in set(targets.tolist()))
    k = min(folds, fewest)
    if k < 2:
        return [], f"a class has only {fewest} group(s) of images: no cross-validation possible"
    note = None if k == folds else f"{k} folds instead of {folds}: the rarer class has only {fewest} groups"
    return [test for _, test in grouped_folds(targets, groups, k, seed)], note


def cross_validate(codes, targets, classes, held_out, names, fit):
    """Out-of-fold probabilities of each candidate in ``names`` (smaller first). ``fit(codes, targets)`` trains on one
    fold's training images and returns a function giving {name: probabilities} of other codes; ``held_out``: the
    folds of ``inner_folds``. Returns ({name: {"proba": (n, classes) array}}, seconds all the fits took together: one
    fit per fold serves every candidate)."""
    started, everything = time.time(), np.arange(len(targets))
    proba = {name: np.zeros((len(targets), len(classes))) for name in names}
    for test in held_out:
        train = np.setdiff1d(everything, test)
        for name, fold_proba in fit(codes[train], targets[train])(codes[test]).items():
            proba[name][test] = fold_proba
    seconds = round(time.time() - started, 2)
    return {name: {"proba": proba[name]} for name in names}, seconds


def summarise(results, targets, positive, groups=None):
    """Per candidate: pooled out-of-fold ROC-AUC with its 95% DeLong interval (macro one-vs-rest with more than two
    classes; clustered by ``groups`` where a patient has several images)."""
    return {name: {"roc_auc": metrics.roc_auc(targets, result["proba"], positive),
                   "ci95": metrics.auc_interval(targets, result["proba"], positive, groups=groups)}
            for name, result in results.items()}


def choose(results, targets, positive, groups=None):
    """(winner, why): the last candidate in ``results`` (the heads of the others averaged), unless another beats its
    pooled out-of-fold AUC by more than one standard error of the paired difference (DeLong; clustered by ``groups``
    where a patient has several images, so the unit is the patient): then the best such."""
    names = list(results)
    aucs = {name: metrics.auc_and_variance(targets, results[name]["proba"], positive)[0] for name in names}
    averaged, best = names[-1], max(names, key=lambda name: (aucs[name], names.index(name)))
    others = ", ".join(f"{name} {aucs[name]:.3f}" for name in names if name != best)
    if best == averaged:
        return best, f"{best}: highest out-of-fold ROC-AUC, {aucs[best]:.3f} (against {others})"
    difference, variance = metrics.auc_and_variance(targets, results[best]["proba"], positive,
                                                    other=results[averaged]["proba"], groups=groups)
    if difference <= math.sqrt(variance):
        return averaged, (f"{averaged}: out-of-fold ROC-AUC {aucs[averaged]:.3f}, within one standard error "
                          f"({math.sqrt(variance):.3f}) of {best}'s {aucs[best]:.3f}")
    return best, (f"{best}: highest out-of-fold ROC-AUC, {aucs[best]:.3f}, more than one standard error "
                  f"({math.sqrt(variance):.3f}) above {averaged} (against {others})")


def balanced_point(proba, targets, classes, positive):
    """The two-class threshold from out-of-fold probabilities, and where it came from (a dict for head.json): the
    balanced operating point (sensitivity = specificity) of all of them; 0.5 where the rarer class has fewer than
    MIN_THRESHOLD_IMAGES."""
    counts = {classes[c]: int(np.sum(targets == c)) for c in range(len(classes))}
    point = {"threshold": 0.5, "positive_class": classes[positive], "images": counts,
             "source": "out-of-fold probabilities of the training images (inner cross-validation)"}
    rarest = min(counts.values())
    if rarest < MIN_THRESHOLD_IMAGES:
        point["why"] = (f"0.5: only {rarest} training images of the rarer class, too few to estimate a better "
                        f"threshold (at least {MIN_THRESHOLD_IMAGES})")
        return point
    point["threshold"] = metrics.balanced_threshold(targets, proba, positive)
    at = {value: metrics.balanced_accuracy(targets, metrics.decide(proba, positive, value), len(classes))
          for value in (point["threshold"], 0.5)}
    point.update(out_of_fold_balanced_accuracy=at[point["threshold"]], out_of_fold_balanced_accuracy_at_half=at[0.5],
                 why=f"where sensitivity equals specificity on all {len(targets)} out-of-fold probabilities (balanced "
                     f"accuracy there {at[point['threshold']]:.3f}, at 0.5 {at[0.5]:.3f})")
    return point
