"""The one image loader: every step reads image files (PNG, JPEG, BMP, TIFF and DICOM, through ``models.dicom``)
through ``list_images`` and a ``View`` (``read_image`` / ``load_image`` underneath): what of the file the backbone
sees, at which size, and how the codes' index says so."""

import argparse
import functools
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from models.dicom import (
    DICOM_EXTENSIONS,
    DicomError,
    decode_dicom,
    dicom_size,
    draft_scaled,
    has_dicom_magic,
    over_pixel_cap,
)
from models.errors import UserError

# every reader here checks PIL's pixel cap itself and says so; PIL's own warning of an image over it (Image.open's) is
# left out once, for the process: warning filters are global, and setting them in each decoding thread would race
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # read by PIL
# files read as images by their names; a file of any other name is one when it starts with the DICOM preamble
IMAGE_EXTENSIONS = RASTER_EXTENSIONS + DICOM_EXTENSIONS
RESIZE_MODES = ("crop", "squash")
INPUT_SIZE = 224  # pixels of the square the backbone sees


class ImageReadError(Exception):
    """An unreadable, corrupt or non-image file; the message names the reason."""


def is_image_name(folder, name):
    """Whether the entry ``name`` of ``folder`` is an image: not hidden (.name: macOS's ._name.png companions, editors'
    files), and named like one or, whatever its name (none, or a UID such as 1.2.840.113619...), a DICOM file."""
    if name.startswith("."):
        return False
    return name.lower().endswith(IMAGE_EXTENSIONS) or has_dicom_magic(os.path.join(folder, name))


def list_images(folder):
    """Sorted names (not paths) of the images (``is_image_name``) directly inside ``folder``.

    An entry that is named like an image but cannot be read as one (a broken link, a folder) is listed, so the step
    reading it skips it with a warning and names it, instead of dropping it unseen.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise UserError(f"image folder not found: {folder}")
    names = sorted(n for n in os.listdir(folder) if is_image_name(folder, n))
    if not names:
        raise UserError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}, or DICOM files of any name) in {folder}")
    return names


def class_folders(root):
    """Sorted names of the class folders of a folder of class folders: its subfolders but hidden ones."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def image_paths(inputs, skip=None):
    """Every image file named, or inside a folder named, or inside a sub-folder of one (a folder of class folders),
    in order; ``skip``: a folder left out (the run's output). UserError for a name that is neither, or no image."""
    paths = []
    skip = os.path.realpath(skip) if skip else None
    for given in inputs:
        if os.path.isdir(given):
            folders = [given] + [os.path.join(given, entry.name) for entry in sorted(os.scandir(given),
                                                                                    key=lambda e: e.name)
                                 if entry.is_dir() and not entry.name.startswith(".")]
            for folder in folders:
                if os.path.realpath(folder) != skip:
                    paths += [os.path.join(folder, name) for name in sorted(os.listdir(folder))
                              if is_image_name(folder, name)]
        elif os.path.lexists(given):
            paths.append(given)
        else:
            raise UserError(f"no such image or folder: {given!r}")
    if not paths:
        raise UserError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}, or DICOM files of any name) in "
                        f"{', '.join(map(repr, inputs))} or their sub-folders")
    return paths


def is_dicom_file(path):
    """Named .dcm / .dicom, or named otherwise but not like another kind of image and starting with the DICOM
    preamble (a file named like a PNG is never opened to look)."""
    name = os.fspath(path).lower()
    return name.endswith(DICOM_EXTENSIONS) or (not name.endswith(RASTER_EXTENSIONS) and has_dicom_magic(path))


def image_size(path):
    """(width, height) of an image file, from its header; ImageReadError if it cannot be read."""
    try:
        if is_dicom_file(path):
            return dicom_size(path)
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, ValueError, DicomError) as err:
        raise ImageReadError(f"{os.path.basename(os.fspath(path))}: not a readable image ({err})") from None


HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
STRIP_PIXELS = 1 << 18  # high-depth pixels converted at a time: 2 MiB of float64 at most, whatever the image size
FULL_DEPTH = 16  # significant bits of a high-depth image where its set's were not measured (the old rule: 0..65535)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _scaled_to_8bit(pixels, scale):
    """The one formula of the depth conversion: clip(round(pixels x scale)) in float64, as uint8."""
    return np.clip(pixels.astype(np.float64) * scale, 0, 255).round().astype(np.uint8)


