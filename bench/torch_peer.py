"""The PyTorch peer of the benchmark: the same cut ResNet-50 v1 (Caffe style), timed the way a PyTorch expert would.

Runs inside bench/.venv (torch + numpy, never the project's venv). `python -m bench.run` calls it as

    bench/.venv/bin/python bench/torch_peer.py WEIGHTS.npz --batch-size 32 --batches 8 --runs 3 --threads 2

WEIGHTS.npz (written by ``python -m bench.child export`` from models/resnet-50-0000.params) holds every ``arg:``/``aux:``
array of the MXNet checkpoint under its MXNet name, plus ``check_input`` (uint8 NHWC images) and ``check_output`` (what
the project's MXNet backbone made of them). The peer loads the same weights, reports how far its output is from
MXNet's, then times forward-only images/s of several expert variants on inputs already in memory. The last line of
stdout is one JSON object.

The network: ResNet-50 v1 as in Kaiming He's Caffe model (the Keras ``ResNet50`` weights the project converts): the
stride sits on the first 1x1 conv of a stage's first block, convs have biases, BatchNorm eps is 1e-3, and a first
BatchNorm (``bn_data``) subtracts the Caffe mean so the input is raw RGB 0..255, NCHW. It is cut after the first ReLU
of the second block of the last stage (``stage4_unit2_relu1``), so its output is (N, 512, 7, 7).
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

BN_EPS = 1e-3
UNITS_PER_STAGE = (3, 4, 6, 3)
STAGE_WIDTHS = (64, 128, 256, 512)
CUT = ("stage4", 2)  # cut after relu1 of this unit


def conv_bn(cin, cout, kernel, stride=1, pad=0):
    return nn.Conv2d(cin, cout, kernel, stride, pad, bias=True), nn.BatchNorm2d(cout, eps=BN_EPS)


class CutResNet50V1(nn.Module):
    """Layers are kept in a dict under their MXNet names (``stage2_unit1_conv1``, ``stage2_unit1_bn1``, ...)."""

    def __init__(self):
        super().__init__()
        layers = {"bn_data": nn.BatchNorm2d(3, eps=BN_EPS)}
        layers["conv0"], layers["bn0"] = conv_bn(3, 64, 7, 2, 3)
        self.units = []  # (name, stride, has projection, cut here)
        cin = 64
        for stage, (count, width) in enumerate(zip(UNITS_PER_STAGE, STAGE_WIDTHS), start=1):
            for unit in range(1, count + 1):
                name = f"stage{stage}_unit{unit}"
                stride = 2 if unit == 1 and stage > 1 else 1
                cut = (f"stage{stage}", unit) == CUT
                layers[f"{name}_conv1"], layers[f"{name}_bn1"] = conv_bn(cin, width, 1, stride)
                if not cut:
                    layers[f"{name}_conv2"], layers[f"{name}_bn2"] = conv_bn(width, width, 3, 1, 1)
                    layers[f"{name}_conv3"], layers[f"{name}_bn3"] = conv_bn(width, width * 4, 1)
                    if unit == 1:
                        layers[f"{name}_sc"], layers[f"{name}_sc_bn"] = conv_bn(cin, width * 4, 1, stride)
                self.units.append((name, unit == 1, cut))
                cin = width * 4
                if cut:
                    break
            if self.units[-1][2]:
                break
        self.layers = nn.ModuleDict(layers)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        layer = self.layers
        x = layer["bn_data"](x)
        x = self.pool(self.relu(layer["bn0"](layer["conv0"](x))))
        for name, projection, cut in self.units:
            y = self.relu(layer[f"{name}_bn1"](layer[f"{name}_conv1"](x)))
            if cut:
                return y
            y = self.relu(layer[f"{name}_bn2"](layer[f"{name}_conv2"](y)))
            y = layer[f"{name}_bn3"](layer[f"{name}_conv3"](y))
            shortcut = layer[f"{name}_sc_bn"](layer[f"{name}_sc"](x)) if projection else x
            x = self.relu(y + shortcut)
        return x

    def load_mxnet(self, arrays):
        """Copy MXNet ``arg:``/``aux:`` arrays into the model; every parameter and statistic must be found."""
        used = 0
        for name, module in self.layers.items():
            def take(key):
                nonlocal used
                used += 1
                return torch.from_numpy(np.ascontiguousarray(arrays[key], dtype=np.float32))

            with torch.no_grad():
                if isinstance(module, nn.Conv2d):
                    module.weight.copy_(take(f"arg:{name}_weight"))
                    module.bias.copy_(take(f"arg:{name}_bias"))
                else:
                    # bn_data has fix_gamma=True in MXNet: its gamma is 1 whatever is stored
                    gamma = take(f"arg:{name}_gamma")
                    module.weight.copy_(torch.ones_like(gamma) if name == "bn_data" else gamma)
                    module.bias.copy_(take(f"arg:{name}_beta"))
                    module.running_mean.copy_(take(f"aux:{name}_moving_mean"))
                    module.running_var.copy_(take(f"aux:{name}_moving_var"))
        return used


def to_input(images):
    """uint8 NHWC numpy -> float32 NCHW tensor in channels_last memory (a permute of NHWC is channels_last already)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last)


