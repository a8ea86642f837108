"""DICOM files as the image loader (``models.images``) reads them: gray 8-bit pixels as a radiologist sees them.

The mapping, after pydicom (and its pylibjpeg plugins) has decoded the stored values (Bits Stored honoured, signed
values sign-extended): the modality LUT (Rescale Slope / Intercept, or a Modality LUT), then the first VOI LUT, else
the first Window Center / Width, else nothing; the result scaled from its full output range to 0..255, and inverted
for MONOCHROME1 so that bone is bright as in every PNG. Colour (RGB, YBR_*) becomes gray with the weights PIL uses
for a colour PNG. A file that cannot be read this way raises ``DicomError`` with the reason in a few words.

What is read at all is a chest radiograph, as far as the header says (``Scope``): a file whose Modality is not that of
a projection radiograph, or whose Body Part Examined is given and is not the chest, raises ``OutOfScope`` before any
pixel is decoded, unless the reader's ``Scope`` accepts that value too (--allow-modality / --allow-body-part).
"""

import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.pixelcap import over_pixel_cap
from models.reduced import j2k_low_pass, jpeg_block_means

DICOM_EXTENSIONS = (".dcm", ".dicom")
PREAMBLE = 128  # bytes before the "DICM" magic of a DICOM file (Part 10)
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")
GRAY = ("MONOCHROME1", "MONOCHROME2")
OUT_OF_SCOPE = "not a chest radiograph"  # how the reason of a file left out by its header begins


# pydicom warns of every non-conformance it reads past (what stops a file is said in DicomError's reasons); set aside
# once, for the process: warning filters are global, and catch_warnings in the decoding threads would race
warnings.filterwarnings("ignore", module=r"pydicom(\..*)?")


class DicomError(Exception):
    """A DICOM file whose pixels cannot be read as one gray image; the message is the reason."""


class OutOfScope(DicomError):
    """A DICOM file whose header says it is not a chest radiograph; the message is the reason and the option that
    would read it, ``reason`` the short form ('Modality CT') that counts such files."""

    def __init__(self, message, reason):
        super().__init__(message)
        self.reason = reason


# Modality (PS3.3 C.7.3.1.1.1) of a projection radiograph, what a chest film is: CR computed radiography (storage
# phosphor plates), DX digital radiography (flat panels), RG radiographic imaging (conventional film/screen,
# digitised). Not: MG (mammography), PX (panoramic dental), IO (intra-oral), XA / RF (angiography, fluoroscopy), nor
# the cross-sectional and other modalities (CT, MR, US, NM, PT, OT, RTDOSE, SEG, ...)
PROJECTION_MODALITIES = ("CR", "DX", "RG")
# Body Part Examined (PS3.16 Annex L, case-insensitive) of a chest film: CHEST, the defined term; THORAX and LUNG,
# which vendors write for it. Absent or blank: not given, so not held against the file
CHEST_BODY_PARTS = ("CHEST", "THORAX", "LUNG")
ANY = "ANY"  # --allow-modality ANY / --allow-body-part ANY: every value
MODALITY_NAMES = {"CT": "computed tomography", "MR": "magnetic resonance", "US": "ultrasound", "NM": "nuclear medicine",
                  "PT": "positron emission tomography", "OT": "other", "SC": "secondary capture",
                  "RTDOSE": "radiotherapy dose", "RTIMAGE": "radiotherapy image", "SEG": "segmentation",
                  "MG": "mammography", "PX": "panoramic dental X-ray", "IO": "intra-oral X-ray",
                  "XA": "X-ray angiography", "RF": "fluoroscopy", "ES": "endoscopy", "XC": "photograph"}


def _values(values):
    """Header values as the scope compares them: upper case, stripped, sorted, once each, blanks dropped."""
    return tuple(sorted({str(v).strip().upper() for v in values or () if str(v).strip()}))


