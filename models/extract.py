"""Feature extraction: image folder -> code store, batched, resumable, with decoding overlapped with compute."""

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm import tqdm

from models.codes import CodeWriter
from models.images import ImageReadError, list_images, load_image
from models.pretrained import INPUT_SIZE

DECODE_THREADS = 2  # PIL releases the GIL while decoding and resizing, so threads overlap with the forward pass


def codes_meta(backbone, resize):
    """What made a set of codes; later steps compare it to refuse codes from another model or layer."""
    return {"model": backbone.prefix, "model_sha256": backbone.model_sha256, "layer": backbone.layer,
            "precision": backbone.precision, "int8_calibration": backbone.calibration,
            "input_size": INPUT_SIZE, "resize": resize, "input": "RGB 0..255, NCHW"}


def _read(path, resize):
    """(image, None) for a readable file, (None, reason) for any other."""
    try:
        return load_image(path, INPUT_SIZE, resize), None
    except ImageReadError as err:
        return None, str(err)


def extract_folder(backbone, folder, codes_dir, resize="crop", log=print):
    """Encode every image in ``folder`` into ``codes_dir``, resuming an interrupted run; returns the CodeWriter."""
    names = list_images(folder)
    writer = CodeWriter(codes_dir, names, backbone.output_shape, codes_meta(backbone, resize))
    if writer.complete:
        log(f"{codes_dir}: codes for {len(names)} images already made, nothing to do")
        return writer
    if writer.resumed:
        log(f"{codes_dir}: resuming after {writer.rows_done} of {len(names)} images")
    size = backbone.batch_size
    starts = range(writer.rows_done, len(names), size)
    with ThreadPoolExecutor(DECODE_THREADS) as pool, \
            tqdm(total=len(names), initial=writer.rows_done, unit="img", desc=os.path.basename(folder.rstrip("/"))) as bar:
        def decode(start):
            return [pool.submit(_read, os.path.join(folder, name), resize) for name in names[start:start + size]]

        # the next batch is decoded while the current one runs through the network
        pending = decode(starts[0]) if starts else None
        for i, start in enumerate(starts):
            results = [future.result() for future in pending]
            pending = decode(starts[i + 1]) if i + 1 < len(starts) else None
            batch = names[start:start + size]
            readable = [position for position, (image, _) in enumerate(results) if image is not None]
            skipped = {batch[position]: error for position, (_, error) in enumerate(results) if error is not None}
            codes = np.zeros((len(batch),) + backbone.output_shape, np.float32)
            if readable:
                codes[readable] = backbone(np.stack([results[position][0] for position in readable]))
            for reason in skipped.values():
                bar.write(f"warning: skipped {reason}", file=sys.stderr)
            writer.write(codes, skipped)
            bar.update(len(batch))
    return writer
