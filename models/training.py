"""Train the head on cached codes: the learning on arrays (``fit``), and the models-folder wrapper (``train``).

The defaults are made for small, imbalanced sets of real radiographs: a class-balanced loss, codes averaged over their
grid and standardised, and a validation hold-out (whole groups, stratified) that picks the best epoch and the
two-class operating threshold. ``RECIPES["xvision"]`` is the original Xvision recipe exactly: plain loss, the
flattened code, no standardisation, every training image trained on.

Resuming gives exactly the weights of an uninterrupted run because nothing else carries over between epochs: plain SGD
without momentum has no optimizer state, the initial weights come from the seed, epoch e's shuffle and dropout masks
come from (seed, e) alone, and the validation split and standardisation follow from the data and the seed. So params +
epoch number are the whole training state.
"""

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
from tqdm import tqdm

from models import head, metrics
from models.codes import CodeStore, check_examples
from models.errors import UserError
from models.fileio import check_output_folder, remove_stale_temps
from models.labels import load_labels
from models.splits import grouped_holdout

CLASS_WEIGHTS = ("balanced", "none")
STATS_BATCH = 256  # codes read at once while computing the standardisation


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 20  # passes over the training images
    lr: float = 0.01  # SGD learning rate (no momentum, no weight decay, as the original)
    batch_size: int = 32  # images per SGD step
    seed: int = 0  # initial weights, each epoch's shuffle, the validation split
    class_weight: str = "balanced"  # balanced: each class weighs n / (classes * n_class) in the loss; none: plain loss
    val_fraction: float = 0.2  # of each class's training images, held out in whole groups; 0: train on all
    pool: str = "avg"  # avg: one mean per code channel (512 features); none: the whole flattened grid (25,088)
    standardize: bool = True  # per-feature mean / std of the training codes, applied inside the exported head
    dropout: float = 0.5  # share of the head's input features dropped at random in each training step
    keep: int = 5  # epoch checkpoints kept besides the best one (the original's TensorFlow Saver kept 5)
    positive: str = None  # two classes: the class the ROC and the threshold are about (None: chosen by name)

    def check(self):
        if self.epochs < 1 or self.batch_size < 2 or not 0 < self.lr < float("inf"):
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
        if self.class_weight not in CLASS_WEIGHTS or self.pool not in head.POOLS:
            raise UserError(f"--class-weight must be one of {CLASS_WEIGHTS} and --pool one of {head.POOLS}")


# Settings that reproduce the original Xvision head training exactly (the 512x512 head, SGD lr 0.01, batch 32,
# 20 epochs are the defaults anyway).
RECIPES = {"xvision": dict(class_weight="none", val_fraction=0.0, pool="none", standardize=False, dropout=0.0)}
RESUME_KEYS = ("lr", "batch_size", "seed", "class_weight", "val_fraction", "pool", "standardize", "dropout",
               "positive", "data_sha256")


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
    """One epoch's validation numbers; with a positive class also the Youden threshold and the scores at it."""
    threshold = metrics.youden_threshold(truth, probabilities, positive) if positive is not None else None
    predicted = metrics.decide(probabilities, positive, 0.5 if threshold is None else threshold)
    n_classes = probabilities.shape[1]
    return {"val_loss": metrics.weighted_log_loss(truth, probabilities, weights),
            "val_accuracy": float(np.mean(predicted == truth)),
            "val_balanced_accuracy": metrics.balanced_accuracy(truth, predicted, n_classes),
            "val_roc_auc": metrics.roc_auc(truth, probabilities, positive),
            "threshold": threshold}


