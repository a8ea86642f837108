"""Load an MXNet symbolic checkpoint as a backbone, cut at any internal layer, and run it fast.

Any checkpoint ``PREFIX-symbol.json`` + ``PREFIX-0000.params`` works (the converted ImageNet ResNet-50 made by
``make setup``, or e.g. the official MXNet model-zoo resnet-50 a user downloaded). Its input must be ``data`` taking
raw RGB 0..255 in NCHW, the model-zoo contract.

``python -m models.pretrained --classify IMAGE...`` prints the top-5 ImageNet classes (the full, uncut network).
"""

import argparse
import difflib
import json
import os
import re
import time

import numpy as np

from models.checkpoint import load_checkpoint
from models.checkpoint import params_path as checkpoint_params
from models.errors import UserError, run_cli
from models.runtime import setup_runtime
from models.images import INPUT_SIZE, ImageReadError, View
from models.weights import DEFAULT_PREFIX, sha256_of

DEFAULT_LAYER = "stage4_unit2_relu1_output"
INPUT_CHANNELS = 3
PRECISIONS = ("fp32", "bf16", "int8")  # int8 graphs are made by models/quantize.py and passed in as ``graph``

# The speed self-check (Backbone(speed_check=True), what train.py --bf16 / --int8 use): at load, the bf16 or int8
# network and the fp32 one run the same batch in turn; the reduced precision is kept only when its best batch time
# beats fp32's by MIN_SPEEDUP. Two timed pairs decide; up to four when the first ones land near the line.
MIN_SPEEDUP = 1.05  # less than 5% faster is not worth codes that differ from fp32
SPEED_CHECK_PAIRS = (2, 4)
CLEAR_MARGIN = 1.15  # after the first pairs, a speed-up beyond MIN_SPEEDUP x/÷ this is decided
# Test hook, read only in simulated_slow(): XVISION_SIMULATE_SLOW=bf16 (or int8, or bf16,int8) makes the self-check
# see that network run at SIMULATED_SPEEDUP x fp32 (bf16 on a 16-core Xeon with AMX, MXNet 1.9.1's oneDNN 2.4.4), so
# the fallback can be tested on any CPU. Nothing else changes: the real networks are built and timed as usual.
SIMULATE_SLOW_ENV = "XVISION_SIMULATE_SLOW"
SIMULATED_SPEEDUP = 0.6


def layer_names(symbol):
    """Every internal output a backbone can be cut at (``<node>_output``), inputs and parameters left out."""
    arguments = set(symbol.list_arguments()) | set(symbol.list_auxiliary_states())
    return [name for name in symbol.get_internals().list_outputs() if name not in arguments]


def to_bfloat16(symbol, args, aux):
    """The graph with its convolutions, GEMMs and their weights in bfloat16, input and output kept float32.

    Activations stay bfloat16 from the first convolution after the image to the cut. Two changes make oneDNN 2.4.4
    (MXNet 1.9.1's) keep one memory layout throughout, with fewer reorders between its kernels (11 -> 9 per forward
    pass of ResNet-50 cut at stage 4, 5% faster, codes closer to fp32 on an AMD Zen 5; see docs/performance.md):
    the convolutions on the 3-channel image stay float32 (oneDNN has no bf16 kernel for 3 input channels and runs a
    plain-layout GEMM, 1.6x the fp32 time), and strided 1x1 convolutions become a subsampling then a stride-1
    convolution (the same numbers; see subsample_strided_1x1).

    It must be converted before oneDNN fuses it: MXNet's AMP lists plain ops only and passes fused ones over. AMP
    replaces the entries of the dicts it is given, so it gets copies: ``args`` and ``aux`` stay the fp32 weights.
    """
    from mxnet.contrib import amp

    symbol = subsample_strided_1x1(symbol)
    return amp.convert_model(symbol, dict(args), dict(aux), target_dtype="bfloat16", cast_optional_params=True,
                             excluded_sym_names=image_convolutions(symbol))


def _ints(text):
    """(1, 1) from MXNet's attribute text "(1, 1)" (or "[1,1]", "1")."""
    return tuple(int(v) for v in re.findall(r"-?\d+", str(text or "")))


def _node_attrs(node):
    return node.get("attrs") or node.get("param") or node.get("attr") or {}


