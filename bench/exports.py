"""How close the codes of films read from hospital-style exports stay to the codes of the same films as 8-bit PNGs, on
the real radiographs of the shared NIH sets (`make exports`; not run by the tests).

1. Reduced decoding: nih-cxr8-pa's films written as 12-bit DX DICOMs (v x 16 + 8) in JPEG 2000 lossless and lossy
   (10:1) and, as 8 bits, baseline JPEG; at their own 512 x 512 and upsampled to 2,048 x 2,500 with detector noise
   (a DR film's size; --large films). Each is encoded once decoded in full and once per margin decoded at the
   coarsest level whose shorter side is at least margin x 224 (``models.reduced.REDUCED_MARGIN`` is the default's);
   mean and least cosine similarity of those codes to the full decode's. For scale, the JPEG 2000 films also decoded
   in full but resized in float32 instead of PIL's 8-bit passes, from the gray levels rounded to whole ones and from
   the exact ones: how far two equally good resizes of one film are apart, and the film itself resized exactly and
   rounded once (as close as a read of fewer pixels can come: it cannot round the full film's pixels as the full
   decode does).
2. 16-bit PNGs at their real depth: nih-cxr8-pa and nih-sim-nodules written as 16-bit PNGs of 12-bit values (v x 16 +
   8), with and without an sBIT chunk; their codes (the set's significant bits measured as train.py does) and, for
   contrast, the codes of the old rule (0..65535 onto 0..255) against the 8-bit films' codes. With --keep DIR the
   16-bit sets stay in DIR/<set>-png12[-sbit]/<class>/ for `make accuracy DATA=...`.

    python -m bench.exports [--shared DIR] [--out bench/exports.json] [--margins 1,2,4] [--large 120] [--keep DIR]
"""

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pydicom
from PIL import Image

from bench.films import TWELVE_BIT, large_film, twelve_bit, write_dicom, write_png16
from models.devices import cpu_model
from models.dicom import gray_pixels
from models.errors import UserError
from models.fileio import read_json, write_json
from models.images import Decoded, class_folders, list_images, measure_depth, read_file
from models.pretrained import Backbone, put_image
from models.reduced import REDUCED_MARGIN
from models.resize import crop_box
from models.runtime import setup_runtime, usable_cores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL = 1e6  # the margin of a full decode: no level is ever that small
SYNTAXES = ("j2k", "j2k-lossy", "jpeg")


def class_files(root):
    """[(class, name)] of the images of a folder of class folders, in order."""
    return [(c, n) for c in class_folders(root) for n in list_images(os.path.join(root, c))]


def write_film(job):
    """One export of an 8-bit film (a worker process): ``kind`` a DICOM syntax or 'png12' / 'png12-sbit'."""
    source, path, kind, large, seed = job
    gray = np.asarray(Image.open(source).convert("L"))
    stored, gray = large_film(gray, seed) if large else (twelve_bit(gray), gray)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if kind == "jpeg":
        write_dicom(path, gray, bits=8, syntax="jpeg")
    elif kind.startswith("png12"):
        write_png16(path, stored, TWELVE_BIT if kind.endswith("sbit") else None)
    else:
        write_dicom(path, stored, syntax=kind)


def write_all(jobs):
    with ProcessPoolExecutor(usable_cores()) as pool:
        list(pool.map(write_film, jobs, chunksize=4))


def resized_in_float(path, exact=False, **_):
    """A DICOM film decoded in full and resized as ``read_file`` does, but in float32 (no 8-bit rounding between the
    two passes of the resize), rounded once at the end: another, equally good resize of the same film, whose codes
    show how far two such resizes of one film are apart. ``exact``: from its gray levels before they are rounded to
    whole ones, too: the film itself resized exactly, which is as close as any read from fewer pixels can come."""
    gray = gray_pixels(pydicom.dcmread(path), exact=exact)
    height, width = gray.shape
    resized = Image.fromarray(gray.astype(np.float32), mode="F").resize((224, 224), Image.BILINEAR,
                                                                        box=crop_box(width, height, "crop"))
    return Decoded(np.clip(np.asarray(resized), 0, 255).round().astype(np.uint8), (width, height), (width, height))


def codes_of(backbone, paths, reader=read_file, **read):
    """Codes of ``paths`` read by ``reader(path, **read)`` (``models.images.read_file``), and how many were decoded
    reduced."""
    out, reduced = [], 0
    batch = backbone.input_batch()
    with ThreadPoolExecutor(usable_cores()) as pool:
        for start in range(0, len(paths), backbone.batch_size):
            chunk = paths[start:start + backbone.batch_size]
            decoded = list(pool.map(lambda p: reader(p, **read), chunk))
            for position, one in enumerate(decoded):
                put_image(batch, position, one.pixels)
                reduced += one.reduced is not None
            out.append(backbone.run(batch, len(chunk)))
    return np.concatenate(out).reshape(len(paths), -1), reduced


def cosines(a, b):
    similarity = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return {"mean": round(float(similarity.mean()), 5), "min": round(float(similarity.min()), 5)}


