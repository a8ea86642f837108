"""What the report's figures show: which images the prediction grid picks (errors first), how overlays are labelled,
and that the calibration and ROC plots are written for a set too small to judge and for a large one."""

import numpy as np
import pytest

from models import metrics
from models.evaluation import display_choice
from models.plots import overlay_caption, plot_predictions, plot_reliability, plot_roc, texts


def test_display_choice_shows_missed_positives_then_false_alarms_then_correct_calls_of_each_class():
    truth = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 1])
    predicted = np.array([1, 0, 0, 0, 0, 1, 1, 1, 1, 0])  # false alarms 0 and 8, missed positives 4 and 9
    shown = display_choice(truth, predicted, positive=1, count=6)
    assert shown[:4].tolist() == [4, 9, 0, 8]
    assert len(shown) == 6 and len(set(shown.tolist())) == 6
    assert set(truth[shown[4:]]) == {0, 1} and np.all(truth[shown[4:]] == predicted[shown[4:]])


def test_display_choice_respects_the_count_even_with_more_errors_than_room():
    truth = np.array([1, 1, 1, 0, 0, 0])
    predicted = 1 - truth
    assert display_choice(truth, predicted, 1, 4).tolist() == [0, 1, 2, 3]
    assert len(display_choice(truth, truth, 1, 100)) == 6  # fewer images than room: all of them


def test_display_choice_for_several_classes_puts_wrong_calls_first_and_every_class_among_the_correct():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 4, size=60)
    predicted = truth.copy()
    predicted[[3, 17, 40]] = (truth[[3, 17, 40]] + 1) % 4
    shown = display_choice(truth, predicted, None, 15)
    assert sorted(shown[:3].tolist()) == [3, 17, 40] and len(shown) == 15
    assert set(truth[shown[3:]]) == {0, 1, 2, 3}


def test_overlay_captions_name_the_class_the_probability_and_the_flag():
    classes, probs = ["normal", "pneumonia"], np.array([0.3, 0.7])
    assert overlay_caption(classes, probs, 1, 1, False, 0) == "true normal, said pneumonia, p(pneumonia) 0.70"
    assert overlay_caption(classes, probs, 0, 1, True) == "said normal, p(pneumonia) 0.70\nunlike training"
    assert overlay_caption(["a", "b", "c"], np.array([0.2, 0.5, 0.3]), 1) == "said b, p(b) 0.50"


def scored_images(count):
    rng = np.random.default_rng(0)
    p = rng.uniform(size=count)
    return (rng.uniform(size=count) < p).astype(int), np.stack([1 - p, p], axis=1)


@pytest.mark.parametrize("count", [25, 400])
def test_the_calibration_plot_is_written_for_few_and_for_many_images(tmp_path, count):
    scores = metrics.probability_scores(*scored_images(count), 1)
    shown = " ".join(texts(plot_reliability(scores, "pneumonia", tmp_path / "calibration.png", "normal")))
    shown = shown.replace("\n", " ")  # the note is wrapped
    assert (tmp_path / "calibration.png").stat().st_size > 0
    assert ("too few to judge calibration" in shown) == (count < 100)
    assert f"{len(scores['reliability_bins'])} bins of" in shown and "true normal" in shown


def test_the_roc_plot_is_written_with_its_operating_points(tmp_path):
    truth, probabilities = scored_images(25)
    curves = metrics.compute_metrics(truth, probabilities, ["normal", "pneumonia"], 1, 0.48)[1]
    shown = texts(plot_roc(curves, tmp_path / "roc_curve.png"))
    assert (tmp_path / "roc_curve.png").stat().st_size > 0
    marks = [text for text in shown if "FPR" in text]
    assert len(marks) == 2 and marks[0].startswith("operating threshold 0.48")
    same = np.allclose(*(point for _, point in curves[0][4]))
    assert ("same point as" in marks[1]) == same


def test_the_prediction_grid_is_written_with_a_flagged_image(tmp_path):
    images = [np.zeros((32, 32, 3), np.uint8)] * 2
    plot_predictions(images, ["normal", "pneumonia"], ["pneumonia", "pneumonia"], np.array([[0.4, 0.6], [0.2, 0.8]]),
                     ["normal", "pneumonia"], tmp_path / "predictions.png", columns=2, flags=[True, False])
    assert (tmp_path / "predictions.png").stat().st_size > 0


def test_coinciding_operating_points_are_told_apart_in_the_roc_legend(tmp_path):
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])  # nothing between 0.45 and 0.5: both thresholds give one point
    curves = metrics.compute_metrics(np.array([0, 0, 1, 0, 1, 1]), np.stack([1 - p, p], axis=1), ["normal", "nodule"],
                                     1, 0.45)[1]
    marks = [text for text in texts(plot_roc(curves, tmp_path / "roc.png")) if "FPR" in text]
    assert marks[0].startswith("operating threshold 0.45") and marks[1].endswith("(same point as 0.450)")
