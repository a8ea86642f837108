"""DICOM input: pydicom's own test files decoded or skipped with the reason, the pixel mapping (window, MONOCHROME1,
Bits Stored, rescale, VOI LUT) against the PNG a careful converter makes, the codes of the bundled radiographs written
as DICOM (compressed, without extension) against the PNGs', and a DICOM export through every step with no patient
identifier in any output."""

import csv
import json
import os
import re
import shutil

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from bench.films import twelve_bit, write_dicom
from helpers import REPO, run_script
from models.dicom import EVERY, OutOfScope, Scope, _dataset, _gray_of, gray_pixels, read_dicom
from models.images import ImageReadError, View, list_images, read_file
from models.pretrained import put_image
from models.reduced import resize_reduced
from models.resize import resize_image

PYDICOM_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
SAMPLE = os.path.join(REPO, "examples", "nih-sample")
# what a PACS export carries and no output may repeat
NAME, BIRTH = "Quixote^Dulcinea", "19450317"


def radiograph(gray, path, *, stored=None, mono1=False, syntax="uncompressed", patient=None, accession=None,
               view="PA", **options):
    """``stored`` (or ``gray`` itself) as a PACS export holds a film: bench.films.write_dicom's DX DICOM (12-bit unless
    ``bits`` says otherwise; ``options`` are its own and tags) with a View Position, MONOCHROME1 where asked, and the
    patient's identifiers where given."""
    if mono1:
        options["PhotometricInterpretation"] = "MONOCHROME1"
    if patient:
        options.update(PatientName=NAME, PatientID=patient, PatientBirthDate=BIRTH, AccessionNumber=accession)
    return write_dicom(path, gray if stored is None else stored, syntax=syntax, ViewPosition=view, **options)


def windowed(gray, mono1=False):
    """12-bit stored values that the window (2020.5, 2041) maps back onto ``gray`` exactly (onto 255 - gray for
    MONOCHROME1, which is then inverted): 8 stored levels per gray level, the window 255 x 8 levels wide."""
    gray = gray.astype(np.int64)
    return 1000 + 8 * ((255 - gray) if mono1 else gray), (2020.5, 2041)


