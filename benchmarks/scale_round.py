"""One active-learning round on a 1,000,000-example pool: time and peak memory per step.

What runs
---------
* **Pool texts**: 1,000,000 distinct synthetic requests, each a BANKING77 training text
  (10k distinct "seeds", their intents as gold labels) with one of 40 openings and one of
  30 closings (``make_texts``). Eval split: the real BANKING77 test set (3,080 texts).
* **Embeddings**: the packaged all-MiniLM-L6-v2 embeds, for real and through the campaign's
  cache (``alft.campaign.embed_with_cache``), the first ``--real`` pool texts (20,000;
  their throughput is recorded) and the eval split. The other pool texts get **clustered
  synthetic vectors**: the real vector of a real-subset text with the same seed (else one
  with the same intent) plus Gaussian noise, L2-normalised, with the noise drawn so that
  the cosine to that centre follows the cosine between two real variations of one seed
  (measured on the real subset). So the pool is ~10k clusters in the real embedding space,
  as tight or loose as real variations are. The vectors are written into the same cache
  under the texts' keys, so the campaign cannot tell them from real ones.
* **The round**: the step functions the Prefect flow runs (``tasks.*``, called through
  ``.fn`` as ``benchmarks/plain.py`` does: same code, same store and files, no Prefect
  engine, MLflow on SQLite in the work folder). Round 0 (random cold start, 1,000 labels) is
  measured as well; round 1 is the measured round: embed (every text already cached),
  score (margin over the 999,000 candidates with round 0's head), select (margin top-1,000),
  labels (the simulated oracle: 1,000 label events, one store transaction), train (head on
  2,000 labels), evaluate, stop, track (MLflow nested run, artifacts, logged model).
* **Other selectors** on round 1's inputs, called directly (``Strategy.query``):
  kcenter_approx and two_stage, with the time to build their inputs apart.

Memory: the kernel's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``
before each step) minus the resident set before the step, as in ``selection_scale.py``;
the resident set before and after is recorded too, since memoised data (the pool's
vectors, the loaded pool) stays between steps as it does in a flow run.

    .venv/bin/python benchmarks/scale_round.py [--pool 1000000] [--real 20000] [--reuse]

Writes ``benchmarks/results/scale_round.json`` and ``.md``; work files (about 3 GB) go
to ``benchmarks/.work/scale_round`` (``--reuse`` keeps the data and the cache of an
earlier run and only repeats the campaign).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.plain import cpu_model, offline_env, shared_data  # noqa: E402
from benchmarks.selection_scale import _status_kb, blas_info, reset_peak  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "scale_round"
WORK = ROOT / "benchmarks" / ".work" / "scale_round"
MODEL = "packaged:all-MiniLM-L6-v2"
K = 1000

OPENINGS = [
    "", "Hi, ", "Hello, ", "Hey, ", "Good morning, ", "Good evening, ", "Please help: ", "Quick question: ",
    "Excuse me, ", "Sorry to bother you, ", "Urgent: ", "Hi there, ", "Hello team, ", "Dear support, ",
    "Help! ", "Question: ", "I need help. ", "Can you help? ", "Hi again, ", "Morning! ", "Hey support, ",
    "One more thing: ", "Please, ", "Hello, it's me again. ", "Hi, quick one: ", "So, ", "Well, ",
    "Listen, ", "Okay, ", "Hmm, ", "Hi, I'm a new customer. ", "Hi, long-time customer here. ",
    "Hello from abroad, ", "Hi, on behalf of my son: ", "Hi, on behalf of my mother: ", "Greetings, ",
    "Yo, ", "Hello?? ", "Hi, sorry for my English. ", "Support, ",
]
CLOSINGS = [
    "", " Thanks.", " Thank you!", " Please advise.", " Any ideas?", " Cheers.", " This is urgent.",
    " I'm travelling right now.", " Sent from my phone.", " Thanks in advance.", " Please reply soon.",
    " I'm really worried.", " It happened again today.", " This is the second time.", " Regards.",
    " Many thanks.", " Appreciate it.", " What should I do?", " Is that normal?", " Help me please.",
    " Best wishes.", " ASAP please.", " Not happy.", " Kind regards, Sam.", " Ta.", " Thx",
    " Waiting for your answer.", " I'm abroad.", " My app is up to date.", " Nothing works.",
]


# --------------------------------------------------------------------------- measuring
class Steps:
    """Wall time and peak resident memory of named steps."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def run(self, phase: str, name: str, fn, *args, **kwargs):
        import gc

        gc.collect()
        before = reset_peak()  # KiB
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        seconds = time.perf_counter() - t0
        peak = _status_kb("VmHWM")
        after = _status_kb("VmRSS")
        row = {
            "phase": phase,
            "step": name,
            "seconds": round(seconds, 3),
            "rss_before_mib": round(before / 1024),
            "peak_rss_mib": round(peak / 1024),
            "peak_extra_mib": round((peak - before) / 1024),
            "rss_after_mib": round(after / 1024),
        }
        self.rows.append(row)
        print(
            f"  {phase:<10} {name:<34} {seconds:8.2f} s  peak {row['peak_rss_mib']:6d} MiB "
            f"(+{row['peak_extra_mib']} over {row['rss_before_mib']})",
            flush=True,
        )
        return out


