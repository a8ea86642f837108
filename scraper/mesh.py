"""MeSH terms -> class names, and the records of a datas.json in either shape.

Shapes read:
- this scraper's: ``{"<image id>": {"id", "uid", "major", "minor", "file", "img", ...}}``, images in ``images/``;
- the original Xvision scraper's: ``{"1": {"type": "Major", "items": [...],
  "img": "https://openi.nlm.nih.gov//imgs/512/10/10/CXR10_IM-0002-1001.png"}}``; its images are found by the
  basename of ``img`` (or ``<key>.png``, the name that scraper saved them under) in ``DATA_DIR/images/`` or
  ``DATA_DIR``.
"""

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from models.errors import UserError
from models.fileio import read_json
from scraper import store


@dataclass(frozen=True)
class Record:
    image_id: str
    report_id: str
    major: tuple  # MeSH major terms of the image's report
    candidates: tuple  # paths where the image file may be; the first that exists is used


def matches(term, class_name):
    """Whether one MeSH major term names the class: 'normal' must be the whole term, others its first part."""
    term, name = " ".join(term.split()).lower(), " ".join(class_name.split()).lower()
    if name == "normal":
        return term == "normal"
    return term.split("/")[0].strip() == name


def classes_of(major_terms, class_names):
    """The classes (in ``class_names`` order) that any of the major terms names."""
    return [c for c in class_names if any(matches(t, c) for t in major_terms)]


def _terms(value):
    return tuple(t for t in value if isinstance(t, str)) if isinstance(value, list) else ()


def _record(key, entry, data_dir):
    """(Record, None) for one datas.json entry, or (None, (image, reason, detail)) when it is unusable."""
    images = os.path.join(data_dir, store.IMAGES_DIR)
    if not isinstance(entry, dict):
        return None, (str(key), "not an entry", "value is not an object")
    if "id" in entry:  # this scraper's shape
        image_id = store.safe_id(entry.get("id"))
        file_name = entry.get("file") or (store.image_file(image_id) if image_id else None)
        if image_id is None or store.safe_id(file_name) is None:
            return None, (str(entry.get("id")), "unsafe image name", f"id {entry.get('id')!r}, file {file_name!r}")
        report = store.safe_id(entry.get("uid")) or store.report_id_of(image_id)
        major = _terms(entry.get("major")) or _terms(entry.get("items"))
        names = [file_name]
    elif isinstance(entry.get("img"), str) and "items" in entry:  # the original scraper's shape
        file_name = os.path.basename(urlsplit(entry["img"]).path)
        stem, ext = os.path.splitext(file_name)
        image_id = store.safe_id(stem)
        if image_id is None or store.safe_id(file_name) is None:
            return None, (str(key), "unsafe image name", f"img {entry['img']!r}")
        report = store.report_id_of(image_id)
        is_major = str(entry.get("type", "Major")).strip().lower() == "major"
        major = _terms(entry.get("items")) if is_major else ()
        names = [file_name] + ([f"{key}{ext or '.png'}"] if store.safe_id(str(key)) else [])
    else:
        return None, (str(key), "not an entry", "has neither 'id' nor 'img' and 'items'")
    candidates = tuple(os.path.join(folder, name) for name in names for folder in (images, data_dir))
    return Record(image_id, report, major, candidates), None


def read_records(data_dir):
    """Records of ``DATA_DIR/datas.json`` and the (image, reason, detail) of entries that cannot be used."""
    path = os.path.join(data_dir, store.DATAS_FILE)
    datas = read_json(path, "datas.json")
    if not isinstance(datas, dict):
        raise UserError(f"{path} must be a JSON object of entries (made by scraper.py or the original scraper)")
    records, problems, seen = [], [], set()
    for key, entry in datas.items():
        record, problem = _record(key, entry, data_dir)
        if record is not None and record.image_id in seen:
            record, problem = None, (record.image_id, "duplicate entry", f"entry {key!r} repeats the image")
        if record is None:
            problems.append(problem)
        else:
            seen.add(record.image_id)
            records.append(record)
    return records, problems