def gray_film(seed=0, shape=(96, 80)):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def test_the_mapping_is_the_one_a_careful_converter_makes(tmp_path):
    gray = gray_film()
    cases = {}
    stored, window = windowed(gray)
    cases["window"] = radiograph(gray, tmp_path / "window.dcm", stored=stored, window=window)
    stored, window = windowed(gray, mono1=True)
    cases["monochrome1"] = radiograph(gray, tmp_path / "mono1.dcm", stored=stored, window=window, mono1=True)
    stored, window = windowed(gray)  # garbage in the 4 bits above Bits Stored
    cases["bits stored"] = radiograph(gray, tmp_path / "bits.dcm", stored=stored | 0xF000, window=window)
    stored, window = windowed(gray)  # the window is on rescaled values: 2 x stored - 1000
    cases["rescale"] = radiograph(gray, tmp_path / "rescale.dcm", stored=(stored + 1000) // 2, window=window,
                                  RescaleSlope=2, RescaleIntercept=-1000)
    full_range = np.round(gray.astype(float) * 4095 / 255).astype(int)  # no window: 0..4095 is 0..255
    cases["no window"] = radiograph(gray, tmp_path / "full.dcm", stored=full_range)
    stored, _ = windowed(gray)
    lut = Dataset()
    lut.add_new(0x00283002, "US", [4096, 0, 8])  # LUT Descriptor: entries, first value mapped, bits
    lut.add_new(0x00283006, "US", np.clip((np.arange(4096) - 1000) // 8, 0, 255).tolist())  # LUT Data
    cases["voi lut"] = radiograph(gray, tmp_path / "lut.dcm", stored=stored, VOILUTSequence=[lut],
                                  WindowCenter=1, WindowWidth=2)  # the LUT comes first
    for case, path in cases.items():
        np.testing.assert_array_equal(np.asarray(read_dicom(path)), gray, err_msg=case)
    for name in ("CT_small.dcm", "MR_small.dcm"):  # signed 16 bits: the lookup table maps as the formula does
        ds = pydicom.dcmread(os.path.join(PYDICOM_FILES, name))
        np.testing.assert_array_equal(gray_pixels(ds), _gray_of(ds, ds.pixel_array), err_msg=name)
    # a window narrower than the values clips them, to black below and white above
    ramp = np.tile(np.arange(0, 4096, 16), (8, 1))
    clipped = np.asarray(read_dicom(radiograph(ramp, tmp_path / "clip.dcm", window=(2048, 1024))))
    assert clipped[0, 0] == clipped[0, 1535 // 16] == 0 and clipped[0, -1] == clipped[0, 2560 // 16] == 255


def test_pydicoms_own_files_decode_to_gray_or_are_skipped_with_the_reason(tmp_path, monkeypatch):
    for name in ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_rle.dcm",
                 "SC_ybr_full_422_uncompressed.dcm", "SC_rgb_rle_16bit.dcm", "CT_small.dcm"):
        shutil.copy(os.path.join(PYDICOM_FILES, name), tmp_path / name)
    shutil.copy(os.path.join(PYDICOM_FILES, "MR_small.dcm"), tmp_path / "1.2.840.113619.2.55")  # a UID as its name
    (tmp_path / "notes").write_text("not an image")
    assert "1.2.840.113619.2.55" in list_images(tmp_path) and "notes" not in list_images(tmp_path)
    every = View(resize="squash", scope=EVERY)  # decoding is tested here, whatever the files show: scope below
    read = {name: every.read(tmp_path / name) for name in list_images(tmp_path)}
    assert all(pixels.shape == (224, 224) and pixels.dtype == np.uint8 for pixels in read.values())
    for same in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "1.2.840.113619.2.55"):  # lossless: the same
        np.testing.assert_array_equal(read[same], read["MR_small.dcm"])
    for colour in ("SC_ybr_full_422_uncompressed.dcm", "SC_rgb_rle_16bit.dcm"):  # colour as gray, YBR converted
        assert np.abs(read[colour].astype(int) - read["SC_rgb_rle.dcm"]).max() <= 3, colour
    assert read["MR_small.dcm"].max() == 255 and read["MR_small.dcm"].min() < 60  # its window, not its maximum

    bad = {"MR_truncated.dcm": "its pixel data cannot be decoded", "reportsi.dcm": "no pixel data (a Basic Text SR",
           "rtplan.dcm": "no pixel data", "SC_rgb_rle_2frame.dcm": "a multi-frame object (2 frames)",
           "examples_palette.dcm": "photometric interpretation 'PALETTE COLOR' is not read"}
    for name, reason in bad.items():
        with pytest.raises(ImageReadError, match=re.escape(f"{name}: not a readable image ({reason}")):
            every.read(os.path.join(PYDICOM_FILES, name))
    ds = pydicom.dcmread(os.path.join(PYDICOM_FILES, "MR_small_RLE.dcm"))  # its frames, as if MPEG2 (no decoder)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.save_as(tmp_path / "mpeg2.dcm")
    with pytest.raises(ImageReadError, match="no decoder for its transfer syntax 'MPEG2"):
        every.read(tmp_path / "mpeg2.dcm")
    truncated = tmp_path / "truncated_big.dcm"  # refused by its size before a byte of pixel data is decoded
    shutil.copy(os.path.join(PYDICOM_FILES, "MR_truncated.dcm"), truncated)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)
    with pytest.raises(ImageReadError, match="Rows x Columns = 4096 pixels, more than the limit of 4095"):
        every.read(truncated)


def sample_films(per_class):
    return {label: sorted(os.listdir(os.path.join(SAMPLE, label)))[:per_class] for label in ("normal", "pneumonia")}


def test_radiographs_written_as_dicom_give_the_codes_of_their_pngs(weights, tmp_path):
    from models.codes import CodeStore
    from models.extract import extract_folder
    from models.pretrained import Backbone

    names = sample_films(2)["normal"] + sample_films(2)["pneumonia"]
    paths = [os.path.join(SAMPLE, label, name) for label, files in sample_films(2).items() for name in files]
    os.makedirs(tmp_path / "png")
    os.makedirs(tmp_path / "dicom")
    dicom_names = ["mono1-12bit", "rle.dcm", "j2k.dicom", "1.2.826.0.1.3680043.8.498.7"]
    for i, (path, name) in enumerate(zip(paths, names)):
        gray = np.asarray(Image.open(path).convert("L"))
        shutil.copy(path, tmp_path / "png" / name)
        stored, window = windowed(gray, mono1=i == 0)
        syntax = {1: "rle", 2: "j2k"}.get(i, "uncompressed")
        radiograph(gray, tmp_path / "dicom" / dicom_names[i], stored=stored, window=window, mono1=i == 0,
                   syntax=syntax)
    assert list_images(tmp_path / "dicom") == sorted(dicom_names)
    backbone = Backbone()
    for kind in ("png", "dicom"):
        extract_folder(backbone, str(tmp_path / kind), str(tmp_path / f"{kind}_codes"), log=lambda *a: None)
    png, dicom = CodeStore(tmp_path / "png_codes"), CodeStore(tmp_path / "dicom_codes")
    for name, dicom_name in zip(names, dicom_names):
        a, b = (store.read([n]).ravel().astype(np.float64) for store, n in ((png, name), (dicom, dicom_name)))
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) >= 0.999, dicom_name


