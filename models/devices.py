"""Pick the MXNet devices for ``--gpus auto|none|0,1,...``: GPUs that pass a real kernel launch, else the CPU.

``mx.context.num_gpus()`` counts GPUs that MXNet cannot use (a Hopper card with mxnet-cu112 has no kernel image for
it), so each GPU is probed by running a small convolution on it and reading the result back.

The CPU build on a machine without an NVIDIA driver runs on the CPU without a word: there is nothing else to use.
Where a driver is present but the CPU build is installed, or the GPUs fail the probe, a notice says why.
"""

import os
import shutil

from models.errors import UserError

CPU_SPECS = ("none", "cpu", "-1", "")  # --gpus values that mean the CPU
GPU_SPEC_HELP = "auto: every GPU that passes a kernel-launch probe, else CPU; none: CPU; or GPU ids like 0,1"


def _probe(mx, gpu_id):
    """None if a conv + GEMM run correctly on GPU ``gpu_id``, else the reason (first line of MXNet's error)."""
    try:
        ctx = mx.gpu(gpu_id)
        x = mx.nd.ones((1, 2, 4, 4), ctx=ctx)
        w = mx.nd.ones((2, 2, 3, 3), ctx=ctx)
        y = mx.nd.Convolution(x, w, kernel=(3, 3), num_filter=2, no_bias=True, pad=(1, 1))
        z = mx.nd.dot(y.reshape((1, -1)), y.reshape((-1, 1)))
        value = float(z.asnumpy()[0, 0])
        expected = float(sum(v * v for v in (8, 12, 12, 8, 12, 18, 18, 12, 12, 18, 18, 12, 8, 12, 12, 8)) * 2)
        return None if value == expected else f"wrong result from a test convolution ({value} != {expected})"
    except Exception as err:  # MXNetError and friends: the GPU is there but unusable
        text = str(err).strip().splitlines()
        return next((line for line in text if "no kernel image" in line), text[0] if text else type(err).__name__)


def nvidia_driver_present():
    """Whether this machine has an NVIDIA driver (``nvidia-smi`` on the PATH, or the kernel module loaded)."""
    return shutil.which("nvidia-smi") is not None or os.path.exists("/proc/driver/nvidia/version")


def chosen_contexts(spec="auto"):
    """The devices an entry point runs on for --gpus ``spec`` (``select_contexts``), its notice on stderr."""
    import sys

    contexts, notice = select_contexts(spec)
    if notice:
        print(f"notice: {notice}", file=sys.stderr)
    return contexts


def select_contexts(spec="auto"):
    """Return (contexts, notice): the devices to run on and, when falling back to CPU where a GPU might have been
    expected, one line saying why (none for the CPU build on a machine without an NVIDIA driver)."""
    import mxnet as mx

    spec = (spec or "auto").strip().lower()
    if spec in CPU_SPECS:
        return [mx.cpu()], None
    if spec == "auto":
        wanted = None
    else:
        try:
            wanted = sorted({int(part) for part in spec.split(",") if part.strip()})
        except ValueError:
            raise UserError(f"--gpus must be auto, none or GPU ids like 0,1 (got {spec!r})") from None
    if not mx.runtime.Features().is_enabled("CUDA"):
        if wanted is None and not nvidia_driver_present():
            return [mx.cpu()], None
        reason = "this MXNet build is CPU-only (install requirements-gpu.txt on a machine with an NVIDIA GPU)"
        return _fallback(mx, wanted, reason)
    count = mx.context.num_gpus()
    if count == 0:
        return _fallback(mx, wanted, "no NVIDIA GPU found")
    ids = list(range(count)) if wanted is None else wanted
    missing = [i for i in ids if i >= count]
    if missing:
        raise UserError(f"--gpus names GPU {missing} but only {count} GPU(s) exist (ids 0..{count - 1})")
    failures = {i: _probe(mx, i) for i in ids}
    usable = [i for i in ids if failures[i] is None]
    if usable and (wanted is None or len(usable) == len(ids)):
        return [mx.gpu(i) for i in usable], None
    reasons = "; ".join(f"GPU {i}: {why}" for i, why in failures.items() if why)
    if wanted is not None:
        raise UserError(f"requested GPU(s) unusable ({reasons}); use --gpus auto or none to run on the CPU")
    return [mx.cpu()], f"using the CPU: no usable GPU ({reasons}; mxnet-cu112 supports compute capability 5.0-8.9)"


def _fallback(mx, wanted, reason):
    if wanted is not None:
        raise UserError(f"--gpus {','.join(map(str, wanted))}: {reason}; use --gpus auto or none")
    return [mx.cpu()], f"using the CPU: {reason}"


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # without one of them oneDNN emulates bf16, slower than fp32


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU feature flags the kernel reports (an empty set where it does not say)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def has_native_bf16(flags=None):
    """Whether the CPU (or the given flags) computes bfloat16 natively, the only case where the bf16 path is fast."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def require_native_bf16(flags=None):
    """UserError unless the CPU computes bfloat16 natively."""
    if not has_native_bf16(flags):
        raise UserError(f"--bf16 needs a CPU with native bfloat16 instructions ({' or '.join(NATIVE_BF16_FLAGS)}), "
                        f"which this one lacks; run without --bf16 (fp32) or with --int8")


# (vendor, family, model range) -> generation, for the CPUs whose bf16 / int8 speed docs/performance.md quotes and
# their kin.
# A VM often names its CPU just "AMD EPYC"; the family and model numbers still say which one it is.
CPU_GENERATIONS = (
    ("AuthenticAMD", 0x17, range(0x00, 0x30), "AMD Zen / Zen+"),
    ("AuthenticAMD", 0x17, range(0x30, 0x100), "AMD Zen 2"),
    ("AuthenticAMD", 0x19, range(0x10, 0x20), "AMD Zen 4"),
    ("AuthenticAMD", 0x19, range(0x60, 0x80), "AMD Zen 4"),
    ("AuthenticAMD", 0x19, range(0xA0, 0xB0), "AMD Zen 4"),
    ("AuthenticAMD", 0x19, range(0x00, 0x100), "AMD Zen 3"),
    ("AuthenticAMD", 0x1A, range(0x00, 0x100), "AMD Zen 5"),
    ("GenuineIntel", 6, (0x55,), "Intel Skylake-SP / Cascade Lake / Cooper Lake"),
    ("GenuineIntel", 6, (0x6A, 0x6C), "Intel Ice Lake-SP"),
    ("GenuineIntel", 6, (0x8F,), "Intel Sapphire Rapids"),
    ("GenuineIntel", 6, (0xCF,), "Intel Emerald Rapids"),
    ("GenuineIntel", 6, (0xAD, 0xAE), "Intel Granite Rapids"),
)


def cpu_model(cpuinfo="/proc/cpuinfo"):
    """{"model_name", "vendor", "family", "model", "generation"} of the first CPU as the kernel reports it; the
    generation (e.g. "AMD Zen 5") from CPU_GENERATIONS, None where the numbers are not in it."""
    fields = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block only
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    vendor = fields.get("vendor_id", "")
    try:
        family, model = int(fields.get("cpu family", "")), int(fields.get("model", ""))
    except ValueError:
        family = model = None
    generation = next((name for v, fam, models, name in CPU_GENERATIONS
                       if v == vendor and fam == family and model in models), None)
    return {"model_name": fields.get("model name", ""), "vendor": vendor, "family": family, "model": model,
            "generation": generation}
