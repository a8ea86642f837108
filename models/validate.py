"""External validation: a trained head scored on a labelled folder from elsewhere (another hospital, scanner or export).

    python -m models.validate MODELS_DIR ROOT --out DIR [--group-pattern REGEX | --group-by patient]

ROOT holds one sub-folder per class (PNG, JPEG, DICOM, at any depth the project reads); each folder's name must be one
of the head's classes (compared without case). DIR receives the images (hard links, or copies across file systems),
their label file, their codes (encoded with the backbone, view and depth head.json records; resumable), and in
DIR/eval what test_model.py writes (report.json with intervals by patient where groups are given, predictions.csv,
the plots), report.json's ``validation`` saying how the new set differs from the training films: the share the input
check flags, the calibration on the new set (calibration-in-the-large, slope, Brier), and the operating point's
sensitivity and specificity here against the balanced accuracy it was chosen with. A DICOM file whose header says it
is not a chest radiograph (``models.dicom.Scope``; --allow-modality / --allow-body-part) is named and left out,
listed in ``validation``'s ``not_chest_radiographs``.
"""

import argparse
import os
import sys
from collections import Counter

from models.cli import (add_backbone_argument, add_batch_size_argument, add_gpus_argument, add_group_arguments,
                        add_scope_arguments, scope_of)
from models.dicom import OUT_OF_SCOPE, Scope
from models.errors import UserError, named, run_cli
from models.fileio import check_output_folder, link_or_copy, write_json
from models.images import class_folders, is_image_name, scoring_view
from models.labels import patient_hasher, save_labels
from models.report_page import write_report_page
from models.runtime import setup_runtime
from models.splits import image_groups

IMAGES, CODES, EVAL, LABELS = "images", "codes", "eval", "labels.json"


def class_mapping(folders, classes):
    """{folder name: the head's class} by name without case; UserError naming a folder the head does not know."""
    known = {name.strip().lower(): name for name in classes}
    unknown = [folder for folder in folders if folder.strip().lower() not in known]
    if unknown:
        raise UserError(f"class folder(s) {unknown} are not classes of the head, which knows {list(classes)}: rename "
                        f"them to those names (case does not matter), or leave them out of the folder")
    return {folder: known[folder.strip().lower()] for folder in folders}


def _images_by_folder(root):
    """(class folder, file name) of every image in ROOT's class folders."""
    found = []
    for folder in class_folders(root):
        path = os.path.join(root, folder)
        found += [(folder, name) for name in sorted(os.listdir(path)) if is_image_name(path, name)]
    return found


def out_of_scope(root, listed, scope):
    """({"class/file": OutOfScope} of the DICOM files of ``listed`` ((class folder, file name) in ROOT) whose header
    says they are not chest radiographs (``models.dicom.Scope``), {"class/file": Patient ID or None} of the others' headers,
    read once here for --group-by patient); a file unreadable otherwise is left to the encoding."""
    from models.dicom import DicomError, OutOfScope, dicom_header, patient_id
    from models.images import is_dicom_file

    found, patients = {}, {}
    for folder, name in listed:
        path = os.path.join(root, folder, name)
        if is_dicom_file(path):
            try:
                patients[f"{folder}/{name}"] = patient_id(dicom_header(path, scope))
            except OutOfScope as err:
                found[f"{folder}/{name}"] = err
            except DicomError:
                pass
    return found, patients


def gather(root, out, classes, group_pattern=None, group_by=None, scope=Scope()):
    """Link every image of ROOT/<class>/ into OUT/images (a name used by two classes gets the class as prefix) and
    write OUT/labels.json, leaving out (named, with a warning) the DICOM files ``scope`` does not read; returns (the
    label of each linked name, how many images each folder gave, {"class/file": OutOfScope} of those left out)."""
    if not os.path.isdir(root):
        raise UserError(f"ROOT not found: {root}")
    listed = _images_by_folder(root)
    left_out, patients = out_of_scope(root, listed, scope)
    for image, why in left_out.items():
        print(f"warning: leaving out {image}: {why}", file=sys.stderr)
    listed = [(folder, name) for folder, name in listed if f"{folder}/{name}" not in left_out]
    folders = list(dict.fromkeys(folder for folder, _ in listed))
    if not folders:
        raise UserError(f"no class folders with images in {root}: give a folder of one sub-folder per class")
    mapping = class_mapping(folders, classes)
    groups = image_groups(root, [folder for folder, _ in listed], [name for _, name in listed], group_pattern,
                          group_by, patients)
    if group_by == "patient":  # Patient IDs never written out
        groups = list(map(patient_hasher(), groups))
    taken = {}
    for folder, name in listed:
        taken[name] = taken.get(name, 0) + 1
    images = os.path.join(out, IMAGES)
    os.makedirs(images, exist_ok=True)
    labels, grouped = {}, {}
    for (folder, name), group in zip(listed, groups):
        linked = f"{folder}_{name}" if taken[name] > 1 else name
        link_or_copy(os.path.join(root, folder, name), os.path.join(images, linked))
        labels[linked], grouped[linked] = mapping[folder], group
    unit = "patients" if group_pattern or group_by else None
    save_labels(os.path.join(out, LABELS), classes, labels, grouped, unit)
    return labels, {folder: sum(f == folder for f, _ in listed) for folder in folders}, left_out


