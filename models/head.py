"""The classifier head trained on feature codes, and the models folder that holds its checkpoints.

A models folder holds
- ``head-symbol.json``: the network as an MXNet symbol (input ``data``: a batch of codes; output: class logits);
- ``head-NNNN.params``: the weights after epoch NNNN, in MXNet's own array format (``arg:``/``aux:`` names, no pickle);
- ``head.json``: classes, code shape, the head's layout (its name, pooling, standardisation), what made the codes, the
  training arguments, the inner cross-validation that chose the layout (``selection``: each candidate's out-of-fold
  ROC-AUC with its 95% interval, the winner and why) and the two-class threshold from it (``operating_point``: the
  threshold, where it came from, how many images of each class stand behind it), per-epoch training (and, with a
  hold-out, validation) scores, the best epoch, and which epochs' params are still kept (``params``: null for a
  removed one).

Every file is written under a temporary name and renamed, and an epoch counts as finished only once ``head.json``
lists it, so a run stopped at any moment leaves a consistent folder. No training code is needed to use a checkpoint::

    net = mxnet.gluon.SymbolBlock.imports("head-symbol.json", ["data"], "head-0020.params")
    probabilities = mxnet.nd.softmax(net(codes))

The symbol includes the pooling and the standardisation of the codes, so the raw codes of train.py go in as they are.
"""

import os
import re
import warnings

import numpy as np

from models.errors import UserError, mxnet_reason
from models.fileio import read_json, write_json

FORMAT = "xvision-mx head v1"
META_FILE = "head.json"
CHECKPOINT_PREFIX = "head"  # head-symbol.json + head-NNNN.params, the MXNet checkpoint naming
SYMBOL_FILE = f"{CHECKPOINT_PREFIX}-symbol.json"
HIDDEN_UNITS = 512
PREDICT_BATCH = 64
PARAMS_PATTERN = re.compile(r"^head-(\d{4})\.params$")
# what must be equal between the codes a head was trained on and the codes it is given
CODE_IDENTITY = ("model_sha256", "layer", "shape", "precision", "field", "lung_box")  # codes must match in all


def params_file(epoch):
    return f"{CHECKPOINT_PREFIX}-{epoch:04d}.params"


# how the code grid enters the head, smaller first: channel means, standardised; the raw flattened grid; or both,
# one head on each, their class probabilities averaged ("branches": the layouts inside, each its own 512x512 head)
LAYOUTS = {"avg": {"pool": "avg", "standardize": True}, "flat": {"pool": "none", "standardize": False},
           "both": {"branches": ("avg", "flat")}}
LAYOUT_NAMES = tuple(LAYOUTS)


def branches_of(layout):
    """The single-head layouts a layout is made of, in order: itself, or its branches."""
    return LAYOUTS[layout].get("branches", (layout,))


def head_input_size(code_shape, pool):
    """Features the first Dense layer sees: the flattened code, or one mean per channel with pool 'avg'."""
    return int(code_shape[0]) if pool == "avg" and len(code_shape) == 3 else int(np.prod(code_shape))


def pool_codes(codes, pool):
    """What the exported head does before its Dense layers, in numpy: (n, *code_shape) -> (n, features)."""
    codes = np.asarray(codes, dtype=np.float32)
    if pool == "avg" and codes.ndim == 4:
        return codes.mean(axis=(2, 3))
    return codes.reshape(len(codes), -1)


def standardize_block(size):
    """A block mapping each of ``size`` features to (x - mean) * scale, both constants stored as parameters.

    It is part of the head's symbol, so ``SymbolBlock.imports`` of a checkpoint standardises by itself.
    """
    from mxnet.gluon import HybridBlock

    class Standardize(HybridBlock):
        def __init__(self):
            super().__init__(prefix="standardize_")
            with self.name_scope():
                self.mean = self.params.get("mean", shape=(1, size), init="zeros", grad_req="null",
                                            differentiable=False)
                self.scale = self.params.get("scale", shape=(1, size), init="ones", grad_req="null",
                                             differentiable=False)

        def hybrid_forward(self, F, x, mean, scale):
            return F.broadcast_mul(F.broadcast_sub(x, mean), scale)

    return Standardize()


