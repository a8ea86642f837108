"""Train the head on cached codes with plain SGD, one checkpoint per epoch, resumable to the same weights.

Resuming gives exactly the weights of an uninterrupted run because nothing else carries over between epochs: plain SGD
without momentum has no optimizer state, the initial weights come from the seed, and epoch e's shuffle comes from
(seed, e) alone. So params + epoch number are the whole training state.
"""

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from models import head
from models.codes import CodeStore
from models.errors import UserError
from models.images import list_images
from models.labels import load_labels

MAX_NAMED = 10  # offending files named in an error message


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 20
    lr: float = 0.01
    batch_size: int = 32
    seed: int = 0

    def check(self):
        if self.epochs < 1 or self.batch_size < 2 or not self.lr > 0:
            raise UserError(f"need --epochs >= 1, --batch-size >= 2 (BatchNorm needs 2 samples) and --lr > 0; "
                            f"got {self.epochs}, {self.batch_size}, {self.lr}")


def check_examples(image_dir, store, labels, labels_path, codes_dir):
    """Names of the images in ``image_dir``; UserError naming those without a label or without a code."""
    names = list_images(image_dir)
    problems = []
    for name in names:
        if name not in labels.labels:
            problems.append(f"{name} (no label in {os.path.basename(labels_path)})")
        elif name in store.skipped:
            problems.append(f"{name} (no code: {store.skipped[name]})")
        elif name not in store.rows:
            problems.append(f"{name} (no code in {codes_dir})")
    if problems:
        more = f" and {len(problems) - MAX_NAMED} more" if len(problems) > MAX_NAMED else ""
        raise UserError(f"{len(problems)} of {len(names)} images in {image_dir} cannot be used: "
                        f"{', '.join(problems[:MAX_NAMED])}{more}; label them in {labels_path} and/or re-run train.py "
                        f"so every image has a code (or move the unusable images out of {image_dir})")
    return names


def _batches(order, batch_size):
    """Consecutive batches of ``order``; a trailing batch of one joins the previous one (BatchNorm needs two)."""
    starts = list(range(0, len(order), batch_size))
    if len(starts) > 1 and len(order) - starts[-1] == 1:
        starts.pop()
    return [order[start:end] for start, end in zip(starts, starts[1:] + [len(order)])]


def _data_digest(names, labels):
    return hashlib.sha256(json.dumps([[n, labels.labels[n]] for n in names]).encode()).hexdigest()


def sgd_step(params, lr, batch_size):
    """Plain SGD, weight -= lr * grad / batch_size, one sgd_update per parameter.

    What gluon.Trainer(SGD, no momentum, no weight decay).step(batch_size) computes, minus its Python bookkeeping per
    parameter, which cost ~4 ms of a 23 ms step here (about as much as the update of the 25088x512 weight itself).
    """
    import mxnet as mx

    for param in params:
        weight = param.data()
        mx.nd.sgd_update(weight, param.grad(), lr=lr, wd=0.0, rescale_grad=1.0 / batch_size, out=weight)


def _check_resumable(meta, expected, models_dir):
    differ = [f"classes: now {expected['classes']}, checkpoints {meta['classes']}"] \
        if meta["classes"] != expected["classes"] else []
    was_codes, now_codes = head.code_identity(meta["backbone"]), head.code_identity(expected["backbone"])
    differ += [f"codes' {key}: now {now_codes[key]!r}, checkpoints {was_codes[key]!r}"
               for key in head.CODE_IDENTITY if was_codes[key] != now_codes[key]]
    was, now = meta["training"], expected["training"]
    differ += [f"{key}: now {now[key]!r}, checkpoints {was.get(key)!r}"
               for key in ("lr", "batch_size", "seed", "data_sha256") if was.get(key) != now[key]]
    if differ:
        raise UserError(f"cannot --resume in {models_dir}: it was trained with other settings or data "
                        f"({'; '.join(differ)}); resume with the original settings or train into a new MODELS_DIR")


