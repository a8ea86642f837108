"""A trained head's folder (MODELS_DIR): what it holds, how it is written and read, and which epoch and threshold it
stands for. The one home of that folder's rules, as ``models.codes`` is of a codes folder.

A models folder holds
- ``head-symbol.json``: the network as an MXNet symbol (input ``data``: a batch of codes; output: class logits);
- ``head-NNNN.params``: the weights after epoch NNNN, in MXNet's own array format (``arg:``/``aux:`` names, no pickle);
- ``input_check.npz``: the model of the training codes that says which images are unlike them
  (``models.inputcheck``; numpy's format, read without pickle);
- ``head.json``: classes, code shape, the head's layout (its name, pooling, standardisation), what made the codes, the
  training arguments, the inner cross-validation that chose the layout (``selection``: each candidate's out-of-fold
  ROC-AUC with its 95% interval, the winner and why), the two-class threshold from it (``operating_point``: the
  threshold, where it came from, how many images of each class stand behind it), the recalibration of the
  probabilities (``calibration``) and the input check (``input_check``: its method and threshold), per-epoch training
  (and, with a hold-out, validation) scores, the best epoch, and which epochs' params are still kept (``params``: null
  for a removed one).

Every file is written under a temporary name and renamed, and an epoch counts as finished only once ``head.json``
lists it, so a run stopped at any moment leaves a consistent folder. No training code is needed to use a checkpoint::

    net = mxnet.gluon.SymbolBlock.imports("head-symbol.json", ["data"], "head-0020.params")
    probabilities = mxnet.nd.softmax(net(codes))

The symbol includes the pooling and the standardisation of the codes, so the raw codes of train.py go in as they are;
its softmax is the head's own probabilities, before the recalibration head.json describes.
"""

import hashlib
import json
import os
import re
import warnings
import zipfile
from dataclasses import asdict

import numpy as np

from models import checkpoint
from models.calibration import Recalibration
from models.classifier import RECIPES, HeadClassifier, TrainSettings, decision_threshold, head_record
from models.errors import UserError, mxnet_reason
from models.fileio import atomic_path, read_json, write_json
from models.highdepth import EIGHT_BIT, FULL_DEPTH
from models.inputcheck import FILE_KEYS as INPUT_CHECK_KEYS
from models.inputcheck import InputCheck

FORMAT = "xvision-mx head v1"
META_FILE = "head.json"
CHECKPOINT_PREFIX = "head"  # head-symbol.json + head-NNNN.params, the MXNet checkpoint naming
SYMBOL_FILE = f"{CHECKPOINT_PREFIX}-symbol.json"
INPUT_CHECK_FILE = "input_check.npz"  # models.inputcheck.InputCheck's arrays (numpy's format, no pickle)
PARAMS_PATTERN = re.compile(r"^head-(\d{4})\.params$")
EPOCH_CHOICES = "best, last or an epoch number"
# what must be equal between the codes a head was trained on and the codes it is given
CODE_IDENTITY = ("model_sha256", "layer", "shape", "precision", "field", "lung_box", "significant_bits")
# what must be equal between a resumed run and the run that wrote the folder
RESUME_KEYS = ("lr", "batch_size", "seed", "class_weight", "val_fraction", "layout", "layout_requested", "folds",
               "dropout", "positive", "calibration", "data_sha256")
BEST_EPOCH_BY = "highest validation ROC-AUC, then lowest validation loss"
# head.json's "selection": how the layout was chosen
SELECTION_RULE = ("pooled out-of-fold ROC-AUC of a grouped, stratified k-fold on the training images (95% interval: "
                  "DeLong, clustered by patient where patients have several images); the heads of both layouts "
                  "averaged, unless one layout beats them by more than one standard error of the paired difference")


def params_file(epoch):
    return os.path.basename(checkpoint.params_path(CHECKPOINT_PREFIX, epoch))


def code_identity(codes_meta):
    """What must be equal between two sets of codes for one head to read both (codes made before fields existed saw
    the whole image; codes made before significant bits were measured mapped 16-bit images from 16 bits)."""
    identity = {key: (list(codes_meta[key]) if key == "shape" else codes_meta.get(key)) for key in CODE_IDENTITY}
    return dict(identity, field=identity["field"] or "whole",
                significant_bits=identity["significant_bits"] or FULL_DEPTH)


def identity_differences(was, now):
    """The keys of CODE_IDENTITY on which two ``code_identity`` records differ; significant bits only where both sets
    held high-depth films (the codes of a set of 8-bit films, ``EIGHT_BIT``, no depth mapping made)."""
    return [key for key in CODE_IDENTITY if was[key] != now[key]
            and not (key == "significant_bits" and EIGHT_BIT in (was[key], now[key]))]


