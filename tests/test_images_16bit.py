"""16-bit, 32-bit and float images: the same 8-bit pixels as the float64 formula, without float64 copies of them."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import models.highdepth as highdepth
from bench.films import twelve_bit, write_png16
from helpers import REPO, run_script
from models.codes import CodeStore
from models.headfolder import code_identity
from models.highdepth import png_significant_bits, to_8bit
from models.images import View, measure_depth
from models.labels import save_labels
from models.resize import resize_image


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
    monkeypatch.setattr(highdepth, "STRIP_PIXELS", request.param)
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
    """A 16-bit image is never converted whole, yet reads as resizing the converted image gave."""
    pixels = random_16bit(shape, seed=shape[0])
    Image.fromarray(pixels).save(tmp_path / "x.png")
    with Image.open(tmp_path / "x.png") as image:
        assert image.mode == "I;16"  # PIL's own decode: 2 bytes a pixel
    expected = np.asarray(resize_image(Image.fromarray(formula_16bit(pixels), mode="L"), 224, resize))
    np.testing.assert_array_equal(View(resize=resize).read(tmp_path / "x.png"), expected)


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
from models.images import View
View().read(sys.argv[1])
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
    np.testing.assert_array_equal(View().read(path8), View().read(path16))
    peak8, peak16 = peak_mib(path8), peak_mib(path16)
    assert peak16 <= 1.5 * peak8 + 16, f"peak memory: {peak16} MiB for 16-bit vs {peak8} MiB for 8-bit"


def twelve_bit_exports(folder, gray):
    """``gray`` (8-bit) as the 16-bit exports of its 12-bit values v x 16 + 8 seen in the wild: as they are, with an
    sBIT chunk saying 12, left-justified with that chunk (as the PNG specification has it: scaled to 65535), and as a
    16-bit TIFF; and the 8-bit PNG itself. Returns {kind: path}."""
    values = twelve_bit(gray)
    paths = {kind: folder / f"{kind}.{'tif' if kind == 'tiff' else 'png'}"
             for kind in ("8bit", "plain", "sbit", "left", "tiff")}
    Image.fromarray(gray).save(paths["8bit"])
    write_png16(paths["plain"], values)
    write_png16(paths["sbit"], values, significant=12)
    write_png16(paths["left"], np.round(values * (65535 / 4095)).astype(np.uint16), significant=12)
    Image.fromarray(values).save(paths["tiff"])
    return paths


def test_12bit_values_in_16bit_files_read_as_their_8bit_film(tmp_path):
    """The set's significant bits, from sBIT or from its largest value, map v x 16 + 8 back onto v exactly, whichever
    way the export wrote them; the old rule (0..65535) left them in the 17 darkest of 256 gray levels."""
    gray = np.asarray(Image.open(os.path.join(REPO, "examples", "nih-sample", "normal", "00001403_002.png"))
                      .convert("L"))
    paths = twelve_bit_exports(tmp_path, gray)
    assert png_significant_bits(paths["sbit"]) == png_significant_bits(paths["left"]) == 12
    assert png_significant_bits(paths["plain"]) is None and png_significant_bits(paths["8bit"]) is None
    assert measure_depth([paths["8bit"]]) == (None, None)
    largest = int(twelve_bit(gray).max())
    assert measure_depth([paths["plain"], paths["tiff"], paths["8bit"]]) == (
        12, f"2 high-depth images, 12 significant bits (2 from their largest value ({largest}))")
    assert measure_depth([paths["sbit"], paths["left"]])[1] == "2 high-depth images, 12 significant bits (2 from " \
                                                              "their sBIT chunk)"
    film = View().read(paths["8bit"])
    for kind in ("plain", "sbit", "left", "tiff"):
        decoded = View(bits=12).decode(paths[kind])
        np.testing.assert_array_equal(decoded.pixels, film, err_msg=kind)
        assert decoded.notice is None
    assert View().read(paths["plain"]).max() <= 16  # the old rule: 4088 / 65535 x 255
    np.testing.assert_array_equal(View().read(paths["left"]), film)  # left-justified: the old rule was right

    beyond = View(bits=10).decode(paths["plain"])
    assert beyond.notice == f"values up to {largest} exceed the 10 significant bits recorded for its set (the " \
                            f"largest 1023): clipped to white"
    assert View(bits=10).describe()["significant_bits"] == 10 and "significant_bits" not in View().describe()
    assert View.of(View(bits=10).describe()) == View(bits=10)
    # codes recording no significant bits mapped 16-bit images from 16 bits: a head reads them beside --significant-bits
    # 16 codes, not beside 12-bit ones
    unrecorded, sixteen, twelve = ({"shape": [512, 7, 7], **View(bits=bits).describe()} for bits in (None, 16, 12))
    assert code_identity(unrecorded) == code_identity(sixteen) != code_identity(twelve)


def test_a_film_of_far_fewer_bits_than_its_mapping_is_named_with_the_option(tmp_path):
    """A 12-bit film in a 16-bit file mapped from 16 bits (a head of 8-bit films, or of 16-bit ones) gets its own
    warning naming its likely depth and --significant-bits; a set of 8-bit films records 8 and maps a high-depth film
    from 16; its codes match codes of any depth (no depth mapping made them), and test_model.py's check names
    train.py's option."""
    from models.errors import UserError
    from models.headfolder import check_codes_depth, check_codes_match

    gray = np.asarray(Image.open(os.path.join(REPO, "examples", "nih-sample", "normal", "00001403_002.png"))
                      .convert("L"))
    paths = twelve_bit_exports(tmp_path, gray)
    largest = int(twelve_bit(gray).max())
    for view in (View(), View(bits=8), View(bits=16)):
        notice = view.decode(paths["plain"]).notice
        assert notice.startswith(f"values reach only {largest}, 12 of the 16 significant bits") and \
            "likely a 12-bit film in a 16-bit file" in notice and "--significant-bits 12" in notice, notice
    np.testing.assert_array_equal(View(bits=8).read(paths["plain"]), View().read(paths["plain"]))
    assert View(bits=12).decode(paths["plain"]).notice is None and View().decode(paths["left"]).notice is None
    assert View(bits=8).describe()["significant_bits"] == 8

    def meta(bits):
        return {"model_sha256": "m", "layer": "l", "shape": [512, 7, 7], **View(bits=bits).describe()}
    head = {"backbone": meta(8)}
    for bits in (None, 12, 16):  # 8-bit training films: codes of any depth mapping fit
        check_codes_match(meta(bits), head, "codes")
    check_codes_match(meta(8), {"backbone": meta(12)}, "codes")
    with pytest.raises(UserError, match="--significant-bits 12"):
        check_codes_match(meta(16), {"backbone": meta(12)}, "codes")
    check_codes_depth(meta(12), 12, "codes")
    check_codes_depth(meta(8), 12, "codes")
    with pytest.raises(UserError, match=r"from 16 significant bits, not 12: make them again with train.py "
                                        r"--significant-bits 12"):
        check_codes_depth(meta(None), 12, "codes")