def fit(net, codes, targets, settings, *, weights, validation=None, positive=None, first_epoch=1, on_epoch=None,
        context=None, progress=True):
    """Train an initialised head on arrays, epochs ``first_epoch``..``settings.epochs``.

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
    trainable = [param for param in net.collect_params().values() if param.grad_req != "null"]
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    for epoch in range(first_epoch, settings.epochs + 1):
        started = time.time()
        order = np.random.default_rng([settings.seed, epoch]).permutation(len(targets))
        mx.random.seed(int(np.random.default_rng([settings.seed, epoch, 1]).integers(2 ** 31)))  # dropout masks
        loss_sum, correct = mx.nd.zeros(1, ctx=context), mx.nd.zeros(1, ctx=context)
        with tqdm(total=len(targets), desc=f"epoch {epoch}/{settings.epochs}", unit="img", leave=False,
                  disable=not progress) as bar:
            for batch in _batches(order, settings.batch_size):
                batch_codes = mx.nd.array(codes[batch], ctx=context)
                truth = mx.nd.array(targets[batch], ctx=context)
                with autograd.record():
                    logits = net(batch_codes)
                    if weighted:
                        loss = loss_fn(logits, truth, mx.nd.array(sample_weight[batch], ctx=context))
                    else:
                        loss = loss_fn(logits, truth)
                loss.backward()
                sgd_step(trainable, settings.lr, len(batch))
                # summed on the device: reading them back every batch would stall MXNet's asynchronous engine
                loss_sum += loss.sum()
                correct += (logits.argmax(axis=1) == truth).sum()
                bar.update(len(batch))
        loss_value = float(loss_sum.asscalar()) / len(targets)
        if not np.isfinite(loss_value):
            raise UserError(f"the training loss became {loss_value} in epoch {epoch}: the learning rate "
                            f"({settings.lr}) is too high for these codes; lower --lr (epochs before this one are "
                            f"kept)")
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
    """A new head with the seed's initial weights and, with standardisation, the training codes' scaling."""
    import mxnet as mx

    net = head.build_head(n_classes, code_shape, pool=settings.pool, standardize=settings.standardize,
                          dropout=settings.dropout)
    mx.random.seed(settings.seed)
    net.initialize(mx.init.Xavier(), ctx=context or mx.cpu(), force_reinit=True)
    if settings.standardize:
        head.set_standardization(net, *feature_scaling(train_codes, settings.pool))
    return net


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


def fit_and_select(codes, targets, groups, classes, settings, epoch="last", context=None):
    """What train_model.py then test_model.py --epoch EPOCH do, on arrays and in memory: hold out the validation
    groups, weight the classes, fit, and return (the head with the weights of the ``epoch`` ("last" or "best"),
    that epoch's threshold or None, the history). Used by cross-validation."""
    targets = np.asarray(targets, dtype=int)
    positive = metrics.positive_class(classes, settings.positive)
    train_pos, val_pos = validation_split(targets, groups, classes, settings)
    weights = class_weights(targets[train_pos], len(classes), settings.class_weight)
    train_codes = codes[np.asarray(train_pos)]
    net = initialised_head(len(classes), codes.shape[1:], settings, train_codes, context)
    net.hybridize(static_alloc=True)
    history, best = [], {}

    def remember(entry):
        history.append(entry)
        if epoch == "best" and best_epoch(history) == entry["epoch"]:
            best.update(entry=entry, weights={k: p.data().copy() for k, p in net.collect_params().items()})

    validation = (codes[np.asarray(val_pos)], targets[val_pos]) if val_pos else None
    fit(net, train_codes, targets[train_pos], settings, weights=weights, validation=validation, positive=positive,
        on_epoch=remember, context=context, progress=False)
    if not best:
        return net, history[-1].get("threshold"), history
    for name, param in net.collect_params().items():
        param.set_data(best["weights"][name])
    return net, best["entry"]["threshold"], history


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
    train_pos, val_pos = validation_split(targets, [labels.group_of(name) for name in names], labels.classes,
                                          settings)
    weights = class_weights(targets[train_pos], len(labels.classes), settings.class_weight)

    meta = {
        "format": head.FORMAT,
        "classes": list(labels.classes),
        "code_shape": list(store.shape),
        "head": {"pool": settings.pool, "standardize": settings.standardize, "dropout": settings.dropout,
                 "hidden_units": head.HIDDEN_UNITS},
        "backbone": dict(store.meta, **head.code_identity(store.meta)),  # what made the codes
        "output": "logits; softmax gives class probabilities in 'classes' order",
        "positive_class": settings.positive,
        "training": dict(asdict(settings), train_imgs=image_dir, train_codes=codes_dir, train_labels=labels_path,
                         n_images=len(train_pos), data_sha256=_data_digest(names, labels),
                         class_weights=dict(zip(labels.classes, weights.tolist())),
                         optimizer="sgd (no momentum, no weight decay)", loss="softmax cross-entropy",
                         init="xavier"),
        "validation": {"images": [names[i] for i in val_pos],
                       "best_epoch_by": "highest validation ROC-AUC, then lowest validation loss",
                       "threshold_by": "Youden's J (sensitivity + specificity - 1) on the validation images"},
        "best_epoch": None,
        "history": [],
    }
    train_codes = store.rows_of([names[i] for i in train_pos])
    validation = (store.rows_of([names[i] for i in val_pos]), targets[val_pos]) if val_pos else None
    if resume and os.path.exists(os.path.join(models_dir, head.META_FILE)):
        previous = head.read_meta(models_dir)
        _check_resumable(previous, meta, models_dir)
        meta["history"], meta["best_epoch"] = previous["history"], previous.get("best_epoch")
    elif not resume and head.has_checkpoints(models_dir):
        raise UserError(f"{models_dir} already holds a trained head: add --resume to continue it, "
                        f"or choose another MODELS_DIR (or delete this one) to start over")
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
                                best=meta["best_epoch"])
    return meta