def check_codes_match(codes_meta, head_meta, codes_dir):
    """UserError if the codes come from another model, layer, shape, precision, field or depth mapping than the head
    was trained on (a head.json from before fields existed was trained on whole images)."""
    expected, given = code_identity(head_meta["backbone"]), code_identity(codes_meta)
    differ = [f"{key} {given[key]!r} (head trained on {expected[key]!r})"
              for key in identity_differences(expected, given)]
    if differ:
        made = head_meta["backbone"]
        options = {"bf16": " --bf16", "int8": " --int8"}.get(expected["precision"], "")
        if expected["field"] != "whole":
            options += f" --field {expected['field']} --lung-box {','.join(map(str, expected['lung_box']))}"
        if expected["significant_bits"] != given["significant_bits"]:
            options += f" --significant-bits {expected['significant_bits']}"
        raise UserError(f"codes in {codes_dir} were not made like the head's training codes: {'; '.join(differ)}; "
                        f"extract them with train.py using --model {made.get('model')} --layer {made.get('layer')}"
                        f"{options}")


def check_codes_depth(codes_meta, bits, codes_dir):
    """UserError unless the codes in ``codes_dir`` mapped their high-depth films from ``bits`` significant bits (or
    were of 8-bit films, which no mapping touched): codes are made by train.py, which alone maps films."""
    recorded = codes_meta.get("significant_bits") or FULL_DEPTH
    if recorded not in (bits, EIGHT_BIT):
        raise UserError(f"the codes in {codes_dir} mapped their high-depth films from {recorded} significant bits, "
                        f"not {bits}: make them again with train.py --significant-bits {bits} (test_model.py reads "
                        f"codes; train.py maps the films)")


def data_digest(names, labels):
    """sha256 of the training images' names, classes and groups: a resumed run must train on the same."""
    rows = [[n, labels.labels[n]] + ([labels.group_of(n)] if labels.groups else []) for n in names]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def new_meta(estimator, codes_meta, code_shape, *, train_imgs, train_codes, train_labels, data_sha256,
             validation_images, trained_on=None, split_sha256=None, provenance=None, class_counts=None,
             group_unit=None):
    """head.json of a head fitted by ``estimator`` (its layout, operating point and validation split fixed; no epoch
    yet) on the codes ``codes_meta`` describes, of the images and labels named."""
    settings, classes = estimator.settings_, estimator.classes_
    return {
        "format": FORMAT,
        "classes": list(classes),
        "code_shape": list(code_shape),
        "head": head_record(settings),
        "backbone": dict(codes_meta, **code_identity(codes_meta)),  # what made the codes
        "output": "logits; their softmax gives the head's own class probabilities in 'classes' order, before the "
                  "recalibration 'calibration' describes",
        "positive_class": settings.positive,
        "training": dict(asdict(settings), layout_requested=estimator.settings.layout, train_imgs=train_imgs,
                         train_codes=train_codes, train_labels=train_labels,
                         n_images=len(estimator.train_positions_), data_sha256=data_sha256,
                         # what the head learned from, by content: a test set holding any of these is refused
                         images_sha256=trained_on, split_sha256=split_sha256,
                         class_counts=class_counts, group_unit=group_unit,  # for the report page
                         class_weights=dict(zip(classes, estimator.class_weights_.tolist())),
                         optimizer="sgd (no momentum, no weight decay)", loss="softmax cross-entropy", init="xavier"),
        "selection": dict(estimator.selection_, by=SELECTION_RULE) if (estimator.selection_ or {}).get("candidates")
        else estimator.selection_,
        "operating_point": estimator.operating_point_,
        "calibration": estimator.calibration_.record_ if estimator.calibration_ else
        {"method": "none", "why": estimator.calibration_note_},
        "input_check": dict(estimator.input_check_.record_, file=INPUT_CHECK_FILE),
        "validation": {"images": list(validation_images), "best_epoch_by": BEST_EPOCH_BY,
                       "threshold_by": "the balanced point (sensitivity = specificity) of the validation images"},
        "best_epoch": None,
        "history": [],
        "provenance": provenance,
    }


