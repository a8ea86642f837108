"""train.py --int8 / --bf16: the fast networks give codes close to fp32; the quantised int8 network is cached; where the
reduced precision is not faster than fp32 (simulated with the XVISION_SIMULATE_SLOW test hook), fp32 runs, one notice
line says why and the codes' index says fp32."""

import os
import shutil
import time

import numpy as np
import pytest
import skimage

from helpers import run_script
from models.codes import CodeStore
from models.devices import has_native_bf16
from models.pretrained import (
    MIN_SPEEDUP,
    SIMULATE_SLOW_ENV,
    SIMULATED_SPEEDUP,
    compare_speed,
)

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


def simulating_slow(precision):
    """The environment of a train.py run whose speed self-check sees ``precision`` run at 0.6x fp32."""
    return dict(os.environ, **{SIMULATE_SLOW_ENV: precision})


def notices(stderr):
    return [line for line in stderr.splitlines() if line.startswith("notice:")]


def assert_ran_fp32(root, name, result, precision):
    """``result`` (train.py --``precision`` on a simulated slow network) ran fp32, said so in one line, and its codes
    are the fp32 codes, recorded as fp32 in both codes folders."""
    assert result.returncode == 0, result.stderr
    said = notices(result.stderr)
    assert len(said) == 1 and f"the {precision} network is not faster than fp32" in said[0], result.stderr
    assert "running fp32 instead" in said[0] and "XVISION_SIMULATE_SLOW" in said[0]
    assert "cut at stage4_unit2_relu1_output (fp32)" in result.stdout
    for folder in (name, f"{name}_test"):
        meta = CodeStore(root / folder).meta
        assert meta["precision"] == "fp32" and meta["int8_calibration"] is None, meta
    np.testing.assert_array_equal(CodeStore(root / name).read(PHOTOS), CodeStore(root / "fp32").read(PHOTOS))


def compare_to_fp32(root, name, precision):
    """(codes of run ``name``, their cosine similarity to the fp32 codes per photo), after checking the metadata."""
    reference, other = CodeStore(root / "fp32"), CodeStore(root / name)
    assert other.meta["precision"] == precision and reference.meta["precision"] == "fp32"
    assert other.shape == reference.shape == (512, 7, 7)
    codes = other.read(PHOTOS)
    return codes, cosine(reference.read(PHOTOS), codes)


