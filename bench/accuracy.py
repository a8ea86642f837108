"""Cross-validated evidence for the head's defaults (`make accuracy [DATA=folder-of-class-folders]`).

    .venv/bin/python -m bench.accuracy [DATA ...] [--group-pattern REGEX] [--shared DIR|none] [--seeds 3] [--folds 5]
                                       [--field whole|lungs] [--lung-box L,T,R,B]

Runs every DATA given plus, by default, the two shared NIH sets (nih-cxr8-pa as it is and with every 5th normal image,
1:8, the shape of Open-i normal vs nodule; nih-sim-nodules, a local finding). Codes are extracted once per set (cached
in bench/.cache/<name>/, resumable). Then, for each of --seeds fold seeds, a grouped, stratified k-fold
cross-validation (no group in two folds) of
- the head with train_model.py's defaults: the same estimator (``models.classifier.HeadClassifier``), whose inner
  cross-validation on each training fold chooses the layout and the threshold and recalibrates the probabilities; and
  the same head's own probabilities (--calibration none);
- the head with each layout fixed (--layout avg, flat, both; all three from one head of both branches, whose
  branches train as the single layouts would alone, but for their dropout masks; each at the threshold the
  defaults' inner cross-validation found for it, what train_model.py --layout NAME computes) and with the original
  Xvision settings (--recipe xvision, threshold 0.5);
- a standardised, class-balanced logistic-regression probe on the same codes, flattened and averaged over the grid
  (what a linear model gets: the bar the head must clear).
Prints a table per set (mean +- sd over seeds: ROC-AUC, balanced accuracy and recalls, and of the pooled out-of-fold
probabilities the Brier score, mean p minus the prevalence and the calibration slope), the share of held-out images
the input check flags, and whether the defaults are within 0.02 ROC-AUC of the better probe and 0.01 of the best fixed
layout; writes everything to --out (JSON) and a page of the tables beside it (NAME.html, ``bench.pages``).
"""

import argparse
import datetime
import os
import platform
import time
from dataclasses import asdict, replace

import numpy as np

from bench.pages import COMPARISONS, page_path, write_accuracy_page
from models import head, metrics
from models.classifier import RECIPES, HeadClassifier, TrainSettings
from models.cli import add_group_arguments, add_view_arguments, at_least
from models.codes import CodeStore
from models.errors import UserError, run_cli
from models.fileio import write_json
from models.images import View, class_folders, list_images, measure_depth
from models.runtime import setup_runtime
from models.splits import grouped_folds, image_groups

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)

SCHEMA = "xvision-mx accuracy v2"
DEFAULTS = TrainSettings()
XVISION = TrainSettings(**RECIPES["xvision"])
NIH_PATIENT = r"^(\d+)_"
# the shared sets: (name, folder under --shared, group pattern, keep every Nth negative image or None)
SHARED = (("nih-sim-nodules", "nih-sim-nodules", NIH_PATIENT, None),
          ("nih-cxr8-pa, every 5th normal (1:8)", "nih-cxr8-pa", NIH_PATIENT, 5),
          ("nih-cxr8-pa", "nih-cxr8-pa", NIH_PATIENT, None))
DEFAULTS_ROW, UNCALIBRATED_ROW = "head (defaults: --layout auto)", "head (defaults, --calibration none)"
LAYOUT_ROWS = tuple(f"head (--layout {name})" for name in head.LAYOUT_NAMES)
HEAD_ROWS = (DEFAULTS_ROW, UNCALIBRATED_ROW) + LAYOUT_ROWS + ("head (--recipe xvision)",)
PROBE_ROWS = ("probe, flattened codes", "probe, averaged codes")
# how far each row's pooled out-of-fold probabilities are risks (models.metrics.probability_scores)
PROBABILITY_KEYS = ("brier", "calibration_in_the_large", "calibration_slope")
PROBE_MARGIN, LAYOUT_MARGIN = 0.02, 0.01  # the defaults may trail the better probe / the best fixed layout by this
POINT_MARGIN = 0.0  # balanced accuracy at the operating point against at 0.5: no loss allowed beyond the spread
READINGS = ("holds", "holds (within noise)", "inconclusive", "does not hold")  # best to worst


