"""The one image loader: every step reads image files through ``list_images`` and ``read_image`` / ``load_image``."""

import os
import warnings

import numpy as np
from PIL import Image

from models.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
RESIZE_MODES = ("crop", "squash")


class ImageReadError(Exception):
    """An unreadable, corrupt or non-image file; the message names the reason."""


def list_images(folder):
    """Sorted file names (not paths) of the images directly inside ``folder``."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise UserError(f"image folder not found: {folder}")
    names = sorted(n for n in os.listdir(folder)
                   if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise UserError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return names


HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def to_8bit(image):
    """Gray stays 'L' (3x less resize work than RGB), colour -> 'RGB' with alpha dropped, 16-bit/float -> 'L'.

    16-bit and 32-bit integers are scaled from the 16-bit range, so one density keeps one gray level in every
    image of a set; float images are taken as 0..1 when they fit in it, else as 0..255.
    """
    if image.mode in HIGH_DEPTH_MODES:
        pixels = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            scale = 255.0 if pixels.max(initial=0.0) <= 1.0 else 1.0
        else:
            scale = 255.0 / 65535.0
        return Image.fromarray(np.clip(pixels * scale, 0, 255).round().astype(np.uint8), mode="L")
    if image.mode in ("RGB", "L"):
        return image
    if image.mode in ("LA", "1"):
        return image.convert("L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL warns on P -> RGB when the palette has transparency
    return image.convert("RGB")


def resize_image(image, size, resize):
    """Centre square crop then resize (``crop``, the original's way) or resize the whole image (``squash``)."""
    if resize == "crop":
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        box = (left, top, left + side, top + side)
    elif resize == "squash":
        box = None
    else:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, not {resize!r}")
    return image.resize((size, size), Image.BILINEAR, box=box)


def read_image(path, size=224, resize="crop"):
    """Read one image file as uint8 pixels, ``size`` x ``size``: (size, size) for gray files, (size, size, 3) RGB for
    colour ones; ImageReadError if it cannot be read. Gray stays one channel so that feature extraction can spread it
    over the three input channels while it converts to float, in one pass."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format == "JPEG":
                    image.draft("RGB", (size, size))  # decode at a reduced scale when the file allows it
                image.load()
                resized = resize_image(to_8bit(image), size, resize)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageReadError(f"{os.path.basename(os.fspath(path))}: not a readable image ({err})") from None
    return np.asarray(resized, dtype=np.uint8)


def load_image(path, size=224, resize="crop"):
    """Read one image file as a (size, size, 3) uint8 RGB array (gray repeated); ImageReadError if it cannot be read."""
    pixels = read_image(path, size, resize)
    return np.repeat(pixels[:, :, None], 3, axis=2) if pixels.ndim == 2 else pixels
