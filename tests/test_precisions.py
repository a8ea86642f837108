"""train.py --int8 / --bf16: the fast networks give codes close to fp32; int8's calibration is cached."""

import os
import shutil

import numpy as np
import pytest
import skimage

from conftest import run_script
from models.codes import CodeStore
from models.devices import has_native_bf16, require_native_bf16
from models.errors import UserError

PHOTOS = ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "horse.png", "hubble_deep_field.jpg",
          "ihc.png", "moon.png", "motorcycle_left.png", "rocket.jpg", "page.png"]
NATIVE_BF16 = has_native_bf16()


def cosine(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def photos(weights, tmp_path_factory):
    """Folders of real photographs (scikit-image's) and their fp32 codes: (root, train.py arguments for a name)."""
    root = tmp_path_factory.mktemp("photos")
    data = os.path.join(os.path.dirname(skimage.__file__), "data")
    for folder in ("train", "test"):
        os.makedirs(root / folder)
    for name in PHOTOS:
        shutil.copy(os.path.join(data, name), root / "train" / name)
    shutil.copy(os.path.join(data, "rocket.jpg"), root / "test")

    def args(name, *flags):
        return ["train.py", root / "train", root / "test", root / name, root / f"{name}_test", *flags]

    fp32 = run_script(*args("fp32"))
    assert fp32.returncode == 0, fp32.stderr
    return root, args


def compare_to_fp32(root, name, precision):
    """(codes of run ``name``, their cosine similarity to the fp32 codes per photo), after checking the metadata."""
    reference, other = CodeStore(root / "fp32"), CodeStore(root / name)
    assert other.meta["precision"] == precision and reference.meta["precision"] == "fp32"
    assert other.shape == reference.shape == (512, 7, 7)
    codes = other.read(PHOTOS)
    return codes, cosine(reference.read(PHOTOS), codes)


def test_int8_codes_match_fp32_and_calibration_is_cached(photos):
    root, args = photos
    first = run_script(*args("int8", "--int8", "--calib-images", "8"))
    assert first.returncode == 0, first.stderr
    assert "int8: calibrating on 8 images" in first.stdout

    quantized, similarity = compare_to_fp32(root, "int8", "int8")
    assert similarity.mean() >= 0.95, similarity

    for folder in ("int8", "int8_test"):
        os.remove(root / folder / "index.json")
    second = run_script(*args("int8", "--int8", "--calib-images", "8"))
    assert second.returncode == 0, second.stderr
    assert "int8: using the calibrated network cached in" in second.stdout
    np.testing.assert_array_equal(CodeStore(root / "int8").read(PHOTOS), quantized)

    # a cut-off cache (a run killed while writing it, a full disk) is calibrated again, and says so
    cache = next((root / "int8" / "int8-calibration").glob("int8-*-0000.params"))
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    for folder in ("int8", "int8_test"):
        os.remove(root / folder / "index.json")
    third = run_script(*args("int8", "--int8", "--calib-images", "8"))
    assert third.returncode == 0, third.stderr
    assert "cannot be read" in third.stdout and "calibrating again" in third.stdout and "Traceback" not in third.stdout
    np.testing.assert_array_equal(CodeStore(root / "int8").read(PHOTOS), quantized)


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bfloat16 (avx512_bf16 / amx_bf16)")
def test_bf16_codes_match_fp32(photos):
    root, args = photos
    result = run_script(*args("bf16", "--bf16", "--gpus", "0"))
    assert result.returncode == 0, result.stderr
    assert "--gpus 0 ignored: the bf16 network runs on the CPU" in result.stderr

    codes, similarity = compare_to_fp32(root, "bf16", "bf16")
    assert not np.array_equal(codes, CodeStore(root / "fp32").read(PHOTOS))  # it did run in another precision
    assert similarity.min() >= 0.99, similarity


@pytest.mark.skipif(NATIVE_BF16, reason="this CPU has native bfloat16, so --bf16 runs")
def test_bf16_refused_without_native_support(photos):
    root, args = photos
    result = run_script(*args("bf16", "--bf16"))
    assert result.returncode == 2
    assert "--bf16 needs a CPU with native bfloat16 instructions" in result.stderr


def test_bf16_support_check():
    require_native_bf16({"avx512f", "avx512_bf16"})
    require_native_bf16({"amx_bf16", "amx_tile"})
    with pytest.raises(UserError, match="avx512_bf16 or amx_bf16"):
        require_native_bf16({"avx2", "avx512f", "avx512_vnni"})


def test_one_precision_at_a_time(photos):
    root, args = photos
    result = run_script(*args("both", "--bf16", "--int8"))
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