def load_dataset(root, cache, view=View()):
    """(codes, class indices, classes, file names) of every image in ROOT/<class>/ as ``view`` shows it, extracting
    what is not cached."""
    from models.extract import extract_folder
    from models.pretrained import Backbone

    classes = class_folders(root)
    if len(classes) != 2:
        raise UserError(f"{root} must hold two class folders; found {classes}")
    if view.bits is None:  # what train.py does: one depth mapping for every 16-bit image of the set
        view = replace(view, bits=measure_depth([os.path.join(root, c, n) for c in classes
                                                 for n in list_images(os.path.join(root, c))])[0])
    backbone, parts = None, []
    for c, name in enumerate(classes):
        codes_dir = os.path.join(cache, name)
        folder = os.path.join(root, name)
        try:
            store = CodeStore(codes_dir)
            if store.index["files"] != list_images(folder) or View.of(store.meta) != view:
                raise UserError("other files or another view")
            store.check_images(folder, store.names)
        except UserError:
            backbone = backbone or Backbone()
            extract_folder(backbone, folder, codes_dir, view)
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


def outer_fold(codes, targets, groups, classes, train, test, seed):
    """Every row's test probabilities and decisions (at its operating point and at 0.5) for one outer fold, and the
    layout the defaults chose."""
    positive = metrics.positive_class(classes)
    x, y, fold_groups = codes[train], targets[train], [groups[i] for i in train]
    defaults = HeadClassifier(TrainSettings(seed=seed)).fit(x, y, fold_groups, classes=classes)
    # the fixed layouts: the branches of one --layout both head (each trains as its layout would alone), each at the
    # threshold the defaults' inner cross-validation found for it (what train_model.py --layout NAME computes)
    largest = head.LAYOUT_NAMES[-1]
    both = defaults if defaults.layout_ == largest else \
        HeadClassifier(TrainSettings(seed=seed, layout=largest, folds=0), input_check=False).fit(x, y, classes=classes)
    proba, threshold = {DEFAULTS_ROW: defaults.predict_proba(codes[test])}, {DEFAULTS_ROW: defaults.threshold_}
    proba[UNCALIBRATED_ROW] = defaults.predict_proba(codes[test], calibrated=False)
    threshold[UNCALIBRATED_ROW] = (defaults.operating_point_ or {}).get("threshold_uncalibrated", defaults.threshold_)
    for name, row in zip(head.LAYOUT_NAMES, LAYOUT_ROWS):
        proba[row] = both.predict_proba(codes[test], layout=name, calibrated=False)
        result = defaults.cv_results_.get(name)  # none where a class lies in a single group: no inner folds
        threshold[row] = result["threshold"] if result else 0.5
        if result and result["calibration"]:  # recalibrated as train_model.py --layout NAME would
            proba[row], threshold[row] = result["calibration"].apply(proba[row]), \
                result["calibration"].threshold(threshold[row])
    xvision = HeadClassifier(replace(XVISION, seed=seed), input_check=False).fit(x, y, classes=classes)
    proba[HEAD_ROWS[-1]], threshold[HEAD_ROWS[-1]] = xvision.predict_proba(codes[test]), xvision.threshold_
    pooled, flat = head.pool_codes(codes, "avg"), codes.reshape(len(codes), -1)
    for name, features in zip(PROBE_ROWS, (flat, pooled)):
        proba[name] = probe_proba(features[train], y, features[test], seed)
    decided = {name: (metrics.decide(p, positive, threshold.get(name, 0.5)), metrics.decide(p, positive, 0.5))
               for name, p in proba.items()}
    raw = {"seed": seed, "train": train.tolist(), "test": test.tolist(),
           "inner_held_out": [fold.tolist() for fold in defaults.cv_folds_],
           "out_of_fold": {name: result["proba"][:, positive].tolist()
                           for name, result in defaults.cv_results_.items()},
           "test_proba": {name: p[:, positive].tolist() for name, p in proba.items()}}
    flagged = int(np.sum(defaults.input_check_.flag(codes[test])[1]))
    return proba, decided, defaults.layout_, flagged, raw