# --------------------------------------------------------------------------- data
def seeds() -> tuple[list[str], list[str], list[dict]]:
    """Distinct BANKING77 training texts and their intents; the test set as eval rows."""
    data = shared_data() / "banking77"
    rows = [json.loads(line) for line in open(data / "train.jsonl", encoding="utf-8")]
    seen: dict[str, str] = {}
    for r in rows:
        seen.setdefault(r["text"].strip(), r["label"])
    texts = sorted(seen)
    test = [json.loads(line) for line in open(data / "test.jsonl", encoding="utf-8")]
    ev = [{"id": f"test-{i:05d}", "text": r["text"], "label": r["label"]} for i, r in enumerate(test)]
    return texts, [seen[t] for t in texts], ev


def make_texts(seed_texts: list[str], n: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """``n`` distinct (opening, seed, closing) texts in random order, and each one's seed index."""
    s, o, c = len(seed_texts), len(OPENINGS), len(CLOSINGS)
    if n > s * o * c:
        raise SystemExit(f"at most {s * o * c} distinct texts")
    combo = rng.choice(s * o * c, size=n, replace=False)
    seed = combo % s
    rest = combo // s
    op, cl = rest % o, rest // o
    texts = [OPENINGS[a] + seed_texts[b] + CLOSINGS[d] for a, b, d in zip(op.tolist(), seed.tolist(), cl.tolist())]
    return texts, seed


def write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def centres_and_spread(
    real: np.ndarray, real_seed: np.ndarray, seed_label: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A centre row of ``real`` for every seed, and the real cosines between two variations.

    A seed's centre is its first real variation; a seed with none borrows a random real
    text of the same intent. The cosines come from consecutive real variations of a seed.
    """
    n_seeds = seed_label.size
    centre = np.full(n_seeds, -1, dtype=np.int64)
    order = np.argsort(real_seed, kind="stable")
    s_sorted = real_seed[order]
    first = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    centre[s_sorted[first]] = order[first]
    real_label = seed_label[real_seed]
    for s in np.flatnonzero(centre < 0):
        same = np.flatnonzero(real_label == seed_label[s])
        centre[s] = rng.choice(same) if same.size else rng.integers(real.shape[0])
    pair = np.flatnonzero(s_sorted[1:] == s_sorted[:-1])
    a, b = order[pair], order[pair + 1]
    return centre, np.einsum("ij,ij->i", real[a], real[b])


def synthetic_vectors(centres: np.ndarray, cos_pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors around ``centres`` [n, d] with cosines to them drawn from ``cos_pool``.

    For x = c + sigma g (g standard normal in d dimensions, |c| = 1), cos(x, c) is about
    1 / sqrt(1 + sigma^2 d); sigma is solved from a drawn cosine.
    """
    n, d = centres.shape
    cos = rng.choice(cos_pool, size=n).clip(0.3, 0.9999)
    sigma = np.sqrt((1.0 / cos**2 - 1.0) / d).astype(np.float32)  # [n]
    x = rng.standard_normal((n, d), dtype=np.float32)
    x *= sigma[:, None]
    x += centres
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def build(args, steps: Steps) -> dict:
    """Data files, label set and the embedding cache (real + synthetic vectors)."""
    from alft.campaign.context import embed_with_cache, embedding_cache, encoder_for, set_threads
    from alft.config import load_config
    from alft.models.embedcache import text_keys

    rng = np.random.default_rng(args.seed)
    seed_texts, seed_labels, ev = steps.run("setup", "seed texts (BANKING77)", seeds)
    if args.eval:
        ev = ev[: args.eval]
    texts, seed_of = steps.run("setup", f"make {args.pool:,} texts", make_texts, seed_texts, args.pool, rng)
    labels = np.asarray(seed_labels, dtype=object)[seed_of]

    def files() -> None:
        write_jsonl(WORK / "pool.jsonl", ({"id": f"p{i:07d}", "text": t, "label": lab} for i, (t, lab) in enumerate(zip(texts, labels))))
        write_jsonl(WORK / "eval.jsonl", ev)
        (WORK / "labels.json").write_text(json.dumps(sorted(set(seed_labels))))

    steps.run("setup", "write pool/eval JSONL", files)
    cfg = load_config(write_config(args))
    enc = encoder_for(cfg)
    facts: dict = {}

    steps.run("setup", "load MiniLM", enc.batches, ["warm up"])
    # On a shared 2-core VM one torch thread can beat two (thread barriers wait for a core
    # another job holds): probe both on 400 texts outside the pool's real subset, use the faster.
    probe = texts[args.real : args.real + 400]
    facts["probe_texts_per_s"] = {}
    for n in sorted({1, os.cpu_count() or 1}):
        import torch

        torch.set_num_threads(n)
        t0 = time.perf_counter()
        enc.encode(probe)
        facts["probe_texts_per_s"][n] = round(len(probe) / (time.perf_counter() - t0), 1)
    args.threads = max(facts["probe_texts_per_s"], key=facts["probe_texts_per_s"].get)
    facts["torch_threads"] = args.threads
    print(f"  probe: texts/s by torch threads {facts['probe_texts_per_s']}: using {args.threads}", flush=True)
    cfg = load_config(write_config(args))
    set_threads(cfg)
    t0 = time.perf_counter()
    steps.run("setup", f"MiniLM: {args.real:,} pool texts (cached)", embed_with_cache, cfg, texts[: args.real], "pool")
    facts["real_pool_texts"] = args.real
    facts["pool_texts_per_s"] = round(args.real / (time.perf_counter() - t0), 1)
    t0 = time.perf_counter()
    steps.run("setup", f"MiniLM: {len(ev):,} eval texts (cached)", embed_with_cache, cfg, [r["text"] for r in ev], "eval")
    facts["eval_texts_per_s"] = round(len(ev) / (time.perf_counter() - t0), 1)

    cache = embedding_cache(cfg)
    real = cache.get(text_keys(texts[: args.real]))
    centre, pair_cos = centres_and_spread(real, seed_of[: args.real], np.asarray(seed_labels), rng)

    def quantiles(x: np.ndarray) -> dict:
        return {q: round(float(np.quantile(x, p)), 4) for q, p in (("p5", 0.05), ("median", 0.5), ("p95", 0.95))}

    facts["real_pairs"] = int(pair_cos.size)
    facts["real_pair_cos"] = quantiles(pair_cos)

    def synthetic() -> np.ndarray:
        chunk = 100_000
        cos_check = []
        with cache.writer() as w:
            for a in range(args.real, args.pool, chunk):
                b = min(args.pool, a + chunk)
                centres = real[centre[seed_of[a:b]]]  # [b, d]
                vecs = synthetic_vectors(centres, pair_cos, rng)
                cos_check.append(np.einsum("ij,ij->i", vecs[:2000], centres[:2000]))
                w.append(text_keys(texts[a:b]), vecs)
        return np.concatenate(cos_check)

    syn_cos = steps.run("setup", f"synthetic vectors: {args.pool - args.real:,}", synthetic)
    facts["synthetic_cos_to_centre"] = quantiles(syn_cos)
    (WORK / "facts.json").write_text(json.dumps(facts))
    return facts


def write_config(args) -> Path:
    import yaml

    cfg = {
        "name": "scale-round",
        "seed": args.seed,
        "budget": 2 * K,
        "initial_size": K,
        "batch_size": K,
        "workdir": str(WORK / "campaign"),
        "data": {
            "pool": {"path": str(WORK / "pool.jsonl")},
            "eval": {"path": str(WORK / "eval.jsonl")},
            "labels": str(WORK / "labels.json"),
        },
        "model": {"path": MODEL, "cache_dir": str(WORK / "cache"), "num_threads": getattr(args, "threads", None)},
        "cold_start": {"name": "random"},
        "strategy": {"name": "margin"},
        "trainer": {"kind": "head"},
    }
    path = WORK / "campaign.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# --------------------------------------------------------------------------- the round
def campaign(args, steps: Steps) -> dict:
    from alft.campaign.context import RNG_SELECT, campaign_data
    from alft.config import load_config
    from alft.campaign.rounds import query_inputs
    from strategies import get_strategy
    from tasks.campaign import next_round, open_campaign
    from tasks.embed import embed_pool
    from tasks.evaluate import evaluate
    from tasks.labels import wait_for_labels
    from tasks.score import score_pool
    from tasks.select import select_batch
    from tasks.stop import stop_check
    from tasks.track import track_campaign, track_round
    from tasks.train import fine_tune

    shutil.rmtree(WORK / "campaign", ignore_errors=True)
    cfg = load_config(write_config(args))
    ctx = steps.run("open", "load 1M pool + open campaign", open_campaign.fn, cfg)
    steps.run("open", "track campaign (MLflow parent run)", track_campaign.fn, ctx)
    results = {}
    for expected in (0, 1):
        r = next_round.fn(ctx)
        assert r == expected, (r, expected)
        phase = f"round {r}"
        for name, fn in (
            ("embed (all cached)", embed_pool.fn),
            ("score", score_pool.fn),
            ("select", select_batch.fn),
            ("labels (simulated oracle)", wait_for_labels.fn),
            ("train (head)", fine_tune.fn),
            ("evaluate", evaluate.fn),
            ("stop", stop_check.fn),
            ("track (MLflow round run)", track_round.fn),
        ):
            results[(r, name)] = steps.run(phase, name, fn, ctx, r)
    metrics = {}
    from alft.campaign.context import open_store

    for r, m in open_store(cfg).metrics(cfg.name).items():
        metrics[r] = {k: round(v, 4) for k, v in m.items() if k in ("accuracy", "macro_f1")}

    # other selectors on round 1's situation (candidates = the pool less round 0's batch)
    extra = []
    pool_n = len(campaign_data(cfg).pool)
    for name in args.selectors:
        strategy = get_strategy(name)
        inputs = steps.run("selectors", f"{name}: build inputs", query_inputs, ctx, 1, strategy.needs, None)
        q = steps.run("selectors", f"{name}: score + select {K}", strategy.query, inputs, K, ctx.rng(1, RNG_SELECT))
        extra.append({"strategy": name, "picked": int(len(q.pool_ids)), "candidates": int(inputs.n_candidates)})
        del inputs, q
    return {
        "metrics": metrics,
        "pool": pool_n,
        "round1_train_labels": results[(1, "train (head)")].get("n_train", results[(1, "train (head)")].get("n_labels")),
        "selectors": extra,
    }


# --------------------------------------------------------------------------- report
def machine() -> dict:
    import faiss
    import torch

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(mem, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "faiss": faiss.__version__,
        "blas": blas_info(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
    }


def write_md(out: dict) -> None:
    m = out["machine"]
    f = out["facts"]
    lines = [
        "# One round at 1,000,000 examples",
        "",
        f"Pool: {out['pool']:,} distinct synthetic requests (BANKING77 training texts with 40 openings x 30 "
        f"closings; 77 intents as gold). Embeddings: all-MiniLM-L6-v2 (packaged) for real on the first "
        f"{f['real_pool_texts']:,} pool texts and on the eval split (BANKING77 test); the other pool texts get "
        "clustered synthetic vectors: around the real vector of a real variation of the same seed, with the "
        "cosine to it drawn from the cosines between two real variations of one seed "
        f"({f['real_pairs']:,} real pairs: median {f['real_pair_cos']['median']}, p5 {f['real_pair_cos']['p5']}; "
        f"synthetic to centre: median {f['synthetic_cos_to_centre']['median']}, "
        f"p5 {f['synthetic_cos_to_centre']['p5']}); all of them in the campaign's embedding cache.",
        "",
        "The steps are the flow's step functions called through `.fn` (as `benchmarks/plain.py`; no Prefect "
        "engine), with the SQLite store and MLflow on SQLite in the work folder. Round 0: random cold start "
        f"(1,000). Round 1: margin over the candidates with round 0's head, top 1,000; the head trains on "
        f"{out.get('round1_train_labels') or 2000} labels. Other selectors: `Strategy.query` on round 1's inputs.",
        "",
        f"MiniLM throughput through the cache ({f['torch_threads']} torch thread(s), the faster in a probe of "
        f"400 texts: {f['probe_texts_per_s']} texts/s by thread count): {f['pool_texts_per_s']} "
        f"texts/s on the {f['real_pool_texts']:,} real pool texts, {f['eval_texts_per_s']} texts/s on the eval split.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB; python {m['python']}, numpy {m['numpy']}, "
        f"torch {m['torch']}, faiss {m['faiss']}; OPENBLAS_CORETYPE={m['OPENBLAS_CORETYPE']}. Load average "
        f"{out['loadavg_start']} at the start, {out['loadavg_end']} at the end (shared VM: timings are upper bounds). "
        f"Total wall time {out['total_s']:.0f} s.",
        "",
        "Peak extra = kernel peak RSS during the step minus RSS before it (VmHWM reset per step).",
        "",
        "| phase | step | time (s) | RSS before (MiB) | peak RSS (MiB) | peak extra (MiB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in out["steps"]:
        lines.append(
            f"| {r['phase']} | {r['step']} | {r['seconds']:.2f} | {r['rss_before_mib']:,} | "
            f"{r['peak_rss_mib']:,} | {r['peak_extra_mib']:,} |"
        )
    r1 = [r for r in out["steps"] if r["phase"] == "round 1"]
    lines += [
        "",
        f"Round 1 in total: {sum(r['seconds'] for r in r1):.1f} s, highest peak RSS "
        f"{max(r['peak_rss_mib'] for r in r1):,} MiB.",
        "",
        "Eval metrics (real BANKING77 test texts; the head trains on labels whose vectors are mostly synthetic, "
        "near real variations): " + "; ".join(f"round {k}: {v}" for k, v in out["metrics"].items()) + ".",
    ]
    if out.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in out["notes"]]
    RESULTS.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=int, default=1_000_000)
    ap.add_argument("--real", type=int, default=20_000, help="pool texts embedded for real")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval", type=int, default=0, help="first N BANKING77 test texts as eval (0: all 3,080)")
    ap.add_argument("--selectors", nargs="*", default=["kcenter_approx", "two_stage"])
    ap.add_argument("--reuse", action="store_true", help="keep the data and cache of an earlier run")
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/results")
    args = ap.parse_args()
    offline_env()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    t_start = time.perf_counter()
    load0 = round(os.getloadavg()[0], 2)
    steps = Steps()
    if not args.reuse or not (WORK / "facts.json").exists():
        shutil.rmtree(WORK, ignore_errors=True)
        WORK.mkdir(parents=True)
        facts = build(args, steps)
    else:
        facts = json.loads((WORK / "facts.json").read_text())
        args.threads = facts["torch_threads"]
    result = campaign(args, steps)
    out = {
        "machine": machine(),
        "loadavg_start": load0,
        "loadavg_end": round(os.getloadavg()[0], 2),
        "total_s": round(time.perf_counter() - t_start, 1),
        "facts": facts,
        **result,
        "steps": steps.rows,
        "notes": [
            "Setup rows (data, real embeddings, synthetic vectors) are not part of a round; 'open' loads the "
            "1M-row JSONL pool, digests it and creates the campaign.",
            "The embed step of a round re-checks the cache (1M text keys hashed, looked up) and embeds nothing.",
            "score persists the strategy's inputs (probs.npy, float64 [m, 77]: ~590 MiB at 999k candidates); "
            "select reads them back, as after a crash.",
            "round 0's train is the first step that needs vectors: it materialises the pool's (embeddings_for: "
            "1.43 GiB, memoised for later steps) from the memory-mapped cache, whose touched pages count in RSS "
            "too while mapped; hence +3 GiB there and the ~3 GiB baseline after.",
            "score's +5 GiB at 1M (and two_stage's, which builds the same inputs): the candidates' vectors "
            "(pool_embeddings()[ids], 1.43 GiB), HeadModel.predict_proba's float64 copy of them (2.9 GiB) and "
            "three float64 [m, 77] arrays (logits, probabilities, output; 0.6 GiB each). A chunked float32 "
            "predict_proba would cut it to about 2 GiB (not done here: alft/models/head.py).",
            "Loading the 1M-row pool took 90 s before alft/data.py read columns with ds[col][:] (one Arrow "
            "read) instead of iterating datasets' Column objects row by row (~15 s per pass, six passes); now 5.3 s.",
        ],
    }
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.with_suffix(".json").write_text(json.dumps(out, indent=1, default=str))
        write_md(out)
    print(f"total {out['total_s']} s")


if __name__ == "__main__":
    main()
