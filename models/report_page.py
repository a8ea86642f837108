"""report.html: one page per test result, beside report.json, for a reader who was not there.

It states what was tested and by what (the model, the training and test sets), the flow of images from those found to
those scored, the headline estimates with their intervals, the figures, the input check, the heatmaps and the
limitations this run's evidence shows. Its numbers are report.json's (handed over as written) and predictions.csv's
(read back from the report folder), so the page says nothing the files do not. Layout in
``models/templates/report.html.j2``."""

import csv
import os
from collections import Counter

from models.fileio import read_json
from models.pages import file_uri, write_page

PAGE = "report.html"
AUDIT_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "audit.json")
FEW_IMAGES = 100  # below this many test images every estimate is said to be uncertain
FEW_PER_CLASS = 30  # a class with fewer test images than this is named as thin
WIDE_INTERVAL = 0.10  # a ROC-AUC interval wider than this is called wide
AUDIT_HEAD = "head (--layout both)"  # the audit's row for the default head (bench/audit.py)


def split_flow(labels_path):
    """What the split beside ``labels_path`` (split.json, written by scraper.process) says of the images before
    the test folder: where they came from, those left out and why, how many went to each side; None without one."""
    path = os.path.join(os.path.dirname(os.path.abspath(labels_path)), "split.json")
    if not os.path.isfile(path):
        return None
    split = read_json(path, "split file")
    left_out = dict(split.get("dropped_by_reason") or {})
    if split.get("unlabelled_images"):
        left_out["no label (neither class)"] = split["unlabelled_images"]
    source, images, members = split.get("source") or {}, split.get("images") or {}, split.get("reports") or {}
    # distinct groups per side: a patient with films of both classes counts once
    groups = {side: len(set(members.get(side) or [])) for side in ("train", "test")}
    found = None  # the xvision protocol draws fixed numbers from those usable: how many it passed over is not kept
    if split.get("protocol") != "xvision" and None not in (images.get("train"), images.get("test")):
        found = images["train"] + images["test"] + sum(left_out.values())
    return {"source": source.get("folders") or source.get("datas"), "found": found, "left_out": left_out,
            "training_side": images.get("train"), "test_side": images.get("test"),
            "groups": groups if split.get("group_unit") else None, "group_unit": split.get("group_unit")}


def read_rows(out_dir):
    """predictions.csv of a report folder as dicts (scored rows only)."""
    with open(os.path.join(out_dir, "predictions.csv"), newline="", encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if not row.get("skipped_reason")]


def set_counts(rows, classes):
    """{class: {"images": n, "groups": patients}} of predictions.csv's rows (groups: None where none is named)."""
    counts = {}
    for name in classes:
        mine = [row for row in rows if row["true_class"] == name]
        named_groups = {row["group"] for row in mine if row.get("group")}
        counts[name] = {"images": len(mine), "groups": len(named_groups) if named_groups else None}
    return counts


def training_counts(meta):
    """{class: {"images", "groups"}} of the head's training set, from head.json (older heads: the operating point's
    image counts, without groups), or None."""
    recorded = (meta.get("training") or {}).get("class_counts")
    if recorded:
        return recorded
    images = (meta.get("operating_point") or {}).get("images")
    return {name: {"images": n, "groups": None} for name, n in images.items()} if images else None


def audit_of(source):
    """bench/audit.json's record of ``source`` (a folder), where ``make audit`` has run on it."""
    if not source or not os.path.isfile(AUDIT_FILE):
        return None
    try:
        datasets = read_json(AUDIT_FILE, "audit file").get("datasets") or {}
    except Exception:  # a damaged audit file is no reason to lose the report
        return None
    real = os.path.realpath(source)
    for name, record in datasets.items():
        if os.path.realpath(record.get("data", "")) == real:
            verdicts = record.get("verdicts") or {}
            verdict = verdicts.get(AUDIT_HEAD) or next(iter(verdicts.values()), None)
            return None if verdict is None else dict(name=name, data=record["data"], **verdict)
    return None


