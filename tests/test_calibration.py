"""Recalibration (models.calibration): a known miscalibration is undone, as the report's probability scores
(models.metrics) measure it, the ranking and every decision are kept, and more classes get temperature scaling."""

import numpy as np
import pytest

from models import metrics
from models.calibration import Recalibration


def miscalibrated(n, seed, slope=3.0, intercept=1.0):
    """Outcomes drawn from true risks sigmoid(z), and the over-confident, shifted p = sigmoid(slope z + intercept)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=n)
    truth = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    p = 1 / (1 + np.exp(-(slope * z + intercept)))
    return np.stack([1 - p, p], axis=1), truth, 1 / (1 + np.exp(-z))


def test_a_known_miscalibration_is_undone_and_decisions_are_kept():
    proba, truth, risk = miscalibrated(4000, seed=0)
    fitted = Recalibration().fit(proba, truth, positive=1)
    assert fitted.slope_ == pytest.approx(1 / 3, abs=0.03) and fitted.intercept_ == pytest.approx(-1 / 3, abs=0.06)
    recalibrated = fitted.apply(proba)
    np.testing.assert_allclose(recalibrated[:, 1], risk, atol=0.03)  # back to the true risks
    np.testing.assert_allclose(recalibrated.sum(axis=1), 1.0)
    new_proba, new_truth, _ = miscalibrated(4000, seed=1)
    before, after = (metrics.probability_scores(new_truth, p, 1) for p in (new_proba, fitted.apply(new_proba)))
    assert before["brier"] > after["brier"] and abs(after["calibration_in_the_large"]) < 0.02
    assert after["calibration_slope"] == pytest.approx(1.0, abs=0.1) and after["ece"] < 0.03 < before["ece"]
    assert metrics.roc_auc(new_truth, fitted.apply(new_proba), 1) == pytest.approx(metrics.roc_auc(new_truth, new_proba, 1))
    for threshold in (0.2, 0.5, 0.83):
        raw = metrics.decide(new_proba, 1, threshold)
        np.testing.assert_array_equal(metrics.decide(fitted.apply(new_proba), 1, fitted.threshold(threshold)), raw)


def test_perfect_separation_keeps_a_finite_slope_and_chance_ranking_is_refused():
    truth = np.repeat([0, 1], 20)
    p = np.where(truth == 1, 0.9, 0.2)
    fitted = Recalibration().fit(np.stack([1 - p, p], axis=1), truth, positive=1)
    assert 0 < fitted.slope_ < 20 and 0.9 < fitted.apply(np.array([[0.1, 0.9]]))[0, 1] < 1
    reversed_ = np.where(truth == 1, 0.2, 0.9)
    assert Recalibration().fit(np.stack([1 - reversed_, reversed_], axis=1), truth, positive=1) is None


def test_temperature_scaling_for_more_classes():
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=2.0, size=(3000, 3))
    truth = np.array([rng.choice(3, p=np.exp(row) / np.exp(row).sum()) for row in logits])
    sharp = np.exp(2.5 * logits)
    sharp /= sharp.sum(axis=1, keepdims=True)  # temperature 1 / 2.5
    fitted = Recalibration().fit(sharp, truth)
    assert fitted.method_ == "temperature" and fitted.temperature_ == pytest.approx(2.5, rel=0.1)
    assert np.array_equal(fitted.apply(sharp).argmax(axis=1), sharp.argmax(axis=1))
    again = Recalibration.from_record(fitted.record_)
    np.testing.assert_allclose(again.apply(sharp), fitted.apply(sharp))
