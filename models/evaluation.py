"""Evaluate a trained head on test codes: predictions, metrics, report.json, CSV and plots."""

import csv
import os
import sys

import numpy as np

from models import head, metrics
from models.codes import CodeStore, check_examples
from models.errors import UserError, named
from models.fileio import atomic_path, check_output_folder, write_json
from models.images import ImageReadError, View
from models.labels import load_labels

GRID_IMAGES = 15
EPOCH_CHOICES = "best, last or an epoch number"


def resolve_epoch(meta, epoch, models_dir):
    """(epoch number, how it was chosen) for --epoch best|last|N; UserError for one without a kept checkpoint."""
    history = meta["history"]
    if not history:
        raise UserError(f"{models_dir} holds no finished epoch: train with train_model.py first")
    kept = [entry["epoch"] for entry in history if entry.get("params", True)]
    if epoch == "best":
        if meta.get("best_epoch") is None:
            raise UserError(f"the head in {models_dir} was trained without a validation hold-out (--val-fraction), so it "
                            f"has no best epoch; use --epoch last or a number ({_kept_text(meta)})")
        return meta["best_epoch"], f"best ({meta['validation']['best_epoch_by']})"
    if epoch in (None, "last"):
        return history[-1]["epoch"], "last"
    try:
        number = int(epoch)
    except ValueError:
        raise UserError(f"--epoch must be {EPOCH_CHOICES}, not {epoch!r}") from None
    if number not in kept:
        finished = number in [entry["epoch"] for entry in history]
        why = "its checkpoint was removed (--keep)" if finished else "no such epoch was trained"
        raise UserError(f"no checkpoint for epoch {number} in {models_dir}: {why}; {_kept_text(meta)}")
    return number, f"epoch {number}"


def _kept_text(meta):
    kept = [entry["epoch"] for entry in meta["history"] if entry.get("params", True)]
    best = f", best {meta['best_epoch']}" if meta.get("best_epoch") else ""
    return f"kept checkpoints: epochs {', '.join(map(str, kept))}{best} (finished: 1..{meta['history'][-1]['epoch']})"


def operating_point(meta, epoch):
    """(positive class index or None, threshold, where the threshold comes from) for the chosen epoch."""
    classes = meta["classes"]
    positive = meta.get("positive_class")
    if len(classes) != 2:
        return None, None, "argmax (more than two classes)"
    positive = classes.index(positive) if positive in classes else 1  # heads from before positive_class: the second
    point = meta.get("operating_point")
    if point:
        counts = ", ".join(f"{count} {name}" for name, count in point["images"].items())
        return positive, point["threshold"], f"{point['source']}, {counts}; {point['why']}"
    entry = next(e for e in meta["history"] if e["epoch"] == epoch)
    if entry.get("threshold") is None:
        return positive, 0.5, "the default: the head was trained without inner cross-validation or validation images"
    return positive, entry["threshold"], f"the balanced point of the validation images at epoch {epoch}"