def outer_splits(targets, groups, folds, seeds):
    """[(seed, fold, training positions, test positions)] of a grouped, stratified k-fold per seed."""
    return [(seed, fold, train, test) for seed in seeds
            for fold, (train, test) in enumerate(grouped_folds(targets, groups, folds, seed))]


def _fold_job(codes, targets, groups, classes, train, test, seed, fold):
    setup_runtime()  # in a worker process: before its MXNet loads
    started = time.time()
    return outer_fold(codes, targets, groups, classes, train, test, seed) + (time.time() - started,)


def run_folds(codes, targets, groups, classes, splits, jobs, log):
    """outer_fold of every split, ``jobs`` at a time (``run_jobs``)."""
    def done(call, result):
        train, test, seed, fold = call[4:8]
        log(f"    seed {seed} fold {fold + 1}: {len(train)} training, {len(test)} test images, defaults chose "
            f"{result[2]}, {result[3]} flagged unlike the training films, {result[5]:.0f} s")

    calls = [(codes, targets, groups, classes, train, test, seed, fold) for seed, fold, train, test in splits]
    return run_jobs(_fold_job, calls, jobs, done)


def run_jobs(function, calls, jobs, done=lambda call, result: None):
    """[function(*call) for call in calls], ``jobs`` at a time in worker processes with one MXNet thread each (on 2
    cores two single-threaded fits do 1.6x the work of one fit on two threads, whose small GEMMs and updates do not
    scale); ``done(call, result)`` after each, in order."""
    results = []
    if jobs == 1:
        for call in calls:
            results.append(function(*call))
            done(call, results[-1])
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    os.environ["OMP_NUM_THREADS"] = "1"  # read by each worker's MXNet when it loads; this process's is loaded
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(function, *call) for call in calls]
        for call, future in zip(calls, futures):
            results.append(future.result())
            done(call, results[-1])
    return results


def score_seed(targets, classes, splits, results):
    """One seed's rows: mean-of-folds and pooled ROC-AUC, balanced accuracy at the operating point and at 0.5,
    recalls; and the layout the defaults chose in each fold."""
    positive = metrics.positive_class(classes)
    rows = HEAD_ROWS + PROBE_ROWS
    proba = {name: np.zeros((len(targets), len(classes))) for name in rows}
    at_point = {name: np.zeros(len(targets), int) for name in rows}
    at_half = {name: np.zeros(len(targets), int) for name in rows}
    fold_aucs, winners = {name: [] for name in rows}, []
    flagged = 0
    for (_, _, _, test), (fold_proba, decided, winner, fold_flagged, _, _) in zip(splits, results):
        winners.append(winner)
        flagged += fold_flagged
        for name in rows:
            proba[name][test] = fold_proba[name]
            at_point[name][test], at_half[name][test] = decided[name]
            fold_aucs[name].append(metrics.roc_auc(targets[test], fold_proba[name], positive))
    n_classes = len(classes)
    scores = {name: metrics.probability_scores(targets, proba[name], positive) for name in rows}
    return {name: {"roc_auc_mean": float(np.mean([a for a in fold_aucs[name] if a is not None])),
                   "roc_auc_folds": fold_aucs[name],
                   "roc_auc_pooled": metrics.roc_auc(targets, proba[name], positive),
                   "balanced_accuracy": metrics.balanced_accuracy(targets, at_point[name], n_classes),
                   "balanced_accuracy_at_0.5": metrics.balanced_accuracy(targets, at_half[name], n_classes),
                   "recall": {classes[c]: float(np.mean(at_point[name][targets == c] == c)) for c in range(n_classes)},
                   **{key: scores[name][key] for key in PROBABILITY_KEYS},
                   "flagged_unlike_training": flagged / len(targets)}
            for name in rows}, winners


