"""Cross-validated evidence for the head's defaults (`make accuracy DATA=folder-of-class-folders`).

    .venv/bin/python bench/accuracy.py DATA [--group-pattern REGEX] [--subset-every N] [--folds 5] [--out FILE]

Extracts the codes of every image in DATA/<class>/ once (cached in bench/.cache/<DATA name>/, resumable), then runs a
grouped, stratified k-fold cross-validation (no group in two folds) of
- the head with train_model.py's defaults (its validation hold-out and threshold taken inside each training fold,
  exactly as train_model.py does), scored at the last epoch (test_model.py's default) and at the best one;
- the head with one default changed at a time, and with the original Xvision settings (``--recipe xvision``: no
  validation, threshold 0.5);
- a standardised, class-balanced logistic-regression probe on the same codes, flattened and averaged over the grid
  (what a linear model gets: the ceiling the head is compared with).
It does so on DATA as it is and on an imbalanced subset keeping every Nth image of the negative class (the class named
like normal), the shape of Open-i normal vs nodule. Writes the table to stdout and everything to --out (JSON).
"""

import argparse
import datetime
import os
import platform
import sys
import time
from dataclasses import asdict, replace

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, REPO)

from models import head, metrics  # noqa: E402
from models.codes import CodeStore  # noqa: E402
from models.errors import UserError, run_cli  # noqa: E402
from models.fileio import write_json  # noqa: E402
from models.images import list_images  # noqa: E402
from models.splits import groups_from_pattern  # noqa: E402
from models.training import RECIPES, TrainSettings, fit_and_select  # noqa: E402

SCHEMA = "xvision-mx accuracy v1"
DEFAULTS = TrainSettings()
# row name -> (train_model.py settings, test_model.py --epoch); the defaults first, then one change each
HEADS = {
    "head (defaults)": (DEFAULTS, "last"),
    "head (defaults, --epoch best)": (DEFAULTS, "best"),
    "head (--dropout 0)": (replace(DEFAULTS, dropout=0.0), "last"),
    "head (--class-weight none)": (replace(DEFAULTS, class_weight="none"), "last"),
    "head (--pool none)": (replace(DEFAULTS, pool="none"), "last"),
    "head (--recipe xvision)": (TrainSettings(**RECIPES["xvision"]), "last"),
}


def load_dataset(root, cache):
    """(codes, class indices, classes, file names) of every image in ROOT/<class>/, extracting what is not cached."""
    from models.extract import extract_folder
    from models.pretrained import Backbone

    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if len(classes) != 2:
        raise UserError(f"{root} must hold two class folders; found {classes}")
    backbone, parts = None, []
    for c, name in enumerate(classes):
        codes_dir = os.path.join(cache, name)
        folder = os.path.join(root, name)
        try:
            store = CodeStore(codes_dir)
            if store.index["files"] != list_images(folder):
                raise UserError("other files")
            store.check_images(folder, store.names)
        except UserError:
            backbone = backbone or Backbone()
            extract_folder(backbone, folder, codes_dir)
            store = CodeStore(codes_dir)
        parts.append((store.read(store.names), [c] * len(store.names), store.names))
    codes = np.concatenate([p[0] for p in parts])
    return codes, np.concatenate([p[1] for p in parts]).astype(int), classes, sum((p[2] for p in parts), [])


def probe_proba(train_x, train_y, test_x, seed):
    """Standardised, class-balanced logistic regression: P(class) of the test rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=5000,
                                                               random_state=seed))
    return model.fit(train_x, train_y).predict_proba(test_x)


def cross_validate(codes, targets, groups, classes, folds, seed, log):
    """Out-of-fold probabilities and decisions of every model, fold by fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    positive = metrics.positive_class(classes)
    pooled = head.pool_codes(codes, "avg")
    flat = codes.reshape(len(codes), -1)
    names = list(HEADS) + ["probe, flattened codes", "probe, averaged codes"]
    proba = {name: np.zeros((len(targets), 2)) for name in names}
    decided = {name: np.zeros(len(targets), int) for name in names}
    fold_of = np.zeros(len(targets), int)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (train, test) in enumerate(splitter.split(codes, targets, groups)):
        fold_of[test] = fold
        started = time.time()
        for name, (settings, epoch) in HEADS.items():
            net, threshold, _ = fit_and_select(codes[train], targets[train], [groups[i] for i in train], classes,
                                               settings, epoch)
            proba[name][test] = head.predict_proba(net, codes[test])
            decided[name][test] = metrics.decide(proba[name][test], positive, 0.5 if threshold is None else threshold)
        for name, x in (("probe, flattened codes", flat), ("probe, averaged codes", pooled)):
            proba[name][test] = probe_proba(x[train], targets[train], x[test], seed)
            decided[name][test] = metrics.decide(proba[name][test], positive, 0.5)
        log(f"  fold {fold + 1}/{folds}: {len(train)} training, {len(test)} test images, {time.time() - started:.0f} s")
    return names, proba, decided, fold_of


