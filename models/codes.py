"""The feature-code store: one memory-mapped ``.npy`` plus a JSON index, written by train.py and read by every later step.

A codes folder holds
- ``codes.npy``: float32 array of shape (number of image files, *code shape), one row per file, in ``index.json``'s order;
- ``index.json``: the files (row order), the files skipped with the reason, how many rows are done, what made the
  codes (model, its sha256, layer, code shape, preprocessing), the image folder they were made from and, per file,
  what it held (``stamps``: size, modification time in ns, sha256 of its bytes) and, for a file decoded below its full
  size (JPEG DCT scaling, JPEG 2000 resolution levels), what was decoded (``reduced``: "512x625 of 2048x2500").

Rows are written in order and ``rows_done`` is saved (atomically) only after those rows are flushed, so a run killed at
any moment resumes at the last saved row and gives the same codes. Every later step checks the images it is given
against the stamps, so a code is never used for an image other than the one it was made from.
"""

import hashlib
import os

import numpy as np

from models.errors import UserError, counted, named
from models.fileio import read_json, remove_stale_temps, write_json
from models.images import list_images

FORMAT = "xvision-mx codes v2"  # v2: per-file stamps
OLD_FORMAT = "xvision-mx codes v1"
HASH_CHUNK = 1 << 20
CODES_FILE = "codes.npy"
INDEX_FILE = "index.json"
MAX_NAMED = 10  # offending files named in an error message


def _check_index(index, path):
    """UserError unless ``index`` has the fields and types a codes index has (a hand-edited or foreign file)."""
    meta, files = index.get("meta"), index.get("files")
    problems = []
    if not isinstance(meta, dict):
        problems.append("'meta' is missing or not an object")
    elif not (isinstance(meta.get("shape"), list) and meta["shape"]
              and all(isinstance(n, int) and n > 0 for n in meta["shape"])):
        problems.append(f"'meta.shape' must be a list of positive whole numbers, not {meta.get('shape')!r}")
    if not (isinstance(files, list) and all(isinstance(f, str) for f in files)):
        problems.append("'files' must be a list of file names")
    for key in ("skipped", "stamps"):
        if not isinstance(index.get(key), dict):
            problems.append(f"'{key}' must be an object, not {index.get(key)!r}")
    if not isinstance(index.get("rows_done"), int):
        problems.append("'rows_done' must be a whole number")
    if problems:
        raise UserError(f"{path} is damaged: {'; '.join(problems)}; re-run train.py into an empty folder")


def file_stamp(path):
    """[size, modification time in ns, sha256 of the bytes] of a file: what an image held when its code was made."""
    digest = hashlib.sha256()
    try:
        f = open(path, "rb")
    except OSError:  # a broken link or an unreadable file: skipped by extraction, nothing to stamp
        return None
    with f:
        size = os.fstat(f.fileno()).st_size
        mtime = os.fstat(f.fileno()).st_mtime_ns
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return [size, mtime, digest.hexdigest()]


def changed_files(folder, stamps, names):
    """The ``names`` whose file in ``folder`` no longer holds what ``stamps`` recorded (or that have no stamp).

    Size and modification time equal to the stamp's: the same file, no hashing (a stat is 2 us, hashing an Open-i-sized
    PNG 70 us here); otherwise the bytes' sha256 decides, so a copied or moved folder is still recognised.
    """
    changed = []
    for name in names:
        stamp, path = stamps.get(name), os.path.join(folder, name)
        try:
            status = os.stat(path)
        except OSError:
            status = None
        if stamp is None or status is None:
            if (stamp is None) != (status is None):  # appeared, or gone (both None: still unreadable)
                changed.append(name)
        elif [status.st_size, status.st_mtime_ns] != stamp[:2] and (file_stamp(path) or [None] * 3)[2] != stamp[2]:
            changed.append(name)
    return changed


