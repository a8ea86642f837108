"""The head as an estimator: ``HeadClassifier(settings).fit(codes, targets, groups, classes=...)``, then
``predict_proba(codes)``. The one place a head is fitted: train_model.py (through ``models.training``), make accuracy,
make audit and the tests all call it.

``fit`` does, on arrays, everything the defaults need on small, imbalanced sets of real radiographs: the layout
(codes averaged over their grid and standardised, the raw flattened grid, or a head on each) chosen by an inner
cross-validation on the training images (``models.selection``), whose out-of-fold probabilities also give the
two-class operating threshold and a recalibration of the probabilities (``models.calibration``); a validation
hold-out in whole groups if asked; class-balanced loss weights; a model of the training codes that flags unlike images
(``models.inputcheck``); the epochs (``models.epochs``), with a callback after each. What it learned stays on the
object as fitted attributes (``layout_``, ``threshold_``, ``selection_``, ``calibration_``, ``input_check_``, ...).
``RECIPES["xvision"]`` is the original Xvision recipe exactly: plain loss, the flattened code, no standardisation, no
dropout, every training image trained on, no recalibration, threshold 0.5.

Training is deterministic: the initial weights come from the seed, epoch e's shuffle and dropout masks from
(seed, e) alone, and plain SGD without momentum has no optimizer state, so the weights after epoch e and the epoch
number are the whole training state (what ``warm_start`` continues from).
"""

from dataclasses import dataclass, replace

import numpy as np

from models import epochs, head, metrics, selection
from models.calibration import METHODS as CALIBRATIONS
from models.calibration import Recalibration
from models.errors import UserError
from models.inputcheck import InputCheck
from models.progress import progress_bar
from models.splits import grouped_holdout

CLASS_WEIGHTS = ("balanced", "none")
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
    positive: str = None  # two classes: the class the ROC and the threshold are about (None: chosen by name)
    calibration: str = "auto"  # auto: probabilities recalibrated on the inner cross-validation's out-of-fold ones
    # (two classes: logistic, more: temperature); none: the head's own

    def for_layout(self, layout):
        """These settings with ``layout`` fixed, and its own learning rate unless one was given (a layout of
        branches keeps None: each branch trains at its own)."""
        return replace(self, layout=layout, lr=LAYOUT_LR.get(layout) if self.lr is None else self.lr)

    def branch_lr(self, branch):
        """The learning rate of the single-head layout ``branch`` inside these settings' layout."""
        return LAYOUT_LR[branch] if self.lr is None else self.lr

    def check(self):
        """ValueError naming the parameters that are out of range (the command line maps them onto its flags)."""
        lr = 0.01 if self.lr is None else self.lr
        if self.epochs < 1 or self.batch_size < 2 or not 0 < lr < float("inf"):
            raise ValueError(f"need epochs >= 1, batch_size >= 2 (BatchNorm needs 2 samples) and a finite lr > 0; "
                             f"got {self.epochs}, {self.batch_size}, {self.lr}")
        if self.seed < 0:
            raise ValueError(f"seed must be 0 or more, got {self.seed}")
        if not 0 <= self.val_fraction < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"val_fraction and dropout must be at least 0 and below 1, got {self.val_fraction} "
                             f"and {self.dropout}")
        if self.class_weight not in CLASS_WEIGHTS or self.layout not in LAYOUT_CHOICES or \
                self.calibration not in CALIBRATIONS:
            raise ValueError(f"class_weight must be one of {CLASS_WEIGHTS}, layout one of {LAYOUT_CHOICES} and "
                             f"calibration one of {CALIBRATIONS}")
        if self.folds == 1 or self.folds < 0 or (self.layout == "auto" and self.folds < 2):
            raise ValueError(f"folds must be 0 (no inner cross-validation) or at least 2, and layout auto needs "
                             f"at least 2 (it chooses by cross-validation); got folds {self.folds}")

    @classmethod
    def from_record(cls, record):
        """The settings a head.json's "training" records (keys it does not know left out: they are the files')."""
        names = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in record.items() if key in names})


# Settings that reproduce the original Xvision head training exactly (the 512x512 head, SGD lr 0.01, batch 32,
# 20 epochs are the defaults anyway).
RECIPES = {"xvision": dict(class_weight="none", val_fraction=0.0, layout="flat", folds=0, lr=0.01, dropout=0.0,
                           calibration="none")}


