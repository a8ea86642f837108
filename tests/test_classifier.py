"""The head estimator (models/classifier.py): HeadClassifier, the one code path that fits a head, gives the recorded
figures of three settings to float32 rounding, recalibration changes probabilities but no decision, and
train_model.py's checkpoints are exactly what it fits on the same arrays; its class weights, streamed standardisation
and SGD step are what their definitions (scikit-learn's balanced weights, numpy, gluon.Trainer) give."""

import json
from dataclasses import replace

import numpy as np
import pytest

import train_model
from helpers import CODE_SHAPE, cli, make_split, read_params
from models import classifier, epochs, head
from models.classifier import RECIPES, HeadClassifier, TrainSettings
from models.codes import CodeStore
from models.headfolder import META_FILE, SELECTION_RULE, params_file
from models.labels import load_labels

CLASSES = ["normal", "nodule"]
# what a head fitted on ``recorded_codes(20, 11)`` and scored on ``recorded_codes(8, 12)`` gave when these figures were
# recorded (commit 6622e35), for three settings: the layout, threshold, candidates' out-of-fold ROC-AUC, per-epoch
# losses and validation thresholds, and p(nodule) of the first 12 test codes (uncalibrated: --calibration none)
RECORDED = {
    "defaults": dict(settings=TrainSettings(epochs=4, batch_size=16, calibration="none"), layout="both", threshold=0.5941905379295349,
                     candidates={"avg": 0.62, "flat": 0.65, "both": 0.7},
                     losses=[0.6448979187011719, 0.7784666442871093, 0.767330551147461, 0.6384419631958008],
                     val_thresholds=[None] * 4,
                     proba=[0.280016, 0.0732712, 0.3296149, 0.2917835, 0.3288442, 0.1612256, 0.1512743, 0.3235586,
                            0.3342244, 0.1567463, 0.3351857, 0.243832]),
    "validation": dict(settings=TrainSettings(epochs=3, batch_size=16, layout="flat", folds=0, val_fraction=0.3,
                                              seed=2, calibration="none"),
                       layout="flat", threshold=0.558469146490097, candidates={},
                       losses=[0.879215352675494, 0.8886817483340993, 0.8519052056705251],
                       val_thresholds=[0.7827440202236176, 0.4593232274055481, 0.558469146490097],
                       proba=[0.642362, 0.551258, 0.3807312, 0.5443382, 0.3742696, 0.3094512, 0.5080128, 0.2535349,
                              0.7770323, 0.7226429, 0.4287718, 0.3900745]),
    "xvision": dict(settings=TrainSettings(epochs=3, batch_size=16, **RECIPES["xvision"]), layout="flat",
                    threshold=0.5, candidates={},  # None then: test_model.py decided at 0.5
                    losses=[0.7885435485839843, 0.6081975173950195, 0.3218091583251953], val_thresholds=[None] * 3,
                    proba=[0.4003783, 0.2404251, 0.4250003, 0.6320203, 0.7121035, 0.1404809, 0.1435577, 0.7037496,
                           0.854292, 0.2855598, 0.5526916, 0.4424543]),
}