def subsample_strided_1x1(symbol):
    """``symbol`` with every unpadded 1x1 convolution of stride s > 1 split into a 1x1 max pooling of stride s (which
    picks every s-th pixel: the pixels that convolution reads) and the same convolution, same name, at stride 1.

    Identical results. It matters for bf16: oneDNN 2.4.4 runs a strided 1x1 convolution with a kernel of another
    memory layout (blocked, jit_bf16_1x1) than its neighbours (channels-last, brgconv), and each change of layout is
    a reorder of the whole activation; at stride 1 the convolution runs in the neighbours' layout.
    """
    import mxnet as mx

    graph = json.loads(symbol.tojson())
    nodes, moved, changed = [], {}, False
    for index, node in enumerate(graph["nodes"]):
        node = dict(node, inputs=[[moved.get(i, i), *rest] for i, *rest in node["inputs"]])
        attrs = _node_attrs(node)
        stride, pad = _ints(attrs.get("stride")), _ints(attrs.get("pad"))
        if (node["op"] == "Convolution" and _ints(attrs.get("kernel")) == (1, 1) and len(set(stride)) == 1
                and stride[0] > 1 and not any(pad) and attrs.get("layout", "NCHW") == "NCHW"):
            nodes.append({"op": "Pooling", "name": f"{node['name']}_subsample", "inputs": [node["inputs"][0]],
                          "attrs": {"kernel": "(1, 1)", "stride": str(stride), "pool_type": "max"}})
            node["inputs"][0] = [len(nodes) - 1, 0, 0]
            key = next((k for k in ("attrs", "param", "attr") if k in node), "attrs")
            node[key] = dict(attrs, stride=str((1, 1)))
            changed = True
        moved[index] = len(nodes)
        nodes.append(node)
    if not changed:
        return symbol
    graph.pop("node_row_ptr", None)
    graph.update(nodes=nodes, arg_nodes=[i for i, node in enumerate(nodes) if node["op"] == "null"],
                 heads=[[moved[i], *rest] for i, *rest in graph["heads"]])
    return mx.sym.load_json(json.dumps(graph))


def image_convolutions(symbol, channels=INPUT_CHANNELS):
    """Names of the convolutions that read ``channels`` (3) or fewer channels: those on the image itself."""
    try:
        arg_shapes, _, _ = symbol.infer_shape(data=(1, channels, INPUT_SIZE, INPUT_SIZE))
    except Exception:  # noqa: BLE001  (MXNetError for a graph whose shapes cannot be inferred: none are left out)
        return []
    shapes = dict(zip(symbol.list_arguments(), arg_shapes or []))
    nodes = json.loads(symbol.tojson())["nodes"]
    names = []
    for node in nodes:
        if node["op"] == "Convolution" and len(node["inputs"]) > 1:
            weight = shapes.get(nodes[node["inputs"][1][0]]["name"])
            if weight and len(weight) > 1 and weight[1] * int(_node_attrs(node).get("num_group", 1)) <= channels:
                names.append(node["name"])
    return names


def simulated_slow(precision):
    """Whether the test hook XVISION_SIMULATE_SLOW names ``precision`` (see SIMULATE_SLOW_ENV)."""
    return precision in os.environ.get(SIMULATE_SLOW_ENV, "").replace(" ", "").split(",")


def compare_speed(precision, run_fp32, run_other, pairs=SPEED_CHECK_PAIRS):
    """Time ``run_other`` (the ``precision`` network on one batch) against ``run_fp32`` (the fp32 one, same batch),
    both already warm, in alternating pairs; the best time of each side is what counts (a busy machine only ever
    adds time). Returns {"fp32_s", "<precision>_s", "speedup": fp32_s / <precision>_s, "pairs", "simulated"}.
    """
    times = {"fp32": [], precision: []}
    for pair in range(max(pairs)):
        for name, run in ((precision, run_other), ("fp32", run_fp32))[::1 if pair % 2 == 0 else -1]:
            begin = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - begin)
        speedup = min(times["fp32"]) / min(times[precision])
        if pair + 1 >= min(pairs) and not MIN_SPEEDUP / CLEAR_MARGIN < speedup < MIN_SPEEDUP * CLEAR_MARGIN:
            break
    fp32_s, other_s = min(times["fp32"]), min(times[precision])
    simulated = simulated_slow(precision)
    if simulated:
        other_s = fp32_s / SIMULATED_SPEEDUP
    return {"fp32_s": fp32_s, f"{precision}_s": other_s, "speedup": fp32_s / other_s, "pairs": len(times["fp32"]),
            "simulated": simulated}


def put_image(batch, position, pixels):
    """Write a (H, W) gray or (H, W, 3) RGB uint8 image into slot ``position`` of a float32 NCHW batch."""
    batch[position] = pixels if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # gray fills all three channels


def cut(symbol, layer):
    names = layer_names(symbol)
    if layer not in names:
        close = difflib.get_close_matches(layer, names, n=5, cutoff=0.6) or names[-5:]
        raise UserError(f"layer {layer!r} is not in the model; closest valid names: {', '.join(close)}")
    return symbol.get_internals()[layer]


