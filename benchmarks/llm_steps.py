"""What a generation campaign on the packaged SmolLM2 costs on this machine: getting the model
ready, decoding speed, and seconds per step of ``conf/self_instruct.yaml`` as shipped.

    .venv/bin/python benchmarks/llm_steps.py [--gemma] [--keep-cache] [--threads N] [--skip-campaign]

1. model (in this process, fresh cache under ``benchmarks/.work/llm_steps``): the first
   resolution of ``packaged:smollm2-135m-instruct`` (dequantize the GGUF + save the folder;
   ``--keep-cache`` keeps an earlier run's folder and reports the seconds its conversion
   recorded in ``alft_gguf.json``), a cached resolution, loading the folder, and greedy
   decoding of 16 eval prompts x 32 new tokens at the shipped ``gen_batch_size`` with 1 and 2
   torch threads, interleaved, 2 repeats each (tokens/s of the median; EOS may end rows early:
   the count is the tokens really generated). ``--gemma``: the same for ``packaged:gemma3-270m``
   (assembling its four parts included). On a shared machine a second intra-op thread mostly
   waits for the first (the other core is busy), which is why both are measured.
2. campaign: ``alft run conf/self_instruct.yaml`` (the CLI: Prefect's ephemeral server, MLflow,
   the simulated oracle) in a fresh workdir, with the cache of part 1 (the model is converted
   there already; the pool is embedded in round 0). Wall time, the child's CPU seconds, and per
   step the seconds the store recorded for each round (``steps.seconds``), reported as the
   median over the rounds that do that step's real work. ``--threads N`` runs the campaign with
   ``model.num_threads=N`` (default: all cores, as shipped).

The 1-minute load average is sampled every 5 s during each part (the machine is shared: read
every number with it). Writes ``benchmarks/results/llm_steps.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.plain import ROOT, cpu_model, offline_env  # noqa: E402

WORK = ROOT / "benchmarks" / ".work" / "llm_steps"
RESULTS = ROOT / "benchmarks" / "results"
MODEL = "packaged:smollm2-135m-instruct"
MODEL_STEPS = ("dequantize", "resolve", "load folder", "greedy decode")  # the rows of part 1
CONF = ROOT / "conf" / "self_instruct.yaml"


@contextmanager
def load_sampler(out: list[float], every: float = 5.0):
    """Append the 1-minute load average to ``out`` every ``every`` seconds while the block runs."""
    stop = threading.Event()

    def run():
        while True:
            out.append(os.getloadavg()[0])
            if stop.wait(every):
                return

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        out.append(os.getloadavg()[0])


def mean(xs: list[float]) -> float:
    return round(statistics.fmean(xs), 2) if xs else float("nan")


def model_part(rows: list[dict], gemma: bool, keep_cache: bool) -> None:
    from alft.config import load_config
    from alft.models.causal_lm import GenerativeModel
    from alft.models.checkpoints import load_causal_lm
    from alft.models.encoder import resolve_model_path

    import torch

    from alft.models.packaged import META

    cache = WORK / "cache"
    if not keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    names = [MODEL] + (["packaged:gemma3-270m"] if gemma else [])
    for name in names:
        loads: list[float] = []
        with load_sampler(loads):
            t0, c0 = time.perf_counter(), time.process_time()
            folder = resolve_model_path(name, cache)
            first, cpu = time.perf_counter() - t0, time.process_time() - c0
        row = {"step": "dequantize + save (first resolution)", "model": name, "seconds": round(first, 2),
               "cpu_s": round(cpu, 2), "n": 1, "load_avg": mean(loads)}
        if keep_cache:  # converted by an earlier run: the seconds its conversion recorded
            row = {**row, "seconds": json.loads((Path(folder) / META).read_text())["seconds"], "cpu_s": None,
                   "load_avg": None, "note": "recorded by the conversion in alft_gguf.json"}
        rows.append(row)
        t0 = time.perf_counter()
        for _ in range(20):
            resolve_model_path(name, cache)
        rows.append({"step": "resolve (cached)", "model": name, "seconds": round((time.perf_counter() - t0) / 20, 5),
                     "n": 20, "load_avg": round(os.getloadavg()[0], 2)})
        loads = []
        with load_sampler(loads):
            t0 = time.perf_counter()
            load_causal_lm(folder, "benchmark", device="cpu")
            rows.append({"step": "load folder", "model": name, "seconds": round(time.perf_counter() - t0, 2),
                         "n": 1, "load_avg": mean(loads)})
    cfg = load_config(CONF, [f"workdir={WORK / 'unused'}"])
    sft = cfg.trainer.sft
    model = GenerativeModel.from_base(MODEL, sft, device="cpu")
    from alft.campaign.context import campaign_data

    examples = campaign_data(cfg).eval.examples()[:16]
    before = torch.get_num_threads()
    runs: dict[int, list[tuple[float, float, int, float]]] = {1: [], 2: []}
    for _ in range(2):
        for threads in (1, 2):  # interleaved: both see the same stretch of the machine's load
            torch.set_num_threads(threads)
            loads = []
            with load_sampler(loads, every=2.0):
                t0, c0 = time.perf_counter(), time.process_time()
                tokens, _, _ = model._greedy(examples, 32, "decode")
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            runs[threads].append((dt, cpu, sum(len(t) for t in tokens), mean(loads)))
    torch.set_num_threads(before)
    for threads, rs in runs.items():
        dt, cpu = statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)
        n_tok = rs[0][2]  # greedy: every repeat generates the same tokens
        rows.append({"step": f"greedy decode (16 prompts, <= 32 tokens, batch {sft.gen_batch_size}, {threads} thread(s))",
                     "model": MODEL, "seconds": round(dt, 2), "cpu_s": round(cpu, 2), "n": n_tok,
                     "tokens_per_s": round(n_tok / dt, 1), "tokens_per_cpu_s": round(n_tok / cpu, 1),
                     "load_avg": mean([r[3] for r in rs]), "repeats_s": [round(r[0], 2) for r in rs]})


def campaign_part(rows: list[dict], threads: int | None) -> dict:
    from alft.config import load_config
    from alft.store.campaign_store import CampaignStore

    work = WORK / "campaign"
    shutil.rmtree(work, ignore_errors=True)
    env = {**os.environ, "ALFT_CACHE_DIR": str(WORK / "cache"), "PREFECT_HOME": str(WORK / "prefect")}
    cmd = [str(ROOT / ".venv" / "bin" / "alft"), "run", str(CONF), "--set", f"workdir={work}"]
    if threads:
        cmd += ["--set", f"model.num_threads={threads}"]
    loads: list[float] = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with load_sampler(loads):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (WORK / "campaign.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"alft run failed ({proc.returncode}); see {WORK / 'campaign.log'}")
    cfg = load_config(CONF, [f"workdir={work}"])
    store = CampaignStore(cfg.store_url())
    per: dict[str, dict[int, float]] = {}
    for s in store.steps(cfg.name):
        per.setdefault(s["step"], {})[int(s["round"])] = float(s["seconds"])
    n_rounds = len({r for d in per.values() for r in d})
    for step, by_round in sorted(per.items()):
        # real work only: the score step of round 0 is k-center over cached embeddings (decoding
        # starts in round 1); embed fills the cache in round 0 and finds it full after
        real = {"score": lambda r: r > 0, "embed": lambda r: r == 0}.get(step, lambda r: True)
        rounds = {r: v for r, v in by_round.items() if real(r)} or by_round
        rows.append({"step": step, "model": MODEL, "seconds": round(statistics.median(rounds.values()), 2),
                     "n": len(rounds), "load_avg": mean(loads),
                     "per_round": {str(r): round(v, 2) for r, v in sorted(by_round.items())}})
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    metrics = store.metrics(cfg.name)
    total = {"step": "campaign total (alft run)", "model": MODEL, "seconds": round(wall, 1), "cpu_s": round(cpu, 1),
             "threads": threads or os.cpu_count(),
             "n": n_rounds, "load_avg": mean(loads), "load_max": round(max(loads), 2),
             "rouge_l": {str(r): round(m["rouge_l"], 4) for r, m in sorted(metrics.items()) if "rouge_l" in m},
             "base_rouge_l": metrics.get(0, {}).get("base.rouge_l")}
    rows.append(total)
    return total


def write(rows: list[dict]) -> None:
    import torch

    RESULTS.mkdir(parents=True, exist_ok=True)
    facts = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
             "torch_threads": torch.get_num_threads(), "config": str(CONF.relative_to(ROOT))}
    (RESULTS / "llm_steps.json").write_text(json.dumps({"machine": facts, "rows": rows}, indent=1) + "\n")
    lines = [
        "# Generation campaign on the packaged SmolLM2-135M-Instruct",
        "",
        f"`benchmarks/llm_steps.py` on {facts['cpu']} ({facts['cores']} cores), torch {facts['torch']}; "
        "load average = mean 1-minute load while the row ran (the machine is shared).",
        "",
        "| step | model | seconds | n | load avg | notes |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        notes = []
        if "tokens_per_s" in r:
            per_cpu = f", {r['tokens_per_cpu_s']} tokens per CPU s" if "tokens_per_cpu_s" in r else ""
            notes.append(f"{r['tokens_per_s']} tokens/s{per_cpu}")
        if r.get("cpu_s") is not None:
            notes.append(f"{r['cpu_s']} CPU s")
        if "note" in r:
            notes.append(r["note"])
        if "threads" in r:
            notes.append(f"{r['threads']} torch thread(s)")
        if "per_round" in r:
            notes.append("per round " + ", ".join(f"r{k} {v}" for k, v in r["per_round"].items()))
        if "rouge_l" in r:
            notes.append(f"ROUGE-L base {r['base_rouge_l']:.4f}, rounds " + ", ".join(f"{v:.4f}" for v in r["rouge_l"].values()))
        load = "-" if r.get("load_avg") is None else r["load_avg"]
        lines.append(f"| {r['step']} | {r['model']} | {r['seconds']} | {r['n']} | {load} | {'; '.join(notes)} |")
    (RESULTS / "llm_steps.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gemma", action="store_true", help="also convert packaged:gemma3-270m once")
    ap.add_argument("--keep-cache", action="store_true", help="reuse the converted models of an earlier run")
    ap.add_argument("--threads", type=int, default=None, help="model.num_threads of the campaign run")
    ap.add_argument("--skip-campaign", action="store_true")
    ap.add_argument("--skip-model", action="store_true", help="keep the model rows of the last results file")
    args = ap.parse_args()
    offline_env()
    WORK.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    if args.skip_model:
        old = json.loads((RESULTS / "llm_steps.json").read_text())["rows"]
        rows = [r for r in old if r["step"].startswith(MODEL_STEPS)]
    else:
        model_part(rows, args.gemma, args.keep_cache)
    if not args.skip_campaign:
        campaign_part(rows, args.threads)
    elif (RESULTS / "llm_steps.json").exists():  # keep the last campaign's rows
        old = json.loads((RESULTS / "llm_steps.json").read_text())["rows"]
        rows += [r for r in old if not r["step"].startswith(MODEL_STEPS)]
    write(rows)
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