def scores_at(truth, probabilities, classes, positive, threshold):
    """Accuracy (with its Wilson interval), balanced accuracy, per-class scores and the confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(classes)))
    predicted = metrics.decide(probabilities, positive, threshold)
    correct = int((predicted == truth).sum())
    # zero_division=0: a class without test examples or predictions gets 0, reported as such, without a warning
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=labels, zero_division=0)
    return predicted, {
        "accuracy": {"value": correct / len(truth), "correct": correct,
                     "ci95": metrics.wilson_interval(correct, len(truth)), "ci_method": "Wilson score"},
        "balanced_accuracy": metrics.balanced_accuracy(truth, predicted, len(classes)),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(classes)},
        "confusion_matrix": {"rows": "true class", "columns": "predicted class", "order": list(classes),
                             "counts": confusion_matrix(truth, predicted, labels=labels).tolist()},
    }


def _rates(truth, probabilities, positive, threshold):
    """(false positive rate, true positive rate) of deciding at ``threshold``."""
    said_positive = probabilities[:, positive] >= threshold
    is_positive = truth == positive
    return float(np.mean(said_positive[~is_positive])), float(np.mean(said_positive[is_positive]))


def compute_metrics(truth, probabilities, classes, positive=None, threshold=0.5, threshold_source="0.5"):
    """The numbers of report.json (scores at the operating threshold, and at 0.5 for two classes), the ROC curves
    to draw and the predicted classes."""
    from sklearn.metrics import roc_curve

    predicted, report = scores_at(truth, probabilities, classes, positive, threshold)
    report = {"n": int(len(truth)), "classes": list(classes), **report}
    curves = []
    auc = metrics.roc_auc(truth, probabilities, positive)
    if positive is not None:
        report["operating_point"] = {"positive_class": classes[positive], "threshold": threshold,
                                     "chosen_by": threshold_source}
        report["at_0.5"] = scores_at(truth, probabilities, classes, positive, 0.5)[1]
        if auc is not None:
            fpr, tpr, _ = roc_curve(truth == positive, probabilities[:, positive])
            marks = [(label, _rates(truth, probabilities, positive, t)) for label, t in
                     ((f"threshold {threshold:.3f}", threshold), ("threshold 0.5", 0.5))]
            curves.append((f"{classes[positive]} vs {classes[1 - positive]}", fpr, tpr, auc, marks))
        method = f"binary, positive class {classes[positive]!r}"
    else:
        if auc is not None:
            for i, name in enumerate(classes):
                fpr, tpr, _ = roc_curve(truth == i, probabilities[:, i])
                one_vs_rest = np.stack([1 - probabilities[:, i], probabilities[:, i]], axis=1)
                curves.append((f"{name} vs rest", fpr, tpr, metrics.roc_auc((truth == i).astype(int), one_vs_rest, 1),
                               []))
        method = "macro average of one-vs-rest AUCs"
    if auc is None:
        missing = [classes[i] for i in range(len(classes)) if not np.any(truth == i)]
        report["roc_auc"] = {"value": None, "method": f"undefined: no test images of {missing}"}
    else:
        report["roc_auc"] = {"value": auc, "method": method,
                             "ci95": metrics.bootstrap_auc_interval(truth, probabilities, positive),
                             "ci_method": f"percentile, {metrics.BOOTSTRAP_RESAMPLES} bootstrap resamples drawn "
                                          f"within each class, seed 0"}
    return report, curves, predicted


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
    return "\n".join(lines)


def write_predictions_csv(path, names, truth, predicted, probabilities, classes):
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "true_class", "predicted_class"] + [f"p_{name}" for name in classes])
        for name, true, guess, probs in zip(names, truth, predicted, probabilities):
            writer.writerow([name, classes[true], classes[guess]] + [repr(float(p)) for p in probs])


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
             context=None, log=print):
    """Predict every test image with the chosen epoch's head and write the report files; returns the report.

    ``epoch``: "last", "best" (by validation) or a number. ``heatmaps``: "grid" (heatmaps.npz for every image and
    heatmaps.png for the images of predictions.png), "all" (also one overlay PNG per image in heatmaps/), "none".
    Two classes are decided at the threshold from the inner cross-validation's out-of-fold probabilities, else at
    that epoch's validation threshold, else at 0.5. Raises UserError for
    codes or labels that do not fit the head, and for an epoch whose checkpoint is not kept.
    """
    from models.plots import plot_confusion_matrix, plot_predictions, plot_roc

    out_dir = out_dir or os.path.join(models_dir, "eval")
    check_output_folder(out_dir, "the report folder", [("TEST_IMGS", image_dir), ("TEST_CODES", codes_dir)])
    meta = head.read_meta(models_dir)
    epoch, epoch_choice = resolve_epoch(meta, epoch, models_dir)
    classes = meta["classes"]
    labels = load_labels(labels_path)
    unknown = [name for name in labels.classes if name not in classes]
    if unknown:
        raise UserError(f"{labels_path} names classes the model does not know: {unknown}; "
                        f"the head in {models_dir} was trained on {classes}")
    store = CodeStore(codes_dir)
    head.check_codes_match(store.meta, meta, codes_dir)
    names = check_examples(image_dir, store, labels, labels_path, codes_dir)
    _check_not_training_data(store, names, meta, codes_dir)
    if store.meta.get("resize") != meta["backbone"].get("resize"):  # codes still comparable, not made the same way
        log(f"warning: test codes were made with resize {store.meta.get('resize')!r}, "
            f"the training codes with {meta['backbone'].get('resize')!r}")
    truth = np.array([classes.index(labels.labels[name]) for name in names])

    predictor = head.load_predictor(models_dir, epoch, context)
    probabilities = head.predict_proba(predictor, store.rows_of(names), context)
    positive, threshold, threshold_source = operating_point(meta, epoch)
    report, curves, predicted = compute_metrics(truth, probabilities, classes, positive, threshold, threshold_source)
    report = dict(n=report.pop("n"), epoch=epoch, epoch_choice=epoch_choice, models_dir=models_dir,
                  test_imgs=image_dir, **report)
    if positive is not None and meta.get("operating_point"):  # where the threshold came from, in fields
        point = meta["operating_point"]
        report["operating_point"].update(source=point["source"], images=point["images"], why=point["why"])

    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "report.json"), report)  # again below with the heatmaps' lung_field
    write_predictions_csv(os.path.join(out_dir, "predictions.csv"), names, truth, predicted, probabilities, classes)
    plot_confusion_matrix(report["confusion_matrix"]["counts"], classes, os.path.join(out_dir, "confusion_matrix.png"))
    if curves:
        plot_roc(curves, os.path.join(out_dir, "roc_curve.png"))
    else:
        log(f"no roc_curve.png: ROC is {report['roc_auc']['method']}")
    shown = _grid_choice(truth, GRID_IMAGES)
    view = View.of(store.meta)
    images = [_view(os.path.join(image_dir, names[i]), view) for i in shown]
    grid = dict(true_classes=[classes[truth[i]] for i in shown], predicted_classes=[classes[predicted[i]] for i in shown],
                probabilities=probabilities[shown], classes=classes)
    plot_predictions(images, path=os.path.join(out_dir, "predictions.png"), **grid)
    if heatmaps != "none" and len(store.shape) == 3:
        maps, shares, outside, boxes = _write_heatmaps(
            head.gradient_net(meta, (models_dir, epoch), context), store, image_dir, names, truth, predicted, classes,
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


def lung_field_report(shares, outside, truth, predicted, classes, names, view):
    """report.json's "lung_field": how much of the Grad-CAM mass lies inside the lung box, on average, per true and
    per predicted class, and which images' maps peak outside it."""
    def mean(mask):
        chosen = shares[mask & np.isfinite(shares)]
        return float(chosen.mean()) if len(chosen) else None

    everything = np.ones(len(shares), bool)
    return {"box": list(view.box), "field": view.field,
            "mass_inside": {"mean": mean(everything),
                            "by_true_class": {c: mean(truth == i) for i, c in enumerate(classes)},
                            "by_predicted_class": {c: mean(predicted == i) for i, c in enumerate(classes)}},
            "peaks_outside": {"count": int(outside.sum()), "files": [names[i] for i in np.flatnonzero(outside)]},
            "how": "share of each image's Grad-CAM map (heatmaps.npz) inside the lung box, each cell of the map "
                   "counted by the part of it inside the box; a map peaks outside when its largest cell lies mostly "
                   "outside the box. A box is not a segmentation: read it as where the head looked, roughly"}