def test_a_dicom_export_runs_to_a_report_with_no_identifier_in_any_output(weights, tmp_path):
    export, out = tmp_path / "export", tmp_path / "out"
    identifiers = {NAME.encode(), BIRTH.encode()}
    patients = {}
    for label, files in sample_films(12).items():
        os.makedirs(export / label)
        for i, name in enumerate(files):
            gray = np.asarray(Image.open(os.path.join(SAMPLE, label, name)).convert("L"))
            patient, accession = f"PID{label[:2].upper()}{i // 2:04d}X", f"ACC{label[:2].upper()}{i:05d}Z"
            identifiers |= {patient.encode(), accession.encode()}
            stored, window = windowed(gray, mono1=i % 3 == 0)
            file_name = f"IM{i:04d}" if i % 2 else f"IM{i:04d}.dcm"
            radiograph(gray, export / label / file_name, stored=stored, window=window, mono1=i % 3 == 0,
                       syntax="rle" if i % 4 == 1 else "uncompressed", patient=patient,
                       accession=accession, view="AP" if label == "pneumonia" and i < 8 else "PA")
            patients[f"{label}/{file_name}"] = patient
    shutil.copy(os.path.join(PYDICOM_FILES, "MR_truncated.dcm"), export / "normal" / "truncated.dcm")
    shutil.copy(os.path.join(PYDICOM_FILES, "reportsi.dcm"), export / "pneumonia" / "report")  # an SR, no extension

    split = run_script("-m", "scraper.process", "--from-folders", export, out / "split", "--group-by", "patient")
    assert split.returncode == 0, split.stderr
    assert "leaving out pneumonia/report: not a chest radiograph: its Modality is SR" in split.stderr
    assert "leaving out normal/truncated.dcm: not a chest radiograph: its Modality is MR" in split.stderr  # listed
    assert "View Positions differ (PA 100% of normal; AP 67%, PA 33% of pneumonia)" in split.stderr
    info = json.loads((out / "split" / "split.json").read_text())
    assert {d["image"] for d in info["dropped"]} == {"pneumonia/report", "normal/truncated.dcm"}
    views = {**info["views"]["train"], **info["views"]["test"]}  # names clash across classes: prefixed
    assert len(views) == 24 and views["pneumonia_IM0001.png"] == "AP" and views["normal_IM0000.png"] == "PA"
    groups = {}
    for side in ("train", "test"):
        labels = json.loads((out / "split" / f"{side}_labels.json").read_text())
        for name, group in labels["groups"].items():
            groups.setdefault(group, set()).add(side)
    assert all(len(sides) == 1 for sides in groups.values()) and len(groups) == 12  # one side per patient

    codes, models = [out / "codes" / "train", out / "codes" / "test"], out / "models"
    steps = [("train.py", out / "split" / "train", out / "split" / "test", *codes, "--gpus", "none"),
             ("train_model.py", out / "split" / "train", codes[0], out / "split" / "train_labels.json", models,
              "--epochs", 3, "--folds", 0, "--layout", "avg", "--gpus", "none"),
             ("test_model.py", out / "split" / "test", codes[1], out / "split" / "test_labels.json", models,
              "--heatmaps", "all"),
             ("-m", "models.predict", models, export / "normal", "--out", out / "predict", "--gpus", "none")]
    for step in steps:
        result = run_script(*step)
        assert result.returncode == 0, result.stderr
    assert (models / "eval" / "report.json").exists() and (out / "predict" / "predictions.csv").exists()
    assert "truncated.dcm: not a chest radiograph: its Modality is MR" in result.stderr  # the MR slice, not scored

    # pydicom's own CT, MR, US, NM, OT, RT dose and SEG images beside a chest film: named with their Modality, and
    # not scored
    mixed = out / "mixed"
    os.makedirs(mixed)
    foreign = {"CT_small.dcm": "CT", "MR_small.dcm": "MR", "examples_rgb_color.dcm": "US", "JPEG2000.dcm": "NM",
               "SC_rgb_rle.dcm": "OT", "rtdose_1frame.dcm": "RTDOSE", "liver_1frame.dcm": "SEG"}
    for name in foreign:
        shutil.copy(os.path.join(PYDICOM_FILES, name), mixed / name)
    shutil.copy(os.path.join(SAMPLE, "normal", sample_films(1)["normal"][0]), mixed / "chest.png")
    scored = run_script("-m", "models.predict", models, mixed, "--out", out / "mixed-predict", "--gpus", "none")
    assert scored.returncode == 0, scored.stderr
    for name, modality in foreign.items():
        assert f"{name}: not a chest radiograph: its Modality is {modality}" in scored.stderr, name
    with open(out / "mixed-predict" / "predictions.csv", encoding="utf-8") as f:
        rows = {os.path.basename(row["file"]): row for row in csv.DictReader(f)}
    assert rows["chest.png"]["predicted_class"] in ("normal", "pneumonia")
    assert not any(rows.get(name, {}).get("predicted_class") for name in foreign)  # no row, or one without a score
    leaks = [(os.path.relpath(os.path.join(folder, name), out), found.decode())
             for folder, _, files in os.walk(out) for name in files
             for found in identifiers if found in open(os.path.join(folder, name), "rb").read()]
    assert not leaks

    only_pa = run_script("-m", "scraper.process", "--from-folders", export, out / "pa", "--group-by", "patient",
                         "--views", "pa")
    assert only_pa.returncode == 0 and "View Positions differ" not in only_pa.stderr, only_pa.stderr
    kept = json.loads((out / "pa" / "split.json").read_text())
    assert set(kept["views"]["train"].values()) | set(kept["views"]["test"].values()) == {"PA"}
    assert kept["dropped_by_reason"]["view not in --views"] == 8  # the AP films (the truncated MR slice is out before)

    from models.splits import (
        image_groups,  # make accuracy / make audit GROUP_BY=patient group so, in memory
    )
    assert image_groups(export, ["normal", "pneumonia"], ["IM0000.dcm", "IM0001"], group_by="patient") == [
        patients["normal/IM0000.dcm"], patients["pneumonia/IM0001"]]
    no_id = run_script("-m", "scraper.process", "--from-folders", SAMPLE, out / "png", "--group-by", "patient")
    assert no_id.returncode == 2 and "images have no Patient ID (not DICOM" in no_id.stderr