def recorded_codes(n, seed):
    """3:2 normal:nodule gamma codes; nodules carry a bump in one cell of channel 0 and a shift of channel 1;
    patients of two images."""
    rng = np.random.default_rng(seed)
    targets = np.repeat([0, 1], [n + n // 2, n])
    codes = rng.gamma(2.0, 1.0, size=(len(targets), 16, 4, 4))
    codes[targets == 1, 0, 1, 2] += 3.0
    codes[targets == 1, 1] += 0.4
    return codes.astype(np.float32), targets, [f"p{i // 2}" for i in range(len(targets))]


@pytest.mark.parametrize("name", list(RECORDED))
def test_the_estimator_gives_the_recorded_fit(name):
    want = RECORDED[name]
    codes, targets, groups = recorded_codes(20, 11)
    fitted = HeadClassifier(want["settings"]).fit(codes, targets, groups, classes=CLASSES)
    assert fitted.layout_ == want["layout"]
    candidates = (fitted.selection_ or {}).get("candidates", {})
    assert {k: v["roc_auc"] for k, v in candidates.items()} == pytest.approx(want["candidates"], abs=1e-9)
    # the same numbers to float32 rounding (the recording ran on another CPU than this test may)
    assert fitted.threshold_ == pytest.approx(want["threshold"], abs=1e-5)
    assert [e["loss"] for e in fitted.history_] == pytest.approx(want["losses"], abs=1e-5)
    assert [e.get("threshold") for e in fitted.history_] == pytest.approx(want["val_thresholds"], abs=1e-5)
    proba = fitted.predict_proba(recorded_codes(8, 12)[0])[:12, 1]
    np.testing.assert_allclose(proba, want["proba"], atol=1e-5)


def test_recalibration_changes_the_probabilities_and_no_decision():
    codes, targets, groups = recorded_codes(20, 11)
    test_codes = recorded_codes(8, 12)[0]
    own = HeadClassifier(RECORDED["defaults"]["settings"]).fit(codes, targets, groups, classes=CLASSES)
    recalibrated = HeadClassifier(replace(RECORDED["defaults"]["settings"], calibration="auto")).fit(
        codes, targets, groups, classes=CLASSES)
    assert recalibrated.calibration_.method_ == "logistic" and own.calibration_ is None
    np.testing.assert_array_equal(recalibrated.predict_proba(test_codes, calibrated=False),
                                  own.predict_proba(test_codes))
    assert not np.allclose(recalibrated.predict_proba(test_codes), own.predict_proba(test_codes))
    assert recalibrated.operating_point_["threshold_uncalibrated"] == own.threshold_
    np.testing.assert_array_equal(recalibrated.predict(test_codes), own.predict(test_codes))


def test_train_model_writes_exactly_what_the_estimator_fits(tmp_path, capsys):
    images, codes_dir, labels_path = make_split(tmp_path / "d", CLASSES, 16, seed=3)
    argv = [images, codes_dir, labels_path, tmp_path / "m", "--epochs", 3, "--batch-size", 8, "--val-fraction", 0.25,
            "--keep", 5]
    assert cli(train_model.main, argv, capsys)[0] == 0
    meta = json.loads((tmp_path / "m" / META_FILE).read_text())

    labels, store = load_labels(labels_path), CodeStore(codes_dir)
    names = store.names
    settings = TrainSettings(epochs=3, batch_size=8, val_fraction=0.25)
    fitted = HeadClassifier(settings).fit(store.read(names), labels.indices(names),
                                          [labels.group_of(n) for n in names], classes=labels.classes)
    written, chosen = dict(meta["selection"]), dict(fitted.selection_)
    assert written.pop("by") == SELECTION_RULE  # head.json's wording, the folder's
    written.pop("seconds"), chosen.pop("seconds")
    assert written == json.loads(json.dumps(chosen))
    assert meta["operating_point"] == json.loads(json.dumps(fitted.operating_point_))
    assert meta["head"]["layout"] == fitted.layout_ and meta["validation"]["images"] == \
        [names[i] for i in fitted.validation_positions_]
    for entry, mine in zip(meta["history"], fitted.history_):
        assert {k: v for k, v in entry.items() if k not in ("seconds", "params")} == \
            {k: v for k, v in mine.items() if k != "seconds"}
    saved = read_params(tmp_path / "m" / params_file(3))
    for key, param in fitted.net_.collect_params().items():
        kind = "aux" if "running" in key else "arg"
        np.testing.assert_array_equal(saved[f"{kind}:{key}"], param.data().asnumpy(), err_msg=key)


def test_class_weights_are_scikit_learns_balanced_and_equal_for_equal_classes():
    np.testing.assert_allclose(classifier.class_weights([0, 0, 0, 1], 2, "balanced"), [4 / 6, 4 / 2])
    np.testing.assert_allclose(classifier.class_weights([0, 1, 2, 2], 3, "balanced"), [4 / 3, 4 / 3, 4 / 6])
    assert classifier.class_weights([0, 0, 1, 1], 2, "balanced").tolist() == [1.0, 1.0]
    assert classifier.class_weights([0, 0, 0, 1], 2, "none").tolist() == [1.0, 1.0]


def test_standardisation_is_streamed_exactly_and_leaves_constant_features_alone(monkeypatch):
    rng = np.random.default_rng(0)
    codes = (rng.gamma(2.0, 3.0, size=(50, 4, 2, 2)) + 100).astype(np.float32)
    codes[:, 3] = 7.0  # a channel that never varies
    monkeypatch.setattr(epochs, "STATS_BATCH", 7)  # several partial batches
    for pool in ("avg", "none"):
        features = head.pool_codes(codes, pool).astype(np.float64)
        mean, scale = epochs.feature_scaling(codes, pool)
        np.testing.assert_allclose(mean, features.mean(axis=0), rtol=1e-9)
        varying = features.std(axis=0) > 0
        np.testing.assert_allclose(scale[varying], 1 / features.std(axis=0)[varying], rtol=1e-6)
        assert np.all(scale[~varying] == 1.0) and (~varying).sum() == (1 if pool == "avg" else 4)



def test_sgd_step_is_what_gluon_trainer_does():
    import mxnet as mx
    from mxnet import autograd, gluon

    from models.epochs import sgd_step

    data, truth = mx.nd.array(np.random.default_rng(0).normal(size=(6, 8, 2, 2))), mx.nd.array([0, 1, 0, 1, 1, 0])
    nets = []
    for _ in range(2):
        net = head.build_head(2, CODE_SHAPE)
        mx.random.seed(3)
        net.initialize(mx.init.Xavier())
        nets.append(net)
    trainer = gluon.Trainer(nets[0].collect_params(), mx.optimizer.SGD(learning_rate=0.05, momentum=0.0, wd=0.0))
    trainable = [p for p in nets[1].collect_params().values() if p.grad_req != "null"]
    initial = trainable[0].data().asnumpy().copy()
    for _ in range(3):
        for net in nets:
            with autograd.record():
                loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(data), truth)
            loss.backward()
        trainer.step(len(data))
        sgd_step(trainable, 0.05, len(data))
    for (name, a), b in zip(nets[0].collect_params().items(), nets[1].collect_params().values()):
        np.testing.assert_array_equal(a.data().asnumpy(), b.data().asnumpy(), err_msg=name)
    assert not np.array_equal(initial, trainable[0].data().asnumpy())  # the steps did move the weights

