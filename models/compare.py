"""Compare two test reports on the images they share: is one model better than the other on the same films?

    python -m models.compare EVAL_A EVAL_B [--out DIR] [--labels TEST_LABELS]

EVAL_A and EVAL_B are folders test_model.py wrote (report.json and predictions.csv). On the images both scored, with
the same true class in both, it gives each one's ROC-AUC and the paired difference A - B with its 95% interval and
two-sided p-value, McNemar's exact test of their decisions (each at its own operating point: the predicted_class of
its predictions.csv), and the paired differences in accuracy and (two classes) Brier score; it prints a table and
writes compare.json (default: EVAL_A/compare-with-<B's last two folder names>).

Where no patient has two shared images, the AUC difference is DeLong's paired test (normal approximation); where
patients repeat (predictions.csv's group column, or --labels), every interval and bootstrap p-value resamples whole
patients within each class (``models.resampling``), since one patient's films are not independent.
"""

import argparse
import csv
import math
import os
import re

import numpy as np

from models.errors import UserError, named, run_cli
from models.fileio import check_output_folder, read_json, write_json
from models.metrics import Z_95, auc_and_variance, roc_auc
from models.resampling import Resampling
from models.splits import group_ids

WRITTEN_BY = "test_model.py writes it (its --out, default MODELS_DIR/eval)"
BOOTSTRAP_P = ("bootstrap: twice the smaller share of resampled differences on either side of 0, each share "
               "counted as (k + 1) / (resamples + 1), at most 1")


class Evaluation:
    """One report folder: its report.json, and its predictions.csv's images (file -> row)."""

    def __init__(self, folder, which):
        self.folder, self.which = folder, which
        for name in ("report.json", "predictions.csv"):
            if not os.path.isfile(os.path.join(folder, name)):
                raise UserError(f"{which} {folder!r} has no {name}: give a test report folder; {WRITTEN_BY}")
        self.report = read_json(os.path.join(folder, "report.json"), f"{which}'s report.json")
        if not isinstance(self.report, dict):
            raise UserError(f"{which}'s {os.path.join(folder, 'report.json')} is not a test report; {WRITTEN_BY}")
        self.classes = list(self.report.get("classes") or [])
        point = self.report.get("operating_point") or {}
        self.positive_class, self.threshold = point.get("positive_class"), point.get("threshold")
        self.rows = self._read_predictions(os.path.join(folder, "predictions.csv"))

    def _read_predictions(self, path):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            needed = ["file", "true_class", "predicted_class"] + [f"p_{name}" for name in self.classes]
            missing = [column for column in needed if column not in (reader.fieldnames or [])]
            if not self.classes or missing:
                raise UserError(f"{self.which}'s {path} lacks the columns {missing or needed} of a test report's "
                                f"predictions.csv; {WRITTEN_BY}")
            rows = {}
            for line, row in enumerate(reader, start=2):
                if row["file"] in rows:
                    raise UserError(f"{self.which}'s {path} lists {row['file']!r} twice (line {line}); write it again "
                                    f"with test_model.py")
                try:
                    row["p"] = [float(row[f"p_{name}"]) for name in self.classes]
                except (TypeError, ValueError):
                    raise UserError(f"{self.which}'s {path} line {line}: a probability is not a number") from None
                rows[row["file"]] = row
        return rows

    def record(self, shared):
        """compare.json's account of this side."""
        return {"folder": os.path.abspath(self.folder), "images": len(self.rows), "shared_images": shared,
                "epoch": self.report.get("epoch"), "models_dir": self.report.get("models_dir"),
                "positive_class": self.positive_class, "threshold": self.threshold}


def shared_images(a, b):
    """The files both scored (in A's order), after checking that the two reports can be compared at all."""
    if sorted(a.classes) != sorted(b.classes):
        raise UserError(f"EVAL_A's classes {a.classes} and EVAL_B's {b.classes} differ: compare reports on the "
                        f"same test labels by heads trained on the same classes")
    if a.positive_class != b.positive_class:
        raise UserError(f"EVAL_A's positive class {a.positive_class!r} and EVAL_B's {b.positive_class!r} differ: "
                        f"their AUCs and operating points are about different classes")
    files = [name for name in a.rows if name in b.rows]
    if not files:
        raise UserError(f"EVAL_A ({len(a.rows)} images) and EVAL_B ({len(b.rows)} images) share no image: compare "
                        f"two reports on the same test images")
    disagree = [name for name in files if a.rows[name]["true_class"] != b.rows[name]["true_class"]]
    if disagree:
        raise UserError(f"EVAL_A and EVAL_B give {len(disagree)} shared images different true classes "
                        f"({named(disagree, 5)}): they were scored against different label files")
    return files


