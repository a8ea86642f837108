"""models.compare: two test reports on their shared images.

The report folders are written with the project's own writers (predictions.csv by ``models.predictions``, report.json
by ``write_json`` with the fields test_model.py gives them), so their format cannot drift from what compare reads."""

import json
import os

import numpy as np
import pytest

from helpers import fail, run_script
from models import compare, metrics
from models.fileio import write_json
from models.labels import save_labels
from models.predictions import predictions_file
from models.resampling import Resampling

CLASSES = ["normal", "nodule"]


def scores(truth, separation, seed):
    """Two-class probabilities whose positive scores sit ``separation`` above the negatives', with noise."""
    rng = np.random.default_rng(seed)
    p = np.clip(0.5 + separation * (truth - 0.5) + rng.normal(0, 0.2, len(truth)), 0.01, 0.99)
    return np.stack([1 - p, p], axis=1)


def write_eval(folder, names, truth, probabilities, classes=CLASSES, threshold=0.5, groups=None, unit=None,
               positive=1):
    """A test report folder as test_model.py writes it: predictions.csv and the report.json fields compare reads."""
    os.makedirs(folder, exist_ok=True)
    positive = positive if len(classes) == 2 else None
    predicted = metrics.decide(probabilities, positive, threshold)
    report = {"n": len(names), "epoch": 3, "models_dir": str(folder), "test_imgs": "test", "classes": list(classes),
              "intervals": Resampling(truth, groups, unit).record()}
    if positive is not None:
        report["operating_point"] = {"positive_class": classes[positive], "threshold": threshold, "chosen_by": "test"}
    write_json(os.path.join(folder, "report.json"), report)
    with predictions_file(os.path.join(folder, "predictions.csv"), classes, None, None, with_truth=True) as rows:
        for i, (name, true, guess, probs) in enumerate(zip(names, truth, predicted, probabilities)):
            rows.add(name, probs, guess, truth=true, group=groups[i] if groups else None)
    return str(folder)


def labelled_set(n=60):
    """File names and true classes of n normal then n nodule images."""
    truth = np.repeat([0, 1], [n, n])
    return [f"img_{i:04d}.png" for i in range(len(truth))], truth


def test_a_report_compared_with_itself_differs_by_nothing(tmp_path):
    names, truth = labelled_set()
    a = write_eval(tmp_path / "a", names, truth, scores(truth, 0.2, 0))
    done = run_script("-m", "models.compare", a, a, timeout=120)
    assert done.returncode == 0, done.stderr
    out = compare.default_out(a, a)
    assert out == os.path.join(a, f"compare-with-{tmp_path.name}-a")  # inside EVAL_A, named after B
    result = json.loads(open(os.path.join(out, "compare.json")).read())
    assert result["shared_images"] == 120 and result["a"]["images"] == result["b"]["images"] == 120
    for key in ("roc_auc", "brier", "decisions"):
        assert result[key]["difference"] == 0 and result[key]["ci95"] == [0, 0] and result[key]["p"] == 1
    assert result["decisions"]["a_right_b_wrong"] == result["decisions"]["a_wrong_b_right"] == 0
    assert result["decisions"]["mcnemar_p"] == 1
    assert "DeLong" in result["roc_auc"]["method"] and result["intervals"]["unit"] == "images"
    assert "ROC-AUC" in done.stdout and "shared: 120 images" in done.stdout and "compare.json in" in done.stdout


