"""Draw the bundled sample (examples/nih-sample) from the full nih-cxr8-pa set: whole patients, seeded, downsized.

    python examples/make_nih_sample.py SOURCE_DIR OUT_DIR [--per-class 40] [--size 256] [--seed 0]

SOURCE_DIR holds one sub-folder per class of NIH ChestX-ray8 PNGs named PPPPPPPP_FFF.png (patient id, follow-up).
Per class, the patients are put in a seeded random order (the same shuffle as scraper.process's split) and taken
whole, every image of a patient, as long as they fit in --per-class images, until the class has that many. A patient
with images in two classes is never drawn. Each image is stored as an 8-bit grayscale PNG whose longer side is
--size (Pillow LANCZOS, never enlarged), and OUT_DIR/README.md carries NIH's attribution and how the sample was
drawn. Nothing is written outside OUT_DIR, which must be new or empty. The same source, options and Pillow version
give the same files, byte for byte.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: models/

from PIL import Image  # noqa: E402

from models.errors import UserError, run_cli  # noqa: E402
from models.fileio import check_output_folder  # noqa: E402
from models.splits import groups_from_pattern, shuffled_groups  # noqa: E402

GROUP_PATTERN = r"^(\d+)_"
ATTRIBUTION = """\
These are real frontal (PA) chest radiographs from the NIH Clinical Center's ChestX-ray8 collection,
https://nihcc.app.box.com/v/ChestXray-NIHCC

Cite: Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM, "ChestX-ray8: Hospital-scale Chest X-ray Database and
Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax Diseases", IEEE CVPR 2017,
pp. 3462-3471.