def _checkpoint_prefix(path):
    """The checkpoint prefix ``path`` names: a prefix itself, or its -NNNN.params / -symbol.json file."""
    match = re.match(r"^(.*)-(\d{4}\.params|symbol\.json)$", os.fspath(path))
    return match.group(1) if match else os.fspath(path)


def backbone_places(made, models_dir):
    """Where the backbone of a head not named by --backbone is looked for, in order: a checkpoint in the models folder
    itself (a folder handed over with its backbone; a head's own params are never epoch 0000), the project's models/
    (``make setup``), and the path recorded when the codes were made (``made``: head.json's "backbone"; provenance:
    it may be another clone, moved or deleted)."""
    places = []
    if os.path.isdir(models_dir):
        places += sorted(os.path.join(models_dir, name[:-len("-0000.params")]) for name in os.listdir(models_dir)
                         if name.endswith("-0000.params"))
    places += [DEFAULT_PREFIX]
    recorded = made.get("model")
    places += [recorded] if recorded else []
    return list(dict.fromkeys(os.path.abspath(place) for place in places))


def recorded_checkpoint(made, models_dir, given=None):
    """The prefix of the backbone checkpoint a head's training codes were made with (``made``: head.json's
    "backbone"), found by its sha256 in ``backbone_places``; UserError naming what it needs and every place it
    looked. ``given`` (--backbone) must be that checkpoint."""
    wanted, looked = made.get("model_sha256"), []
    if given:  # named by the user: that checkpoint or an error, never a silent fall-back to another place
        params = checkpoint_params(os.path.abspath(_checkpoint_prefix(given)))
        if not os.path.exists(params):
            raise UserError(f"--backbone {given}: no checkpoint there ({params} not found): give the prefix or the "
                            f"-0000.params file of the backbone the head's codes were made with")
        if sha256_of(params) != wanted:
            raise UserError(f"--backbone {given}: {params} is not the checkpoint the head's codes were made with (its "
                            f"sha256 differs from head.json's {wanted[:12]}...): give that checkpoint, or train a "
                            f"head on codes of this one")
        return os.path.abspath(_checkpoint_prefix(given))
    for prefix in backbone_places(made, models_dir):
        params = checkpoint_params(prefix)
        if not os.path.exists(params):
            looked.append(f"{params} (missing)")
            continue
        if sha256_of(params) == wanted:
            return prefix
        looked.append(f"{params} (another checkpoint)")
    name = os.path.basename(made.get("model") or "the backbone")
    raise UserError(f"the head needs the backbone {name}-0000.params with sha256 {wanted}, cut at "
                    f"{made.get('layer')}; looked in {'; '.join(looked)}: run make setup (the ImageNet ResNet-50), "
                    f"copy that checkpoint into {models_dir}, or name it with --backbone PATH")

