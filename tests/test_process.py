"""python -m scraper.process: MeSH labels, the report-level train/test split, and the --from-folders route."""

import json
import os
import random

import pytest

from helpers import cli
from models.labels import load_labels
from scraper import process
from scraper.store import report_id_of
from tests.openi_server import make_png

PNG = make_png("placeholder")


def make_data_dir(folder, reports, seed=1):
    """A scraper-shaped DATA_DIR: ``reports`` maps a MeSH major list (tuple) to how many reports have it."""
    rng = random.Random(seed)
    datas, number = {}, 0
    (folder / "images").mkdir(parents=True)
    for major, count in reports.items():
        for _ in range(count):
            number += 1
            for view in range(rng.choice((1, 2, 2, 2, 3))):
                image_id = f"CXR{number}_IM-{number:04d}-{1001 + view}"
                datas[image_id] = {"id": image_id, "uid": f"CXR{number}", "major": list(major), "minor": [],
                                   "img": None, "file": f"{image_id}.png", "type": "Major", "items": list(major)}
                (folder / "images" / f"{image_id}.png").write_bytes(PNG)
    (folder / "datas.json").write_text(json.dumps(datas))
    return datas


STANDARD = {("normal",): 40, ("Nodule/lung/upper lobe/right",): 12, ("nodule/lung/base", "Opacity/lung"): 6,
            ("Calcified Granuloma/lung",): 10, ("normal", "Nodule/lung"): 2, ("Nodules, multiple",): 1}


def read_output(out):
    split = json.loads((out / "split.json").read_text())
    sides = {}
    for side in ("train", "test"):
        labels = load_labels(out / f"{side}_labels.json")
        assert sorted(os.listdir(out / side)) == sorted(labels.labels)
        sides[side] = labels
    return split, sides


def test_split_is_by_report_stratified_and_matches_split_json(tmp_path, capsys):
    datas = make_data_dir(tmp_path / "data", STANDARD)
    os.remove(tmp_path / "data" / "images" / "CXR1_IM-0001-1001.png")
    status, out, err = cli(process.main, [tmp_path / "data", tmp_path / "out"], capsys)
    assert status == 0, err
    split, sides = read_output(tmp_path / "out")
    reports = {side: {report_id_of(n[:-4]) for n in sides[side].labels} for side in sides}
    assert not reports["train"] & reports["test"]
    for labels in sides.values():  # the label files carry each image's report, for train_model.py's validation split
        assert labels.groups == {n: report_id_of(n[:-4]) for n in labels.labels}
    assert reports["train"] == set(split["reports"]["train"]) and reports["test"] == set(split["reports"]["test"])
    for side, labels in sides.items():
        assert labels.classes == ("normal", "nodule")
        for label in labels.classes:
            names = [n for n, c in labels.labels.items() if c == label]
            assert split["counts"][side][label] == {"images": len(names),
                                                    "reports": len({report_id_of(n[:-4]) for n in names})}
            assert len(names) > 0
        assert split["images"][side] == len(labels.labels)
    for label, majors in (("normal", [("normal",)]), ("nodule", [("Nodule/lung/upper lobe/right",),
                                                                 ("nodule/lung/base", "Opacity/lung")])):
        expected = {i for i, e in datas.items() if tuple(e["major"]) in majors and i != "CXR1_IM-0001-1001"}
        got = {n[:-4] for side in sides.values() for n, c in side.labels.items() if c == label}
        assert got == expected
        test_share = split["counts"]["test"][label]["images"] / len(expected)
        assert 0.2 < test_share < 0.4
    several = {i for i, e in datas.items() if e["major"] == ["normal", "Nodule/lung"]}
    assert {d["image"] for d in split["dropped"] if d["reason"] == "matches several classes"} == several
    assert split["dropped_by_reason"] == {"missing image file": 1, "matches several classes": len(several)}
    assert split["unlabelled_images"] == sum(1 for e in datas.values()
                                             if e["major"] in (["Calcified Granuloma/lung"], ["Nodules, multiple"]))
    assert split["seed"] == 0 and split["protocol"] == "full" and split["test_fraction"] == 0.3
    assert "train: normal" in out and "dropped: 1 missing image file" in out
    assert os.path.samefile(tmp_path / "out" / "train" / next(iter(sides["train"].labels)),
                            tmp_path / "data" / "images" / next(iter(sides["train"].labels)))


