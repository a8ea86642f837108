"""The front door of every step that reads images: which files of a folder are images (``list_images``,
``image_paths``), and what of one the backbone sees (``View``: its ``decode`` / ``load``, through ``read_file``).

PNG, JPEG, BMP and TIFF are read by PIL: high-depth ones mapped to 8 bits as ``models.highdepth`` says, JPEGs decoded
at a reduced scale where the view allows (``models.reduced``); DICOM files as ``models.dicom`` maps them, JPEG 2000
and JPEG films at a reduced resolution where the view allows.
"""

import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from models.dicom import DICOM_EXTENSIONS, DicomError, OutOfScope, Scope, decode_dicom, dicom_size, has_dicom_magic
from models.errors import UserError, one_line
from models.highdepth import EIGHT_BIT, HIGH_DEPTH_MODES, png_significant_bits, raster_depth, resize_high_depth, to_8bit
from models.pixelcap import over_pixel_cap
from models.reduced import LIFTING, REDUCED_MARGIN, draft_scaled, resize_reduced, resize_scaled
from models.resize import RESIZE_MODES, crop_box, resize_image
from models.runtime import DECODE_THREADS

RASTER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # read by PIL
# files read as images by their names; a file of any other name is one when it starts with the DICOM preamble
IMAGE_EXTENSIONS = RASTER_EXTENSIONS + DICOM_EXTENSIONS
INPUT_SIZE = 224  # pixels of the square the backbone sees


class ImageReadError(Exception):
    """An unreadable, corrupt or non-image file: ``reason`` says why; the message is the file's name, then it."""

    def __init__(self, path, reason):
        super().__init__(f"{os.path.basename(os.fspath(path))}: {reason}")
        self.path, self.reason = path, reason

    def __reduce__(self):  # a worker process hands it back whole
        return type(self), (self.path, self.reason)


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
            for folder in [given] + [os.path.join(given, name) for name in class_folders(given)]:
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
        raise ImageReadError(path, f"not a readable image ({err})") from None


def _file_depth(path):
    """``models.highdepth.raster_depth`` of a raster image file; None for a DICOM file (its header says how to map it)
    or a file not named like a raster image."""
    if is_dicom_file(path) or not os.fspath(path).lower().endswith(RASTER_EXTENSIONS):
        return None
    return raster_depth(path)


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


@dataclass(frozen=True)
class Decoded:
    """What reading one file gave: ``pixels``, uint8, (size, size) for a gray file and (size, size, 3) RGB for a colour
    one (gray stays one channel: feature extraction spreads it over the three input channels as it converts to float,
    in one pass); ``size``, (width, height) of the file's image; ``decoded``, the (width, height) decoded, smaller than ``size`` where the file allowed a reduced decode;
    ``notice``, something the reader should be told (values beyond the set's significant bits), or None."""
    pixels: np.ndarray
    size: tuple
    decoded: tuple
    notice: str = None

    @property
    def reduced(self):
        """'width x height of width x height' where the decode was reduced, else None."""
        return None if self.decoded == self.size else "{}x{} of {}x{}".format(*self.decoded, *self.size)


def read_file(path, size=INPUT_SIZE, resize="crop", bits=None, margin=REDUCED_MARGIN, scope=Scope()):
    """One image file read as ``size`` x ``size`` pixels of its centre square (``resize`` 'crop') or of all of it
    ('squash'), as a ``Decoded``; ImageReadError if it cannot be read, or is a DICOM file whose header says it is
    not a chest radiograph (``scope``, ``models.dicom.Scope``). ``bits``: the significant bits of a high-depth
    image's set; ``margin``: a reduced decode keeps the shorter side at least that many times ``size``."""
    shortest = math.ceil(margin * size)
    try:
        if is_dicom_file(path):
            gray, full_size, sampled = decode_dicom(path, shortest, scope)  # 8-bit gray; Rows x Columns checked first
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
        why = str(err) if isinstance(err, OutOfScope) else f"not a readable image ({err})"
        raise ImageReadError(path, why) from None
    return Decoded(np.asarray(resized, dtype=np.uint8), full_size, image.size, notice)


