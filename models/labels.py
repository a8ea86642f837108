"""The label file every step reads and writes.

Format: ``{"classes": ["normal", "nodule"], "labels": {"<image file name>": "<class>", ...}}``, optionally with
``"groups": {"<image file name>": "<group id>", ...}`` (the Open-i report, the patient): images of one group are
never split between training and validation; and ``"group_unit": "patients"`` (or "reports"): what a group is, named
by the intervals of a test report. The order of ``classes`` fixes each class's index.
"""

import hashlib
import os
import secrets
from dataclasses import dataclass, field

from models.errors import UserError
from models.fileio import read_json, write_json


@dataclass(frozen=True)
class LabelSet:
    classes: tuple  # class names; position = class index
    labels: dict  # image file name -> class name
    groups: dict = field(default_factory=dict)  # image file name -> group id; an image not listed is its own group
    group_unit: str = None  # what a group is, plural ("patients", "reports"), where the file says

    def group_of(self, name):
        return self.groups.get(name, f"image:{name}")

    def indices(self, names):
        lookup = {c: i for i, c in enumerate(self.classes)}
        return [lookup[self.labels[n]] for n in names]


def load_labels(path):
    """Read and validate a label file; UserError says what is wrong with it."""
    data = read_json(path, "label file")
    if not isinstance(data, dict) or "classes" not in data or "labels" not in data:
        raise UserError(f"label file {path} must be an object with 'classes' and 'labels' "
                        '(e.g. {"classes": ["normal", "nodule"], "labels": {"a.png": "normal"}})')
    classes, labels = data["classes"], data["labels"]
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
        raise UserError(f"label file {path}: 'classes' must be a list of class names")
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise UserError(f"label file {path}: 'classes' needs at least 2 distinct names, got {classes}")
    if not isinstance(labels, dict):
        raise UserError(f"label file {path}: 'labels' must map image file names to class names")
    unknown = sorted({str(c) for c in labels.values() if c not in classes})
    if unknown:
        raise UserError(f"label file {path}: labels use classes not listed in 'classes': {unknown[:10]}")
    groups = data.get("groups", {})
    if not isinstance(groups, dict) or not all(isinstance(g, (str, int)) for g in groups.values()):
        raise UserError(f"label file {path}: 'groups' must map image file names to group ids (strings)")
    unit = data.get("group_unit")
    if unit is not None and not (isinstance(unit, str) and unit.strip()):
        raise UserError(f"label file {path}: 'group_unit' must name what a group is, e.g. \"patients\"")
    return LabelSet(tuple(classes), dict(labels), {name: str(g) for name, g in groups.items()}, unit)


def save_labels(path, classes, labels, groups=None, group_unit=None):
    """Write a label file atomically (``labels`` maps file name -> class name, ``groups`` file name -> group id,
    ``group_unit`` what a group is)."""
    unknown = sorted(set(labels.values()) - set(classes))
    if unknown:
        raise ValueError(f"labels use classes not in {classes}: {unknown}")
    data = {"classes": list(classes), "labels": dict(sorted(labels.items()))}
    if groups:
        data["groups"] = dict(sorted(groups.items()))
    if groups and group_unit:
        data["group_unit"] = group_unit
    write_json(path, data)


def split_digest(labels_path):
    """sha256 of the split.json beside a label file (scraper.process writes both), or None: which split it is."""
    from models.weights import sha256_of

    path = os.path.join(os.path.dirname(os.path.abspath(labels_path)), "split.json")
    return sha256_of(path) if os.path.exists(path) else None


def class_counts(labels, names):
    """{class: {"images": n, "groups": distinct groups, or None where the label file names none}} of ``names``."""
    counts = {}
    for name in labels.classes:
        mine = [image for image in names if labels.labels[image] == name]
        counts[name] = {"images": len(mine),
                        "groups": len({labels.group_of(image) for image in mine}) if labels.groups else None}
    return counts


def patient_hasher():
    """A function that hides a Patient ID behind a hash under a salt drawn now and kept nowhere: label files keep a
    patient's images together without saying who the patient is."""
    salt = secrets.token_bytes(16)
    return lambda patient: "patient-" + hashlib.sha256(salt + str(patient).encode()).hexdigest()[:16]
