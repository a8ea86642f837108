"""Where the evidence lies: the lung-field audit (`make audit DATA=folder-of-class-folders`).

    .venv/bin/python -m bench.audit DATA [DATA ...] [--group-pattern REGEX] [--lung-box L,T,R,B] [--seeds 3]

Encodes every image of DATA three ways: as it is, with the lung field hidden (the box filled with the image's mean),
and with only the lung field kept (the rest filled so); codes cached in bench/.cache/<name>[-<field>]/, resumable.
Then, for each of --seeds fold seeds, a grouped, stratified k-fold cross-validation (no group in two folds) of the
default head (--layout both: the layout train_model.py's inner cross-validation chose in 43 of the 45 training folds
of `make accuracy` on 2026-12-02; the audit compares fields, not layouts, so it skips that choice) and of the standardised,
class-balanced logistic probe on averaged codes, on each encoding. Prints and writes (--out, --png) each model's
pooled out-of-fold ROC-AUC per encoding with its 95% interval, and the share of its above-chance AUC that survives
with the lungs hidden, (AUC_hidden - 0.5) / (AUC_as_is - 0.5), with a warning above 0.5. The JSON and the chart keep
the data sets of earlier runs (a set audited again replaces its own entry); a page of both, audit.html beside the
JSON, shows the tables and the chart (``bench.pages``).

A box is not a segmentation: a signal that survives may be legitimate (a large heart reaches past it, pneumonia
changes the whole film's exposure) or a shortcut (side markers, text, tubes, projection, site). The audit says where
the evidence lies, not whether it is right.
"""

import argparse
import datetime
import os
import time

import numpy as np

from bench.accuracy import add_fold_arguments, load_dataset, outer_splits, probe_proba, run_jobs
from bench.pages import page_path, write_audit_page
from models import head, metrics
from models.classifier import HeadClassifier, TrainSettings
from models.cli import add_group_arguments, add_view_arguments
from models.errors import UserError, run_cli
from models.fileio import read_json, write_json
from models.images import View
from models.plots import figure, save_figure
from models.progress import progress_bar
from models.runtime import setup_runtime
from models.splits import image_groups

BENCH = os.path.dirname(os.path.abspath(__file__))

SCHEMA = "xvision-mx lung-field audit v1"
# the encodings, in the order they are shown: (field of models.images.View, name in the tables)
ENCODINGS = (("whole", "as is"), ("outside", "lungs hidden"), ("lungs", "lungs only"))
MODELS = ("head (--layout both)", "probe, averaged codes")
HEAD = TrainSettings(layout="both", folds=0)
WARN_SHARE = 0.5  # more than this share of the above-chance AUC survives with the lungs hidden: warn
WARNING = ("most of this signal is outside the lung fields: check for markers, devices, projection or site differences "
           "between the classes")


def _fold_job(codes, targets, classes, train, test, seed, field):
    """Both models' test probabilities of the positive class on one outer fold of one encoding."""
    setup_runtime()  # in a worker process: before its MXNet loads
    positive = metrics.positive_class(classes)
    fitted = HeadClassifier(HEAD, input_check=False).fit(codes[train], targets[train], classes=classes)
    pooled = head.pool_codes(codes, "avg")
    return {MODELS[0]: fitted.predict_proba(codes[test])[:, positive],
            MODELS[1]: probe_proba(pooled[train], targets[train], pooled[test], seed)[:, positive]}


def survival(auc_as_is, auc_hidden):
    """(share, warning or None): how much of the above-chance AUC survives with the lungs hidden."""
    if auc_as_is <= 0.5:
        return None, None
    share = (auc_hidden - 0.5) / (auc_as_is - 0.5)
    return share, (WARNING if share > WARN_SHARE else None)


def audit_set(root, pattern, group_by, view, seeds, folds, jobs, cache, log):
    """The audit of one folder of two class folders: {encoding: {model: scores}} and a verdict per model."""
    name = os.path.basename(os.path.abspath(root))
    loaded = {}
    for field, _ in ENCODINGS:
        suffix = "" if field == "whole" else f"-{field}"
        loaded[field] = load_dataset(root, os.path.join(cache, name + suffix), View(view.resize, field, view.box))
    _, targets, classes, files = loaded["whole"]
    groups = image_groups(root, [classes[t] for t in targets], files, pattern, group_by)
    positive = metrics.positive_class(classes)
    truth = (targets == positive).astype(int)
    splits = outer_splits(targets, groups, folds, range(seeds))
    calls = [(loaded[field][0], targets, classes, train, test, seed, field)
             for field, _ in ENCODINGS for seed, _, train, test in splits]
    log(f"{name}: {len(targets)} images ({', '.join(f'{c} {int(np.sum(targets == i))}' for i, c in enumerate(classes))}"
        f"), {len(set(groups))} groups; {len(calls)} fits of {len(MODELS)} models")
    with progress_bar(total=len(calls), desc=f"{name}: cross-validation", unit="fit") as bar:
        results = run_jobs(_fold_job, calls, jobs, lambda call, result: bar.update(1))
    scores = {}
    for field, label in ENCODINGS:
        scores[label] = {}
        mine = [(call, result) for call, result in zip(calls, results) if call[-1] == field]
        for model in MODELS:
            per_seed = []
            for seed in range(seeds):
                proba = np.zeros(len(targets))
                for call, result in mine:
                    if call[-2] == seed:
                        proba[call[4]] = result[model]
                two = np.stack([1 - proba, proba], axis=1)
                per_seed.append((metrics.roc_auc(truth, two, 1), metrics.auc_interval(truth, two, 1, groups=groups)))
            aucs = [auc for auc, _ in per_seed]
            scores[label][model] = {
                "roc_auc": float(np.mean(aucs)), "sd": float(np.std(aucs, ddof=1)) if seeds > 1 else 0.0,
                "ci95": [float(np.mean([ci[0] for _, ci in per_seed])), float(np.mean([ci[1] for _, ci in per_seed]))],
                "seeds": aucs}
    verdicts = {}
    for model in MODELS:
        share, warning = survival(scores["as is"][model]["roc_auc"], scores["lungs hidden"][model]["roc_auc"])
        verdicts[model] = {"share_surviving_lungs_hidden": share, "warning": warning}
    return {"data": os.path.abspath(root), "group_pattern": pattern, "group_by": group_by, "classes": classes,
            "positive_class": classes[positive], "images": len(targets), "groups": len(set(groups)), "scores": scores,
            "verdicts": verdicts}