def shift_report(report, meta):
    """How the new set differs from the training films: the share flagged, calibration here, and the operating
    point's sensitivity and specificity here against the balanced accuracy the head's threshold was chosen at."""
    check, scores, point = report.get("input_check"), report.get("probabilities") or {}, report.get("operating_point")
    chosen = (meta.get("operating_point") or {}).get("out_of_fold_balanced_accuracy")
    return {
        "flagged_share": None if check is None else check["share"],
        "calibration": {key: scores.get(key) for key in ("calibration_in_the_large", "calibration_slope", "brier",
                                                          "brier_skill")},
        "operating_point": None if point is None else {
            "threshold": point["threshold"], "sensitivity": point["sensitivity"], "specificity": point["specificity"],
            "chosen_at": {"balanced_accuracy_out_of_fold": chosen,
                          "note": "the threshold is the training images' out-of-fold balanced point: sensitivity and "
                                  "specificity were both about this there"}},
    }


def validate(models_dir, root, out, group_pattern=None, group_by=None, batch_size=32, contexts=None, backbone=None,
             heatmaps="grid", allow_overlap=False, scope=None, log=print):
    """Score the head in ``models_dir`` on the class folders of ``root``, writing into ``out``; returns report.json's
    content. UserError for a class the head does not know, an image the project cannot read, and what test_model.py
    refuses (a set holding the head's training images). ``scope``: DICOM files read besides the chest radiographs
    (and what the training allowed)."""
    from models.evaluation import evaluate
    from models.extract import extract_folder
    from models.headfolder import HeadFolder
    from models.predict import recorded_backbone

    check_output_folder(out, "--out", [("ROOT", root), ("MODELS_DIR", models_dir)])
    if os.path.realpath(out).startswith(os.path.realpath(root) + os.sep):
        raise UserError(f"--out {out!r} lies inside ROOT {root!r}: its images would be read as a class; write "
                        f"elsewhere")
    meta = HeadFolder(models_dir).read_meta()
    view = scoring_view(meta["backbone"], scope=scope)
    labels, counts, left_out = gather(root, out, meta["classes"], group_pattern, group_by, view.scope)
    log(f"{root}: " + ", ".join(f"{folder} {n}" for folder, n in counts.items()) + f" images -> {out}")
    net = recorded_backbone(meta, models_dir, batch_size, contexts, backbone)
    writer = extract_folder(net, os.path.join(out, IMAGES), os.path.join(out, CODES), view, log=log)
    if writer.skipped:
        raise UserError(f"{len(writer.skipped)} images of {root} cannot be read ({named(sorted(writer.skipped), 5)}; "
                        f"the warnings above say why): move them out of {root} and run again (their codes are kept)")
    report, eval_dir = evaluate(os.path.join(out, IMAGES), os.path.join(out, CODES), os.path.join(out, LABELS),
                                models_dir, out_dir=os.path.join(out, EVAL), heatmaps=heatmaps,
                                allow_overlap=allow_overlap, log=log)
    report["validation"] = dict(shift_report(report, meta), data=os.path.abspath(root), folders=counts,
                                not_chest_radiographs={image: str(err) for image, err in left_out.items()})
    report["flow"] = dict(report["flow"], source=os.path.abspath(root), found=sum(counts.values()) + len(left_out),
                          left_out={f"{OUT_OF_SCOPE} ({reason})": n for reason, n in
                                    Counter(err.reason for err in left_out.values()).items()})
    write_json(os.path.join(eval_dir, "report.json"), report)
    write_report_page(eval_dir, report, meta, title="External validation")
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m models.validate",
                                     description=" ".join(__doc__.split("\n\n")[2].split()))
    parser.add_argument("models_dir", metavar="MODELS_DIR", help="folder written by train_model.py")
    parser.add_argument("root", metavar="ROOT", help="folder of class folders, named as the head's classes")
    parser.add_argument("--out", metavar="DIR", required=True,
                        help="folder for the images' links, their labels and codes, and eval/ (report.json, "
                             "predictions.csv, plots); a second run resumes the encoding")
    add_group_arguments(parser, "for ROOT: ")
    parser.add_argument("--heatmaps", choices=("grid", "all", "none"), default="grid",
                        help="as test_model.py's (default: %(default)s)")
    parser.add_argument("--allow-overlap", action="store_true",
                        help="score the set even where it holds images the head was trained on (as test_model.py)")
    add_scope_arguments(parser)
    add_backbone_argument(parser)
    add_batch_size_argument(parser)
    add_gpus_argument(parser)
    args = parser.parse_args(argv)
    setup_runtime()
    from models.devices import chosen_contexts
    from models.evaluation import format_table

    report = validate(args.models_dir, args.root, args.out, args.group_pattern, args.group_by, args.batch_size,
                      chosen_contexts(args.gpus), args.backbone, args.heatmaps, args.allow_overlap,
                      scope_of(args))
    print(f"epoch {report['epoch']} of {args.models_dir} on {report['n']} images of {args.root}:\n")
    print(format_table(report))
    shift = report["validation"]
    if shift["flagged_share"] is not None:
        print(f"\nunlike the training films (input check): {shift['flagged_share']:.0%} of the images")
    if shift["operating_point"]:
        point = shift["operating_point"]
        print(f"at the head's threshold {point['threshold']:.4f}: sensitivity {point['sensitivity']['value']:.3f}, "
              f"specificity {point['specificity']['value']:.3f} (chosen where both were about "
              f"{point['chosen_at']['balanced_accuracy_out_of_fold'] or float('nan'):.3f} out of fold)")
    print(f"report: {os.path.join(args.out, EVAL, 'report.html')} (report.json, predictions.csv and plots beside it)")


if __name__ == "__main__":
    run_cli(main)
