"""The report's arithmetic (models/metrics.py), by hand: which class is positive, the balanced threshold, rates at a
fixed specificity or sensitivity and predictive values, and DeLong's AUC variance against the bootstrap."""

import numpy as np
import pytest

from models import metrics
from models.resampling import Resampling


def test_the_positive_class_is_the_one_not_named_like_normal():
    assert metrics.positive_class(["normal", "nodule"]) == 1 and metrics.positive_class(["nodule", "normal"]) == 0
    assert metrics.positive_class(["No Finding", "effusion"]) == 1 and metrics.positive_class(["a", "b"]) == 1
    assert metrics.positive_class(["normal", "healthy"]) == 1 and metrics.positive_class(["a", "b", "c"]) is None


def test_the_balanced_threshold_lies_halfway_between_the_lowest_positive_and_the_highest_negative():
    truth, scores = np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.2, 0.6, 0.7, 0.9])
    threshold = metrics.balanced_threshold(truth, np.stack([1 - scores, scores], axis=1), 1)
    assert threshold == pytest.approx(0.65)


def test_rates_at_fixed_specificity_and_predictive_values_by_hand():
    # 10 negatives scored 0.0, 0.1, ..., 0.9; 10 positives scored 0.45, 0.5, ..., 0.85 and 0.95
    negatives = np.arange(10) / 10
    positives = np.array([0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.95])
    scores = np.concatenate([negatives, positives])
    truth = np.repeat([0, 1], 10)
    proba = np.stack([1 - scores, scores], axis=1)
    rates = metrics.fixed_rate_points(truth, proba, 1, Resampling(truth, resamples=200))
    # specificity >= 0.90: one negative (0.9) may be called positive: threshold 0.85, positives 0.85 and 0.95
    assert rates["sensitivity_at_specificity"]["0.90"]["value"] == pytest.approx(0.2)
    assert rates["sensitivity_at_specificity"]["0.95"]["value"] == pytest.approx(0.1)  # no negative: only 0.95
    # sensitivity >= 0.90: 9 of 10 positives, threshold 0.5: the negatives 0.5..0.9 called positive: specificity 0.5;
    # >= 0.95: all 10, threshold 0.45: the same five negatives
    assert rates["specificity_at_sensitivity"]["0.90"]["value"] == pytest.approx(0.5)
    assert rates["specificity_at_sensitivity"]["0.95"]["value"] == pytest.approx(0.5)
    assert rates["specificity_at_sensitivity"]["0.95"]["threshold"] == pytest.approx(0.45)
    for row in rates["sensitivity_at_specificity"].values():
        assert 0 <= row["ci95"][0] <= row["value"] <= row["ci95"][1] <= 1
    groups = [f"p{i // 2}" for i in range(20)]  # patients of two images: resampled whole
    by_patient = Resampling(truth, groups, "patients", resamples=50)
    assert "whole patients" in metrics.fixed_rate_points(truth, proba, 1, by_patient)["ci_method"]
    values = metrics.predictive_values(0.8, 0.9, 0.1)
    assert values["ppv"] == pytest.approx(0.08 / (0.08 + 0.09)) and values["npv"] == pytest.approx(0.81 / 0.83)


def test_delong_matches_sklearn_and_the_bootstrap():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, 150)
    scores = np.round(truth * 0.7 + rng.normal(size=150), 1)  # ties too
    proba = np.stack([1 - scores, scores], axis=1)
    auc, variance = metrics.auc_and_variance(truth, proba, 1)
    assert auc == pytest.approx(metrics.roc_auc(truth, proba, 1), abs=1e-12)
    low, high = metrics.auc_interval(truth, proba, 1)
    boot_low, boot_high = metrics.bootstrap_auc_interval(truth, proba, 1)
    assert abs(low - boot_low) < 0.02 and abs(high - boot_high) < 0.02
    difference, diff_variance = metrics.auc_and_variance(truth, proba, 1, other=proba)
    assert difference == 0 and diff_variance == 0
    three = rng.dirichlet([1, 1, 1], 120)
    labels = rng.integers(0, 3, 120)
    three[np.arange(120), labels] += 0.5
    three /= three.sum(axis=1, keepdims=True)
    assert metrics.auc_and_variance(labels, three)[0] == pytest.approx(metrics.roc_auc(labels, three), abs=1e-12)



def scored_images(count, seed=0):
    """``count`` images with p uniform and outcomes drawn at p (calibrated), as (truth, two-column probabilities)."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=count)
    truth = (rng.uniform(size=count) < p).astype(int)
    return truth, np.stack([1 - p, p], axis=1)


@pytest.mark.parametrize("count", [25, 99, 100, 137, 1000])
def test_reliability_bins_hold_enough_images_each_and_their_intervals_hold_the_share(count):
    scores = metrics.probability_scores(*scored_images(count), 1)
    rows = scores["reliability_bins"]
    assert len(rows) == max(1, min(metrics.CALIBRATION_BINS, count // metrics.RELIABILITY_MIN_PER_BIN))
    assert sum(row["images"] for row in rows) == count
    assert all(row["images"] >= metrics.RELIABILITY_MIN_PER_BIN for row in rows)
    assert all(row["ci95"][0] <= row["observed"] <= row["ci95"][1] for row in rows)
    assert all(row["from"] <= row["mean_predicted"] <= row["to"] for row in rows)
    assert all(a["to"] <= b["from"] for a, b in zip(rows, rows[1:]))  # sorted by p, no overlap
    histogram = scores["histogram"]
    assert sum(histogram["positives"]) + sum(histogram["others"]) == count
    assert len(scores["bins"]) == metrics.CALIBRATION_BINS  # the equal-width ones of the ECE stay


def test_25_images_are_too_few_to_judge_calibration_and_the_note_says_so():
    scores = metrics.probability_scores(*scored_images(25), 1)
    assert scores["calibration_judgeable"] is False
    assert scores["calibration_note"].startswith("25 images") and "too few" in scores["calibration_note"]
    assert metrics.probability_scores(*scored_images(400), 1)["calibration_judgeable"] is True


def test_many_images_of_one_class_only_are_too_few_to_judge_calibration():
    truth, probabilities = scored_images(300)
    truth[:] = 0
    truth[:5] = 1
    assert metrics.probability_scores(truth, probabilities, 1)["calibration_judgeable"] is False


def test_the_roc_marks_the_0_5_threshold_only_where_the_operating_one_differs():
    truth, probabilities = scored_images(40)
    classes = ["normal", "nodule"]
    for threshold, marks in ((0.5, 1), (0.43, 2)):
        curves = metrics.compute_metrics(truth, probabilities, classes, 1, threshold)[1]
        assert len(curves[0][4]) == marks and curves[0][4][0][0] == f"operating threshold {threshold:.3f}"
