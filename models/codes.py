"""The feature-code store: one memory-mapped ``.npy`` plus a JSON index, written by train.py and read by every later step.

A codes folder holds
- ``codes.npy``: float32 array of shape (number of image files, *code shape), one row per file, in ``index.json``'s order;
- ``index.json``: the files (row order), the files skipped with the reason, how many rows are done, and what made the
  codes (model, its sha256, layer, code shape, preprocessing).

Rows are written in order and ``rows_done`` is saved (atomically) only after those rows are flushed, so a run killed at
any moment resumes at the last saved row and gives the same codes.
"""

import os

import numpy as np

from models.errors import UserError
from models.fileio import read_json, write_json
from models.images import list_images

FORMAT = "xvision-mx codes v1"
CODES_FILE = "codes.npy"
INDEX_FILE = "index.json"
MAX_NAMED = 10  # offending files named in an error message


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
        if index.get("format") != FORMAT:
            raise UserError(f"{index_path} is not a '{FORMAT}' index (format: {index.get('format')!r})")
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
        raise UserError(f"{len(problems)} of {len(names)} images in {image_dir} cannot be used: "
                        f"{', '.join(problems[:MAX_NAMED])}{more}; label them in {labels_path} and/or re-run train.py "
                        f"so every image has a code (or move the unusable images out of {image_dir})")
    return names


class CodeWriter:
    """Write side, used by feature extraction. Resumes a matching unfinished store; starts over otherwise."""

    def __init__(self, folder, files, shape, meta):
        self.folder = os.fspath(folder)
        self.files = list(files)
        self.meta = dict(meta, shape=list(shape))
        self.codes_path = os.path.join(self.folder, CODES_FILE)
        self.index_path = os.path.join(self.folder, INDEX_FILE)
        os.makedirs(self.folder, exist_ok=True)
        previous = self._matching_index()
        if previous is not None:
            self.rows_done = previous["rows_done"]
            self.skipped = dict(previous["skipped"])
        else:
            self.rows_done = 0
            self.skipped = {}
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
            array = np.load(self.codes_path, mmap_mode="r")
        except (UserError, OSError, ValueError):
            return None
        expected = (len(self.files),) + tuple(self.meta["shape"])
        same = (index.get("format") == FORMAT and index.get("files") == self.files
                and index.get("meta") == self.meta and array.shape == expected and array.dtype == np.float32)
        return index if same else None

    def write(self, codes, skipped=None):
        """Store the next ``len(codes)`` rows; ``skipped`` maps file names among them to why they have no code."""
        end = self.rows_done + len(codes)
        # plain writes, not a memory map: written pages of a map count in this process's resident memory, which then
        # grows with the number of images
        with open(self.codes_path, "r+b") as f:
            f.seek(self._data_offset + self.rows_done * self._row_bytes)
            f.write(np.ascontiguousarray(codes, dtype="<f4").tobytes())
            f.flush()
            os.fsync(f.fileno())  # the rows reach the disk before the index says they are done
        self.rows_done = end
        self.skipped.update(skipped or {})
        self._save(complete=self.complete)

    def _save(self, complete):
        write_json(self.index_path, {
            "format": FORMAT, "complete": complete, "rows_done": self.rows_done,
            "meta": self.meta, "files": self.files, "skipped": self.skipped,
        })
