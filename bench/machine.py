"""The machine a bench runs on: what it is (CPU, its flags and caches, memory, OS, package versions) and how busy
other processes keep it (CpuWatch: the CPU time they took during a row; wait_idle: wait for them to leave it)."""

import os
import platform
import time
from importlib import metadata

FLAGS_THAT_MATTER = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                     "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
OTHER_CPU_LIMIT = 0.05  # fraction of the machine's CPU other processes may take during a row


def read_text(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def machine_info():
    from models.devices import cpu_model

    cpuinfo = read_text("/proc/cpuinfo")
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    meminfo = {line.split(":")[0]: line.split(":")[1].strip() for line in read_text("/proc/meminfo").splitlines()
               if ":" in line}
    siblings = read_text("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").strip()
    identity = cpu_model()
    info = {
        "cpu": fields.get("model name", platform.processor()),
        "cpu_family_model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
        "cpu_vendor": identity["vendor"],
        "cpu_generation": identity["generation"],  # from family/model: a VM may call a Zen 4 and a Zen 5 "AMD EPYC"
        "usable_cores": len(os.sched_getaffinity(0)),
        "logical_cpus": os.cpu_count(),
        "threads_per_core": len(siblings.replace("-", ",").split(",")) if siblings else None,
        "flags": [flag for flag in FLAGS_THAT_MATTER if flag in flags],
        "hypervisor": "hypervisor" in flags,
        "memory_total": meminfo.get("MemTotal"),
        "cache": {},
        "os": platform.platform(),
        "python": platform.python_version(),
        "mxnet": package_version("mxnet") or package_version("mxnet-cu112"),
        "numpy": package_version("numpy"),
        "pillow": package_version("pillow"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_start": os.getloadavg(),
    }
    for index in range(4):
        base = f"/sys/devices/system/cpu/cpu0/cache/index{index}"
        level, kind, size = (read_text(f"{base}/{name}").strip() for name in ("level", "type", "size"))
        if level:
            info["cache"][f"L{level}{'d' if kind == 'Data' else 'i' if kind == 'Instruction' else ''}"] = size
    return info


def package_version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


class CpuWatch:
    """CPU seconds the whole machine spent vs this process and its waited-for children: the rest is other processes."""

    def __init__(self):
        self.start_busy, self.start_own, self.start_wall = self.busy(), self.own(), time.perf_counter()

    @staticmethod
    def busy():
        fields = [int(x) for x in read_text("/proc/stat").splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def own():
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def report(self):
        wall = time.perf_counter() - self.start_wall
        foreign = max(0.0, (self.busy() - self.start_busy) - (self.own() - self.start_own))
        return {"wall_s": round(wall, 2), "other_cpu_s": round(foreign, 2),
                "other_cpu_fraction": round(foreign / max(wall * os.cpu_count(), 1e-9), 3)}


def wait_idle(limit_s, window_s=2.0):
    """Wait (up to ``limit_s``) until other processes use < OTHER_CPU_LIMIT of the CPU over ``window_s``; returns the
    seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        watch = CpuWatch()
        time.sleep(window_s)
        if watch.report()["other_cpu_fraction"] < OTHER_CPU_LIMIT:
            break
    return time.perf_counter() - started
