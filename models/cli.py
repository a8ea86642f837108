"""The command-line options several scripts share, each defined once: every entry point builds its parser from these
``add_..._arguments`` helpers (and ``run_cli`` in ``models.errors`` turns its errors into one line)."""

import argparse

from models.devices import GPU_SPEC_HELP
from models.dicom import ANY, CHEST_BODY_PARTS, PROJECTION_MODALITIES, Scope
from models.errors import UserError
from models.images import FIELDS, LUNG_BOX, View
from models.resize import RESIZE_MODES

SIGNIFICANT_BITS = (9, 32)  # --significant-bits: high-depth films (8 is what a set of 8-bit films records)


def at_least(kind, minimum, maximum=None):
    """An argparse type: a number of ``kind`` that is at least ``minimum`` (and at most ``maximum``, if given)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value
    return parse


def fraction(text):
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def as_flags(err, names):
    """A UserError saying ``err`` (a ValueError naming parameters) with each of ``names`` written as its flag
    (``batch_size`` -> ``--batch-size``): the estimator knows its parameters, the command line its flags."""
    import re

    text = str(err)
    for name in sorted(names, key=len, reverse=True):
        text = re.sub(rf"(?<![\w-]){name}\b", "--" + name.replace("_", "-"), text)
    return UserError(text)


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


def add_backbone_argument(parser):
    parser.add_argument("--backbone", metavar="PATH",
                        help="the backbone checkpoint the head's codes were made with (a prefix, or its -0000.params "
                             "file), where it is neither in MODELS_DIR nor in the project's models/; it is checked "
                             "against head.json's sha256 (default: found by that sha256)")


def add_epoch_argument(parser, use):
    """--epoch best|last|N: which of a models folder's checkpoints a command uses (``use``: what it does with it);
    ``models.headfolder`` resolves it."""
    parser.add_argument("--epoch", default="last", metavar="best|last|N",
                        help=f"which epoch's checkpoint {use}: last (default); best (highest validation ROC-AUC, for a "
                             f"head trained with --val-fraction: on a few validation images this picks noise); or a "
                             f"kept epoch number")


def add_gpus_argument(parser, use="the network runs on all of them"):
    parser.add_argument("--gpus", default="auto", help=f"{GPU_SPEC_HELP}; {use} (default: %(default)s)")


def add_batch_size_argument(parser, default=32, minimum=1, what="images per forward pass"):
    parser.add_argument("--batch-size", type=at_least(int, minimum), default=default,
                        help=f"{what} (default: %(default)s)")


def add_significant_bits_argument(parser, what):
    """--significant-bits N (9 to 32): the bits of the high-depth films' values; ``what``: what it sets here."""
    parser.add_argument("--significant-bits", type=at_least(int, SIGNIFICANT_BITS[0], SIGNIFICANT_BITS[1]),
                        metavar="N", help=f"16-bit (or 32-bit integer) PNG and TIFF films hold values 0..2**N - 1 (N: "
                                          f"{SIGNIFICANT_BITS[0]} to {SIGNIFICANT_BITS[1]}; 12 for a 12-bit detector "
                                          f"in 16-bit files), which map onto 0..255; {what}")


def add_new_films_depth_argument(parser, recorded_in):
    """--significant-bits for a command scoring new films with a trained head (``recorded_in``: what records the
    training films' bits)."""
    add_significant_bits_argument(parser, f"for the films given here, in place of the bits {recorded_in} records for "
                                          f"the training films (a 12-bit film in a 16-bit file from a head trained on "
                                          f"8-bit films: 12)")


def add_view_arguments(parser, resize=True, field=True):
    """--resize, --field and --lung-box: what of an image the backbone sees (``models.images.View``)."""
    if resize:
        parser.add_argument("--resize", choices=RESIZE_MODES, default="crop",
                            help="crop: centre square crop then 224x224 (the original's way); squash: resize the "
                                 "whole image to 224x224 (default: %(default)s)")
    if field:
        parser.add_argument("--field", choices=FIELDS[:2], default="whole",
                            help="whole: encode the whole image; lungs: only the lung field (--lung-box), the rest "
                                 "filled with the image's mean, so that nothing outside the lungs (markers, text, "
                                 "tubes, collimation) can reach the codes; recorded in the codes' index, and later "
                                 "steps refuse to mix fields (default: %(default)s)")
    parser.add_argument("--lung-box", type=lung_box_arg, default=LUNG_BOX, metavar="L,T,R,B",
                        help="the lung field as fractions of the image's width and height: left, top, right, bottom "
                             f"(default: {','.join(map(str, LUNG_BOX))})")


def add_group_arguments(parser, scope=""):
    """--group-pattern or --group-by (one of them): which images are one patient, kept on one side of every split
    (``models.splits.image_groups``)."""
    either = parser.add_mutually_exclusive_group()
    either.add_argument("--group-pattern", metavar="REGEX",
                        help=scope + "files whose names give the same first capture group (re.search) are one group "
                             r"(a patient), kept on one side of every split, e.g. '^(\d+)_' for NIH file names like "
                             "00001234_000.png; a file it does not match is an error (default: every image its own "
                             "group)")
    either.add_argument("--group-by", choices=("patient",),
                        help=scope + "the DICOM files of one Patient ID are one group, written out only as a salted "
                             "hash; an image without a Patient ID is an error")


def add_scope_arguments(parser):
    """--allow-modality and --allow-body-part: DICOM files read although their header says they are not chest
    radiographs (``models.dicom.Scope``); ``scope_of(args)`` is the Scope they give."""
    parser.add_argument("--allow-modality", nargs="+", metavar="MODALITY", default=[],
                        help=f"also read DICOM files of these Modality values (e.g. CT; {ANY}: every one); by default "
                             f"only projection radiographs ({', '.join(PROJECTION_MODALITIES)}) are read, and a file "
                             f"of another Modality is named and skipped")
    parser.add_argument("--allow-body-part", nargs="+", metavar="PART", default=[],
                        help=f"also read DICOM files of these Body Part Examined values (e.g. ABDOMEN; {ANY}: every "
                             f"one); by default a file whose header gives a body part other than "
                             f"{', '.join(CHEST_BODY_PARTS)} (case-insensitive) is named and skipped")


def scope_of(args):
    """The ``models.dicom.Scope`` that ``add_scope_arguments``'s options give."""
    return Scope(args.allow_modality, args.allow_body_part)