def shared_groups(a, b, files, labels_path=None):
    """(each shared image's group or None, what a group is): from --labels, else the group columns of the two
    predictions.csv files; UserError where both name groups and split the images differently."""
    if labels_path:
        from models.labels import load_labels

        labels = load_labels(labels_path)
        return ([labels.group_of(name) for name in files] if labels.groups else None), labels.group_unit
    found = []
    for side in (a, b):
        cells = [side.rows[name].get("group") or "" for name in files]
        if any(cells):
            unit = side.report.get("intervals", {}).get("unit")
            found.append(([cell or f"image:{name}" for cell, name in zip(cells, files)],
                          None if unit == "images" else unit))
    if len(found) == 2 and not _same_partition(found[0][0], found[1][0]):
        raise UserError("EVAL_A and EVAL_B group the shared images into patients differently: give the test label "
                        "file with --labels")
    return found[0] if found else (None, None)


def _same_partition(first, second):
    """Whether two group labellings put the same images together."""
    pairs = {(x, y) for x, y in zip(group_ids(first), group_ids(second))}
    return len(pairs) == len(set(first)) == len(set(second))


def bootstrap_difference(resampling, statistic):
    """(95% percentile interval, two-sided p) of ``statistic(positions)``, a paired difference, over the resamples
    (those where it is None, undefined, left out); (None, None) where it is undefined on every one."""
    values = resampling.values(statistic)
    if not len(values):
        return None, None
    below, above = np.sum(values <= 0), np.sum(values >= 0)
    p = min(1.0, 2 * (min(below, above) + 1) / (len(values) + 1))
    return [float(v) for v in np.percentile(values, [2.5, 97.5])], float(p)


def auc_difference(truth, first, second, positive, resampling):
    """Each ROC-AUC and the paired difference first - second: DeLong where every unit is an image, else the
    bootstrap over ``resampling``'s whole groups."""
    auc_a, auc_b = roc_auc(truth, first, positive), roc_auc(truth, second, positive)
    if auc_a is None:
        return {"a": None, "b": None, "difference": None, "ci95": None, "p": None,
                "method": "not defined: a class has no shared image"}
    if resampling.grouped:
        def resampled(rows):  # None where a resample lacks a class (a patient's films of two classes can do that)
            pair = roc_auc(truth[rows], first[rows], positive), roc_auc(truth[rows], second[rows], positive)
            return None if None in pair else pair[0] - pair[1]

        interval, p = bootstrap_difference(resampling, resampled)
        method = f"paired bootstrap ({resampling.method()}); p: {BOOTSTRAP_P}"
    else:
        from scipy.stats import norm

        difference, variance = auc_and_variance(truth, first, positive, other=second)
        if variance > 0:
            half = Z_95 * math.sqrt(variance)
            interval = [max(-1.0, difference - half), min(1.0, difference + half)]
            p = float(2 * norm.sf(abs(difference) / math.sqrt(variance)))
        else:  # the same scores (or the same ranking) on every image
            interval, p = [difference, difference], 1.0 if difference == 0 else 0.0
        method = "DeLong's paired test (normal approximation), images independent: no patient has two shared images"
    return {"a": auc_a, "b": auc_b, "difference": auc_a - auc_b, "ci95": interval, "p": p, "method": method}