def lung_field_line(record, count):
    inside = record["mass_inside"]
    if inside["mean"] is None:
        return "lung field: no heatmap had any mass"
    per_class = ", ".join(f"{c} {v:.0%}" for c, v in inside["by_true_class"].items() if v is not None)
    return (f"lung field: {inside['mean']:.0%} of the heatmap mass lies inside the lung box on average (by true "
            f"class: {per_class}); {record['peaks_outside']['count']} of {count} maps peak outside it")


def _view(path, view):
    """The image as the backbone saw it (224 x 224 RGB)."""
    try:
        return view.load(path)
    except ImageReadError:  # it has a code, so it was readable when the codes were made
        return np.zeros((view.size, view.size, 3), np.uint8)


def _write_heatmaps(net, store, image_dir, names, truth, predicted, classes, view, out_dir, shown, overlays,
                    context):
    """heatmaps.npz (and with ``overlays`` heatmaps/<image>.png) batch by batch; returns the maps of ``shown``, every
    map's share inside the lung box and whether it peaks outside it, and the box of each of ``shown`` (view pixels)."""
    from models.heatmaps import field_shares, heatmap_batch, heatmap_file, overlay_name, save_overlay

    kept = {int(i): None for i in shown}
    shares, outside, boxes = np.full(len(names), np.nan), np.zeros(len(names), bool), [None] * len(names)
    with heatmap_file(os.path.join(out_dir, "heatmaps.npz"), len(names), store.shape[1:], classes) as writer:
        for start in range(0, len(names), head.PREDICT_BATCH):
            batch = np.arange(start, min(start + head.PREDICT_BATCH, len(names)))
            paths = [os.path.join(image_dir, names[i]) for i in batch]
            maps, crops, sizes = heatmap_batch(net, store.read([names[i] for i in batch]), predicted[batch], paths,
                                               view, context)
            writer.add(maps, [names[i] for i in batch], predicted[batch], crops, sizes)
            for i, size in zip(batch, sizes):
                boxes[i] = view.field_box(*size) if size[0] > 0 else None
            shares[batch], outside[batch] = field_shares(maps, [boxes[i] for i in batch], view.size)
            for i, heat, path in zip(batch, maps, paths):
                if i in kept:
                    kept[i] = heat
                if overlays:
                    save_overlay(os.path.join(out_dir, "heatmaps", overlay_name(names[i])), _view(path, view), heat,
                                 f"{names[i]}\ntrue {classes[truth[i]]}, said {classes[predicted[i]]}")
    return [kept[int(i)] for i in shown], shares, outside, [boxes[int(i)] for i in shown]