class CodeStore:
    """Read side: ``store.read(names)`` returns their codes without loading the others into memory."""

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        index_path = os.path.join(self.folder, INDEX_FILE)
        if not os.path.isdir(self.folder):
            raise UserError(f"codes folder not found: {self.folder} (make it with train.py)")
        if not os.path.exists(index_path):
            raise UserError(f"{self.folder} holds no {INDEX_FILE}: it is not a codes folder made by train.py")
        index = read_json(index_path, "codes index")
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            found = index.get("format") if isinstance(index, dict) else type(index).__name__
            older = " (made by an older train.py: run train.py again to remake it)" if found == OLD_FORMAT else ""
            raise UserError(f"{index_path} is not a '{FORMAT}' index (format: {found!r}){older}")
        _check_index(index, index_path)
        if not index.get("complete"):
            raise UserError(f"codes in {self.folder} are incomplete ({index.get('rows_done')} of "
                            f"{len(index.get('files', []))} rows): run train.py again to finish them")
        self.index = index
        self.meta = index["meta"]
        self.shape = tuple(self.meta["shape"])
        try:
            self.array = np.load(os.path.join(self.folder, CODES_FILE), mmap_mode="r")
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read {os.path.join(self.folder, CODES_FILE)}: {err}") from None
        if self.array.shape != (len(index["files"]),) + self.shape:
            raise UserError(f"{CODES_FILE} in {self.folder} has shape {self.array.shape}, its index expects "
                            f"{(len(index['files']),) + self.shape}: re-run train.py into an empty folder")
        skipped = index["skipped"]
        self.rows = {name: i for i, name in enumerate(index["files"]) if name not in skipped}
        self.skipped = dict(skipped)

    @property
    def names(self):
        """File names that have a code, in row order."""
        return list(self.rows)

    def check_images(self, image_dir, names):
        """UserError naming the images of ``names`` in ``image_dir`` that differ from those the codes were made from."""
        changed = changed_files(image_dir, self.index["stamps"], names)
        if changed:
            made_from = self.index.get("images") or "an unrecorded folder"
            raise UserError(f"{len(changed)} of {counted(len(names), 'image')} in {image_dir} are not the images "
                            f"the codes in {self.folder} were made from (made from {made_from}): {named(changed)}; "
                            f"run train.py again with this image folder (it re-extracts changed images), or give the "
                            f"codes folder made for {image_dir}")

    def rows_of(self, names):
        """The codes of ``names`` as an array-like: ``rows[[2, 0]]`` reads the 3rd and 1st only."""
        return CodeRows(self, names)

    def read(self, names):
        """Codes of ``names`` as a float32 array (copied out of the memory map)."""
        rows = [self.rows[n] for n in names]
        order = np.argsort(rows)  # ascending reads are friendlier to the page cache
        out = np.empty((len(rows),) + self.shape, dtype=np.float32)
        out[order] = self.array[np.asarray(rows)[order]]
        return out


class CodeRows:
    """Codes of a list of names, indexed by position like a numpy array, read from the store on demand."""

    def __init__(self, store, names):
        self.store, self.names = store, list(names)
        self.shape = (len(self.names),) + store.shape

    def __len__(self):
        return len(self.names)

    def __getitem__(self, positions):
        return self.store.read([self.names[i] for i in np.atleast_1d(np.arange(len(self))[positions])])

    def subset(self, positions):
        """The rows at ``positions``, still read on demand."""
        return CodeRows(self.store, [self.names[i] for i in positions])


def check_examples(image_dir, store, labels, labels_path, codes_dir):
    """Names of the images in ``image_dir``; UserError naming those without a label or without a code."""
    names = list_images(image_dir)
    problems = []
    for name in names:
        if name not in labels.labels:
            problems.append(f"{name} (no label in {os.path.basename(labels_path)})")
        elif name in store.skipped:
            problems.append(f"{name} (no code: {store.skipped[name]})")
        elif name not in store.rows:
            problems.append(f"{name} (no code in {codes_dir})")
    if problems:
        more = f" and {len(problems) - MAX_NAMED} more" if len(problems) > MAX_NAMED else ""
        raise UserError(f"{len(problems)} of {counted(len(names), 'image')} in {image_dir} cannot be used: "
                        f"{', '.join(problems[:MAX_NAMED])}{more}; label them in {labels_path} and/or re-run train.py "
                        f"so every image has a code (or move the unusable images out of {image_dir})")
    store.check_images(image_dir, names)
    return names


