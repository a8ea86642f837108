"""Intervals resample the unit of independence: a patient's films count once.

The check that can fail: copy every image of a set k times and group the copies as one patient. Resampling patients
must then give exactly the intervals of the original set (the same draws, the same statistics), where resampling the
copies as images gives intervals about sqrt(k) times narrower."""

import numpy as np
import pytest

from models import metrics
from models.resampling import Resampling


def scored_set(n, seed):
    rng = np.random.default_rng(seed)
    truth = np.repeat([0, 1], [n, n])
    p = np.clip(0.5 + 0.25 * (truth - 0.5) + rng.normal(0, 0.2, len(truth)), 0.01, 0.99)
    return truth, np.stack([1 - p, p], axis=1)


def copies(truth, proba, k):
    """Each image k times, the copies of image i forming patient i (ids chosen to sort as the originals do)."""
    groups = [f"{i:04d}" for i in range(len(truth)) for _ in range(k)]
    return np.repeat(truth, k), np.repeat(proba, k, axis=0), groups


def width(interval):
    return interval[1] - interval[0]


def test_resampling_patients_of_copies_gives_the_intervals_of_the_originals():
    truth, proba = scored_set(30, 0)
    report = metrics.compute_metrics(truth, proba, ["normal", "nodule"], 1, 0.5,
                                     groups=[f"{i:04d}" for i in range(len(truth))])[0]
    copied, copied_proba, groups = copies(truth, proba, 4)
    by_patient = metrics.compute_metrics(copied, copied_proba, ["normal", "nodule"], 1, 0.5, groups=groups,
                                         group_unit="patients")[0]
    by_image = metrics.compute_metrics(copied, copied_proba, ["normal", "nodule"], 1, 0.5)[0]

    assert report["intervals"]["unit"] == "images"  # one image a group: nothing to keep together
    assert by_patient["intervals"] == {**by_patient["intervals"], "unit": "patients", "units": 60, "images": 240}
    assert by_patient["intervals"]["text"] == "patients: 60 groups of 240 images"
    assert by_image["intervals"]["text"] == "images: no groups known (240 images)"
    for key in ("roc_auc", "accuracy"):
        assert by_patient[key]["ci95"] == pytest.approx(report[key]["ci95"], abs=1e-12)
        assert "whole patients" in by_patient[key]["ci_method"]
        assert width(by_image[key]["ci95"]) < 0.7 * width(by_patient[key]["ci95"])
    for rate in ("sensitivity", "specificity"):
        assert by_patient["operating_point"][rate]["ci95"] == pytest.approx(report["operating_point"][rate]["ci95"])
    assert by_patient["balanced_accuracy_ci95"] == pytest.approx(report["balanced_accuracy_ci95"])
    for name in ("normal", "nodule"):
        for key in ("precision_ci95", "recall_ci95"):
            assert by_patient["per_class"][name][key] == pytest.approx(report["per_class"][name][key])
    fixed, fixed_copied = report["fixed_rates"], by_patient["fixed_rates"]
    assert fixed_copied["sensitivity_at_specificity"]["0.90"]["ci95"] == pytest.approx(
        fixed["sensitivity_at_specificity"]["0.90"]["ci95"])


def test_every_resample_keeps_patients_whole_and_holds_both_classes():
    truth = np.array([0, 0, 0, 1, 1, 1, 1])
    groups = ["a", "a", "b", "c", "c", "c", "d"]
    resampling = Resampling(truth, groups, "patients", resamples=50, seed=3)
    whole = {"a": {0, 1}, "b": {2}, "c": {3, 4, 5}, "d": {6}}
    for sample in resampling.samples():
        assert set(truth[sample]) == {0, 1}
        drawn = set(sample.tolist())
        assert all(members <= drawn or not members & drawn for members in whole.values())


def test_the_clustered_delong_variance_counts_a_patient_once():
    truth, proba = scored_set(40, 1)
    _, alone = metrics.auc_and_variance(truth, proba, 1)
    copied, copied_proba, groups = copies(truth, proba, 3)
    _, as_images = metrics.auc_and_variance(copied, copied_proba, 1)
    _, as_patients = metrics.auc_and_variance(copied, copied_proba, 1, groups=groups)
    assert as_patients == pytest.approx(alone, rel=0.03)  # Obuchowski's K / (K - 1) against DeLong's ddof
    assert as_images < 0.4 * as_patients
    # a model compared with itself differs by nothing, with no variance, whatever the unit
    assert metrics.auc_and_variance(copied, copied_proba, 1, other=copied_proba, groups=groups) == (0.0, 0.0)