def best_epoch(history):
    """The finished epoch with the highest validation ROC-AUC, of equals the one with the lowest validation loss;
    None without validation. (The validation loss alone is a poor guide here: on small sets it rises from epoch 2 or 3
    on as the head grows confident, while the ranking, which the AUC measures, still improves.)"""
    scored = [entry for entry in history if entry.get("val_loss") is not None]
    if not scored:
        return None
    return max(scored, key=lambda entry: (entry["val_roc_auc"] if entry["val_roc_auc"] is not None else -1.0,
                                          -entry["val_loss"]))["epoch"]


def finished_epochs(meta):
    return [entry["epoch"] for entry in meta["history"]]


def positive_index(meta):
    """The positive class's index of a two-class head (heads from before positive_class: the second), else None."""
    classes = meta["classes"]
    if len(classes) != 2:
        return None
    return classes.index(meta["positive_class"]) if meta.get("positive_class") in classes else 1


def recalibration(meta):
    """The head's Recalibration (``models.calibration``), or None where its probabilities are its own."""
    return Recalibration.from_record(meta.get("calibration"), positive_index(meta))


def threshold_words(meta, epoch, source):
    """Where the threshold of the head at ``epoch`` comes from, in words (``source``: the key
    ``models.classifier.decision_threshold`` gives)."""
    if source == "operating_point":
        point = meta["operating_point"]
        counts = ", ".join(f"{count} {name}" for name, count in point["images"].items())
        raw = point.get("threshold_uncalibrated")
        own = "" if raw is None else f"; {raw:.4f} on the head's own probabilities, before their recalibration"
        return f"{point['source']}, {counts}; {point['why']}{own}"
    return {"argmax": "argmax (more than two classes)",
            "validation": f"the balanced point of the validation images at epoch {epoch}",
            "default": "the default: the head was trained without inner cross-validation or validation images"}[source]


def load_head(models_dir, epoch="last", context=None):
    """The head trained into ``models_dir`` as a fitted ``HeadClassifier``: ``predict_proba`` (recalibrated as
    trained), ``predict`` at its threshold, ``input_check_``, ``gradient_net()``; plus ``meta_`` (head.json),
    ``epoch_`` and ``epoch_choice_`` (how --epoch picked it) and ``threshold_words_``. The one way
    test_model.py, models.predict, models.export and the heatmaps load a head. UserError for a folder without a
    trained head or without that epoch's checkpoint."""
    folder = HeadFolder(models_dir)
    meta = folder.read_meta()
    epoch, choice = folder.resolve_epoch(meta, epoch)
    estimator = HeadClassifier(TrainSettings.from_record(meta["training"]), context=context)
    estimator.meta_, estimator.epoch_, estimator.epoch_choice_ = meta, epoch, choice
    estimator.classes_, estimator.positive_ = list(meta["classes"]), positive_index(meta)
    estimator.settings_ = estimator.settings
    estimator.head_record_ = meta.get("head", {})  # heads from before layouts existed record none
    estimator.layout_ = estimator.head_record_.get("layout")
    estimator.code_shape_ = tuple(meta["code_shape"])
    estimator.selection_, estimator.operating_point_ = meta.get("selection"), meta.get("operating_point")
    estimator.calibration_ = recalibration(meta)
    estimator.calibration_note_ = (meta.get("calibration") or {}).get("why")
    estimator.input_check_ = folder.input_check(meta)
    estimator.history_ = [entry for entry in meta["history"] if entry["epoch"] <= epoch]
    entry = next(e for e in meta["history"] if e["epoch"] == epoch)
    estimator.threshold_, estimator.threshold_source_ = decision_threshold(
        estimator.positive_, estimator.operating_point_, entry.get("threshold"))
    estimator.threshold_words_ = threshold_words(meta, epoch, estimator.threshold_source_)
    estimator.net_ = folder.load_predictor(epoch, context)
    estimator.params_path_ = folder.file(params_file(epoch))
    return estimator


def resume_differences(meta, expected, keys=RESUME_KEYS):
    """How ``expected`` (the head.json a run now would start, or as much of it as is known) differs from ``meta``
    (the folder's): classes, codes, the settings in ``keys``, the training data; [] where it continues it."""
    differ = [f"classes: now {expected['classes']}, checkpoints {meta['classes']}"] \
        if meta["classes"] != expected["classes"] else []
    was_codes, now_codes = code_identity(meta["backbone"]), code_identity(expected["backbone"])
    differ += [f"codes' {key}: now {now_codes[key]!r}, checkpoints {was_codes[key]!r}"
               for key in identity_differences(was_codes, now_codes)]
    # a head.json from before a setting existed was trained as the original recipe does
    was, now = dict(asdict(TrainSettings(**RECIPES["xvision"])), **meta["training"]), expected["training"]
    return differ + [f"{key}: now {now[key]!r}, checkpoints {was.get(key)!r}"
                     for key in keys if was.get(key) != now[key]]


