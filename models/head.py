"""The classifier head trained on feature codes, and the models folder that holds its checkpoints.

A models folder holds
- ``head-symbol.json``: the network as an MXNet symbol (input ``data``: a batch of codes; output: class logits);
- ``head-NNNN.params``: the weights after epoch NNNN, in MXNet's own array format (``arg:``/``aux:`` names, no pickle);
- ``head.json``: classes, code shape, what made the codes, the training arguments and per-epoch loss and accuracy.

Every file is written under a temporary name and renamed, and an epoch counts as finished only once ``head.json``
lists it, so a run stopped at any moment leaves a consistent folder. No training code is needed to use a checkpoint::

    net = mxnet.gluon.SymbolBlock.imports("head-symbol.json", ["data"], "head-0020.params")
    probabilities = mxnet.nd.softmax(net(codes))
"""

import os
import re
import warnings

import numpy as np

from models.errors import UserError
from models.fileio import read_json, write_json

FORMAT = "xvision-mx head v1"
META_FILE = "head.json"
CHECKPOINT_PREFIX = "head"  # head-symbol.json + head-NNNN.params, the MXNet checkpoint naming
SYMBOL_FILE = f"{CHECKPOINT_PREFIX}-symbol.json"
HIDDEN_UNITS = 512
PARAMS_PATTERN = re.compile(r"^head-(\d{4})\.params$")
# what must be equal between the codes a head was trained on and the codes it is given
CODE_IDENTITY = ("model_sha256", "layer", "shape", "precision")  # codes must match in all of these


def params_file(epoch):
    return f"{CHECKPOINT_PREFIX}-{epoch:04d}.params"


def build_head(n_classes, code_shape):
    """flatten -> Dense(512) -> BatchNorm -> ReLU -> Dense(512) -> BatchNorm -> ReLU -> Dense(n_classes), uninitialized."""
    from mxnet.gluon import nn

    net = nn.HybridSequential(prefix="head_")  # fixed names: checkpoints load by parameter name
    with net.name_scope():
        net.add(nn.Flatten(),
                nn.Dense(HIDDEN_UNITS, in_units=int(np.prod(code_shape))),
                nn.BatchNorm(in_channels=HIDDEN_UNITS), nn.Activation("relu"),
                nn.Dense(HIDDEN_UNITS, in_units=HIDDEN_UNITS),
                nn.BatchNorm(in_channels=HIDDEN_UNITS), nn.Activation("relu"),
                nn.Dense(n_classes, in_units=HIDDEN_UNITS))
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

    saved = {key.split(":", 1)[1]: value for key, value in mx.nd.load(_params_path(folder, epoch)).items()}
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
        raise UserError(f"cannot load epoch {epoch} from {folder}: {str(err).strip().splitlines()[0]}") from None


def code_identity(codes_meta):
    return {key: (list(codes_meta[key]) if key == "shape" else codes_meta.get(key)) for key in CODE_IDENTITY}


def check_codes_match(codes_meta, head_meta, codes_dir):
    """UserError if the codes come from another model, layer or shape than the head was trained on."""
    expected, given = head_meta["backbone"], code_identity(codes_meta)
    differ = [f"{key} {given[key]!r} (head trained on {expected.get(key)!r})"
              for key in CODE_IDENTITY if given[key] != expected.get(key)]
    if differ:
        precision = {"bf16": " --bf16", "int8": " --int8"}.get(expected.get("precision"), "")
        raise UserError(f"codes in {codes_dir} were not made like the head's training codes: {'; '.join(differ)}; "
                        f"extract them with train.py using --model {expected.get('model')} --layer {expected.get('layer')}"
                        f"{precision}")
