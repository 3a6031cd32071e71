"""Progress display for long work: rich bars on a terminal, log lines elsewhere.

Tasks call ``bar()``/``status()``; the CLI turns the rich display on. Without it (tests,
workers) the same calls write one log line at start and end, so nothing is silent.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("alft")

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
        yield lambda n: None
    log.info("%s: done in %.1f s", description, time.perf_counter() - start)


def is_terminal() -> bool:
    return sys.stderr.isatty()