def test_same_seed_same_split_other_seed_other_split(tmp_path, capsys):
    make_data_dir(tmp_path / "data", STANDARD)
    splits = []
    for out, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert cli(process.main, [tmp_path / "data", tmp_path / out, "--seed", seed], capsys)[0] == 0
        splits.append(read_output(tmp_path / out)[1]["test"].labels)
    assert splits[0] == splits[1] and splits[0] != splits[2]
    # rerunning into the same folder replaces the earlier split
    assert cli(process.main, [tmp_path / "data", tmp_path / "a", "--seed", 1], capsys)[0] == 0
    assert read_output(tmp_path / "a")[1]["test"].labels == splits[2]


def test_legacy_datas_json_and_other_classes(tmp_path, capsys):
    data = tmp_path / "legacy"
    (data / "images").mkdir(parents=True)
    legacy = {}
    for key in range(1, 41):
        report = (key + 1) // 2
        image_id = f"CXR{report}_IM-{report:04d}-{1000 + key % 2 + 1}"
        major = ["normal"] if report % 3 else ["Calcified Granuloma/lung/upper lobe/right", "Nodule/lung"]
        legacy[str(key)] = {"type": "Major", "items": major,
                            "img": f"https://openi.nlm.nih.gov//imgs/512/{report}/{report}/{image_id}.png"}
        if key % 4 == 0:  # as the original scraper saved them: <key>.png
            (data / f"{key}.png").write_bytes(PNG)
        else:
            (data / "images" / f"{image_id}.png").write_bytes(PNG)
    (data / "datas.json").write_text(json.dumps(legacy))
    status, out, err = cli(process.main, [data, tmp_path / "out", "--classes", "normal", "calcified granuloma"], capsys)
    assert status == 0, err
    split, sides = read_output(tmp_path / "out")
    labels = {**sides["train"].labels, **sides["test"].labels}
    assert len(labels) == 40 and split["dropped"] == []
    assert sum(c == "calcified granuloma" for c in labels.values()) == 2 * len([r for r in range(1, 21) if r % 3 == 0])
    train, test = ({report_id_of(n[:-4]) for n in sides[side].labels} for side in ("train", "test"))
    assert not train & test


def test_xvision_protocol_sizes_without_leakage(tmp_path, capsys):
    make_data_dir(tmp_path / "data", {("normal",): 100, ("Nodule/lung",): 70, ("Opacity",): 5})
    status, out, err = cli(process.main, [tmp_path / "data", tmp_path / "out", "--protocol", "xvision", "--seed", 3], capsys)
    assert status == 0 and err == "", err
    split, sides = read_output(tmp_path / "out")
    assert split["counts"]["train"]["normal"]["images"] == 100 and split["counts"]["train"]["nodule"]["images"] == 77
    assert split["counts"]["test"]["normal"]["images"] == 50 and split["counts"]["test"]["nodule"]["images"] == 26
    assert not set(split["reports"]["train"]) & set(split["reports"]["test"]) and split["shortfall"] == []

    make_data_dir(tmp_path / "small", {("normal",): 100, ("Nodule/lung",): 20})
    status, out, err = cli(process.main, [tmp_path / "small", tmp_path / "out2", "--protocol", "xvision"], capsys)
    assert status == 0 and "warning: the data has fewer images than the xvision protocol needs: train nodule" in err
    split, _ = read_output(tmp_path / "out2")
    assert split["counts"]["test"]["nodule"]["images"] == 26 and split["shortfall"][0].startswith("train nodule")