class CodeWriter:
    """Write side, used by feature extraction. Resumes a matching unfinished store; starts over otherwise."""

    def __init__(self, folder, files, shape, meta, image_dir=None):
        self.folder = os.fspath(folder)
        self.files = list(files)
        self.meta = dict(meta, shape=list(shape))
        self.image_dir = None if image_dir is None else os.path.abspath(image_dir)  # stamps come from here
        self.codes_path = os.path.join(self.folder, CODES_FILE)
        self.index_path = os.path.join(self.folder, INDEX_FILE)
        os.makedirs(self.folder, exist_ok=True)
        remove_stale_temps(self.folder)
        previous = self._matching_index()
        if previous is not None:
            self.rows_done = previous["rows_done"]
            self.skipped = dict(previous["skipped"])
            self.stamps = dict(previous["stamps"])
            self.reduced = dict(previous.get("reduced") or {})
        else:
            self.rows_done = 0
            self.skipped, self.stamps, self.reduced = {}, {}, {}
            if os.path.exists(self.index_path):
                os.remove(self.index_path)  # the index goes first: a crash now leaves no stale claim
            with open(self.codes_path, "wb") as f:  # a .npy header, then zeros (a sparse file) for every row
                header = {"descr": "<f4", "fortran_order": False, "shape": (len(self.files),) + tuple(shape)}
                np.lib.format.write_array_header_1_0(f, header)
                f.truncate(f.tell() + 4 * len(self.files) * int(np.prod(shape)))
            self._save(complete=False)
        with open(self.codes_path, "rb") as f:
            np.lib.format.read_magic(f)
            np.lib.format.read_array_header_1_0(f)
            self._data_offset = f.tell()
        self._row_bytes = 4 * int(np.prod(shape))

    @property
    def resumed(self):
        return self.rows_done > 0

    @property
    def complete(self):
        return self.rows_done == len(self.files)

    def _matching_index(self):
        if not (os.path.exists(self.index_path) and os.path.exists(self.codes_path)):
            return None
        try:
            index = read_json(self.index_path)
            if not isinstance(index, dict):
                return None
            _check_index(index, self.index_path)
            array = np.load(self.codes_path, mmap_mode="r")
        except (UserError, OSError, ValueError):  # damaged or foreign: start over
            return None
        expected = (len(self.files),) + tuple(self.meta["shape"])
        same = (index.get("format") == FORMAT and index.get("files") == self.files
                and index.get("meta") == self.meta and array.shape == expected and array.dtype == np.float32)
        return index if same else None

    def changed(self):
        """Files among the finished rows that changed since their code was made (a re-run re-extracts them)."""
        if self.image_dir is None:
            return []
        return changed_files(self.image_dir, self.stamps, self.files[:self.rows_done])

    def write(self, codes, skipped=None, reduced=None):
        """Store the next ``len(codes)`` rows; ``skipped`` maps file names among them to why they have no code,
        ``reduced`` to what was decoded of those decoded below full size."""
        self._write_rows(range(self.rows_done, self.rows_done + len(codes)), codes, skipped, reduced)
        self.rows_done += len(codes)
        self._save(complete=self.complete)

    def rewrite(self, names, codes, skipped=None, reduced=None):
        """Replace the rows of ``names`` (files that changed) with new codes; ``skipped`` and ``reduced`` as for
        write."""
        positions = {name: i for i, name in enumerate(self.files)}
        for name in names:
            self.skipped.pop(name, None)
            self.reduced.pop(name, None)
        self._write_rows([positions[n] for n in names], codes, skipped, reduced)
        self._save(complete=self.complete)

    def _write_rows(self, rows, codes, skipped, reduced):
        rows = list(rows)
        data = np.ascontiguousarray(codes, dtype="<f4").reshape(len(rows), -1)
        # plain writes, not a memory map: written pages of a map count in this process's resident memory, which then
        # grows with the number of images
        with open(self.codes_path, "r+b") as f:
            for start in range(len(rows)):  # consecutive rows (the usual case) go out in one write
                if start and rows[start] == rows[start - 1] + 1:
                    continue
                end = start + 1
                while end < len(rows) and rows[end] == rows[end - 1] + 1:
                    end += 1
                f.seek(self._data_offset + rows[start] * self._row_bytes)
                f.write(data[start:end].tobytes())
            f.flush()
            os.fsync(f.fileno())  # the rows reach the disk before the index says they are done
        if self.image_dir is not None:
            for row in rows:
                name = self.files[row]
                self.stamps[name] = file_stamp(os.path.join(self.image_dir, name))
        self.skipped.update(skipped or {})
        self.reduced.update(reduced or {})

    def _save(self, complete):
        write_json(self.index_path, {
            "format": FORMAT, "complete": complete, "rows_done": self.rows_done,
            "meta": self.meta, "images": self.image_dir, "files": self.files, "skipped": self.skipped,
            "stamps": self.stamps, "reduced": self.reduced,
        })