def decision_threshold(positive, operating_point, epoch_threshold):
    """The one decision rule of a head: (threshold, what it comes from). Two classes: the inner cross-validation's
    operating point, else the epoch's validation threshold, else 0.5 ("operating_point", "validation", "default");
    more than two: no threshold, the largest probability ("argmax")."""
    if positive is None:
        return None, "argmax"
    if operating_point:
        return operating_point["threshold"], "operating_point"
    if epoch_threshold is not None:
        return epoch_threshold, "validation"
    return 0.5, "default"


def class_weights(targets, n_classes, mode):
    """Loss weight of each class: scikit-learn's 'balanced' n / (n_classes * n_class), or all 1."""
    if mode == "none":
        return np.ones(n_classes)
    counts = np.bincount(np.asarray(targets, dtype=int), minlength=n_classes)
    return np.where(counts > 0, len(targets) / (n_classes * np.maximum(counts, 1)), 0.0)


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


def candidates_of(layout):
    """The layouts an inner cross-validation with ``--layout`` scores: every one for auto (all from the fits of the
    head of branches, whose branches are the single-head layouts), else the one given and, for a layout of branches,
    its branches too (free: they are trained anyway)."""
    return head.LAYOUT_NAMES if layout == "auto" else tuple(dict.fromkeys(head.branches_of(layout) + (layout,)))


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


def _rows(codes, positions):
    """The codes at ``positions``: an array for an array, still read on demand for ``CodeStore.rows_of``."""
    return codes.subset(positions) if hasattr(codes, "subset") else codes[np.asarray(positions, dtype=int)]


