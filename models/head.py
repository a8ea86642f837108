"""The classifier head on feature codes, as a network: the layouts (how the code grid enters it), the original's
Dense-BatchNorm-ReLU stack, a head of branches whose output averages theirs, and class probabilities of codes. Fitting
it is ``models.classifier``'s; its folder on disk is ``models.headfolder``'s.

The network includes the pooling and the standardisation of the codes, so the raw codes of train.py go in as they are.
"""

import numpy as np

HIDDEN_UNITS = 512
PREDICT_BATCH = 64


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


def with_weights(meta, weights, use_global_stats=False, context=None):
    """The head of ``meta`` holding ``weights`` (parameter name -> array or NDArray, or a trained head's
    ``collect_params()``), as a Gluon network of its layout (its branches reachable)."""
    import mxnet as mx

    net = build_from_meta(meta, use_global_stats=use_global_stats)
    net.initialize(ctx=context or mx.cpu())
    for name, param in net.collect_params().items():
        param.set_data(weights[name].data() if hasattr(weights[name], "data") else weights[name])
    return net


def gradient_net(meta, weights, context=None):
    """``with_weights`` with BatchNorm on its running statistics in both passes: for input gradients (Grad-CAM)."""
    return with_weights(meta, weights, use_global_stats=True, context=context)


def predict_proba(net, codes, context=None):
    """Class probabilities (n, classes) in float64 of ``codes`` (an array or ``CodeStore.rows_of``), batch by batch."""
    import mxnet as mx

    parts = []
    for start in range(0, len(codes), PREDICT_BATCH):
        batch = codes[np.arange(start, min(start + PREDICT_BATCH, len(codes)))]
        parts.append(mx.nd.softmax(net(mx.nd.array(batch, ctx=context or mx.cpu())), axis=1).asnumpy())
    return np.concatenate(parts).astype(np.float64)
