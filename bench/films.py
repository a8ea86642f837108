"""Films as hospitals export them, written from 8-bit radiographs for the benches and the tests (the one DICOM writer
of both): 12-bit values in a DX DICOM (uncompressed, RLE, JPEG 2000 lossless or lossy, baseline JPEG) or in a 16-bit
PNG, with or without an sBIT chunk."""

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

# how the exports below hold an 8-bit gray level v: the 12-bit value v x 16 + 8 (the middle of its 16 levels)
TWELVE_BIT = 12
FILM_SHAPE = (2500, 2048)  # rows, columns: a 35 x 43 cm detector at ~0.17 mm (a DR chest film)


def twelve_bit(gray):
    """The 12-bit values of 8-bit gray levels: v x 16 + 8, 8..4088."""
    return np.asarray(gray, np.uint16) * 16 + 8


def large_film(gray, seed):
    """(12-bit values, 8-bit gray levels) of an 8-bit radiograph upsampled (bicubic) to a DR film's FILM_SHAPE, the
    12-bit values with detector noise (normal, 6 of 4,096 levels, from ``seed``)."""
    rows, columns = FILM_SHAPE
    upsampled = np.asarray(Image.fromarray(np.asarray(gray, np.uint8)).resize((columns, rows), Image.BICUBIC))
    noise = np.random.default_rng(seed).normal(0.0, 6.0, upsampled.shape)
    return np.clip(np.round(twelve_bit(upsampled) + noise), 0, 4095).astype(np.uint16), upsampled


def write_png16(path, values, significant=None):
    """``values`` (uint16) as a 16-bit gray PNG as they are; ``significant``: an sBIT chunk saying that many bits."""
    info = None
    if significant:
        info = PngInfo()
        info.add(b"sBIT", bytes([significant]))
    Image.fromarray(np.asarray(values, np.uint16)).save(path, pnginfo=info)


def write_dicom(path, stored, bits=TWELVE_BIT, syntax="uncompressed", window=None, ratio=None, **tags):
    """``stored`` values as a DX DICOM film with a preamble: ``syntax`` 'uncompressed', 'rle' (RLE lossless), 'j2k'
    (JPEG 2000 lossless), 'j2k-lossy' (JPEG 2000 at ``ratio``:1), or 'jpeg' (baseline, 8-bit ``stored`` only);
    ``window`` (center, width) or none; ``tags`` set as given, last (PhotometricInterpretation='MONOCHROME1' makes a
    film whose larger values are darker)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        JPEG2000,
        DigitalXRayImageStorageForPresentation,
        ExplicitVRLittleEndian,
        JPEG2000Lossless,
        JPEGBaseline8Bit,
        RLELossless,
        generate_uid,
    )

    stored = np.asarray(stored)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.Rows, ds.Columns = "DX", *stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    for key, value in tags.items():
        setattr(ds, key, value)
    if syntax == "jpeg":
        import io

        from pydicom.encaps import encapsulate

        encoded = io.BytesIO()
        Image.fromarray(stored.astype(np.uint8), mode="L").save(encoded, format="JPEG", quality=95)
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate([encoded.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    else:
        ds.PixelData = stored.astype("<u2" if bits > 8 else np.uint8).tobytes()
        if syntax == "rle":
            ds.compress(RLELossless)
        elif syntax == "j2k":
            ds.compress(JPEG2000Lossless)
        elif syntax == "j2k-lossy":
            ds.compress(JPEG2000, j2k_cr=[ratio or 10])
        elif syntax != "uncompressed":
            raise ValueError(f"unknown syntax {syntax!r}")
    ds.save_as(path, enforce_file_format=True)
    return path