@functools.lru_cache(maxsize=None)
def _depth_table(bits, shift):
    """That formula for every 16-bit value shifted right by ``shift``, over ``bits`` bits: a 16-bit row converts by
    table lookup, exactly."""
    return _scaled_to_8bit(np.arange(65536) >> shift, 255.0 / (2 ** bits - 1))


def png_significant_bits(path):
    """The significant bits a PNG's sBIT chunk gives its gray (or first) channel, or None: no sBIT before the image
    data, not a PNG, unreadable. Reads chunk headers only."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != PNG_SIGNATURE:
                return None
            while True:
                head = f.read(8)
                if len(head) < 8 or head[4:] in (b"IDAT", b"IEND"):
                    return None
                length = int.from_bytes(head[:4], "big")
                if head[4:] == b"sBIT":
                    value = f.read(1)
                    return value[0] if value and 0 < value[0] <= 16 else None
                f.seek(length + 4, 1)  # the data and its CRC
    except OSError:
        return None


def _strips(image, first=0, last=None):
    """(top, bottom, pixels) of rows ``first``..``last`` of a high-depth image, as numpy in strips of STRIP_PIXELS:
    the only copies of its pixels ever made (np.asarray(image) would copy it whole, and again to convert it)."""
    width = image.size[0]
    last = image.size[1] if last is None else last
    step = max(1, STRIP_PIXELS // max(width, 1))
    for top in range(first, last, step):
        bottom = min(top + step, last)
        yield top, bottom, np.asarray(image.crop((0, top, width, bottom)))


def _largest(image):
    """The largest value of a high-depth image, found strip by strip (NaN stays NaN)."""
    return np.max([0] + [pixels.max(initial=0) for _, _, pixels in _strips(image)])


def _depth_converter(image, bits=None, significant=None):
    """(a function from a strip of ``image`` (numpy, its own dtype) to uint8 pixels, a notice or None), for a 16-bit,
    32-bit or float image.

    Integers are scaled from 0..2**bits - 1, ``bits`` being the significant bits of the image's set (``View.bits``;
    None: 16, the old rule), so one density keeps one gray level in every image of a set; a value above it is
    clipped to white, with a notice. ``significant``: the file's own (a PNG's sBIT); where its values exceed that
    many bits, they are left-justified as the PNG specification writes them, and shifted down to ``bits`` first.
    Float images are taken as 0..1 when they fit in it, else as 0..255.
    """
    if image.mode == "F":
        scale = 255.0 if _largest(image) <= 1.0 else 1.0
        return (lambda pixels: _scaled_to_8bit(pixels, scale)), None
    depth = bits or FULL_DEPTH
    high = int(_largest(image)) if bits or significant else 0
    shift = 16 - depth if significant and depth <= 16 and high >> significant else 0
    notice = None
    if bits and high >> shift >= 2 ** bits:
        notice = (f"values up to {high} exceed the {bits} significant bits recorded for its set (the largest "
                  f"{2 ** bits - 1}): clipped to white")
    if image.mode.startswith("I;16"):
        table = _depth_table(depth, shift)
        return (lambda pixels: table[pixels]), notice
    return (lambda pixels: _scaled_to_8bit(pixels >> shift, 255.0 / (2 ** depth - 1))), notice


def to_8bit(image, bits=None, significant=None):
    """Gray stays 'L' (3x less resize work than RGB), colour -> 'RGB' with alpha dropped, 16-bit/float -> 'L'.

    16-bit and 32-bit integers are scaled from 0..2**bits - 1 (``_depth_converter``); float images are taken as 0..1
    when they fit in it, else as 0..255. A high-depth image is converted in strips, into the one full-size 8-bit copy
    (``read_image`` does not even make that one).
    """
    if image.mode in HIGH_DEPTH_MODES:
        convert, _ = _depth_converter(image, bits, significant)
        out = np.empty((image.size[1], image.size[0]), np.uint8)
        for top, bottom, pixels in _strips(image):
            out[top:bottom] = convert(pixels)
        return Image.fromarray(out, mode="L")
    if image.mode in ("RGB", "L"):
        return image
    if image.mode in ("LA", "1"):
        return image.convert("L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL warns on P -> RGB when the palette has transparency
    return image.convert("RGB")


def crop_box(width, height, resize):
    """The part of a ``width`` x ``height`` image that is resized: its centre square (``crop``) or all of it."""
    if resize == "crop":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return left, top, left + side, top + side
    if resize == "squash":
        return 0, 0, width, height
    raise ValueError(f"resize must be one of {RESIZE_MODES}, not {resize!r}")


def resize_image(image, size, resize):
    """Centre square crop then resize (``crop``, the original's way) or resize the whole image (``squash``)."""
    return image.resize((size, size), Image.BILINEAR, box=crop_box(*image.size, resize))


def _rows_read(height, top, bottom, size):
    """(first, last): the rows of a ``height``-row image the vertical pass of a resize of rows top..bottom to ``size``
    reads: its bilinear filter reaches max(1, scale) rows past the box, clipped to the image."""
    reach = int(max(1.0, (bottom - top) / size)) + 2
    return max(0, top - reach), min(height, bottom + reach)


def _vertical_pass(across, size, top, bottom):
    """The vertical pass of PIL's resize of rows top..bottom to ``size``, on ``across`` (height x ``size`` uint8: the
    horizontal pass's output, rounded to 8 bits as PIL rounds it)."""
    return Image.fromarray(across, mode="L").resize((size, size), Image.BILINEAR, box=(0, top, size, bottom))


def resize_high_depth(image, size, resize, bits=None, significant=None):
    """(``resize_image(to_8bit(image, bits, significant), size, resize)``, pixel for pixel, without a full-size copy of
    a high-depth image; the conversion's notice or None).

    PIL resizes an 8-bit image in two passes, each rounded to 8 bits: every row across (horizontal pass), then the
    columns of that (vertical pass). Rows are independent in the first, so it is made here strip by strip on rows
    just converted to 8 bits, with the same box and so the same coefficients; its output (``size`` x height, zero in
    the rows the vertical pass never reads) then goes through the vertical pass alone. The memory on top of the
    decoded image is a strip and that ``size``-wide column, not the 8-bit image nor any float64 copy of it.
    """
    width, height = image.size
    left, top, right, bottom = crop_box(width, height, resize)
    first, last = _rows_read(height, top, bottom, size)
    convert, notice = _depth_converter(image, bits, significant)
    across = np.zeros((height, size), np.uint8)
    for strip_top, strip_bottom, pixels in _strips(image, first, last):
        rows = strip_bottom - strip_top
        strip = Image.fromarray(convert(pixels), mode="L")
        across[strip_top:strip_bottom] = np.asarray(strip.resize((size, rows), Image.BILINEAR,
                                                                box=(left, 0, right, rows)))
    return _vertical_pass(across, size, top, bottom), notice


def _bilinear_weights(start, end, length, size):
    """(size, length) weights of PIL's bilinear resize of pixels start..end of a ``length``-pixel line to ``size``:
    a triangle as wide as the scale (antialiasing), normalised, as PIL's precompute_coeffs makes them."""
    scale = (end - start) / size
    width = max(scale, 1.0)
    weights = np.zeros((size, length))
    for out in range(size):
        centre = start + (out + 0.5) * scale
        low, high = max(int(centre - width + 0.5), 0), min(int(centre + width + 0.5), length)
        triangle = np.clip(1.0 - np.abs((np.arange(low, high) - centre + 0.5) / width), 0.0, None)
        weights[out, low:high] = triangle / triangle.sum()
    return weights


# JPEG 2000's two wavelets as lifting steps (ISO/IEC 15444-1 Annex F): the coefficients in the forward order, the
# first on the odd (detail) samples, then alternating; and the factor the inverse multiplies the low-pass band by
LIFTING = {"5-3": ((-0.5, 0.25), 1.0),
           "9-7": ((-1.586134342059924, -0.052980118572961, 0.882911075530934, 0.443506852043971), 1.230174104914001)}


@functools.lru_cache(maxsize=None)
def _synthesis_taps(wavelet):
    """The low-pass synthesis filter of ``wavelet`` (odd length, centred): its inverse lifting run on one low-pass
    sample with no detail ((0.5, 1, 0.5) for 5/3: linear interpolation)."""
    steps, scale = LIFTING[wavelet]
    line = np.zeros(4 * len(steps) + 1)  # each step reaches one sample further
    line[2 * len(steps)] = scale
    for position in reversed(range(len(steps))):
        neighbours = np.zeros_like(line)
        neighbours[1:-1] = line[:-2] + line[2:]
        parity = 1 - position % 2
        line[parity::2] -= steps[position] * neighbours[parity::2]
    used = np.flatnonzero(line)
    return line[used[0]:used[-1] + 1]


def _mirrored(index, length):
    """``index`` into a line of ``length`` samples extended symmetrically about its first and last one (JPEG 2000's
    extension)."""
    period = max(2 * (length - 1), 1)
    index = np.abs(index) % period
    return np.where(index < length, index, period - index)


def _rebuilt(length, levels, wavelet):
    """(length, samples): the line of ``length`` pixels rebuilt from its low-pass band ``levels`` levels down (JPEG
    2000's synthesis of ``wavelet`` with the detail bands left out; a level of n pixels has ceil(n / 2) samples)."""
    taps = _synthesis_taps(wavelet)
    reach = len(taps) // 2
    sizes = [-(-length >> level) for level in range(levels + 1)]
    rebuilt = np.eye(sizes[-1])
    for fine in reversed(sizes[:-1]):
        if fine == 1:  # a one-pixel line is its own low-pass band
            continue
        coarse, rebuilt = rebuilt, np.zeros((fine, rebuilt.shape[1]))
        pixels = np.arange(fine)
        for offset, tap in zip(range(-reach, reach + 1), taps):
            source = _mirrored(pixels - offset, fine)
            even = source % 2 == 0  # the odd ones hold the detail, left at zero
            rebuilt[pixels[even]] += tap * coarse[source[even] // 2]
    return rebuilt


def _banded(dense):
    """(index, weights), each (rows, band): row j of ``dense`` (rows, samples) applied to samples is
    sum(samples[index[j]] * weights[j]): its few nonzero weights (padded with zeros), so no matrix product (whose BLAS
    threads would spin beside the network's)."""
    samples = dense.shape[1]
    used = dense != 0
    first = used.argmax(axis=1)
    band = int((samples - used[:, ::-1].argmax(axis=1) - first).max())
    index = np.minimum(first[:, None] + np.arange(band), samples - 1)
    weights = np.where(first[:, None] + np.arange(band) < samples, np.take_along_axis(dense, index, axis=1), 0.0)
    return index, weights.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _reduced_columns(length, levels, wavelet, start, end, size):
    """``_banded``: output column j of the horizontal pass of PIL's resize of columns start..end of the full line,
    applied to the line rebuilt from its low-pass samples."""
    return _banded(_bilinear_weights(start, end, length, size) @ _rebuilt(length, levels, wavelet))


@functools.lru_cache(maxsize=8)
def _reduced_rows(length, levels, wavelet, first, last):
    """``_banded``: rows first..last of the full image rebuilt from its low-pass samples' rows."""
    return _banded(_rebuilt(length, levels, wavelet)[first:last])


def _halvings(full_width, reduced_width):
    """How many times a full image was halved to ``reduced_width`` (reduced sides are rounded up)."""
    return round(math.log2(full_width / reduced_width))


def resize_reduced(samples, full_size, size, resize, wavelet="5-3"):
    """``resize_image`` of the full image (``full_size``: width, height) that the low-pass band ``samples`` of a JPEG
    2000 ``wavelet`` ("5-3" or "9-7") stand for: gray levels, float or uint8, (rows, columns), sample k on pixel
    k x 2**levels of the full image.

    The full image is rebuilt from the samples by the wavelet's own synthesis with the detail left out (for 5/3,
    linear interpolation), never in memory: the horizontal pass of PIL's bilinear resize of the full rows is, on the
    samples' rows, a weighted sum of a few samples per output pixel; the rows between them are rebuilt and rounded to
    8 bits as PIL rounds them, and PIL's own vertical pass follows. Its codes stay as close to those of a full decode
    as two resizes of one film are to each other (docs/pipeline.md).
    """
    width, height = full_size
    rows, columns = samples.shape
    levels = _halvings(width, columns)
    if (rows, columns) != (-(-height >> levels), -(-width >> levels)):
        raise ValueError(f"{columns}x{rows} samples are not a JPEG 2000 level of a {width}x{height} image")
    left, top, right, bottom = crop_box(width, height, resize)
    first, last = _rows_read(height, top, bottom, size)
    index, weights = _reduced_columns(width, levels, wavelet, left, right, size)
    across_samples = (np.asarray(samples, np.float32)[:, index] * weights).sum(axis=2)
    index, weights = _reduced_rows(height, levels, wavelet, first, last)
    across = np.zeros((height, size), np.uint8)
    across[first:last] = np.clip((across_samples[index] * weights[..., None]).sum(axis=1), 0, 255).round()
    return np.asarray(_vertical_pass(across, size, top, bottom))


def resize_scaled(image, full_size, size, resize):
    """``resize_image`` of the full image (``full_size``: width, height) a JPEG decoded with DCT scaling stands for:
    each of its pixels is the mean of a block of the full image, where PIL's resize takes a pixel to be, so the full
    image's crop box is divided by the scale, fractions kept."""
    factor = 2 ** _halvings(full_size[0], image.size[0])
    box = [min(edge / factor, limit) for edge, limit in zip(crop_box(*full_size, resize), image.size * 2)]
    return image.resize((size, size), Image.BILINEAR, box=box)


def usable_cores():
    """The number of processors this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# files decoded at once (while the network runs, in models.extract): PIL releases the GIL while decoding PNG and JPEG
# and resizing, so each thread keeps a core busy; OpenJPEG (JPEG 2000) holds it, but decodes each image on
# OPJ_NUM_THREADS threads of its own (models.runtime). At most 8: each holds one decoded image, up to ~170 MB for a
# 9,400 x 9,400 16-bit PNG.
DECODE_THREADS = min(max(2, usable_cores()), 8)


def _file_depth(path):
    """(significant bits, whether from an sBIT chunk, largest value or None) of a 16-bit or 32-bit integer raster
    image (PNG, TIFF); None for any other file, a DICOM file (its header says how to map it), an unreadable one or one
    over PIL's pixel cap (extraction names them)."""
    if is_dicom_file(path) or not os.fspath(path).lower().endswith(RASTER_EXTENSIONS):
        return None
    try:
        with Image.open(path) as image:
            if image.mode not in HIGH_DEPTH_MODES or image.mode == "F":
                return None
            if over_pixel_cap("", image.size[0] * image.size[1]):
                return None
            significant = png_significant_bits(path) if image.format == "PNG" else None
            if significant:
                return significant, True, None  # no decoding
            image.load()
            largest = int(_largest(image))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return max(largest.bit_length(), 1), False, largest


def measure_depth(paths, bar=None):
    """(significant bits, a sentence saying how they were found) of the 16-bit (or 32-bit integer) images among
    ``paths``: the largest of what their PNG sBIT chunks say, and of the bit lengths of the largest values of those
    without one (decoded on DECODE_THREADS threads); (None, None) where there is no such image.
    ``bar``: a progress bar."""
    found = []
    with ThreadPoolExecutor(DECODE_THREADS) as pool:  # PIL decodes PNG and TIFF without holding the GIL
        for depth in pool.map(_file_depth, paths):
            found += [depth] if depth else []
            if bar is not None:
                bar.update(1)
    if not found:
        return None, None
    bits = max(depth[0] for depth in found)
    chunks = sum(1 for depth in found if depth[1])
    largest = max((depth[2] for depth in found if depth[2] is not None), default=None)
    how = [f"{chunks} from their sBIT chunk"] if chunks else []
    how += [f"{len(found) - chunks} from their largest value ({largest})"] if largest is not None else []
    return bits, f"{len(found)} high-depth images, {bits} significant bits ({', '.join(how)})"


# a file that can be decoded at a reduced resolution (JPEG DCT scaling, JPEG 2000 resolution levels) is decoded at the
# coarsest one whose shorter side is still at least this many times the view's size: at 1 the codes lose detail the
# network uses, at 2 they stay as close to a full decode's as two resizes of it are, at 4 the decode costs ~3x
# (measured in docs/pipeline.md)
REDUCED_MARGIN = 2


@dataclass(frozen=True)
class Decoded:
    """What reading one file gave: ``pixels`` as ``read_image`` returns them; ``size``, (width, height) of the file's
    image; ``decoded``, the (width, height) decoded, smaller than ``size`` where the file allowed a reduced decode;
    ``notice``, something the reader should be told (values beyond the set's significant bits), or None."""
    pixels: np.ndarray
    size: tuple
    decoded: tuple
    notice: str = None

    @property
    def reduced(self):
        """'width x height of width x height' where the decode was reduced, else None."""
        return None if self.decoded == self.size else "{}x{} of {}x{}".format(*self.decoded, *self.size)


def read_image(path, size=224, resize="crop"):
    """Read one image file as uint8 pixels, ``size`` x ``size``: (size, size) for gray files, (size, size, 3) RGB for
    colour ones; ImageReadError if it cannot be read. Gray stays one channel so that feature extraction can spread it
    over the three input channels while it converts to float, in one pass."""
    return read_file(path, size, resize).pixels


def read_file(path, size=INPUT_SIZE, resize="crop", bits=None, margin=REDUCED_MARGIN):
    """``read_image`` as a ``Decoded``; ``bits``: the significant bits of a high-depth image's set; ``margin``: a
    reduced decode keeps the shorter side at least that many times ``size``."""
    shortest = math.ceil(margin * size)
    try:
        if is_dicom_file(path):
            gray, full_size, sampled = decode_dicom(path, shortest)  # 8-bit gray; Rows x Columns checked first
            decoded = gray.shape[1], gray.shape[0]
            if sampled in LIFTING:
                return Decoded(resize_reduced(gray, full_size, size, resize, sampled), full_size, decoded)
            image = Image.fromarray(gray, mode="L")
            resized = resize_scaled(image, full_size, size, resize) if sampled else resize_image(image, size, resize)
            return Decoded(np.asarray(resized), full_size, decoded)
        notice = None
        with Image.open(path) as image:
            full_size = image.size
            too_many = over_pixel_cap("{} x {}".format(*full_size), full_size[0] * full_size[1])
            if too_many:
                raise ValueError(too_many)
            if image.format == "JPEG":
                draft_scaled(image, "RGB", shortest)  # decode at a reduced scale when the file allows it
            image.load()  # a 16-bit PNG decodes as 'I;16': 2 bytes a pixel, no wider copy
            if image.mode in HIGH_DEPTH_MODES:
                significant = png_significant_bits(path) if image.format == "PNG" else None
                resized, notice = resize_high_depth(image, size, resize, bits, significant)
            elif image.size != full_size:  # decoded with DCT scaling
                resized = resize_scaled(to_8bit(image), full_size, size, resize)
            else:
                resized = resize_image(to_8bit(image), size, resize)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning,
            DicomError) as err:  # the warning where a caller made it an error
        raise ImageReadError(f"{os.path.basename(os.fspath(path))}: not a readable image ({err})") from None
    return Decoded(np.asarray(resized, dtype=np.uint8), full_size, image.size, notice)


def as_rgb(pixels):
    """``read_image``'s pixels as (size, size, 3) uint8 RGB (gray repeated)."""
    return np.repeat(pixels[:, :, None], 3, axis=2) if pixels.ndim == 2 else pixels


def load_image(path, size=224, resize="crop"):
    """Read one image file as a (size, size, 3) uint8 RGB array (gray repeated); ImageReadError if it cannot be read."""
    return View(resize=resize, size=size).load(path)


# the lung field of a PA chest film: a fixed box, (left, top, right, bottom) as fractions of the image's width and
# height; wide enough for the lungs of most adult PA films, it leaves out most of the borders, where side markers, text,
# collimation edges and shoulders are
LUNG_BOX = (0.15, 0.12, 0.85, 0.88)
# what of the image the backbone sees: all of it; only the lung field (the rest filled with the image's mean); or all
# but the lung field (it filled so), to measure what a model gets from outside it
FIELDS = ("whole", "lungs", "outside")


def lung_box_arg(text):
    """The argparse type of --lung-box: 'left,top,right,bottom' fractions (``View`` checks them)."""
    try:
        box = tuple(float(part) for part in text.split(","))
        if len(box) == 4:
            return View(box=box).box
    except (ValueError, UserError):
        pass
    raise argparse.ArgumentTypeError(f"{text!r} is not left,top,right,bottom fractions of the image with "
                                     f"0 <= left < right <= 1 and 0 <= top < bottom <= 1 (e.g. "
                                     f"{','.join(map(str, LUNG_BOX))})")


@dataclass(frozen=True)
class View:
    """What the backbone sees of an image file: ``size`` x ``size`` pixels of its centre square (``resize='crop'``) or
    of all of it (``'squash'``), with ``field`` 'lungs' or 'outside' the part outside or inside ``box`` (``LUNG_BOX``)
    filled with the mean of the view; ``bits``, the significant bits of the set's high-depth (16-bit) images, which
    map 0..2**bits - 1 onto 0..255 (None: 16). ``describe()`` is what a codes index records; ``View.of(meta)``
    rebuilds it."""
    resize: str = "crop"
    field: str = "whole"
    box: tuple = LUNG_BOX
    size: int = INPUT_SIZE
    bits: int = None

    def __post_init__(self):
        if self.resize not in RESIZE_MODES or self.field not in FIELDS:
            raise ValueError(f"resize must be one of {RESIZE_MODES} and field one of {FIELDS}")
        x0, y0, x1, y1 = self.box
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise UserError(f"the lung box must be left,top,right,bottom fractions with 0 <= left < right <= 1 and "
                            f"0 <= top < bottom <= 1; got {','.join(map(str, self.box))}")

    @classmethod
    def of(cls, meta):
        """The view a codes index (or a head.json's "backbone") records; what older ones did not record is the default."""
        return cls(resize=meta.get("resize") or "crop", field=meta.get("field") or "whole",
                   box=tuple(meta.get("lung_box") or LUNG_BOX), size=meta.get("input_size") or INPUT_SIZE,
                   bits=meta.get("significant_bits"))

    def describe(self):
        """The codes index's record of the view; the field only where it is not the whole image and the significant
        bits only where they were measured, so that codes made before either existed are still the same codes."""
        described = {"input_size": self.size, "resize": self.resize}
        if self.field != "whole":
            described.update(field=self.field, lung_box=list(self.box))
        return dict(described, significant_bits=self.bits) if self.bits else described

    def region(self, width, height):
        """(left, top, right, bottom) of a ``width`` x ``height`` image that the view shows."""
        return crop_box(width, height, self.resize)

    def field_box(self, width, height):
        """(left, top, right, bottom) of ``box`` in the view's pixels, for a ``width`` x ``height`` image: clipped to
        the view (with ``crop`` the box may reach past the centre square)."""
        left, top, right, bottom = self.region(width, height)
        x0, y0, x1, y1 = self.box
        across = lambda f: (f * width - left) * self.size / (right - left)  # noqa: E731
        down = lambda f: (f * height - top) * self.size / (bottom - top)  # noqa: E731
        return tuple(int(round(min(max(value, 0), self.size))) for value in (across(x0), down(y0), across(x1),
                                                                             down(y1)))

    def read(self, path):
        """``read_image`` of ``path`` as this view shows it; ImageReadError if it cannot be read."""
        return self.decode(path).pixels

    def decode(self, path):
        """``read``, as the ``Decoded`` that says what was read."""
        decoded = read_file(path, self.size, self.resize, self.bits)
        if self.field == "whole":
            return decoded
        return replace(decoded, pixels=self._fill(decoded.pixels, *decoded.size))

    def _fill(self, pixels, width, height):
        """``pixels`` of a ``width`` x ``height`` image with the part outside (field 'lungs') or inside ('outside')
        the box filled with their mean."""
        pixels = pixels.copy()  # PIL's buffer is read-only
        left, top, right, bottom = self.field_box(width, height)
        fill = np.round(pixels.reshape(self.size * self.size, -1).mean(axis=0)).astype(np.uint8).reshape(
            pixels.shape[2:])
        if self.field == "outside":
            pixels[top:bottom, left:right] = fill
        else:
            inside = pixels[top:bottom, left:right].copy()
            pixels[:] = fill
            pixels[top:bottom, left:right] = inside
        return pixels

    def load(self, path):
        """``read`` as (size, size, 3) uint8 RGB (gray repeated)."""
        return as_rgb(self.read(path))

    def load_or_blank(self, path):
        """``load``, or a black image where the file cannot be read again (to draw an image that had a code)."""
        try:
            return self.load(path)
        except ImageReadError:
            return np.zeros((self.size, self.size, 3), np.uint8)
