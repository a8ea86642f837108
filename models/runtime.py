"""The process set-up MXNet needs before it is first imported (every entry point that runs MXNet calls
``setup_runtime()`` first; importing ``models`` itself changes nothing), and how many threads decode image files."""

import os

_done = False


def usable_cores():
    """The number of processors this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# files decoded at once (while the network runs, in models.extract): PIL releases the GIL while decoding PNG and JPEG
# and resizing, so each thread keeps a core busy; OpenJPEG (JPEG 2000) holds it, but decodes each image on
# OPJ_NUM_THREADS threads of its own (set below). At most 8: each holds one decoded image, up to ~170 MB for a
# 9,400 x 9,400 16-bit PNG.
DECODE_THREADS = min(max(2, usable_cores()), 8)


def setup_runtime():
    """Threads for MXNet's operators and, with requirements-gpu.txt, the CUDA 11 libraries; once per process, and
    before ``import mxnet`` (MXNet reads both when it loads)."""
    global _done
    if _done:
        return
    _done = True
    # MXNet assumes two hyperthreads per core and, unless OMP_NUM_THREADS is set, runs its operators on half the
    # processors: on a 2-core machine that is one thread and half the speed. Use every core this process may run on.
    if hasattr(os, "sched_getaffinity"):
        cores = str(usable_cores())
        os.environ.setdefault("OMP_NUM_THREADS", cores)
        # OpenJPEG (PIL's JPEG 2000 decoder) decodes one image's code-blocks on this many threads; unset, on one
        os.environ.setdefault("OPJ_NUM_THREADS", cores)
    os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")  # else every bound graph logs "Subgraph backend MKLDNN ..."
    _preload_cuda11_libraries()


def _preload_cuda11_libraries():
    """With requirements-gpu.txt, load the pip-installed CUDA 11 libraries so that mxnet-cu112 finds them.

    mxnet-cu112 bundles no CUDA libraries and the ``nvidia-*-cu11`` wheels are not on the loader's search path; loading
    them here (globally, dependencies first by retrying) spares users an LD_LIBRARY_PATH. A no-op on CPU installs.
    """
    import ctypes
    import glob
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return
    pending = sorted(path for root in spec.submodule_search_locations
                     for path in glob.glob(os.path.join(root, "*", "lib", "lib*.so*")))
    while pending:
        failed = []
        for path in pending:
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(path)
        if len(failed) == len(pending):
            return  # what is left cannot load (e.g. no driver): MXNet's import then names the missing library
        pending = failed
