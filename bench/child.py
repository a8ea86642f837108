"""Measurements that bench.run runs in child processes of the project's venv, one mode per call.

Each mode prints one JSON object as the last line of stdout. A child process per measurement keeps the runs
independent (fresh MXNet engine, fresh page tables: ru_maxrss is the peak of that measurement alone).

    python -m bench.child extract -- TRAIN.PY ARGS...                 train.py's own code path, timed from inside
    python -m bench.child forward --precision fp32|bf16|int8 ...       Backbone forward-only on in-memory batches
    python -m bench.child export OUT.npz IMAGE...                      weights + a numeric check for the PyTorch peer
    python -m bench.child ceiling                                      network GFLOP/image, peak oneDNN conv GFLOP/s
    python -m bench.child gemm --batch-size 32                         head GEMM times (numpy, MXNet, oneDNN)
    python -m bench.child decode FOLDER                                ms per image of decoding into a batch
"""

import argparse
import json
import os
import resource
import sys
import threading
import time

from models.runtime import setup_runtime


def emit(result):
    print(json.dumps(result), flush=True)


class AnonPeak:
    """Peak of RssAnon (heap, not file-backed pages) sampled from /proc/self/status while the process runs."""

    def __init__(self, interval=0.05):
        self.peak_kib, self.interval = 0, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def read(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def _run(self):
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self.read("RssAnon"))
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, self.read("RssAnon"))
        return self.peak_kib


def memory_report(anon):
    return {"ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_rss_anon_mib": anon.stop() / 1024,
            "end_rss_file_mib": AnonPeak.read("RssFile") / 1024}


def mode_extract(argv):
    """Run train.py's own code path (its encode_folders): steady extraction img/s per folder, and peaks."""
    anon = AnonPeak()
    started = time.perf_counter()
    import train

    done = train.encode_folders(train.parse_args(argv))
    folders = [{"folder": f["folder"], "images": f["images"], "seconds": f["seconds"],
                "img_per_s": f["images"] / f["seconds"], "precision": f["precision"],
                "started_at_s": f["started"] - started} for f in done]
    result = {"folders": folders, "wall_s": time.perf_counter() - started}
    result.update(memory_report(anon))
    emit(result)


def load_backbone(args):
    from models.pretrained import Backbone

    if args.precision in ("fp32", "bf16"):
        return Backbone(args.model, args.layer, batch_size=args.batch_size, precision=args.precision)
    from models.quantize import int8_backbone

    return int8_backbone(args.model, args.layer, args.int8_samples, batch_size=args.batch_size)


def mode_forward(argv):
    """Forward-only img/s of the project's Backbone on one in-memory uint8 NHWC batch (NCHW float conversion included)."""
    import numpy as np

    from models.pretrained import DEFAULT_LAYER
    from models.weights import DEFAULT_PREFIX

    parser = argparse.ArgumentParser(prog="python -m bench.child forward")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int8"))
    parser.add_argument("--model", default=DEFAULT_PREFIX)
    parser.add_argument("--layer", default=DEFAULT_LAYER)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--int8-samples", nargs="*", default=[], help="image files the int8 network is quantised on")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    net = load_backbone(args)
    build_s = time.perf_counter() - started
    images = np.random.default_rng(0).integers(0, 256, (args.batch_size, 224, 224, 3), dtype=np.uint8)
    for _ in range(args.warmup):
        net(images)
    rates = []
    for _ in range(args.runs):
        begin = time.perf_counter()
        for _ in range(args.batches):
            net(images)
        rates.append(args.batches * args.batch_size / (time.perf_counter() - begin))
    emit({"runs": rates, "build_s": build_s, "output_shape": list(net.output_shape),
          "omp_num_threads": os.environ.get("OMP_NUM_THREADS")})


def mode_export(argv):
    """Every checkpoint array under its MXNet name, plus check_input / check_output from the project's Backbone."""
    import numpy as np

    from models.images import View
    from models.checkpoint import load_checkpoint
    from models.pretrained import DEFAULT_LAYER, Backbone
    from models.weights import DEFAULT_PREFIX

    parser = argparse.ArgumentParser(prog="python -m bench.child export")
    parser.add_argument("out")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--model", default=DEFAULT_PREFIX)
    parser.add_argument("--layer", default=DEFAULT_LAYER)
    args = parser.parse_args(argv)
    _, arg_params, aux_params = load_checkpoint(args.model)
    arrays = {f"arg:{k}": v.asnumpy() for k, v in arg_params.items()}
    arrays.update({f"aux:{k}": v.asnumpy() for k, v in aux_params.items()})
    check_input = np.stack([View().load(path) for path in args.images])
    net = Backbone(args.model, args.layer, batch_size=len(check_input))
    arrays["check_input"], arrays["check_output"] = check_input, net(check_input)
    np.savez(args.out, **arrays)
    emit({"arrays": len(arrays), "check_images": len(check_input), "output_shape": list(net.output_shape)})


