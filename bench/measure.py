"""How bench.run measures each row: one child process (bench.child, train.py, train_model.py, models.predict,
models.onnx_predict, the PyTorch peer) per measurement over the run's inputs (bench.inputs), its numbers turned into
the row's ``{"runs": [numbers], **details}``. What two rows share comes from bench.shared."""

import json
import os
import shutil

from bench.children import CHILD, PYTHON, TORCH_PEER, TORCH_PYTHON, run_child, run_json
from bench.inputs import BIG_IMAGES
from bench.shared import SharedMeasurements, dependency_key

TRAIN_PY_INT8_SAMPLES = 64  # train.py --int8 quantises on this many images by default; fwd_int8 uses as many


class Measurements:
    def __init__(self, args, inputs):
        self.args, self.inputs, self.work = args, inputs, inputs.work
        self.shared = SharedMeasurements()  # a row runs once per round (--runs is the number of rounds)

    def shared_json(self, command, run=0, extra_env=None):
        """(the JSON result of ``command``'s ``run``-th fresh process, the row that measured it), shared this
        round with the other rows that ask for it."""
        key = dependency_key(command, extra_env, run)
        return self.shared.get(key, lambda: run_json(command, extra_env=extra_env))

    def forward(self, precision):
        a = self.args
        command = [*CHILD, "forward", "--precision", precision, "--batch-size", a.batch_size,
                   "--batches", a.batches, "--runs", 1, "--warmup", a.warmup]
        if precision == "int8":
            command += ["--int8-samples", *self.inputs.int8_sample_paths(a.int8_samples)]
        # child.py builds the Backbone of that precision without train.py's speed self-check: what it times is that
        # network, however it compares with fp32
        return dict(run_json(command), precision_requested=precision, precision=precision)

    def train_py(self, folder, flags=(), run=0):
        """(child.py extract's result, the row that measured it): a fresh train.py over ``folder`` (TEST_IMGS: one
        image), its ``run``-th run this round."""
        out = os.path.join(self.work, "codes")
        command = [*CHILD, "extract", "--", folder, self.inputs.one_image, f"{out}/train", f"{out}/test",
                   "--batch-size", self.args.batch_size, "--gpus", "none", *flags]
        try:
            return self.shared_json(command, run)
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def extract(self, flags):
        result, _ = self.train_py(self.inputs.sets[self.args.images], flags)
        train = result["folders"][0]
        return {"runs": [train["img_per_s"]], "images": self.args.images,
                "precision_requested": "bf16" if "--bf16" in flags else "int8" if "--int8" in flags else "fp32",
                "precision": train["precision"],  # the Backbone's precision after train.py's speed self-check
                "seconds": [round(train["seconds"], 3)], "process_wall_s": [round(result["wall_s"], 2)],
                "startup_s": [round(train["started_at_s"], 2)],
                "process_img_per_s": [self.args.images / result["wall_s"]],
                "ru_maxrss_mib": [result["ru_maxrss_mib"]]}

    def int8_extract(self):
        samples = () if self.args.int8_samples == TRAIN_PY_INT8_SAMPLES else \
            ("--int8-samples", self.args.int8_samples)
        return self.extract(("--int8", *samples))

    def memory(self, images):
        """Peak memory of fresh train.py processes over the ``images`` set: the runs e2e_fp32 timed where it did."""
        runs = 1 if images == self.args.images else self.args.mem_runs
        measured = [self.train_py(self.inputs.sets[images], run=run) for run in range(runs)]
        results, made_by = [result for result, _ in measured], measured[0][1]
        same = {"same_runs_as": made_by} if made_by != self.shared.row else {}
        return {**same, "runs": [r["ru_maxrss_mib"] for r in results], "images": images,
                "peak_rss_anon_mib": [round(r["peak_rss_anon_mib"], 1) for r in results],
                "end_rss_file_mib": [round(r["end_rss_file_mib"], 1) for r in results],
                "codes_mib": images * 512 * 7 * 7 * 4 / 2 ** 20}

    def big_memory(self, depth):
        """Peak memory of a fresh train.py over the large PNGs of ``depth`` bits."""
        folder, png_bytes = self.inputs.big_set(depth)
        result, _ = self.train_py(folder)
        size = self.args.big_size
        return {"runs": [result["ru_maxrss_mib"]], "images": BIG_IMAGES,
                "png": f"{size}x{size} gray, {depth}-bit", "png_mean_bytes": round(png_bytes),
                "decoded_mib_per_image": size * size * depth // 8 / 2 ** 20,
                "peak_rss_anon_mib": [round(result["peak_rss_anon_mib"], 1)],
                "end_rss_file_mib": [round(result["end_rss_file_mib"], 1)]}

    def ceiling(self):
        out = run_json([*CHILD, "ceiling"])
        return {"runs": [out["ceiling_img_per_s"]], **out, "best_gflops_runs": [out["best_gflops"]]}

    def decode(self):
        out = run_json([*CHILD, "decode", self.inputs.sets[self.args.images], "--runs", "1"])
        return {"runs": out["cpu_ms"], "wall_ms": out["wall_ms"], "images": out["images"],
                "note": "CPU ms per image on one thread; end-to-end spends it on top of the forward pass's 2 cores"}

    def film_decode(self, kind):
        """CPU ms to read one large 12-bit film of format ``kind`` into a batch at the view's size (one thread, and
        OpenJPEG on one thread: its own threads' CPU would not show in the thread's time), as ``decode``."""
        folder = self.inputs.film_folder(kind)
        out = run_json([*CHILD, "decode", folder, "--runs", "1"], extra_env={"OPJ_NUM_THREADS": "1"})
        return {"runs": out["cpu_ms"], "wall_ms": out["wall_ms"], "images": out["images"],
                "file_bytes": self.inputs.film_bytes[kind]}

    def film_extract(self, kind):
        """Films/s of a fresh train.py over the --films films of format ``kind``, timed as e2e_fp32 is: inside the
        process, around the encoding."""
        result, _ = self.train_py(self.inputs.film_folder(kind))
        train = result["folders"][0]
        return {"runs": [train["img_per_s"]], "films": self.args.films, "seconds": [round(train["seconds"], 3)],
                "file_bytes": self.inputs.film_bytes[kind], "process_wall_s": [round(result["wall_s"], 2)]}

    def torch_peer(self, variants=None):
        """The PyTorch peer: the best of ``--torch-variants`` (fp32), or the given variants (e.g. compile_bf16)."""
        a = self.args
        weights, export = self.inputs.torch_weights()
        out = run_json([TORCH_PYTHON, TORCH_PEER, weights, "--batch-size", a.batch_size, "--batches", a.batches,
                        "--runs", 1, "--warmup", a.warmup, "--threads", len(os.sched_getaffinity(0)),
                        "--variants", variants or a.torch_variants], timeout=1800)
        chosen = variants or out["best"]
        return {"runs": out["variants"][chosen]["runs"], "variant": chosen, "export": export, **out}

    def run_train_model(self, *flags):
        """train_model.py FLAGS in a fresh process on the generated codes: (wall seconds, its epochs' seconds)."""
        a = self.args
        images = self.inputs.sets[a.head_samples]
        codes, labels = self.inputs.head_data(images)
        models_dir = os.path.join(self.work, "head")
        try:
            done = run_child([PYTHON, "train_model.py", images, codes, labels, models_dir, *flags, "--epochs",
                              a.epochs, "--batch-size", a.batch_size, "--gpus", "none"], timeout=3600)
            with open(os.path.join(models_dir, "head.json")) as f:
                epoch_s_sum = sum(h["seconds"] for h in json.load(f)["history"])
        finally:
            shutil.rmtree(models_dir, ignore_errors=True)
        return done.wall_s, epoch_s_sum

    def head_training(self):
        """train_model.py --recipe xvision (the flat 25,088-feature head the GEMM bounds are computed for);
        samples/s = samples x epochs / wall time."""
        a = self.args
        wall, epoch_s_sum = self.run_train_model("--recipe", "xvision")
        samples = a.head_samples * a.epochs
        return {"runs": [samples / wall], "samples": a.head_samples, "epochs": a.epochs, "batch_size": a.batch_size,
                "per_run": [{"wall_s": round(wall, 2), "epoch_s_sum": round(epoch_s_sum, 2)}],
                "loop_samples_per_s": [samples / epoch_s_sum]}

    def head_wall(self, *flags):
        """Wall clock of train_model.py FLAGS on the generated codes (the layout choice's cost: head_auto_s)."""
        wall, epoch_s_sum = self.run_train_model(*flags)
        return {"runs": [wall], "flags": list(flags), "samples": self.args.head_samples, "epochs": self.args.epochs,
                "per_run": [{"wall_s": round(wall, 2), "epoch_s_sum": round(epoch_s_sum, 2)}]}

    def predict(self, runtime):
        """A fresh models.predict (MXNet) or models.onnx_predict (ONNX Runtime) process over the --images PNGs, with
        the head of ``Inputs.prediction_classifier``: img/s of its wall clock, the model's load included."""
        models_dir, onnx_file = self.inputs.prediction_classifier()
        out = os.path.join(self.work, f"predict_{runtime}")
        runner = ["-m", "models.predict", models_dir] if runtime == "mxnet" else \
            ["-m", "models.onnx_predict", onnx_file]
        try:
            done = run_child([PYTHON, *runner, self.inputs.sets[self.args.images], "--out", out, "--batch-size",
                              self.args.batch_size], timeout=3600)
        finally:
            shutil.rmtree(out, ignore_errors=True)
        return {"runs": [self.args.images / done.wall_s], "images": self.args.images,
                "wall_s": [round(done.wall_s, 2)], "runtime": runtime}

    def gemm_timings(self):
        """The head's GEMM timings (child.py gemm), shared by both GEMM-bound rows; batches and samples of training."""
        a = self.args
        timings, _ = self.shared_json([*CHILD, "gemm", "--batch-size", a.batch_size])
        batches = max(1, a.head_samples // a.batch_size)  # a trailing batch of one joins the previous one
        batches = batches + (1 if a.head_samples - batches * a.batch_size > 1 else 0)
        return timings, batches, a.head_samples * a.epochs

    def head_gemm_bound(self):
        """The issue's GEMM-bound: forward + backward = 3x the forward GEMMs, at the best measured rate per shape."""
        out, batches, samples = self.gemm_timings()
        seconds = 3 * sum(layer["best_fwd_s"] for layer in out["layers"]) * batches * self.args.epochs
        return {"runs": [samples / seconds], "seconds": [seconds], "batches_per_epoch": batches,
                "definition": "3 x the forward GEMMs (x W^T per Dense layer) at the fastest of numpy / MXNet dot / "
                              "oneDNN for each shape, x batches x epochs"}

    def head_gemm_tight(self):
        """Every GEMM of a training step timed alone (forward, weight and input gradients), best implementation each."""
        out, batches, samples = self.gemm_timings()
        seconds = out["seconds_per_batch"] * batches * self.args.epochs
        return {"runs": [samples / seconds], "seconds": [seconds], "batches_per_epoch": batches, **out}