def test_from_folders(tmp_path, capsys):
    root = tmp_path / "root"
    for label, count in (("pneumonia", 9), ("healthy", 14), ("empty", 0)):
        (root / label).mkdir(parents=True)
        for n in range(count):
            (root / label / f"img{n}.png").write_bytes(PNG)
    (root / "healthy" / "notes.txt").write_text("not an image")
    status, out, err = cli(process.main, ["--from-folders", root, tmp_path / "out", "--test-fraction", "0.5"], capsys)
    assert status == 0, err
    split, sides = read_output(tmp_path / "out")
    assert sides["train"].classes == ("healthy", "pneumonia")
    names = set(sides["train"].labels) | set(sides["test"].labels)
    assert "healthy_img3.png" in names and "pneumonia_img3.png" in names and "healthy_img12.png" not in names
    assert "img12.png" in names and len(names) == 23
    assert split["counts"]["test"]["healthy"]["images"] == 7 and split["counts"]["test"]["pneumonia"]["images"] == 4
    assert not set(split["reports"]["train"]) & set(split["reports"]["test"])


@pytest.mark.parametrize("argv, message", [
    (["{data}/missing", "{tmp}/out"], "datas.json not found"),
    (["{data}", "{tmp}/out", "--classes", "normal", "Normal"], "distinct"),
    (["{data}", "{tmp}/out", "--classes", "normal", "cardiomegaly"], "no usable images for class(es) ['cardiomegaly']"),
    (["{data}", "{tmp}/out", "--classes", "normal", "opacity", "--protocol", "xvision"], "normal nodule only"),
    (["{tmp}/out"], "give either DATA_DIR and OUT, or --from-folders"),
    (["{data}", "{data}/images/train/.."], None),
    (["{data}", "{tmp}/out", "--test-fraction", "1.5"], "SystemExit"),
])
def test_errors_are_one_line(tmp_path, capsys, argv, message):
    make_data_dir(tmp_path / "data", {("normal",): 3, ("Nodule/lung",): 3})
    argv = [a.format(data=tmp_path / "data", tmp=tmp_path) for a in argv]
    if message == "SystemExit":
        with pytest.raises(SystemExit) as exit_info:
            process.main(argv)
        assert exit_info.value.code == 2
        return
    status, out, err = cli(process.main, argv, capsys)
    if message is None:  # OUT = DATA_DIR/images is allowed (nothing of the input is replaced)
        assert status == 0, err
        return
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_existing_foreign_folder_is_not_replaced(tmp_path, capsys):
    make_data_dir(tmp_path / "data", {("normal",): 3, ("Nodule/lung",): 3})
    (tmp_path / "out" / "train").mkdir(parents=True)
    (tmp_path / "out" / "train" / "mine.txt").write_text("keep me")
    status, _, err = cli(process.main, [tmp_path / "data", tmp_path / "out"], capsys)
    assert status == 2 and "was not written by this step" in err
    assert (tmp_path / "out" / "train" / "mine.txt").exists()
    status, _, err = cli(process.main, [tmp_path / "data", tmp_path / "data"], capsys)
    assert status == 0, err
    status, _, err = cli(process.main, ["--from-folders", tmp_path / "data", tmp_path / "data" / "split"], capsys)
    assert status == 2 and "overlap" in err


