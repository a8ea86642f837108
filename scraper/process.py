"""Step 2: label the scraped images by MeSH term and split them into train and test sets by report (or, from class
folders, by patient where --group-pattern / --group-by says who the patient is).

    python -m scraper.process DATA_DIR OUT [--classes normal nodule] [--test-fraction 0.3] [--seed 0]
                              [--protocol full|xvision]
    python -m scraper.process --from-folders ROOT OUT [--group-pattern REGEX | --group-by patient] [--views PA ...]
                              [--allow-burned-in] [--allow-modality MODALITY ...] [--allow-body-part PART ...]
                              [--test-fraction 0.3] [--seed 0]

Writes OUT/train/, OUT/test/ (hard links, or copies across file systems; a DICOM file as the 8-bit PNG of its image,
so that none of its other values reaches OUT), OUT/train_labels.json, OUT/test_labels.json (with each image's group:
its report, its --group-pattern id, or a salted hash of its Patient ID) and OUT/split.json (counts per class and side,
seed, reports (groups) per side, each image's View Position, dropped images: unreadable, truncated, unless
--allow-burned-in marked as carrying burned-in text, unless --allow-modality / --allow-body-part not a chest radiograph
by their DICOM header (``models.dicom.Scope``), all found before the split is drawn). All views of one report (all
images of one group) go to the same side, so no report is both trained and tested on; train_model.py keeps the
groups whole in its validation too. From class folders without a grouping, file names that share a patient prefix
(NIH's 00001234_000.png) or DICOM files that share a Patient ID are warned of, with the patients found on both sides
and the option that keeps them on one (``split.json``'s "leakage").
"""

import argparse
import os
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, replace

from models.cli import add_group_arguments, add_scope_arguments, fraction, scope_of
from models.errors import UserError, counted, run_cli
from models.dicom import (DICOM_EXTENSIONS, OUT_OF_SCOPE, DicomError, OutOfScope, Scope, burned_in, dicom_header,
                          patient_id, read_dicom, view_position)
from models.fileio import atomic_path, check_output_folder, link_or_copy, write_json
from models.images import IMAGE_EXTENSIONS, RASTER_EXTENSIONS, is_dicom_file, is_image_name
from models.labels import patient_hasher, save_labels
from models.splits import grouped_holdout, image_groups, shuffled_groups
from scraper import mesh

SIDES = ("train", "test")
# The original Xvision split's sizes (scraper/process.ipynb), in images.
XVISION_SIZES = {"train": {"normal": 100, "nodule": 77}, "test": {"normal": 50, "nodule": 26}}
RUNNING_MARKER = ".process-running"
VIEW_MIX_GAP = 0.20  # warn when a View Position's share differs by more than this between two classes
NIH_PREFIX = r"^(\d+)_"  # a patient number before the image's: NIH ChestX-ray14's 00001234_000.png


@dataclass(frozen=True)
class Item:
    name: str  # file name in OUT/train or OUT/test
    source: str  # path of the image file
    label: str
    report: str
    view: str = "unknown"  # View Position (DICOM files only)
    patient: str = None  # Patient ID (DICOM files only): for the leakage warning, never written out


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


