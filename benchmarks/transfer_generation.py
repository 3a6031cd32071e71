"""Self-Instruct: does SFT on alft's chosen instructions beat SFT on random ones of the same count?

The generation half of the target-model proof (``benchmarks/transfer.py`` is the classification
half). It takes a finished ``conf/self_instruct.yaml`` campaign (by default the one
``benchmarks/llm_steps.py`` ran, in ``benchmarks/.work/llm_steps/campaign``) and runs the product's
own comparison on it, ``alft target`` (Prefect, the store's ``target_runs``, MLflow), with the
shipped config's ``target`` section: LoRA SFT of the packaged SmolLM2-135M-Instruct on the
campaign's labeled instructions and on ``target.repeats`` random sets of the same size drawn from
the pool (reference responses from the data's ``response`` column), the same training seeds,
evaluated on the 85 held-out instructions (ROUGE-L of greedy answers, loss and perplexity of the
references). Rows are appended to ``benchmarks/results/transfer.json`` (replacing earlier rows of
the same dataset and target) as ``{dataset, target, labels, selection, repeat, metric, value}``
plus ``seconds``, ``device`` and the load average.

    .venv/bin/python benchmarks/transfer_generation.py [--workdir DIR] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.llm_steps import load_sampler, mean
from benchmarks.plain import offline_env

CONF = ROOT / "conf" / "self_instruct.yaml"
WORK = ROOT / "benchmarks" / ".work" / "llm_steps"
RESULTS = ROOT / "benchmarks" / "results" / "transfer.json"
TARGET = "smollm2-135m-lora-sft"
METRICS = ("rouge_l", "loss", "perplexity")


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=str(WORK / "campaign"), help="the finished campaign's workdir")
    ap.add_argument("--cache", default=str(WORK / "cache"), help="ALFT_CACHE_DIR holding the converted model")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    offline_env()

    from alft.campaign.target import spec_digest
    from alft.config import load_config
    from alft.store.campaign_store import CampaignStore
    from alft.store.target_runs import finished

    sets = [f"workdir={args.workdir}", f"target.repeats={args.repeats}"]
    cfg = load_config(CONF, sets)
    env = {**os.environ, "ALFT_CACHE_DIR": args.cache, "PREFECT_HOME": str(WORK / "prefect")}
    cmd = [str(ROOT / ".venv" / "bin" / "alft"), "target", str(CONF)] + [a for s in sets for a in ("--set", s)]
    loads: list[float] = []
    with load_sampler(loads):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    (WORK / "target.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"alft target failed ({proc.returncode}); see {WORK / 'target.log'}")

    runs = finished(CampaignStore(cfg.store_url()), cfg.name, spec_digest(cfg))
    rows = []
    for (arm, n, repeat), r in sorted(runs.items()):
        for metric in METRICS:
            if metric in r["metrics"]:
                rows.append({
                    "dataset": "self_instruct", "target": TARGET, "labels": n, "selection": arm,
                    # the campaign's (proxy) strategy that chose alft's set
                    "strategy": cfg.strategy.name if arm == "alft" else None,
                    "repeat": repeat, "metric": metric, "value": r["metrics"][metric],
                    "seconds": r["seconds"], "device": "cpu", "load_avg": mean(loads),
                })
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"rows": []}
    data["rows"] = [r for r in data["rows"] if not (r["dataset"] == "self_instruct" and r["target"] == TARGET)] + rows
    RESULTS.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(proc.stdout[-2000:])
    print(f"{len(rows)} rows -> {RESULTS} (alft target: {wall:.0f} s wall, load {mean(loads)})")
    return rows


if __name__ == "__main__":
    main()