def reduced_decoding(backbone, shared, work, margins, large):
    root = os.path.join(shared, "nih-cxr8-pa")
    films = class_files(root)
    results = {"films": "nih-cxr8-pa", "margins": margins, "default_margin": REDUCED_MARGIN, "sets": {}}
    for size_name, subset, is_large in (("512x512", films, False), ("2048x2500", films[::max(1, len(films) // large)]
                                                                    [:large], True)):
        for kind in SYNTAXES:
            folder = os.path.join(work, f"{kind}-{size_name}")
            paths = [os.path.join(folder, c, n.rsplit(".", 1)[0] + ".dcm") for c, n in subset]
            started = time.perf_counter()
            write_all([(os.path.join(root, c, n), p, kind, is_large, i) for i, ((c, n), p) in
                       enumerate(zip(subset, paths))])
            written = time.perf_counter() - started
            full, _ = codes_of(backbone, paths, margin=FULL)
            row = {"films": len(paths), "write_s": round(written, 1),
                   "mean_file_bytes": round(np.mean([os.path.getsize(p) for p in paths]))}
            if kind.startswith("j2k"):
                codes, _ = codes_of(backbone, paths, reader=resized_in_float)
                row["full decode resized in float32"] = cosines(full, codes)
                codes, _ = codes_of(backbone, paths, reader=resized_in_float, exact=True)
                row["full decode, gray levels not rounded, resized in float32"] = cosines(full, codes)
            for margin in margins:
                started = time.perf_counter()
                codes, reduced = codes_of(backbone, paths, margin=margin)
                row[f"margin {margin}"] = dict(cosines(full, codes), reduced=reduced,
                                               seconds=round(time.perf_counter() - started, 1))
            results["sets"][f"{kind} {size_name}"] = row
            print(f"{kind} {size_name}: {json.dumps(row)}", flush=True)
            shutil.rmtree(folder)
    return results


def sixteen_bit(backbone, shared, work, keep):
    results = {}
    for name in ("nih-cxr8-pa", "nih-sim-nodules"):
        root = os.path.join(shared, name)
        films = class_files(root)
        reference, _ = codes_of(backbone, [os.path.join(root, c, n) for c, n in films])
        for kind in ("png12", "png12-sbit"):
            out = os.path.join(keep or work, f"{name}-{kind}")
            paths = [os.path.join(out, c, n.rsplit(".", 1)[0] + ".png") for c, n in films]
            write_all([(os.path.join(root, c, n), p, kind, False, 0) for (c, n), p in zip(films, paths)])
            bits, how = measure_depth(paths)
            measured, _ = codes_of(backbone, paths, bits=bits)
            old_rule, _ = codes_of(backbone, paths)
            results[f"{name} {kind}"] = {"films": len(paths), "significant_bits": bits, "how": how,
                                         "cosine_to_8bit": cosines(reference, measured),
                                         "cosine_to_8bit_old_rule": cosines(reference, old_rule)}
            print(f"{name} {kind}: {json.dumps(results[f'{name} {kind}'])}", flush=True)
            if not keep:
                shutil.rmtree(out)
    return results


def main():
    parser = argparse.ArgumentParser(prog="python -m bench.exports", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=os.path.join(os.path.dirname(REPO), "shared", "data"),
                        help="the folder holding nih-cxr8-pa and nih-sim-nodules (default: %(default)s)")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "exports.json"),
                        help="where to write the results (default: %(default)s)")
    parser.add_argument("--margins", default="1,2,4",
                        help="margins of the reduced decodes, comma-separated (default: %(default)s)")
    parser.add_argument("--large", type=int, default=120,
                        help="films written at 2,048 x 2,500 per syntax (default: %(default)s)")
    parser.add_argument("--keep", metavar="DIR", help="keep the 16-bit PNG sets in DIR")
    parser.add_argument("--only", choices=("reduced", "16bit"),
                        help="run one part (the other part of an existing --out file is kept)")
    args = parser.parse_args()
    missing = [name for name in ("nih-cxr8-pa", "nih-sim-nodules")
               if not os.path.isdir(os.path.join(args.shared, name))]
    if missing:
        parser.error(f"{' and '.join(missing)} not found in {args.shared}: give the folder that holds them, "
                     f"--shared DIR")
    kept = {"reduced": "sixteen_bit_png", "16bit": "reduced_decoding"}.get(args.only)
    try:  # refused now, not after the run
        earlier = read_json(args.out) if kept and os.path.exists(args.out) else {}
    except UserError as err:
        parser.error(f"{err}; with --only the other part is kept from --out: give another --out or run both parts")
    setup_runtime()
    margins = [float(m) for m in args.margins.split(",")]
    backbone = Backbone()
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "command": " ".join(["python -m bench.exports"] + sys.argv[1:]), "cpu": cpu_model(),
               "cores": usable_cores()}
    with tempfile.TemporaryDirectory() as work:
        if args.only != "16bit":
            results["reduced_decoding"] = reduced_decoding(backbone, args.shared, work, margins, args.large)
        if args.only != "reduced":
            results["sixteen_bit_png"] = sixteen_bit(backbone, args.shared, work, args.keep)
    if kept in earlier:  # the part not run, as measured then, with the run that measured it
        part = dict(earlier[kept])
        measured = part.pop("measured", None) or {key: earlier.get(key) for key in ("date", "command", "cpu", "cores")}
        results[kept] = {"measured": measured, **part}
    write_json(args.out, results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