@dataclass(frozen=True)
class Scope:
    """Which DICOM files are read as chest radiographs: Modality one of PROJECTION_MODALITIES or of ``modalities``,
    and Body Part Examined absent, one of CHEST_BODY_PARTS or of ``body_parts`` (ANY in either: every value)."""
    modalities: tuple = ()
    body_parts: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "modalities", _values(self.modalities))
        object.__setattr__(self, "body_parts", _values(self.body_parts))

    @classmethod
    def of(cls, meta):
        """The scope a codes index (or head.json's "backbone") records; none recorded is the default."""
        return cls(meta.get("allow_modality") or (), meta.get("allow_body_part") or ())

    def describe(self):
        """What a codes index records: the values accepted besides the default ones, only where there are any."""
        return {key: list(values) for key, values in (("allow_modality", self.modalities),
                                                      ("allow_body_part", self.body_parts)) if values}

    def plus(self, other):
        """The scope accepting what this one or ``other`` accepts."""
        return Scope(self.modalities + other.modalities, self.body_parts + other.body_parts)

    def check(self, ds):
        """OutOfScope where the header ``ds`` says the file is not a chest radiograph (an absent or blank value is
        not held against it)."""
        modality = str(ds.get("Modality") or "").strip().upper()
        if modality and modality not in PROJECTION_MODALITIES and modality not in self.modalities \
                and ANY not in self.modalities:
            named = f" ({MODALITY_NAMES[modality]})" if modality in MODALITY_NAMES else ""
            raise OutOfScope(f"{OUT_OF_SCOPE}: its Modality is {modality}{named}, not a projection "
                             f"radiograph ({', '.join(PROJECTION_MODALITIES)}); --allow-modality {modality} reads it "
                             f"anyway", f"Modality {modality}")
        part = str(ds.get("BodyPartExamined") or "").strip().upper()
        if part and part not in CHEST_BODY_PARTS and part not in self.body_parts and ANY not in self.body_parts:
            raise OutOfScope(f"{OUT_OF_SCOPE}: its Body Part Examined is {part}, not "
                             f"{', '.join(CHEST_BODY_PARTS)}; --allow-body-part '{part}' reads it anyway",
                             f"Body Part Examined {part}")


EVERY = Scope((ANY,), (ANY,))  # checks nothing: for a file whose scope was checked already, or that is not scored


def has_dicom_magic(path):
    """Whether the file starts with a DICOM preamble: 'DICM' at byte 128 (False for anything unreadable)."""
    try:
        with open(path, "rb") as f:
            return f.read(PREAMBLE + 4)[PREAMBLE:] == b"DICM"
    except OSError:
        return False


def _dataset(path, **options):
    """pydicom's dataset of a file (``options`` go to ``dcmread``); DicomError if it cannot be parsed."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, force=True, **options)
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as err:
        raise DicomError(f"not a readable DICOM file ({_short(err)})") from None


def _short(err):
    """An exception as one short line: its first line, at most 120 characters."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def dicom_header(path, scope=Scope()):
    """The header of a DICOM file (the pixel data left unread), after the checks that need no decoding: OutOfScope
    for one ``scope`` leaves out; DicomError with the reason for one that holds no single decodable image, or whose
    pixel data the file does not hold whole."""
    ds = _dataset(path, defer_size=1024)  # large values (the pixels) stay on disk
    scope.check(ds)
    _check_image(ds)
    _check_pixel_bytes(ds, path)
    return ds


def burned_in(ds):
    """Whether the header says the pixels carry burned-in text (Burned In Annotation YES: often the patient's name or
    ID). An absent attribute is no guarantee of the opposite."""
    return str(ds.get("BurnedInAnnotation") or "").strip().upper() == "YES"


