"""The resize every reader ends with: the part of an image a view shows (``crop_box``) brought to the backbone's
square by PIL's bilinear resize (``resize_image``), and the pieces of that resize that the high-depth and the
reduced-resolution readers rebuild to give its pixels without the full 8-bit image."""

import numpy as np
from PIL import Image

RESIZE_MODES = ("crop", "squash")


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


def rows_read(height, top, bottom, size):
    """(first, last): the rows of a ``height``-row image the vertical pass of a resize of rows top..bottom to ``size``
    reads: its bilinear filter reaches max(1, scale) rows past the box, clipped to the image."""
    reach = int(max(1.0, (bottom - top) / size)) + 2
    return max(0, top - reach), min(height, bottom + reach)


def vertical_pass(across, size, top, bottom):
    """The vertical pass of PIL's resize of rows top..bottom to ``size``, on ``across`` (height x ``size`` uint8: the
    horizontal pass's output, rounded to 8 bits as PIL rounds it)."""
    return Image.fromarray(across, mode="L").resize((size, size), Image.BILINEAR, box=(0, top, size, bottom))


def bilinear_weights(start, end, length, size):
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
