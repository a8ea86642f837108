"""Reduced-resolution decoding: a film read at the coarsest resolution its file holds whose shorter side is still at
least ``REDUCED_MARGIN`` times the view's size (JPEG 2000 resolution levels, read from the codestream; JPEG DCT scaling
to 1/2, 1/4 or 1/8), and resized to the view as the full image would be: the JPEG 2000 low-pass samples through the
wavelet's own synthesis with the detail left out (``resize_reduced``), a scaled JPEG's block means with the crop box
scaled (``resize_scaled``)."""

import functools
import io
import math
import struct

import numpy as np
from PIL import Image

from models.resize import bilinear_weights, crop_box, rows_read, vertical_pass

# a file that can be decoded at a reduced resolution (JPEG DCT scaling, JPEG 2000 resolution levels) is decoded at the
# coarsest one whose shorter side is still at least this many times the view's size: at 1 the codes lose detail the
# network uses, at 2 they stay as close to a full decode's as two resizes of it are, at 4 the decode costs ~3x
# (measured in docs/pipeline.md)
REDUCED_MARGIN = 2


def codestream_levels(codestream):
    """(precision, decomposition levels, wavelet: "5-3" reversible or "9-7" irreversible) of a one-component, unsigned,
    untiled JPEG 2000 codestream, read from its SIZ and COD markers; None for anything else (several components, signed
    samples, tiles or an image offset, another wavelet, a JP2 file wrapped around it)."""
    if codestream[:4] != b"\xff\x4f\xff\x51" or len(codestream) < 45:
        return None
    width, height, left, top, tile_width, tile_height, tile_left, tile_top = struct.unpack_from(">8I", codestream, 8)
    components, sample = struct.unpack_from(">HB", codestream, 40)
    cod = codestream.find(b"\xff\x52", 4 + struct.unpack_from(">H", codestream, 4)[0])
    if components != 1 or sample & 0x80 or cod < 0 or cod + 14 > len(codestream):
        return None
    if left or top or tile_left or tile_top or tile_width < width or tile_height < height:
        return None  # tiles are transformed each on its own: their seams need the detail the low-pass band leaves out
    # Lcod, Scod, SGcod (4 bytes), then SPcod: levels, code-block width and height, style, wavelet
    wavelet = {0: "9-7", 1: "5-3"}.get(codestream[cod + 13])
    return ((sample & 0x7F) + 1, codestream[cod + 9], wavelet) if wavelet else None


def halvings(width, height, shortest, most):
    """How many times (at most ``most``) a ``width`` x ``height`` image can be halved, each halving rounding up, and
    keep its shorter side at least ``shortest`` pixels."""
    levels = 0
    while levels < most and -(-min(width, height) // (2 << levels)) >= shortest:
        levels += 1
    return levels


def draft_scaled(image, mode, shortest):
    """Have PIL decode the JPEG ``image`` in ``mode`` with DCT scaling, at the smallest scale (1/2, 1/4 or 1/8) whose
    shorter side is still at least ``shortest`` pixels; how many halvings that is (0: full size)."""
    levels = halvings(*image.size, shortest, 3)
    image.draft(mode, (max(image.size[0] >> levels, 1), max(image.size[1] >> levels, 1)))  # PIL scales by 2**levels
    return levels


def jpeg_block_means(codestream, width, shortest):
    """(uint8 block means, "blocks", 0.0) of the gray baseline JPEG ``codestream`` of an image ``width`` pixels wide,
    decoded with DCT scaling (``draft_scaled``); None where it is not gray or no scale below full size keeps
    ``shortest``."""
    image = Image.open(io.BytesIO(codestream), formats=["JPEG"])
    if image.mode != "L" or not draft_scaled(image, "L", shortest):
        return None
    image.load()
    return (np.asarray(image), "blocks", 0.0) if image.size[0] < width else None


def j2k_low_pass(codestream, width, height, bits, shortest):
    """(the stored values of the low-pass band, the wavelet "5-3" or "9-7", how far they stand above the full image's
    on average) of the one-component, unsigned JPEG 2000 ``codestream`` of a ``width`` x ``height`` image of ``bits``
    bits, at the coarsest level whose shorter side is still at least ``shortest`` pixels; None where that is not below
    full size or the codestream cannot be read so (``codestream_levels``)."""
    described = codestream_levels(codestream)
    if described is None or not 8 <= described[0] == bits:  # PIL scales precisions < 8 to 8 bits
        return None
    precision, most, wavelet = described
    levels = halvings(width, height, shortest, most)
    # PIL sizes a level by rounding to nearest where OpenJPEG rounds up, and refuses the level where the two differ
    while levels and any((side + (1 << levels >> 1)) >> levels != -(-side >> levels) for side in (width, height)):
        levels -= 1
    if not levels:
        return None
    image = Image.open(io.BytesIO(codestream), formats=["JPEG2000"])
    image.reduce = levels
    image.load()
    stored = np.asarray(image)
    if image.mode == "I;16":
        stored = stored >> (16 - precision)  # PIL scales samples to 16 bits
    # the reversible wavelet's integer lifting rounds down: on noisy values each of a level's two passes adds 1/4 to
    # the low-pass band on average (measured +0.50 a level on 12-bit films with detector noise, +0.42, +0.90, +1.41
    # at 1, 2, 3 levels on the 8-bit NIH radiographs; nothing where a film is flat)
    return stored, wavelet, levels / 2 if wavelet == "5-3" else 0.0


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
    return _banded(bilinear_weights(start, end, length, size) @ _rebuilt(length, levels, wavelet))


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
    first, last = rows_read(height, top, bottom, size)
    index, weights = _reduced_columns(width, levels, wavelet, left, right, size)
    across_samples = (np.asarray(samples, np.float32)[:, index] * weights).sum(axis=2)
    index, weights = _reduced_rows(height, levels, wavelet, first, last)
    across = np.zeros((height, size), np.uint8)
    across[first:last] = np.clip((across_samples[index] * weights[..., None]).sum(axis=1), 0, 255).round()
    return np.asarray(vertical_pass(across, size, top, bottom))


def resize_scaled(image, full_size, size, resize):
    """``resize_image`` of the full image (``full_size``: width, height) a JPEG decoded with DCT scaling stands for:
    each of its pixels is the mean of a block of the full image, where PIL's resize takes a pixel to be, so the full
    image's crop box is divided by the scale, fractions kept."""
    factor = 2 ** _halvings(full_size[0], image.size[0])
    box = [min(edge / factor, limit) for edge, limit in zip(crop_box(*full_size, resize), image.size * 2)]
    return image.resize((size, size), Image.BILINEAR, box=box)