def _check_pixel_bytes(ds, path):
    """DicomError where the file ends before its pixel data does, read from the element headers only: for native
    (uncompressed) pixels, their length against the file's size and against Rows x Columns x samples x bytes; for
    encapsulated ones, the fragments walked (8 bytes read each) to the sequence delimiter."""
    import os
    import struct

    raw = ds.get_item("PixelData", keep_deferred=True)
    start = getattr(raw, "value_tell", None)
    syntax = ds.file_meta.TransferSyntaxUID
    if start is None or syntax.is_deflated:  # read already (a small image), or offsets of the inflated stream
        return
    size = os.path.getsize(path)
    if not syntax.is_encapsulated:
        from pydicom.pixels.utils import get_expected_length

        try:
            needed = get_expected_length(ds, unit="bytes")  # subsampled YBR and 1-bit pixels counted right
        except (AttributeError, KeyError, TypeError, ValueError):
            needed = 0  # a header _check_image let through but this cannot size: the decoder will say more
        if start + raw.length > size:
            raise DicomError(f"truncated pixel data: the file ends {start + raw.length - size} bytes before the "
                             f"{raw.length} bytes of pixel data its header announces")
        if raw.length < needed:
            raise DicomError(f"pixel data of {raw.length} bytes, fewer than the {needed} its image needs (Rows x "
                             f"Columns x samples x bits)")
        return
    fragments, order = 0, "<" if syntax.is_little_endian else ">"
    with open(path, "rb") as f:
        f.seek(start)
        while True:
            head = f.read(8)
            if len(head) < 8:
                raise DicomError(f"truncated pixel data: the file ends after {max(fragments - 1, 0)} compressed "
                                 f"fragment(s), before the end of its pixel data")
            group, element, length = struct.unpack(order + "HHI", head)
            if (group, element) == (0xFFFE, 0xE0DD):  # the sequence delimiter: the pixel data is whole
                break
            if (group, element) != (0xFFFE, 0xE000) or f.seek(length, 1) > size:
                raise DicomError("truncated or damaged pixel data: its compressed fragments do not reach the end of "
                                 "the pixel data")
            fragments += 1
    if fragments < 2:  # the first item is the basic offset table
        raise DicomError("no compressed image in its pixel data (no fragment after the offset table)")


def patient_id(ds):
    """The Patient ID of a header, or None where it is absent or blank."""
    value = str(ds.get("PatientID") or "").strip()
    return value or None


def view_position(ds):
    """The View Position of a header (PA, AP, LL, ...), upper case, or "unknown" where it is absent or blank."""
    value = str(ds.get("ViewPosition") or "").strip().upper()
    return value or "unknown"


def dicom_size(path):
    """(width, height): Columns x Rows from the header, without reading the pixel data."""
    ds = _dataset(path, stop_before_pixels=True)
    if "Rows" not in ds or "Columns" not in ds:
        raise DicomError("no image in it (no Rows / Columns)")
    return int(ds.Columns), int(ds.Rows)


def _check_image(ds):
    """DicomError unless ``ds`` holds one decodable image of at most PIL's decompression-bomb limit of pixels (the cap
    PNGs have), checked before decoding."""
    from pydicom.pixels import get_decoder

    if "PixelData" not in ds:
        kind = ds.get("SOPClassUID")
        raise DicomError("no pixel data" + (f" (a {getattr(kind, 'name', kind)} object)" if kind else ""))
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except ValueError:
        raise DicomError(f"its Number of Frames {ds.get('NumberOfFrames')!r} is not a number") from None
    if frames > 1:
        raise DicomError(f"a multi-frame object ({frames} frames); one image per file is read")
    too_many = over_pixel_cap("Rows x Columns", int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0))
    if too_many:
        raise DicomError(too_many)
    interpretation = ds.get("PhotometricInterpretation")
    if interpretation not in GRAY + COLOUR:
        raise DicomError(f"photometric interpretation {interpretation!r} is not read (only {', '.join(GRAY + COLOUR)})")
    syntax = getattr(ds, "file_meta", None) and ds.file_meta.get("TransferSyntaxUID")
    if not syntax:
        raise DicomError("no transfer syntax in its file meta information")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DicomError(f"no decoder for its transfer syntax {syntax.name!r}") from None
    if not decoder.is_available:
        raise DicomError(f"no decoder installed for its transfer syntax {syntax.name!r}{_what_to_install(decoder)}")


def _decoder_hint(ds):
    """``_what_to_install`` for the decoder of ``ds``'s transfer syntax, where a plugin not installed would decode it
    (a 12-bit JPEG that only Pillow, which reads 8-bit JPEG alone, was there to try); else ''."""
    from pydicom.pixels import get_decoder

    try:
        return _what_to_install(get_decoder(ds.file_meta.TransferSyntaxUID), "may read it")
    except (NotImplementedError, AttributeError):
        return ""


