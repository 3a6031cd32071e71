"""Sharded embedding: what shards cost or gain against the unsharded path, with the real MiniLM.

Cases, each embedding the same ``--n`` BANKING77 training texts into an empty cache (the
packaged all-MiniLM-L6-v2, the campaign's encode options), ``--repeats`` times, in turn:

* ``unsharded tN``: ``embed_with_cache`` in this process with N torch threads (no Prefect);
* ``thread runner, S shards``: ``tasks.embed.embed_texts`` inside a Prefect flow run on the
  default thread pool, one torch thread per shard (the process's torch threads are shared);
* ``dask, S workers x 1 thread``: the same flow with prefect-dask's ``DaskTaskRunner`` on a
  ``distributed.LocalCluster`` of S single-threaded worker processes, started and warmed up
  (model loaded in each worker) beforehand; both times are recorded apart;
* ``... (all cached)``: the same call again: the cost of finding nothing to do.

Every case's vectors are compared with the first unsharded run's: they must be equal bit
for bit. Prefect uses its ephemeral API (PREFECT_HOME in benchmarks/.work).

    .venv/bin/python benchmarks/shard_embed.py [--n 2000] [--shards 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.plain import cpu_model, offline_env, shared_data  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "shard_embed"
WORK = ROOT / "benchmarks" / ".work" / "shard_embed"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    os.environ.setdefault("PREFECT_HOME", str(WORK / "prefect"))
    offline_env()

    import yaml
    from distributed import LocalCluster
    from prefect import flow
    from prefect_dask import DaskTaskRunner

    from alft.campaign.context import embed_with_cache, embedding_cache
    from alft.config import load_config
    from alft.models.embedcache import text_keys
    from tasks.embed import embed_texts

    rows = [json.loads(line) for line in open(shared_data() / "banking77" / "train.jsonl", encoding="utf-8")]
    distinct = list(dict.fromkeys(r["text"] for r in rows))
    texts, spare = distinct[: args.n], distinct[args.n : args.n + 800]
    data = WORK / "pool.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "text": t, "label": "x" if i % 2 else "y"}) + "\n" for i, t in enumerate(texts)))

    def config(tag: str, **model) -> object:
        doc = {
            "name": "shard-bench",
            "budget": 10,
            "batch_size": 10,
            "workdir": str(WORK / "campaign"),
            "data": {"pool": {"path": str(data)}},
            "model": {"path": "packaged:all-MiniLM-L6-v2", "cache_dir": str(WORK / "cache" / tag), **model},
            "cold_start": {"name": "random"},
        }
        path = WORK / f"{tag}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return load_config(path)

    @flow(name="alft-shard-bench", persist_result=False)
    def embed_flow(cfg, texts: list[str]) -> dict:
        return embed_texts(cfg, texts, "pool", 0)

    cores = os.cpu_count() or 1
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=args.shards, threads_per_worker=1, processes=True, dashboard_address=":0")
    cluster_s = time.perf_counter() - t0
    dask_runner = lambda: DaskTaskRunner(address=cluster.scheduler_address)  # noqa: E731

    cases = [
        (f"unsharded t{cores}", dict(), lambda cfg: embed_with_cache(cfg, texts, "pool")),
        ("unsharded t1", dict(num_threads=1), lambda cfg: embed_with_cache(cfg, texts, "pool")),
        (
            f"thread runner, {args.shards} shards x 1 thread",
            dict(shards=args.shards, num_threads=1),
            lambda cfg: embed_flow(cfg, texts),
        ),
        (
            f"dask, {args.shards} workers x 1 thread",
            dict(shards=args.shards, task_runner="dask"),
            lambda cfg: embed_flow.with_options(task_runner=dask_runner())(cfg, texts),
        ),
    ]
    embed_flow(config("warm", num_threads=1), texts[:10])  # Prefect's ephemeral server starts here
    embed_with_cache(config("warm2"), texts[:10], "warm")  # the encoder is loaded here
    t0 = time.perf_counter()  # each Dask worker imports torch and loads the model on its first shard
    warm = embed_flow.with_options(task_runner=dask_runner())(
        config("warm3", shards=args.shards, task_runner="dask"), spare  # 800 texts: a batch per worker at least
    )
    assert warm["processes"] == args.shards, warm
    workers_warm_s = time.perf_counter() - t0

    reference = None
    out: list[dict] = []
    for rep in range(args.repeats):
        for name, model, run in cases:
            tag = f"{len(out)}"
            cfg = config(tag, **model)
            t0 = time.perf_counter()
            res = run(cfg)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = run(cfg)
            cached = time.perf_counter() - t0
            vecs = embedding_cache(cfg).get(text_keys(texts))
            if reference is None:
                reference = vecs
            same = bool(np.array_equal(vecs, reference))
            assert again["embedded"] == 0, again
            row = {
                "case": name,
                "repeat": rep,
                "seconds": round(first, 2),
                "texts_per_s": round(len(texts) / first, 1),
                "all_cached_s": round(cached, 3),
                "embedded": res["embedded"],
                "bit_identical": same,
            }
            out.append(row)
            print(row, flush=True)
    cluster.close()

    summary = {}
    for name, _, _ in cases:
        secs = sorted(r["seconds"] for r in out if r["case"] == name)
        summary[name] = {
            "median_s": float(np.median(secs)),
            "median_all_cached_s": float(np.median([r["all_cached_s"] for r in out if r["case"] == name])),
        }
    base = summary[cases[0][0]]["median_s"]
    for v in summary.values():
        v["speedup_vs_unsharded_default"] = round(base / v["median_s"], 2)
    result = {
        "machine": {"cpu": cpu_model(), "cores": cores, "loadavg": os.getloadavg()},
        "n_texts": len(texts),
        "shards": args.shards,
        "dask_cluster_start_s": round(cluster_s, 2),
        "dask_workers_first_shard_s": round(workers_warm_s, 2),
        "runs": out,
        "summary": summary,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [
        "# Sharded embedding: cost and gain",
        "",
        f"{len(texts):,} BANKING77 training texts, packaged all-MiniLM-L6-v2 (max_length 128), an empty cache per "
        f"run; median of {args.repeats} runs, cases interleaved. Machine: {cpu_model()}, {cores} cores (shared VM, "
        f"load average {os.getloadavg()[0]:.2f} at the end). Not included: the Dask LocalCluster's start "
        f"({cluster_s:.1f} s) and its workers' first shard, where each imports torch and loads the model "
        f"({workers_warm_s:.1f} s for a warm-up run of 800 other texts).",
        "",
        "| case | seconds | texts/s | vs unsharded (default threads) | re-run, all cached (s) | bit-identical |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, _, _ in cases:
        s = summary[name]
        same = all(r["bit_identical"] for r in out if r["case"] == name)
        lines.append(
            f"| {name} | {s['median_s']:.1f} | {len(texts) / s['median_s']:.0f} | {s['speedup_vs_unsharded_default']}x | "
            f"{s['median_all_cached_s']:.2f} | {'yes' if same else 'NO'} |"
        )
    lines += [
        "",
        "Thread-runner and Dask times include Prefect's task runs (one per shard), the shard planning (a "
        "tokenizer pass over the missing texts) and the merge; Dask's include sending the texts to the workers.",
        "",
        "The thread-runner and Dask re-runs (all cached) are a whole Prefect flow run on the ephemeral API: the "
        "step plans no shard and submits no task; the ~1.2 s is the flow run's own cost. On this 2-core VM shared "
        "with other jobs (load average 4-6), one torch thread beats two by 2x (thread barriers wait for a core "
        "another job holds), so shards can at best match a one-thread unsharded embed here; Dask's worker "
        "processes add pickling, scheduling and a second copy of the model. Shards pay off with more cores or "
        "machines than one process can use (a Dask cluster at model.dask_address).",
    ]
    RESULTS.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
