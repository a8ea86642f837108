"""Step 5 on folders: evaluate a trained head on test codes and write report.json, predictions.csv and the plots.

The numbers are ``models.metrics``', the drawings ``models.plots``', the Grad-CAM pass ``models.heatmaps``'."""

import os

import numpy as np

from models import inputcheck, metrics
from models.codes import CODES_FILE, CodeStore, check_examples
from models.errors import UserError, named
from models.fileio import check_output_folder, write_json
from models.headfolder import check_codes_depth, check_codes_match, load_head
from models.heatmaps import lung_field_line, lung_field_report, write_test_heatmaps
from models.images import View
from models.labels import load_labels, split_digest
from models.predictions import predictions_file
from models.provenance import record
from models.report_page import split_flow, write_report_page
from models.weights import sha256_of

GRID_IMAGES = 15


def format_table(report):
    """Per-class precision / recall (and F1, support) in classification_report's layout, then the accuracy."""
    width = max(len("accuracy"), *(len(name) for name in report["classes"]))
    lines = [f"{'':>{width}}  precision    recall  f1-score   support", ""]
    for name, row in report["per_class"].items():
        lines.append(f"{name:>{width}}  {row['precision']:9.4f} {row['recall']:9.4f} {row['f1']:9.4f} "
                     f"{row['support']:9d}")
    acc = report["accuracy"]
    lines += ["", f"{'accuracy':>{width}}  {100 * acc['value']:.2f} % ({acc['correct']} of {report['n']}; "
                  f"95% CI {_percent(acc['ci95'])})",
              f"{'balanced':>{width}}  {100 * report['balanced_accuracy']:.2f} % (mean of the class recalls; "
              f"95% CI {_percent(report['balanced_accuracy_ci95'])})"]
    point = report.get("operating_point")
    if point:
        at_half = report["at_0.5"]
        recalls = ", ".join(f"{name} {row['recall']:.4f}" for name, row in at_half["per_class"].items())
        lines.append(f"{'':>{width}}  positive class {point['positive_class']!r}, threshold {point['threshold']:.4f} "
                     f"({point['chosen_by']})")
        lines.append(f"{'':>{width}}  sensitivity {point['sensitivity']['value']:.3f} "
                     f"({_span(point['sensitivity']['ci95'])}), specificity {point['specificity']['value']:.3f} "
                     f"({_span(point['specificity']['ci95'])})")
        lines.append(f"{'at 0.5':>{width}}  accuracy {100 * at_half['accuracy']['value']:.2f} %, balanced "
                     f"{100 * at_half['balanced_accuracy']:.2f} %, recall {recalls}")
    roc = report["roc_auc"]
    if roc["value"] is not None:
        lines.append(f"{'ROC-AUC':>{width}}  {roc['value']:.4f} (95% CI {_span(roc['ci95'])}; {roc['method']})")
    fixed = report.get("fixed_rates")
    if fixed:
        for key, text in (("sensitivity_at_specificity", "sensitivity at specificity"),
                          ("specificity_at_sensitivity", "specificity at sensitivity")):
            lines.append(f"{'':>{width}}  {text} " + ", ".join(
                f"{rate}: {row['value']:.3f} ({_span(row['ci95'])})"
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
    lines.append(f"{'':>{width}}  every 95% interval resamples {report['intervals']['text']} (bootstrap, within "
                 f"each class)")
    return "\n".join(lines)


def _span(interval):
    return "n/a" if interval is None else f"{interval[0]:.3f}-{interval[1]:.3f}"


def _percent(interval):
    return "n/a" if interval is None else f"{100 * interval[0]:.1f}-{100 * interval[1]:.1f} %"


def display_choice(truth, predicted, positive, count):
    """Indices of up to ``count`` images in the order to show them: the errors first (with a ``positive`` class the
    missed positives, then the false alarms; else every wrong call, by true class), then correct calls spread over
    the classes, so each class with one shows where there is room."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    wrong = truth != predicted
    if positive is None:
        errors = np.flatnonzero(wrong)[np.argsort(truth[wrong], kind="stable")]
    else:
        errors = np.concatenate([np.flatnonzero(wrong & (truth == positive)),
                                 np.flatnonzero(wrong & (truth != positive))])
    errors = errors[:count]
    correct = spread_over_classes(truth, np.flatnonzero(~wrong), count - len(errors))
    return np.concatenate([errors, correct]).astype(int)


def spread_over_classes(truth, candidates, room):
    """Up to ``room`` of ``candidates``, taken from the classes in turn, each class's share spread evenly over its
    candidates; grouped by class."""
    pools = [candidates[truth[candidates] == c] for c in np.unique(truth[candidates])]
    quotas = [0] * len(pools)
    while sum(quotas) < room and any(q < len(pool) for q, pool in zip(quotas, pools)):
        for k, pool in enumerate(pools):
            if quotas[k] < len(pool) and sum(quotas) < room:
                quotas[k] += 1
    picked = [pool[np.linspace(0, len(pool) - 1, q).round().astype(int)] for pool, q in zip(pools, quotas) if q]
    return np.concatenate(picked) if picked else np.array([], dtype=int)


def grid_title(truth, predicted, shown):
    """What predictions.png shows: how many of the errors, then how many correct calls."""
    errors = int(np.sum(truth != predicted))
    wrong = int(np.sum(truth[shown] != predicted[shown]))
    return (f"{wrong} of the {errors} errors (red), then {len(shown) - wrong} of the {len(truth) - errors} correct "
            f"calls (green)")


def training_overlap(store, names, meta, codes_dir, allow_overlap, log):
    """The test images that are byte for byte images the head was trained on (head.json's digests; for heads from
    before them, the training codes folder where it still exists), or None where nothing can be compared. UserError
    for the training codes given as test codes, and for any overlap unless ``allow_overlap`` (then a warning)."""
    train_codes = meta["training"].get("train_codes")
    if train_codes and os.path.isdir(train_codes) and os.path.samefile(train_codes, codes_dir):
        raise UserError(f"TEST_CODES {codes_dir!r} holds the codes the head was trained on: give the codes of the "
                        f"test images (train.py's TEST_CODES)")
    trained_on = meta["training"].get("images_sha256")
    if trained_on is not None:
        digests = set(trained_on.values())
    else:
        try:
            digests = {stamp[2] for stamp in CodeStore(train_codes).index["stamps"].values() if stamp}
        except (UserError, TypeError):  # no folder recorded, or moved or remade since: nothing to compare with
            return None
    stamps = store.index["stamps"]
    same = [name for name in names if stamps.get(name) and stamps[name][2] in digests]
    if same and not allow_overlap:
        raise UserError(f"{len(same)} of {len(names)} test images are images the head was trained on "
                        f"({named(same, 5)}): a score on them says nothing about new images; evaluate a head trained "
                        f"on the current split (make pipeline trains one), or pass --allow-overlap to score them "
                        f"anyway (report.json records it)")
    if same:
        log(f"warning: {len(same)} of {len(names)} test images are images the head was trained on ({named(same, 5)}), "
            f"scored anyway (--allow-overlap): their scores say nothing about new images")
    return same


def split_check(meta, labels_path, log):
    """Whether the test labels come from the split the head was trained on (the split.json beside each label file),
    with a warning where they do not; None where either is unknown."""
    head_split, test_split = meta["training"].get("split_sha256"), split_digest(labels_path)
    if head_split is None or test_split is None:
        return None
    if head_split != test_split:
        log(f"warning: the test labels come from another split than the head's (the split.json beside "
            f"{labels_path} is not the one beside its training labels): the two sides may share patients")
    return head_split == test_split


def evaluate(image_dir, codes_dir, labels_path, models_dir, epoch="last", out_dir=None, heatmaps="grid",
             prevalence=None, context=None, allow_overlap=False, log=print, significant_bits=None):
    """Predict every test image with the chosen epoch's head and write the report files; returns the report.

    ``epoch``: "last", "best" (by validation) or a number. ``heatmaps``: "grid" (heatmaps.npz for every image and
    heatmaps.png for the images of predictions.png), "all" (also one overlay PNG per image in heatmaps/), "none".
    Two classes are decided at the threshold from the inner cross-validation's out-of-fold probabilities, else at
    that epoch's validation threshold, else at 0.5. Raises UserError for
    codes or labels that do not fit the head, for an epoch whose checkpoint is not kept, and for codes not made from
    ``significant_bits`` (where given) significant bits.
    """
    from models.plots import (overlay_caption, plot_confusion_matrix, plot_distances, plot_predictions,
                              plot_reliability, plot_roc)

    out_dir = out_dir or os.path.join(models_dir, "eval")
    check_output_folder(out_dir, "the report folder", [("TEST_IMGS", image_dir), ("TEST_CODES", codes_dir)])
    model = load_head(models_dir, epoch, context)
    meta, epoch, classes = model.meta_, model.epoch_, model.classes_
    labels = load_labels(labels_path)
    unknown = [name for name in labels.classes if name not in classes]
    if unknown:
        raise UserError(f"{labels_path} names classes the model does not know: {unknown}; "
                        f"the head in {models_dir} was trained on {classes}")
    store = CodeStore(codes_dir)
    check_codes_match(store.meta, meta, codes_dir)
    if significant_bits is not None:
        check_codes_depth(store.meta, significant_bits, codes_dir)
    names = check_examples(image_dir, store, labels, labels_path, codes_dir)
    overlap = training_overlap(store, names, meta, codes_dir, allow_overlap, log)
    same_split = split_check(meta, labels_path, log)
    if store.meta.get("resize") != meta["backbone"].get("resize"):  # codes still comparable, not made the same way
        log(f"warning: test codes were made with resize {store.meta.get('resize')!r}, "
            f"the training codes with {meta['backbone'].get('resize')!r}")
    truth = np.array([classes.index(labels.labels[name]) for name in names])

    codes = store.rows_of(names)
    probabilities = model.predict_proba(codes)
    check = model.input_check_
    distances, unlike = check.flag(codes) if check else (None, None)
    positive = model.positive_
    groups = [labels.group_of(name) for name in names] if labels.groups else None
    report, curves, predicted = metrics.compute_metrics(truth, probabilities, classes, positive, model.threshold_,
                                                        model.threshold_words_, groups, prevalence, labels.group_unit)
    report = dict(n=report.pop("n"), epoch=epoch, epoch_choice=model.epoch_choice_, models_dir=models_dir,
                  test_imgs=image_dir, **report,
                  training_overlap=None if overlap is None else {"images": len(overlap), "files": overlap,
                                                                 "allowed": bool(allow_overlap)},
                  same_split_as_head=same_split,
                  provenance=record({"test_codes": sha256_of(os.path.join(codes_dir, CODES_FILE)),
                                     "test_labels": sha256_of(labels_path), "backbone": meta["backbone"].get(
                                         "model_sha256"), "head_params": sha256_of(model.params_path_)}))
    if model.threshold_source_ == "operating_point":  # where the threshold came from, in fields
        point = meta["operating_point"]
        report["operating_point"].update(source=point["source"], images=point["images"], why=point["why"])
    report["calibration"] = meta.get("calibration") or {"method": "none", "why": "trained before recalibration existed"}
    report["flow"] = dict(split_flow(labels_path) or {}, scored=len(names),
                          flagged=None if check is None else int(np.sum(unlike)))

    check_rule = inputcheck.rule_of(check)
    if check is not None:
        report["input_check"], warning = inputcheck.summary(names, distances, unlike, *check_rule)
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
    with predictions_file(os.path.join(out_dir, "predictions.csv"), classes, check_rule, None, with_truth=True) as rows:
        checked = zip(distances, unlike) if check else [(None, None)] * len(names)
        for i, (name, true, guess, probs, (distance, flag)) in enumerate(zip(names, truth, predicted, probabilities,
                                                                            checked)):
            rows.add(name, probs, guess, distance, flag, truth=true, group=groups[i] if groups else None)
    plot_confusion_matrix(report["confusion_matrix"]["counts"], classes, os.path.join(out_dir, "confusion_matrix.png"))
    if curves:
        plot_roc(curves, os.path.join(out_dir, "roc_curve.png"))
    else:
        log(f"no roc_curve.png: ROC is {report['roc_auc']['method']}")
    if check is not None:
        plot_distances(distances, unlike, check.threshold_, os.path.join(out_dir, "input_check.png"))
    if report.get("probabilities") and "bins" in report["probabilities"]:
        plot_reliability(report["probabilities"], classes[positive], os.path.join(out_dir, "calibration.png"),
                         classes[1 - positive])
    shown = display_choice(truth, predicted, positive, GRID_IMAGES)
    view = View.of(store.meta)
    images = [view.load_or_blank(os.path.join(image_dir, names[i])) for i in shown]
    flags = unlike if check else np.zeros(len(names), bool)
    grid = dict(true_classes=[classes[truth[i]] for i in shown],
                predicted_classes=[classes[predicted[i]] for i in shown], probabilities=probabilities[shown],
                classes=classes, flags=[bool(flags[i]) for i in shown])
    plot_predictions(images, path=os.path.join(out_dir, "predictions.png"), title=grid_title(truth, predicted, shown),
                     **grid)
    if heatmaps != "none" and len(store.shape) == 3:
        captions = [f"{name}\n{overlay_caption(classes, probs, guess, positive, flag, true)}"
                    for name, probs, guess, flag, true in zip(names, probabilities, predicted, flags, truth)]
        maps, shares, outside, boxes = write_test_heatmaps(
            model.gradient_net(), store, image_dir, names, captions, predicted, classes,
            view, out_dir, shown, heatmaps == "all", context)
        report["lung_field"] = lung_field_report(shares, outside, truth, predicted, classes, names, view)
        write_json(os.path.join(out_dir, "report.json"), report)
        log(lung_field_line(report["lung_field"], len(names)))
        plot_predictions(images, path=os.path.join(out_dir, "heatmaps.png"), maps=maps, boxes=boxes,
                         title="where the head looked (Grad-CAM of the predicted class at the cut layer; dashed: "
                               "the lung box)", **grid)
    elif heatmaps != "none":
        log(f"no heatmaps: the codes have shape {store.shape}, not a channels x height x width map")
    write_report_page(out_dir, report, meta)
    return report, out_dir
