"""The int8 fast path: oneDNN int8 quantisation of the cut network, its activation ranges measured on a sample of the
input images (the int8 samples; MXNet calls this step calibration, not to be confused with the recalibration of
probabilities, ``models.calibration``).

The quantised graph is cached under a key made of the model's sha256, the layer, the view (resize mode, field) and the
content of the int8 samples, so a second run with the same inputs quantises nothing. On disk the cache folder
(TRAIN_CODES/int8-calibration) and the codes' index ("int8_calibration": the key) keep the names they were written
with, so that codes and heads made before still read.
"""

import hashlib
import os

import numpy as np

from models.errors import UserError
from models.images import ImageReadError, View
from models.checkpoint import load_checkpoint, require_checkpoint, save_checkpoint
from models.pretrained import Backbone, cut
from models.weights import sha256_of

RANGE_MODE = "entropy"  # activation ranges by KL-divergence thresholds: closer to fp32 than min/max ("naive"), as fast


def quantization_sample(paths, count, seed=0):
    """A seeded random sample of ``count`` image paths (all of them when there are fewer), in a stable order."""
    paths = sorted(paths)
    if len(paths) <= count:
        return paths
    chosen = np.random.RandomState(seed).choice(len(paths), count, replace=False)
    return [paths[i] for i in sorted(chosen)]


def quantization_key(model_sha256, layer, view, paths):
    """The cache key of the int8 network quantised on the files ``paths`` as ``view`` shows them."""
    seen = view.resize if view.field == "whole" else f"{view.resize}|{view.field}|{list(view.box)}"
    # the keys of sets without 16-bit images stay what they were
    seen += f"|bits {view.high_depth_bits}" if view.high_depth_bits else ""
    digest = hashlib.sha256(f"{model_sha256}|{layer}|{seen}|{RANGE_MODE}".encode())
    for path in paths:
        digest.update(sha256_of(path).encode())
    return digest.hexdigest()[:16]


def quantize(prefix, layer, images):
    """(symbol, arg_params, aux_params) of the int8 network, its activation ranges measured on ``images`` (n, 224, 224,
    3) uint8."""
    import mxnet as mx
    from mxnet.contrib.quantization import quantize_model_mkldnn

    symbol, args, aux = load_checkpoint(prefix)
    symbol = cut(symbol, layer)
    data = mx.io.NDArrayIter(data=images.transpose(0, 3, 1, 2).astype(np.float32), batch_size=min(len(images), 16))
    return quantize_model_mkldnn(symbol, args, aux, ctx=mx.cpu(), calib_mode=RANGE_MODE, calib_data=data,
                                 num_calib_examples=len(images), quantized_dtype="auto", quantize_mode="smart",
                                 label_names=())


def int8_backbone(prefix, layer, sample_paths, batch_size=32, view=View(), cache_dir=None, log=print,
                  speed_check=False):
    """A Backbone running the int8 version of ``prefix`` cut at ``layer``, quantised on the int8 samples
    ``sample_paths`` or loaded from ``cache_dir``.

    ``speed_check``: time it against fp32 at load and run fp32 where int8 is not faster (see Backbone); the
    quantised network is cached either way."""
    import mxnet as mx

    readable = []
    for path in sample_paths:
        try:
            readable.append((path, view.load(path)))
        except ImageReadError:
            continue
    if not readable:
        raise UserError("--int8 needs at least one readable image to quantise on; none of the sampled files could be "
                        "read")
    model_sha256 = sha256_of(require_checkpoint(prefix)[1])
    key = quantization_key(model_sha256, layer, view, [p for p, _ in readable])
    cached = os.path.join(cache_dir, f"int8-{key}") if cache_dir else None
    graph = None
    if cached and os.path.exists(f"{cached}-0000.params"):
        try:
            graph = load_checkpoint(cached)
            log(f"int8: using the quantised network cached in {cached}-*")
        except UserError as err:  # a cut-off or damaged cache is remade, not trusted
            log(f"int8: the cached quantised network {cached}-* cannot be read ({err}): quantising again")
    if graph is not None:
        symbol, args, aux = graph
    else:
        log(f"int8: quantising on {len(readable)} sample images ({RANGE_MODE} activation ranges)")
        symbol, args, aux = quantize(prefix, layer, np.stack([image for _, image in readable]))
        if cached:
            save_checkpoint(cached, symbol, args, aux)
    return Backbone(prefix, layer, [mx.cpu()], batch_size, graph=(symbol, args, aux), precision="int8",
                    int8_key=key, model_sha256=model_sha256, speed_check=speed_check)
