"""Train the head on cached codes: the learning on arrays (``fit``, ``fit_arrays``, ``fit_and_select``), and the
models-folder wrapper (``train``).

The defaults are made for small, imbalanced sets of real radiographs: a class-balanced loss, input dropout, and the
input layout (codes averaged over their grid and standardised, or the raw flattened grid) chosen by an inner
cross-validation on the training images (``models.selection``), whose out-of-fold probabilities also give the
two-class operating threshold. ``RECIPES["xvision"]`` is the original Xvision recipe exactly: plain loss, the
flattened code, no standardisation, no dropout, every training image trained on, threshold 0.5.

Resuming gives exactly the weights of an uninterrupted run because nothing else carries over between epochs: plain SGD
without momentum has no optimizer state, the initial weights come from the seed, epoch e's shuffle and dropout masks
come from (seed, e) alone, the layout chosen is kept in head.json, and the validation split and standardisation follow
from the data and the seed. So params + epoch number are the whole training state.
"""

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from models import head, metrics, selection
from models.codes import CodeStore, check_examples
from models.errors import UserError
from models.fileio import check_output_folder, remove_stale_temps
from models.labels import load_labels
from models.progress import progress_bar
from models.splits import grouped_holdout

CLASS_WEIGHTS = ("balanced", "none")
STATS_BATCH = 256  # codes read at once while computing the standardisation
# default SGD learning rate of each single-head layout (a layout of branches: each branch its own): the averaged head
# needs more steps than 20 epochs at 0.01 give it on a few hundred images (docs/accuracy.md); the flattened head does
# not gain from them
LAYOUT_LR = {"avg": 0.03, "flat": 0.01}
LAYOUT_CHOICES = ("auto",) + head.LAYOUT_NAMES


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 20  # passes over the training images
    lr: float = None  # SGD learning rate (no momentum, no weight decay, as the original); None: each layout's own
    batch_size: int = 32  # images per SGD step
    seed: int = 0  # initial weights, each epoch's shuffle, the validation split, the inner folds
    class_weight: str = "balanced"  # balanced: each class weighs n / (classes * n_class) in the loss; none: plain loss
    layout: str = "auto"  # avg: channel means, standardised (512 features); flat: the raw grid (25,088); both: a head
    # on each, probabilities averaged; auto: the best of them by inner cross-validation
    folds: int = 5  # inner cross-validation folds (layout, out-of-fold scores, threshold); 0: none
    val_fraction: float = 0.0  # of each class's training images, held out in whole groups for per-epoch curves
    dropout: float = 0.5  # share of the head's input features dropped at random in each training step
    keep: int = 5  # epoch checkpoints kept besides the best one (the original's TensorFlow Saver kept 5)
    positive: str = None  # two classes: the class the ROC and the threshold are about (None: chosen by name)

    def for_layout(self, layout):
        """These settings with ``layout`` fixed, and its own learning rate unless one was given (a layout of
        branches keeps None: each branch trains at its own)."""
        return replace(self, layout=layout, lr=LAYOUT_LR.get(layout) if self.lr is None else self.lr)

    def branch_lr(self, branch):
        """The learning rate of the single-head layout ``branch`` inside these settings' layout."""
        return LAYOUT_LR[branch] if self.lr is None else self.lr

    def check(self):
        lr = 0.01 if self.lr is None else self.lr
        if self.epochs < 1 or self.batch_size < 2 or not 0 < lr < float("inf"):
            raise UserError(f"need --epochs >= 1, --batch-size >= 2 (BatchNorm needs 2 samples) and a finite --lr > 0; "
                            f"got {self.epochs}, {self.batch_size}, {self.lr}")
        if self.seed < 0:
            raise UserError(f"--seed must be 0 or more, got {self.seed}")
        if not 0 <= self.val_fraction < 1 or not 0 <= self.dropout < 1:
            raise UserError(f"--val-fraction and --dropout must be at least 0 and below 1, got {self.val_fraction} "
                            f"and {self.dropout}")
        if self.keep < 1:
            raise UserError(f"--keep must be at least 1 (the newest checkpoint is what --resume continues), "
                            f"got {self.keep}")
        if self.class_weight not in CLASS_WEIGHTS or self.layout not in LAYOUT_CHOICES:
            raise UserError(f"--class-weight must be one of {CLASS_WEIGHTS} and --layout one of {LAYOUT_CHOICES}")
        if self.folds == 1 or self.folds < 0 or (self.layout == "auto" and self.folds < 2):
            raise UserError(f"--folds must be 0 (no inner cross-validation) or at least 2, and --layout auto needs "
                            f"at least 2 (it chooses by cross-validation); got --folds {self.folds}")