def network_flops(symbol, batch=1, size=224):
    """Multiply-adds x 2 of every Convolution and FullyConnected in ``symbol`` for one image."""
    internals = symbol.get_internals()
    _, out_shapes, _ = internals.infer_shape(data=(batch, 3, size, size))
    shapes = dict(zip(internals.list_outputs(), out_shapes))
    flops = 0
    for node in json.loads(symbol.tojson())["nodes"]:
        if node["op"] == "Convolution":
            attrs = node.get("attrs", {})
            kernel = eval(attrs["kernel"])  # e.g. "(3, 3)"
            weight = shapes[f"{node['name']}_weight"]
            out = shapes[f"{node['name']}_output"]
            flops += 2 * out[1] * out[2] * out[3] * weight[1] * kernel[0] * kernel[1] // int(attrs.get("num_group", 1))
        elif node["op"] == "FullyConnected":
            weight = shapes[f"{node['name']}_weight"]
            flops += 2 * weight[0] * weight[1]
    return flops / batch


def best_rate(fn, flops, repeats=5):
    fn()  # warm-up (oneDNN primitive creation, weight reorders)
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        fn()
        times.append(time.perf_counter() - begin)
    return flops / min(times) / 1e9


def mode_ceiling(argv):
    """GFLOP per image of the cut network, and the peak fp32 GFLOP/s oneDNN reaches here (conv and GEMM)."""
    import mxnet as mx

    from models.checkpoint import load_checkpoint
    from models.pretrained import DEFAULT_LAYER, cut
    from models.weights import DEFAULT_PREFIX

    parser = argparse.ArgumentParser(prog="python -m bench.child ceiling")
    parser.add_argument("--model", default=DEFAULT_PREFIX)
    parser.add_argument("--layer", default=DEFAULT_LAYER)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    symbol, _, _ = load_checkpoint(args.model)
    gflop = network_flops(cut(symbol, args.layer)) / 1e9

    peaks = {}
    # the network's most common heavy layers at batch 32: 3x3 convs of stages 2 and 3, and a square GEMM
    for name, (channels, size) in {"conv3x3_128c_28": (128, 28), "conv3x3_256c_14": (256, 14)}.items():
        x = mx.nd.random.uniform(shape=(32, channels, size, size))
        w = mx.nd.random.uniform(shape=(channels, channels, 3, 3))
        b = mx.nd.zeros(channels)

        def conv():
            mx.nd.Convolution(x, w, b, kernel=(3, 3), pad=(1, 1), num_filter=channels).wait_to_read()

        peaks[name] = best_rate(conv, 2 * 32 * size * size * channels * channels * 9, args.repeats)
    a, b = mx.nd.random.uniform(shape=(2048, 2048)), mx.nd.random.uniform(shape=(2048, 2048))
    peaks["gemm_2048"] = best_rate(lambda: mx.nd.dot(a, b).wait_to_read(), 2 * 2048 ** 3, args.repeats)
    peak = max(peaks.values())
    emit({"gflop_per_image": gflop, "peak_gflops": peaks, "best_gflops": peak,
          "ceiling_img_per_s": peak / gflop, "omp_num_threads": os.environ.get("OMP_NUM_THREADS")})


