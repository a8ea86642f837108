"""Step 2: label the scraped images by MeSH term and split them into train and test sets by report.

    python -m scraper.process DATA_DIR OUT [--classes normal nodule] [--test-fraction 0.3] [--seed 0]
                              [--protocol full|xvision]
    python -m scraper.process --from-folders ROOT OUT [--group-pattern REGEX] [--test-fraction 0.3] [--seed 0]

Writes OUT/train/, OUT/test/ (hard links, or copies across file systems), OUT/train_labels.json,
OUT/test_labels.json (with each image's group: its report, or its --group-pattern id) and OUT/split.json (counts per
class and side, seed, reports per side, dropped images). All views of one report (all images of one group) go to the
same side, so no report is both trained and tested on; train_model.py keeps the groups whole in its validation too.
"""

import argparse
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass

from models.errors import UserError, run_cli
from models.fileio import check_output_folder, write_json
from models.images import IMAGE_EXTENSIONS
from models.labels import save_labels
from models.splits import grouped_holdout, groups_from_pattern, shuffled_groups
from scraper import mesh

SIDES = ("train", "test")
# The original Xvision split's sizes (scraper/process.ipynb), in images.
XVISION_SIZES = {"train": {"normal": 100, "nodule": 77}, "test": {"normal": 50, "nodule": 26}}
RUNNING_MARKER = ".process-running"


@dataclass(frozen=True)
class Item:
    name: str  # file name in OUT/train or OUT/test
    source: str  # path of the image file
    label: str
    report: str


def labelled_items(data_dir, classes):
    """Items of DATA_DIR/datas.json with exactly one class, the dropped images and the number without a class."""
    records, problems = mesh.read_records(data_dir)
    dropped = [{"image": image, "reason": reason, "detail": detail} for image, reason, detail in problems]
    items, unlabelled = [], 0
    for record in records:
        found = mesh.classes_of(record.major, classes)
        if not found:
            unlabelled += 1
            continue
        if len(found) > 1:
            dropped.append({"image": record.image_id, "reason": "matches several classes", "detail": ", ".join(found)})
            continue
        source = next((p for p in record.candidates if os.path.isfile(p)), None)
        if source is None:
            looked = ", ".join(os.path.relpath(p, data_dir) for p in record.candidates)
            dropped.append({"image": record.image_id, "reason": "missing image file", "detail": f"looked for {looked}"})
            continue
        name = record.image_id + os.path.splitext(source)[1].lower()
        items.append(Item(name, source, found[0], record.report_id))
    return items, dropped, unlabelled


def folder_items(root, group_pattern=None):
    """Items of ROOT/<class>/<image>, the classes (the sub-folders, sorted) and the dropped entries (a broken link, a
    folder named like an image). Each file is its own report (group), or, with ``group_pattern``, the files whose
    names give the same first capture group form one. Hidden files (.name) are not images, as everywhere here."""
    if not os.path.isdir(root):
        raise UserError(f"--from-folders: folder not found: {root}")
    found, dropped = {}, []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith("."):
            files = []
            for f in sorted(os.scandir(entry.path), key=lambda f: f.name):
                if f.name.startswith(".") or not f.name.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                if f.is_file():  # follows links: a link to an image counts as the image
                    files.append(f.name)
                else:
                    reason = "broken link" if f.is_symlink() and not os.path.exists(f.path) else "not a file"
                    dropped.append({"image": f"{entry.name}/{f.name}", "reason": reason, "detail": f.path})
            if files:
                found[entry.name] = files
    if len(found) < 2:
        raise UserError(f"--from-folders needs at least 2 sub-folders of {root} with images "
                        f"({', '.join(IMAGE_EXTENSIONS)}), one per class; found {sorted(found) or 'none'}")
    counts = Counter(name for files in found.values() for name in files)
    listed = [(label, name) for label, files in found.items() for name in files]
    if group_pattern:
        groups = groups_from_pattern([name for _, name in listed], group_pattern)
    else:
        groups = [f"{label}/{name}" for label, name in listed]
    items = []
    for (label, name), group in zip(listed, groups):
        out_name = f"{label}_{name}" if counts[name] > 1 else name  # same file name in several classes
        items.append(Item(out_name, os.path.join(root, label, name), label, group))
    clashes = [n for n, c in Counter(i.name for i in items).items() if c > 1]
    if clashes:
        raise UserError(f"--from-folders: file names still clash after prefixing the class: {clashes[:5]}; rename them")
    return list(found), items, dropped