class Backbone:
    """A checkpoint cut at ``layer`` (None: the whole network), bound for fixed-size batches of 224x224 RGB.

    ``precision`` bf16 runs a bfloat16 copy of the network on the CPU. ``graph`` = (symbol, arg_params, aux_params)
    runs that graph instead of the checkpoint's (e.g. its int8 version, see models/quantize.py); ``precision`` and
    ``int8_key`` (the key of an int8 network's cache, ``models.quantize``) then name it in the codes' metadata, and ``model_sha256``, when the caller has it already, spares
    hashing the params file again. The first, slow forward pass (oneDNN picks its kernels) is made here, so a
    constructed Backbone runs at full speed.

    ``speed_check`` (bf16 / int8 only; what train.py's flags use): after that first pass the fp32 network is built too
    and both are timed on a batch (compare_speed); where the reduced precision is not at least MIN_SPEEDUP x faster,
    the fp32 network is kept instead: ``precision`` becomes "fp32", ``int8_key`` None, and ``notice`` says why in
    one line. ``requested_precision`` and ``speed_check`` (the timings, with ``check_s``, the seconds the check cost)
    keep what was asked and measured. Without it, the network of ``precision`` is what runs, fast or not.
    """

    def __init__(self, prefix=DEFAULT_PREFIX, layer=DEFAULT_LAYER, contexts=None, batch_size=32, graph=None,
                 precision="fp32", int8_key=None, model_sha256=None, speed_check=False):
        import mxnet as mx

        from models.devices import require_native_bf16

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.prefix, self.layer, self.batch_size = prefix, layer, batch_size
        self.precision, self.int8_key = precision, int8_key
        self.requested_precision, self.speed_check, self.notice = precision, None, None
        self.contexts = contexts or [mx.cpu()]
        if precision != "fp32" and any(ctx.device_type != "cpu" for ctx in self.contexts):
            raise UserError(f"the {precision} network runs on the CPU only (oneDNN); use --gpus none, or fp32 on GPUs")
        fp32_graph = None
        if graph is None:
            symbol, args, aux = load_checkpoint(prefix)
            if "data" not in symbol.list_arguments():
                raise UserError(f"{prefix}-symbol.json has no input named 'data'; inputs: {symbol.list_arguments()[:5]}")
            symbol = cut(symbol, layer) if layer is not None else symbol
            if precision == "bf16":
                require_native_bf16()
                fp32_graph = symbol, args, aux
                symbol, args, aux = to_bfloat16(symbol, args, aux)
        else:
            symbol, args, aux = graph
        self.per_device = -(-batch_size // len(self.contexts))
        self.executors = self._bind(symbol, args, aux, precision)
        self.output_shape = tuple(self.executors[0].outputs[0].shape[1:])
        self.model_sha256 = model_sha256 or sha256_of(f"{prefix}-0000.params")
        self.run(self.input_batch(), 0)
        if speed_check and precision != "fp32":
            self._check_speed(fp32_graph)

    def _bind(self, symbol, args, aux, precision):
        """One executor per context for ``symbol``, its parameters copied in."""
        needed = set(symbol.list_arguments()) - {"data"}
        missing = sorted(needed - set(args)) + sorted(set(symbol.list_auxiliary_states()) - set(aux))
        if missing:
            raise UserError(f"{self.prefix}-0000.params lacks {len(missing)} parameters of the network, e.g. "
                            f"{missing[:3]}")
        executors = []
        for ctx in self.contexts:
            # oneDNN graph fusion (conv+bn+relu, sum) on the CPU; an int8 graph comes already fused
            fuse = ctx.device_type == "cpu" and precision != "int8"
            bound = symbol.get_backend_symbol("MKLDNN") if fuse else symbol
            executor = bound.simple_bind(ctx, data=(self.per_device, 3, INPUT_SIZE, INPUT_SIZE), grad_req="null")
            executor.copy_params_from(args, aux, allow_extra_params=True)
            executors.append(executor)
        return executors

    def _check_speed(self, fp32_graph=None):
        """Time the fp32 network against this one (see the class docstring); keep fp32 where this one is not faster."""
        started = time.perf_counter()
        precision = self.precision
        if fp32_graph is None:
            symbol, args, aux = load_checkpoint(self.prefix)
            fp32_graph = (cut(symbol, self.layer) if self.layer is not None else symbol), args, aux
        fp32 = self._bind(*fp32_graph, "fp32")
        batch = self.input_batch()
        reduced = self.executors
        self._forward(fp32, batch)  # its first, slow pass
        result = compare_speed(precision, lambda: self._forward(fp32, batch), lambda: self._forward(reduced, batch))
        if result["speedup"] < MIN_SPEEDUP:
            self.executors, self.precision, self.int8_key = fp32, "fp32", None
            why = "simulated by XVISION_SIMULATE_SLOW" if result["simulated"] else "measured at load"
            self.notice = (f"the {precision} network is not faster than fp32 on this CPU ({result['speedup']:.2f}x "
                           f"fp32, {MIN_SPEEDUP}x needed, {why}: {result[f'{precision}_s']:.2f} s vs "
                           f"{result['fp32_s']:.2f} s per batch of {len(batch)}): running fp32 instead, and the codes' "
                           f"index says fp32")
        result["kept"] = self.precision
        result["check_s"] = time.perf_counter() - started
        self.speed_check = result

    def _forward(self, executors, batch):
        """Run ``executors`` on an ``input_batch``; their outputs as numpy (read back: the work is done on return)."""
        for i, executor in enumerate(executors):  # forward calls return at once; the devices run in parallel
            executor.arg_dict["data"][:] = batch[i * self.per_device:(i + 1) * self.per_device]
            executor.forward(is_train=False)
        return [executor.outputs[0].asnumpy() for executor in executors]

    def input_batch(self):
        """A zeroed float32 NCHW batch of the bound size, to fill with ``put_image`` and pass to ``run``."""
        return np.zeros((self.per_device * len(self.executors), 3, INPUT_SIZE, INPUT_SIZE), np.float32)

    def run(self, batch, count):
        """Outputs of the first ``count`` images of an ``input_batch``, as float32 numpy (count, *output_shape)."""
        return np.concatenate(self._forward(self.executors, batch))[:count]

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
            probs = net(View(resize="squash").load(path)[None])[0]
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
    setup_runtime()
    for path, top in classify(args.classify, args.model):
        print(path)
        for name, prob in top:
            print(f"  {prob:.3f}  {name}")


if __name__ == "__main__":
    run_cli(main)
