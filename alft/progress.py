"""Progress display for long work: rich bars on a terminal, log lines elsewhere.

Tasks call ``bar()``/``status()``; the CLI turns the rich display on. Without it (output to
a file or a pipe, tests, workers) the same calls write a log line at the start, one at every
tenth of the work and at least every ``$ALFT_PROGRESS_EVERY_S`` seconds (30) in between,
and one at the end, so a long step is never silent.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("alft")

DEFAULT_EVERY_S = 30.0


def every_s(raw: str | None = None) -> float:
    """Seconds between progress lines without a terminal: ``$ALFT_PROGRESS_EVERY_S`` (default 30)."""
    raw = os.environ.get("ALFT_PROGRESS_EVERY_S") if raw is None else raw
    if raw is None or not raw.strip():
        return DEFAULT_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (0 < value <= 86400):  # NaN fails too
        log.warning("ALFT_PROGRESS_EVERY_S=%r is not a number of seconds in (0, 86400]; using %g", raw, DEFAULT_EVERY_S)
        return DEFAULT_EVERY_S
    return value


class _Lines:
    """``advance(n)`` that logs ``done/total`` at each tenth of the work, or after ``every`` seconds
    without a line, whichever comes first (shards advance one bar from several threads)."""

    def __init__(self, description: str, total: int, every: float) -> None:
        self.description, self.total, self.every = description, total, every
        self.done = 0
        self.start = self.last = time.monotonic()
        self.tenth = 0  # the last tenth of the work a line was written for
        self.lock = threading.Lock()

    def __call__(self, n: int) -> None:
        with self.lock:
            self.done += n
            if self.total <= 0 or self.done >= self.total:
                return  # the end has its own line ("done in ...")
            now = time.monotonic()
            tenth = self.done * 10 // self.total
            if tenth <= self.tenth and now - self.last < self.every:
                return
            self.tenth, self.last = max(tenth, self.tenth), now
            elapsed = now - self.start
            left = elapsed * (self.total - self.done) / self.done if self.done else float("nan")
            log.info(
                "%s: %d/%d (%d%%), %.0f s so far, ~%.0f s left",
                self.description, self.done, self.total, 100 * self.done // self.total, elapsed, left,
            )

_progress = None  # a rich.progress.Progress while the CLI display is on


def enable(console=None) -> None:
    """Turn on rich progress bars (the CLI does this when stderr is a terminal)."""
    global _progress
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    _progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    _progress.start()


def disable() -> None:
    global _progress
    if _progress is not None:
        _progress.stop()
        _progress = None


def enabled() -> bool:
    return _progress is not None


@contextmanager
def bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar over ``total`` units; yields ``advance(n)``."""
    start = time.perf_counter()
    if _progress is not None:
        task = _progress.add_task(description, total=total)
        try:
            yield lambda n: _progress.advance(task, n)
        finally:
            _progress.remove_task(task)
    else:
        log.info("%s: %d to do", description, total)
        yield _Lines(description, total, every_s())
    log.info("%s: done in %.1f s", description, time.perf_counter() - start)


def is_terminal() -> bool:
    return sys.stderr.isatty()
