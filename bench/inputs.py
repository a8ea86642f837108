"""The inputs bench.run's rows measure on, made in its temporary folder when a row first needs them and kept for the
whole run: generated PNGs (and subsets of them as hard links), two large PNGs of 8 or 16 bits, large 12-bit films in
three formats, codes and labels for head training, a trained and exported classifier, and the cut ResNet-50's
weights for the PyTorch peer."""

import os
import time
from concurrent.futures import ProcessPoolExecutor

from bench.children import CHILD, PYTHON, REPO, run_child, run_json

FILM_KINDS = {"png16": ".png", "dicom": ".dcm", "j2k": ".dcm"}
BIG_IMAGES = 2  # as many as train.py's decode threads on 2 CPUs (models.runtime.DECODE_THREADS): peaks add up


def make_png(job):
    """One 512x512 8-bit grayscale PNG: smooth anatomy-like shading plus film noise (~150 KB, like an Open-i image)."""
    import numpy as np
    from PIL import Image

    path, seed, size = job
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC), np.float32)
    pixels = np.clip(base + rng.normal(0.0, 4.0, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(path)
    return os.path.getsize(path)


def make_big_png(job):
    """One large gray PNG of big blocks (~200 KB at 9400x9400, as such scans compress), 8-bit or the same x 257 in
    16-bit, so that both depths give the same 8-bit pixels; returns its size in bytes."""
    import numpy as np
    from PIL import Image

    path, seed, size, depth = job
    blocks = np.random.default_rng(seed).integers(0, 256, (47, 47), dtype=np.uint8)
    side = -(-size // 47)
    gray = np.kron(blocks, np.ones((side, side), np.uint8))[:size, :size]
    Image.fromarray(gray if depth == 8 else gray.astype(np.uint16) * 257).save(path)
    return os.path.getsize(path)


def make_film(job):
    """One 12-bit film in the format ``kind`` (png16: the values x 16 in a 16-bit PNG; dicom: a DX DICOM with its
    window; j2k: the same, JPEG 2000 lossless): a bundled radiograph upsampled, plus detector noise."""
    from PIL import Image

    from bench.films import large_film, write_dicom, write_png16

    path, seed, kind, source = job
    stored, _ = large_film(Image.open(source).convert("L"), seed)
    if kind == "png16":
        write_png16(path, stored * 16)
    else:
        write_dicom(path, stored, window=(2048, 4096), syntax="j2k" if kind == "j2k" else "uncompressed")
    return os.path.getsize(path)


def make_files(make, jobs, chunksize=1):
    """``make`` each job in worker processes, as many as there are cores (a parent's peak RSS would show in its
    children's ru_maxrss); the mean size of the files made."""
    with ProcessPoolExecutor(min(len(jobs), len(os.sched_getaffinity(0)))) as pool:
        sizes = list(pool.map(make, jobs, chunksize=chunksize))
    return sum(sizes) / len(sizes)


def link_subset(source, folder, count):
    """A folder holding the first ``count`` images of ``source`` (hard links: no copy, same bytes)."""
    os.makedirs(folder, exist_ok=True)
    for name in sorted(os.listdir(source))[:count]:
        os.link(os.path.join(source, name), os.path.join(folder, name))
    return folder


class Inputs:
    """The inputs of one run in ``work``, from its ``args``; ``settings`` describes them for results.json."""

    def __init__(self, args, work):
        self.args, self.work = args, work
        self.settings = {}
        self.big_sets = {}  # depth -> (folder of BIG_IMAGES large PNGs, their mean size)
        self.film_bytes = {}  # format -> mean file size of its --films films
        self.classifier = None  # (models folder, ONNX file) of the prediction rows
        self.torch_export = None  # (weights file, child.py export's check) of the PyTorch peer

    def prepare(self):
        """The generated PNGs (as many distinct ones as the largest set needs) and the sets the rows read."""
        a = self.args
        started = time.perf_counter()
        n_large = max(a.mem_images, a.images, a.head_samples)
        images_all = os.path.join(self.work, "png_all")
        os.makedirs(images_all, exist_ok=True)
        jobs = [(os.path.join(images_all, f"img{i:05d}.png"), i, 512) for i in range(n_large)]
        png_bytes = make_files(make_png, jobs, chunksize=16)
        self.sets = {n: link_subset(images_all, os.path.join(self.work, f"png_{n}"), n)
                     for n in {a.images, a.mem_images, a.head_samples}}
        self.one_image = link_subset(images_all, os.path.join(self.work, "png_1"), 1)  # train.py's TEST_IMGS
        self.settings.update(png_count=n_large, png_size="512x512 grayscale (mode L)", png_mean_bytes=round(png_bytes),
                             png_generation_s=round(time.perf_counter() - started, 1),
                             page_cache="warm (the PNGs were just written)")

    def int8_sample_paths(self, count):
        folder = self.sets[self.args.images]
        return [os.path.join(folder, name) for name in sorted(os.listdir(folder))[:count]]

    def big_set(self, depth):
        """(folder, mean size) of the BIG_IMAGES large PNGs of ``depth`` bits."""
        if depth not in self.big_sets:
            folder = os.path.join(self.work, f"png_big{depth}")
            os.makedirs(folder)
            jobs = [(os.path.join(folder, f"big{i}.png"), i, self.args.big_size, depth) for i in range(BIG_IMAGES)]
            self.big_sets[depth] = folder, make_files(make_big_png, jobs)
        return self.big_sets[depth]

    def film_folder(self, kind):
        """The folder of --films 2,048 x 2,500 films of format ``kind``, each from another bundled radiograph."""
        folder = os.path.join(self.work, f"film_{kind}")
        if not os.path.isdir(folder):
            os.makedirs(folder)
            sample = os.path.join(REPO, "examples", "nih-sample")
            sources = [os.path.join(root, name) for root, _, names in os.walk(sample)
                       for name in sorted(names) if name.endswith(".png")]
            jobs = [(os.path.join(folder, f"film{i:03d}{FILM_KINDS[kind]}"), i, kind, sources[i % len(sources)])
                    for i in range(self.args.films)]
            self.film_bytes[kind] = round(make_files(make_film, jobs))
        return folder

    def head_data(self, images):
        """Codes (ReLU'd Gaussian, 512x7x7) and a two-class label file for every image of ``images``, made once."""
        import numpy as np

        from models.codes import CodeWriter
        from models.images import list_images
        from models.labels import save_labels
        from models.pretrained import DEFAULT_LAYER
        from models.weights import DEFAULT_PREFIX, sha256_of

        codes_dir, labels = os.path.join(self.work, "head_codes"), os.path.join(self.work, "head_labels.json")
        if os.path.exists(labels):  # written last
            return codes_dir, labels
        names = list_images(images)
        # recorded as the real backbone's codes, which the prediction rows rebuild and run
        meta = {"model": DEFAULT_PREFIX, "model_sha256": sha256_of(f"{DEFAULT_PREFIX}-0000.params"),
                "layer": DEFAULT_LAYER, "precision": "fp32", "input_size": 224, "resize": "crop",
                "input": "RGB 0..255, NCHW"}
        writer = CodeWriter(codes_dir, names, (512, 7, 7), meta, image_dir=images)
        rng = np.random.default_rng(0)
        for start in range(0, len(names), 256):
            count = min(256, len(names) - start)
            writer.write(np.maximum(rng.standard_normal((count, 512, 7, 7), dtype=np.float32), 0))
        save_labels(labels, ["normal", "abnormal"], {n: ("normal", "abnormal")[i % 2] for i, n in enumerate(names)})
        return codes_dir, labels

    def prediction_classifier(self):
        """(models folder, its ONNX export): a --layout avg head trained for one epoch on the generated codes, whose
        index records the real backbone, so that both runners rebuild and run it."""
        if self.classifier is None:
            images = self.sets[self.args.head_samples]
            codes, labels = self.head_data(images)
            models_dir, onnx_file = os.path.join(self.work, "classifier"), os.path.join(self.work, "classifier.onnx")
            run_child([PYTHON, "train_model.py", images, codes, labels, models_dir, "--layout", "avg", "--folds", "0",
                       "--epochs", "1", "--gpus", "none"], timeout=3600)
            run_child([PYTHON, "-m", "models.export", models_dir, onnx_file], timeout=3600)
            self.classifier = models_dir, onnx_file
        return self.classifier

    def torch_weights(self):
        """(the cut ResNet-50's weights as .npz for the PyTorch peer, child.py export's numeric check of them)."""
        if self.torch_export is None:
            weights = os.path.join(self.work, "resnet50_cut.npz")
            check = self.int8_sample_paths(min(4, self.args.batch_size))
            self.torch_export = weights, run_json([*CHILD, "export", weights, *check])
        return self.torch_export