def test_from_folders_group_pattern_keeps_each_patient_on_one_side(tmp_path, capsys):
    root = tmp_path / "root"
    files = {"normal": [f"{p:08d}_{f:03d}.png" for p in range(1, 13) for f in range(1 + p % 3)],
             "pneumonia": [f"{p:08d}_{f:03d}.png" for p in range(20, 32) for f in range(1 + p % 2)]}
    for label, names in files.items():
        (root / label).mkdir(parents=True)
        for name in names:
            (root / label / name).write_bytes(PNG)
    status, _, err = cli(process.main, ["--from-folders", root, tmp_path / "out", "--group-pattern", r"^(\d+)_"], capsys)
    assert status == 0, err
    split, sides = read_output(tmp_path / "out")
    patients = {side: {labels.groups[name] for name in labels.labels} for side, labels in sides.items()}
    assert patients["train"] and patients["test"] and not patients["train"] & patients["test"]
    assert all(labels.groups[name] == name.split("_")[0] for labels in sides.values() for name in labels.labels)
    assert split["group_pattern"] == r"^(\d+)_" and not set(split["reports"]["train"]) & set(split["reports"]["test"])

    assert "warning: no --group-pattern" not in err and "leakage" not in split

    # without a pattern each file is its own group, and the label files say so; the shared prefixes are warned of,
    # with the patients the split put on both sides
    status, printed, err = cli(process.main, ["--from-folders", root, tmp_path / "out2"], capsys)
    assert status == 0, err
    labels = load_labels(tmp_path / "out2" / "train_labels.json")
    assert all(labels.groups[name] == f"{label}/{name}" for name, label in labels.labels.items())
    split, sides = read_output(tmp_path / "out2")
    on = {side: {name.split("_")[0] for name in labels.labels} for side, labels in sides.items()}
    both = len(on["train"] & on["test"])
    several = sum(len(names) > 1 for names in ({n for n in names if n.startswith(f"{p:08d}_")}
                                                for names in files.values() for p in range(1, 32)))
    assert both > 0 and several == 14  # 8 of normal (p % 3 > 0), 6 of pneumonia (p odd)
    assert split["leakage"] == {"suggested": r"--group-pattern '^(\d+)_'",
                                "shown_by": "their file names' number prefix",
                                "patients_with_several_images": several, "patients_on_both_sides": both}
    assert (f"warning: no --group-pattern / --group-by, but {several} patients have several images (by their file "
            f"names' number prefix) and {both} of them have images in both train and test; --group-pattern "
            r"'^(\d+)_' keeps each patient on one side") in err
    assert " / " not in printed and "reports" not in printed  # each image its own group: nothing else to count

    (root / "normal" / "scan-7.png").write_bytes(PNG)
    status, _, err = cli(process.main, ["--from-folders", root, tmp_path / "out3", "--group-pattern", r"^(\d+)_"], capsys)
    assert status == 2 and err.count("\n") == 1 and "'scan-7.png'" in err and "--group-pattern" in err
    status, _, err = cli(process.main, [tmp_path / "x", tmp_path / "out4", "--group-pattern", r"^(\d+)_"], capsys)
    assert status == 2 and "applies to --from-folders" in err


def test_from_folders_resolves_links_and_lists_broken_ones(tmp_path, capsys):
    store = tmp_path / "elsewhere"
    store.mkdir()
    root = tmp_path / "root"
    for label in ("normal", "nodule"):
        (root / label).mkdir(parents=True)
        for n in range(4):
            (store / f"{label}{n}.png").write_bytes(make_png(f"{label}{n}"))
            os.symlink(os.path.join("..", "..", "elsewhere", f"{label}{n}.png"), root / label / f"{label}{n}.png")
    os.symlink("missing.png", root / "normal" / "gone.png")
    (root / "nodule" / "folder.png").mkdir()
    status, out, err = cli(process.main, ["--from-folders", root, tmp_path / "out", "--test-fraction", "0.5"], capsys)
    assert status == 0, err
    split, sides = read_output(tmp_path / "out")
    for side, labels in sides.items():
        for name in labels.labels:  # real files with the linked images' bytes, not links that dangle in OUT
            path = tmp_path / "out" / side / name
            assert not path.is_symlink() and path.read_bytes() == (store / name).read_bytes()
    assert {(d["image"], d["reason"]) for d in split["dropped"]} == {("normal/gone.png", "broken link"),
                                                                    ("nodule/folder.png", "not a file")}
    assert "dropped: 1 not a file, 1 broken link (listed in split.json)" in out