def warn_of_reading(write, path, decoded, why):
    """Say with ``write`` (a progress bar's) what a step that reads many files says of one (``View.decode_or_why``):
    that it was skipped and why, or the notice of its reading (values beyond the set's significant bits); the file
    named by ``path`` as given, as the results name it."""
    if why is not None:
        write(f"warning: skipped {one_line(path)}: {one_line(why)}", file=sys.stderr)
    elif decoded.notice:
        write(f"warning: {one_line(path)}: {decoded.notice}", file=sys.stderr)


def scoring_view(recorded, bits=None, scope=None, log=print):
    """The ``View`` a runner scores new images with: the one ``recorded`` (head.json's "backbone", or what an export
    records) describes, with the significant bits of high-depth films given to it (--significant-bits; said with
    ``log`` where they replace other recorded ones) and the DICOM ``scope`` it reads besides chest radiographs."""
    view = View.of(recorded)
    if bits is not None:
        if view.high_depth_bits not in (None, bits):
            log(f"notice: high-depth films mapped from {bits} significant bits (--significant-bits), not the "
                f"{view.high_depth_bits} recorded for the training films")
        view = replace(view, bits=bits)
    return replace(view, scope=view.scope.plus(scope)) if scope else view


def as_rgb(pixels):
    """A ``Decoded``'s pixels as (size, size, 3) uint8 RGB (gray repeated)."""
    return np.repeat(pixels[:, :, None], 3, axis=2) if pixels.ndim == 2 else pixels


# the lung field of a PA chest film: a fixed box, (left, top, right, bottom) as fractions of the image's width and
# height; wide enough for the lungs of most adult PA films, it leaves out most of the borders, where side markers, text,
# collimation edges and shoulders are
LUNG_BOX = (0.15, 0.12, 0.85, 0.88)
# what of the image the backbone sees: all of it; only the lung field (the rest filled with the image's mean); or all
# but the lung field (it filled so), to measure what a model gets from outside it
FIELDS = ("whole", "lungs", "outside")


@dataclass(frozen=True)
class View:
    """What the backbone sees of an image file: ``size`` x ``size`` pixels of its centre square (``resize='crop'``) or
    of all of it (``'squash'``), with ``field`` 'lungs' or 'outside' the part outside or inside ``box`` (``LUNG_BOX``)
    filled with the mean of the view; ``bits``, the significant bits of the set's high-depth (16-bit) images, which
    map 0..2**bits - 1 onto 0..255 (None: 16; ``EIGHT_BIT``: a set of 8-bit films, a high-depth one mapped from 16);
    ``scope``, the DICOM files read at all (``models.dicom.Scope``: chest radiographs by their headers, and what
    --allow-modality / --allow-body-part add). ``describe()`` is what a codes index records; ``View.of(meta)``
    rebuilds it."""
    resize: str = "crop"
    field: str = "whole"
    box: tuple = LUNG_BOX
    size: int = INPUT_SIZE
    bits: int = None
    scope: Scope = Scope()

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
                   bits=meta.get("significant_bits"), scope=Scope.of(meta))

    def describe(self):
        """The codes index's record of the view; the field only where it is not the whole image, the significant
        bits only where they were measured and the scope only where it accepts more than chest radiographs, so that
        codes made before any existed are still the same codes."""
        described = {"input_size": self.size, "resize": self.resize, **self.scope.describe()}
        if self.field != "whole":
            described.update(field=self.field, lung_box=list(self.box))
        return dict(described, significant_bits=self.bits) if self.bits else described

    @property
    def high_depth_bits(self):
        """The bits a high-depth film's values are mapped from (None: FULL_DEPTH): ``bits``, but for a set of 8-bit
        films (``EIGHT_BIT``), whose codes no high-depth mapping made."""
        return None if self.bits == EIGHT_BIT else self.bits

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
        """The pixels of ``path`` as this view shows it (``Decoded.pixels``); ImageReadError if it cannot be read."""
        return self.decode(path).pixels

    def decode_or_why(self, path):
        """(``decode(path)``, None), or (None, why the file cannot be read: its ImageReadError's reason)."""
        try:
            return self.decode(path), None
        except ImageReadError as err:
            return None, err.reason

    def decode(self, path):
        """``read``, as the ``Decoded`` that says what was read."""
        decoded = read_file(path, self.size, self.resize, self.high_depth_bits, scope=self.scope)
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
