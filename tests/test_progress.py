"""Progress without a terminal: log lines at each tenth of the work and at least every N seconds."""

from __future__ import annotations

import logging
import re
import threading
import time

import pytest

from alft import progress


@pytest.fixture
def lines():
    """The `alft` logger's messages while the test runs (the CLI may have turned propagation off)."""
    got: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            got.append(record.getMessage())

    logger = logging.getLogger("alft")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    assert not progress.enabled()  # no rich display: the log-line path
    yield got
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_line_at_each_tenth_then_done(lines, monkeypatch):
    monkeypatch.setenv("ALFT_PROGRESS_EVERY_S", "3600")  # only the tenths
    with progress.bar("embed pool", 240) as advance:
        for _ in range(15):
            advance(16)  # batches of 16: 6.7 %, 13.3 %, ...
    assert lines[0] == "embed pool: 240 to do"
    assert re.fullmatch(r"embed pool: done in \d+\.\d s", lines[-1])
    middle = lines[1:-1]
    done = [int(re.match(r"embed pool: (\d+)/240 \((\d+)%\), \d+ s so far, ~\d+ s left", m).group(1)) for m in middle]
    # the first batch at or past each tenth: 32 (13 %), 48 (20 %), 80 (33 %), 96 (40 %), 128 (53 %), ...
    assert done == [32, 48, 80, 96, 128, 144, 176, 192, 224]


def test_a_line_every_n_seconds_between_tenths(lines, monkeypatch):
    monkeypatch.setenv("ALFT_PROGRESS_EVERY_S", "0.05")
    with progress.bar("predict", 1_000_000) as advance:
        for _ in range(3):
            time.sleep(0.08)
            advance(1)
        advance(1)  # right after a line: too soon for another
    middle = lines[1:-1]
    assert [m.split(",")[0] for m in middle] == ["predict: 1/1000000 (0%)", "predict: 2/1000000 (0%)", "predict: 3/1000000 (0%)"]


def test_threads_advancing_one_bar_count_every_unit(lines, monkeypatch):
    monkeypatch.setenv("ALFT_PROGRESS_EVERY_S", "3600")
    with progress.bar("embed pool 2 shards", 10_000) as advance:
        workers = [threading.Thread(target=lambda: [advance(1) for _ in range(5000)]) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    tenths = [int(re.search(r"\((\d+)%\)", m).group(1)) // 10 for m in lines[1:-1]]
    assert tenths == list(range(1, 10))  # one line per tenth, none twice, none lost


@pytest.mark.parametrize("raw, seconds", [(None, 30.0), ("", 30.0), ("5", 5.0), ("0.5", 0.5), ("0", 30.0), ("-1", 30.0),
                                          ("nan", 30.0), ("soon", 30.0), ("1e9", 30.0)])
def test_the_interval_setting(raw, seconds, monkeypatch):
    if raw is None:
        monkeypatch.delenv("ALFT_PROGRESS_EVERY_S", raising=False)
    else:
        monkeypatch.setenv("ALFT_PROGRESS_EVERY_S", raw)
    assert progress.every_s() == seconds
