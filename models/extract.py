"""Feature extraction: image folder -> code store, batched, resumable, with decoding overlapped with compute."""

import os
from concurrent.futures import ThreadPoolExecutor

from models.codes import CodeWriter
from models.errors import counted, named
from models.images import View, list_images, warn_of_reading
from models.pretrained import put_image
from models.progress import progress_bar
from models.runtime import DECODE_THREADS


def codes_meta(backbone, view):
    """What made a set of codes; later steps compare it to refuse codes from another model, layer or field."""
    return dict({"model": backbone.prefix, "model_sha256": backbone.model_sha256, "layer": backbone.layer,
                 "precision": backbone.precision, "int8_calibration": backbone.int8_key},
                **view.describe(), input="RGB 0..255, NCHW")


def read_into(batch, position, path, view):
    """Decode ``path`` into slot ``position`` of ``batch``: (its ``Decoded``, None), or (None, why the file has no code)
    with its slot zeroed."""
    decoded, why = view.decode_or_why(path)
    if decoded is None:
        batch[position] = 0
    else:
        put_image(batch, position, decoded.pixels)
    return decoded, why


def encode(backbone, folder, names, view, bar):
    """(file names, codes, {name: why skipped}, {name: what was decoded where it was below full size}) batch by batch
    for ``names`` in ``folder`` as ``view`` shows them, the decoding of the next batch overlapped with the network's
    work on this one. Notices (values beyond the set's significant bits) are printed as warnings."""
    size = backbone.batch_size
    starts = range(0, len(names), size)
    # two input batches: the decode threads fill one while the network reads the other
    batches = [backbone.input_batch(), backbone.input_batch()]
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        def decode(i):
            start, batch = starts[i], batches[i % 2]
            chunk = names[start:start + size]
            batch[len(chunk):] = 0  # a short last batch is padded with zeros
            return [pool.submit(read_into, batch, position, os.path.join(folder, name), view)
                    for position, name in enumerate(chunk)]

        pending = decode(0) if starts else None
        for i, start in enumerate(starts):
            results = [future.result() for future in pending]
            pending = decode(i + 1) if i + 1 < len(starts) else None  # decoded while this batch runs
            chunk = names[start:start + size]
            codes = backbone.run(batches[i % 2], len(chunk))
            skipped, reduced = {}, {}
            for name, (decoded, why), row in zip(chunk, results, codes):
                warn_of_reading(bar.write, name, decoded, why)
                if why is not None:
                    row[...] = 0
                    skipped[name] = why
                elif decoded.reduced:
                    reduced[name] = decoded.reduced
            yield chunk, codes, skipped, reduced
            bar.update(len(chunk))


def extract_folder(backbone, folder, codes_dir, view=View(), log=print):
    """Encode every image in ``folder`` as ``view`` shows it into ``codes_dir``, resuming an interrupted run and
    re-encoding the images that changed since their codes were made; returns the CodeWriter."""
    names = list_images(folder)
    writer = CodeWriter(codes_dir, names, backbone.output_shape, codes_meta(backbone, view), image_dir=folder)
    changed = writer.changed()
    if writer.complete and not changed:
        log(f"{codes_dir}: codes for {counted(len(names), 'image')} already made, nothing to do")
        return writer
    if changed:
        log(f"{codes_dir}: {counted(len(changed), 'image')} changed since their codes were made ({named(changed)}): "
            f"encoding them again")
    elif writer.resumed:
        log(f"{codes_dir}: resuming after {writer.rows_done} of {counted(len(names), 'image')}")
    with progress_bar(total=len(names) - writer.rows_done + len(changed), unit="img",
                      desc=os.path.basename(folder.rstrip("/"))) as bar:
        for _, codes, skipped, reduced in encode(backbone, folder, names[writer.rows_done:], view, bar):
            writer.write(codes, skipped, reduced)
        for chunk, codes, skipped, reduced in encode(backbone, folder, changed, view, bar):
            writer.rewrite(chunk, codes, skipped, reduced)
    return writer
