"""Where the network runs (models/devices.py): --gpus auto uses the working GPUs or says in one line why it runs on
the CPU (silent with the CPU build and no NVIDIA driver), --bf16 needs a CPU with native bfloat16, and the CPU's generation is named from /proc/cpuinfo."""

import pytest

from models import devices
from models.devices import cpu_model, require_native_bf16, select_contexts
from models.errors import UserError


def test_gpus_auto_uses_the_gpus_or_says_why_it_runs_on_the_cpu():
    import mxnet as mx

    contexts, notice = select_contexts("auto")
    if not mx.runtime.Features().is_enabled("CUDA") and not devices.nvidia_driver_present():
        assert contexts == [mx.cpu()] and notice is None, notice  # nothing but the CPU here: nothing to say
    elif not mx.runtime.Features().is_enabled("CUDA"):
        assert contexts == [mx.cpu()] and notice.startswith("using the CPU: this MXNet build is CPU-only"), notice
    elif contexts == [mx.cpu()]:  # a CUDA build without a usable GPU
        assert notice.startswith("using the CPU: "), notice
    else:
        assert notice is None and contexts and all(c.device_type == "gpu" for c in contexts), contexts
    assert select_contexts("none") == ([mx.cpu()], None)
    with pytest.raises(UserError, match="--gpus must be auto, none or GPU ids"):
        select_contexts("first")


@pytest.mark.parametrize("driver", [False, True])
def test_the_cpu_build_says_why_only_where_a_driver_is_present(monkeypatch, driver):
    import mxnet as mx

    if mx.runtime.Features().is_enabled("CUDA"):
        pytest.skip("the CUDA build of MXNet is installed")
    monkeypatch.setattr(devices, "nvidia_driver_present", lambda: driver)
    contexts, notice = select_contexts("auto")
    assert contexts == [mx.cpu()]
    assert (notice is not None and "CPU-only" in notice) if driver else notice is None
    with pytest.raises(UserError, match="CPU-only"):  # GPUs named: an error, driver or not
        select_contexts("0")


def test_bf16_support_check():
    require_native_bf16({"avx512f", "avx512_bf16"})
    require_native_bf16({"amx_bf16", "amx_tile"})
    with pytest.raises(UserError, match="avx512_bf16 or amx_bf16"):
        require_native_bf16({"avx2", "avx512f", "avx512_vnni"})


@pytest.mark.parametrize("vendor, family, model, name, generation", [
    ("AuthenticAMD", 26, 2, "AMD EPYC", "AMD Zen 5"),  # this project's VM: the name alone does not say which EPYC
    ("AuthenticAMD", 25, 17, "AMD EPYC 9654 96-Core Processor", "AMD Zen 4"),
    ("AuthenticAMD", 25, 1, "AMD EPYC 7763 64-Core Processor", "AMD Zen 3"),
    ("GenuineIntel", 6, 143, "Intel(R) Xeon(R) Platinum 8480+", "Intel Sapphire Rapids"),
    ("GenuineIntel", 6, 999, "Some Intel", None),
])
def test_cpu_model_names_the_generation(tmp_path, vendor, family, model, name, generation):
    cpuinfo = tmp_path / "cpuinfo"
    block = (f"processor\t: {{}}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
             f"model name\t: {name}\n")
    cpuinfo.write_text(block.format(0) + "\n" + block.format(1))
    assert cpu_model(cpuinfo) == {"model_name": name, "vendor": vendor, "family": family, "model": model,
                                  "generation": generation}
    assert cpu_model(tmp_path / "absent")["generation"] is None