# Settings that reproduce the original Xvision head training exactly (the 512x512 head, SGD lr 0.01, batch 32,
# 20 epochs are the defaults anyway).
RECIPES = {"xvision": dict(class_weight="none", val_fraction=0.0, layout="flat", folds=0, lr=0.01, dropout=0.0)}
RESUME_KEYS = ("lr", "batch_size", "seed", "class_weight", "val_fraction", "layout", "layout_requested", "folds",
               "dropout", "positive", "data_sha256")


def class_weights(targets, n_classes, mode):
    """Loss weight of each class: scikit-learn's 'balanced' n / (n_classes * n_class), or all 1."""
    if mode == "none":
        return np.ones(n_classes)
    counts = np.bincount(np.asarray(targets, dtype=int), minlength=n_classes)
    return np.where(counts > 0, len(targets) / (n_classes * np.maximum(counts, 1)), 0.0)


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


def _batches(order, batch_size):
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


def fit(net, codes, targets, settings, *, weights, validation=None, positive=None, first_epoch=1, on_epoch=None,
        context=None, progress=True):
    """Train an initialised head on arrays, epochs ``first_epoch``..``settings.epochs``. A head of branches
    (``--layout both``) trains each branch on its own loss at its own learning rate, on the same batches: the branches
    share no weight, so each learns as its layout would alone (bit for bit without dropout; with it, only the masks
    differ); the loss and accuracy reported are those of the mean of their probabilities.

    ``codes``: anything indexed by an array of positions like a numpy array (an array, ``CodeStore.rows_of``);
    ``targets``: class indices; ``weights``: loss weight per class; ``validation``: (codes, targets) scored after
    every epoch. ``on_epoch(entry)`` gets each finished epoch's numbers (loss, accuracy, validation scores).
    """
    import mxnet as mx
    from mxnet import autograd, gluon

    context = context or mx.cpu()
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
            for batch in _batches(order, settings.batch_size):
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
            entry.update(validation_scores(np.asarray(val_targets, dtype=int), val_proba, weights, positive))
        entry["seconds"] = round(time.time() - started, 2)
        if on_epoch is not None:
            on_epoch(entry)
    return net


def initialised_head(n_classes, code_shape, settings, train_codes, context=None):
    """A new head with the seed's initial weights and, in each standardising branch, the training codes' scaling."""
    import mxnet as mx

    net = head.build_layout(n_classes, code_shape, settings.layout, dropout=settings.dropout)
    for part, name in zip(head.branches(net), head.branches_of(settings.layout)):
        mx.random.seed(settings.seed)  # each branch starts where its layout would alone
        part.initialize(mx.init.Xavier(), ctx=context or mx.cpu(), force_reinit=True)
        if head.LAYOUTS[name]["standardize"]:
            head.set_standardization(part, *feature_scaling(train_codes, head.LAYOUTS[name]["pool"]))
    return net


def head_record(settings):
    """head.json's "head": the layout, how the codes enter it (per branch for a layout of branches), the dropout."""
    record = {"layout": settings.layout}
    names = head.branches_of(settings.layout)
    if len(names) == 1:
        record.update(head.LAYOUTS[settings.layout])
    else:
        record["branches"] = {name: dict(head.LAYOUTS[name], lr=settings.branch_lr(name)) for name in names}
        record["output"] = "log of the mean of the branches' class probabilities"
    return dict(record, dropout=settings.dropout, hidden_units=head.HIDDEN_UNITS)