def test_a_clearly_better_model_b_gives_a_negative_difference_that_excludes_0(tmp_path):
    names, truth = labelled_set()
    a = write_eval(tmp_path / "a", names, truth, scores(truth, 0.1, 1))
    b = write_eval(tmp_path / "b", names, truth, scores(truth, 0.6, 2))
    done = run_script("-m", "models.compare", a, b, "--out", tmp_path / "out", timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "out" / "compare.json").read_text())
    auc = result["roc_auc"]
    assert auc["difference"] == pytest.approx(auc["a"] - auc["b"]) and auc["difference"] < 0
    assert auc["ci95"][0] < auc["difference"] < auc["ci95"][1] < 0 and auc["p"] < 0.05
    assert result["decisions"]["a_wrong_b_right"] > result["decisions"]["a_right_b_wrong"]
    assert result["decisions"]["p"] == result["decisions"]["mcnemar_p"] < 0.05 and result["decisions"]["ci95"][1] < 0
    assert result["brier"]["difference"] > 0 and result["brier"]["ci95"][0] > 0 and result["brier"]["p"] < 0.05
    # swapped, every difference changes sign and every p stays
    swapped = compare.compare(compare.Evaluation(b, "EVAL_A"), compare.Evaluation(a, "EVAL_B"))
    assert swapped["roc_auc"]["difference"] == pytest.approx(-auc["difference"])
    assert swapped["roc_auc"]["p"] == pytest.approx(auc["p"])
    assert swapped["decisions"]["p"] == pytest.approx(result["decisions"]["p"])


def test_repeated_patients_switch_to_the_patient_bootstrap_and_widen_the_interval(tmp_path):
    names, truth = labelled_set(30)
    k = 4  # every film four times, the copies one patient: as many independent units as the original set
    copies = [f"{name}_{j}" for name in names for j in range(k)]
    groups = [f"p{i:04d}" for i in range(len(names)) for _ in range(k)]
    first, second = scores(truth, 0.2, 3), scores(truth, 0.35, 4)
    copied = np.repeat(truth, k)
    by_patient = compare.compare(*(compare.Evaluation(write_eval(tmp_path / side, copies, copied, np.repeat(p, k, 0),
                                                                 groups=groups, unit="patients"), side)
                                   for side, p in (("a", first), ("b", second))))
    by_image = compare.compare(*(compare.Evaluation(write_eval(tmp_path / f"{side}-ungrouped", copies, copied,
                                                               np.repeat(p, k, 0)), side)
                                 for side, p in (("a", first), ("b", second))))
    assert by_patient["intervals"]["text"] == "patients: 60 groups of 240 images"
    # reports written before predictions.csv had a group column: the test label file gives the same patients
    save_labels(tmp_path / "labels.json", CLASSES, {name: CLASSES[c] for name, c in zip(copies, copied)},
                dict(zip(copies, groups)), "patients")
    by_labels = compare.compare(compare.Evaluation(str(tmp_path / "a-ungrouped"), "EVAL_A"),
                                compare.Evaluation(str(tmp_path / "b-ungrouped"), "EVAL_B"), tmp_path / "labels.json")
    assert by_labels == {**by_patient, "a": by_labels["a"], "b": by_labels["b"]}
    assert "bootstrap" in by_patient["roc_auc"]["method"] and "whole patients" in by_patient["roc_auc"]["method"]
    assert "DeLong" in by_image["roc_auc"]["method"]
    assert by_patient["roc_auc"]["difference"] == pytest.approx(by_image["roc_auc"]["difference"])

    def width(row):
        return row["ci95"][1] - row["ci95"][0]

    for key in ("roc_auc", "brier"):
        assert width(by_image[key]) < 0.7 * width(by_patient[key])
    assert by_patient["roc_auc"]["p"] > by_image["roc_auc"]["p"]
    # McNemar takes the copies as independent: the decisions' p is the patient bootstrap's, and larger
    decisions = by_patient["decisions"]
    assert decisions["mcnemar_p"] == by_image["decisions"]["p"] and "bootstrap" in decisions["method"]
    assert decisions["p"] > decisions["mcnemar_p"]


def test_b_in_another_class_order_compares_the_same(tmp_path):
    names, truth = labelled_set(20)
    first, second = scores(truth, 0.2, 5), scores(truth, 0.3, 6)
    a = compare.Evaluation(write_eval(tmp_path / "a", names, truth, first), "EVAL_A")
    b = compare.Evaluation(write_eval(tmp_path / "b", names, truth, second), "EVAL_B")
    flipped = compare.Evaluation(write_eval(tmp_path / "flipped", names, 1 - truth, second[:, ::-1],
                                            classes=CLASSES[::-1], positive=0), "EVAL_B")  # a head of [nodule, normal]
    assert compare.compare(a, flipped)["roc_auc"] == compare.compare(a, b)["roc_auc"]