def time_variant(fn, images, batches, runs, warmup):
    """Images/s of each run (``batches`` forward passes of one in-memory uint8 batch, converted each time)."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn(to_input(images))
        rates = []
        for _ in range(runs):
            started = time.perf_counter()
            for _ in range(batches):
                fn(to_input(images))
            rates.append(batches * len(images) / (time.perf_counter() - started))
    return rates


def under_bf16(fn):
    """``fn`` run under bfloat16 autocast (convs and GEMMs in bf16 on oneDNN), returning float32 like the project."""
    def run(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn(x).float()
    return run


def build_variant(model, example, name):
    """One way an expert would run a CNN forward pass on CPU: eager, jit or compile."""
    if name == "eager":
        return model.to(memory_format=torch.channels_last)
    if name == "jit":
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
            # freeze + optimize_for_inference: conv-bn folding, oneDNN convs with fused ReLU/add, no re-layouts
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
    if name == "compile":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # weights as constants: conv-bn folding and oneDNN weight prepacking
        return torch.compile(model)
    raise ValueError(f"unknown variant {name!r}")


def build_variants(model, example, names):
    """{variant: (callable, seconds to build and warm up)}.

    A name ending in ``_bf16`` (eager_bf16, compile_bf16) is that variant under bfloat16 autocast, built on its own:
    the peer of the project's ``--bf16``, never counted among the fp32 variants.
    """
    variants = {}
    for name in names:
        started = time.perf_counter()
        fn = build_variant(model, example, name.removesuffix("_bf16"))
        if name.endswith("_bf16"):
            fn = under_bf16(fn)
        with torch.inference_mode():
            fn(example), fn(example)  # compile happens here; jit's profiling executor specialises on the first calls
        variants[name] = (fn, time.perf_counter() - started)
    return variants


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python bench/torch_peer.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", help=".npz written by python -m bench.child export")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8, help="forward passes per timed run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--variants", default="eager,jit,compile",
                        help="comma-separated subset of eager, jit, compile, and eager_bf16, compile_bf16 (default: "
                             "%(default)s)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    arrays = dict(np.load(args.weights))
    model = CutResNet50V1().eval()
    used = model.load_mxnet(arrays)
    expected = sum(1 for key in arrays if key.startswith(("arg:", "aux:")) and not key.startswith("arg:fc1")
                   and any(key[4:].startswith(layer + "_") for layer in model.layers))
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(),
              "mkldnn": torch.backends.mkldnn.is_available(), "tensors_loaded": used,
              "output_shape": None, "check": None, "variants": {}}

    with torch.inference_mode():
        check_in = to_input(arrays["check_input"])
        out = model.to(memory_format=torch.channels_last)(check_in).numpy()
    result["output_shape"] = list(out.shape[1:])
    reference = arrays["check_output"]
    result["check"] = {"images": int(len(check_in)), "max_abs_diff": float(np.abs(out - reference).max()),
                       "max_abs_output": float(np.abs(reference).max()),
                       "mean_abs_output": float(np.abs(reference).mean())}
    if used != expected:
        print(f"warning: loaded {used} tensors, the checkpoint has {expected} for these layers", file=sys.stderr)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch_size, 224, 224, 3), dtype=np.uint8)
    example = to_input(images)
    padded = images.copy()
    padded[:len(check_in)] = arrays["check_input"][:args.batch_size]
    for name, (fn, build_s) in build_variants(model, example, args.variants.split(",")).items():
        with torch.inference_mode():  # the variant itself (folded BN, fused ops) against MXNet, at the timed shape
            diff = np.abs(fn(to_input(padded)).numpy()[:len(check_in)] - reference[:args.batch_size]).max()
        rates = time_variant(fn, images, args.batches, args.runs, args.warmup)
        result["variants"][name] = {"runs": rates, "median": statistics.median(rates), "build_s": build_s,
                                    "max_abs_diff": float(diff)}
        print(f"{name}: {statistics.median(rates):.1f} img/s (build {build_s:.1f} s)", file=sys.stderr)
    fp32 = [name for name in result["variants"] if not name.endswith("_bf16")]
    result["best"] = max(fp32, key=lambda n: result["variants"][n]["median"]) if fp32 else None
    print(json.dumps(result))


if __name__ == "__main__":
    main()