def _what_to_install(decoder, effect="to read it"):
    """'; pip install ...' naming the package that would decode what ``decoder`` (pydicom's) cannot, where it is one
    of pylibjpeg's plugins (pylibjpeg-libjpeg is GPL-3.0 and left out of the ONNX runner's requirements); else ''."""
    missing = " ".join(decoder.missing_dependencies)
    for plugin in ("pylibjpeg-libjpeg", "pylibjpeg-openjpeg"):
        if plugin in missing:
            note = " (GPL-3.0: docs/licences.md)" if plugin == "pylibjpeg-libjpeg" else ""
            return f"; pip install pylibjpeg {plugin} {effect}{note}"
    return ""


def output_range(ds):
    """(low, high): the values the modality LUT can give for the stored values (Bits Stored, signed or not); the
    range a window maps onto (as pydicom's apply_windowing does), and the one used where there is no window."""
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.BitsStored)
    low, high = (0, 2 ** bits - 1) if int(ds.PixelRepresentation) == 0 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        low, high = sorted((low * slope + intercept, high * slope + intercept))
    return float(low), float(high)


def _to_8bit(values, low, high, exact=False):
    scaled = np.clip((np.asarray(values, np.float64) - low) * (255.0 / max(high - low, 1e-12)), 0, 255)
    return scaled.astype(np.float32) if exact else scaled.round().astype(np.uint8)


def _voi_lut(ds, values):
    """(the first VOI LUT applied to ``values``, the low and high of its output). Values below its first input map
    to its first entry, above its last to its last (PS3.3 C.11.2.1.1). Not pydicom's apply_voi: that one indexes
    with the LUT's own integer type and wraps past 255 for an 8-bit LUT of more than 256 entries."""
    item = ds.VOILUTSequence[0]
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    data = item.LUTData
    if isinstance(data, bytes):  # VR OW: 16-bit words in the file's byte order
        data = np.frombuffer(data, "<u2" if ds.file_meta.TransferSyntaxUID.is_little_endian else ">u2")
    table = np.asarray(data, np.float64).ravel()[:entries or 65536]
    index = np.clip(np.round(np.asarray(values, np.float64)) - first, 0, len(table) - 1).astype(np.int64)
    return table[index], 0.0, float(2 ** bits - 1)


def _gray_of(ds, stored, exact=False):
    """Stored gray values (any shape) as uint8: the modality LUT, the VOI LUT or the window, onto 0..255,
    MONOCHROME1 inverted; ``exact``: as float32, before the rounding to whole gray levels."""
    from pydicom.pixels import apply_modality_lut, apply_windowing

    values = apply_modality_lut(stored, ds)
    low, high = output_range(ds)
    if ds.get("VOILUTSequence"):
        mapped, low, high = _voi_lut(ds, values)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            mapped = apply_windowing(values, ds)
        except (ValueError, TypeError):  # an empty or impossible window (width < 1): the full range, as without one
            mapped = values
    else:
        mapped = values
    gray = _to_8bit(mapped, low, high, exact)
    return 255 - gray if ds.PhotometricInterpretation == "MONOCHROME1" else gray


def _gray_table(ds, exact=False):
    """The mapping of every stored value Bits Stored allows, as a uint8 (``exact``: float32) table indexed by value
    minus its lowest."""
    bits = int(ds.BitsStored)
    low = 0 if int(ds.PixelRepresentation) == 0 else -(2 ** (bits - 1))
    return _gray_of(ds, np.arange(low, low + 2 ** bits), exact), low


def gray_pixels(ds, exact=False):
    """The decoded image of ``ds`` as (rows, columns) uint8, mapped as the module says (``exact``: gray films as
    float32, not rounded to whole gray levels)."""
    stored = ds.pixel_array  # colour comes as RGB (YBR converted)
    bits = int(ds.BitsStored)
    if ds.PhotometricInterpretation in COLOUR:
        rgb = _to_8bit(stored, 0, 2 ** bits - 1)
        return np.asarray(Image.fromarray(rgb, mode="RGB").convert("L"))
    if bits > 16:
        return _gray_of(ds, stored, exact)
    # the mapping of every value Bits Stored allows, then one lookup per pixel: the same bytes, several times faster
    # than mapping a large film's pixels in float64
    table, low = _gray_table(ds, exact)
    return table[stored] if low == 0 else table[stored.astype(np.int32) - low]


