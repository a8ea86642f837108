"""The scraper's output folder: ``OUT/images/<image id>.png``, ``OUT/datas.json`` and a lock.

Every file name under OUT comes from an id that passed ``safe_id``; an image appears under its final name only
after it was completely written and verified as a PNG, so a run killed at any moment leaves only finished images
(plus hidden partial files, which the next run removes).
"""

import fcntl
import os
import re
from contextlib import contextmanager

from PIL import Image

from models.errors import UserError
from models.fileio import atomic_path, read_json, write_json

DATAS_FILE = "datas.json"
IMAGES_DIR = "images"
LOCK_FILE = ".scraper.lock"
API_STATE_FILE = ".scraper-state.json"  # next page window of an Open-i API download (see scraper.openi)
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk with its CRC: every complete PNG ends with it


class BadImage(Exception):
    """Downloaded or extracted bytes that are not a complete PNG (worth another try)."""


class TooLarge(BadImage):
    """Bigger than the per-image cap (another try would not help)."""


def safe_id(value):
    """``value`` if it is usable as a file name stem (strict pattern, no '..'), else None."""
    if isinstance(value, str) and ID_PATTERN.match(value) and ".." not in value:
        return value
    return None


def report_id_of(image_id):
    """Report (study) id of an Open-i image id: CXR1022_IM-0017-1001 -> CXR1022, CXR1_1_IM-0001-3001 -> CXR1."""
    match = re.match(r"^(.+?)(?:_\d+)?_IM-", image_id)
    return match.group(1) if match else image_id


def image_file(image_id):
    return f"{image_id}.png"


def image_path(out, image_id):
    return os.path.join(out, IMAGES_DIR, image_file(image_id))


def verify_png(path):
    """Raise BadImage unless ``path`` holds one complete, decodable-looking PNG."""
    with open(path, "rb") as f:
        head = f.read(len(PNG_SIGNATURE))
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - len(PNG_END)))
        tail = f.read()
    if head != PNG_SIGNATURE:
        raise BadImage("not a PNG (wrong signature)")
    if tail != PNG_END:
        raise BadImage("truncated PNG (no end chunk)")
    try:
        with Image.open(path) as image:
            image.verify()  # walks every chunk and checks its CRC
    except Exception as err:  # PIL raises many types for corrupt files
        raise BadImage(f"corrupt PNG ({err})") from None


def save_image(out, image_id, chunks, max_bytes):
    """Write the byte ``chunks`` of one image to a hidden partial file, verify it, then rename it into place.

    Exceptions from ``chunks`` (a broken download) propagate; the partial file is always removed.
    """
    final = image_path(out, image_id)
    with atomic_path(final) as partial:
        with open(partial, "wb") as f:
            written = 0
            for chunk in chunks:
                written += len(chunk)
                if written > max_bytes:
                    raise TooLarge(f"larger than the {max_bytes // 2**20} MiB cap")
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        verify_png(partial)
    return final


def finished_images(out):
    """Ids of the verified images already in ``OUT/images``."""
    folder = os.path.join(out, IMAGES_DIR)
    if not os.path.isdir(folder):
        return set()
    return {name[:-4] for name in os.listdir(folder) if name.endswith(".png") and safe_id(name[:-4])}


@contextmanager
def locked_output(out):
    """Create OUT and OUT/images, hold an exclusive lock on OUT, and remove partial files a killed run left."""
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"output {out} exists and is not a folder; give a folder path")
    os.makedirs(os.path.join(out, IMAGES_DIR), exist_ok=True)
    with open(os.path.join(out, LOCK_FILE), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another scraper run is writing to {out}; wait for it or use another folder") from None
        for folder in (os.path.join(out, IMAGES_DIR), out):  # temporary files of atomic_path
            for name in os.listdir(folder):
                if name.startswith(".tmp-"):
                    os.remove(os.path.join(folder, name))
        yield out


def load_datas(path):
    """The ``datas.json`` mapping (empty when the file does not exist yet)."""
    if not os.path.exists(path):
        return {}
    datas = read_json(path, "datas.json")
    if not isinstance(datas, dict):
        raise UserError(f"{path} must be a JSON object mapping image ids to entries; move it away and run again")
    return datas


def save_datas(out, datas):
    write_json(os.path.join(out, DATAS_FILE), datas)