def test_broken_and_burned_in_films_are_left_out_before_the_split(tmp_path):
    """A truncated film and one whose Burned In Annotation says YES, among 20 good ones: both named and left out from
    their headers, so the split draws the 20 (7 + 3 per class) and writes what it drew; the burned-in film's pixels
    reach no output unless --allow-burned-in."""
    root, out = tmp_path / "export", tmp_path / "split"
    for c, label in enumerate(("normal", "nodule")):
        os.makedirs(root / label)
        for i in range(10):
            radiograph(gray_film(seed=10 * c + i), root / label / f"IM{i:02d}.dcm")
    truncated = radiograph(gray_film(seed=99), root / "normal" / "truncated.dcm")
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(truncated) - 200)
    burned = gray_film(seed=98)
    radiograph(burned, root / "nodule" / "burned.dcm", BurnedInAnnotation="YES")
    done = run_script("-m", "scraper.process", "--from-folders", root, out)
    assert done.returncode == 0, done.stderr
    assert "skipping normal/truncated.dcm: truncated pixel data: the file ends 200 bytes before" in done.stderr
    assert "leaving out nodule/burned.dcm: its Burned In Annotation says YES" in done.stderr
    info = json.loads((out / "split.json").read_text())
    assert info["dropped_by_reason"] == {"unreadable DICOM": 1, "burned-in annotation": 1}
    for label in ("normal", "nodule"):  # what was drawn is what was written: 30% of 10 to test
        assert info["counts"]["train"][label]["images"] == 7 and info["counts"]["test"][label]["images"] == 3
    written = [path for side in ("train", "test") for path in (out / side).iterdir()]
    assert len(written) == 20
    for path in written:
        assert not np.array_equal(np.asarray(Image.open(path)), burned), path
    assert "burned" not in (out / "train_labels.json").read_text() + (out / "test_labels.json").read_text()

    kept = run_script("-m", "scraper.process", "--from-folders", root, tmp_path / "kept", "--allow-burned-in")
    assert kept.returncode == 0 and "leaving out" not in kept.stderr
    assert json.loads((tmp_path / "kept" / "split.json").read_text())["burned_in_allowed"] is True
    assert sum(1 for side in ("train", "test") for _ in (tmp_path / "kept" / side).iterdir()) == 21