def best_epoch(history):
    """The finished epoch with the highest validation ROC-AUC, of equals the one with the lowest validation loss;
    None without validation. (The validation loss alone is a poor guide here: on small sets it rises from epoch 2 or 3
    on as the head grows confident, while the ranking, which the AUC measures, still improves.)"""
    scored = [entry for entry in history if entry.get("val_loss") is not None]
    if not scored:
        return None
    return max(scored, key=lambda entry: (entry["val_roc_auc"] if entry["val_roc_auc"] is not None else -1.0,
                                          -entry["val_loss"]))["epoch"]


def validation_split(targets, groups, classes, settings):
    """Positions of the training and the validation images; UserError where a class would lack either."""
    all_positions = list(range(len(targets)))
    if settings.val_fraction == 0:
        return all_positions, []
    present = sorted(set(targets))
    train_pos, val_pos = grouped_holdout(list(targets), groups, present, settings.val_fraction, settings.seed)
    for c in present:
        members = [i for i in all_positions if targets[i] == c]
        in_val = sum(targets[i] == c for i in val_pos)
        if in_val == 0 or in_val == len(members):
            side = "no validation images" if in_val == 0 else "no training images left"
            n_groups = len({groups[i] for i in members})
            raise UserError(f"--val-fraction {settings.val_fraction} leaves class {classes[c]!r} with {side} "
                            f"(it has {len(members)} images in {n_groups} groups); choose another --val-fraction, "
                            f"or --val-fraction 0 to train on every image without validation")
    return train_pos, val_pos


def fit_arrays(codes, targets, classes, settings, context=None, **fit_options):
    """A head trained on all of ``codes`` with ``settings`` (layout fixed); the class weights from ``targets``.
    ``fit_options`` go to ``fit`` (validation, positive, on_epoch). Used by the inner cross-validation,
    ``fit_and_select`` and ``make accuracy``."""
    targets = np.asarray(targets, dtype=int)
    weights = class_weights(targets, len(classes), settings.class_weight)
    net = initialised_head(len(classes), codes.shape[1:], settings, codes, context)
    net.hybridize(static_alloc=True)
    return fit(net, codes, targets, settings, weights=weights, context=context, progress=False, **fit_options)


def candidates_of(layout):
    """The layouts an inner cross-validation with ``--layout`` scores: every one for auto (all from the fits of the
    head of branches, whose branches are the single-head layouts), else the one given and, for a layout of branches,
    its branches too (free: they are trained anyway)."""
    return head.LAYOUT_NAMES if layout == "auto" else tuple(dict.fromkeys(head.branches_of(layout) + (layout,)))


def predict_layouts(net, codes, layout, context=None):
    """{layout: class probabilities of ``codes``} of a head trained as ``layout``: its own and, for a layout of
    branches, each branch's."""
    proba = {layout: head.predict_proba(net, codes, context)}
    names = head.branches_of(layout)
    if len(names) > 1:
        proba.update({name: head.predict_proba(part, codes, context) for name, part in zip(names, head.branches(net))})
    return proba


def inner_cross_validation(codes, targets, groups, classes, settings, context=None, progress=True):
    """(held-out folds, note, {layout: out-of-fold probabilities}) of the inner cross-validation of ``settings``:
    the layouts of ``candidates_of``, from one fit per fold (of the largest candidate: its branches are the others);
    no folds (and a note) where a class has too few groups."""
    held_out, note = selection.inner_folds(targets, groups, settings.folds, settings.seed)
    names = candidates_of(settings.layout)
    trained = names[-1]  # the layout of branches, or the one single layout
    if not held_out:
        return held_out, note, {}
    with progress_bar(total=len(held_out), desc="inner cross-validation", unit="fold", leave=False,
                      enabled=progress) as bar:
        def fit_fold(train_codes, train_targets):
            net = fit_arrays(train_codes, train_targets, classes, settings.for_layout(trained), context)
            bar.update(1)
            return lambda test_codes: predict_layouts(net, test_codes, trained, context)

        return held_out, note, selection.cross_validate(codes, targets, classes, held_out, names, fit_fold)