class HeadClassifier:
    """The classifier head on feature codes, fitted as ``train_model.py`` fits it.

    Parameters
    ----------
    settings : TrainSettings
        Every choice of the fit (layout, folds, epochs, ...); checked by ``fit`` (ValueError naming the parameter).
    context : mxnet.Context, optional
        Where the head trains and predicts (default: the CPU).
    progress : bool
        Progress bars on stderr for the inner cross-validation and each epoch.
    input_check : bool
        Fit ``input_check_`` too (the heads of the inner folds, and benchmarks that do not use it, skip it).

    Fitted attributes
    -----------------
    classes_ : list of str, the class names in index order.
    positive_ : int or None, the positive class of a two-class problem.
    settings_ : TrainSettings, the settings with the layout fixed and the positive class resolved.
    layout_ : str, the layout trained (``settings_.layout``).
    cv_results_ : {layout: {"proba", "roc_auc", "ci95", "threshold", "calibration"}}, the inner
        cross-validation's out-of-fold probabilities of each candidate and what they give (its threshold on them, its
        recalibration or None); empty without one.
    cv_folds_ : list of arrays, the positions each inner fold held out.
    selection_ : dict or None, head.json's "selection": the candidates' scores, the winner and why.
    operating_point_ : dict or None, head.json's "operating_point": the two-class threshold from the out-of-fold
        probabilities of the winner, and where it came from.
    train_positions_, validation_positions_ : lists of int, the images trained on and held out for validation.
    class_weights_ : array, the loss weight of each class.
    input_check_ : ``models.inputcheck.InputCheck`` fitted on the training codes: how unlike them a code is (None with
        ``input_check=False``).
    history_ : list of dict, each epoch's numbers (loss, accuracy, validation scores, seconds).
    calibration_ : ``models.calibration.Recalibration`` or None, fitted on the winner's out-of-fold probabilities and
        applied by ``predict_proba``; ``calibration_note_`` says why there is none.
    threshold_ : float or None, the two-class decision threshold: the operating point's (on recalibrated
        probabilities where there is a recalibration), else the last epoch's validation threshold, else 0.5 (None for
        more than two classes); ``threshold_source_`` says which (``decision_threshold``).
    code_shape_ : tuple, the shape of one code; ``head_record_``: head.json's "head" (the layout, how codes enter it).
    net_ : the trained MXNet network (outputs class logits).

    A head trained into a models folder comes back as a fitted estimator: ``models.headfolder.load_head``.
    """

    def __init__(self, settings=TrainSettings(), *, context=None, progress=False, input_check=True):
        self.settings, self.context, self.progress, self.input_check = settings, context, progress, input_check

    def fit(self, codes, targets, groups=None, *, classes, chosen=None, warm_start=None, on_selected=None,
            on_epoch=None):
        """Choose the layout and threshold, hold out the validation groups, and train.

        Parameters
        ----------
        codes : array (n, *code shape), or anything indexed by an array of positions like one (``CodeStore.rows_of``,
            read on demand: the epochs then never hold every code in memory).
        targets : class indices (n,).
        groups : group of each image (patient, report); None: every image its own. Folds and the validation
            hold-out keep groups whole.
        classes : the class names, in index order.
        chosen : head.json's "selection", "operating_point" and "calibration" of an earlier fit on the same data and
            settings (a resumed run), kept instead of running the inner cross-validation again.
        warm_start : (epoch, load) to continue after ``epoch``: ``load(net)`` puts that epoch's weights into the
            network built for the layout, in place of the seeded initialisation.
        on_selected : called with the estimator once its layout, operating point, validation split, class weights
            and input check are fixed, before any weight is initialised (train_model.py records them then).
        on_epoch : called with each finished epoch's numbers; ``net_`` then holds that epoch's weights.

        Raises ValueError for settings out of range; UserError for a validation split that leaves a class without
        images, an unknown positive class, and a loss that diverges.
        """
        import mxnet as mx

        self.settings.check()
        context = self.context or mx.cpu()
        targets = np.asarray(targets, dtype=int)
        groups = [str(i) for i in range(len(targets))] if groups is None else list(groups)
        self.classes_ = list(classes)
        self.positive_ = metrics.positive_class(self.classes_, self.settings.positive)
        settings = replace(self.settings,
                           positive=None if self.positive_ is None else self.classes_[self.positive_])
        if chosen is not None:
            self.selection_, self.operating_point_, self.cv_results_, self.cv_folds_ = \
                chosen["selection"], chosen["operating_point"], {}, []
            self.calibration_ = Recalibration.from_record(chosen.get("calibration"), self.positive_)
            self.calibration_note_ = (chosen.get("calibration") or {}).get("why")
        else:
            self._select(codes, targets, groups, settings)
        self.settings_ = settings.for_layout(self.selection_["winner"] if self.selection_ else settings.layout)
        self.layout_, self.code_shape_ = self.settings_.layout, tuple(codes.shape[1:])
        self.head_record_ = head_record(self.settings_)
        self.train_positions_, self.validation_positions_ = validation_split(targets, groups, self.classes_,
                                                                             self.settings_)
        self.class_weights_ = class_weights(targets[self.train_positions_], len(self.classes_),
                                            self.settings_.class_weight)
        self.input_check_ = InputCheck().fit(codes, groups) if self.input_check else None
        if on_selected is not None:
            on_selected(self)

        train_codes = _rows(codes, self.train_positions_)
        validation = None
        if self.validation_positions_:
            validation = (_rows(codes, self.validation_positions_), targets[self.validation_positions_])
        if warm_start is None:
            first_epoch, self.net_ = 1, epochs.initialised_net(self.settings_, len(self.classes_), train_codes, context)
        else:
            done, load = warm_start
            first_epoch, self.net_ = done + 1, head.build_layout(len(self.classes_), codes.shape[1:], self.layout_,
                                                                  dropout=self.settings_.dropout)
            self.net_.initialize(ctx=context)
            load(self.net_)
        self.net_.hybridize(static_alloc=True)
        self.history_ = []

        def finished(entry):
            self.history_.append(entry)
            if on_epoch is not None:
                on_epoch(entry)

        epochs.train_epochs(self.net_, self.settings_, self.class_weights_, self.positive_, train_codes,
                            targets[self.train_positions_], validation, first_epoch, finished, context, self.progress)
        self.threshold_, self.threshold_source_ = self._threshold()
        return self

    def predict_proba(self, codes, layout=None, calibrated=True):
        """Class probabilities (n, classes) in float64, recalibrated (``calibration_``) unless ``calibrated`` is
        False; ``layout``: one branch of a layout of branches instead, always the head's own probabilities (the
        recalibration is the whole head's)."""
        if layout is None or layout == self.layout_:
            proba = head.predict_proba(self.net_, codes, self.context)
            return self.calibration_.apply(proba) if calibrated and self.calibration_ else proba
        names = head.branches_of(self.layout_)
        if layout not in names:
            raise ValueError(f"layout {layout!r} is not a branch of this {self.layout_!r} head")
        return head.predict_proba(head.branches(self.net_)[names.index(layout)], codes, self.context)

    def predict(self, codes):
        """Class indices: two classes decided at ``threshold_``, more by the largest probability."""
        return metrics.decide(self.predict_proba(codes), self.positive_, self.threshold_)

    def gradient_net(self):
        """This head with BatchNorm on its running statistics in both passes too, for input gradients (Grad-CAM:
        ``models.heatmaps``)."""
        meta = {"classes": self.classes_, "code_shape": list(self.code_shape_), "head": self.head_record_}
        return head.gradient_net(meta, self.net_.collect_params(), self.context)

    def _select(self, codes, targets, groups, settings):
        """The inner cross-validation: ``cv_results_``, ``cv_folds_``, ``selection_``, ``operating_point_`` and
        ``calibration_``."""
        self.cv_results_, self.cv_folds_, self.selection_, self.operating_point_ = {}, [], None, None
        self.calibration_, self.calibration_note_ = None, "calibration 'none', as set"
        if settings.folds == 0:
            if settings.calibration != "none":
                self.calibration_note_ = "no inner cross-validation (folds 0): no out-of-fold probabilities to fit on"
            return
        self.cv_folds_, note = selection.inner_folds(targets, groups, settings.folds, settings.seed)
        if not self.cv_folds_:
            winner = head.LAYOUT_NAMES[-1] if settings.layout == "auto" else settings.layout
            why = f"{winner}, the heads of every layout averaged" if settings.layout == "auto" else \
                f"layout {winner}, as set"
            self.selection_ = {"candidates": {}, "winner": winner, "why": f"{why}; {note}", "folds": 0}
            if settings.calibration != "none":
                self.calibration_note_ = f"no inner cross-validation ({note}): no out-of-fold probabilities to fit on"
            return
        names = candidates_of(settings.layout)
        fold_settings = replace(settings.for_layout(names[-1]), folds=0, val_fraction=0.0)  # the largest: its
        # branches are the others
        data = codes if isinstance(codes, np.ndarray) else codes[np.arange(len(codes))]  # read once for every fold
        with progress_bar(total=len(self.cv_folds_), desc="inner cross-validation", unit="fold", leave=False,
                          enabled=self.progress) as bar:
            def fit_fold(fold_codes, fold_targets):
                fitted = HeadClassifier(fold_settings, context=self.context, input_check=False).fit(
                    fold_codes, fold_targets, classes=self.classes_)
                bar.update(1)
                return lambda test_codes: {name: fitted.predict_proba(test_codes, layout=name) for name in names}

            results, seconds = selection.cross_validate(data, targets, self.classes_, self.cv_folds_, names,
                                                        fit_fold)
        positive = self.positive_
        winner, why = selection.choose(results, targets, positive, groups) if settings.layout == "auto" else \
            (settings.layout, f"layout {settings.layout}, as set")
        table = selection.summarise(results, targets, positive, groups)
        for name in table:
            table[name]["lr"] = {branch: settings.branch_lr(branch) for branch in head.branches_of(name)}
        self.selection_ = {"candidates": table, "winner": winner, "why": why, "folds": len(self.cv_folds_),
                           "note": note, "images": len(targets), "seed": settings.seed, "seconds": seconds}
        points = {name: selection.balanced_point(result["proba"], targets, self.classes_, positive)
                  if positive is not None else None for name, result in results.items()}
        recalibrations = {name: Recalibration().fit(result["proba"], targets, positive)
                          if settings.calibration != "none" else None for name, result in results.items()}
        self.cv_results_ = {name: dict(result, roc_auc=table[name]["roc_auc"], ci95=table[name]["ci95"],
                                       threshold=points[name]["threshold"] if points[name] else None,
                                       calibration=recalibrations[name])
                            for name, result in results.items()}
        self.operating_point_, self.calibration_ = points[winner], recalibrations[winner]
        if self.calibration_ is None and settings.calibration != "none":
            self.calibration_note_ = "the out-of-fold probabilities rank the classes no better than chance"
        if self.calibration_ is not None and self.operating_point_ is not None:  # the same decisions, recalibrated
            raw = self.operating_point_["threshold"]
            self.operating_point_ = dict(self.operating_point_, threshold=self.calibration_.threshold(raw),
                                         threshold_uncalibrated=raw)

    def _threshold(self):
        last = self.history_[-1].get("threshold") if self.history_ else None
        return decision_threshold(self.positive_, self.operating_point_, last)
