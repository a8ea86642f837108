"""High-depth images (16-bit, 32-bit integer and float PNG and TIFF) as 8-bit gray: the set's significant bits mapped
onto 0..255 (a PNG's sBIT chunk honoured), converted strip by strip so that no full-size copy wider than the decoded
image is ever made, and resized (``resize_high_depth``) to the pixels PIL's resize of the 8-bit image gives."""

import functools

import numpy as np
from PIL import Image

from models.pixelcap import over_pixel_cap
from models.resize import crop_box, rows_read, vertical_pass

HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
STRIP_PIXELS = 1 << 18  # high-depth pixels converted at a time: 2 MiB of float64 at most, whatever the image size
FULL_DEPTH = 16  # significant bits of a high-depth image where its set's were not measured (the old rule: 0..65535)
# significant bits recorded for a set of 8-bit films: its codes do not depend on any high-depth mapping, so a
# high-depth film given later is mapped from FULL_DEPTH (or from --significant-bits); the options take 9 and more
EIGHT_BIT = 8
# an integer image whose largest value is below 2**(depth - FEW_BITS) uses at most an eighth of the range it is mapped
# from: it reads as a nearly black film (under gray 32), and gets a warning naming its likely depth and the option
FEW_BITS = 3
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
    high = int(_largest(image))
    shift = 16 - depth if significant and depth <= 16 and high >> significant else 0
    notice = None
    if bits and high >> shift >= 2 ** bits:
        notice = (f"values up to {high} exceed the {bits} significant bits recorded for its set (the largest "
                  f"{2 ** bits - 1}): clipped to white")
    elif 0 < high >> shift < 2 ** (depth - FEW_BITS):
        notice = few_bits_notice(high >> shift, depth)
    if image.mode.startswith("I;16"):
        table = _depth_table(depth, shift)
        return (lambda pixels: table[pixels]), notice
    return (lambda pixels: _scaled_to_8bit(pixels >> shift, 255.0 / (2 ** depth - 1))), notice


def few_bits_notice(high, depth):
    """The warning of an integer image whose values use far fewer bits than the ``depth`` it is mapped from."""
    used = high.bit_length()
    return (f"values reach only {high}, {used} of the {depth} significant bits it is mapped from, so it reads nearly "
            f"black: likely a {used}-bit film in a {16 if depth <= 16 else 32}-bit file, not another kind of film; "
            f"give --significant-bits {used} (the detector's bits) to map it as its training films were")


def to_8bit(image, bits=None, significant=None):
    """Gray stays 'L' (3x less resize work than RGB), colour -> 'RGB' with alpha dropped, 16-bit/float -> 'L'.

    16-bit and 32-bit integers are scaled from 0..2**bits - 1 (``_depth_converter``); float images are taken as 0..1
    when they fit in it, else as 0..255. A high-depth image is converted in strips, into the one full-size 8-bit copy
    (``resize_high_depth`` does not even make that one).
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


def resize_high_depth(image, size, resize, bits=None, significant=None):
    """(``resize_image(to_8bit(image, bits, significant), size, resize)``, pixel for pixel, without a full-size copy of
    a high-depth image; the conversion's notice or None).

    PIL resizes an 8-bit image in two passes, each rounded to 8 bits: every row across (horizontal pass), then the
    columns of that (vertical pass). Rows are independent in the first, so it is made here strip by strip on rows
    just converted to 8 bits, with the same box and so the same coefficients; its output (``size`` x height, zero in
    the rows the vertical pass never reads) then goes through the vertical pass alone. The memory on top of the
    decoded image is a strip and that ``size``-wide column, not the 8-bit image nor any float64 copy of it. (The table
    into a full-size 8-bit image and PIL's own resize give the same pixels in the same time, but a peak of 143 MiB
    instead of 111 for one 6,000 x 6,000 film, where its 8-bit twin takes 74.)
    """
    width, height = image.size
    left, top, right, bottom = crop_box(width, height, resize)
    first, last = rows_read(height, top, bottom, size)
    convert, notice = _depth_converter(image, bits, significant)
    across = np.zeros((height, size), np.uint8)
    for strip_top, strip_bottom, pixels in _strips(image, first, last):
        rows = strip_bottom - strip_top
        strip = Image.fromarray(convert(pixels), mode="L")
        across[strip_top:strip_bottom] = np.asarray(strip.resize((size, rows), Image.BILINEAR,
                                                                box=(left, 0, right, rows)))
    return vertical_pass(across, size, top, bottom), notice


def raster_depth(path):
    """(significant bits, whether from an sBIT chunk, largest value or None) of a 16-bit or 32-bit integer image file
    that PIL reads (PNG, TIFF); None for any other image, an unreadable file or one over PIL's pixel cap (extraction
    names them)."""
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