def mcnemar(truth, said_a, said_b, resampling):
    """The two sets of decisions: McNemar's exact test, and the accuracy difference with its bootstrap interval.

    McNemar counts images as independent pairs; where patients repeat, the row's p is the bootstrap's over whole
    patients instead (McNemar's stays in ``mcnemar_p``, too small there)."""
    from scipy.stats import binomtest

    right_a, right_b = said_a == truth, said_b == truth
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    exact = float(binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0
    interval, bootstrap_p = bootstrap_difference(resampling,
                                                 lambda rows: np.mean(right_a[rows]) - np.mean(right_b[rows]))
    mcnemar_method = ("McNemar's exact test (two-sided binomial on the discordant images), each model at its own "
                      "operating point (predictions.csv's predicted_class)")
    if resampling.grouped:
        p, method = bootstrap_p, (f"p: {BOOTSTRAP_P}, since {resampling.unit} repeat (McNemar's, mcnemar_p, takes "
                                  f"images as independent); {mcnemar_method}")
    else:
        p, method = exact, mcnemar_method
    return {"a_right_b_wrong": only_a, "a_wrong_b_right": only_b, "both_right": int(np.sum(right_a & right_b)),
            "both_wrong": int(np.sum(~right_a & ~right_b)), "accuracy_a": float(right_a.mean()),
            "accuracy_b": float(right_b.mean()), "difference": float(right_a.mean() - right_b.mean()),
            "ci95": interval, "p": p, "mcnemar_p": exact,
            "method": f"{method}; interval of the accuracy difference: {resampling.method()}"}


def brier_difference(truth, first, second, positive, resampling):
    """Each Brier score (of the positive class's probability) and the paired difference with its bootstrap interval
    and p-value."""
    hits = (truth == positive).astype(np.float64)
    error_a, error_b = (first[:, positive] - hits) ** 2, (second[:, positive] - hits) ** 2
    interval, p = bootstrap_difference(resampling, lambda rows: np.mean(error_a[rows] - error_b[rows]))
    return {"a": float(error_a.mean()), "b": float(error_b.mean()), "difference": float(np.mean(error_a - error_b)),
            "ci95": interval, "p": p, "method": f"paired bootstrap ({resampling.method()}); p: {BOOTSTRAP_P}"}


def compare(a, b, labels_path=None):
    """compare.json's content for two Evaluations."""
    files = shared_images(a, b)
    classes = a.classes
    truth = np.array([classes.index(a.rows[name]["true_class"]) for name in files])
    order = [b.classes.index(name) for name in classes]  # B's columns in A's class order
    first = np.array([a.rows[name]["p"] for name in files])
    second = np.array([b.rows[name]["p"] for name in files])[:, order]
    said_a = np.array([classes.index(a.rows[name]["predicted_class"]) for name in files])
    said_b = np.array([classes.index(b.rows[name]["predicted_class"]) for name in files])
    groups, unit = shared_groups(a, b, files, labels_path)
    resampling = Resampling(truth, groups, unit)
    positive = classes.index(a.positive_class) if len(classes) == 2 and a.positive_class in classes else None
    result = {"a": a.record(len(files)), "b": b.record(len(files)), "shared_images": len(files),
              "classes": classes, "positive_class": a.positive_class, "difference": "A minus B",
              "intervals": resampling.record(),
              "roc_auc": auc_difference(truth, first, second, positive, resampling),
              "decisions": mcnemar(truth, said_a, said_b, resampling)}
    result["roc_auc"]["what"] = ("binary, positive class " + repr(a.positive_class) if positive is not None
                                 else "macro average of one-vs-rest AUCs")
    if positive is not None:
        result["brier"] = brier_difference(truth, first, second, positive, resampling)
    return result


def format_table(result):
    """The printed comparison: the inputs, then one line per statistic (A, B, A - B, its interval, p)."""
    a, b = result["a"], result["b"]
    lines = [f"A: {a['folder']} ({a['images']} images)", f"B: {b['folder']} ({b['images']} images)",
             f"shared: {result['shared_images']} images; intervals resample {result['intervals']['text']}", "",
             f"{'':10}{'A':>8}{'B':>8}{'A - B':>9}  {'95% CI':<17}{'p':>7}"]
    decisions = result["decisions"]
    rows = [("ROC-AUC", result["roc_auc"]),
            ("accuracy", dict(decisions, a=decisions["accuracy_a"], b=decisions["accuracy_b"]))]
    if "brier" in result:
        rows.append(("Brier", result["brier"]))
    for name, row in rows:
        if row["difference"] is None:
            lines.append(f"{name:10}n/a: {row['method']}")
            continue
        interval = "n/a" if row["ci95"] is None else f"{row['ci95'][0]:+.4f}..{row['ci95'][1]:+.4f}"
        lines.append(f"{name:10}{row['a']:8.4f}{row['b']:8.4f}{row['difference']:+9.4f}  {interval:<17}"
                     f"{_p(row['p']):>7}")
    lines += ["", f"ROC-AUC: {result['roc_auc']['method']}",
              f"accuracy: each at its own operating point; {decisions['a_right_b_wrong']} images only A got right, "
              f"{decisions['a_wrong_b_right']} only B; McNemar's exact p {_p(decisions['mcnemar_p'])}"
              + (f" (images as independent; p above: the bootstrap over whole {result['intervals']['unit']})"
                 if result["intervals"]["unit"] != "images" else "")]
    return "\n".join(lines)


def _p(value):
    return "n/a" if value is None else ("<0.0001" if value < 1e-4 else f"{value:.4f}")


def default_out(eval_a, eval_b):
    """EVAL_A/compare-with-<B's parent and folder name>: inside a folder the user named, one per B."""
    parts = os.path.realpath(eval_b).rstrip(os.sep).split(os.sep)[-2:]
    return os.path.join(eval_a, "compare-with-" + re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(p for p in parts if p)))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m models.compare",
                                     description=" ".join(__doc__.split("\n\n")[i].replace("\n", " ")
                                                          for i in (0, 2, 3)))
    parser.add_argument("eval_a", metavar="EVAL_A", help="a folder test_model.py wrote (report.json, predictions.csv)")
    parser.add_argument("eval_b", metavar="EVAL_B", help="another such folder, on the same test images (or some)")
    parser.add_argument("--out", metavar="DIR",
                        help="folder for compare.json (default: EVAL_A/compare-with-<B's last two folder names>)")
    parser.add_argument("--labels", metavar="TEST_LABELS",
                        help="the test label file, for its patients (groups): needed only for reports written before "
                             "predictions.csv had a group column (default: the group columns of the two reports; "
                             "without any, every image its own unit)")
    args = parser.parse_args(argv)
    a, b = Evaluation(args.eval_a, "EVAL_A"), Evaluation(args.eval_b, "EVAL_B")
    out = args.out or default_out(args.eval_a, args.eval_b)
    check_output_folder(out, "--out")
    result = compare(a, b, args.labels)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "compare.json"), result)
    print(format_table(result))
    print(f"\ncompare.json in {out}")


if __name__ == "__main__":
    run_cli(main)