def train(image_dir, codes_dir, labels_path, models_dir, settings=TrainSettings(), resume=False,
          context=None, log=print):
    """Train (or continue training) the head; returns head.json's content after the last epoch."""
    import mxnet as mx
    from mxnet import autograd, gluon

    from models.plots import plot_training_curve

    settings.check()
    context = context or mx.cpu()
    labels = load_labels(labels_path)
    store = CodeStore(codes_dir)
    names = check_examples(image_dir, store, labels, labels_path, codes_dir)
    targets = np.array(labels.indices(names), dtype=np.float32)
    present = sorted(set(targets.astype(int)))
    if len(present) < 2:
        raise UserError(f"all {len(names)} training images are labelled {labels.classes[present[0]]!r}: "
                        f"a classifier needs examples of at least 2 classes")

    meta = {
        "format": head.FORMAT,
        "classes": list(labels.classes),
        "code_shape": list(store.shape),
        "backbone": dict(store.meta, **head.code_identity(store.meta)),  # what made the codes
        "output": "logits; softmax gives class probabilities in 'classes' order",
        "training": dict(asdict(settings), train_imgs=image_dir, train_codes=codes_dir, train_labels=labels_path,
                         n_images=len(names), data_sha256=_data_digest(names, labels),
                         optimizer="sgd (no momentum, no weight decay)", loss="softmax cross-entropy",
                         init="xavier"),
        "history": [],
    }
    net = head.build_head(len(labels.classes), store.shape)
    if resume and os.path.exists(os.path.join(models_dir, head.META_FILE)):
        previous = head.read_meta(models_dir)
        _check_resumable(previous, meta, models_dir)
        meta["history"] = previous["history"]
        net.initialize(ctx=context)
        if meta["history"]:
            head.load_weights(models_dir, net, meta["history"][-1]["epoch"])
            log(f"resuming {models_dir} after epoch {meta['history'][-1]['epoch']}")
    elif not resume and head.has_checkpoints(models_dir):
        raise UserError(f"{models_dir} already holds a trained head: add --resume to continue it, "
                        f"or choose another MODELS_DIR (or delete this one) to start over")
    if not meta["history"]:
        if resume:
            log(f"nothing to resume in {models_dir}: starting at epoch 1")
        mx.random.seed(settings.seed)
        net.initialize(mx.init.Xavier(), ctx=context, force_reinit=True)
    os.makedirs(models_dir, exist_ok=True)
    net.hybridize(static_alloc=True)

    done = len(meta["history"])
    if done >= settings.epochs:
        log(f"{models_dir} is already trained for {done} epochs (--epochs {settings.epochs}): nothing to do; "
            f"raise --epochs to train longer")
    trainable = [param for param in net.collect_params().values() if param.grad_req != "null"]
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    try:
        for epoch in range(done + 1, settings.epochs + 1):
            started = time.time()
            order = np.random.default_rng([settings.seed, epoch]).permutation(len(names))
            loss_sum, correct = mx.nd.zeros(1, ctx=context), mx.nd.zeros(1, ctx=context)
            with tqdm(total=len(names), desc=f"epoch {epoch}/{settings.epochs}", unit="img", leave=False) as bar:
                for batch in _batches(order, settings.batch_size):
                    codes = mx.nd.array(store.read([names[i] for i in batch]), ctx=context)
                    truth = mx.nd.array(targets[batch], ctx=context)
                    with autograd.record():
                        logits = net(codes)
                        loss = loss_fn(logits, truth)
                    loss.backward()
                    sgd_step(trainable, settings.lr, len(batch))
                    # summed on the device: reading them back every batch would stall MXNet's asynchronous engine
                    loss_sum += loss.sum()
                    correct += (logits.argmax(axis=1) == truth).sum()
                    bar.update(len(batch))
            loss_sum, correct = float(loss_sum.asscalar()), int(correct.asscalar())
            head.save_weights(models_dir, net, epoch)
            entry = {"epoch": epoch, "loss": loss_sum / len(names), "accuracy": correct / len(names),
                     "params": head.params_file(epoch), "seconds": round(time.time() - started, 2)}
            meta["history"].append(entry)
            head.write_meta(models_dir, meta)  # the epoch is finished from here on
            log(f"epoch {epoch}/{settings.epochs}: loss {entry['loss']:.4f}  training accuracy {entry['accuracy']:.3f} "
                f"({correct}/{len(names)})  {entry['seconds']:.1f} s  -> {os.path.join(models_dir, entry['params'])}")
    finally:  # drawn once, after the last epoch or an interruption: per epoch it cost ~10% of training time
        if meta["history"]:
            plot_training_curve(meta["history"], os.path.join(models_dir, "training_curve.png"))
    return meta