class HeadFolder:
    """The models folder at ``path``: head.json, the symbol and the kept epochs' params."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def file(self, name):
        return os.path.join(self.path, name)

    def has_checkpoints(self):
        return os.path.isdir(self.path) and any(
            name == META_FILE or PARAMS_PATTERN.match(name) for name in os.listdir(self.path))

    def has_meta(self):
        return os.path.exists(self.file(META_FILE))

    def read_meta(self):
        """The folder's head.json; UserError if the folder holds no trained head."""
        path = self.file(META_FILE)
        if not os.path.exists(path):
            raise UserError(f"no trained head in {self.path} ({META_FILE} missing): train one with train_model.py")
        meta = read_json(path, "head metadata")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise UserError(f"{path} is not a '{FORMAT}' file: point MODELS_DIR at a folder made by train_model.py")
        history = meta.get("history")
        damaged = [key for key, kind in (("classes", list), ("code_shape", list), ("backbone", dict),
                                         ("training", dict), ("history", list)) if not isinstance(meta.get(key), kind)]
        if not damaged and not all(isinstance(e, dict) and isinstance(e.get("epoch"), int) for e in history):
            damaged.append("history entries")
        if damaged:
            raise UserError(f"{path} is damaged ({', '.join(damaged)} missing or malformed): train again into a new "
                            f"MODELS_DIR")
        return meta

    def write_meta(self, meta):
        write_json(self.file(META_FILE), meta)

    def save_epoch(self, net, epoch):
        """Write the symbol and this epoch's params (each atomically); the caller then records the epoch in
        head.json. Returns the params file's name."""
        import mxnet as mx

        symbol = net(mx.sym.var("data"))
        aux_names = set(symbol.list_auxiliary_states())
        weights = {name: param.data().as_in_context(mx.cpu()) for name, param in net.collect_params().items()}
        checkpoint.save_checkpoint(self.file(CHECKPOINT_PREFIX), symbol,
                                   {k: v for k, v in weights.items() if k not in aux_names},
                                   {k: v for k, v in weights.items() if k in aux_names}, epoch=epoch)
        return params_file(epoch)

    def save(self, estimator, codes_meta):
        """Write a fitted ``estimator`` (``models.classifier.HeadClassifier``) as a models folder holding its last
        epoch, for codes ``codes_meta`` describes (what train_model.py writes epoch by epoch): ``load_head`` gives
        it back."""
        meta = new_meta(estimator, codes_meta, estimator.code_shape_, train_imgs=None, train_codes=None,
                        train_labels=None, data_sha256=None,
                        validation_images=[str(i) for i in estimator.validation_positions_])
        os.makedirs(self.path, exist_ok=True)
        self.save_input_check(estimator.input_check_)
        last = estimator.history_[-1]
        meta["history"] = [dict(entry, params=None) for entry in estimator.history_[:-1]] + \
            [dict(last, params=self.save_epoch(estimator.net_, last["epoch"]))]
        meta["best_epoch"] = best_epoch(meta["history"])
        self.write_meta(meta)
        return meta

    def save_input_check(self, check):
        with atomic_path(self.file(INPUT_CHECK_FILE)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **check.arrays())

    def input_check(self, meta):
        """The head's InputCheck, or None for a head trained before input checks existed; UserError for a damaged
        one."""
        if not meta.get("input_check"):
            return None
        path = self.file(meta["input_check"].get("file", INPUT_CHECK_FILE))
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = {key: saved[key] for key in INPUT_CHECK_KEYS}
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
            raise UserError(f"cannot read the input check {path} ({err}): train again into a new MODELS_DIR") from None
        size = arrays["mean"].shape
        if len(size) != 1 or arrays["precision"].shape != size * 2 or arrays["threshold"].shape != ():
            raise UserError(f"{path} is damaged (its arrays do not fit together): train again into a new MODELS_DIR")
        return InputCheck.from_arrays(arrays, meta["input_check"])

    def _params_path(self, epoch):
        path = self.file(params_file(epoch))
        if not os.path.exists(path):
            raise UserError(f"checkpoint file missing: {path} (head.json lists epoch {epoch}); "
                            f"train again into an empty folder or pick another --epoch")
        return path

    def epoch_weights(self, epoch):
        """Every weight of epoch ``epoch`` by parameter name (NDArrays); UserError for a missing or damaged file."""
        args, aux = checkpoint.load_params(self._params_path(epoch),
                                           fix="pick another --epoch, or train again into a new MODELS_DIR")
        return dict(args, **aux)

    def load_weights(self, net, epoch):
        """Put epoch ``epoch``'s weights into ``net`` (built for this folder's head.json)."""
        saved, params = self.epoch_weights(epoch), net.collect_params()
        if set(saved) != set(params.keys()):
            raise UserError(f"{params_file(epoch)} in {self.path} does not fit the head described by {META_FILE}")
        for name, param in params.items():
            param.set_data(saved[name])

    def load_predictor(self, epoch, context=None):
        """The exported network of epoch ``epoch`` (the way a user without this code loads it); outputs logits."""
        import mxnet as mx

        symbol_path = self.file(SYMBOL_FILE)
        if not os.path.exists(symbol_path):
            raise UserError(f"checkpoint file missing: {symbol_path}; train again with train_model.py")
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Cannot decide type")  # the input's dtype is only known at the call
                return mx.gluon.SymbolBlock.imports(symbol_path, ["data"], self._params_path(epoch),
                                                    ctx=context or mx.cpu())
        except mx.base.MXNetError as err:
            raise UserError(f"cannot load epoch {epoch} from {self.path}: {mxnet_reason(err)} (a damaged or cut-off "
                            f"checkpoint); pick another --epoch or train again") from None

    def resolve_epoch(self, meta, epoch):
        """(epoch number, how it was chosen) for --epoch best|last|N; UserError for one without a kept checkpoint."""
        history = meta["history"]
        if not history:
            raise UserError(f"{self.path} holds no finished epoch: train with train_model.py first")
        kept = [entry["epoch"] for entry in history if entry.get("params", True)]
        if epoch == "best":
            if meta.get("best_epoch") is None:
                raise UserError(f"the head in {self.path} was trained without a validation hold-out (--val-fraction), "
                                f"so it has no best epoch; use --epoch last or a number ({_kept_text(meta)})")
            return meta["best_epoch"], f"best ({meta['validation']['best_epoch_by']})"
        if epoch in (None, "last"):
            return history[-1]["epoch"], "last"
        try:
            number = int(epoch)
        except ValueError:
            raise UserError(f"--epoch must be {EPOCH_CHOICES}, not {epoch!r}") from None
        if number not in kept:
            finished = number in [entry["epoch"] for entry in history]
            why = "its checkpoint was removed (--keep)" if finished else "no such epoch was trained"
            raise UserError(f"no checkpoint for epoch {number} in {self.path}: {why}; {_kept_text(meta)}")
        return number, f"epoch {number}"

    def set_aside(self):
        """Move everything in the folder (an older head, its reports) into a new sub-folder ``replaced-<UTC time>``
        (itself a models folder that still loads) and return its path: the folder is then empty for a new head."""
        import datetime
        import shutil

        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = self.file(f"replaced-{stamp}")
        names = [name for name in os.listdir(self.path) if not name.startswith("replaced-")]
        os.makedirs(aside)
        for name in names:
            shutil.move(self.file(name), os.path.join(aside, name))
        return aside

    def check_resumable(self, meta, expected):
        """UserError unless ``expected`` (the head.json a run now would start) continues ``meta`` (the folder's):
        the same classes, codes, settings and training data."""
        differ = resume_differences(meta, expected)
        if differ:
            raise UserError(f"cannot --resume in {self.path}: it was trained with other settings or data "
                            f"({'; '.join(differ)}); resume with the original settings or train into a new "
                            f"MODELS_DIR")

    def prune(self, meta, keep):
        """Delete the params of epochs that are neither among the ``keep`` newest nor the best (head.json says
        which)."""
        finished = [entry["epoch"] for entry in meta["history"] if entry.get("params")]
        kept = set(finished[-keep:]) | {meta.get("best_epoch")}
        removed = []
        for entry in meta["history"]:
            if entry.get("params") and entry["epoch"] not in kept:
                removed.append(self.file(entry["params"]))
                entry["params"] = None
        if removed:
            self.write_meta(meta)  # head.json stops naming them before they go
            for path in removed:
                if os.path.exists(path):
                    os.remove(path)


def _kept_text(meta):
    kept = [entry["epoch"] for entry in meta["history"] if entry.get("params", True)]
    best = f", best {meta['best_epoch']}" if meta.get("best_epoch") else ""
    return f"kept checkpoints: epochs {', '.join(map(str, kept))}{best} (finished: 1..{meta['history'][-1]['epoch']})"