def format_set(name, result):
    lines = [f"\n{name}: pooled out-of-fold ROC-AUC (95% CI, DeLong), mean over seeds", "",
             "| model | " + " | ".join(label for _, label in ENCODINGS) + " | share surviving lungs hidden |",
             "| --- |" + " --- |" * (len(ENCODINGS) + 1)]
    for model in MODELS:
        cells = [f"{s['roc_auc']:.3f} ({s['ci95'][0]:.3f}-{s['ci95'][1]:.3f})"
                 for s in (result["scores"][label][model] for _, label in ENCODINGS)]
        share = result["verdicts"][model]["share_surviving_lungs_hidden"]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {'n/a' if share is None else f'{share:.2f}'} |")
    lines.append("")
    for model in MODELS:
        verdict = result["verdicts"][model]
        share = verdict["share_surviving_lungs_hidden"]
        if share is None:
            lines.append(f"{model}: no signal as is (ROC-AUC <= 0.5), nothing to audit")
        else:
            lines.append(f"{model}: {share:.0%} of the above-chance ROC-AUC survives with the lungs hidden"
                         + (f" -> warning: {verdict['warning']}" if verdict["warning"] else ""))
    return "\n".join(lines)


def plot_audit(datasets, encodings, models, path):
    """The lung-field audit as grouped bars: per data set, each model's ROC-AUC on each encoding with its 95% interval,
    chance marked. ``datasets``: {name: audit result (bench/audit.py)}."""
    fig = figure(1 + 4.5 * len(datasets), 4)
    axes = np.atleast_1d(fig.subplots(1, len(datasets), sharey=True))
    width = 0.8 / len(encodings)
    for ax, (name, result) in zip(axes, datasets.items()):
        for k, encoding in enumerate(encodings):
            rows = [result["scores"][encoding][model] for model in models]
            auc = np.array([row["roc_auc"] for row in rows])
            low, high = np.array([row["ci95"] for row in rows]).T
            ax.bar(np.arange(len(models)) + (k - (len(encodings) - 1) / 2) * width, auc, width,
                   yerr=[auc - low, high - auc], capsize=3, label=encoding)
        ax.axhline(0.5, color="gray", linestyle=":", label="chance")
        ax.set_xticks(range(len(models)), [model.split(" (")[0].split(",")[0] for model in models])
        ax.set(title=name, ylim=(0.3, 1.1))
        ax.grid(alpha=0.3, axis="y")
    axes[0].set(ylabel="ROC-AUC, 95% CI")
    axes[-1].legend(fontsize="small", loc="upper center", ncol=len(encodings) + 1)
    save_figure(fig, path)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("data", metavar="DATA", nargs="+", help="folders of two class folders")
    add_group_arguments(parser)
    add_view_arguments(parser, field=False)
    add_fold_arguments(parser, "fits run at once")
    parser.add_argument("--out", default=os.path.join(BENCH, "audit.json"),
                        help="JSON results; an earlier file's other data sets are kept (default: %(default)s)")
    parser.add_argument("--png", default=os.path.join(BENCH, "audit.png"), help="bar chart (default: %(default)s)")
    parser.add_argument("--cache", default=os.path.join(BENCH, ".cache"),
                        help="folder for the codes, one sub-folder per data folder and field (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    setup_runtime()
    started = time.time()
    view = View(args.resize, "whole", args.lung_box)
    results = {"schema": SCHEMA, "head": "train_model.py --layout both --folds 0 (the default head)",
               "probe": "StandardScaler + LogisticRegression(class_weight='balanced') on channel means",
               "share": "(AUC lungs hidden - 0.5) / (AUC as is - 0.5)", "warn_above": WARN_SHARE, "datasets": {}}
    if os.path.exists(args.out):  # one file for every set audited: a later run replaces its own sets only
        earlier = read_json(args.out, "audit results")
        if isinstance(earlier, dict) and earlier.get("schema") == SCHEMA:
            results["datasets"] = earlier.get("datasets", {})
    tables = []
    for root in args.data:
        if not os.path.isdir(root):
            raise UserError(f"DATA folder not found: {root}")
        name = os.path.basename(os.path.abspath(root))
        set_started = time.time()
        result = audit_set(root, args.group_pattern, args.group_by, view, args.seeds, args.folds, args.jobs,
                           args.cache, lambda line: print(line, flush=True))
        results["datasets"][name] = dict(
            result, date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            lung_box=list(args.lung_box), resize=args.resize, seeds=list(range(args.seeds)), folds=args.folds,
            seconds=round(time.time() - set_started, 1))
        tables.append(format_set(name, result))
        print(tables[-1], flush=True)
    write_json(args.out, results)
    plot_audit(results["datasets"], [label for _, label in ENCODINGS], MODELS, args.png)
    page = write_audit_page(results, args.png, page_path(args.out))
    print(f"\nwrote {args.out}, {args.png} and {page} ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    run_cli(main)
