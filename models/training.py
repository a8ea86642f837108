"""Step 4 on a folder: train the head on a codes folder into a models folder, resumably.

What is learned, and how, is ``models.classifier.HeadClassifier``'s; this wraps it with the files: the labels and
codes read and checked against each other, head.json and a checkpoint written after every epoch
(``models.headfolder``), old checkpoints pruned, ``--resume`` continuing exactly where an interrupted run stopped, and
the training curve drawn.

Resuming gives exactly the weights of an uninterrupted run: the estimator's epochs depend on the seed and the epoch
number alone, the layout and threshold chosen are kept in head.json, and the validation split and standardisation
follow from the data and the seed. So params + epoch number are the whole training state.
"""

import os

import numpy as np

from models.classifier import HeadClassifier, TrainSettings
from models.codes import CODES_FILE, CodeStore, check_examples
from models.errors import UserError, counted
from models.fileio import check_output_folder, remove_stale_temps
from models.headfolder import HeadFolder, best_epoch, data_digest, new_meta, resume_differences
from models.labels import class_counts, load_labels, split_digest


def log_selection(choice, point, log):
    """The inner cross-validation's result in the training log: each candidate, the winner, the threshold."""
    note = f" ({choice['note']})" if choice.get("note") else ""
    log(f"inner cross-validation, {choice['folds']} folds on {choice['images']} training images{note}, "
        f"{choice['seconds']:.1f} s (one fit a fold scores every layout):")
    for name, row in choice["candidates"].items():
        low, high = row["ci95"]
        log(f"  layout {name:<5} out-of-fold ROC-AUC {row['roc_auc']:.3f} (95% CI {low:.3f}-{high:.3f})"
            + ("  <- chosen" if name == choice["winner"] else ""))
    log(f"layout: {choice['why']}")
    if point is not None:
        log(f"threshold for {point['positive_class']!r}: {point['threshold']:.4f} ({point['why']})")


def calibration_line(estimator):
    """The recalibration in the training log: how the probabilities will be mapped, or why they will not be."""
    fitted = estimator.calibration_
    if fitted is None:
        return f"probabilities: the head's own, not recalibrated ({estimator.calibration_note_})"
    if fitted.method_ == "logistic":
        how = f"logistic, slope {fitted.slope_:.3f}, intercept {fitted.intercept_:+.3f}"
    else:
        how = f"temperature {fitted.temperature_:.3f}"
    return f"probabilities: recalibrated on the out-of-fold ones ({how})"


KEEP = 5  # epoch checkpoints kept besides the best one (the original's TensorFlow Saver kept 5)


