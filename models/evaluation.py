"""Step 5 on folders: evaluate a trained head on test codes and write report.json, predictions.csv and the plots.

The numbers are ``models.metrics``', the drawings ``models.plots``', the Grad-CAM pass ``models.heatmaps``'."""

import csv
import os
import sys

import numpy as np

from models import head, inputcheck, metrics
from models.codes import CodeStore, check_examples
from models.errors import UserError, named
from models.fileio import atomic_path, check_output_folder, write_json
from models.headfolder import HeadFolder, check_codes_match, decision_rule, recalibration
from models.heatmaps import lung_field_line, lung_field_report, write_test_heatmaps
from models.images import View
from models.labels import load_labels

GRID_IMAGES = 15


def format_table(report):
    """Per-class precision / recall (and F1, support) in classification_report's layout, then the accuracy."""
    width = max(len("accuracy"), *(len(name) for name in report["classes"]))
    lines = [f"{'':>{width}}  precision    recall  f1-score   support", ""]
    for name, row in report["per_class"].items():
        lines.append(f"{name:>{width}}  {row['precision']:9.4f} {row['recall']:9.4f} {row['f1']:9.4f} "
                     f"{row['support']:9d}")
    acc = report["accuracy"]
    low, high = acc["ci95"]
    lines += ["", f"{'accuracy':>{width}}  {100 * acc['value']:.2f} % ({acc['correct']} of {report['n']}; "
                  f"95% CI {100 * low:.1f}-{100 * high:.1f} %, Wilson)",
              f"{'balanced':>{width}}  {100 * report['balanced_accuracy']:.2f} % (mean of the class recalls)"]
    point = report.get("operating_point")
    if point:
        at_half = report["at_0.5"]
        recalls = ", ".join(f"{name} {row['recall']:.4f}" for name, row in at_half["per_class"].items())
        lines.append(f"{'':>{width}}  positive class {point['positive_class']!r}, threshold {point['threshold']:.4f} "
                     f"({point['chosen_by']})")
        lines.append(f"{'at 0.5':>{width}}  accuracy {100 * at_half['accuracy']['value']:.2f} %, balanced "
                     f"{100 * at_half['balanced_accuracy']:.2f} %, recall {recalls}")
    roc = report["roc_auc"]
    if roc["value"] is not None:
        low, high = roc["ci95"]
        lines.append(f"{'ROC-AUC':>{width}}  {roc['value']:.4f} (95% CI {low:.3f}-{high:.3f}, bootstrap; "
                     f"{roc['method']})")
    fixed = report.get("fixed_rates")
    if fixed:
        for key, text in (("sensitivity_at_specificity", "sensitivity at specificity"),
                          ("specificity_at_sensitivity", "specificity at sensitivity")):
            lines.append(f"{'':>{width}}  {text} " + ", ".join(
                f"{rate}: {row['value']:.3f} ({row['ci95'][0]:.3f}-{row['ci95'][1]:.3f})"
                for rate, row in fixed[key].items()))
    values = report.get("predictive_values")
    if values:
        for key in ("test_prevalence", "given_prevalence"):
            row = values[key]
            if row:
                ppv, npv = (f"{v:.3f}" if v is not None else "n/a" for v in (row["ppv"], row["npv"]))
                lines.append(f"{'':>{width}}  at prevalence {row['prevalence']:.3f}"
                             f"{' (the test images)' if key == 'test_prevalence' else ''}: PPV {ppv}, NPV {npv}")
    scores = report.get("probabilities")
    if scores and "brier" in scores:
        slope = "n/a" if scores["calibration_slope"] is None else f"{scores['calibration_slope']:.2f}"
        skill = "n/a" if scores["brier_skill"] is None else f"{scores['brier_skill']:.3f}"
        lines.append(f"{'Brier':>{width}}  {scores['brier']:.4f} (always the prevalence: "
                     f"{scores['brier_reference']:.4f}; skill {skill}); mean p minus prevalence "
                     f"{scores['calibration_in_the_large']:+.3f}, calibration slope {slope}, ECE {scores['ece']:.3f}")
    calibration = report.get("calibration") or {}
    if calibration.get("method") == "none":
        lines.append(f"{'':>{width}}  probabilities not recalibrated: {calibration.get('why')}")
    elif calibration:
        lines.append(f"{'':>{width}}  probabilities recalibrated ({calibration['method']}) on the training images' "
                     f"out-of-fold ones")
    return "\n".join(lines)