def choose_layout(codes, targets, groups, classes, settings, context=None, progress=True):
    """Run the inner cross-validation of ``settings`` on the training images; returns head.json's "selection"
    (candidates' out-of-fold ROC-AUC with 95% intervals, the winner and why) and, for two classes, its
    "operating_point"; None, None with --folds 0.

    ``codes``: the training codes as an array in memory (the folds train on it, no file is read again)."""
    if settings.folds == 0:
        return None, None
    targets = np.asarray(targets, dtype=int)
    held_out, note, results = inner_cross_validation(codes, targets, groups, classes, settings, context, progress)
    if not held_out:
        winner = head.LAYOUT_NAMES[-1] if settings.layout == "auto" else settings.layout
        why = f"{winner}, the heads of every layout averaged" if settings.layout == "auto" else f"--layout {winner}"
        return {"candidates": {}, "winner": winner, "why": f"{why}; {note}", "folds": 0}, None
    positive = metrics.positive_class(classes, settings.positive)
    winner, why = selection.choose(results, targets, positive) if settings.layout == "auto" else \
        (settings.layout, f"--layout {settings.layout}")
    table = selection.summarise(results, targets, positive)
    for name in table:
        table[name]["lr"] = {branch: settings.branch_lr(branch) for branch in head.branches_of(name)}
    record = {"candidates": table, "winner": winner, "why": why, "folds": len(held_out), "note": note,
              "images": len(targets), "seed": settings.seed,
              "by": "pooled out-of-fold ROC-AUC of a grouped, stratified k-fold on the training images (95% "
                    "interval: DeLong); the heads of both layouts averaged, unless one layout beats them by more "
                    "than one standard error of the paired difference"}
    point = None
    if positive is not None:
        point = selection.operating_point(results[winner]["proba"], targets, classes, positive)
    return record, point


def fit_and_select(codes, targets, groups, classes, settings, context=None):
    """What train_model.py does, on arrays and in memory: choose the layout (and the threshold) by inner
    cross-validation, hold out the validation groups if asked, and train on the rest. Returns (the head, the
    two-class threshold or None, {"selection", "operating_point", "history", "settings"})."""
    targets = np.asarray(targets, dtype=int)
    choice, point = choose_layout(codes, targets, groups, classes, settings, context, progress=False)
    settings = settings.for_layout(choice["winner"] if choice else settings.layout)
    train_pos, val_pos = validation_split(targets, groups, classes, settings)
    history = []
    validation = (codes[np.asarray(val_pos)], targets[val_pos]) if val_pos else None
    net = fit_arrays(codes[np.asarray(train_pos)], targets[train_pos], classes, settings, context,
                     validation=validation, positive=metrics.positive_class(classes, settings.positive),
                     on_epoch=history.append)
    threshold = point["threshold"] if point else history[-1].get("threshold")
    return net, threshold, {"selection": choice, "operating_point": point, "history": history, "settings": settings}


def log_selection(choice, point, log):
    """The inner cross-validation's result in the training log: each candidate, the winner, the threshold."""
    note = f" ({choice['note']})" if choice.get("note") else ""
    log(f"inner cross-validation, {choice['folds']} folds on {choice['images']} training images{note}:")
    for name, row in choice["candidates"].items():
        low, high = row["ci95"]
        log(f"  layout {name:<5} out-of-fold ROC-AUC {row['roc_auc']:.3f} (95% CI {low:.3f}-{high:.3f})  "
            f"{row['seconds']:.1f} s" + ("  <- chosen" if name == choice["winner"] else ""))
    log(f"layout: {choice['why']}")
    if point is not None:
        log(f"threshold for {point['positive_class']!r}: {point['threshold']:.4f} ({point['why']})")