def check_keep(keep):
    """ValueError unless ``keep`` (epoch checkpoints kept besides the best) is at least 1."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (the newest checkpoint is what resuming continues), got {keep}")


def train(image_dir, codes_dir, labels_path, models_dir, settings=TrainSettings(), resume=False,
          context=None, keep=KEEP, replace_changed=False, log=print):
    """Train (or continue training) the head in ``models_dir``, keeping the ``keep`` newest epochs' checkpoints and
    the best; returns head.json's content after the last epoch. With ``resume`` and ``replace_changed``, a head in
    ``models_dir`` trained on other images or settings is set aside (``HeadFolder.set_aside``) and a new one trained,
    so a re-run on a changed folder never continues or scores the old one.

    Raises UserError for unusable input (images without label or code, one class only, a validation split that
    leaves a class without images, an unknown --positive) and for a ``models_dir`` that cannot be (re)used.
    """
    from models.plots import plot_training_curve

    check_keep(keep)
    settings.check()
    check_output_folder(models_dir, "MODELS_DIR", [("TRAIN_IMGS", image_dir), ("TRAIN_CODES", codes_dir)])
    labels = load_labels(labels_path)
    store = CodeStore(codes_dir)
    names = check_examples(image_dir, store, labels, labels_path, codes_dir)
    targets = np.array(labels.indices(names), dtype=int)
    present = sorted(set(targets))
    if len(present) < 2:
        raise UserError(f"all {len(names)} training images are labelled {labels.classes[present[0]]!r}: "
                        f"a classifier needs examples of at least 2 classes")
    from models.provenance import record
    from models.weights import sha256_of

    folder = HeadFolder(models_dir)
    data_sha256 = data_digest(names, labels)
    previous = None
    if resume and folder.has_meta():
        previous = folder.read_meta()
        known = {"classes": list(labels.classes), "backbone": store.meta, "training": {"data_sha256": data_sha256}}
        changed = resume_differences(previous, known, ["data_sha256"])  # settings: check_resumable, below
        if changed and replace_changed:
            log(f"{models_dir} holds a head trained on other images, classes or codes: moved to "
                f"{folder.set_aside()}; training a new one")
            previous = None
    elif not resume and folder.has_checkpoints():
        raise UserError(f"{models_dir} already holds a trained head: add --resume to continue it, "
                        f"or choose another MODELS_DIR (or delete this one) to start over")
    chosen = None
    if previous is not None and "selection" in previous:  # chosen before: the same data and settings are checked
        chosen = {key: previous.get(key) for key in ("selection", "operating_point", "calibration")}
    done = previous["history"] if previous is not None else []
    warm_start = (len(done), lambda net: folder.load_weights(net, done[-1]["epoch"])) if done else None
    meta = None

    def selected(estimator):  # the layout, threshold and validation split are fixed: record them
        nonlocal meta
        choice, val_pos = estimator.selection_, estimator.validation_positions_
        if choice and choice["candidates"] and previous is None:
            log_selection(choice, estimator.operating_point_, log)
        if previous is None:
            log(calibration_line(estimator))
        meta = new_meta(estimator, store.meta, store.shape, train_imgs=image_dir, train_codes=codes_dir,
                        train_labels=labels_path, data_sha256=data_sha256,
                        validation_images=[names[i] for i in val_pos], trained_on=trained_on,
                        split_sha256=split_digest(labels_path), provenance=provenance,
                        class_counts=class_counts(labels, [names[i] for i in estimator.train_positions_]),
                        group_unit=labels.group_unit)
        if previous is not None:
            folder.check_resumable(previous, meta)
            meta["history"], meta["best_epoch"] = previous["history"], previous.get("best_epoch")
        if meta["history"]:  # the checkpoint holds every weight, the standardisation too: no pass over the codes
            log(f"resuming {models_dir} after epoch {meta['history'][-1]['epoch']}")
        elif resume:
            log(f"nothing to resume in {models_dir}: starting at epoch 1")
        os.makedirs(models_dir, exist_ok=True)
        remove_stale_temps(models_dir)
        folder.save_input_check(estimator.input_check_)  # the same arrays on a resumed run: fitted on the same data
        if not meta["history"]:
            folder.write_meta(meta)  # the layout chosen survives an interruption in epoch 1
        trained = len(meta["history"])
        if trained >= estimator.settings_.epochs:
            log(f"{models_dir} is already trained for {trained} epochs (--epochs {estimator.settings_.epochs}): "
                f"nothing to do; raise --epochs to train longer")
        if val_pos and not trained:
            counts = ", ".join(f"{labels.classes[c]} {int(np.sum(targets[val_pos] == c))}" for c in present)
            log(f"validation: {len(val_pos)} of {counted(len(names), 'image')} held out ({counts}); training on "
                f"{len(estimator.train_positions_)}")

    def finish_epoch(entry):
        entry["params"] = folder.save_epoch(estimator.net_, entry["epoch"])
        meta["history"].append(entry)
        meta["best_epoch"] = best_epoch(meta["history"])
        folder.write_meta(meta)  # the epoch is finished from here on
        folder.prune(meta, keep)
        scores = ""
        if "val_loss" in entry:
            auc = "n/a" if entry["val_roc_auc"] is None else f"{entry['val_roc_auc']:.3f}"
            scores = (f"  validation loss {entry['val_loss']:.4f} balanced accuracy "
                      f"{entry['val_balanced_accuracy']:.3f} ROC-AUC {auc}"
                      + (" (best so far)" if meta["best_epoch"] == entry["epoch"] else ""))
        log(f"epoch {entry['epoch']}/{settings.epochs}: loss {entry['loss']:.4f}  training accuracy "
            f"{entry['accuracy']:.3f}{scores}  {entry['seconds']:.1f} s  "
            f"-> {os.path.join(models_dir, entry['params'])}")

    stamps = store.index["stamps"]
    trained_on = {name: stamps[name][2] for name in names if stamps.get(name)}
    provenance = record({"train_codes": sha256_of(os.path.join(codes_dir, CODES_FILE)),
                         "train_labels": sha256_of(labels_path), "backbone": store.meta.get("model_sha256")})
    estimator = HeadClassifier(settings, context=context, progress=True)
    try:
        estimator.fit(store.rows_of(names), targets, [labels.group_of(name) for name in names],
                      classes=labels.classes, chosen=chosen, warm_start=warm_start,
                      on_selected=selected, on_epoch=finish_epoch)
    finally:  # drawn once, after the last epoch or an interruption: per epoch it cost ~10% of training time
        if meta is not None and meta["history"]:
            plot_training_curve(meta["history"], os.path.join(models_dir, "training_curve.png"),
                                best=meta["best_epoch"], selection=meta["selection"])
    return meta
