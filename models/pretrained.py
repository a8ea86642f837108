"""Load an MXNet symbolic checkpoint as a backbone, cut at any internal layer, and run it fast.

Any checkpoint ``PREFIX-symbol.json`` + ``PREFIX-0000.params`` works (the converted ImageNet ResNet-50 made by
``make setup``, or e.g. the official MXNet model-zoo resnet-50 a user downloaded). Its input must be ``data`` taking
raw RGB 0..255 in NCHW, the model-zoo contract.

``python -m models.pretrained --classify IMAGE...`` prints the top-5 ImageNet classes (the full, uncut network).
"""

import argparse
import difflib
import os

import numpy as np

from models.errors import UserError, mxnet_reason, run_cli
from models.images import ImageReadError, load_image
from models.weights import DEFAULT_PREFIX, sha256_of

DEFAULT_LAYER = "stage4_unit2_relu1_output"
INPUT_SIZE = 224
PRECISIONS = ("fp32", "bf16", "int8")  # int8 graphs are made by models/quantize.py and passed in as ``graph``


def require_checkpoint(prefix, epoch=0):
    """(symbol file, params file) of a checkpoint; UserError naming the missing file and the fix."""
    symbol_file, params_file = f"{prefix}-symbol.json", f"{prefix}-{epoch:04d}.params"
    for path in (symbol_file, params_file):
        if not os.path.exists(path):
            hint = "run `make setup` to fetch and convert the ImageNet weights" if prefix == DEFAULT_PREFIX \
                else "--model takes a checkpoint prefix PREFIX with PREFIX-symbol.json and PREFIX-0000.params"
            raise UserError(f"model file not found: {path}; {hint}")
    return symbol_file, params_file


def load_checkpoint(prefix, epoch=0):
    """(symbol, arg_params, aux_params) of an MXNet checkpoint; UserError naming the missing file and the fix."""
    import mxnet as mx

    symbol_file, params_file = require_checkpoint(prefix, epoch)
    try:
        symbol = mx.sym.load(symbol_file)
        saved = mx.nd.load(params_file)
    except mx.base.MXNetError as err:
        raise UserError(f"cannot load checkpoint {prefix}: {mxnet_reason(err)} (a damaged or cut-off file: "
                        f"remake it, for the converted ResNet-50 with `make setup`)") from None
    args = {k[4:]: v for k, v in saved.items() if k.startswith("arg:")}
    aux = {k[4:]: v for k, v in saved.items() if k.startswith("aux:")}
    return symbol, args, aux


def layer_names(symbol):
    """Every internal output a backbone can be cut at (``<node>_output``), inputs and parameters left out."""
    arguments = set(symbol.list_arguments()) | set(symbol.list_auxiliary_states())
    return [name for name in symbol.get_internals().list_outputs() if name not in arguments]


def to_bfloat16(symbol, args, aux):
    """The graph with its convolutions, GEMMs and their weights in bfloat16, input and output kept float32.

    It must be converted before oneDNN fuses it: MXNet's AMP lists plain ops only and passes fused ones over.
    """
    from mxnet.contrib import amp

    return amp.convert_model(symbol, args, aux, target_dtype="bfloat16", cast_optional_params=True)


def put_image(batch, position, pixels):
    """Write a (H, W) gray or (H, W, 3) RGB uint8 image into slot ``position`` of a float32 NCHW batch."""
    batch[position] = pixels if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # gray fills all three channels


def cut(symbol, layer):
    names = layer_names(symbol)
    if layer not in names:
        close = difflib.get_close_matches(layer, names, n=5, cutoff=0.6) or names[-5:]
        raise UserError(f"layer {layer!r} is not in the model; closest valid names: {', '.join(close)}")
    return symbol.get_internals()[layer]