def headline(report):
    """[(what, value, 95% interval or None, key)] of the headline estimates; ``key``: where report.json holds the
    value (a dotted path), so a test can hold the page to it."""
    rows = [("ROC-AUC", report["roc_auc"]["value"], report["roc_auc"].get("ci95"), "roc_auc.value")]
    point = report.get("operating_point")
    if point:
        rows += [("sensitivity at the operating point", point["sensitivity"]["value"], point["sensitivity"]["ci95"],
                  "operating_point.sensitivity.value"),
                 ("specificity at the operating point", point["specificity"]["value"], point["specificity"]["ci95"],
                  "operating_point.specificity.value")]
    rows.append(("balanced accuracy", report["balanced_accuracy"], report.get("balanced_accuracy_ci95"),
                 "balanced_accuracy"))
    rows.append(("accuracy", report["accuracy"]["value"], report["accuracy"]["ci95"], "accuracy.value"))
    values = report.get("predictive_values") or {}
    for key, words in (("test_prevalence", "at the test images' prevalence"), ("given_prevalence", "at --prevalence")):
        row = values.get(key)
        if row:
            rows += [(f"PPV {words} ({row['prevalence']:.3f})", row["ppv"], None, f"predictive_values.{key}.ppv"),
                     (f"NPV {words} ({row['prevalence']:.3f})", row["npv"], None, f"predictive_values.{key}.npv")]
    scores = report.get("probabilities") or {}
    if "brier" in scores:
        rows += [("Brier score (lower is better)", scores["brier"], None, "probabilities.brier"),
                 ("Brier skill (1 - Brier / always the prevalence)", scores["brier_skill"], None,
                  "probabilities.brier_skill")]
    return rows


def sentence(text):
    """``text`` (a clause from report.json) as a sentence: capital first, full stop last."""
    return text[:1].upper() + text[1:].rstrip(".") + "."


def limitations(report, test_counts, audit):
    """Sentences on what this run cannot show, from its own evidence."""
    n, unit = report["n"], report["intervals"]
    said = ["Research use only: not a medical device, not validated for clinical decisions."]
    groups = f" of {unit['units']} {unit['unit']}" if unit.get("unit") != "images" else ""
    if n < FEW_IMAGES:
        said.append(f"{n} test images{groups}: every estimate here is uncertain, as its interval shows.")
    absent = [name for name, row in test_counts.items() if not row["images"]]
    if absent:
        said.append(f"No test images of {', '.join(absent)}: nothing here measures the head on that class.")
    thin = [name for name, row in test_counts.items() if 0 < row["images"] < FEW_PER_CLASS]
    if thin:
        said.append("Few test images of " + ", ".join(f"{name} ({test_counts[name]['images']})" for name in thin)
                    + ": their rates rest on a handful of films.")
    if report["roc_auc"]["value"] is None:
        said.append(f"No ROC-AUC: {report['roc_auc']['method']}.")
    interval = report["roc_auc"].get("ci95")
    if interval and interval[1] - interval[0] > WIDE_INTERVAL:
        said.append(f"The ROC-AUC's 95% interval is {interval[1] - interval[0]:.2f} wide ({interval[0]:.3f} to "
                    f"{interval[1]:.3f}): a larger test set would narrow it.")
    if unit.get("unit") == "images":
        said.append("The label file names no patients: intervals resample images, and are too narrow where a "
                    "patient has several films.")
    scores = report.get("probabilities") or {}
    if scores.get("calibration_judgeable") is False:
        said.append(sentence(scores["calibration_note"]) + " Read the probabilities as scores, not risks.")
    elif scores and "brier" not in scores:  # one record per class: report.json holds them
        said.append("Calibration is measured per class (report.json's probabilities), not drawn here.")
    check = report.get("input_check")
    if check is None:
        said.append("The head has no input check (trained before it existed): nothing says which images are unlike "
                    "its training films.")
    else:
        if check["flagged"]:
            said.append(f"{check['flagged']} of {n} test images ({100 * check['share']:.1f} %) are unlike the "
                        f"training films: their scores deserve less trust.")
        if check.get("note"):
            said.append(sentence(check["note"].replace("the threshold", "the input check's threshold", 1)))
    if report.get("training_overlap") and report["training_overlap"]["images"]:
        said.append(f"{report['training_overlap']['images']} test images are images the head was trained on, "
                    f"scored anyway (--allow-overlap): the estimates flatter the head.")
    if report.get("same_split_as_head") is False:
        said.append("The test labels come from another split than the head's: patients may be on both sides.")
    if audit and audit.get("share_surviving_lungs_hidden") is None:
        said.append(f"Lung-field audit (make audit on {audit['name']}): a head trained there found no signal in the "
                    f"films as they are, so there was nothing to audit.")
    elif audit:
        share = audit["share_surviving_lungs_hidden"]
        said.append(f"Lung-field audit (make audit on {audit['name']}): of a head trained on this set there, "
                    f"{100 * share:.0f} % of its ROC-AUC above chance survives with the lung fields hidden"
                    + (f"; {audit['warning']}." if audit.get("warning") else "."))
    else:
        said.append("No lung-field audit has run on this set (make audit DATA=...): nothing here shows whether the "
                    "head reads the lungs or markers, devices and site.")
    if report.get("lung_field"):
        field = report["lung_field"]
        said.append(f"Heatmaps: on average {100 * field['mass_inside']['mean']:.0f} % of a map lies inside the lung "
                    f"box, and {field['peaks_outside']['count']} of {n} maps peak outside it. A Grad-CAM map on a "
                    f"7 x 7 grid is coarse: it shows where the head's evidence lies, not a finding.")
    return said


