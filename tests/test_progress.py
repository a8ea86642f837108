"""Progress in a log file: plain lines, no bar fragments, nothing for short work (models/progress.py)."""

import io
import os
import re
import shutil
import subprocess
import sys

from helpers import REPO
from models.progress import PlainProgress

SAMPLE = os.path.join(REPO, "examples", "nih-sample")
BAR_FRAGMENT = re.compile(r"\d+%\||█|\x1b\[")  # tqdm's "NN%|", its block characters, terminal control sequences


def test_plain_progress_lines_only_for_long_work():
    short = io.StringIO()
    with PlainProgress(total=4, desc="short", unit="img", every=10, stream=short) as bar:
        bar.update(4)
    assert short.getvalue() == ""  # ended before the first interval: nothing to report

    log = io.StringIO()
    with PlainProgress(total=4, desc="long", unit="img", every=0, stream=log) as bar:
        for _ in range(4):
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert [line.split(" img")[0] for line in lines] == ["long: 1/4 (25%)", "long: 2/4 (50%)", "long: 3/4 (75%)",
                                                         "long: 4/4 (100%)"]  # the end said once
    assert "\r" not in log.getvalue()

    stopped = io.StringIO()
    bar = PlainProgress(total=10, desc="stopped", unit="img", every=0, stream=stopped)
    bar.update(3)
    bar.every = float("inf")  # no line for the next updates: the close reports where the work got to
    bar.update(4)
    bar.close()
    assert [line.split(" img")[0] for line in stopped.getvalue().splitlines()] == ["stopped: 3/10 (30%)",
                                                                                  "stopped: 7/10 (70%)"]


def test_a_step_logged_to_a_file_has_no_bar_fragments(weights, tmp_path):
    """train.py with stdout and stderr in one file (as `make ... > log 2>&1`): per-image warnings and the progress
    lines each on their own line, no carriage return, no piece of a bar."""
    for side, count in (("train", 3), ("test", 2)):
        folder = tmp_path / side
        folder.mkdir()
        for name in sorted(os.listdir(os.path.join(SAMPLE, "normal")))[:count]:
            shutil.copy(os.path.join(SAMPLE, "normal", name), folder / name)
    (tmp_path / "train" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        result = subprocess.run([sys.executable, "train.py", tmp_path / "train", tmp_path / "test",
                                 tmp_path / "codes" / "train", tmp_path / "codes" / "test", "--gpus", "none"],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=600,
                                env=dict(os.environ, XVISION_PROGRESS_EVERY="0"))
    text = log_path.read_bytes().decode("utf-8")  # read_text would turn carriage returns into newlines
    assert result.returncode == 0, text
    assert "\r" not in text and not BAR_FRAGMENT.search(text), text
    lines = text.splitlines()
    assert any(line.startswith("warning: skipped ") and "broken.png" in line for line in lines), text
    assert any(re.fullmatch(r"train: 4/4 \(100%\) img, \d+ s, [\d.]+ img/s", line) for line in lines), text