class Backbone:
    """A checkpoint cut at ``layer`` (None: the whole network), bound for fixed-size batches of 224x224 RGB.

    ``precision`` bf16 runs a bfloat16 copy of the network on the CPU. ``graph`` = (symbol, arg_params, aux_params)
    runs that graph instead of the checkpoint's (e.g. its int8 version, see models/quantize.py); ``precision`` and
    ``calibration`` then name it in the codes' metadata, and ``model_sha256``, when the caller has it already, spares
    hashing the params file again. The first, slow forward pass (oneDNN picks its kernels) is made here, so a
    constructed Backbone runs at full speed.
    """

    def __init__(self, prefix=DEFAULT_PREFIX, layer=DEFAULT_LAYER, contexts=None, batch_size=32, graph=None,
                 precision="fp32", calibration=None, model_sha256=None):
        import mxnet as mx

        from models.devices import require_native_bf16

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.prefix, self.layer, self.batch_size = prefix, layer, batch_size
        self.precision, self.calibration = precision, calibration
        self.contexts = contexts or [mx.cpu()]
        if precision != "fp32" and any(ctx.device_type != "cpu" for ctx in self.contexts):
            raise UserError(f"the {precision} network runs on the CPU only (oneDNN); use --gpus none, or fp32 on GPUs")
        if graph is None:
            symbol, args, aux = load_checkpoint(prefix)
            if "data" not in symbol.list_arguments():
                raise UserError(f"{prefix}-symbol.json has no input named 'data'; inputs: {symbol.list_arguments()[:5]}")
            symbol = cut(symbol, layer) if layer is not None else symbol
            if precision == "bf16":
                require_native_bf16()
                symbol, args, aux = to_bfloat16(symbol, args, aux)
        else:
            symbol, args, aux = graph
        needed = set(symbol.list_arguments()) - {"data"}
        missing = sorted(needed - set(args)) + sorted(set(symbol.list_auxiliary_states()) - set(aux))
        if missing:
            raise UserError(f"{prefix}-0000.params lacks {len(missing)} parameters of the network, e.g. {missing[:3]}")
        self.per_device = -(-batch_size // len(self.contexts))
        self.executors = []
        for ctx in self.contexts:
            # oneDNN graph fusion (conv+bn+relu, sum) on the CPU; an int8 graph comes already fused
            fuse = ctx.device_type == "cpu" and precision != "int8"
            bound = symbol.get_backend_symbol("MKLDNN") if fuse else symbol
            executor = bound.simple_bind(ctx, data=(self.per_device, 3, INPUT_SIZE, INPUT_SIZE), grad_req="null")
            executor.copy_params_from(args, aux, allow_extra_params=True)
            self.executors.append(executor)
        self.output_shape = tuple(self.executors[0].outputs[0].shape[1:])
        self.model_sha256 = model_sha256 or sha256_of(f"{prefix}-0000.params")
        self.run(self.input_batch(), 0)

    def input_batch(self):
        """A zeroed float32 NCHW batch of the bound size, to fill with ``put_image`` and pass to ``run``."""
        return np.zeros((self.per_device * len(self.executors), 3, INPUT_SIZE, INPUT_SIZE), np.float32)

    def run(self, batch, count):
        """Outputs of the first ``count`` images of an ``input_batch``, as float32 numpy (count, *output_shape)."""
        for i, executor in enumerate(self.executors):  # forward calls return at once; the devices run in parallel
            executor.arg_dict["data"][:] = batch[i * self.per_device:(i + 1) * self.per_device]
            executor.forward(is_train=False)
        outputs = [executor.outputs[0].asnumpy() for executor in self.executors]
        return np.concatenate(outputs)[:count]

    def __call__(self, images):
        """Outputs for a (n, 224, 224, 3) uint8 RGB batch, n <= batch_size, as float32 numpy (n, *output_shape)."""
        batch = self.input_batch()  # padded to the fixed size: static shapes, the same numbers for every n
        batch[:len(images)] = images.transpose(0, 3, 1, 2)
        return self.run(batch, len(images))


def classify(paths, prefix=DEFAULT_PREFIX, top=5):
    """[(path, [(class name, probability), ...top])] from the full network."""
    from models.fileio import read_json

    net = Backbone(prefix, layer=None, batch_size=1)
    class_file = f"{prefix}-classes.json"
    classes = read_json(class_file, "class names") if os.path.exists(class_file) else None
    results = []
    for path in paths:
        try:
            probs = net(load_image(path, INPUT_SIZE, resize="squash")[None])[0]
        except ImageReadError as err:
            raise UserError(str(err)) from None
        best = np.argsort(probs)[::-1][:top]
        results.append((path, [(classes[i] if classes else str(i), float(probs[i])) for i in best]))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m models.pretrained",
                                     description="Self-check of the pretrained backbone: top-5 ImageNet classes.")
    parser.add_argument("--classify", nargs="+", metavar="IMAGE", required=True, help="image files to classify")
    parser.add_argument("--model", default=DEFAULT_PREFIX, help="checkpoint prefix (default: %(default)s)")
    args = parser.parse_args(argv)
    for path, top in classify(args.classify, args.model):
        print(path)
        for name, prob in top:
            print(f"  {prob:.3f}  {name}")


if __name__ == "__main__":
    run_cli(main)
