"""The SGD epochs of a head network (``models.head``): its seeded initialisation with the training codes'
standardisation, the batches, plain SGD steps, the per-epoch loss and validation scores. ``models.classifier``'s
``HeadClassifier.fit`` is the one caller: what is fitted, and when, is decided there.

Training is deterministic: the initial weights come from the seed, epoch e's shuffle and dropout masks from
(seed, e) alone, and plain SGD without momentum has no optimizer state.
"""

import time

import numpy as np

from models import head, metrics
from models.errors import UserError
from models.progress import progress_bar

STATS_BATCH = 256  # codes read at once while computing the standardisation


def feature_scaling(codes, pool):
    """Per-feature mean and scale (1 / std) of the head's input, streamed over ``codes`` in float64 (memory flat).

    A feature that does not vary in training keeps scale 1, as scikit-learn's StandardScaler does, so a value it
    never took in training is not blown up.
    """
    total, total_sq, n, shift = 0.0, 0.0, 0, None
    for start in range(0, len(codes), STATS_BATCH):
        features = head.pool_codes(codes[np.arange(start, min(start + STATS_BATCH, len(codes)))], pool)
        features = features.astype(np.float64)
        shift = features[0] if shift is None else shift  # sums around a sample value: no cancellation
        total = total + (features - shift).sum(axis=0)
        total_sq = total_sq + ((features - shift) ** 2).sum(axis=0)
        n += len(features)
    mean_shifted = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean_shifted ** 2, 0.0))
    mean = shift + mean_shifted
    constant = std < 1e-6 * np.maximum(1.0, np.abs(mean))
    return mean, np.where(constant, 1.0, 1.0 / np.where(constant, 1.0, std))


def initialised_net(settings, n_classes, train_codes, context):
    """A new head of ``settings``' layout with the seed's initial weights and, in each standardising branch, the
    training codes' scaling."""
    import mxnet as mx

    net = head.build_layout(n_classes, train_codes.shape[1:], settings.layout, dropout=settings.dropout)
    for part, name in zip(head.branches(net), head.branches_of(settings.layout)):
        mx.random.seed(settings.seed)  # each branch starts where its layout would alone
        part.initialize(mx.init.Xavier(), ctx=context, force_reinit=True)
        if head.LAYOUTS[name]["standardize"]:
            head.set_standardization(part, *feature_scaling(train_codes, head.LAYOUTS[name]["pool"]))
    return net



def batches(order, batch_size):
    """Consecutive batches of ``order``; a trailing batch of one joins the previous one (BatchNorm needs two)."""
    starts = list(range(0, len(order), batch_size))
    if len(starts) > 1 and len(order) - starts[-1] == 1:
        starts.pop()
    return [order[start:end] for start, end in zip(starts, starts[1:] + [len(order)])]


def sgd_step(params, lr, batch_size):
    """Plain SGD, weight -= lr * grad / batch_size, one sgd_update per parameter.

    What gluon.Trainer(SGD, no momentum, no weight decay).step(batch_size) computes, minus its Python bookkeeping per
    parameter, which cost ~4 ms of a 23 ms step here (about as much as the update of the 25088x512 weight itself).
    """
    import mxnet as mx

    for param in params:
        weight = param.data()
        mx.nd.sgd_update(weight, param.grad(), lr=lr, wd=0.0, rescale_grad=1.0 / batch_size, out=weight)


def validation_scores(truth, probabilities, weights, positive):
    """One epoch's validation numbers; with a positive class also the balanced threshold and the scores at it."""
    threshold = metrics.balanced_threshold(truth, probabilities, positive) if positive is not None else None
    predicted = metrics.decide(probabilities, positive, 0.5 if threshold is None else threshold)
    n_classes = probabilities.shape[1]
    return {"val_loss": metrics.weighted_log_loss(truth, probabilities, weights),
            "val_accuracy": float(np.mean(predicted == truth)),
            "val_balanced_accuracy": metrics.balanced_accuracy(truth, predicted, n_classes),
            "val_roc_auc": metrics.roc_auc(truth, probabilities, positive),
            "threshold": threshold}


