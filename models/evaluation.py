"""Evaluate a trained head on test codes: predictions, metrics, report.json, CSV and plots."""

import csv
import math
import os

import numpy as np

from models import head
from models.codes import CodeStore
from models.errors import UserError
from models.fileio import atomic_path, write_json
from models.images import ImageReadError, load_image
from models.labels import load_labels
from models.training import check_examples

PREDICT_BATCH = 64
GRID_IMAGES = 15
Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes, n, z=Z_95):
    """Wilson score interval of a binomial proportion (sensible near 0 and 1, unlike the normal approximation)."""
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [max(0.0, centre - half), min(1.0, centre + half)]


def resolve_epoch(meta, epoch, models_dir):
    finished = head.finished_epochs(meta)
    if not finished:
        raise UserError(f"{models_dir} holds no finished epoch: train with train_model.py first")
    if epoch in (None, "last"):
        return finished[-1]
    try:
        epoch = int(epoch)
    except ValueError:
        raise UserError(f"--epoch must be a number or 'last', not {epoch!r}") from None
    if epoch not in finished:
        raise UserError(f"no checkpoint for epoch {epoch} in {models_dir}; finished epochs: "
                        f"{finished[0]}..{finished[-1]} (or use --epoch last)")
    return epoch


def predict(net, store, names, context=None):
    """Class probabilities (n, classes) of the codes of ``names``, read batch by batch."""
    import mxnet as mx

    parts = []
    for start in range(0, len(names), PREDICT_BATCH):
        codes = mx.nd.array(store.read(names[start:start + PREDICT_BATCH]), ctx=context or mx.cpu())
        parts.append(mx.nd.softmax(net(codes), axis=1).asnumpy())
    return np.concatenate(parts).astype(np.float64)


def compute_metrics(truth, probabilities, classes):
    """The numbers of report.json from true class indices and predicted probabilities."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score, roc_curve

    labels = list(range(len(classes)))
    predicted = probabilities.argmax(axis=1)
    correct = int((predicted == truth).sum())
    # zero_division=0: a class without test examples or predictions gets 0, reported as such, without a warning
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=labels, zero_division=0)
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(support[i])} for i, name in enumerate(classes)}
    present = set(truth.tolist())
    curves = []
    if len(classes) == 2 and present == {0, 1}:
        auc = roc_auc_score(truth == 1, probabilities[:, 1])
        fpr, tpr, _ = roc_curve(truth == 1, probabilities[:, 1])
        curves.append((f"{classes[1]} vs {classes[0]}", fpr, tpr, auc))
        roc = {"value": float(auc), "method": f"binary, positive class {classes[1]!r}"}
    elif len(classes) > 2 and present == set(labels):
        auc = roc_auc_score(truth, probabilities, multi_class="ovr", average="macro", labels=labels)
        for i, name in enumerate(classes):
            fpr, tpr, _ = roc_curve(truth == i, probabilities[:, i])
            curves.append((f"{name} vs rest", fpr, tpr, roc_auc_score(truth == i, probabilities[:, i])))
        roc = {"value": float(auc), "method": "macro average of one-vs-rest AUCs"}
    else:
        missing = [classes[i] for i in labels if i not in present]
        roc = {"value": None, "method": f"undefined: no test images of {missing}"}
    report = {
        "n": int(len(truth)),
        "classes": list(classes),
        "accuracy": {"value": correct / len(truth), "correct": correct,
                     "ci95": wilson_interval(correct, len(truth)), "ci_method": "Wilson score"},
        "per_class": per_class,
        "confusion_matrix": {"rows": "true class", "columns": "predicted class", "order": list(classes),
                             "counts": confusion_matrix(truth, predicted, labels=labels).tolist()},
        "roc_auc": roc,
    }
    return report, curves


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
                  f"95% CI {100 * low:.1f}-{100 * high:.1f} %, Wilson)"]
    if report["roc_auc"]["value"] is not None:
        lines.append(f"{'ROC-AUC':>{width}}  {report['roc_auc']['value']:.4f} ({report['roc_auc']['method']})")
    return "\n".join(lines)


def write_predictions_csv(path, names, truth, probabilities, classes):
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "true_class", "predicted_class"] + [f"p_{name}" for name in classes])
        for name, true, probs in zip(names, truth, probabilities):
            writer.writerow([name, classes[true], classes[int(np.argmax(probs))]] + [repr(float(p)) for p in probs])


def _grid_choice(truth, count):
    """Up to ``count`` indices spread evenly over the images sorted by true class, so every class shows."""
    by_class = np.argsort(truth, kind="stable")
    return by_class[np.unique(np.linspace(0, len(truth) - 1, min(count, len(truth))).round().astype(int))]


def evaluate(image_dir, codes_dir, labels_path, models_dir, epoch="last", out_dir=None, context=None, log=print):
    """Predict every test image with the chosen epoch's head and write the report files; returns the report."""
    from models.plots import plot_confusion_matrix, plot_predictions, plot_roc

    meta = head.read_meta(models_dir)
    epoch = resolve_epoch(meta, epoch, models_dir)
    classes = meta["classes"]
    labels = load_labels(labels_path)
    unknown = [name for name in labels.classes if name not in classes]
    if unknown:
        raise UserError(f"{labels_path} names classes the model does not know: {unknown}; "
                        f"the head in {models_dir} was trained on {classes}")
    store = CodeStore(codes_dir)
    head.check_codes_match(store.meta, meta, codes_dir)
    if store.meta.get("resize") != meta["backbone"].get("resize"):  # codes still comparable, not made the same way
        log(f"warning: test codes were made with resize {store.meta.get('resize')!r}, "
            f"the training codes with {meta['backbone'].get('resize')!r}")
    names = check_examples(image_dir, store, labels, labels_path, codes_dir)
    truth = np.array([classes.index(labels.labels[name]) for name in names])

    probabilities = predict(head.load_predictor(models_dir, epoch, context), store, names, context)
    report, curves = compute_metrics(truth, probabilities, classes)
    report = dict(n=report.pop("n"), epoch=epoch, models_dir=models_dir, test_imgs=image_dir, **report)

    out_dir = out_dir or os.path.join(models_dir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "report.json"), report)
    write_predictions_csv(os.path.join(out_dir, "predictions.csv"), names, truth, probabilities, classes)
    plot_confusion_matrix(report["confusion_matrix"]["counts"], classes, os.path.join(out_dir, "confusion_matrix.png"))
    if curves:
        plot_roc(curves, os.path.join(out_dir, "roc_curve.png"))
    else:
        log(f"no roc_curve.png: ROC is {report['roc_auc']['method']}")
    shown = _grid_choice(truth, GRID_IMAGES)
    images, resize = [], store.meta.get("resize", "crop")
    for i in shown:
        try:
            images.append(load_image(os.path.join(image_dir, names[i]), resize=resize))
        except ImageReadError:  # it has a code, so it was readable when the codes were made
            images.append(np.zeros((224, 224, 3), np.uint8))
    plot_predictions(images, [classes[truth[i]] for i in shown], probabilities[shown], classes,
                     os.path.join(out_dir, "predictions.png"))
    return report, out_dir