def folder_items(root, group_pattern=None, group_by=None, keep_views=None, allow_burned_in=False, scope=Scope()):
    """Items of ROOT/<class>/<image>, the classes (the sub-folders, sorted) and the dropped entries (a broken link, a
    folder named like an image, a DICOM file whose header says it is not a chest radiograph unless ``scope`` accepts
    it, one holding no single decodable image or not all of its pixel data, a DICOM film whose Burned In Annotation
    says YES unless ``allow_burned_in``, a View Position not in ``keep_views``): all
    found from the headers, before any split is drawn. Each file is its own report (group); with ``group_pattern``,
    the files whose names give the same first capture group form one; with ``group_by='patient'``, the DICOM files of
    one Patient ID. Hidden files (.name) are not images, as everywhere here; DICOM files are images whatever their
    names."""
    if not os.path.isdir(root):
        raise UserError(f"--from-folders: folder not found: {root}")
    found, dropped, views, patients = {}, [], {}, {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith("."):
            files = []
            for f in sorted(os.scandir(entry.path), key=lambda f: f.name):
                if not is_image_name(entry.path, f.name):
                    continue
                image = f"{entry.name}/{f.name}"
                if not f.is_file():  # follows links: a link to an image counts as the image
                    reason = "broken link" if f.is_symlink() and not os.path.exists(f.path) else "not a file"
                    dropped.append({"image": image, "reason": reason, "detail": f.path})
                elif is_dicom_file(f.path):
                    try:
                        header = dicom_header(f.path, scope)
                    except OutOfScope as err:
                        print(f"warning: leaving out {image}: {err}", file=sys.stderr)
                        dropped.append({"image": image, "reason": f"{OUT_OF_SCOPE}: {err.reason}",
                                        "detail": str(err)})
                        continue
                    except DicomError as err:
                        print(f"warning: skipping {image}: {err}", file=sys.stderr)
                        dropped.append({"image": image, "reason": "unreadable DICOM", "detail": str(err)})
                        continue
                    if burned_in(header) and not allow_burned_in:
                        print(f"warning: leaving out {image}: its Burned In Annotation says YES (text in its pixels, "
                              f"often the patient's name or ID); --allow-burned-in keeps such films", file=sys.stderr)
                        dropped.append({"image": image, "reason": "burned-in annotation",
                                        "detail": "Burned In Annotation YES"})
                        continue
                    views[image], patients[image] = view_position(header), patient_id(header)
                    files.append(f.name)
                else:
                    files.append(f.name)
            if files:
                found[entry.name] = files
    if len(found) < 2:
        raise UserError(f"--from-folders needs at least 2 sub-folders of {root} with images "
                        f"({', '.join(IMAGE_EXTENSIONS)}, or DICOM files of any name), one per class; found "
                        f"{sorted(found) or 'none'}")
    listed = [(label, name) for label, files in found.items() for name in files]
    view_of = {image: views.get(image, "unknown") for image in (f"{lb}/{n}" for lb, n in listed)}
    if keep_views:
        wanted = {v.upper() for v in keep_views}
        for image in [image for image, view in view_of.items() if view.upper() not in wanted]:
            dropped.append({"image": image, "reason": "view not in --views", "detail": view_of[image]})
        listed = [(label, name) for label, name in listed if view_of[f"{label}/{name}"].upper() in wanted]
        if not listed:
            raise UserError(f"--views {' '.join(keep_views)}: no image of {root} has one of these View Positions")
    groups = image_groups(root, [label for label, _ in listed], [name for _, name in listed], group_pattern, group_by,
                          patients)
    out_names = [output_name(name) for _, name in listed]
    counts = Counter(out_names)
    items = []
    for (label, name), out_name, group in zip(listed, out_names, groups):
        out_name = f"{label}_{out_name}" if counts[out_name] > 1 else out_name  # same file name in several classes
        items.append(Item(out_name, os.path.join(root, label, name), label, group, view_of[f"{label}/{name}"],
                          patients.get(f"{label}/{name}")))
    clashes = [n for n, c in Counter(i.name for i in items).items() if c > 1]
    if clashes:
        raise UserError(f"--from-folders: file names still clash after prefixing the class: {clashes[:5]}; rename them")
    return list(found), items, dropped


def output_name(name):
    """The name of an image in OUT: its own, or for a DICOM file (written as a PNG) its name with .png for .dcm."""
    if name.lower().endswith(RASTER_EXTENSIONS):
        return name
    dicom = next((ext for ext in DICOM_EXTENSIONS if name.lower().endswith(ext)), "")
    return name[:len(name) - len(dicom)] + ".png"


def evident_patients(items):
    """(the option that would group ``items`` by patient, what shows it, each item's patient or None) where they
    evidently share patients though no grouping was given: most file names start with a number and an underscore
    (NIH's ``NIH_PREFIX``) shared by several files, else most are DICOM files with a Patient ID, several sharing one;
    (None, None, None) where not."""
    prefixes = [re.match(NIH_PREFIX, os.path.basename(i.source)) for i in items]
    prefixes = [m.group(1) if m else None for m in prefixes]
    for option, shown_by, keys in ((f"--group-pattern '{NIH_PREFIX}'", "their file names' number prefix", prefixes),
                                   ("--group-by patient", "their DICOM Patient ID", [i.patient for i in items])):
        found = Counter(key for key in keys if key is not None)
        if sum(found.values()) * 2 > len(items) and any(n > 1 for n in found.values()):
            return option, shown_by, keys
    return None, None, None


def leakage(sides):
    """split.json's "leakage" (or None) for a split drawn without a grouping: the option that evidently groups the
    images by patient, how many patients have several images, and how many have images on both sides."""
    items = [i for side in SIDES for i in sides[side]]
    option, shown_by, keys = evident_patients(items)
    if option is None:
        return None
    key_of = dict(zip(map(id, items), keys))
    on = {side: {key_of[id(i)] for i in sides[side]} - {None} for side in SIDES}
    several = sum(n > 1 for n in Counter(k for k in keys if k is not None).values())
    return {"suggested": option, "shown_by": shown_by, "patients_with_several_images": several,
            "patients_on_both_sides": len(on["train"] & on["test"])}


def hashed_groups(sides):
    """``sides`` with each item's group (a Patient ID) hidden behind a hash (``models.labels.patient_hasher``)."""
    hashed = patient_hasher()
    return {side: [replace(i, report=hashed(i.report)) for i in items] for side, items in sides.items()}


def view_mix(items, classes):
    """{class: {View Position: share of the class's images}} and a warning (or None) where two classes' shares of
    one view differ by more than VIEW_MIX_GAP: a model could learn the projection instead of the finding."""
    mix = {}
    for label in classes:
        views = Counter(i.view for i in items if i.label == label)
        total = sum(views.values())
        mix[label] = {view: n / total for view, n in sorted(views.items())} if total else {}
    every = sorted({view for shares in mix.values() for view in shares})
    gaps = [(view, a, b) for view in every for a in classes for b in classes
            if a < b and abs(mix[a].get(view, 0) - mix[b].get(view, 0)) > VIEW_MIX_GAP]
    if not gaps:
        return mix, None
    shown = "; ".join(", ".join(f"{view} {share:.0%}" for view, share in mix[label].items()) + f" of {label}"
                      for label in classes)
    return mix, (f"the classes' View Positions differ ({shown}): a model can learn the projection (AP vs PA) instead "
                 f"of the finding; --views PA keeps only PA films")


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
    """A hard link to the file ``source`` names (the link's target when it is a symbolic link), else a copy; a DICOM
    file becomes the 8-bit PNG of its image (``models.dicom``), so that no value of its header is written."""
    if is_dicom_file(source):
        image = read_dicom(source)
        with atomic_path(dest) as partial:
            image.save(partial, format="PNG")
        return
    link_or_copy(source, dest)


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
        placed = []
        for item in sides[side]:
            try:
                _place(item.source, os.path.join(folder, item.name))
                placed.append(item)
            except DicomError as err:  # its header was fine, its pixels are not
                image = f"{item.label}/{os.path.basename(item.source)}"
                print(f"warning: skipping {image}: {err}", file=sys.stderr)
                info["dropped"].append({"image": image, "reason": "unreadable DICOM", "detail": str(err)})
        sides[side] = placed
        save_labels(os.path.join(out, f"{side}_labels.json"), classes, {i.name: i.label for i in sides[side]},
                    groups={i.name: i.report for i in sides[side]}, group_unit=info.get("group_unit"))
        counts[side] = {label: {"images": sum(i.label == label for i in sides[side]),
                                "reports": len({i.report for i in sides[side] if i.label == label})}
                        for label in classes}
    reports = {side: sorted({i.report for i in sides[side]}) for side in SIDES}
    info["dropped_by_reason"] = dict(Counter(d["reason"] for d in info["dropped"]))
    info["view_mix"], info["view_warning"] = view_mix([i for side in SIDES for i in sides[side]], classes)
    views = {side: {i.name: i.view for i in sides[side]} for side in SIDES}
    write_json(split_path, {**info, "classes": list(classes), "counts": counts,
                            "images": {side: len(sides[side]) for side in SIDES}, "reports": reports,
                            "views": views})
    os.remove(marker)
    return counts


def _inside(path, folder):
    return os.path.commonpath([path, folder]) == folder


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m scraper.process",
        description="Split chest X-rays into train/test sets by group, no group on both sides. From DATA_DIR/"
                    "datas.json (this scraper's or the original Xvision scraper's): labelled by MeSH term, one "
                    "group per report. With --from-folders: the class sub-folders of ROOT, one group per patient "
                    "as --group-pattern or --group-by says (else each image its own).")
    parser.add_argument("data_dir", nargs="?", metavar="DATA_DIR",
                        help="folder holding datas.json and images/ (made by scraper.py)")
    parser.add_argument("out", metavar="OUT", help="output folder for train/, test/, *_labels.json and split.json")
    parser.add_argument("--from-folders", metavar="ROOT",
                        help="instead of DATA_DIR: ROOT/<class>/<image> folders; classes in sorted order, "
                             "every file its own group unless --group-pattern says otherwise")
    add_group_arguments(parser, "with --from-folders: ")
    parser.add_argument("--allow-burned-in", action="store_true",
                        help="with --from-folders: keep DICOM films whose Burned In Annotation says YES (text in the "
                             "pixels, often the patient's name or ID, which then reaches the output PNGs, plots and "
                             "heatmaps); by default they are named and left out")
    add_scope_arguments(parser)
    parser.add_argument("--views", nargs="+", metavar="VIEW",
                        help="with --from-folders: keep only images of these DICOM View Positions (e.g. PA; "
                             "'unknown' for images that record none); the others are dropped and listed")
    parser.add_argument("--classes", nargs="+", metavar="CLASS",
                        help="class names matched on MeSH major terms: 'normal' = the term 'normal', others = "
                             "the term's first part, case-insensitive (default: normal nodule)")
    parser.add_argument("--test-fraction", type=fraction, default=0.3,
                        help="share of each class's images that go to test, in whole reports (or groups, with "
                             "--from-folders) (default 0.3)")
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
    given = [flag for flag, value in (("--group-pattern", args.group_pattern), ("--group-by", args.group_by),
                                      ("--views", args.views), ("--allow-burned-in", args.allow_burned_in),
                                      ("--allow-modality", args.allow_modality),
                                      ("--allow-body-part", args.allow_body_part)) if value]
    if given and not args.from_folders:
        raise UserError(f"{given[0]} applies to --from-folders: the images of an Open-i download are PNGs grouped by "
                        f"report already")
    scope = scope_of(args)
    info = {"protocol": args.protocol, "seed": args.seed, "group_pattern": args.group_pattern,
            "burned_in_allowed": args.allow_burned_in, **scope.describe(),
            "group_by": args.group_by, "views_kept": args.views,
            # what a group is, for the intervals of the test report (none given: each file its own)
            "group_unit": "reports" if not args.from_folders else
            "patients" if args.group_pattern or args.group_by else None}
    if args.from_folders:
        if args.classes or args.protocol != "full":
            raise UserError("--classes and --protocol xvision do not apply to --from-folders "
                            "(the sub-folders are the classes)")
        classes, items, dropped = folder_items(source, args.group_pattern, args.group_by, args.views,
                                               args.allow_burned_in, scope)
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
    if empty:
        reasons = ", ".join(f"{n} {r}" for r, n in Counter(d["reason"] for d in dropped).items()) or "none dropped"
        raise UserError(f"no usable images for class(es) {empty} in {source} ({reasons}); check --classes "
                        f"against the MeSH terms, and that the images are in {os.path.join(source, 'images')}")
    if args.protocol == "xvision":
        sides, shortfall = split_xvision(items, classes, args.seed)
    else:
        sides, shortfall = split_full(items, classes, args.test_fraction, args.seed)
        info["test_fraction"] = args.test_fraction
    if args.group_by == "patient":
        sides = hashed_groups(sides)
    if args.from_folders and not (args.group_pattern or args.group_by):
        info["leakage"] = leakage(sides)
    info.update(unlabelled_images=unlabelled, dropped=dropped, shortfall=shortfall)  # write_split counts the dropped
    counts = write_split(out, sides, classes, info)
    unit = info["group_unit"]  # reports, patients, or None: each image its own group, nothing more to count
    for side in SIDES:
        parts = ", ".join(f"{c} {counted(counts[side][c]['images'], 'image')}"
                          + (f" / {counts[side][c]['reports']} {unit}" if unit else "") for c in classes)
        print(f"{side}: {parts}")
    if dropped:
        print("dropped: " + ", ".join(f"{n} {reason}" for reason, n in info["dropped_by_reason"].items())
              + " (listed in split.json)")
    print(f"wrote {out}/train, {out}/test, train_labels.json, test_labels.json, split.json")
    if info.get("leakage"):
        found = info["leakage"]
        print(f"warning: no --group-pattern / --group-by, but {found['patients_with_several_images']} patients have "
              f"several images (by {found['shown_by']}) and {found['patients_on_both_sides']} of them have images in "
              f"both train and test; {found['suggested']} keeps each patient on one side", file=sys.stderr)
    if info["view_warning"]:
        print(f"warning: {info['view_warning']}", file=sys.stderr)
    if shortfall:
        print("warning: the data has fewer images than the xvision protocol needs: " + "; ".join(shortfall),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