def j2k_by_pil(gray, path, **options):
    """``gray`` (8-bit) as a lossless JPEG 2000 DICOM written by PIL's encoder with ``options``: e.g. no resolution
    levels below full size (num_resolutions=1) or tiles (tile_size), where the reduced decode cannot apply."""
    import io

    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    stream = io.BytesIO()
    Image.fromarray(gray).save(stream, format="JPEG2000", no_jp2=True, irreversible=False, **options)
    ds = pydicom.dcmread(write_dicom(path, gray, bits=8))
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([stream.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("resize", ["crop", "squash"])
@pytest.mark.parametrize("factor, shape", [(4, (157, 129)), (2, (300, 260)), (8, (40, 33))])
def test_a_reduced_decode_resizes_as_its_full_image_would(resize, factor, shape):
    """resize_reduced on JPEG 2000 low-pass samples gives what resizing the full image they stand for gives: here a
    full image that is exactly the linear interpolation of its samples (whole gray levels), pixel for pixel but for
    PIL's fixed-point rounding; resizing the small image itself is further off."""
    step = factor ** 2  # samples interpolated at 1/factor steps in 2-D: whole gray levels
    samples = np.random.default_rng(factor).integers(0, 256 // step, shape).astype(np.float64) * step
    rows, columns = shape
    height, width = (rows - 1) * factor + 1, (columns - 1) * factor + 1

    def rebuilt(length, count):
        position = np.arange(length) / factor
        lower = np.floor(position).astype(int)
        return lower, np.minimum(lower + 1, count - 1), position - lower

    (r0, r1, rw), (c0, c1, cw) = rebuilt(height, rows), rebuilt(width, columns)
    across = samples[:, c0] * (1 - cw) + samples[:, c1] * cw
    full = across[r0] * (1 - rw[:, None]) + across[r1] * rw[:, None]
    assert np.array_equal(full, full.round()) and full.max() <= 255
    expected = np.asarray(resize_image(Image.fromarray(full.astype(np.uint8)), 224, resize)).astype(int)
    got = resize_reduced(samples.astype(np.float32), (width, height), 224, resize)
    assert got.dtype == np.uint8 and got.shape == (224, 224)
    assert np.abs(got - expected).max() <= 1 and (got != expected).mean() < 0.01
    small = np.asarray(resize_image(Image.fromarray(samples.astype(np.uint8)), 224, resize)).astype(int)
    assert np.abs(small - expected).mean() > 10 * np.abs(got - expected).mean()


@pytest.mark.parametrize("syntax, wavelet, other", [("j2k", "5-3", "9-7"), ("j2k-lossy", "9-7", "5-3")])
def test_a_reduced_jpeg2000_decode_is_rebuilt_by_its_own_wavelet(tmp_path, syntax, wavelet, other):
    """A noisy 12-bit film under a narrow window (half a gray level a stored value), read at 1/4: the same gray levels
    on average as its full decode (the reversible wavelet's low-pass band stands a stored value above the film, which
    read as it is would be +0.5 gray), and closer to it rebuilt with the codestream's own wavelet than with the other
    one."""
    from models.dicom import decode_dicom

    y, x = np.mgrid[0:1800, 0:2000]
    wave = 2048 + 200 * np.sin(x / 23.0) * np.cos(y / 31.0) + np.random.default_rng(0).normal(0, 6, x.shape)
    path = write_dicom(tmp_path / "film.dcm", np.clip(wave, 0, 4095).round(), syntax=syntax, window=(2048, 512))
    reduced, whole = read_file(path), read_file(path, margin=1e6)
    assert reduced.reduced == "500x450 of 2000x1800" and whole.reduced is None
    off = reduced.pixels.astype(int) - whole.pixels
    assert abs(off.mean()) < 0.05 and np.abs(off).mean() < 0.2, (off.mean(), np.abs(off).mean())
    samples, full_size, sampled = decode_dicom(path, 448)
    assert sampled == wavelet
    otherwise = resize_reduced(samples, full_size, 224, "crop", other).astype(int) - whole.pixels
    assert np.abs(otherwise).mean() > 1.5 * np.abs(off).mean()


def test_a_scaled_jpeg_resizes_by_the_full_images_crop(tmp_path):
    """A JPEG decoded at 1/4 (DCT scaling) is cropped where its full image is, fractions of a pixel kept: the block
    means of a smooth full image resize like the full image (0.3 gray levels apart on average; the small image's own
    crop, 1.4)."""
    from models.reduced import resize_scaled

    y, x = np.mgrid[0:2401, 0:2003]
    full = Image.fromarray((127 + 100 * np.sin(x / 37.0) * np.cos(y / 53.0)).round().astype(np.uint8))
    blocks = full.reduce(4)  # 4 x 4 block means, as a DCT scaled to 1/4 gives them
    for resize in ("crop", "squash"):
        expected = np.asarray(resize_image(full, 224, resize)).astype(int)
        got = np.asarray(resize_scaled(blocks, full.size, 224, resize)).astype(int)
        own_crop = np.asarray(resize_image(blocks, 224, resize)).astype(int)
        assert np.abs(got - expected).mean() < 0.4 < 1.2 < np.abs(own_crop - expected).mean(), resize
        Image.fromarray(np.asarray(full)).save(tmp_path / "film.jpg", quality=95)
        read = read_file(tmp_path / "film.jpg", resize=resize)
        assert read.reduced == "501x601 of 2003x2401" and np.abs(read.pixels.astype(int) - expected).mean() < 1


def test_jpeg2000_levels_pil_cannot_size_fall_back_a_level(tmp_path):
    """A film of 1,801 x 1,797 could be read at 1/4 (450 x 449 by OpenJPEG's rounding up), but PIL rounds 1,797 / 4 to
    449 and refuses that level: it is read at 1/2 instead, not in full; one of 7-bit precision (which PIL would scale
    to 8 bits) is read in full."""
    y, x = np.mgrid[0:1797, 0:1801]
    gray = (127 + 100 * np.sin(x / 41.0) * np.cos(y / 29.0)).round().astype(np.uint8)
    write_dicom(tmp_path / "odd.dcm", twelve_bit(gray), syntax="j2k")
    assert read_file(tmp_path / "odd.dcm").reduced == "901x899 of 1801x1797"
    write_dicom(tmp_path / "seven.dcm", gray[:1000, :1000] >> 1, bits=7, syntax="j2k")
    seven = read_file(tmp_path / "seven.dcm")
    assert seven.reduced is None
    np.testing.assert_array_equal(seven.pixels, np.asarray(resize_image(read_dicom(tmp_path / "seven.dcm"), 224,
                                                                        "crop")))


def test_large_jpeg2000_and_jpeg_films_decode_at_the_level_the_view_needs(weights, tmp_path):
    """A film of 1,100 x 1,000 as JPEG 2000 (lossless, lossy) or baseline JPEG is decoded at half size (550 x 500,
    the coarsest level at least REDUCED_MARGIN x 224 on its shorter side), through the same mapping; the codes' index
    says so, and the codes stay those of the full decode. Where the codestream has no level to skip to (or tiles,
    whose seams a level cannot rebuild, or signed samples, or a precision other than Bits Stored), the full decode
    runs, the same pixels as before."""
    from models.codes import CodeStore
    from models.extract import extract_folder
    from models.reduced import REDUCED_MARGIN
    from models.pretrained import Backbone

    assert REDUCED_MARGIN * 224 <= 500 < 2 * REDUCED_MARGIN * 224  # so that one level below 1,100 x 1,000 is used
    films = tmp_path / "films"
    os.makedirs(films)
    sources = [os.path.join(SAMPLE, label, name) for label, names in sample_films(2).items() for name in names]
    written = []
    for i, (syntax, source) in enumerate(zip(("j2k", "j2k-lossy", "jpeg", "j2k"), sources)):
        gray = np.asarray(Image.open(source).convert("L").resize((1100, 1000), Image.BICUBIC))
        name = f"{syntax}-{i}.dcm"
        if syntax == "jpeg":
            write_dicom(films / name, gray, bits=8, syntax="jpeg")
        else:
            write_dicom(films / name, twelve_bit(gray), syntax=syntax)
        written.append(name)
    j2k_by_pil(gray, films / "no-levels.dcm", num_resolutions=1)
    j2k_by_pil(gray, films / "tiled.dcm", tile_size=(512, 512))
    signed = pydicom.dcmread(write_dicom(films / "signed.dcm", twelve_bit(gray), syntax="j2k"))
    signed.PixelRepresentation = 1  # signed samples: left to pydicom
    signed.save_as(films / "signed.dcm")

    for name in written:
        reduced, whole = read_file(films / name), read_file(films / name, margin=1e6)
        assert reduced.reduced == "550x500 of 1100x1000" and whole.reduced is None, name
        assert np.abs(reduced.pixels.astype(int) - whole.pixels).mean() < 1.0, name
    for name in ("no-levels.dcm", "tiled.dcm", "signed.dcm"):
        decoded = read_file(films / name)
        assert decoded.reduced is None and decoded.decoded == (1100, 1000), name
        np.testing.assert_array_equal(decoded.pixels, np.asarray(resize_image(read_dicom(films / name), 224, "crop")))

    backbone = Backbone()
    extract_folder(backbone, str(films), str(tmp_path / "codes"), log=lambda *a: None)
    store = CodeStore(tmp_path / "codes")
    assert store.index["reduced"] == {name: "550x500 of 1100x1000" for name in written}
    codes = store.read(written).reshape(len(written), -1).astype(np.float64)
    batch = backbone.input_batch()
    for position, name in enumerate(written):
        put_image(batch, position, read_file(films / name, margin=1e6).pixels)
    reference = backbone.run(batch, len(written)).reshape(len(written), -1)
    similarity = (codes * reference).sum(1) / np.linalg.norm(codes, axis=1) / np.linalg.norm(reference, axis=1)
    assert similarity.min() >= 0.995, similarity  # 0.996-0.999 measured


def pydicom_headers():
    """{path relative to pydicom's test files: header} of every file there (sub-folders too) that parses as DICOM."""
    headers = {}
    for folder, _, names in os.walk(PYDICOM_FILES):
        for name in names:
            path = os.path.join(folder, name)
            try:
                headers[os.path.relpath(path, PYDICOM_FILES)] = _dataset(path, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - not DICOM (a text file, a broken one): no header to judge
                continue
    return headers


def test_pydicoms_own_files_are_read_only_where_their_header_says_chest_radiograph(tmp_path):
    """Every file of pydicom's own test data whose Modality is not a projection radiograph, or whose Body Part
    Examined is not the chest, is out of scope with the reason naming the value (and skipped by name when read);
    a DX chest film is read, a DX abdomen is not, and --allow-modality / --allow-body-part let them in."""
    headers = pydicom_headers()
    out, inside = {}, []
    for name, ds in headers.items():
        try:
            Scope().check(ds)
            inside.append(name)
        except OutOfScope as err:
            out[name] = err
    modality = {name: str(ds.get("Modality") or "").upper() for name, ds in headers.items()}
    foreign = {name for name, value in modality.items() if value in ("CT", "MR", "US", "NM", "OT", "RTDOSE", "SEG")}
    assert len(foreign) >= 100 and foreign <= set(out)  # 64 CT, 27 MR, 23 OT, 7 RTDOSE, 5 US, 4 NM, 2 SEG
    for name in foreign:
        assert out[name].reason == f"Modality {modality[name]}", name
        assert f"its Modality is {modality[name]}" in str(out[name]) and f"--allow-modality {modality[name]}" in str(
            out[name])
    spines = {name for name, ds in headers.items() if modality[name] == "CR"}  # CR films, of the cervical spine
    assert spines and all(out[name].reason == "Body Part Examined CSPINE" for name in spines)
    assert all(modality[name] in ("", "CR", "DX", "RG") for name in inside)  # in: no Modality given, nothing else

    # read through the View: named and skipped, the allow options let them in
    ct, mr = os.path.join(PYDICOM_FILES, "CT_small.dcm"), os.path.join(PYDICOM_FILES, "MR_small.dcm")
    with pytest.raises(ImageReadError, match=re.escape("CT_small.dcm: not a chest radiograph: its Modality is CT "
                                                       "(computed tomography), not a projection radiograph (CR, DX, "
                                                       "RG); --allow-modality CT reads it anyway")):
        View().read(ct)
    assert View(scope=Scope(["ct"])).read(ct).shape == (224, 224)
    assert View(scope=Scope(["ANY"])).read(mr).shape == (224, 224)
    with pytest.raises(ImageReadError, match="Modality is MR"):
        View(scope=Scope(["CT"])).read(mr)

    gray = gray_film()
    for part in ("CHEST", "thorax ", "", None):  # case and spaces aside; blank or absent: not given, not held against
        tags = {} if part is None else {"BodyPartExamined": part}
        assert View().read(radiograph(gray, tmp_path / "chest.dcm", **tags)).shape == (224, 224), part
    for modality_value in ("CR", "RG"):
        assert View().read(radiograph(gray, tmp_path / "film.dcm", Modality=modality_value)).shape == (224, 224)
    abdomen = radiograph(gray, tmp_path / "abdomen.dcm", BodyPartExamined="ABDOMEN")
    with pytest.raises(ImageReadError, match=re.escape("abdomen.dcm: not a chest radiograph: its Body Part Examined "
                                                       "is ABDOMEN, not CHEST, THORAX, LUNG; --allow-body-part "
                                                       "'ABDOMEN' reads it anyway")):
        View().read(abdomen)
    assert View(scope=Scope(body_parts=["Abdomen"])).read(abdomen).shape == (224, 224)
    mammogram = radiograph(gray, tmp_path / "mammogram.dcm", Modality="MG", BodyPartExamined="BREAST")
    assert "Modality is MG (mammography)" in View().decode_or_why(mammogram)[1]
    assert "Body Part Examined is BREAST" in View(scope=Scope(["MG"])).decode_or_why(mammogram)[1]
    assert View(scope=Scope(["MG"], ["ANY"])).decode_or_why(mammogram)[1] is None
    # what a codes index records: nothing for the default (older codes stay the same), the values added otherwise
    assert View().describe() == {"input_size": 224, "resize": "crop"}
    allowed = View(scope=Scope(["mg", "CT", "MG"], ["breast"]))
    assert allowed.describe()["allow_modality"] == ["CT", "MG"] and View.of(allowed.describe()) == allowed


def test_films_out_of_scope_are_left_out_of_the_split_and_counted_by_reason(tmp_path):
    """scraper.process --from-folders: pydicom's CT and MR slices and a written DX abdomen among 12 chest films are
    named and left out, counted by reason in split.json; --allow-modality / --allow-body-part keep them."""
    root = tmp_path / "export"
    for c, label in enumerate(("normal", "nodule")):
        os.makedirs(root / label)
        for i in range(6):
            radiograph(gray_film(seed=10 * c + i), root / label / f"IM{i:02d}.dcm", BodyPartExamined="CHEST")
    for name in ("CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm"):
        shutil.copy(os.path.join(PYDICOM_FILES, name), root / "nodule" / name)
    radiograph(gray_film(seed=97), root / "normal" / "abdomen", BodyPartExamined="ABDOMEN")  # no extension
    done = run_script("-m", "scraper.process", "--from-folders", root, tmp_path / "split")
    assert done.returncode == 0, done.stderr
    assert ("warning: leaving out nodule/CT_small.dcm: not a chest radiograph: its Modality is CT (computed "
            "tomography), not a projection radiograph (CR, DX, RG); --allow-modality CT reads it anyway") in done.stderr
    assert "leaving out normal/abdomen: not a chest radiograph: its Body Part Examined is ABDOMEN" in done.stderr
    info = json.loads((tmp_path / "split" / "split.json").read_text())
    assert info["dropped_by_reason"] == {"not a chest radiograph: Modality CT": 1,
                                         "not a chest radiograph: Modality MR": 2,
                                         "not a chest radiograph: Body Part Examined ABDOMEN": 1}
    assert info["images"]["train"] + info["images"]["test"] == 12

    kept = run_script("-m", "scraper.process", "--from-folders", root, tmp_path / "kept", "--allow-modality", "CT",
                      "MR", "--allow-body-part", "abdomen")
    assert kept.returncode == 0, kept.stderr
    info = json.loads((tmp_path / "kept" / "split.json").read_text())
    assert info["dropped"] == [] and info["images"]["train"] + info["images"]["test"] == 16
    assert info["allow_modality"] == ["CT", "MR"] and info["allow_body_part"] == ["ABDOMEN"]


def test_shared_patient_ids_without_a_grouping_are_warned_of(tmp_path):
    """DICOM films of 8 patients (3 films each) split without --group-by: the warning names --group-by patient and
    counts the patients the split put on both sides; with --group-by patient there is none."""
    root, patient_of = tmp_path / "export", {}
    for c, label in enumerate(("normal", "nodule")):
        os.makedirs(root / label)
        for i in range(12):
            patient = f"PID{label}{i // 3}"
            radiograph(gray_film(seed=10 * c + i), root / label / f"{label}{i:02d}.dcm", patient=patient)
            patient_of[f"{label}{i:02d}.png"] = patient
    done = run_script("-m", "scraper.process", "--from-folders", root, tmp_path / "split", "--test-fraction", "0.5")
    assert done.returncode == 0, done.stderr
    on = {side: {patient_of[name] for name in os.listdir(tmp_path / "split" / side)} for side in ("train", "test")}
    both = len(on["train"] & on["test"])
    assert both > 0  # 6 of 12 films a class drawn one by one: some patient lands on both sides
    assert (f"but 8 patients have several images (by their DICOM Patient ID) and {both} of them have images in both "
            f"train and test; --group-by patient keeps each patient on one side") in done.stderr
    info = json.loads((tmp_path / "split" / "split.json").read_text())
    assert info["leakage"]["patients_on_both_sides"] == both and "PID" not in json.dumps(info)  # no ID written
    grouped = run_script("-m", "scraper.process", "--from-folders", root, tmp_path / "grouped", "--group-by", "patient")
    assert grouped.returncode == 0 and "no --group-pattern" not in grouped.stderr, grouped.stderr