def model_facts(meta, report):
    """(label, text) pairs describing the head that was tested."""
    backbone, head, training = (meta.get(key) or {} for key in ("backbone", "head", "training"))
    point = report.get("operating_point")
    calibration = report.get("calibration") or {}
    facts = [
        ("backbone", f"{os.path.basename(str(backbone.get('model')))}, cut at {backbone.get('layer')} "
                     f"({backbone.get('precision', 'fp32')}), {backbone.get('input_size')} px input, resize "
                     f"{backbone.get('resize')}, field {backbone.get('field', 'whole')}"),
        ("weights sha256", backbone.get("model_sha256") or "not recorded"),
        ("head", f"layout {head.get('layout', 'n/a')}, {head.get('hidden_units', 'n/a')} hidden units, dropout "
                 f"{head.get('dropout', 'n/a')}; SGD, {training.get('epochs')} epochs, batch "
                 f"{training.get('batch_size')}"
                 + (f", recipe {training['recipe']}" if training.get("recipe") else "")),
        ("epoch", f"{report['epoch']} ({report.get('epoch_choice') or 'last'})"),
        ("probabilities", "recalibrated (" + calibration["method"] + ") on the training images' out-of-fold ones"
         if calibration.get("method", "none") != "none" else f"not recalibrated: {calibration.get('why')}"),
    ]
    if point:
        facts.append(("threshold", f"{point['threshold']:.4f} for {point['positive_class']}: {point['chosen_by']}"))
    return facts


def counts_table(counts, unit):
    """Rows (class, images, groups) and the total."""
    rows = [(name, row["images"], row["groups"]) for name, row in counts.items()]
    groups = [row[2] for row in rows]
    total = ("all", sum(row[1] for row in rows), sum(groups) if all(g is not None for g in groups) else None)
    return {"rows": rows + [total], "unit": unit}


def write_report_page(out_dir, report, meta, title="Test report"):
    """Write ``out_dir``/report.html from ``report`` (report.json's content), the predictions.csv and figures
    beside it and ``meta`` (the head's head.json); returns its path."""
    classes = report["classes"]
    rows = read_rows(out_dir)
    test_counts = set_counts(rows, classes)
    flow = report.get("flow") or {}
    validation = report.get("validation") or {}
    audit = audit_of(validation.get("data") or flow.get("source"))
    unit = report["intervals"].get("unit")
    group_unit = unit if unit != "images" else None
    positive = (report.get("operating_point") or {}).get("positive_class")
    check, scores = report.get("input_check") or {}, report.get("probabilities") or {}
    flagged = [(row["file"], float(row["training_distance"])) for row in rows if row.get("unlike_training") == "true"]
    figures = {name: file_uri(os.path.join(out_dir, f"{name}.png"), photo=name in ("heatmaps", "predictions"))
               for name in ("roc_curve", "calibration", "confusion_matrix", "input_check", "heatmaps", "predictions")}
    training = training_counts(meta)
    errors = Counter((row["true_class"], row["predicted_class"]) for row in rows
                     if row["true_class"] != row["predicted_class"])
    return write_page(
        os.path.join(out_dir, PAGE), "report.html.j2", title=title, report=report, classes=classes,
        positive=positive, model=model_facts(meta, report), headline=headline(report), flow=flow,
        training=counts_table(training, (meta.get("training") or {}).get("group_unit") or group_unit)
        if training else None, test=counts_table(test_counts, group_unit), validation=validation, figures=figures,
        flagged=flagged, errors=sorted(errors.items()), limitations=limitations(report, test_counts, audit),
        check_note=sentence(check["note"]) if check.get("note") else None, provenance=report.get("provenance") or {},
        calibration_note=sentence(scores["calibration_note"]) if scores.get("calibration_note") else None,
        training_folder=(meta.get("training") or {}).get("train_imgs"))
