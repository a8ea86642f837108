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


def _decode_batch(pool, folder, names, resize):
    """(uint8 images of the readable files, their positions in ``names``, {name: reason} of the others)."""
    def read(name):
        try:
            return load_image(os.path.join(folder, name), INPUT_SIZE, resize), None
        except ImageReadError as err:
            return None, str(err)

    images, positions, skipped = [], [], {}
    for position, (name, (image, error)) in enumerate(zip(names, pool.map(read, names))):
        if error is None:
            images.append(image)
            positions.append(position)
        else:
            skipped[name] = error
    return images, positions, skipped


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
            return pool.submit(_decode_batch, pool, folder, names[start:start + size], resize)

        # one batch is decoded ahead while the current one runs through the network
        pending = decode(starts[0]) if starts else None
        for i, start in enumerate(starts):
            images, positions, skipped = pending.result()
            pending = decode(starts[i + 1]) if i + 1 < len(starts) else None
            count = min(size, len(names) - start)
            codes = np.zeros((count,) + backbone.output_shape, np.float32)
            if images:
                codes[positions] = backbone(np.stack(images))
            for name, reason in skipped.items():
                bar.write(f"warning: skipped {reason}", file=sys.stderr)
            writer.write(codes, skipped)
            bar.update(count)
    return writer