def aggregate(per_seed):
    """Mean and sd over seeds of each row's numbers."""
    rows = {}
    for name in per_seed[0]:
        rows[name] = {}
        for key in ("roc_auc_mean", "roc_auc_pooled", "balanced_accuracy", "balanced_accuracy_at_0.5",
                    "flagged_unlike_training") + PROBABILITY_KEYS:
            values = [seed_rows[name][key] for seed_rows in per_seed]
            rows[name][key] = {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)) if len(values) > 1
                               else 0.0, "seeds": values}
        rows[name]["recall"] = {c: float(np.mean([seed_rows[name]["recall"][c] for seed_rows in per_seed]))
                                for c in per_seed[0][name]["recall"]}
        rows[name]["roc_auc_folds"] = [seed_rows[name]["roc_auc_folds"] for seed_rows in per_seed]
    return rows


def reading(difference, spread, margin):
    """What a difference A - B says of "A is not worse than B by more than ``margin``", given its run-to-run
    ``spread`` (None where one run cannot show it: then a shortfall is inconclusive)."""
    if spread is None:
        return "holds" if difference >= -margin else "inconclusive"
    if difference - spread >= -margin:
        return "holds"
    if difference >= -margin:
        return "holds (within noise)"
    if difference + spread >= -margin:
        return "inconclusive"
    return "does not hold"


def paired(rows, a, b, key, key_b=None):
    """Mean over seeds of row ``a``'s ``key`` minus row ``b``'s ``key_b`` (default: the same), and the spread of that
    paired difference: its sd over seeds and, for ROC-AUCs, the standard error of the mean of the folds' paired
    differences, the larger (None with one seed and no folds)."""
    differences = np.subtract(rows[a][key]["seeds"], rows[b][key_b or key]["seeds"])
    spreads = [float(np.std(differences, ddof=1))] if len(differences) > 1 else []
    if key == "roc_auc_mean" and key_b is None:
        per_seed = [[x - y for x, y in zip(fa, fb) if x is not None and y is not None]
                    for fa, fb in zip(rows[a]["roc_auc_folds"], rows[b]["roc_auc_folds"])]
        errors = [np.std(d, ddof=1) / np.sqrt(len(d)) for d in per_seed if len(d) > 1]
        spreads += [float(np.mean(errors))] if errors else []
    return float(np.mean(differences)), max(spreads) if spreads else None


def verdict(rows):
    """The defaults against the better probe and the best fixed layout (mean over seeds of the mean-of-folds AUC),
    and the operating point against 0.5 (balanced accuracy), each read against its margin and its run-to-run spread:
    a shortfall inside the spread is "inconclusive", never "does not hold"; the verdict is the worst reading."""
    auc = {name: row["roc_auc_mean"]["mean"] for name, row in rows.items()}
    probe = max(PROBE_ROWS, key=auc.get)
    layout = max(LAYOUT_ROWS, key=auc.get)
    comparisons = {
        "defaults_minus_better_probe": (paired(rows, DEFAULTS_ROW, probe, "roc_auc_mean"), PROBE_MARGIN),
        "defaults_minus_best_layout": (paired(rows, DEFAULTS_ROW, layout, "roc_auc_mean"), LAYOUT_MARGIN),
        "balanced_accuracy_point_minus_half": (paired(rows, DEFAULTS_ROW, DEFAULTS_ROW, "balanced_accuracy",
                                                      "balanced_accuracy_at_0.5"), POINT_MARGIN)}
    out = {"better_probe": probe, "best_layout": layout}
    for name, ((difference, spread), margin) in comparisons.items():
        out[name] = difference
        out[f"{name}_reading"] = {"spread": spread, "margin": margin, "reading": reading(difference, spread, margin)}
    out["reading"] = max((out[f"{name}_reading"]["reading"] for name in comparisons), key=READINGS.index)
    out["holds"] = out["reading"] in READINGS[:2]
    return out


