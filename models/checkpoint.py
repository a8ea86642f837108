"""MXNet symbolic checkpoints on disk, read and written here only: ``PREFIX-symbol.json`` (the network) and
``PREFIX-NNNN.params`` (its weights in MXNet's own array format, ``arg:`` / ``aux:`` names, no pickle), each file
written under a temporary name and renamed. The converted ResNet-50, the cached int8 networks and every epoch of a
trained head are such checkpoints.
"""

import os

from models.errors import UserError, mxnet_reason
from models.fileio import atomic_path, write_json

MISSING_HINT = ("for the converted ImageNet ResNet-50 run `make setup`; --model takes a checkpoint prefix PREFIX with "
                "PREFIX-symbol.json and PREFIX-0000.params")


def symbol_path(prefix):
    return f"{prefix}-symbol.json"


def params_path(prefix, epoch=0):
    return f"{prefix}-{epoch:04d}.params"


def save_checkpoint(prefix, symbol, args, aux, classes=None, epoch=0):
    """Write ``PREFIX-symbol.json``, ``PREFIX-classes.json`` (with ``classes``) and ``PREFIX-EPOCH.params`` (last),
    each atomically. ``args`` / ``aux``: name -> numpy array or NDArray."""
    import mxnet as mx

    with atomic_path(symbol_path(prefix)) as tmp:
        symbol.save(tmp)
    if classes is not None:
        write_json(f"{prefix}-classes.json", classes)
    params = {f"arg:{k}": mx.nd.array(v, dtype=v.dtype) for k, v in args.items()}
    params.update({f"aux:{k}": mx.nd.array(v, dtype=v.dtype) for k, v in aux.items()})
    with atomic_path(params_path(prefix, epoch)) as tmp:
        mx.nd.save(tmp, params)


def require_checkpoint(prefix, epoch=0, hint=MISSING_HINT):
    """(symbol file, params file) of a checkpoint; UserError naming the missing file and ``hint``."""
    files = symbol_path(prefix), params_path(prefix, epoch)
    for path in files:
        if not os.path.exists(path):
            raise UserError(f"model file not found: {path}; {hint}")
    return files


def load_params(path, fix="remake it, for the converted ResNet-50 with `make setup`"):
    """(arg params, aux params) of a params file, name -> NDArray; UserError for a damaged one, saying ``fix``."""
    import mxnet as mx

    try:
        saved = mx.nd.load(path)
    except mx.base.MXNetError as err:
        raise UserError(f"cannot read {path}: {mxnet_reason(err)} (a damaged or cut-off file); {fix}") from None
    return ({k[4:]: v for k, v in saved.items() if k.startswith("arg:")},
            {k[4:]: v for k, v in saved.items() if k.startswith("aux:")})


def load_checkpoint(prefix, epoch=0, hint=MISSING_HINT):
    """(symbol, arg params, aux params) of a checkpoint; UserError naming a missing or damaged file and the fix."""
    import mxnet as mx

    symbol_file, params_file = require_checkpoint(prefix, epoch, hint)
    try:
        symbol = mx.sym.load(symbol_file)
    except mx.base.MXNetError as err:
        raise UserError(f"cannot load checkpoint {prefix}: {mxnet_reason(err)} (a damaged or cut-off file: remake "
                        f"it, for the converted ResNet-50 with `make setup`)") from None
    return (symbol,) + load_params(params_file)