def test_int8_codes_match_fp32_and_the_quantised_network_is_cached(photos):
    root, args = photos
    first = run_script(*args("int8", "--int8", "--int8-samples", "8"))
    assert first.returncode == 0, first.stderr
    assert "int8: quantising on 8 sample images" in first.stdout

    quantized, similarity = compare_to_fp32(root, "int8", "int8")
    assert similarity.mean() >= 0.95, similarity

    for folder in ("int8", "int8_test"):
        os.remove(root / folder / "index.json")
    second = run_script(*args("int8", "--int8", "--calib-images", "8"))  # the flag's old name
    assert second.returncode == 0, second.stderr
    assert "int8: using the quantised network cached in" in second.stdout
    np.testing.assert_array_equal(CodeStore(root / "int8").read(PHOTOS), quantized)

    # a cut-off cache (a run killed while writing it, a full disk) is quantised again, and says so
    cache = next((root / "int8" / "int8-calibration").glob("int8-*-0000.params"))
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    for folder in ("int8", "int8_test"):
        os.remove(root / folder / "index.json")
    third = run_script(*args("int8", "--int8", "--int8-samples", "8"))
    assert third.returncode == 0, third.stderr
    assert "cannot be read" in third.stdout and "quantising again" in third.stdout and "Traceback" not in third.stdout
    np.testing.assert_array_equal(CodeStore(root / "int8").read(PHOTOS), quantized)
    assert not notices(third.stderr) and "x fp32 in" in third.stdout  # int8 is faster here: kept, after the check

    # where int8 is not faster than fp32 (simulated), fp32 runs (the quantised network is still cached) and the index
    # says so
    slow = run_script(*args("int8", "--int8", "--int8-samples", "8"), env=simulating_slow("int8"))
    assert "int8: using the quantised network cached in" in slow.stdout
    assert_ran_fp32(root, "int8", slow, "int8")


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bfloat16 (avx512_bf16 / amx_bf16)")
def test_bf16_codes_match_fp32(photos):
    """train.py --bf16 keeps bf16 where its self-check finds it faster, and runs fp32 and says so where it does not
    (an Intel Xeon with AMX under MXNet 1.9.1's oneDNN, docs/performance.md); either way the index tells the truth.
    The bf16 network's own codes are compared with fp32 without the speed check, so that holds on every such CPU."""
    from models.extract import extract_folder
    from models.pretrained import Backbone

    root, args = photos
    result = run_script(*args("bf16", "--bf16", "--gpus", "0"))
    assert result.returncode == 0, result.stderr
    assert "--gpus 0 ignored: the bf16 network runs on the CPU" in result.stderr
    declined = [line for line in notices(result.stderr) if "not faster" in line]
    if declined:
        assert len(declined) == 1 and "measured at load" in declined[0] and "running fp32 instead" in declined[0]
        assert CodeStore(root / "bf16").meta["precision"] == "fp32"
        np.testing.assert_array_equal(CodeStore(root / "bf16").read(PHOTOS), CodeStore(root / "fp32").read(PHOTOS))
    else:
        assert "x fp32 in" in result.stdout
        compare_to_fp32(root, "bf16", "bf16")

    extract_folder(Backbone(precision="bf16"), str(root / "train"), str(root / "bf16_direct"), log=lambda line: None)
    codes, similarity = compare_to_fp32(root, "bf16_direct", "bf16")
    assert not np.array_equal(codes, CodeStore(root / "fp32").read(PHOTOS))  # it did run in another precision
    assert similarity.min() >= 0.99, similarity
    assert similarity.mean() >= 0.999, similarity


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bfloat16 (avx512_bf16 / amx_bf16)")
def test_bf16_runs_fp32_where_it_is_not_faster(photos):
    root, args = photos
    result = run_script(*args("bf16_slow", "--bf16"), env=simulating_slow("bf16"))
    assert_ran_fp32(root, "bf16_slow", result, "bf16")


def test_speed_check_keeps_only_what_is_faster(monkeypatch):
    monkeypatch.delenv(SIMULATE_SLOW_ENV, raising=False)
    calls = []

    def runner(name, seconds):
        return lambda: (calls.append(name), time.sleep(seconds))

    fast = compare_speed("bf16", runner("fp32", 0.03), runner("bf16", 0.01))
    assert fast["speedup"] > 2 and fast["pairs"] == 2 and not fast["simulated"]  # clear after two pairs: stops
    assert calls == ["bf16", "fp32", "fp32", "bf16"]  # alternating which goes first
    slow = compare_speed("int8", runner("fp32", 0.01), runner("int8", 0.03))
    assert slow["speedup"] < 1 / 2 < MIN_SPEEDUP and set(slow) >= {"fp32_s", "int8_s"}
    close = compare_speed("bf16", runner("fp32", 0.02), runner("bf16", 0.02))
    assert close["pairs"] == 4  # near the line: more pairs before deciding
    monkeypatch.setenv(SIMULATE_SLOW_ENV, "int8,bf16")
    simulated = compare_speed("bf16", runner("fp32", 0.03), runner("bf16", 0.01))
    assert simulated["simulated"] and simulated["speedup"] == pytest.approx(SIMULATED_SPEEDUP)


@pytest.mark.skipif(NATIVE_BF16, reason="this CPU has native bfloat16, so --bf16 runs")
def test_bf16_refused_without_native_support(photos):
    root, args = photos
    result = run_script(*args("bf16", "--bf16"))
    assert result.returncode == 2
    assert "--bf16 needs a CPU with native bfloat16 instructions" in result.stderr


def test_one_precision_at_a_time(photos):
    root, args = photos
    result = run_script(*args("both", "--bf16", "--int8"))
    assert result.returncode == 2 and "not allowed with argument" in result.stderr