def split_full(items, classes, test_fraction, seed):
    """Every image: per class, whole reports go to test until it holds ``test_fraction`` of the images."""
    kept, held = grouped_holdout([i.label for i in items], [i.report for i in items], classes, test_fraction, seed)
    return {"train": [items[i] for i in kept], "test": [items[i] for i in held]}, []


def split_xvision(items, classes, seed):
    """The original's sizes (XVISION_SIZES), drawn by report: test first, then train from the other reports.

    A report that is only partly needed gives its first views and leaves the rest unused (never on the other side).
    """
    by_class, members = shuffled_groups([i.label for i in items], [i.report for i in items], classes, seed)
    report_images = {report: sorted((items[i] for i in indices), key=lambda i: i.name)
                     for report, indices in members.items()}
    sides, shortfall = {side: [] for side in SIDES}, []
    for label in classes:
        reports = iter(by_class[label])
        for side in ("test", "train"):
            need = XVISION_SIZES[side][label]
            for report in reports:
                taken = report_images[report][:need]
                sides[side].extend(taken)
                need -= len(taken)
                if need == 0:
                    break
            if need:
                shortfall.append(f"{side} {label}: {XVISION_SIZES[side][label] - need} of "
                                 f"{XVISION_SIZES[side][label]} images")
    return sides, shortfall


def _place(source, dest):
    """A hard link to the file ``source`` names (the link's target when it is a symbolic link), else a copy."""
    source = os.path.realpath(source)  # os.link's follow_symlinks is ignored on Linux before Python 3.13
    try:
        os.link(source, dest)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, dest)


def write_split(out, sides, classes, info):
    """Write OUT/train, OUT/test, their label files and (last) split.json; replaces an earlier output of this step."""
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    marker, split_path = os.path.join(out, RUNNING_MARKER), os.path.join(out, "split.json")
    ours = os.path.exists(split_path) or os.path.exists(marker)
    for side in SIDES:
        if os.path.exists(os.path.join(out, side)) and not ours:
            raise UserError(f"{os.path.join(out, side)} exists and was not written by this step; "
                            "choose an empty output folder")
    open(marker, "w").close()
    old = [split_path] + [os.path.join(out, name) for side in SIDES for name in (side, f"{side}_labels.json")]
    for path in old:
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    counts = {}
    for side in SIDES:
        folder = os.path.join(out, side)
        os.makedirs(folder)
        for item in sides[side]:
            _place(item.source, os.path.join(folder, item.name))
        save_labels(os.path.join(out, f"{side}_labels.json"), classes, {i.name: i.label for i in sides[side]},
                    groups={i.name: i.report for i in sides[side]})
        counts[side] = {label: {"images": sum(i.label == label for i in sides[side]),
                                "reports": len({i.report for i in sides[side] if i.label == label})}
                        for label in classes}
    reports = {side: sorted({i.report for i in sides[side]}) for side in SIDES}
    write_json(split_path, {**info, "classes": list(classes), "counts": counts,
                            "images": {side: len(sides[side]) for side in SIDES}, "reports": reports})
    os.remove(marker)
    return counts


def _inside(path, folder):
    return os.path.commonpath([path, folder]) == folder


