"""The child processes the benches measure in: launched from the repository root, their exit checked, the tail of
their stderr shown when they fail (one function for every child), and their last stdout line read as JSON where
they report so (bench.child, bench/torch_peer.py)."""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
PYTHON = sys.executable
CHILD = [PYTHON, "-m", "bench.child"]
TORCH_PYTHON = os.path.join(BENCH, ".venv", "bin", "python")  # bench/.venv: torch + numpy, never the project's venv
TORCH_PEER = os.path.join(BENCH, "torch_peer.py")
STDERR_TAIL_LINES = 15


@dataclass
class Finished:
    stdout: str
    wall_s: float  # from launch to exit, as the parent saw it (model loads and interpreter start included)


def run_child(command, timeout=900, extra_env=None):
    """Run ``command`` (its parts made strings) from the repository root with ``extra_env`` added to this process's
    environment; a child that fails raises RuntimeError naming the command, its exit status and its last stderr
    lines."""
    command = list(map(str, command))
    env = dict(os.environ, **extra_env) if extra_env else None
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    wall_s = time.perf_counter() - started
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-STDERR_TAIL_LINES:])
        raise RuntimeError(f"{' '.join(command[:4])} ... failed (exit {result.returncode}):\n{tail}")
    return Finished(result.stdout, wall_s)


def run_json(command, timeout=900, extra_env=None):
    """Run a child whose last stdout line is a JSON object (bench.child, the PyTorch peer); that object."""
    lines = run_child(command, timeout, extra_env).stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{' '.join(map(str, command[:4]))} ... printed no result")
    return json.loads(lines[-1])
