"""The paper's figures beside ours (the last step of `make reproduce`).

    .venv/bin/python -m bench.reproduce REPORT_JSON OUT_JSON

REPORT_JSON is test_model.py's report of a head trained with ``--recipe xvision`` on ``scraper.process --protocol
xvision``; OUT_JSON gets the table as JSON, and stdout as Markdown. Our figures come with 95% Wilson intervals, so a
reader sees whether the paper's number is within what a test set of 76 images can tell apart.
"""

import argparse
import os

from models.errors import UserError, run_cli
from models.fileio import read_json, write_json
from models.metrics import wilson_interval

# Xvision's README (github.com/ayush1997/Xvision): the VGG-16 transfer-learning result on its test set.
PAPER = {"normal": {"precision": 0.7755, "recall": 0.76, "support": 50},
         "nodule": {"precision": 0.5556, "recall": 0.5769, "support": 26},
         "accuracy": 0.6933}
PAPER_NOTE = ("the paper's recalls on 50 normal + 26 nodule test images mean 38 + 15 = 53 right of 76 = 69.7 %, "
              "not the 69.33 % it states (52 of 75 would give 69.33 %)")


def compare(report):
    """Rows of (figure, paper, ours, our 95% interval, the paper's figure inside it) from a test_model report."""
    classes = report.get("classes")
    if sorted(classes or []) != ["nodule", "normal"]:
        raise UserError(f"the report is about classes {classes}, not normal and nodule: run make reproduce")
    counts = report["confusion_matrix"]["counts"]
    rows = []
    for c, name in enumerate(classes):
        true_positive = counts[c][c]
        predicted = sum(row[c] for row in counts)
        support = sum(counts[c])
        for figure, hits, total in (("precision", true_positive, predicted), ("recall", true_positive, support)):
            ours = hits / total if total else 0.0
            rows.append(_row(f"{name} {figure}", PAPER[name][figure], ours, wilson_interval(hits, total),
                             f"{hits}/{total}"))
        rows.append({"figure": f"{name} test images", "paper": PAPER[name]["support"], "ours": support})
    correct, n = report["accuracy"]["correct"], report["n"]
    rows.append(_row("accuracy", PAPER["accuracy"], correct / n, wilson_interval(correct, n), f"{correct}/{n}"))
    return rows


def _row(figure, paper, ours, interval, counts):
    return {"figure": figure, "paper": paper, "ours": ours, "ours_counts": counts, "ours_ci95": interval,
            "paper_inside_ci95": interval[0] <= paper <= interval[1]}


def format_rows(rows):
    lines = ["| figure | paper | ours | our 95% CI (Wilson) | paper inside it |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        if "ours_ci95" in row:
            low, high = row["ours_ci95"]
            lines.append(f"| {row['figure']} | {row['paper']:.4f} | {row['ours']:.4f} ({row['ours_counts']}) | "
                         f"{low:.3f}-{high:.3f} | {'yes' if row['paper_inside_ci95'] else 'no'} |")
        else:
            lines.append(f"| {row['figure']} | {row['paper']} | {row['ours']} | | |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("report", metavar="REPORT_JSON", help="report.json written by test_model.py")
    parser.add_argument("out", metavar="OUT_JSON", help="where to write the comparison")
    args = parser.parse_args(argv)
    report = read_json(args.report, "test report")
    rows = compare(report)
    write_json(args.out, {"paper": "Xvision (ayush1997/Xvision): VGG-16 codes, 2-layer head, normal vs nodule",
                          "paper_note": PAPER_NOTE, "ours": {"report": os.path.abspath(args.report),
                                                             "epoch": report.get("epoch"),
                                                             "models_dir": report.get("models_dir")},
                          "rows": rows})
    print(format_rows(rows))
    print(f"\nnote: {PAPER_NOTE}\nwrote {args.out}")


if __name__ == "__main__":
    run_cli(main)