def _data_digest(names, labels):
    rows = [[n, labels.labels[n]] + ([labels.group_of(n)] if labels.groups else []) for n in names]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _check_resumable(meta, expected, models_dir):
    differ = [f"classes: now {expected['classes']}, checkpoints {meta['classes']}"] \
        if meta["classes"] != expected["classes"] else []
    was_codes, now_codes = head.code_identity(meta["backbone"]), head.code_identity(expected["backbone"])
    differ += [f"codes' {key}: now {now_codes[key]!r}, checkpoints {was_codes[key]!r}"
               for key in head.CODE_IDENTITY if was_codes[key] != now_codes[key]]
    was, now = dict(asdict(TrainSettings(**RECIPES["xvision"])), **meta["training"]), expected["training"]
    differ += [f"{key}: now {now[key]!r}, checkpoints {was.get(key)!r}"
               for key in RESUME_KEYS if was.get(key) != now[key]]
    if differ:
        raise UserError(f"cannot --resume in {models_dir}: it was trained with other settings or data "
                        f"({'; '.join(differ)}); resume with the original settings or train into a new MODELS_DIR")


def prune_checkpoints(models_dir, meta, keep):
    """Delete the params of epochs that are neither among the ``keep`` newest nor the best (head.json says which)."""
    finished = [entry["epoch"] for entry in meta["history"] if entry.get("params")]
    kept = set(finished[-keep:]) | {meta.get("best_epoch")}
    removed = []
    for entry in meta["history"]:
        if entry.get("params") and entry["epoch"] not in kept:
            removed.append(os.path.join(models_dir, entry["params"]))
            entry["params"] = None
    if removed:
        head.write_meta(models_dir, meta)  # head.json stops naming them before they go
        for path in removed:
            if os.path.exists(path):
                os.remove(path)


