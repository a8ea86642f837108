"""16-bit, 32-bit and float images: the same 8-bit pixels as the float64 formula, without float64 copies of them."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import models.images as images
from helpers import REPO
from models.images import read_image, resize_image, to_8bit


def formula_16bit(pixels):
    """The reference: clip(round(x * 255/65535)) in float64, as the loader has always converted 16-bit images."""
    return np.clip(np.round(pixels.astype(np.float64) * (255.0 / 65535.0)), 0, 255).astype(np.uint8)


def random_16bit(shape, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 65536, shape, dtype=np.uint16)
    pixels.flat[:4] = [0, 65535, 128, 129]  # the ends, and the values either side of 0.5 after scaling (128.5)
    return pixels


@pytest.fixture(params=[1 << 20, 50], ids=["one-strip", "many-strips"])
def strip_pixels(request, monkeypatch):
    """Convert in one strip (the default size on a small image) and in strips of a few rows (the large-image path)."""
    monkeypatch.setattr(images, "STRIP_PIXELS", request.param)
    return request.param


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16bit_conversion_equals_the_float64_formula(strip_pixels, mode):
    pixels = random_16bit((97, 131))
    raw = pixels.astype("<u2" if mode == "I;16" else ">u2").tobytes()
    image = Image.frombytes(mode, (131, 97), raw)
    converted = to_8bit(image)
    assert converted.mode == "L"
    np.testing.assert_array_equal(np.asarray(converted), formula_16bit(pixels))


@pytest.mark.parametrize("shape", [(260, 300), (300, 260), (512, 512), (700, 230)])
@pytest.mark.parametrize("resize", ["crop", "squash"])
def test_16bit_png_reads_as_its_8bit_conversion_resized(tmp_path, strip_pixels, shape, resize):
    """read_image never converts a 16-bit image whole, yet gives what resizing the converted image gave."""
    pixels = random_16bit(shape, seed=shape[0])
    Image.fromarray(pixels).save(tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as image:
        assert image.mode == "I;16"  # PIL's own decode: 2 bytes a pixel
    expected = np.asarray(resize_image(Image.fromarray(formula_16bit(pixels), mode="L"), 224, resize))
    np.testing.assert_array_equal(read_image(tmp_path / "x.png", 224, resize), expected)


def test_float_and_32bit_images_keep_their_scaling(strip_pixels):
    rng = np.random.default_rng(1)
    unit = rng.random((40, 70), dtype=np.float32)  # 0..1: scaled to 0..255
    np.testing.assert_array_equal(np.asarray(to_8bit(Image.fromarray(unit, mode="F"))),
                                  np.clip(np.round(unit.astype(np.float64) * 255), 0, 255).astype(np.uint8))
    last_pixel_over_1 = unit.copy()
    last_pixel_over_1[-1, -1] = 1.5  # in the last strip
    for wide in (unit * 300 - 20, last_pixel_over_1):  # maximum > 1: taken as 0..255, clipped
        np.testing.assert_array_equal(np.asarray(to_8bit(Image.fromarray(wide, mode="F"))),
                                      np.clip(np.round(wide.astype(np.float64)), 0, 255).astype(np.uint8))
    integers = rng.integers(-1000, 100000, (40, 70), dtype=np.int32)  # 'I': the 16-bit range, clipped
    np.testing.assert_array_equal(np.asarray(to_8bit(Image.fromarray(integers, mode="I"))), formula_16bit(integers))


# VmHWM, the peak RSS of this process's own memory since exec: its ru_maxrss would also count the parent's peak
# (pytest's, which can be larger), that a child started by vfork inherits at exec
PEAK_CHILD = """
import sys
from models.images import read_image
read_image(sys.argv[1], 224, "crop")
with open("/proc/self/status") as f:
    print(next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) // 1024)
"""


@pytest.fixture(scope="module")
def large_pngs(tmp_path_factory):
    """A 6000x6000 gray PNG in 8 bits and the same picture in 16 bits (blocky, so that it compresses to ~100 KB)."""
    folder = tmp_path_factory.mktemp("large")
    blocks = np.random.default_rng(2).integers(0, 256, (40, 40), dtype=np.uint8)
    gray = np.kron(blocks, np.ones((150, 150), np.uint8))
    Image.fromarray(gray).save(folder / "gray8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "gray16.png")
    return folder / "gray8.png", folder / "gray16.png"


def peak_mib(path):
    """Peak memory (MiB) of a fresh process that reads one image the way train.py does."""
    result = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(path)], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


def test_large_16bit_png_decodes_in_about_the_memory_of_its_8bit_twin(large_pngs):
    """The 16-bit decode holds 2 bytes a pixel (36 MiB more here than 8 bits) and no float64 copy (275 MiB each)."""
    path8, path16 = large_pngs
    np.testing.assert_array_equal(read_image(path8), read_image(path16))
    peak8, peak16 = peak_mib(path8), peak_mib(path16)
    assert peak16 <= 1.5 * peak8 + 16, f"peak memory: {peak16} MiB for 16-bit vs {peak8} MiB for 8-bit"
