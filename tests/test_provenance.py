"""models.provenance.git_commit: the commit and changes of the checkout a run comes from, and nothing (no error)
where git is missing or the folder is in no checkout."""

import os
import re
import subprocess

from helpers import REPO
from models.provenance import git_commit


def test_a_checkout_gives_its_commit_and_whether_it_has_changes(tmp_path):
    folder = tmp_path / "checkout"
    folder.mkdir()
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    for command in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "first"]):
        subprocess.run(["git", *command], cwd=folder, check=True, env=env, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True).stdout.strip()
    assert git_commit(folder) == {"commit": head, "dirty": False}
    (folder / "new.txt").write_text("a change")
    assert git_commit(folder) == {"commit": head, "dirty": True}
    assert re.fullmatch("[0-9a-f]{40}", git_commit(REPO)["commit"])


def test_no_checkout_or_no_git_gives_none(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git must not find a checkout above tmp_path
    assert git_commit(tmp_path) == {"commit": None, "dirty": None}
    monkeypatch.setenv("PATH", str(tmp_path))  # no git program at all
    assert git_commit(REPO) == {"commit": None, "dirty": None}
