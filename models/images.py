"""The one image loader: every step reads image files (PNG, JPEG, BMP, TIFF and DICOM, through ``models.dicom``)
through ``list_images`` and a ``View`` (``read_image`` / ``load_image`` underneath): what of the file the backbone
sees, at which size, and how the codes' index says so."""

import argparse
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from models.dicom import DICOM_EXTENSIONS, DicomError, dicom_size, has_dicom_magic, read_dicom
from models.errors import UserError

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
SIXTEEN_BIT_SCALE = 255.0 / 65535.0


def _scaled_to_8bit(pixels, scale):
    """The one formula of the depth conversion: clip(round(pixels x scale)) in float64, as uint8."""
    return np.clip(pixels.astype(np.float64) * scale, 0, 255).round().astype(np.uint8)


# that formula for every 16-bit value, so that a 16-bit row converts by table lookup, exactly
_SIXTEEN_BIT_TABLE = _scaled_to_8bit(np.arange(65536), SIXTEEN_BIT_SCALE)


def _strips(image, first=0, last=None):
    """(top, bottom, pixels) of rows ``first``..``last`` of a high-depth image, as numpy in strips of STRIP_PIXELS:
    the only copies of its pixels ever made (np.asarray(image) would copy it whole, and again to convert it)."""
    width = image.size[0]
    last = image.size[1] if last is None else last
    step = max(1, STRIP_PIXELS // max(width, 1))
    for top in range(first, last, step):
        bottom = min(top + step, last)
        yield top, bottom, np.asarray(image.crop((0, top, width, bottom)))


def _depth_converter(image):
    """A function from a strip of ``image`` (numpy, its own dtype) to uint8 pixels, for a 16-bit, 32-bit or float one.

    16-bit and 32-bit integers are scaled from the 16-bit range, so one density keeps one gray level in every image of
    a set; float images are taken as 0..1 when they fit in it (their maximum is found strip by strip), else as 0..255.
    """
    if image.mode.startswith("I;16"):
        return lambda pixels: _SIXTEEN_BIT_TABLE[pixels]
    if image.mode == "F":
        high = np.max([0.0] + [pixels.max(initial=0.0) for _, _, pixels in _strips(image)])  # NaN stays NaN
        scale = 255.0 if high <= 1.0 else 1.0
    else:
        scale = SIXTEEN_BIT_SCALE
    return lambda pixels: _scaled_to_8bit(pixels, scale)


def to_8bit(image):
    """Gray stays 'L' (3x less resize work than RGB), colour -> 'RGB' with alpha dropped, 16-bit/float -> 'L'.

    16-bit and 32-bit integers are scaled from the 16-bit range, so one density keeps one gray level in every
    image of a set; float images are taken as 0..1 when they fit in it, else as 0..255. A high-depth image is
    converted in strips, into the one full-size 8-bit copy (``read_image`` does not even make that one).
    """
    if image.mode in HIGH_DEPTH_MODES:
        convert = _depth_converter(image)
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


def resize_high_depth(image, size, resize):
    """``resize_image(to_8bit(image), size, resize)``, pixel for pixel, without a full-size copy of a high-depth image.

    PIL resizes an 8-bit image in two passes, each rounded to 8 bits: every row across (horizontal pass), then the
    columns of that (vertical pass). Rows are independent in the first, so it is made here strip by strip on rows
    just converted to 8 bits, with the same box and so the same coefficients; its output (``size`` x height, zero in
    the rows the vertical pass never reads) then goes through the vertical pass alone. The memory on top of the
    decoded image is a strip and that ``size``-wide column, not the 8-bit image nor any float64 copy of it.
    """
    width, height = image.size
    left, top, right, bottom = crop_box(width, height, resize)
    # rows the vertical pass reads: its bilinear filter reaches max(1, scale) rows past the box, clipped to the image
    reach = int(max(1.0, (bottom - top) / size)) + 2
    first, last = max(0, top - reach), min(height, bottom + reach)
    convert = _depth_converter(image)
    across = np.zeros((height, size), np.uint8)
    for strip_top, strip_bottom, pixels in _strips(image, first, last):
        rows = strip_bottom - strip_top
        strip = Image.fromarray(convert(pixels), mode="L")
        across[strip_top:strip_bottom] = np.asarray(strip.resize((size, rows), Image.BILINEAR,
                                                                box=(left, 0, right, rows)))
    return Image.fromarray(across, mode="L").resize((size, size), Image.BILINEAR, box=(0, top, size, bottom))


def read_image(path, size=224, resize="crop"):
    """Read one image file as uint8 pixels, ``size`` x ``size``: (size, size) for gray files, (size, size, 3) RGB for
    colour ones; ImageReadError if it cannot be read. Gray stays one channel so that feature extraction can spread it
    over the three input channels while it converts to float, in one pass."""
    return _read(path, size, resize)[0]


def _read(path, size, resize):
    """(``read_image``'s pixels, (width, height) of the file's image)."""
    try:
        if is_dicom_file(path):
            image = read_dicom(path)  # 8-bit gray, full size; Rows x Columns checked against PIL's limit first
            return np.asarray(resize_image(image, size, resize), dtype=np.uint8), image.size
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format == "JPEG":
                    image.draft("RGB", (size, size))  # decode at a reduced scale when the file allows it
                image.load()  # a 16-bit PNG decodes as 'I;16': 2 bytes a pixel, no wider copy
                if image.mode in HIGH_DEPTH_MODES:
                    resized = resize_high_depth(image, size, resize)
                else:
                    resized = resize_image(to_8bit(image), size, resize)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning,
            DicomError) as err:
        raise ImageReadError(f"{os.path.basename(os.fspath(path))}: not a readable image ({err})") from None
    return np.asarray(resized, dtype=np.uint8), image.size


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
    filled with the mean of the view. ``describe()`` is what a codes index records; ``View.of(meta)`` rebuilds it."""
    resize: str = "crop"
    field: str = "whole"
    box: tuple = LUNG_BOX
    size: int = INPUT_SIZE

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
                   box=tuple(meta.get("lung_box") or LUNG_BOX), size=meta.get("input_size") or INPUT_SIZE)

    def describe(self):
        """The codes index's record of the view; the field only where it is not the whole image, so that the codes of
        whole images made before fields existed are still the same codes."""
        described = {"input_size": self.size, "resize": self.resize}
        return dict(described, field=self.field, lung_box=list(self.box)) if self.field != "whole" else described

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
        pixels, (width, height) = _read(path, self.size, self.resize)
        if self.field == "whole":
            return pixels
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
        pixels = self.read(path)
        return np.repeat(pixels[:, :, None], 3, axis=2) if pixels.ndim == 2 else pixels

    def load_or_blank(self, path):
        """``load``, or a black image where the file cannot be read again (to draw an image that had a code)."""
        try:
            return self.load(path)
        except ImageReadError:
            return np.zeros((self.size, self.size, 3), np.uint8)
