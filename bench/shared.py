"""Measurements that rows of bench.run share within a round: train.py's runs over the --images PNGs give both
e2e_fp32 (its speed) and mem_small (its peak memory), one GEMM timing gives both GEMM-bound rows.

Each is kept under a digest of what it depends on (``dependency_key``): the child's command line, the environment
added to it, which of several fresh runs it is, and the identity (size, modification time, inode) of every file
under each path its command line names. A row that asks for the same child over the same files gets the same runs;
one whose command, environment or input files differ gets its own, whatever rows measured before it. The code that
runs and the packages it imports are not in the key: the measurements live in one bench process's memory for one
round, during which neither changes (results.json records the commit and versions of the whole run).

A row measured again (the machine got busy) drops every measurement it used, found by what it used rather than by
its name, so that a new row sharing a measurement never keeps a disturbed one.
"""

import hashlib
import json
import os
from dataclasses import dataclass, field

from bench.children import REPO


def path_identity(path):
    """[name, size, mtime_ns, inode] of the file ``path``, or of every file below the folder ``path``, by name."""
    if not os.path.isdir(path):
        files = [path]
    else:
        files = sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
    identity = []
    for name in files:
        stat = os.stat(name)
        identity.append([os.path.relpath(name, path), stat.st_size, stat.st_mtime_ns, stat.st_ino])
    return identity


def dependency_key(command, extra_env=None, run=0):
    """A digest of what a child's measurement depends on: ``command`` (relative paths are from the repository
    root, where children run), ``extra_env``, the ``run``-th fresh process of that command, and the identity of
    every existing file or folder the command names."""
    parts = list(map(str, command))
    named = {part: os.path.join(REPO, part) for part in parts}
    inputs = {part: path_identity(path) for part, path in named.items() if os.path.exists(path)}
    described = {"command": parts, "extra_env": dict(sorted((extra_env or {}).items())), "run": run,
                 "inputs": inputs}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


@dataclass
class Shared:
    value: object
    made_by: str  # the row that measured it
    used_by: set = field(default_factory=set)


class SharedMeasurements:
    """What rows measured this round, by dependency key; ``row`` is the row being measured now."""

    def __init__(self):
        self.row = None
        self._measured = {}

    def get(self, key, measure):
        """(value, the row that measured it): ``measure()`` run for the first row asking for ``key`` this round."""
        if key not in self._measured:
            self._measured[key] = Shared(measure(), self.row)
        shared = self._measured[key]
        shared.used_by.add(self.row)
        return shared.value, shared.made_by

    def forget(self, row):
        """Drop what ``row`` used, so that measuring it again measures that again."""
        self._measured = {key: shared for key, shared in self._measured.items() if row not in shared.used_by}

    def new_round(self):
        self._measured.clear()
