"""Fixtures every test file may use: the real converted ResNet-50. A test that uses the real weights is marked slow
here, so that `make test-fast` leaves it out without the test having to say so."""

import os

import pytest

from helpers import WEIGHTS_PREFIX
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