def format_rows(title, rows, classes, winners, check):
    plus = lambda stat: f"{stat['mean']:.3f} ± {stat['sd']:.3f}"  # noqa: E731
    lines = [title, "", "| model | ROC-AUC, mean of folds | pooled out-of-fold | balanced acc. at its threshold | "
                        f"at 0.5 | recall {classes[0]} | recall {classes[1]} | Brier | mean p - prevalence | "
                        "calibration slope |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in rows.items():
        lines.append(f"| {name} | {plus(row['roc_auc_mean'])} | {plus(row['roc_auc_pooled'])} | "
                     f"{plus(row['balanced_accuracy'])} | {plus(row['balanced_accuracy_at_0.5'])} | "
                     f"{row['recall'][classes[0]]:.3f} | {row['recall'][classes[1]]:.3f} | {plus(row['brier'])} | "
                     f"{plus(row['calibration_in_the_large'])} | {plus(row['calibration_slope'])} |")
    flagged = rows[DEFAULTS_ROW]["flagged_unlike_training"]["mean"]
    chosen = ", ".join(f"{name} {winners.count(name)}" for name in head.LAYOUT_NAMES)
    lines += ["", f"Held-out images the input check flagged as unlike their training fold's: {flagged:.1%}. "
                  f"Layout the defaults chose in the {len(winners)} training folds: {chosen}. Defaults minus "
                  f"{check['better_probe']}: {check['defaults_minus_better_probe']:+.3f}; minus "
                  f"{check['best_layout']}: {check['defaults_minus_best_layout']:+.3f}; balanced accuracy at the "
                  f"operating point minus at 0.5: {check['balanced_accuracy_point_minus_half']:+.3f} -> "
                  + "; ".join(f"{short}: {check[key + '_reading']['reading']}" for key, short, _ in COMPARISONS)
                  + f" => {check['reading']}"
                  + " (each difference against its margin and its spread over seeds and folds)"]
    return "\n".join(lines)


def datasets(args):
    """(name, root, (group pattern or None, --group-by or None), every Nth negative or None) of every set to run."""
    chosen = [(os.path.basename(os.path.abspath(d)), os.path.abspath(d), (args.group_pattern, args.group_by), None)
              for d in args.data]
    if args.shared != "none":
        missing = [folder for _, folder, _, _ in SHARED if not os.path.isdir(os.path.join(args.shared, folder))]
        if missing:
            raise UserError(f"shared sets not found in {args.shared}: {missing}; give --shared DIR (make accuracy "
                            f"SHARED=DIR) or --shared none with DATA")
        chosen += [(name, os.path.join(args.shared, folder), (pattern, None), every)
                   for name, folder, pattern, every in SHARED]
    if not chosen:
        raise UserError("nothing to run: give DATA or leave --shared on")
    return chosen


def add_fold_arguments(parser, jobs_are):
    """--seeds, --folds and --jobs: the cross-validation of make accuracy and make audit."""
    parser.add_argument("--seeds", type=at_least(int, 1), default=3, help="fold seeds 0..N-1 (default: %(default)s)")
    parser.add_argument("--folds", type=at_least(int, 2), default=5,
                        help="cross-validation folds (default: %(default)s)")
    parser.add_argument("--jobs", type=at_least(int, 1), default=len(os.sched_getaffinity(0)),
                        help=f"{jobs_are}, one process each (default: the CPUs, %(default)s)")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n\n")[0])
    parser.add_argument("data", metavar="DATA", nargs="*", help="folders of two class folders, run before the "
                                                                  "shared sets")
    add_group_arguments(parser, "for DATA: ")
    parser.add_argument("--shared", default=os.path.join(os.path.dirname(REPO), "shared", "data"),
                        help="folder holding nih-cxr8-pa and nih-sim-nodules, or 'none' (default: %(default)s)")
    add_fold_arguments(parser, "outer folds run at once")
    parser.add_argument("--out", default=os.path.join(BENCH, "accuracy.json"),
                        help="JSON results (default: %(default)s)")
    parser.add_argument("--raw", metavar="FILE",
                        help="also write every fold's probabilities of the positive class (the training images' "
                             "out-of-fold ones per layout, the test images' per row) and its splits as JSON, to "
                             "study thresholds and layouts without training again")
    add_view_arguments(parser, resize=False)
    parser.add_argument("--cache", default=os.path.join(BENCH, ".cache"),
                        help="folder for the codes, one sub-folder per data folder name (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    setup_runtime()
    started = time.time()
    results = {"schema": SCHEMA, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "folds": args.folds, "seeds": list(range(args.seeds)),
               "cv": "StratifiedGroupKFold (scikit-learn), shuffled with each seed; no group in two folds",
               "jobs": args.jobs,
               "defaults": asdict(DEFAULTS), "xvision": asdict(XVISION),
               "probe": "StandardScaler + LogisticRegression(class_weight='balanced'), threshold 0.5",
               "margins": {"better_probe": PROBE_MARGIN, "best_layout": LAYOUT_MARGIN},
               "machine": platform.processor() or platform.machine(),
               "view": View(field=args.field, box=args.lung_box).describe(), "datasets": {}}
    tables, loaded, raw_sets = [], {}, {}
    for name, root, (pattern, group_by), every in datasets(args):
        if not os.path.isdir(root):
            raise UserError(f"DATA folder not found: {root}")
        if root not in loaded:
            suffix = "" if args.field == "whole" else f"-{args.field}"
            loaded[root] = load_dataset(root, os.path.join(args.cache, os.path.basename(root) + suffix),
                                        View(field=args.field, box=args.lung_box))
        codes, targets, classes, files = loaded[root]
        groups = image_groups(root, [classes[t] for t in targets], files, pattern, group_by)
        chosen = np.arange(len(targets))
        if every:
            negative = 1 - metrics.positive_class(classes)
            negatives = np.flatnonzero(targets == negative)
            chosen = np.sort(np.concatenate([np.flatnonzero(targets != negative), negatives[::every]]))
        counts = {classes[c]: int(np.sum(targets[chosen] == c)) for c in range(2)}
        set_started = time.time()
        print(f"{name}: {counts}, {len(set(groups[i] for i in chosen))} groups", flush=True)
        x, y, g = codes[chosen], targets[chosen], [groups[i] for i in chosen]
        splits = outer_splits(y, g, args.folds, range(args.seeds))
        folds_done = run_folds(x, y, g, classes, splits, args.jobs, lambda line: print(line, flush=True))
        per_seed, winners = [], []
        for seed in range(args.seeds):
            mine = [i for i, split in enumerate(splits) if split[0] == seed]
            rows, chose = score_seed(y, classes, [splits[i] for i in mine], [folds_done[i] for i in mine])
            per_seed.append(rows)
            winners += chose
        rows = aggregate(per_seed)
        check = verdict(rows)
        if args.raw:
            raw_sets[name] = {"targets": y.tolist(), "folds": [done[4] for done in folds_done]}
            write_json(args.raw, raw_sets)
        results["datasets"][name] = {"data": root, "group_pattern": pattern, "group_by": group_by,
                                     "every_nth_negative": every,
                                     "counts": counts, "models": rows, "defaults_chose": winners, "verdict": check,
                                     "seconds": round(time.time() - set_started, 1)}
        tables.append(format_rows(f"\n{name} ({counts}; {args.seeds} seeds x {args.folds} folds, mean ± sd over "
                                  f"seeds)", rows, classes, winners, check))
        print(tables[-1], flush=True)
    results["seconds"] = round(time.time() - started, 1)
    write_json(args.out, results)
    page = write_accuracy_page(results, page_path(args.out))
    print("\n".join(tables))
    print(f"\nwrote {args.out} and {page} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    run_cli(main)