def summarise(names, proba, decided, fold_of, targets, classes, folds):
    positive = metrics.positive_class(classes)
    rows = {}
    for name in names:
        fold_aucs = [metrics.roc_auc(targets[fold_of == f], proba[name][fold_of == f], positive) for f in range(folds)]
        recalls = {classes[c]: float(np.mean(decided[name][targets == c] == c)) for c in range(len(classes))}
        rows[name] = {
            "roc_auc_pooled": metrics.roc_auc(targets, proba[name], positive),
            "roc_auc_pooled_ci95": metrics.bootstrap_auc_interval(targets, proba[name], positive),
            "roc_auc_folds": fold_aucs,
            "roc_auc_mean": float(np.mean([a for a in fold_aucs if a is not None])),
            "balanced_accuracy": metrics.balanced_accuracy(targets, decided[name], len(classes)),
            "recall": recalls,
            "predicted_one_class_only": bool(len(set(decided[name].tolist())) == 1),
        }
    return rows


def format_rows(title, rows, classes):
    lines = [title, f"| model | ROC-AUC, mean of folds | pooled out-of-fold (95% CI) | balanced acc. | "
                    f"recall {classes[0]} | recall {classes[1]} |", "| --- | --- | --- | --- | --- | --- |"]
    for name, row in rows.items():
        low, high = row["roc_auc_pooled_ci95"]
        lines.append(f"| {name} | {row['roc_auc_mean']:.3f} | {row['roc_auc_pooled']:.3f} ({low:.3f}-{high:.3f}) | "
                     f"{row['balanced_accuracy']:.3f} | {row['recall'][classes[0]]:.3f} | "
                     f"{row['recall'][classes[1]]:.3f} |")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python bench/accuracy.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("data", metavar="DATA", help="folder of class folders (two classes)")
    parser.add_argument("--group-pattern", metavar="REGEX",
                        help=r"group id = first capture group of the file name (e.g. '^(\d+)_' for NIH patients); "
                             "default: every image its own group")
    parser.add_argument("--subset-every", type=int, default=5, metavar="N",
                        help="imbalanced subset: every Nth image of the negative class (default: %(default)s)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds (default: %(default)s)")
    parser.add_argument("--out", default=os.path.join(BENCH, "accuracy.json"),
                        help="JSON results (default: %(default)s)")
    parser.add_argument("--cache", default=os.path.join(BENCH, ".cache"),
                        help="folder for the codes, one sub-folder per DATA name (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    root = os.path.abspath(args.data)
    if not os.path.isdir(root):
        raise UserError(f"DATA folder not found: {args.data}")
    started = time.time()
    codes, targets, classes, files = load_dataset(root, os.path.join(args.cache, os.path.basename(root)))
    if args.group_pattern:
        groups = groups_from_pattern(files, args.group_pattern)
    else:  # every image its own group, as scraper.process --from-folders does
        groups = [f"{classes[t]}/{name}" for t, name in zip(targets, files)]
    negative = 1 - metrics.positive_class(classes)
    negatives = np.flatnonzero(targets == negative)
    subset = np.sort(np.concatenate([np.flatnonzero(targets != negative), negatives[::args.subset_every]]))
    results = {"schema": SCHEMA, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "data": root, "classes": classes, "positive_class": classes[1 - negative],
               "group_pattern": args.group_pattern, "folds": args.folds, "seed": args.seed,
               "cv": "StratifiedGroupKFold (scikit-learn), shuffled; no group in two folds",
               "head_settings": {name: dict(asdict(settings), epoch=epoch)
                                 for name, (settings, epoch) in HEADS.items()},
               "probe": "StandardScaler + LogisticRegression(class_weight='balanced'), threshold 0.5",
               "machine": platform.processor() or platform.machine(), "datasets": {}}
    tables = []
    for label, chosen in (("as is", np.arange(len(targets))),
                          (f"imbalanced: every {args.subset_every}th {classes[negative]} image", subset)):
        counts = {classes[c]: int(np.sum(targets[chosen] == c)) for c in range(2)}
        print(f"{label}: {counts}, {len(set(groups[i] for i in chosen))} groups", flush=True)
        names, proba, decided, fold_of = cross_validate(codes[chosen], targets[chosen], [groups[i] for i in chosen],
                                                        classes, args.folds, args.seed, print)
        rows = summarise(names, proba, decided, fold_of, targets[chosen], classes, args.folds)
        results["datasets"][label] = {"counts": counts, "models": rows}
        tables.append(format_rows(f"\n{os.path.basename(root)}, {label} ({counts})", rows, classes))
    results["seconds"] = round(time.time() - started, 1)
    write_json(args.out, results)
    print("\n".join(tables))
    print(f"\nwrote {args.out} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    run_cli(main)
