"""Stratified splits that keep every group (an Open-i report, a patient) on one side.

Used for the train/test split (``scraper.process``), the validation hold-out (``train_model.py --val-fraction``), the
head's inner cross-validation and the outer one of ``make accuracy`` / ``make audit``, so no group is ever both learned
from and scored on.
"""

import os
import random
import re
from collections import defaultdict

from models.errors import UserError, named


def shuffled_groups(labels, groups, classes, seed):
    """class -> its group ids in a seeded random order, and group id -> its item indices (ascending).

    A group's class is the first of ``classes`` among its items' labels, so a group whose items carry several
    classes is still drawn once.
    """
    members = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    by_class = {label: [] for label in classes}
    for group in sorted(members):
        present = {labels[i] for i in members[group]}
        by_class[next(c for c in classes if c in present)].append(group)
    for label in classes:
        random.Random(f"{seed}/{label}").shuffle(by_class[label])
    return by_class, dict(members)


def grouped_holdout(labels, groups, classes, fraction, seed):
    """Split item indices into (kept, held out): per class, whole groups are held out until they hold ``fraction`` of
    that class's items; a class with two groups or more keeps at least one group on each side.

    ``labels[i]`` and ``groups[i]`` are item i's class and group; both returned lists are sorted.
    """
    by_class, members = shuffled_groups(labels, groups, classes, seed)
    held = []
    for label in classes:
        class_groups = by_class[label]
        target = round(fraction * sum(len(members[g]) for g in class_groups))
        chosen, count = [], 0
        for group in class_groups:
            if count >= target:
                break
            chosen.append(group)
            count += len(members[group])
        if len(class_groups) > 1:
            chosen = chosen or class_groups[:1]
            chosen = chosen[:-1] if len(chosen) == len(class_groups) else chosen
        held.extend(i for g in chosen for i in members[g])
    held_set = set(held)
    return [i for i in range(len(labels)) if i not in held_set], sorted(held)


def group_ids(groups, count=None):
    """Whole numbers 0..k-1 naming the k groups of ``groups`` (labels of any kind, compared as text); with ``groups``
    None, each of ``count`` items its own group."""
    import numpy as np

    if groups is None:
        return np.arange(count)
    return np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1]


def grouped_folds(targets, groups, folds, seed):
    """[(training positions, test positions)] of a grouped, stratified ``folds``-fold (scikit-learn's
    StratifiedGroupKFold, shuffled with ``seed``): no group on both sides of a fold."""
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(targets)), np.asarray(targets), group_ids(groups)))


def groups_from_pattern(names, pattern):
    """Group id of each file name: the first capture group of ``pattern`` (``re.search``); UserError naming the
    files it does not match."""
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise UserError(f"--group-pattern {pattern!r} is not a regular expression ({err})") from None
    if regex.groups < 1:
        raise UserError(f"--group-pattern {pattern!r} has no capture group: put the group id in parentheses, "
                        r"e.g. '^(\d+)_' for NIH file names like 00001234_000.png")
    found, unmatched = [], []
    for name in names:
        match = regex.search(name)
        if match is None or not match.group(1):
            unmatched.append(name)
        found.append(match.group(1) if match else None)
    if unmatched:
        shown = named(unmatched, 5)
        raise UserError(f"--group-pattern {pattern!r} matches no group id in {len(unmatched)} of {len(names)} file "
                        f"names: {shown}; fix the pattern (its first capture group is the group id) or rename them")
    return found


def image_groups(root, labels, files, pattern=None, group_by=None, patient_ids=None):
    """The group of each image ROOT/<label>/<file>: the first capture group of ``pattern`` in its name, with
    ``group_by='patient'`` its DICOM Patient ID (UserError naming the images without one), else the image itself.
    ``patient_ids`` ({"label/file": ID or None}) gives the IDs of headers already read; the others are read here."""
    if pattern:
        return groups_from_pattern(files, pattern)
    images = [f"{label}/{name}" for label, name in zip(labels, files)]
    if group_by != "patient":
        return images
    from models.dicom import EVERY, DicomError, dicom_header, patient_id

    known = patient_ids or {}
    groups = []
    for image in images:
        if image not in known:
            try:
                known[image] = patient_id(dicom_header(os.path.join(root, image), EVERY))
            except DicomError:
                known[image] = None
        groups.append(known[image])
    missing = [image for image, group in zip(images, groups) if group is None]
    if missing:
        raise UserError(f"--group-by patient: {len(missing)} of {len(files)} images have no Patient ID (not "
                        f"DICOM, or the value is empty): {named(missing, 5)}; group them with --group-pattern")
    return groups
