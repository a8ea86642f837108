"""How close the fast paths (--int8, --bf16) stay to fp32, on real images (run by `make bench`, not by the tests).

1. Codes: mean cosine similarity to the fp32 codes on the photographs bundled with scikit-image: int8 quantised on
   the other half of them (out of sample) and on all of them; bf16 (needs no samples) on all of them.
2. Classification: scikit-learn's handwritten digits (1,797 real scanned 8x8 images, 10 classes) go through the whole
   pipeline once per precision — process --from-folders, train.py (fp32 / --int8 / --bf16), train_model.py,
   test_model.py — and the test accuracies are compared with fp32's.
bf16 is left out on a CPU without native bfloat16, where train.py --bf16 refuses to run.

    python -m bench.fidelity [--out bench/fidelity.json]
"""

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from bench.children import run_child
from models.devices import has_native_bf16
from models.fileio import write_json
from models.images import View
from models.pretrained import DEFAULT_LAYER, Backbone
from models.quantize import int8_backbone
from models.runtime import setup_runtime
from models.weights import DEFAULT_PREFIX

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NATIVE_BF16 = has_native_bf16()


def photo_paths():
    import skimage

    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith((".png", ".jpg")))


def encode(backbone, paths):
    images = np.stack([View().load(p) for p in paths])
    return np.concatenate([backbone(images[i:i + backbone.batch_size])
                           for i in range(0, len(images), backbone.batch_size)])


def mean_cosine(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).mean())


def photo_similarity():
    paths = photo_paths()
    int8_samples, held_out = paths[0::2], paths[1::2]
    fp32 = Backbone(DEFAULT_PREFIX, DEFAULT_LAYER, batch_size=16)
    reference = dict(zip(paths, encode(fp32, paths)))
    quiet = lambda *_: None  # noqa: E731
    out_of_sample = int8_backbone(DEFAULT_PREFIX, DEFAULT_LAYER, int8_samples, batch_size=16, log=quiet)
    in_sample = int8_backbone(DEFAULT_PREFIX, DEFAULT_LAYER, paths, batch_size=16, log=quiet)
    everything = np.stack([reference[p] for p in paths])
    results = {
        "photos": len(paths),
        "held_out_photos": len(held_out),
        "int8_cosine_held_out_calibrated_on_other_half": mean_cosine(
            np.stack([reference[p] for p in held_out]), encode(out_of_sample, held_out)),
        "int8_cosine_all_calibrated_on_all": mean_cosine(everything, encode(in_sample, paths)),
    }
    if NATIVE_BF16:
        bf16 = Backbone(DEFAULT_PREFIX, DEFAULT_LAYER, batch_size=16, precision="bf16")
        results["bf16_cosine_all"] = mean_cosine(everything, encode(bf16, paths))
    return results


def run(*args):
    """A project command in a child process; one that fails ends the bench with its stderr's last lines."""
    try:
        return run_child([sys.executable, *args], timeout=None).stdout
    except RuntimeError as err:
        raise SystemExit(str(err)) from None


def digits_accuracy(work):
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = os.path.join(work, "digits")
    for i, (pixels, target) in enumerate(zip(digits.images, digits.target)):
        os.makedirs(os.path.join(root, str(target)), exist_ok=True)
        image = Image.fromarray((pixels * (255 / 16)).round().astype(np.uint8)).resize((64, 64), Image.NEAREST)
        image.save(os.path.join(root, str(target), f"{i:04d}.png"))
    split = os.path.join(work, "split")
    run("-m", "scraper.process", "--from-folders", root, split, "--test-fraction", "0.3", "--seed", "0")
    results = {"dataset": "scikit-learn digits (UCI optical recognition of handwritten digits), 1797 images",
               "classes": 10}
    precisions = [("fp32", []), ("int8", ["--int8"])] + ([("bf16", ["--bf16"])] if NATIVE_BF16 else [])
    for precision, extra in precisions:
        codes = os.path.join(work, precision)
        run("train.py", f"{split}/train", f"{split}/test", f"{codes}/train", f"{codes}/test", "--resize", "squash",
            *extra)
        run("train_model.py", f"{split}/train", f"{codes}/train", f"{split}/train_labels.json", f"{codes}/head")
        run("test_model.py", f"{split}/test", f"{codes}/test", f"{split}/test_labels.json", f"{codes}/head")
        with open(f"{codes}/head/eval/report.json") as f:
            report = json.load(f)
        with open(f"{codes}/head/head.json") as f:
            results[f"{precision}_layout"] = json.load(f)["head"]["layout"]  # what --layout auto chose
        results[f"{precision}_test_accuracy"] = report["accuracy"]["value"]
        results["test_images"] = report["n"]
    for precision, _ in precisions[1:]:
        results[f"{precision}_minus_fp32_points"] = 100 * (results[f"{precision}_test_accuracy"]
                                                           - results["fp32_test_accuracy"])
    return results


def main():
    parser = argparse.ArgumentParser(prog="python -m bench.fidelity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "fidelity.json"),
                        help="where to write the results (default: %(default)s)")
    args = parser.parse_args()
    setup_runtime()
    results = {"photos": photo_similarity()}
    with tempfile.TemporaryDirectory() as work:
        results["digits"] = digits_accuracy(work)
    write_json(args.out, results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