def test_no_shared_image_is_one_error_line(tmp_path):
    names, truth = labelled_set(10)
    a = write_eval(tmp_path / "a", names, truth, scores(truth, 0.2, 0))
    b = write_eval(tmp_path / "b", [f"other_{name}" for name in names], truth, scores(truth, 0.2, 0))
    done = run_script("-m", "models.compare", a, b, timeout=120)
    assert done.returncode == 2 and done.stderr.count("error: ") == 1 and "share no image" in done.stderr
    assert not os.path.exists(compare.default_out(a, b))


def test_a_shared_image_with_another_true_class_is_named(tmp_path):
    names, truth = labelled_set(10)
    a = write_eval(tmp_path / "a", names, truth, scores(truth, 0.2, 0))
    changed = truth.copy()
    changed[3] = 1
    b = write_eval(tmp_path / "b", names, changed, scores(truth, 0.2, 0))
    done = run_script("-m", "models.compare", a, b, timeout=120)
    assert done.returncode == 2 and done.stderr.count("error: ") == 1
    assert "1 shared images different true classes ('img_0003.png')" in done.stderr


def test_what_cannot_be_compared_is_one_error_line(tmp_path, capsys):
    names, truth = labelled_set(10)
    a = write_eval(tmp_path / "a", names, truth, scores(truth, 0.2, 0))
    os.makedirs(tmp_path / "empty")
    assert "EVAL_B " in fail(compare.main, [a, tmp_path / "empty"], capsys)
    assert "has no report.json" in fail(compare.main, [a, tmp_path / "empty"], capsys)
    three = write_eval(tmp_path / "three", names, truth, np.full((20, 3), 1 / 3), classes=["a", "b", "c"])
    assert "classes" in fail(compare.main, [a, three], capsys)
    halves = [f"h{i // 2}" for i in range(20)]
    pairs = write_eval(tmp_path / "pairs", names, truth, scores(truth, 0.2, 1), groups=halves, unit="patients")
    other = write_eval(tmp_path / "other", names, truth, scores(truth, 0.2, 2), groups=halves[1:] + ["h99"],
                       unit="patients")
    assert "--labels" in fail(compare.main, [pairs, other, "--out", tmp_path / "o"], capsys)


def test_more_than_two_classes_compare_the_macro_auc_and_the_decisions(tmp_path):
    rng = np.random.default_rng(7)
    truth = np.repeat([0, 1, 2], 20)
    names = [f"img_{i:03d}.png" for i in range(60)]

    def scored(strength):
        logits = strength * np.eye(3)[truth] + rng.normal(0, 1, (60, 3))
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    classes = ["a", "b", "c"]
    a = compare.Evaluation(write_eval(tmp_path / "a", names, truth, scored(0.5), classes=classes), "EVAL_A")
    b = compare.Evaluation(write_eval(tmp_path / "b", names, truth, scored(3.0), classes=classes), "EVAL_B")
    result = compare.compare(a, b)
    assert result["roc_auc"]["what"] == "macro average of one-vs-rest AUCs" and "brier" not in result
    assert result["roc_auc"]["difference"] < 0 and result["roc_auc"]["p"] < 0.05
    assert result["decisions"]["accuracy_b"] > result["decisions"]["accuracy_a"]
    assert "n/a" not in compare.format_table(result)


def test_help_names_every_option():
    done = run_script("-m", "models.compare", "--help", timeout=60)
    assert done.returncode == 0 and all(flag in done.stdout for flag in ("EVAL_A", "EVAL_B", "--out", "--labels"))


def test_a_difference_undefined_on_every_resample_has_no_interval():
    resampling = Resampling(np.array([0, 0, 1, 1]), groups=["a", "a", "b", "b"], unit="patients")
    assert compare.bootstrap_difference(resampling, lambda rows: None) == (None, None)
    interval, p = compare.bootstrap_difference(resampling, lambda rows: 0.1)
    assert interval == pytest.approx([0.1, 0.1]) and p == pytest.approx(2 / (resampling.resamples + 1))
