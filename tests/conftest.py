import os

import pytest

from helpers import WEIGHTS_PREFIX
from models.runtime import setup_runtime

setup_runtime()  # before any test imports MXNet, as every entry point does


@pytest.fixture(scope="session")
def weights():
    """Prefix of the real converted ImageNet ResNet-50 (made by `make setup`)."""
    if not os.path.exists(WEIGHTS_PREFIX + "-0000.params"):
        pytest.fail("the converted ResNet-50 is missing: run `make setup` (or `make test`, which runs it)")
    return WEIGHTS_PREFIX
