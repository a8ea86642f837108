"""What a ``View`` does to an image file, in words and numbers another program can follow without this project's
code: the ``input.how`` section of an exported classifier's metadata (``models.export``), from the file's bytes to
the float32 tensor the graph takes. Each rule here is the one ``models.images.read_file`` (with ``models.highdepth``,
``models.resize``, ``models.reduced`` and ``models.dicom``) applies; tests/test_onnx_runner.py rebuilds the input of
PNG films from these words alone, with numpy and Pillow, and matches the runner's."""

import math

from PIL import __version__ as PILLOW_VERSION

from models.highdepth import EIGHT_BIT, FULL_DEPTH
from models.reduced import REDUCED_MARGIN


def _significant_bits(view):
    bits = view.high_depth_bits or FULL_DEPTH
    measured = ("the training films were 8-bit (recorded as 8): a high-depth film is mapped from 16"
                if view.bits == EIGHT_BIT else
                "measured on the training set" if view.bits else "not measured (no high-depth training film): 16")
    return {
        "value": bits,
        "source": measured,
        "meaning": "how many of the low bits of a high-depth film's integer values carry the image in the films the "
                   "head was trained on: values 0 .. 2**value - 1 map onto 0..255, so one density keeps one gray "
                   "level in every film (a 12-bit detector's values in a 16-bit file are 0..4095, not 0..65535)",
        "integer_rule": "for Pillow modes I;16, I;16B, I;16L, I;16N (16-bit) and I (32-bit), the values v as "
                        "integers: (1) shift: where the file is a PNG whose sBIT chunk (before the first IDAT) gives "
                        "s significant bits (1..16) for its gray (first) channel and the image's largest value is at "
                        "least 2**s (its values are left-justified, as the PNG specification writes them), v = v >> "
                        "(16 - value); otherwise v is not shifted; (2) gray = clip(round(v * 255 / (2**value - 1)), "
                        "0, 255) in float64, round half to even; values above 2**value - 1 (after the shift) are "
                        "white, and the runner warns of them",
        "float_rule": "for Pillow mode F: gray = clip(round(v * 255), 0, 255) where every value is <= 1, else "
                      "clip(round(v), 0, 255); round half to even",
        "eight_bit": "8-bit films (Pillow modes L, RGB, P, ...) are used as they are: significant_bits does not "
                     "apply to them",
    }


def _crop(view):
    if view.resize == "crop":
        return {"mode": "crop", "rule": "the centre square: side = min(width, height); left = floor((width - side) "
                                        "/ 2); top = floor((height - side) / 2); box = (left, top, left + side, top "
                                        "+ side), in whole pixels of the full image (edges, right and bottom "
                                        "exclusive)"}
    return {"mode": "squash", "rule": "the whole image: box = (0, 0, width, height); its aspect ratio is not kept"}


def _field(view):
    if view.field == "whole":
        return {"field": "whole", "rule": "nothing filled: the resized view is the input"}
    inside = "outside" if view.field == "lungs" else "inside"
    return {"field": view.field, "lung_box": list(view.box),
            "rule": f"after the resize, the pixels {inside} the lung box are set to the mean of the {view.size} x "
                    f"{view.size} view (per channel, round half to even, as uint8). The lung box (left, top, right, "
                    "bottom fractions f of the full image's width and height) in the view's pixels: x = (f * width - "
                    f"box_left) * {view.size} / (box_right - box_left) for left and right, y = (f * height - "
                    f"box_top) * {view.size} / (box_bottom - box_top) for top and bottom, box being the crop box "
                    f"above; each clipped to 0..{view.size} and rounded half to even to a whole pixel; rows top.."
                    "bottom - 1 and columns left..right - 1 are inside"}


def input_how(view):
    """The ``input.how`` section of the metadata for images seen as ``view`` shows them (a ``models.images.View``)."""
    size, shortest = view.size, math.ceil(REDUCED_MARGIN * view.size)
    return {
        "steps": ["decode the file (Pillow; DICOM: see 'dicom')", "map it to 8-bit gray or 8-bit RGB ('modes', "
                  "'significant_bits')", "take the crop box ('crop')", f"resize the box to {size} x {size} "
                  "('resize')", "fill the field ('field')", "make the tensor ('tensor')"],
        "modes": {
            "L": "8-bit gray: as it is",
            "RGB": "8-bit colour: as it is, resized as RGB (not made gray)",
            "LA, 1": "Pillow's convert('L'): alpha dropped (not composited), 1-bit as 0 / 255",
            "P": "Pillow's convert('RGB') (a palette with transparency: convert('RGBA') first, then the alpha "
                 "dropped)",
            "RGBA, CMYK, YCbCr and any other 8-bit mode": "Pillow's convert('RGB'), alpha dropped",
            "I;16, I;16B, I;16L, I;16N, I, F": "high-depth: to 8-bit gray by 'significant_bits'",
        },
        "significant_bits": _significant_bits(view),
        "crop": _crop(view),
        "resize": {
            "call": f"Pillow: image.resize(({size}, {size}), Image.BILINEAR, box=box), reducing_gap None (no "
                    "reduce() first), on the 8-bit L or RGB image",
            "filter": "bilinear: a triangle of support 1 output pixel, widened to the scale (box side / "
                      f"{size}) when shrinking, so it is antialiased: every source pixel under the triangle "
                      "counts, weights normalised to sum 1; output pixel i is centred on box_start + (i + 0.5) * "
                      "scale",
            "passes": "two, separable: every row across first (horizontal), then the columns of that (vertical); "
                      "each pass in Pillow's fixed point and rounded to uint8 (0..255) before the next",
            "pillow_tested": PILLOW_VERSION,
        },
        "field": _field(view),
        "tensor": {"shape": ["N", 3, size, size], "dtype": "float32", "layout": "channels first (N, C, H, W)",
                   "channels": "R, G, B; a gray image's one channel repeated into all three",
                   "values": "the 8-bit values as they are, 0..255: no mean subtracted, no scaling (the graph "
                             "normalises them itself)"},
        "jpeg": "JPEG files (not DICOM) are decoded at a reduced scale where they are large: Pillow's "
                "draft('RGB', (width >> k, height >> k)) before loading, k (0..3) the most halvings that keep "
                f"ceil(min(width, height) / 2**k) >= {shortest} (k = 0: decoded in full); the crop box of the full "
                "image is then divided by 2**k (fractions kept, clipped to the decoded size) and the decoded image "
                "resized with it as above",
        "dicom": "DICOM files: the stored values (Bits Stored, signed ones sign-extended), the modality LUT "
                 "(Rescale Slope / Intercept, or a Modality LUT), then the first VOI LUT, else the first Window "
                 "Center / Width, else nothing; the result scaled from its full output range onto 0..255 (round "
                 "half to even), inverted for MONOCHROME1; colour made gray with Pillow's convert('L') weights; "
                 "then crop and resize as above. One-component JPEG 2000 and baseline JPEG films are decoded at "
                 f"the coarsest resolution whose shorter side is still >= {shortest} (models/reduced.py): a full "
                 "decode resized as above differs from them by about what two resizes of one film do "
                 "(docs/pipeline.md)",
    }