def train(image_dir, codes_dir, labels_path, models_dir, settings=TrainSettings(), resume=False,
          context=None, log=print):
    """Train (or continue training) the head in ``models_dir``; returns head.json's content after the last epoch.

    Raises UserError for unusable input (images without label or code, one class only, a validation split that
    leaves a class without images, an unknown --positive) and for a ``models_dir`` that cannot be (re)used.
    """
    import mxnet as mx

    from models.plots import plot_training_curve

    settings.check()
    check_output_folder(models_dir, "MODELS_DIR", [("TRAIN_IMGS", image_dir), ("TRAIN_CODES", codes_dir)])
    context = context or mx.cpu()
    labels = load_labels(labels_path)
    store = CodeStore(codes_dir)
    names = check_examples(image_dir, store, labels, labels_path, codes_dir)
    targets = np.array(labels.indices(names), dtype=int)
    present = sorted(set(targets))
    if len(present) < 2:
        raise UserError(f"all {len(names)} training images are labelled {labels.classes[present[0]]!r}: "
                        f"a classifier needs examples of at least 2 classes")
    positive = metrics.positive_class(labels.classes, settings.positive)
    settings = replace(settings, positive=None if positive is None else labels.classes[positive])
    groups = [labels.group_of(name) for name in names]
    previous = None
    if resume and os.path.exists(os.path.join(models_dir, head.META_FILE)):
        previous = head.read_meta(models_dir)
    elif not resume and head.has_checkpoints(models_dir):
        raise UserError(f"{models_dir} already holds a trained head: add --resume to continue it, "
                        f"or choose another MODELS_DIR (or delete this one) to start over")
    if previous is not None and "selection" in previous:  # chosen before: the same data and settings are checked below
        choice, point = previous["selection"], previous.get("operating_point")
    else:
        choice, point = choose_layout(store.read(names), targets, groups, labels.classes, settings, context)
    requested = settings.layout
    settings = settings.for_layout(choice["winner"] if choice else settings.layout)
    if choice and choice["candidates"] and previous is None:
        log_selection(choice, point, log)
    train_pos, val_pos = validation_split(targets, groups, labels.classes, settings)
    weights = class_weights(targets[train_pos], len(labels.classes), settings.class_weight)

    meta = {
        "format": head.FORMAT,
        "classes": list(labels.classes),
        "code_shape": list(store.shape),
        "head": head_record(settings),
        "backbone": dict(store.meta, **head.code_identity(store.meta)),  # what made the codes
        "output": "logits; softmax gives class probabilities in 'classes' order",
        "positive_class": settings.positive,
        "training": dict(asdict(settings), layout_requested=requested, train_imgs=image_dir, train_codes=codes_dir,
                         train_labels=labels_path, n_images=len(train_pos), data_sha256=_data_digest(names, labels),
                         class_weights=dict(zip(labels.classes, weights.tolist())),
                         optimizer="sgd (no momentum, no weight decay)", loss="softmax cross-entropy",
                         init="xavier"),
        "selection": choice,
        "operating_point": point,
        "validation": {"images": [names[i] for i in val_pos],
                       "best_epoch_by": "highest validation ROC-AUC, then lowest validation loss",
                       "threshold_by": "the balanced point (sensitivity = specificity) of the validation images"},
        "best_epoch": None,
        "history": [],
    }
    train_codes = store.rows_of([names[i] for i in train_pos])
    validation = (store.rows_of([names[i] for i in val_pos]), targets[val_pos]) if val_pos else None
    if previous is not None:
        _check_resumable(previous, meta, models_dir)
        meta["history"], meta["best_epoch"] = previous["history"], previous.get("best_epoch")
    if meta["history"]:  # the checkpoint holds every weight, the standardisation too: no pass over the codes
        net = head.build_from_meta(meta)
        net.initialize(ctx=context)
        head.load_weights(models_dir, net, meta["history"][-1]["epoch"])
        log(f"resuming {models_dir} after epoch {meta['history'][-1]['epoch']}")
    else:
        net = initialised_head(len(labels.classes), store.shape, settings, train_codes, context)
        if resume:
            log(f"nothing to resume in {models_dir}: starting at epoch 1")
    os.makedirs(models_dir, exist_ok=True)
    remove_stale_temps(models_dir)
    if not meta["history"]:
        head.write_meta(models_dir, meta)  # the layout chosen survives an interruption in epoch 1
    net.hybridize(static_alloc=True)
    done = len(meta["history"])
    if done >= settings.epochs:
        log(f"{models_dir} is already trained for {done} epochs (--epochs {settings.epochs}): nothing to do; "
            f"raise --epochs to train longer")
    if validation is not None and not done:
        counts = ", ".join(f"{labels.classes[c]} {int(np.sum(targets[val_pos] == c))}" for c in present)
        log(f"validation: {len(val_pos)} of {len(names)} images held out ({counts}); training on {len(train_pos)}")

    def finish_epoch(entry):
        head.save_weights(models_dir, net, entry["epoch"])
        entry["params"] = head.params_file(entry["epoch"])
        meta["history"].append(entry)
        meta["best_epoch"] = best_epoch(meta["history"])
        head.write_meta(models_dir, meta)  # the epoch is finished from here on
        prune_checkpoints(models_dir, meta, settings.keep)
        scores = ""
        if "val_loss" in entry:
            auc = "n/a" if entry["val_roc_auc"] is None else f"{entry['val_roc_auc']:.3f}"
            scores = (f"  validation loss {entry['val_loss']:.4f} balanced accuracy "
                      f"{entry['val_balanced_accuracy']:.3f} ROC-AUC {auc}"
                      + (" (best so far)" if meta["best_epoch"] == entry["epoch"] else ""))
        log(f"epoch {entry['epoch']}/{settings.epochs}: loss {entry['loss']:.4f}  training accuracy "
            f"{entry['accuracy']:.3f}{scores}  {entry['seconds']:.1f} s  "
            f"-> {os.path.join(models_dir, entry['params'])}")

    try:
        fit(net, train_codes, targets[train_pos], settings, weights=weights, validation=validation,
            positive=positive, first_epoch=done + 1, on_epoch=finish_epoch, context=context)
    finally:  # drawn once, after the last epoch or an interruption: per epoch it cost ~10% of training time
        if meta["history"]:
            plot_training_curve(meta["history"], os.path.join(models_dir, "training_curve.png"),
                                best=meta["best_epoch"], selection=meta["selection"])
    return meta
