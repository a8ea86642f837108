"""Progress of long work, readable both on a terminal and in a log file.

On a terminal (stderr is a TTY) a tqdm bar. Otherwise (CI, ``make ... > log``, a cluster job) a bar's carriage
returns would leave fragments in front of every other line, so a plain line instead, at most every PLAIN_EVERY_S
seconds and one where the work ended (unless the last said so), only for work that ran that long: short loops print
nothing.
Lines printed while a bar runs go through ``write``, which clears the bar on a terminal and is a plain print
otherwise.
"""

import os
import sys
import threading
import time

from tqdm import tqdm

# seconds between two plain progress lines; XVISION_PROGRESS_EVERY=S sets another cadence (0: every update)
PLAIN_EVERY_S = float(os.environ.get("XVISION_PROGRESS_EVERY", "10"))


class PlainProgress:
    """The part of tqdm's interface used here (update, write, total, n, context manager), as plain lines."""

    def __init__(self, *, total=None, desc="", unit="it", initial=0, every=PLAIN_EVERY_S, stream=None):
        self.total, self.desc, self.unit, self.n, self.every = total, desc, unit, initial, every
        self.stream = stream
        self._started = self._last = time.monotonic()
        self._first_n, self._reported = initial, None  # the count at the last line printed
        self._lock = threading.Lock()  # the scraper updates from its download threads

    def _line(self, now):
        rate = (self.n - self._first_n) / max(now - self._started, 1e-9)
        done = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"
        print(f"{self.desc + ': ' if self.desc else ''}{done} {self.unit}, {now - self._started:.0f} s, "
              f"{rate:.1f} {self.unit}/s", file=self.stream or sys.stderr, flush=True)
        self._last, self._reported = now, self.n

    def update(self, n=1):
        with self._lock:
            self.n += n
            now = time.monotonic()
            if now - self._last >= self.every:
                self._line(now)

    def write(self, text, file=None):
        print(text, file=file or sys.stdout, flush=True)

    def close(self):
        if self._reported is not None and self._reported != self.n:  # where it got to since the last line
            self._line(time.monotonic())
        self._reported = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress_bar(*, total=None, desc="", unit="it", initial=0, leave=True, enabled=True):
    """A tqdm bar on a terminal, plain lines elsewhere; nothing at all with ``enabled=False`` (``write`` still
    prints)."""
    if not enabled:
        return PlainProgress(total=total, desc=desc, unit=unit, initial=initial, every=float("inf"))
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave)
    return PlainProgress(total=total, desc=desc, unit=unit, initial=initial)
