"""Where the head looked: Grad-CAM at the cut layer, computed on the head alone from the stored codes.

For one image and one class: the gradient of the class's logit with respect to the image's code map (C x H x W, 512 x
7 x 7 at ``stage4_unit2_relu1``), averaged over the grid, weighs each channel; the map is the ReLU of the weighted sum
of the channels (Selvaraju et al., 2017). No second pass through the backbone is needed. When the head averages the
grid first (``--layout avg``) the gradient is the same at every cell, so the map is exactly the code's
channels weighted by how much each pooled feature moves the class's score: the class activation map (Zhou et al.,
2016) of this head. With ``--layout flat`` it is Grad-CAM in its usual, approximate sense: the head's cell-specific
weights are averaged over the grid; with ``--layout both`` the gradient of the averaged probabilities' log reaches the
code through both branches. The class's score is its logit minus the mean of the other logits (softmax sees
only differences).

``heatmaps.npz`` (written by ``test_model.py`` and ``python -m models.predict --heatmaps``), one row per image:
- ``maps``: float32 (n, H, W), the map of the class the image was scored as, in the code's units (not normalised);
- ``files``: the image file names (or paths, for ``models.predict``);
- ``class_index``: int (n,), which class each map is for, an index into ``class_names``;
- ``crop_boxes``: int (n, 4), (left, top, right, bottom) in the original image's pixels: the region the backbone saw
  (the centre square with ``--resize crop``, the whole image with ``squash``), over which the map lies;
- ``image_sizes``: int (n, 2), (width, height) of the original image; -1 where it could not be read again.
"""

import os
import zipfile
from contextlib import contextmanager

import numpy as np

from models.fileio import atomic_path
from models.head import PREDICT_BATCH
from models.images import ImageReadError, image_size

def grad_cam(net, codes, class_index, context=None):
    """Grad-CAM maps (n, H, W) float32 of the classes ``class_index`` (n,) for ``codes`` (n, C, H, W), batched.

    ``net``: the head from ``head.gradient_net`` (BatchNorm on running statistics in the backward pass as well; the
    exported head's BatchNorm would mix the images of a batch into each other's gradients)."""
    import mxnet as mx
    from mxnet import autograd

    data = mx.nd.array(codes, ctx=context or mx.cpu())
    data.attach_grad()
    with autograd.record(train_mode=False):  # BatchNorm on its running statistics, dropout off: as at prediction
        logits = net(data)
        chosen = mx.nd.pick(logits, mx.nd.array(class_index, ctx=data.context), axis=1)
        # softmax sees only differences of logits: score the class against the mean of the others
        others = (logits.sum(axis=1) - chosen) / (logits.shape[1] - 1)
        score = chosen - others
    score.backward()  # the images do not interact, so one backward pass gives every image its own gradient
    weights = data.grad.mean(axis=(2, 3), keepdims=True)
    return mx.nd.relu((weights * data).sum(axis=1)).asnumpy().astype(np.float32)


def heatmap_batch(net, codes, class_index, paths, view, context=None):
    """(maps, crop boxes, image sizes) of one batch: Grad-CAM of ``class_index`` and where each map lies."""
    regions = [region_of(path, view) for path in paths]
    return grad_cam(net, codes, class_index, context), [r[0] for r in regions], [r[1] for r in regions]


def region_of(path, view):
    """((left, top, right, bottom), (width, height)) of the part of the image file the backbone saw (``view``)."""
    try:
        width, height = image_size(path)
    except ImageReadError:
        return (-1, -1, -1, -1), (-1, -1)
    return view.region(width, height), (width, height)


def field_shares(maps, boxes, size):
    """(share of each map's mass inside its box, whether its largest cell lies mostly outside the box) for ``maps``
    (n, H, W) over a ``size`` x ``size`` view and ``boxes`` (left, top, right, bottom in view pixels, or None where
    the image's size is unknown): a cell counts by the part of its area inside the box. NaN / False for a map
    without mass or without a box."""
    shares, outside = np.full(len(maps), np.nan), np.zeros(len(maps), bool)
    for i, (heat, box) in enumerate(zip(maps, boxes)):
        total = float(np.sum(heat))
        if box is None or not total > 0:
            continue
        inside = _inside_share(box, *heat.shape, size)
        shares[i] = float(np.sum(heat * inside)) / total
        outside[i] = inside.flat[int(np.argmax(heat))] < 0.5
    return shares, outside


def _inside_share(box, rows, columns, size):
    """(rows, columns): the share of each cell of a rows x columns grid over a size x size view inside ``box``."""
    left, top, right, bottom = box

    def overlap(low, high, cells):
        edges = np.linspace(0, size, cells + 1)
        return np.clip(np.minimum(edges[1:], high) - np.maximum(edges[:-1], low), 0, None) / np.diff(edges)

    return np.outer(overlap(top, bottom, rows), overlap(left, right, columns))