def _reduced_stored(ds, shortest):
    """(the stored values, how they were sampled: see ``decode_dicom``, how far they stand above the full image's on
    average) of a one-component, unsigned JPEG 2000 or baseline JPEG image decoded at the coarsest resolution whose
    shorter side is still at least ``shortest`` pixels (JPEG 2000 resolution levels, JPEG DCT scaling to 1/2, 1/4 or
    1/8, both by PIL: ``models.reduced``); None where that is not below full size or not possible: the caller decodes
    in full."""
    from pydicom.encaps import generate_frames
    from pydicom.uid import JPEG2000, JPEG2000Lossless, JPEGBaseline8Bit

    syntax = ds.file_meta.TransferSyntaxUID
    if (syntax not in (JPEG2000, JPEG2000Lossless, JPEGBaseline8Bit) or ds.PhotometricInterpretation not in GRAY
            or int(ds.get("SamplesPerPixel") or 1) != 1 or int(ds.PixelRepresentation) != 0):
        return None
    width, height = int(ds.Columns), int(ds.Rows)
    try:
        codestream = next(generate_frames(ds.PixelData, number_of_frames=1))
        if syntax == JPEGBaseline8Bit:
            return jpeg_block_means(codestream, width, shortest) if int(ds.BitsStored) == 8 else None
        return j2k_low_pass(codestream, width, height, int(ds.BitsStored), shortest)
    except (OSError, ValueError, SyntaxError, StopIteration, Image.DecompressionBombError):
        return None


def decode_dicom(path, shortest=None, scope=Scope()):
    """(the image of a DICOM file as 8-bit gray, (width, height) of the file's image, how it was sampled).

    Full size: uint8 (rows, columns), sampled None. With ``shortest``, a JPEG 2000 or baseline JPEG film is decoded
    at the coarsest resolution whose shorter side is still at least that many pixels, if there is one below full size
    and it can be decoded so: JPEG 2000's low-pass samples (sampled "5-3" or "9-7", the codestream's wavelet: sample k
    on pixel k x 2**levels of the full image), float32 gray levels not rounded (``models.reduced.resize_reduced``
    rounds where a full decode does); a scaled JPEG's uint8 block means ("blocks"). DicomError with the reason if the
    file is not one decodable image (its size is checked before decoding); OutOfScope, before that, for one ``scope``
    leaves out."""
    ds = _dataset(path)
    scope.check(ds)
    _check_image(ds)
    full_size = int(ds.Columns), int(ds.Rows)
    try:
        reduced = _reduced_stored(ds, shortest) if shortest else None
        if reduced is not None:
            stored, sampled, shift = reduced
            table, _ = _gray_table(ds, exact=sampled != "blocks")
            if shift:
                values = np.arange(len(table))
                table = np.interp(values - shift, values, table).astype(np.float32)  # the mapping of value - shift
            pixels = table[np.minimum(stored, len(table) - 1)]
        else:
            pixels, sampled = gray_pixels(ds), None
    except Exception as err:  # noqa: BLE001 - a third-party decoder's failures have no common type
        raise DicomError(f"its pixel data cannot be decoded ({_short(err)}){_decoder_hint(ds)}") from None
    if pixels.ndim != 2:
        raise DicomError(f"pixel data of shape {pixels.shape}, not one image")
    return pixels, full_size, sampled


def read_dicom(path):
    """The image of a DICOM file as an 8-bit gray PIL image ('L'), full size, whatever its header says it shows (its
    scope is the caller's to check: scraper.process reads the header first); DicomError with the reason if it is not
    one decodable image (its size is checked before decoding)."""
    return Image.fromarray(decode_dicom(path, scope=EVERY)[0], mode="L")
