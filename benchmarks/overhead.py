"""What Prefect and MLflow add per round: the same campaign through the flow and through plain calls.

Both modes run the same step functions on the same config (BANKING77, head trainer, random
cold start of 100, batches of 100 up to 1,000 labels) with a warm embedding cache. A round's
wall time is the time between the starts of consecutive rounds (so it includes planning and,
in the flow, the MLflow tracking task). Modes are interleaved over repeats; the overhead is
the difference of the medians.

    .venv/bin/python benchmarks/overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.plain import ROOT, offline_env, run_plain  # noqa: E402


def config(work: Path, tag: str):
    from alft.config import load_config

    return load_config(
        ROOT / "conf" / "banking77.yaml",
        [
            f"name=overhead-{tag}",
            "seed=0",
            "budget=1000",
            "batch_size=100",
            "initial_size=100",
            "cold_start.name=random",
            "strategy.name=margin",
            "stop={}",
            f"workdir={work / tag}",
        ],
    )


def round_times(cfg) -> list[float]:
    """Seconds between consecutive round starts, rounds 1..n-2 (round 0 carries one-off warm-up)."""
    from alft.campaign.context import open_store

    starts = [r["started_at"] for r in open_store(cfg).rounds(cfg.name)]
    return [(b - a).total_seconds() for a, b in zip(starts[1:-1], starts[2:], strict=True)]


def step_medians(cfg) -> dict[str, float]:
    from alft.campaign.context import open_store

    per: dict[str, list[float]] = {}
    for s in open_store(cfg).steps(cfg.name):
        if s["round"] >= 1:
            per.setdefault(s["step"], []).append(s["seconds"])
    return {k: statistics.median(v) for k, v in per.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / ".work" / "overhead")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "overhead.json")
    args = ap.parse_args()

    offline_env()
    import os

    shutil.rmtree(args.work, ignore_errors=True)
    # the ephemeral server's database lives here; it must exist before prefect is imported
    home = Path(os.environ.setdefault("PREFECT_HOME", str(args.work / "prefect")))
    home.mkdir(parents=True, exist_ok=True)
    import logging

    logging.getLogger("alft").setLevel(logging.WARNING)
    from alft.campaign.context import campaign_data, embed_with_cache
    from flows.campaign import campaign

    warm = config(args.work, "warm")
    data = campaign_data(warm)
    embed_with_cache(warm, data.pool.texts, "pool")
    embed_with_cache(warm, data.eval.texts, "eval")
    # one throw-away flow run: starts the ephemeral Prefect server and creates MLflow's schema
    campaign(config(args.work, "warmup").model_copy(update={"budget": 200}))

    per_mode: dict[str, list[float]] = {"plain": [], "flow": []}
    steps: dict[str, list[dict]] = {"plain": [], "flow": []}
    for rep in range(args.repeats):
        for mode in ("plain", "flow"):
            cfg = config(args.work, f"{mode}-{rep}")
            t = time.perf_counter()
            run_plain(cfg) if mode == "plain" else campaign(cfg)
            times = round_times(cfg)
            per_mode[mode].extend(times)
            steps[mode].append(step_medians(cfg))
            print(f"{mode:>5} repeat {rep}: {time.perf_counter() - t:.1f} s, median round {statistics.median(times):.3f} s", flush=True)
    med = {m: statistics.median(v) for m, v in per_mode.items()}
    result = {
        "protocol": "BANKING77, head trainer, 100 random + 9 rounds of 100 (margin); warm embedding cache; "
        "round time = gap between consecutive round starts, rounds 1..8",
        "repeats": args.repeats,
        "median_round_seconds": med,
        "overhead_seconds_per_round": med["flow"] - med["plain"],
        "round_seconds": per_mode,
        "median_step_seconds": {m: {k: statistics.median(d[k] for d in v) for k in v[0]} for m, v in steps.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(
        f"median round: plain {med['plain']:.3f} s, flow {med['flow']:.3f} s, "
        f"Prefect + MLflow overhead {med['flow'] - med['plain']:.3f} s per round"
    )


if __name__ == "__main__":
    main()