def write_predictions_csv(path, names, truth, predicted, probabilities, classes, distances=None, unlike=None):
    """One row per image: its class, the prediction, the class probabilities, and the input check's distance and flag
    (``distances`` None: empty, for a head trained before input checks existed)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "true_class", "predicted_class"] + [f"p_{name}" for name in classes]
                        + inputcheck.CSV_COLUMNS)
        checked = zip(distances, unlike) if distances is not None else [(None, None)] * len(names)
        for name, true, guess, probs, (distance, flag) in zip(names, truth, predicted, probabilities, checked):
            writer.writerow([name, classes[true], classes[guess]] + [repr(float(p)) for p in probs]
                            + inputcheck.csv_cells(distance, flag))


def _grid_choice(truth, count):
    """Up to ``count`` indices spread evenly over the images sorted by true class, so every class shows."""
    by_class = np.argsort(truth, kind="stable")
    return by_class[np.unique(np.linspace(0, len(truth) - 1, min(count, len(truth))).round().astype(int))]


def _check_not_training_data(store, names, meta, codes_dir):
    """UserError for the training codes given as test codes; a warning for test images identical to training ones."""
    train_codes = meta["training"].get("train_codes")
    if not train_codes or not os.path.isdir(train_codes):
        return
    if os.path.samefile(train_codes, codes_dir):
        raise UserError(f"TEST_CODES {codes_dir!r} holds the codes the head was trained on: give the codes of the "
                        f"test images (train.py's TEST_CODES)")
    try:
        trained_on = {stamp[2] for stamp in CodeStore(train_codes).index["stamps"].values() if stamp}
    except UserError:  # moved or remade since: nothing to compare with
        return
    stamps = store.index["stamps"]
    same = [name for name in names if stamps.get(name) and stamps[name][2] in trained_on]
    if same:
        print(f"warning: {len(same)} of {len(names)} test images are byte for byte training images of this head "
              f"({named(same, 5)}): their scores say nothing about new images", file=sys.stderr)


def evaluate(image_dir, codes_dir, labels_path, models_dir, epoch="last", out_dir=None, heatmaps="grid",
             prevalence=None, context=None, log=print):
    """Predict every test image with the chosen epoch's head and write the report files; returns the report.

    ``epoch``: "last", "best" (by validation) or a number. ``heatmaps``: "grid" (heatmaps.npz for every image and
    heatmaps.png for the images of predictions.png), "all" (also one overlay PNG per image in heatmaps/), "none".
    Two classes are decided at the threshold from the inner cross-validation's out-of-fold probabilities, else at
    that epoch's validation threshold, else at 0.5. Raises UserError for
    codes or labels that do not fit the head, and for an epoch whose checkpoint is not kept.
    """
    from models.plots import plot_confusion_matrix, plot_predictions, plot_reliability, plot_roc

    out_dir = out_dir or os.path.join(models_dir, "eval")
    check_output_folder(out_dir, "the report folder", [("TEST_IMGS", image_dir), ("TEST_CODES", codes_dir)])
    folder = HeadFolder(models_dir)
    meta = folder.read_meta()
    epoch, epoch_choice = folder.resolve_epoch(meta, epoch)
    classes = meta["classes"]
    labels = load_labels(labels_path)
    unknown = [name for name in labels.classes if name not in classes]
    if unknown:
        raise UserError(f"{labels_path} names classes the model does not know: {unknown}; "
                        f"the head in {models_dir} was trained on {classes}")
    store = CodeStore(codes_dir)
    check_codes_match(store.meta, meta, codes_dir)
    names = check_examples(image_dir, store, labels, labels_path, codes_dir)
    _check_not_training_data(store, names, meta, codes_dir)
    if store.meta.get("resize") != meta["backbone"].get("resize"):  # codes still comparable, not made the same way
        log(f"warning: test codes were made with resize {store.meta.get('resize')!r}, "
            f"the training codes with {meta['backbone'].get('resize')!r}")
    truth = np.array([classes.index(labels.labels[name]) for name in names])

    predictor = folder.load_predictor(epoch, context)
    probabilities = head.predict_proba(predictor, store.rows_of(names), context)
    calibration = recalibration(meta)
    if calibration is not None:
        probabilities = calibration.apply(probabilities)
    check = folder.input_check(meta)
    distances, unlike = check.flag(store.rows_of(names)) if check else (None, None)
    positive, threshold, threshold_source = decision_rule(meta, epoch)
    groups = [labels.group_of(name) for name in names] if labels.groups else None
    report, curves, predicted = metrics.compute_metrics(truth, probabilities, classes, positive, threshold,
                                                        threshold_source, groups, prevalence)
    report = dict(n=report.pop("n"), epoch=epoch, epoch_choice=epoch_choice, models_dir=models_dir,
                  test_imgs=image_dir, **report)
    if positive is not None and meta.get("operating_point"):  # where the threshold came from, in fields
        point = meta["operating_point"]
        report["operating_point"].update(source=point["source"], images=point["images"], why=point["why"])
    report["calibration"] = meta.get("calibration") or {"method": "none", "why": "trained before recalibration existed"}

    if check is not None:
        report["input_check"], warning = inputcheck.summary(names, distances, unlike, check.threshold_,
                                                            check.record_["method"])
        log(f"input check: {report['input_check']['flagged']} of {len(names)} test images unlike the training films "
            f"(distance above {check.threshold_:.1f})")
        for name, distance, flag in zip(names, distances, unlike):
            if flag:
                log(inputcheck.flagged_line(name, distance, check.threshold_))
        if warning:
            log(warning)
    else:
        report["input_check"] = None
        log(inputcheck.NO_CHECK_NOTICE)
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "report.json"), report)  # again below with the heatmaps' lung_field
    write_predictions_csv(os.path.join(out_dir, "predictions.csv"), names, truth, predicted, probabilities, classes,
                          distances, unlike)
    plot_confusion_matrix(report["confusion_matrix"]["counts"], classes, os.path.join(out_dir, "confusion_matrix.png"))
    if curves:
        plot_roc(curves, os.path.join(out_dir, "roc_curve.png"))
    else:
        log(f"no roc_curve.png: ROC is {report['roc_auc']['method']}")
    if report.get("probabilities") and "bins" in report["probabilities"]:
        plot_reliability(report["probabilities"], report["operating_point"]["positive_class"],
                         os.path.join(out_dir, "calibration.png"))
    shown = _grid_choice(truth, GRID_IMAGES)
    view = View.of(store.meta)
    images = [view.load_or_blank(os.path.join(image_dir, names[i])) for i in shown]
    grid = dict(true_classes=[classes[truth[i]] for i in shown],
                predicted_classes=[classes[predicted[i]] for i in shown], probabilities=probabilities[shown],
                classes=classes)
    plot_predictions(images, path=os.path.join(out_dir, "predictions.png"), **grid)
    if heatmaps != "none" and len(store.shape) == 3:
        maps, shares, outside, boxes = write_test_heatmaps(
            folder.gradient_net(meta, epoch, context), store, image_dir, names, truth, predicted, classes,
            view, out_dir, shown, heatmaps == "all", context)
        report["lung_field"] = lung_field_report(shares, outside, truth, predicted, classes, names, view)
        write_json(os.path.join(out_dir, "report.json"), report)
        log(lung_field_line(report["lung_field"], len(names)))
        plot_predictions(images, path=os.path.join(out_dir, "heatmaps.png"), maps=maps, boxes=boxes,
                         title="where the head looked (Grad-CAM of the predicted class at the cut layer; dashed: "
                               "the lung box)", **grid)
    elif heatmaps != "none":
        log(f"no heatmaps: the codes have shape {store.shape}, not a channels x height x width map")
    return report, out_dir
