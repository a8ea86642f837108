"""Atomic writes: a reader (or a resumed run) never sees a half-written file."""

import json
import os
import shutil
import tempfile
from contextlib import contextmanager

_UMASK = os.umask(0)  # read once: setting it (the only way to read it) is process-wide, and threads write files too
os.umask(_UMASK)


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes the file private; give it the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())


def read_json(path, what="file"):
    """Read a JSON file written by this project; raise UserError with the reason if it is missing or not JSON."""
    from models.errors import UserError

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{what} {path} is not valid JSON ({err})") from None
    except RecursionError:
        raise UserError(f"{what} {path} is nested too deeply to be a file of this project") from None


def check_output_folder(path, what, inputs=()):
    """UserError unless ``path`` can be made as an output folder: no file is in its way, and it is none of the input
    folders in ``inputs`` ((description, path) pairs), whose files a later run would then trip over."""
    from models.errors import UserError

    real = os.path.realpath(path)
    for other_what, other in inputs:
        if other is not None and os.path.realpath(other) == real:
            raise UserError(f"{what} {os.fspath(path)!r} is the same folder as {other_what} {os.fspath(other)!r}: "
                            f"give each its own folder")
    probe = os.path.abspath(path)
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UserError(f"cannot use {what} {os.fspath(path)!r}: {probe!r} is a file, not a folder")


def remove_stale_temps(folder):
    """Delete the temporary files an atomic write killed mid-way (kill -9, power cut) left in ``folder``."""
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(".tmp-") and os.path.isfile(os.path.join(folder, name)):
                os.remove(os.path.join(folder, name))


def link_or_copy(source, dest):
    """Put the file ``source`` names (a symbolic link's target) at ``dest``: a hard link, else (another file system,
    links not allowed) a copy; a ``dest`` that is that file already stays as it is."""
    source = os.path.realpath(source)  # os.link's follow_symlinks is ignored on Linux before Python 3.13
    if os.path.exists(dest) and os.path.samefile(source, dest):
        return
    if os.path.lexists(dest):
        os.remove(dest)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
