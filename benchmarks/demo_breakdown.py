"""Where a cold ``make demo`` spends its time: start-up, embedding, the rounds, the rest.

Runs what ``make demo`` runs, ``alft run conf/banking77.yaml``, cold: a fresh embedding cache
(``ALFT_CACHE_DIR``: no pool vectors, no exported ONNX graph), a fresh campaign folder and
Prefect home, its own temporary Prefect server. Per run:

* ``startup_s``: process start to the first step line (``round 0 · embed: ...``, printed when
  the embed step ends) less that step's seconds: imports, the Prefect server, preflight
  checks, until the embed step starts;
* ``embed_s``: the embed step's seconds as the campaign store records them (the encoder is
  loaded and exported to ONNX on first use, inside it; then the 10,003 pool and 3,080 eval texts);
* ``rounds_s``: every other step the store records (score, select, labels, train, evaluate,
  track) over all rounds;
* ``other_s``: the wall time left (flow and task orchestration between steps, MLflow logging
  outside steps, the final table, stopping the server);
* ``total_s``: process start to exit.

Repeats run one after the other; medians and the load average are recorded.
Writes ``benchmarks/results/demo_breakdown.{json,md}``.

    .venv/bin/python benchmarks/demo_breakdown.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.plain import ROOT, cpu_model, offline_env  # noqa: E402

BIN = Path(sys.executable).parent
CONFIG = ROOT / "conf" / "banking77.yaml"
PARTS = ("startup_s", "embed_s", "rounds_s", "other_s", "total_s")


def one_run(tmp: Path) -> dict:
    from alft.config import load_config
    from alft.store.campaign_store import CampaignStore

    work = tmp / "work"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update(ALFT_CACHE_DIR=str(tmp / "cache"), PREFECT_HOME=str(tmp / "prefect-home"), ALFT_PREFECT_REUSE="0",
               COLUMNS="200")
    overrides = ["name=demo-breakdown", f"workdir={work}"]
    cmd = [str(BIN / "alft"), "run", str(CONFIG)] + [a for o in overrides for a in ("--set", o)]
    load_before = os.getloadavg()[0]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    first_step = None
    tail: list[str] = []
    for line in proc.stdout:
        if first_step is None and "round 0 · " in line:
            first_step = time.monotonic() - t0
        tail = (tail + [line.rstrip()])[-20:]
    rc = proc.wait()
    total = time.monotonic() - t0
    if rc != 0 or first_step is None:
        raise SystemExit(f"alft run failed with {rc}:\n" + "\n".join(tail))
    cfg = load_config(CONFIG, overrides=overrides)
    store = CampaignStore(cfg.store_url())
    steps = store.steps(cfg.name)
    store.close()
    embed = sum(s["seconds"] for s in steps if s["step"] == "embed")
    rounds = sum(s["seconds"] for s in steps if s["step"] != "embed")
    per_step: dict[str, float] = {}
    for s in steps:
        per_step[s["step"]] = per_step.get(s["step"], 0.0) + float(s["seconds"])
    return {
        "startup_s": first_step - embed, "embed_s": embed, "rounds_s": rounds,
        "other_s": total - first_step - rounds, "total_s": total,
        "rounds": len({s["round"] for s in steps}), "per_step_s": per_step,
        "load_before": load_before, "load_after": os.getloadavg()[0],
    }


def render_md(out: dict) -> str:
    med = out["median"]
    lines = [
        "# A cold `make demo`, broken down",
        "",
        f"`benchmarks/demo_breakdown.py`: `alft run conf/banking77.yaml` with a fresh embedding cache, campaign "
        f"folder and Prefect home, its own temporary Prefect server; {len(out['runs'])} runs one after the other, "
        f"median. Machine: {out['machine']['cpu']}, {out['machine']['cores']} cores; load average "
        + ", ".join(f"{r['load_before']:.1f} -> {r['load_after']:.1f}" for r in out["runs"]) + ".",
        "",
        "| part | seconds (median) | share | runs |",
        "|---|---:|---:|---|",
    ]
    names = {"startup_s": "start-up (until the embed step starts)", "embed_s": "embedding (the embed step: loading and exporting the encoder, 13,083 texts)",
             "rounds_s": "rounds (every other step)", "other_s": "the rest (orchestration, logging, exit)",
             "total_s": "**total**"}
    for k, label in names.items():
        share = f"{med[k] / med['total_s']:.0%}" if k != "total_s" else ""
        lines.append(f"| {label} | {med[k]:.1f} | {share} | {', '.join(f'{r[k]:.1f}' for r in out['runs'])} |")
    steps = sorted({s for r in out["runs"] for s in r["per_step_s"]})
    lines += ["", "Steps summed over the campaign's rounds (median seconds): "
              + ", ".join(f"{s} {statistics.median(r['per_step_s'].get(s, 0.0) for r in out['runs']):.1f}"
                          for s in steps) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json")
    args = ap.parse_args()
    if args.markdown_only:
        out = json.loads((args.out / "demo_breakdown.json").read_text())
        (args.out / "demo_breakdown.md").write_text(render_md(out))
        print(render_md(out))
        return
    offline_env()
    runs = []
    for r in range(args.repeats):
        tmp = Path(tempfile.mkdtemp(prefix="alft-demo-"))
        try:
            runs.append(one_run(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"run {r}: " + ", ".join(f"{k} {runs[-1][k]:.1f}" for k in PARTS), flush=True)
    out = {
        "protocol": "alft run conf/banking77.yaml, cold (fresh ALFT_CACHE_DIR, workdir, PREFECT_HOME; temporary server)",
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "runs": runs,
        "median": {k: statistics.median(r[k] for r in runs) for k in PARTS},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo_breakdown.json").write_text(json.dumps(out, indent=1) + "\n")
    (args.out / "demo_breakdown.md").write_text(render_md(out))
    print(render_md(out))


if __name__ == "__main__":
    main()
