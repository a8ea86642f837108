"""Bad input across the commands (train.py, train_model.py, test_model.py, scraper.process, scraper.py): folders
that clash, codes that no longer match their images, paths under a file, bad numbers, damaged or cut-off files, a loss
that blows up, leftovers of a killed write, odd file names. Each gets one `error:` line and exit 2, or the right
result, and leaves nothing half-written."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import test_model
import train
import train_model
from helpers import cli, fail, make_split, run_script, write_noise_pngs
from models import epochs
from models.codes import CodeStore
from models.headfolder import META_FILE, params_file
from scraper import process


@pytest.fixture
def split(tmp_path):
    return make_split(tmp_path / "train", ["normal", "nodule"], 10, seed=1), \
        make_split(tmp_path / "test", ["normal", "nodule"], 5, seed=2)


def trained_head(split, models_dir, capsys, *extra):
    (train_split, _) = split
    assert cli(train_model.main, [*train_split, models_dir, "--epochs", 2, "--batch-size", 8, *extra], capsys)[0] == 0
    return models_dir


def test_one_folder_for_two_outputs_or_an_output_in_an_image_folder_is_refused(split, tmp_path, capsys):
    (images, codes, _), (test_images, test_codes, test_labels) = split
    line = fail(train.main, [images, test_images, tmp_path / "x", tmp_path / "x"], capsys)
    assert "TEST_CODES" in line and "same folder as TRAIN_CODES" in line
    line = fail(train.main, [images, test_images, images, tmp_path / "y"], capsys)
    assert "same folder as TRAIN_IMGS" in line
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    line = fail(train_model.main, [images, codes, split[0][2], images], capsys)
    assert "MODELS_DIR" in line and "TRAIN_IMGS" in line
    models_dir = trained_head(split, tmp_path / "m", capsys)
    line = fail(test_model.main, [test_images, test_codes, test_labels, models_dir, "--out", test_images], capsys)
    assert "report folder" in line and "TEST_IMGS" in line
    assert sorted(os.listdir(test_images)) == sorted(json.load(open(test_labels))["labels"])


def test_codes_are_checked_against_the_images_they_are_used_for(split, tmp_path, capsys):
    (images, codes, labels), (test_images, test_codes, test_labels) = split
    models_dir = trained_head(split, tmp_path / "m", capsys)
    # the training codes given as TEST_CODES
    line = fail(test_model.main, [images, codes, labels, models_dir], capsys)
    assert "holds the codes the head was trained on" in line
    # an image replaced under the same name after its code was made
    Image.new("RGB", (16, 16), (1, 2, 3)).save(os.path.join(test_images, "nodule_002.png"))
    line = fail(test_model.main, [test_images, test_codes, test_labels, models_dir], capsys)
    assert "1 of 10 images" in line and "'nodule_002.png'" in line and "train.py" in line
    # a test folder holding a training image (same bytes, other name) is refused, and scored with --allow-overlap
    os.remove(os.path.join(test_images, "nodule_002.png"))
    os.link(os.path.join(images, "nodule_003.png"), os.path.join(test_images, "nodule_002.png"))
    index = json.load(open(os.path.join(test_codes, "index.json")))
    index["stamps"]["nodule_002.png"] = json.load(open(os.path.join(codes, "index.json")))["stamps"]["nodule_003.png"]
    json.dump(index, open(os.path.join(test_codes, "index.json"), "w"))
    line = fail(test_model.main, [test_images, test_codes, test_labels, models_dir, "--out", tmp_path / "e"], capsys)
    assert "1 of 10 test images are images the head was trained on ('nodule_002.png')" in line
    assert "--allow-overlap" in line and not (tmp_path / "e" / "report.json").exists()
    status, out, err = cli(test_model.main, [test_images, test_codes, test_labels, models_dir, "--out", tmp_path / "e",
                                             "--allow-overlap"], capsys)
    assert status == 0 and "1 of 10 test images are images the head was trained on" in out + err
    assert json.load(open(tmp_path / "e" / "report.json"))["training_overlap"]["files"] == ["nodule_002.png"]


def test_train_py_encodes_again_the_images_that_changed(weights, tmp_path):
    write_noise_pngs(tmp_path / "train", 5)
    write_noise_pngs(tmp_path / "test", 2, seed=1)
    args = ["train.py", tmp_path / "train", tmp_path / "test", tmp_path / "tc", tmp_path / "sc", "--batch-size", 4]
    assert run_script(*args).returncode == 0
    before = CodeStore(tmp_path / "tc").read([f"img{i:04d}.png" for i in range(5)])
    write_noise_pngs(tmp_path / "new", 1, seed=7)
    os.replace(tmp_path / "new" / "img0000.png", tmp_path / "train" / "img0003.png")
    again = run_script(*args)
    assert again.returncode == 0, again.stderr
    assert "1 image changed since their codes were made ('img0003.png')" in again.stdout
    after = CodeStore(tmp_path / "tc").read([f"img{i:04d}.png" for i in range(5)])
    np.testing.assert_array_equal(np.delete(after, 3, axis=0), np.delete(before, 3, axis=0))
    assert np.abs(after[3] - before[3]).max() > 0.1
    fresh = run_script("train.py", tmp_path / "train", tmp_path / "test", tmp_path / "tc2", tmp_path / "sc2")
    assert fresh.returncode == 0
    np.testing.assert_allclose(after, CodeStore(tmp_path / "tc2").read([f"img{i:04d}.png" for i in range(5)]),
                               atol=1e-4)
    assert "nothing to do" in run_script(*args).stdout


def test_an_output_path_under_a_regular_file_is_one_line_for_every_command(split, tmp_path, capsys):
    (images, codes, labels), (test_images, test_codes, test_labels) = split
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    under = blocker / "sub"
    models_dir = trained_head(split, tmp_path / "m", capsys)
    for main, argv in [(train.main, [images, test_images, under, tmp_path / "sc"]),
                       (train_model.main, [images, codes, labels, under]),
                       (test_model.main, [test_images, test_codes, test_labels, models_dir, "--out", under]),
                       (process.main, ["--from-folders", tmp_path / "train", under])]:
        line = fail(main, argv, capsys)
        assert "a-file" in line and "is a file, not a folder" in line
    result = run_script("scraper.py", under, "--base-url", "http://127.0.0.1:9", "--quiet")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "is a file, not a folder" in result.stderr


def test_bad_numbers_and_damaged_files_are_one_line(split, tmp_path, capsys):
    (images, codes, labels), (test_images, test_codes, test_labels) = split
    line = fail(train_model.main, [images, codes, labels, tmp_path / "neg", "--seed", -1], capsys)
    assert "--seed" in line and not (tmp_path / "neg").exists()
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100000 + "]" * 100000)
    assert "nested too deeply" in fail(train_model.main, [images, codes, nested, tmp_path / "n"], capsys)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "datas.json").write_text("{\"a\": " * 100000 + "1" + "}" * 100000)
    assert "nested too deeply" in fail(process.main, [tmp_path / "data", tmp_path / "out"], capsys)

    index_path = os.path.join(codes, "index.json")
    good = json.load(open(index_path))
    for damage in ({"meta": None}, {"skipped": None}, {"files": "a.png"}, {"meta": dict(good["meta"], shape=5)}):
        json.dump(dict(good, **damage), open(index_path, "w"))
        line = fail(train_model.main, [images, codes, labels, tmp_path / "d"], capsys)
        assert "is damaged" in line and "train.py" in line
    json.dump([good], open(index_path, "w"))
    assert "is not a" in fail(train_model.main, [images, codes, labels, tmp_path / "d"], capsys)
    json.dump(good, open(index_path, "w"))

    models_dir = trained_head(split, tmp_path / "m", capsys)
    meta = json.load(open(models_dir / META_FILE))
    json.dump({k: v for k, v in meta.items() if k != "history"}, open(models_dir / META_FILE, "w"))
    line = fail(test_model.main, [test_images, test_codes, test_labels, models_dir], capsys)
    assert "is damaged (history" in line
    json.dump(meta, open(models_dir / META_FILE, "w"))


def test_a_cut_off_checkpoint_says_why_in_one_line(split, tmp_path, capsys):
    (train_split, (test_images, test_codes, test_labels)) = split
    models_dir = trained_head(split, tmp_path / "m", capsys)
    last = models_dir / params_file(2)
    last.write_bytes(last.read_bytes()[:1000])
    line = fail(test_model.main, [test_images, test_codes, test_labels, models_dir], capsys)
    assert "Invalid NDArray file format" in line and "Traceback" not in line
    line = fail(train_model.main, [*train_split, models_dir, "--epochs", 3, "--batch-size", 8, "--resume"], capsys)
    assert "head-0002.params" in line and "damaged or cut-off" in line


def test_a_loss_that_blows_up_stops_the_run_and_keeps_the_good_epochs(split, tmp_path, capsys, monkeypatch):
    (train_split, _) = split
    real_step, calls = epochs.sgd_step, []

    def exploding_step(params, lr, batch_size):  # from epoch 3 on (3 steps an epoch) the weights overflow
        calls.append(1)
        real_step(params, lr, batch_size)
        if len(calls) > 6:
            for param in params:
                param.data()[:] = np.inf

    monkeypatch.setattr(epochs, "sgd_step", exploding_step)
    models_dir = tmp_path / "m"
    line = fail(train_model.main, [*train_split, models_dir, "--epochs", 5, "--batch-size", 8, "--val-fraction", 0,
                                   "--recipe", "xvision"], capsys)
    assert "loss became" in line and "lower --lr" in line
    meta = json.load(open(models_dir / META_FILE))
    assert [e["epoch"] for e in meta["history"]] == [1, 2] and all(np.isfinite(e["loss"]) for e in meta["history"])
    assert not (models_dir / params_file(3)).exists()


def test_temporary_files_of_a_killed_write_are_removed_by_the_next_run(split, tmp_path, capsys):
    (train_split, _) = split
    models_dir = trained_head(split, tmp_path / "m", capsys)
    stale = models_dir / ".tmp-abc123-head-0003.params"
    stale.write_bytes(b"\0" * 1000)
    (tmp_path / "codes_stale").mkdir()
    assert cli(train_model.main, [*train_split, models_dir, "--epochs", 3, "--batch-size", 8, "--resume"],
               capsys)[0] == 0
    assert not stale.exists() and not [n for n in os.listdir(models_dir) if n.startswith(".tmp-")]


def test_a_file_name_with_a_line_break_cannot_split_the_error(split, capsys):
    (images, codes, labels), _ = split
    Image.new("RGB", (8, 8)).save(os.path.join(images, "two\nlines.png"))
    status, _, err = cli(train_model.main, [images, codes, labels, "unused", "--gpus", "none"], capsys)
    assert status == 2 and err.count("\n") == 1 and "two\\nlines.png" in err


def test_broken_links_and_folders_in_an_image_folder_are_skipped_by_name_and_hidden_files_left_out(weights, tmp_path):
    write_noise_pngs(tmp_path / "train", 3)
    write_noise_pngs(tmp_path / "test", 1, seed=1)
    os.symlink("nowhere.png", tmp_path / "train" / "broken.png")
    (tmp_path / "train" / "folder.png").mkdir()
    write_noise_pngs(tmp_path / "train", 1, seed=2, prefix=".hidden")
    result = run_script("train.py", tmp_path / "train", tmp_path / "test", tmp_path / "tc", tmp_path / "sc")
    assert result.returncode == 0, result.stderr
    store = CodeStore(tmp_path / "tc")
    assert store.index["files"] == ["broken.png", "folder.png", "img0000.png", "img0001.png", "img0002.png"]
    assert set(store.skipped) == {"broken.png", "folder.png"} and store.names == ["img0000.png", "img0001.png",
                                                                                  "img0002.png"]
    assert "warning: skipped" in result.stderr and "broken.png" in result.stderr and "folder.png" in result.stderr
    assert "2 skipped" in result.stdout
