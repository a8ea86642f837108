"""The pages of `make accuracy` and `make audit`: bench/accuracy.html and bench/audit.html, beside their JSON.

    .venv/bin/python -m bench.pages [--accuracy JSON] [--audit JSON]

Each page is made from its JSON alone (and, for the audit, the chart beside it), so it can be made again without
running the benchmark: the runs write theirs at the end, and this command rewrites both from the files. Needs neither
MXNet nor scikit-learn. Layouts in ``models/templates/accuracy.html.j2`` and ``audit.html.j2``."""

import argparse
import os

from models.errors import UserError, run_cli
from models.fileio import read_json
from models.pages import file_uri, write_page

BENCH = os.path.dirname(os.path.abspath(__file__))
# the verdict's paired differences (bench.accuracy.verdict): (key in accuracy.json, short name, what it compares)
COMPARISONS = (("defaults_minus_better_probe", "probe", "the defaults' ROC-AUC minus the better probe's"),
               ("defaults_minus_best_layout", "layout", "the defaults' ROC-AUC minus the best fixed layout's"),
               ("balanced_accuracy_point_minus_half", "operating point",
                "balanced accuracy at the operating point minus at 0.5"))
# accuracy.json's columns of every row, in the order of docs/accuracy.md's tables: (key, heading)
ACCURACY_COLUMNS = (("roc_auc_mean", "ROC-AUC, mean of folds"), ("roc_auc_pooled", "pooled out-of-fold"),
                    ("balanced_accuracy", "balanced acc. at its threshold"), ("balanced_accuracy_at_0.5", "at 0.5"))
PROBABILITY_COLUMNS = (("brier", "Brier"), ("calibration_in_the_large", "mean p - prevalence"),
                       ("calibration_slope", "calibration slope"))


def page_path(json_path):
    """The page beside a results file: NAME.html for NAME.json."""
    return os.path.splitext(json_path)[0] + ".html"


def verdict_rows(check):
    """(short name, what, difference, spread, margin, reading) of each comparison of one set's verdict."""
    return [(short, what, check[key], check[f"{key}_reading"]["spread"], check[f"{key}_reading"]["margin"],
             check[f"{key}_reading"]["reading"]) for key, short, what in COMPARISONS]


def accuracy_set(name, record):
    """What the accuracy page shows of one data set."""
    models = record["models"]
    classes = list(next(iter(models.values()))["recall"])
    winners = record["defaults_chose"]
    return {"name": name, "record": record, "classes": classes, "models": models,
            "flagged": next(iter(models.values()))["flagged_unlike_training"]["mean"],
            "chosen": {layout: winners.count(layout) for layout in dict.fromkeys(winners)},
            "verdicts": verdict_rows(record["verdict"])}


def write_accuracy_page(results, path):
    """Write ``path`` from ``results`` (accuracy.json's content); returns its path."""
    sets = [accuracy_set(name, record) for name, record in results["datasets"].items()]
    return write_page(path, "accuracy.html.j2", results=results, sets=sets, columns=ACCURACY_COLUMNS,
                      probability_columns=PROBABILITY_COLUMNS, source=_named(path, ".json"))


def audit_set(name, record):
    """What the audit page shows of one data set: its encodings and models in the order the JSON holds them."""
    encodings = list(record["scores"])
    return {"name": name, "record": record, "encodings": encodings, "models": list(record["scores"][encodings[0]]),
            "verdicts": record["verdicts"]}


def write_audit_page(results, chart, path):
    """Write ``path`` from ``results`` (audit.json's content) and ``chart`` (audit.png, shown where it exists)."""
    sets = [audit_set(name, record) for name, record in results["datasets"].items()]
    return write_page(path, "audit.html.j2", results=results, sets=sets, chart=file_uri(chart),
                      source=_named(path, ".json"))


def _named(page, suffix):
    """The results file beside ``page`` (the page's name with ``suffix``)."""
    return os.path.basename(os.path.splitext(page)[0] + suffix)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.pages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--accuracy", default=os.path.join(BENCH, "accuracy.json"), help="(default: %(default)s)")
    parser.add_argument("--audit", default=os.path.join(BENCH, "audit.json"),
                        help="(default: %(default)s; its chart: the PNG beside it)")
    args = parser.parse_args(argv)
    if not (os.path.isfile(args.accuracy) or os.path.isfile(args.audit)):
        raise UserError(f"nothing to do: neither {args.accuracy} nor {args.audit} exists (make accuracy / make audit "
                        f"write them)")
    if os.path.isfile(args.accuracy):
        results = read_json(args.accuracy, "accuracy results")
        print(f"wrote {write_accuracy_page(results, page_path(args.accuracy))}")
    if os.path.isfile(args.audit):
        results, chart = read_json(args.audit, "audit results"), os.path.splitext(args.audit)[0] + ".png"
        print(f"wrote {write_audit_page(results, chart, page_path(args.audit))}")


if __name__ == "__main__":
    run_cli(main)
