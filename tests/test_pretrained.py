"""models.pretrained: the backbone of a trained head found by its sha256, and a --backbone that names another file or
none refused in one line instead of passed over."""

import hashlib

import pytest

from models.errors import UserError
from models.pretrained import recorded_checkpoint


def test_a_named_backbone_is_that_checkpoint_or_an_error(tmp_path):
    (tmp_path / "net-0000.params").write_bytes(b"the weights")
    (tmp_path / "other-0000.params").write_bytes(b"other weights")
    made = {"model": "/nonexistent/clone/models/net", "layer": "cut",
            "model_sha256": hashlib.sha256(b"the weights").hexdigest()}
    assert recorded_checkpoint(made, tmp_path / "m", str(tmp_path / "net")) == str(tmp_path / "net")
    assert recorded_checkpoint(made, tmp_path / "m", str(tmp_path / "net-0000.params")) == str(tmp_path / "net")
    with pytest.raises(UserError, match="no checkpoint there"):
        recorded_checkpoint(made, tmp_path / "m", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="is not the checkpoint the head's codes were made with"):
        recorded_checkpoint(made, tmp_path / "m", str(tmp_path / "other"))


def test_a_backbone_handed_over_in_the_models_folder_is_found_and_a_missing_one_named(tmp_path):
    models_dir = tmp_path / "m"
    models_dir.mkdir()
    made = {"model": "/nonexistent/clone/models/net", "layer": "cut",
            "model_sha256": hashlib.sha256(b"the weights").hexdigest()}
    with pytest.raises(UserError) as refused:
        recorded_checkpoint(made, models_dir)
    assert "net-0000.params with sha256 " + made["model_sha256"] in str(refused.value)
    assert "/nonexistent/clone/models/net-0000.params (missing)" in str(refused.value)
    (models_dir / "net-0000.params").write_bytes(b"the weights")
    assert recorded_checkpoint(made, models_dir) == str(models_dir / "net")