def _fraction(text):
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m scraper.process",
        description="Label scraped chest X-rays by MeSH term and split them into train/test sets by report "
                    "(no report on both sides). Reads DATA_DIR/datas.json (this scraper's or the original "
                    "Xvision scraper's) or, with --from-folders, a folder of class sub-folders.")
    parser.add_argument("data_dir", nargs="?", metavar="DATA_DIR",
                        help="folder holding datas.json and images/ (made by scraper.py)")
    parser.add_argument("out", metavar="OUT", help="output folder for train/, test/, *_labels.json and split.json")
    parser.add_argument("--from-folders", metavar="ROOT",
                        help="instead of DATA_DIR: ROOT/<class>/<image> folders; classes in sorted order, "
                             "every file its own group unless --group-pattern says otherwise")
    parser.add_argument("--group-pattern", metavar="REGEX",
                        help="with --from-folders: files whose names give the same first capture group (re.search) "
                             r"are one group (a patient), kept on one side of the split, e.g. '^(\d+)_' for NIH "
                             "file names like 00001234_000.png; a file it does not match is an error")
    parser.add_argument("--classes", nargs="+", metavar="CLASS",
                        help="class names matched on MeSH major terms: 'normal' = the term 'normal', others = "
                             "the term's first part, case-insensitive (default: normal nodule)")
    parser.add_argument("--test-fraction", type=_fraction, default=0.3,
                        help="share of each class's images that go to test, in whole reports (default 0.3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random split (default 0)")
    parser.add_argument("--protocol", choices=("full", "xvision"), default="full",
                        help="full: every labelled image; xvision: the original's sizes (train 100 normal + "
                             "77 nodule, test 50 + 26) drawn by report (default full)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if (args.data_dir is None) == (args.from_folders is None):
        raise UserError("give either DATA_DIR and OUT, or --from-folders ROOT and OUT (see --help)")
    check_output_folder(args.out, "OUT")
    out = os.path.abspath(args.out)
    source = os.path.abspath(args.data_dir or args.from_folders)
    if args.from_folders:
        overlap = _inside(out, source) or _inside(source, out)
    else:
        overlap = any(_inside(source, os.path.join(out, side)) for side in SIDES)
    if overlap:
        raise UserError(f"the output folder {args.out} and the input folder {source} overlap; "
                        "write the split to a separate folder")
    if args.group_pattern and not args.from_folders:
        raise UserError("--group-pattern applies to --from-folders; Open-i images are grouped by report already")
    info = {"protocol": args.protocol, "seed": args.seed, "group_pattern": args.group_pattern}
    if args.from_folders:
        if args.classes or args.protocol != "full":
            raise UserError("--classes and --protocol xvision do not apply to --from-folders "
                            "(the sub-folders are the classes)")
        classes, items, dropped = folder_items(source, args.group_pattern)
        unlabelled = 0
        info["source"] = {"folders": source}
    else:
        classes = args.classes or ["normal", "nodule"]
        if len({" ".join(c.split()).lower() for c in classes}) != len(classes) or not all(c.strip() for c in classes):
            raise UserError(f"--classes needs distinct, non-empty names, got {classes}")
        if args.protocol == "xvision" and sorted(classes) != ["nodule", "normal"]:
            raise UserError("--protocol xvision is defined for --classes normal nodule only")
        items, dropped, unlabelled = labelled_items(source, classes)
        info["source"] = {"datas": os.path.join(source, "datas.json")}
    present = {i.label for i in items}
    empty = [c for c in classes if c not in present]
    dropped_by_reason = dict(Counter(d["reason"] for d in dropped))
    if empty:
        reasons = ", ".join(f"{n} {r}" for r, n in dropped_by_reason.items()) or "none dropped"
        raise UserError(f"no usable images for class(es) {empty} in {source} ({reasons}); check --classes "
                        f"against the MeSH terms, and that the images are in {os.path.join(source, 'images')}")
    if args.protocol == "xvision":
        sides, shortfall = split_xvision(items, classes, args.seed)
    else:
        sides, shortfall = split_full(items, classes, args.test_fraction, args.seed)
        info["test_fraction"] = args.test_fraction
    info.update(unlabelled_images=unlabelled, dropped_by_reason=dropped_by_reason,
                dropped=dropped, shortfall=shortfall)
    counts = write_split(out, sides, classes, info)
    for side in SIDES:
        parts = ", ".join(f"{c} {counts[side][c]['images']} images / {counts[side][c]['reports']} reports"
                          for c in classes)
        print(f"{side}: {parts}")
    if dropped:
        print("dropped: " + ", ".join(f"{n} {reason}" for reason, n in info["dropped_by_reason"].items())
              + " (listed in split.json)")
    print(f"wrote {out}/train, {out}/test, train_labels.json, test_labels.json, split.json")
    if shortfall:
        print("warning: the data has fewer images than the xvision protocol needs: " + "; ".join(shortfall),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
