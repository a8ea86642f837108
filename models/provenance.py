"""Where a run's code came from: the git commit of the checkout it runs from, and whether that checkout has changes
the commit does not hold. Used by models.export (the file's ``project_commit``) and bench.run (results' ``git``)."""

import subprocess


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