def train_epochs(net, settings, weights, positive, codes, targets, validation, first_epoch, on_epoch, context,
                 progress=False):
    """Epochs ``first_epoch``..``settings.epochs`` of ``net`` on ``codes`` (``weights``: each class's loss weight;
    ``validation``: (codes, targets) scored after each epoch, or None; ``on_epoch``: called with each epoch's
    numbers). A head of branches (``--layout both``) trains each branch on its own loss at its own learning rate, on
    the same batches: the branches share no weight, so each learns as its layout would alone (bit for bit without
    dropout; with it, only the masks differ); the loss and accuracy reported are those of the mean of their
    probabilities."""
    import mxnet as mx
    from mxnet import autograd, gluon

    targets = np.asarray(targets, dtype=np.float32)
    weighted = not np.all(weights == 1.0)  # unweighted: the original's loss, exactly
    sample_weight = np.asarray(weights, dtype=np.float32)[targets.astype(int)][:, None]
    parts = head.branches(net)
    part_lr = [settings.branch_lr(name) for name in head.branches_of(settings.layout)]
    trainable = [[param for param in part.collect_params().values() if param.grad_req != "null"] for part in parts]
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    nll = gluon.loss.SoftmaxCrossEntropyLoss(from_logits=True)  # of the branches' averaged log-probabilities
    for epoch in range(first_epoch, settings.epochs + 1):
        started = time.time()
        order = np.random.default_rng([settings.seed, epoch]).permutation(len(targets))
        mx.random.seed(int(np.random.default_rng([settings.seed, epoch, 1]).integers(2 ** 31)))  # dropout masks
        loss_sum, correct = mx.nd.zeros(1, ctx=context), mx.nd.zeros(1, ctx=context)
        with progress_bar(total=len(targets), desc=f"epoch {epoch}/{settings.epochs}", unit="img", leave=False,
                          enabled=progress) as bar:
            for batch in batches(order, settings.batch_size):
                batch_codes = mx.nd.array(codes[batch], ctx=context)
                truth = mx.nd.array(targets[batch], ctx=context)
                extra = (mx.nd.array(sample_weight[batch], ctx=context),) if weighted else ()
                with autograd.record():
                    outputs = [part(batch_codes) for part in parts]
                    losses = [loss_fn(output, truth, *extra) for output in outputs]
                autograd.backward(losses)
                for params, lr in zip(trainable, part_lr):
                    sgd_step(params, lr, len(batch))
                if len(parts) == 1:
                    logits, loss = outputs[0], losses[0]
                else:
                    log_p = mx.nd.stack(*[mx.nd.log_softmax(output, axis=1) for output in outputs])
                    logits = mx.nd.log(mx.nd.exp(log_p).mean(axis=0))
                    loss = nll(logits, truth, *extra)
                # summed on the device: reading them back every batch would stall MXNet's asynchronous engine
                loss_sum += loss.sum()
                correct += (logits.argmax(axis=1) == truth).sum()
                bar.update(len(batch))
        loss_value = float(loss_sum.asscalar()) / len(targets)
        if not np.isfinite(loss_value):
            raise UserError(f"the training loss became {loss_value} in epoch {epoch}: the learning rate "
                            f"({' / '.join(map(str, part_lr))}) is too high for these codes; lower --lr (epochs "
                            f"before this one are kept)")
        entry = {"epoch": epoch, "loss": loss_value, "accuracy": int(correct.asscalar()) / len(targets)}
        if validation is not None:
            val_codes, val_targets = validation
            val_proba = head.predict_proba(net, val_codes, context)
            entry.update(validation_scores(np.asarray(val_targets, dtype=int), val_proba, weights,
                                           positive))
        entry["seconds"] = round(time.time() - started, 2)
        on_epoch(entry)