class HeatmapWriter:
    """Adds the maps to an open heatmaps.npz archive batch by batch (see ``heatmap_file``)."""

    def __init__(self, archive, count, grid, class_names):
        self.archive, self.count, self.written = archive, count, 0
        self.class_names = list(class_names)
        self.files, self.classes, self.boxes, self.sizes = [], [], [], []
        self._maps = archive.open("maps.npy", "w", force_zip64=True)
        np.lib.format.write_array_header_1_0(
            self._maps, {"descr": "<f4", "fortran_order": False, "shape": (count,) + tuple(grid)})

    def add(self, maps, files, class_index, boxes, sizes):
        self._maps.write(np.ascontiguousarray(maps, dtype="<f4").tobytes())
        self.written += len(maps)
        self.files += list(files)
        self.classes += list(class_index)
        self.boxes += list(boxes)
        self.sizes += list(sizes)

    def finish(self):
        self._maps.close()
        if self.written != self.count:
            raise ValueError(f"{self.written} maps written, {self.count} announced")
        arrays = {"files": np.array(self.files, dtype=str), "class_index": np.array(self.classes, dtype=np.int64),
                  "class_names": np.array(self.class_names, dtype=str),
                  "crop_boxes": np.array(self.boxes, dtype=np.int64).reshape(-1, 4),
                  "image_sizes": np.array(self.sizes, dtype=np.int64).reshape(-1, 2)}
        for name, array in arrays.items():
            with self.archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


@contextmanager
def heatmap_file(path, count, grid, class_names):
    """A HeatmapWriter for ``path``: the maps go straight into the archive as they are made, so memory does not grow
    with the number of images (only names and boxes are kept, a few bytes each); the file appears only when whole."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        writer = HeatmapWriter(archive, count, grid, class_names)
        yield writer
        writer.finish()


def overlay_name(name):
    """File name of an image's overlay PNG: the image's name (its folder left out) with .png."""
    return os.path.splitext(os.path.basename(name))[0] + ".png"


def overlay_names(paths):
    """{path: its overlay's name under heatmaps/} for images given by ``paths``: the path below the folder all of
    them share, with .png ('a/x.png' and 'b/x.png' -> 'a/x.png' and 'b/x.png'; one image: its file name), so that no
    two images share an overlay; where two still would (x.png and x.jpg in one folder) the whole name is kept
    ('x.jpg.png')."""
    absolute = [os.path.abspath(path) for path in paths]
    common = os.path.commonpath([os.path.dirname(path) for path in absolute]) if absolute else ""
    relative = [os.path.relpath(path, common) for path in absolute]
    names = [os.path.splitext(name)[0] + ".png" for name in relative]
    taken = {}
    for name in names:
        taken[name] = taken.get(name, 0) + 1
    return {path: (name if taken[name] == 1 else full + ".png")
            for path, name, full in zip(paths, names, relative)}


def lung_field_report(shares, outside, truth, predicted, classes, names, view):
    """report.json's "lung_field": how much of the Grad-CAM mass lies inside the lung box, on average, per true and
    per predicted class, and which images' maps peak outside it."""
    def mean(mask):
        chosen = shares[mask & np.isfinite(shares)]
        return float(chosen.mean()) if len(chosen) else None

    everything = np.ones(len(shares), bool)
    return {"box": list(view.box), "field": view.field,
            "mass_inside": {"mean": mean(everything),
                            "by_true_class": {c: mean(truth == i) for i, c in enumerate(classes)},
                            "by_predicted_class": {c: mean(predicted == i) for i, c in enumerate(classes)}},
            "peaks_outside": {"count": int(outside.sum()), "files": [names[i] for i in np.flatnonzero(outside)]},
            "how": "share of each image's Grad-CAM map (heatmaps.npz) inside the lung box, each cell of the map "
                   "counted by the part of it inside the box; a map peaks outside when its largest cell lies mostly "
                   "outside the box. A box is not a segmentation: read it as where the head looked, roughly"}


def lung_field_line(record, count):
    inside = record["mass_inside"]
    if inside["mean"] is None:
        return "lung field: no heatmap had any mass"
    per_class = ", ".join(f"{c} {v:.0%}" for c, v in inside["by_true_class"].items() if v is not None)
    return (f"lung field: {inside['mean']:.0%} of the heatmap mass lies inside the lung box on average (by true "
            f"class: {per_class}); {record['peaks_outside']['count']} of {count} maps peak outside it")


def write_test_heatmaps(net, store, image_dir, names, captions, predicted, classes, view, out_dir, shown, overlays,
                        context=None):
    """test_model.py's Grad-CAM pass: heatmaps.npz (and with ``overlays`` heatmaps/<image>.png, each titled with its
    one of ``captions``) batch by batch;
    returns the maps of ``shown``, every map's share inside the lung box and whether it peaks outside it, and the box
    of each of ``shown`` (view pixels)."""
    from models.plots import save_overlay

    kept = {int(i): None for i in shown}
    shares, outside, boxes = np.full(len(names), np.nan), np.zeros(len(names), bool), [None] * len(names)
    with heatmap_file(os.path.join(out_dir, "heatmaps.npz"), len(names), store.shape[1:], classes) as writer:
        for start in range(0, len(names), PREDICT_BATCH):
            batch = np.arange(start, min(start + PREDICT_BATCH, len(names)))
            paths = [os.path.join(image_dir, names[i]) for i in batch]
            maps, crops, sizes = heatmap_batch(net, store.read([names[i] for i in batch]), predicted[batch], paths,
                                               view, context)
            writer.add(maps, [names[i] for i in batch], predicted[batch], crops, sizes)
            for i, size in zip(batch, sizes):
                boxes[i] = view.field_box(*size) if size[0] > 0 else None
            shares[batch], outside[batch] = field_shares(maps, [boxes[i] for i in batch], view.size)
            for i, heat, path in zip(batch, maps, paths):
                if i in kept:
                    kept[i] = heat
                if overlays:
                    save_overlay(os.path.join(out_dir, "heatmaps", overlay_name(names[i])),
                                 view.load_or_blank(path), heat, captions[i])
    return [kept[int(i)] for i in shown], shares, outside, [boxes[int(i)] for i in shown]
