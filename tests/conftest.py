import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import models  # noqa: F401  (sets OMP_NUM_THREADS before any test imports MXNet)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS_PREFIX = os.path.join(REPO, "models", "resnet-50")


def run_script(*args, timeout=600, **kwargs):
    """Run a project command (e.g. ``run_script("train.py", ...)`` or ``run_script("-m", "models.pretrained")``)."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


@pytest.fixture(scope="session")
def weights():
    """Prefix of the real converted ImageNet ResNet-50 (made by `make setup`)."""
    if not os.path.exists(WEIGHTS_PREFIX + "-0000.params"):
        pytest.fail("the converted ResNet-50 is missing: run `make setup` (or `make test`, which runs it)")
    return WEIGHTS_PREFIX


def read_tree(root):
    """Every file under ``root`` (relative path -> bytes)."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


def write_noise_pngs(folder, count, size=256, seed=0, prefix="img"):
    """``count`` distinct grayscale PNGs (smooth random blobs, so the network sees some structure)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        small = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        image = Image.fromarray(small).resize((size, size), Image.BICUBIC)
        names.append(f"{prefix}{i:04d}.png")
        image.save(os.path.join(folder, names[-1]))
    return names
