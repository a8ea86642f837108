"""train.py: image folders -> code stores, with the real converted weights."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from helpers import REPO, run_script, write_noise_pngs
from models.codes import CodeStore
from models.devices import nvidia_driver_present


def train_py(tmp_path, *extra, train="train", test="test"):
    return run_script("train.py", tmp_path / train, tmp_path / test, tmp_path / "train_codes", tmp_path / "test_codes",
                      *extra)


def test_interrupted_and_resumed_run_gives_identical_codes(weights, tmp_path):
    write_noise_pngs(tmp_path / "train", 80)
    write_noise_pngs(tmp_path / "test", 3, seed=1)
    fresh = train_py(tmp_path, "--batch-size", "16", train="train", test="test")
    assert fresh.returncode == 0, fresh.stderr
    reference = CodeStore(tmp_path / "train_codes").read([f"img{i:04d}.png" for i in range(80)])
    os.rename(tmp_path / "train_codes", tmp_path / "reference_codes")
    os.rename(tmp_path / "test_codes", tmp_path / "reference_test_codes")

    command = [sys.executable, "train.py", tmp_path / "train", tmp_path / "test", tmp_path / "train_codes",
               tmp_path / "test_codes", "--batch-size", "16"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    index = tmp_path / "train_codes" / "index.json"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill -9 once some, but not all, rows are saved
        try:
            done = json.loads(index.read_text())["rows_done"]
        except (OSError, ValueError):
            done = 0
        if done >= 32:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = json.loads(index.read_text())
    assert 32 <= partial["rows_done"] < 80 and not partial["complete"]

    resumed = train_py(tmp_path, "--batch-size", "16")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after" in resumed.stdout
    store = CodeStore(tmp_path / "train_codes")
    assert isinstance(store.array, np.memmap)
    np.testing.assert_array_equal(store.read([f"img{i:04d}.png" for i in range(80)]), reference)

    again = train_py(tmp_path, "--batch-size", "16")
    assert "already made, nothing to do" in again.stdout


def write_awkward_folder(folder):
    """Files of every kind a user's folder may hold; returns (pairs that must give equal codes, unreadable names)."""
    os.makedirs(folder)
    rng = np.random.default_rng(3)
    gray = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).resize((300, 260), Image.BICUBIC))
    Image.fromarray(gray).save(folder / "gray8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "gray16.png")  # same picture, 16-bit
    Image.fromarray(np.dstack([gray] * 3)).save(folder / "rgb.png")
    Image.fromarray(np.dstack([gray] * 3 + [np.full_like(gray, 7)])).save(folder / "rgba.png")
    Image.fromarray(np.dstack([gray] * 3)).save(folder / "rgb.bmp")
    Image.fromarray(gray).convert("P").save(folder / "palette.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.tif").write_text("not an image")
    (folder / "README.txt").write_text("ignored: not an image extension")
    with open(folder / "rgb.png", "rb") as f:
        (folder / "truncated.png").write_bytes(f.read()[:300])
    equal = [("gray8.png", "gray16.png"), ("gray8.png", "rgb.png"), ("gray8.png", "rgba.png"),
             ("gray8.png", "rgb.bmp"), ("gray8.png", "palette.png")]
    return equal, ["corrupt.png", "empty.jpg", "notes.tif", "truncated.png"]


def test_awkward_files_are_encoded_or_skipped_by_name(weights, tmp_path):
    equal, unreadable = write_awkward_folder(tmp_path / "train")
    write_noise_pngs(tmp_path / "test", 2)
    result = train_py(tmp_path, "--gpus", "auto")
    assert result.returncode == 0, result.stderr
    for name in unreadable:
        assert f"warning: skipped {name}:" in result.stderr
    store = CodeStore(tmp_path / "train_codes")
    assert sorted(store.skipped) == sorted(unreadable)
    assert "README.txt" not in store.index["files"]
    for a, b in equal:
        np.testing.assert_allclose(store.read([a]), store.read([b]), atol=1e-4, err_msg=f"{a} vs {b}")
    assert store.meta["layer"] == "stage4_unit2_relu1_output" and store.meta["resize"] == "crop"
    assert store.meta["shape"] == [512, 7, 7]
    # --gpus auto on a machine without a usable GPU: one notice saying why where a driver is present, else none
    assert ("notice: using the CPU:" in result.stderr) == nvidia_driver_present()


def test_squash_keeps_the_whole_image(weights, tmp_path):
    os.makedirs(tmp_path / "train")
    wide = np.zeros((100, 300), np.uint8)
    wide[:, :50] = 255  # a bright band that a centre crop cuts away
    Image.fromarray(wide).save(tmp_path / "train" / "wide.png")
    Image.fromarray(np.zeros((100, 300), np.uint8)).save(tmp_path / "train" / "dark.png")
    write_noise_pngs(tmp_path / "test", 1)
    for mode in ("crop", "squash"):
        result = run_script("train.py", tmp_path / "train", tmp_path / "test", tmp_path / mode, tmp_path / "t",
                            "--resize", mode)
        assert result.returncode == 0, result.stderr
    crop, squash = CodeStore(tmp_path / "crop"), CodeStore(tmp_path / "squash")
    np.testing.assert_array_equal(crop.read(["wide.png"]), crop.read(["dark.png"]))
    assert not np.allclose(squash.read(["wide.png"]), squash.read(["dark.png"]))


@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_missing_or_empty_folder_is_a_one_line_error(tmp_path, problem):
    write_noise_pngs(tmp_path / "train", 1)
    if problem == "empty":
        os.makedirs(tmp_path / "test")
        (tmp_path / "test" / "notes.txt").write_text("no images here")
    result = train_py(tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert str(tmp_path / "test") in result.stderr
    assert not (tmp_path / "train_codes").exists()


def test_unknown_layer_cli(weights, tmp_path):
    write_noise_pngs(tmp_path / "train", 1)
    write_noise_pngs(tmp_path / "test", 1)
    result = train_py(tmp_path, "--layer", "stage4_unit2_relu_1")
    assert result.returncode == 2
    assert "closest valid names" in result.stderr and "stage4_unit2_relu1_output" in result.stderr


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # pytest shows what the module ignores
def test_an_image_over_pils_pixel_cap_is_refused_by_its_header(tmp_path, monkeypatch):
    """Over PIL's pixel cap (lowered here) a raster image is refused before it is decoded, with the reason, the way a
    DICOM film is (read_file checks it itself: no warning filter is set for it in the decoding threads)."""
    import re

    from models.images import ImageReadError, read_file

    Image.new("L", (80, 60)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 80 * 60 - 1)
    with pytest.raises(ImageReadError, match=re.escape("big.png: not a readable image (80 x 60 = 4800 pixels, more "
                                                       "than the limit of 4799 (PIL.Image.MAX_IMAGE_PIXELS)")):
        read_file(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 80 * 60)
    assert read_file(tmp_path / "big.png").size == (80, 60)


def test_one_folder_is_encoded_with_two_arguments(weights, tmp_path):
    write_noise_pngs(tmp_path / "imgs", 3)
    result = run_script("train.py", tmp_path / "imgs", tmp_path / "codes", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    store = CodeStore(tmp_path / "codes")
    assert store.read([f"img{i:04d}.png" for i in range(3)]).shape[0] == 3


def test_three_folders_are_refused_and_help_shows_both_forms(tmp_path):
    result = run_script("train.py", tmp_path / "a", tmp_path / "b", tmp_path / "c")
    assert result.returncode == 2 and "give four folders" in result.stderr and "not 3" in result.stderr
    usage = run_script("train.py", "--help").stdout
    assert "python train.py TRAIN_IMGS TEST_IMGS TRAIN_CODES TEST_CODES" in usage
    assert "python train.py IMGS CODES" in usage