def build_head(n_classes, code_shape, pool="none", standardize=False, dropout=0.0, use_global_stats=False,
               prefix="head_"):
    """[global average pool] -> flatten -> [standardise] -> [dropout] -> Dense(512) -> BatchNorm -> ReLU -> Dense(512)
    -> BatchNorm -> ReLU -> Dense(n_classes), uninitialized. The defaults are the original Xvision head.

    ``use_global_stats``: BatchNorm on its running statistics in the backward pass too; the network to take input
    gradients of (MXNet's BatchNorm backward otherwise assumes batch statistics, even outside training)."""
    from mxnet.gluon import nn

    size = head_input_size(code_shape, pool)
    net = nn.HybridSequential(prefix=prefix)  # fixed names: checkpoints load by parameter name
    with net.name_scope():
        if pool == "avg" and len(code_shape) == 3:
            net.add(nn.GlobalAvgPool2D())
        net.add(nn.Flatten())
        if standardize:
            net.add(standardize_block(size))
        if dropout:
            net.add(nn.Dropout(dropout))  # identity outside training, so the exported head needs no flag
        net.add(nn.Dense(HIDDEN_UNITS, in_units=size),
                nn.BatchNorm(in_channels=HIDDEN_UNITS, use_global_stats=use_global_stats), nn.Activation("relu"),
                nn.Dense(HIDDEN_UNITS, in_units=HIDDEN_UNITS),
                nn.BatchNorm(in_channels=HIDDEN_UNITS, use_global_stats=use_global_stats), nn.Activation("relu"),
                nn.Dense(n_classes, in_units=HIDDEN_UNITS))
    return net


def averaged_heads(heads):
    """One network of several heads on the same codes: its output is the log of the mean of their class
    probabilities, so its softmax is that mean. ``.branches`` are the heads (training gives each its own loss)."""
    from mxnet.gluon import HybridBlock

    class Averaged(HybridBlock):
        def __init__(self):
            super().__init__(prefix="")
            for branch in heads:
                self.register_child(branch)
            self.branches = list(heads)

        def hybrid_forward(self, F, x):
            log_p = F.stack(*[F.log_softmax(branch(x), axis=1) for branch in self.branches], axis=0)
            top = F.max(log_p, axis=0)  # log-mean-exp, shifted by the largest term: no overflow
            return top + F.log(F.mean(F.exp(F.broadcast_sub(log_p, F.expand_dims(top, axis=0))), axis=0))

    return Averaged()


def branches(net):
    """The single heads inside ``net``: its branches, or the net itself."""
    return getattr(net, "branches", [net])


def build_layout(n_classes, code_shape, layout, dropout=0.0, use_global_stats=False):
    """The head of a named layout (``LAYOUTS``), uninitialised; with branches, each named head_<branch>_..."""
    names = branches_of(layout)
    if len(names) == 1:
        return build_head(n_classes, code_shape, dropout=dropout, use_global_stats=use_global_stats, **LAYOUTS[layout])
    return averaged_heads([build_head(n_classes, code_shape, dropout=dropout, use_global_stats=use_global_stats,
                                      prefix=f"head_{name}_", **LAYOUTS[name]) for name in names])


def set_standardization(net, mean, scale):
    """Put the training codes' per-feature mean and scale (1 / std) into the head's standardise block."""
    block = next(child for child in net if child.prefix.endswith("standardize_"))
    block.mean.set_data(np.asarray(mean, np.float32).reshape(1, -1))
    block.scale.set_data(np.asarray(scale, np.float32).reshape(1, -1))


def build_from_meta(meta, use_global_stats=False):
    """The head described by a head.json (heads trained before pooling and standardisation existed have neither)."""
    layout = meta.get("head", {})
    if layout.get("layout") in LAYOUTS and "branches" in LAYOUTS[layout["layout"]]:
        return build_layout(len(meta["classes"]), meta["code_shape"], layout["layout"],
                            dropout=layout.get("dropout", 0.0), use_global_stats=use_global_stats)
    return build_head(len(meta["classes"]), meta["code_shape"], pool=layout.get("pool", "none"),
                      standardize=layout.get("standardize", False), dropout=layout.get("dropout", 0.0),
                      use_global_stats=use_global_stats)


def gradient_net(meta, weights, context=None):
    """The head of ``meta`` with BatchNorm on its running statistics in both passes, holding ``weights`` (a models
    folder and an epoch, or a trained head's parameters by name): for input gradients (Grad-CAM)."""
    import mxnet as mx

    net = build_from_meta(meta, use_global_stats=True)
    net.initialize(ctx=context or mx.cpu())
    if isinstance(weights, tuple):
        folder, epoch = weights
        load_weights(folder, net, epoch)
    else:
        for name, param in net.collect_params().items():
            param.set_data(weights[name].data() if hasattr(weights[name], "data") else weights[name])
    return net


def has_checkpoints(folder):
    return os.path.isdir(folder) and any(
        name == META_FILE or PARAMS_PATTERN.match(name) for name in os.listdir(folder))


def read_meta(folder):
    """The folder's head.json; UserError if the folder holds no trained head."""
    path = os.path.join(folder, META_FILE)
    if not os.path.exists(path):
        raise UserError(f"no trained head in {folder} ({META_FILE} missing): train one with train_model.py")
    meta = read_json(path, "head metadata")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{path} is not a '{FORMAT}' file: point MODELS_DIR at a folder made by train_model.py")
    history = meta.get("history")
    damaged = [key for key, kind in (("classes", list), ("code_shape", list), ("backbone", dict), ("training", dict),
                                     ("history", list)) if not isinstance(meta.get(key), kind)]
    if not damaged and not all(isinstance(e, dict) and isinstance(e.get("epoch"), int) for e in history):
        damaged.append("history entries")
    if damaged:
        raise UserError(f"{path} is damaged ({', '.join(damaged)} missing or malformed): train again into a new "
                        f"MODELS_DIR")
    return meta


