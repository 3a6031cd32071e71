"""benchmarks/transfer.py's table: alft minus random per size, and, where an alft arm ran on a
device with no random rows, the comparison against the random arm of another device, named."""

from __future__ import annotations

import json

from benchmarks.transfer import table


def _row(selection, strategy, device, repeat, value, labels=1000):
    return {"dataset": "banking77", "target": "minilm-full-ft", "labels": labels, "selection": selection,
            "strategy": strategy, "repeat": repeat, "metric": "accuracy", "value": value, "device": device}


def test_same_device_difference_and_cross_device_fallback_is_named(tmp_path):
    rows = [
        _row("random", "random", "cuda", 0, 0.80), _row("random", "random", "cuda", 1, 0.82),
        _row("alft", "margin", "cuda", 0, 0.75), _row("alft", "margin", "cuda", 1, 0.77),
        _row("alft", "default", "cpu", 0, 0.85), _row("alft", "default", "cpu", 1, 0.87),
        _row("alft", "default", "cpu", 0, 0.50, labels=500),  # no random arm of 500 anywhere
    ]
    path = tmp_path / "transfer.json"
    path.write_text(json.dumps({"rows": rows}))
    cells = [ln.split("|") for ln in table(path).splitlines()[2:]]
    lines = {(c[3].strip(), c[4].strip(), c[5].strip()): "|".join(c) for c in cells}  # device, labels, arm
    # same device: mean 0.76 against random's 0.81, no device note
    assert lines["cuda", "1,000", "alft (margin)"].rstrip().endswith("| -0.0500 |")
    # CPU alft against the GPU random arm: +0.05, and the table says where random ran
    assert lines["cpu", "1,000", "alft (default)"].rstrip().endswith("| +0.0500 (random on cuda) |")
    # nothing to compare with: the cell stays empty rather than inventing a baseline
    assert lines["cpu", "500", "alft (default)"].rstrip().endswith("|  |")
    assert len(lines) == 4
