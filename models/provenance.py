"""What made a result: the git commit of the checkout the code runs from (and whether that checkout has changes the
commit does not hold), the versions of Python and the packages, the date, the CPU, and the sha256 of every file the
step consumed. head.json, report.json, the provenance.json beside a predictions.csv and the ONNX sidecar carry it
(``record``); bench.run's results carry the commit."""

import datetime
import os
import platform
import subprocess

# distributions whose version a result depends on (the first of each tuple that is installed is named)
PACKAGES = (("mxnet", "mxnet-cu112"), ("numpy",), ("Pillow",), ("pydicom",), ("onnxruntime",), ("scikit-learn",))
HERE = os.path.dirname(os.path.abspath(__file__))


def git_commit(folder):
    """``{"commit": sha, "dirty": bool}`` of the git checkout holding ``folder``; ``{"commit": None, "dirty": None}``
    where git is missing or ``folder`` is in no checkout (an installed copy, an unpacked archive)."""

    def git(*args):
        try:
            done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD") or None
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions():
    """{distribution: version} of PACKAGES that are installed (read from their metadata, nothing imported)."""
    from importlib import metadata

    versions = {}
    for names in PACKAGES:
        for name in names:
            try:
                versions[name] = metadata.version(name)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def record(consumed=None):
    """The provenance of a result made now: commit, package versions, date (UTC), CPU, and ``consumed``: {what:
    sha256} of the inputs (codes, labels, weights) it was made from."""
    from models.devices import cpu_model

    code = git_commit(HERE)
    cpu = cpu_model()
    return {"commit": code["commit"], "tree_changed": code["dirty"],
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "packages": package_versions(),
            "cpu": cpu["model_name"] or platform.processor() or None, "consumed": dict(consumed or {})}