Data provided by the NIH Clinical Center. NIH's terms: "There are no restrictions on the use of the NIH chest x-ray
images"; the attribution above (the link, the citation, the NIH Clinical Center as data provider) is required and
must stay with any copy of these images.
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python examples/make_nih_sample.py",
        description="Draw a small, seeded sample of whole patients per class from a folder of class folders of NIH "
                    "chest X-ray PNGs (PPPPPPPP_FFF.png), downsized to 8-bit grayscale PNGs, with NIH's attribution "
                    "in OUT_DIR/README.md. Writes nothing outside OUT_DIR.")
    parser.add_argument("source", metavar="SOURCE_DIR",
                        help="folder of class sub-folders, e.g. ../shared/data/nih-cxr8-pa (normal/, pneumonia/)")
    parser.add_argument("out", metavar="OUT_DIR", help="new or empty output folder, e.g. examples/nih-sample")
    parser.add_argument("--per-class", type=int, default=40,
                        help="images per class, in whole patients (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256,
                        help="longer side of the stored images in pixels; smaller images stay as they are "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient draw (default: %(default)s)")
    parser.add_argument("--group-pattern", default=GROUP_PATTERN,
                        help="regular expression whose first capture group is the patient id (default: %(default)s)")
    return parser.parse_args(argv)


def class_files(source):
    """class -> sorted PNG names of SOURCE/<class>/ (classes: the non-hidden sub-folders, sorted)."""
    if not os.path.isdir(source):
        raise UserError(f"source folder not found: {source}")
    found = {}
    for entry in sorted(os.scandir(source), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith("."):
            names = sorted(f.name for f in os.scandir(entry.path)
                           if f.is_file() and f.name.lower().endswith(".png") and not f.name.startswith("."))
            if names:
                found[entry.name] = names
    if len(found) < 2:
        raise UserError(f"{source} needs at least 2 sub-folders of PNG images, one per class; "
                        f"found {sorted(found) or 'none'}")
    return found


def draw(found, per_class, seed, pattern):
    """class -> sorted names drawn, and the counts: whole patients in seeded order while they fit in ``per_class``."""
    classes = list(found)
    listed = [(label, name) for label in classes for name in found[label]]
    patients = groups_from_pattern([name for _, name in listed], pattern)
    classes_of = {}
    for (label, _), patient in zip(listed, patients):
        classes_of.setdefault(patient, set()).add(label)
    mixed = {p for p, labels in classes_of.items() if len(labels) > 1}
    kept = [(label, name, p) for (label, name), p in zip(listed, patients) if p not in mixed]
    by_class, members = shuffled_groups([k[0] for k in kept], [k[2] for k in kept], classes, seed)
    chosen, counts = {}, {}
    for label in classes:
        names, taken = [], 0
        for patient in by_class[label]:
            images = [kept[i][1] for i in members[patient]]
            if len(names) + len(images) <= per_class:
                names.extend(images)
                taken += 1
            if len(names) == per_class:
                break
        chosen[label] = sorted(names)
        counts[label] = {"images": len(names), "patients": taken, "of_images": len(found[label]),
                         "of_patients": len(by_class[label])}
    return chosen, counts, sorted(mixed)


def downsized(path, size):
    """The image at ``path`` as 8-bit grayscale, its longer side ``size`` (LANCZOS) unless it is smaller already."""
    with Image.open(path) as image:
        image.load()
        if image.mode != "L":
            raise UserError(f"{path} is not an 8-bit grayscale image (mode {image.mode}); the NIH PNGs are")
        scale = size / max(image.size)
        if scale < 1:
            shape = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(shape, Image.LANCZOS)
        return image.copy()


def readme(args, counts, mixed):
    rows = "\n".join(f"| {label} | {c['images']} | {c['patients']} | {c['of_images']} | {c['of_patients']} |"
                     for label, c in counts.items())
    mixed_line = (f"{len(mixed)} patient(s) with images in two classes were left out.\n" if mixed
                  else "No patient of the source has images in two classes.\n")
    return f"""\
# NIH ChestX-ray8 sample

{ATTRIBUTION}
## What is here

One folder per class of 8-bit grayscale PNGs, named `PPPPPPPP_FFF.png` (NIH patient id, follow-up number), from
the 427-image PA-only subset nih-cxr8-pa (NIH's 1024x1024 PNGs as redistributed in the GitHub repository
muhammedtalo/COVID-19, relabelled from NIH's `Data_Entry_2017_v2020.csv`, shrunk to 512x512; `normal` = NIH label exactly
`No Finding`, `pneumonia` = NIH labels contain `Pneumonia`; NIH's labels were text-mined from the radiology
reports, > 90% accurate). Not for clinical use: a demonstration of the pipeline.

| class | images | patients | images in the source | patients in the source |
| --- | --- | --- | --- | --- |
{rows}

## How it was drawn

    python examples/make_nih_sample.py SOURCE_DIR OUT_DIR --per-class {args.per_class} --size {args.size} --seed {args.seed}

Per class, the source's patients (the first capture group of `{args.group_pattern}` in the file name) are shuffled
with the seed (`models.splits.shuffled_groups`, the shuffle of `scraper.process`) and taken whole, all images of a
patient, as long as they fit in {args.per_class} images, until the class has {args.per_class}. {mixed_line}\
Each image is stored with its longer side {args.size} pixels (Pillow LANCZOS, `optimize=True`). Group the split by
patient: `--group-pattern '^(\\d+)_'`, as `make demo` does.
"""


def write_atomic(path, write):
    temp = os.path.join(os.path.dirname(path), ".tmp-" + os.path.basename(path))
    write(temp)
    os.replace(temp, path)


def main(argv=None):
    args = parse_args(argv)
    if args.per_class < 1:
        raise UserError(f"--per-class must be at least 1, got {args.per_class}")
    if args.size < 32:
        raise UserError(f"--size must be at least 32 pixels, got {args.size}")
    if args.seed < 0:
        raise UserError(f"--seed must be 0 or more, got {args.seed}")
    source, out = os.path.realpath(args.source), os.path.realpath(args.out)
    found = class_files(source)
    check_output_folder(args.out, "OUT_DIR")
    if os.path.commonpath([source, out]) in (source, out):
        raise UserError(f"OUT_DIR {args.out} and SOURCE_DIR {args.source} overlap; write the sample to a separate "
                        "folder")
    if os.path.isdir(out) and os.listdir(out):
        raise UserError(f"OUT_DIR {args.out} is not empty; give a new or empty folder (remove the old sample first "
                        "to rebuild it)")
    chosen, counts, mixed = draw(found, args.per_class, args.seed, args.group_pattern)
    os.makedirs(out, exist_ok=True)
    for label, names in chosen.items():
        folder = os.path.join(out, label)
        os.makedirs(folder, exist_ok=True)
        for name in names:
            image = downsized(os.path.join(source, label, name), args.size)
            write_atomic(os.path.join(folder, name), lambda p: image.save(p, format="PNG", optimize=True))
    text = readme(args, counts, mixed)
    def write_text(path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    write_atomic(os.path.join(out, "README.md"), write_text)
    total = sum(os.path.getsize(os.path.join(out, label, n)) for label, names in chosen.items() for n in names)
    for label, c in counts.items():
        short = f" (fewer than --per-class {args.per_class}: no more whole patients fit)" \
            if c["images"] < args.per_class else ""
        print(f"{label}: {c['images']} images of {c['patients']} patients{short}")
    print(f"wrote {out}: {sum(len(n) for n in chosen.values())} images, {total / 1e6:.2f} MB, and README.md "
          f"(NIH attribution)")
    return 0


if __name__ == "__main__":
    run_cli(main)