def mode_gemm(argv):
    """Seconds of the head's GEMMs per training batch: the fastest of numpy, MXNet dot and oneDNN (FullyConnected).

    Per Dense layer: forward y = x W^T, weight gradient dW = dy^T x, input gradient dx = dy W (not for the first layer:
    the codes need no gradient). Each GEMM is timed alone with numpy (both operand orders), ``mx.nd.dot`` and
    ``mx.nd.FullyConnected``; oneDNN's own backward pass (weight + input gradients of a hybridized Dense layer, timed
    as forward+backward minus forward) is one more candidate for the backward GEMMs. The bound sums the best of each.
    """
    import mxnet as mx
    import numpy as np
    from mxnet import autograd, gluon

    parser = argparse.ArgumentParser(prog="python -m bench.child gemm")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layers", default="25088,512,512,2", help="in,hidden,...,out of the head's Dense layers")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.layers.split(",")]
    n = args.batch_size
    rng = np.random.default_rng(0)

    def gemm_seconds(m, k, cols):
        """{implementation: best seconds} of C(m x cols) = A(m x k) B(k x cols)."""
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, cols), dtype=np.float32)
        at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
        ma, mb, mbt = mx.nd.array(a), mx.nd.array(b), mx.nd.array(bt)
        flops = 2 * m * k * cols
        rates = {"numpy": best_rate(lambda: np.dot(a, b), flops, args.repeats),
                 "numpy_transposed": best_rate(lambda: np.dot(bt, at), flops, args.repeats),
                 "mxnet_dot": best_rate(lambda: mx.nd.dot(ma, mb).wait_to_read(), flops, args.repeats),
                 "onednn_fc": best_rate(lambda: mx.nd.FullyConnected(ma, mbt, no_bias=True, num_hidden=cols)
                                        .wait_to_read(), flops, args.repeats)}
        return {impl: flops / rate / 1e9 for impl, rate in rates.items()}

    def onednn_layer(fan_in, fan_out, input_grad):
        """(forward s, backward s) of a hybridized Dense layer under autograd (oneDNN inner product)."""
        layer = gluon.nn.Dense(fan_out, in_units=fan_in)
        layer.initialize()
        layer.hybridize(static_alloc=True)
        x = mx.nd.array(rng.standard_normal((n, fan_in), dtype=np.float32))
        if input_grad:
            x.attach_grad()

        def forward():
            layer(x).wait_to_read()

        def forward_backward():
            with autograd.record():
                y = layer(x)
            y.backward()
            mx.nd.waitall()

        fwd = 1.0 / best_rate(forward, 1e9, args.repeats)
        both = 1.0 / best_rate(forward_backward, 1e9, args.repeats)
        return fwd, max(both - fwd, 0.0)

    layers, total = [], 0.0
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        fwd = gemm_seconds(n, fan_in, fan_out)                  # y = x W^T
        dw = gemm_seconds(fan_out, n, fan_in)                   # dW = dy^T x
        dx = gemm_seconds(n, fan_out, fan_in) if i else None    # dx = dy W
        onednn_fwd, onednn_bwd = onednn_layer(fan_in, fan_out, input_grad=i > 0)
        best_fwd = min(min(fwd.values()), onednn_fwd)
        gemm_bwd = min(dw.values()) + (min(dx.values()) if dx else 0.0)
        best_bwd = min(gemm_bwd, onednn_bwd) if onednn_bwd > 0 else gemm_bwd
        total += best_fwd + best_bwd
        layers.append({"layer": i, "in": fan_in, "out": fan_out, "fwd_s": fwd, "dW_s": dw, "dx_s": dx,
                       "onednn_layer_fwd_s": onednn_fwd, "onednn_layer_bwd_s": onednn_bwd,
                       "best_fwd_s": best_fwd, "best_bwd_s": best_bwd})
    flops = sum(2 * n * i * o for i, o in zip(sizes, sizes[1:]))
    train_flops = 2 * flops + sum(2 * n * i * o for i, o in list(zip(sizes, sizes[1:]))[1:])
    emit({"batch_size": n, "layers": layers, "seconds_per_batch": total,
          "flops_per_sample_fwd": flops / n, "flops_per_sample_train": train_flops / n,
          "gflops_effective": train_flops / total / 1e9})


def mode_decode(argv):
    """Milliseconds per image of what extraction does per file (models.extract.read_into: decode into a float32
    batch), one thread, CPU and wall time."""
    import numpy as np

    from models.extract import read_into
    from models.images import INPUT_SIZE, View, list_images

    parser = argparse.ArgumentParser(prog="python -m bench.child decode")
    parser.add_argument("folder")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--resize", default="crop")
    args = parser.parse_args(argv)
    paths = [os.path.join(args.folder, name) for name in list_images(args.folder)]
    batch = np.zeros((32, 3, INPUT_SIZE, INPUT_SIZE), np.float32)

    view = View(resize=args.resize)

    def decode(position, path):
        read_into(batch, position % len(batch), path, view)

    decode(0, paths[0])
    cpu, wall = [], []
    for _ in range(args.runs):
        # the CPU of the whole process (nothing else runs in it): PIL decodes JPEG 2000 in a thread of its own, whose
        # time the calling thread's clock would miss
        begin, begin_cpu = time.perf_counter(), time.process_time()
        for position, path in enumerate(paths):
            decode(position, path)
        wall.append((time.perf_counter() - begin) / len(paths) * 1e3)
        cpu.append((time.process_time() - begin_cpu) / len(paths) * 1e3)
    emit({"images": len(paths), "cpu_ms": cpu, "wall_ms": wall})


MODES = {"decode": mode_decode, "extract": mode_extract, "forward": mode_forward, "export": mode_export, "ceiling": mode_ceiling,
         "gemm": mode_gemm}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in MODES:
        sys.exit(f"usage: python -m bench.child {{{','.join(MODES)}}} ...")
    setup_runtime()  # before MXNet is imported, as train.py does
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "extract" and rest[:1] == ["--"]:
        rest = rest[1:]
    MODES[mode](rest)