def write_meta(folder, meta):
    write_json(os.path.join(folder, META_FILE), meta)


def finished_epochs(meta):
    return [entry["epoch"] for entry in meta["history"]]


def save_weights(folder, net, epoch):
    """Write the symbol and this epoch's params (each atomically); the caller then records the epoch in head.json."""
    import mxnet as mx

    from models.weights import save_checkpoint

    symbol = net(mx.sym.var("data"))
    aux_names = set(symbol.list_auxiliary_states())
    weights = {name: param.data().as_in_context(mx.cpu()) for name, param in net.collect_params().items()}
    save_checkpoint(os.path.join(folder, CHECKPOINT_PREFIX), symbol,
                    {k: v for k, v in weights.items() if k not in aux_names},
                    {k: v for k, v in weights.items() if k in aux_names}, epoch=epoch)


def _params_path(folder, epoch):
    path = os.path.join(folder, params_file(epoch))
    if not os.path.exists(path):
        raise UserError(f"checkpoint file missing: {path} (head.json lists epoch {epoch}); "
                        f"train again into an empty folder or pick another --epoch")
    return path


def load_weights(folder, net, epoch):
    """Put epoch ``epoch``'s weights into ``net`` (built by build_head with the same classes and code shape)."""
    import mxnet as mx

    path = _params_path(folder, epoch)
    try:
        saved = {key.split(":", 1)[1]: value for key, value in mx.nd.load(path).items()}
    except mx.base.MXNetError as err:
        raise UserError(f"cannot read {path}: {mxnet_reason(err)} (a damaged or cut-off file); pick another "
                        f"--epoch, or train again into a new MODELS_DIR") from None
    params = net.collect_params()
    if set(saved) != set(params.keys()):
        raise UserError(f"{params_file(epoch)} in {folder} does not fit the head described by {META_FILE}")
    for name, param in params.items():
        param.set_data(saved[name])


def load_predictor(folder, epoch, context=None):
    """The exported network of epoch ``epoch`` (the way a user without this code loads it); outputs logits."""
    import mxnet as mx

    symbol_path = os.path.join(folder, SYMBOL_FILE)
    if not os.path.exists(symbol_path):
        raise UserError(f"checkpoint file missing: {symbol_path}; train again with train_model.py")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Cannot decide type")  # the input's dtype is only known at the call
            return mx.gluon.SymbolBlock.imports(symbol_path, ["data"], _params_path(folder, epoch),
                                                ctx=context or mx.cpu())
    except mx.base.MXNetError as err:
        raise UserError(f"cannot load epoch {epoch} from {folder}: {mxnet_reason(err)} (a damaged or cut-off "
                        f"checkpoint); pick another --epoch or train again") from None


def predict_proba(net, codes, context=None):
    """Class probabilities (n, classes) in float64 of ``codes`` (an array or ``CodeStore.rows_of``), batch by batch."""
    import mxnet as mx

    parts = []
    for start in range(0, len(codes), PREDICT_BATCH):
        batch = codes[np.arange(start, min(start + PREDICT_BATCH, len(codes)))]
        parts.append(mx.nd.softmax(net(mx.nd.array(batch, ctx=context or mx.cpu())), axis=1).asnumpy())
    return np.concatenate(parts).astype(np.float64)


def code_identity(codes_meta):
    """What must be equal between two sets of codes for one head to read both (codes made before fields existed saw
    the whole image)."""
    identity = {key: (list(codes_meta[key]) if key == "shape" else codes_meta.get(key)) for key in CODE_IDENTITY}
    return dict(identity, field=identity["field"] or "whole")


def check_codes_match(codes_meta, head_meta, codes_dir):
    """UserError if the codes come from another model, layer, shape, precision or field than the head was trained on
    (a head.json from before fields existed was trained on whole images)."""
    expected, given = code_identity(head_meta["backbone"]), code_identity(codes_meta)
    differ = [f"{key} {given[key]!r} (head trained on {expected[key]!r})"
              for key in CODE_IDENTITY if given[key] != expected[key]]
    if differ:
        made = head_meta["backbone"]
        options = {"bf16": " --bf16", "int8": " --int8"}.get(expected["precision"], "")
        if expected["field"] != "whole":
            options += f" --field {expected['field']} --lung-box {','.join(map(str, expected['lung_box']))}"
        raise UserError(f"codes in {codes_dir} were not made like the head's training codes: {'; '.join(differ)}; "
                        f"extract them with train.py using --model {made.get('model')} --layer {made.get('layer')}"
                        f"{options}")
