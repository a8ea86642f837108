"""Fixtures every test file may use: the real converted ResNet-50, and one `make demo` run shared by the tests that
check the same pipeline run. A test that uses the real weights is marked slow here, so that `make test-fast` leaves it
out without the test having to say so."""

import os
import subprocess
from dataclasses import dataclass

import pytest

from helpers import REPO, WEIGHTS_PREFIX
from models.runtime import setup_runtime

setup_runtime()  # before any test imports MXNet, as every entry point does


def pytest_collection_modifyitems(items):
    """Mark slow every test that asks for the real weights, directly or through another fixture."""
    for item in items:
        if "weights" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def weights():
    """Prefix of the real converted ImageNet ResNet-50 (made by `make setup`)."""
    if not os.path.exists(WEIGHTS_PREFIX + "-0000.params"):
        pytest.fail("the converted ResNet-50 is missing: run `make setup` (or `make test`, which runs it)")
    return WEIGHTS_PREFIX


@dataclass
class DemoRun:
    """``make demo OUT=out``: the folder it wrote and its output (bytes, as a log file would get them)."""
    out: object  # pathlib.Path
    stdout: bytes
    stderr: bytes


@pytest.fixture(scope="session")
def demo_run(weights, tmp_path_factory):
    """`make demo` (steps 2-5 on the bundled NIH sample, split by patient) run once for the whole session. Tests only
    read its folder: what they write goes to their own tmp_path."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    raw = subprocess.run(["make", "demo", f"OUT={out}"], cwd=REPO, capture_output=True, timeout=600)
    assert raw.returncode == 0, (raw.stdout[-3000:] + raw.stderr[-3000:]).decode(errors="replace")
    return DemoRun(out, raw.stdout, raw.stderr)