def test_a_12bit_export_trains_and_predicts_like_its_8bit_films(weights, tmp_path):
    """train.py measures the set's significant bits and records them in both codes' indexes, head.json keeps them,
    models.predict maps new films with them (and warns of one that exceeds them); the codes and probabilities are
    those of the same films in 8 bits. Codes of another depth are refused by test_model.py."""
    sample = os.path.join(REPO, "examples", "nih-sample")
    folders = {}
    for depth in (8, 12):
        for side, count in (("train", slice(0, 6)), ("test", slice(6, 8))):
            folder = folders[depth, side] = tmp_path / f"{depth}bit" / side
            os.makedirs(folder)
            for label in ("normal", "pneumonia"):
                for name in sorted(os.listdir(os.path.join(sample, label)))[count]:
                    gray = np.asarray(Image.open(os.path.join(sample, label, name)).convert("L"))
                    if depth == 8:
                        Image.fromarray(gray).save(folder / f"{label}_{name}")
                    else:
                        write_png16(folder / f"{label}_{name}", twelve_bit(gray))
    labels = {"train": tmp_path / "train_labels.json", "test": tmp_path / "test_labels.json"}
    for side, path in labels.items():
        save_labels(path, ["normal", "pneumonia"], {name: name.split("_")[0] for name in os.listdir(folders[8, side])})
    codes = {}
    for depth in (8, 12):
        codes[depth] = tmp_path / f"codes{depth}"
        done = run_script("train.py", folders[depth, "train"], folders[depth, "test"], codes[depth] / "train",
                          codes[depth] / "test", "--gpus", "none")
        assert done.returncode == 0, done.stderr
    assert "TRAIN_IMGS: 12 high-depth images, 12 significant bits (12 from their largest value" in done.stdout
    assert "values 0..4095 map onto 0..255 in both folders" in done.stdout
    for side in ("train", "test"):
        eight, twelve = CodeStore(codes[8] / side), CodeStore(codes[12] / side)
        assert twelve.meta["significant_bits"] == 12 and eight.meta["significant_bits"] == 8  # 8-bit films
        np.testing.assert_array_equal(twelve.read(twelve.names), eight.read(eight.names))

    models = tmp_path / "models"
    trained = run_script("train_model.py", folders[12, "train"], codes[12] / "train", labels["train"], models,
                         "--epochs", 2, "--folds", 0, "--layout", "avg", "--gpus", "none")
    assert trained.returncode == 0, trained.stderr
    assert json.loads((models / "head.json").read_text())["backbone"]["significant_bits"] == 12

    hot = np.full((300, 300), 4000, np.uint16)
    hot[:20] = 65535  # a film of another export, beyond 12 bits
    write_png16(folders[12, "test"] / "zz_hot.png", hot)
    probabilities = {}
    for depth in (8, 12):
        done = run_script("-m", "models.predict", models, folders[depth, "test"], "--out", tmp_path / f"p{depth}",
                          "--gpus", "none")
        assert done.returncode == 0, done.stderr
        with open(tmp_path / f"p{depth}" / "predictions.csv") as f:
            probabilities[depth] = {os.path.basename(row.pop("file")): row for row in csv.DictReader(f)}
    assert "zz_hot.png: values up to 65535 exceed the 12 significant bits recorded for its set" in done.stderr
    del probabilities[12]["zz_hot.png"]
    assert probabilities[12] == probabilities[8]

    exported = run_script("-m", "models.export", models, tmp_path / "head.onnx")  # the ONNX runner maps them so too
    assert exported.returncode == 0, exported.stderr
    done = run_script("-m", "models.onnx_predict", tmp_path / "head.onnx", folders[12, "test"], "--out",
                      tmp_path / "onnx")
    assert done.returncode == 0, done.stderr
    assert "zz_hot.png: values up to 65535 exceed the 12 significant bits recorded for its set" in done.stderr
    with open(tmp_path / "onnx" / "predictions.csv") as f:
        onnx = {os.path.basename(row.pop("file")): row for row in csv.DictReader(f)}
    for name, row in probabilities[8].items():
        assert abs(float(onnx[name]["p_pneumonia"]) - float(row["p_pneumonia"])) < 1e-4, name

    other = run_script("train.py", folders[12, "train"], folders[12, "test"], tmp_path / "c16" / "train",
                       tmp_path / "c16" / "test", "--gpus", "none", "--significant-bits", "16")
    assert other.returncode == 0 and "significant bits" not in other.stdout, other.stderr
    refused = run_script("test_model.py", folders[12, "test"], tmp_path / "c16" / "test", labels["test"], models)
    assert refused.returncode != 0
    assert "significant_bits 16 (head trained on 12)" in refused.stderr and "--significant-bits 12" in refused.stderr
    beyond = run_script("train.py", folders[12, "train"], folders[12, "test"], tmp_path / "c33" / "train",
                        tmp_path / "c33" / "test", "--significant-bits", "33")
    assert beyond.returncode == 2 and "--significant-bits: must be from 9 to 32, got 33" in beyond.stderr
