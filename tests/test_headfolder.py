"""A models folder gives back the fitted estimator: fit on arrays, save, load, and the loaded head predicts what the
fitted one does (recalibrated probabilities, decisions at its threshold, the input check), for every layout."""

import numpy as np
import pytest

from models import head
from models.classifier import HeadClassifier, TrainSettings
from models.headfolder import HeadFolder, load_head

CLASSES = ["normal", "nodule"]
CODES_META = {"model": "unused", "model_sha256": "0" * 64, "layer": "tiny", "shape": [16, 4, 4],
              "precision": "fp32"}


def codes_of(n, seed):
    """Gamma codes of two classes, nodules with a bump in one cell; patients of two images."""
    rng = np.random.default_rng(seed)
    targets = np.repeat([0, 1], [n, n])
    codes = rng.gamma(2.0, 1.0, size=(len(targets), 16, 4, 4)).astype(np.float32)
    codes[targets == 1, 0, 1, 2] += 2.0
    return codes, targets, [f"p{i // 2}" for i in range(len(targets))]


@pytest.mark.parametrize("layout", ("auto",) + head.LAYOUT_NAMES)
def test_a_saved_head_loads_as_the_estimator_it_was(tmp_path, layout):
    codes, targets, groups = codes_of(24, 3)
    new_codes = codes_of(10, 4)[0]
    settings = TrainSettings(epochs=2, batch_size=16, layout=layout, folds=3 if layout == "auto" else 2)
    fitted = HeadClassifier(settings).fit(codes, targets, groups, classes=CLASSES)
    HeadFolder(tmp_path / "models").save(fitted, CODES_META)

    loaded = load_head(str(tmp_path / "models"))

    assert loaded.layout_ == fitted.layout_ and loaded.classes_ == CLASSES and loaded.epoch_ == 2
    assert loaded.threshold_ == fitted.threshold_ and loaded.threshold_source_ == fitted.threshold_source_
    assert (loaded.calibration_ is None) == (fitted.calibration_ is None)
    np.testing.assert_array_equal(loaded.predict_proba(new_codes), fitted.predict_proba(new_codes))
    np.testing.assert_array_equal(loaded.predict_proba(new_codes, calibrated=False),
                                  fitted.predict_proba(new_codes, calibrated=False))
    np.testing.assert_array_equal(loaded.predict(new_codes), fitted.predict(new_codes))
    np.testing.assert_array_equal(loaded.input_check_.distance(new_codes), fitted.input_check_.distance(new_codes))
    assert loaded.input_check_.threshold_ == fitted.input_check_.threshold_


def test_a_loaded_head_gives_the_gradients_of_the_fitted_one(tmp_path):
    codes, targets, groups = codes_of(16, 5)
    fitted = HeadClassifier(TrainSettings(epochs=1, batch_size=16, layout="both", folds=2)).fit(
        codes, targets, groups, classes=CLASSES)
    HeadFolder(tmp_path).save(fitted, CODES_META)
    from models.heatmaps import grad_cam

    predicted = fitted.predict(codes[:6])
    np.testing.assert_array_equal(grad_cam(load_head(str(tmp_path)).gradient_net(), codes[:6], predicted),
                                  grad_cam(fitted.gradient_net(), codes[:6], predicted))


def test_loading_a_folder_without_a_head_says_what_to_do(tmp_path):
    from models.errors import UserError

    with pytest.raises(UserError, match="train one with train_model.py"):
        load_head(str(tmp_path))
