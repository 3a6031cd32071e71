"""Decoder embeddings as features: SmolLM2-135M (mean / last-token pooling, raw / centred) vs MiniLM.

Data: a 1,000-example BANKING77 training slice as the pool and 500 test examples as the eval
split, both drawn with ``default_rng(0)`` (uniformly, so the class mix is the splits' own).

Features, all from the product's ``Encoder`` (``model.max_length`` 128, L2-normalised):

* ``minilm-mean``: ``packaged:all-MiniLM-L6-v2``, mean pooling (the default);
* ``smollm2-mean`` / ``smollm2-last``: ``packaged:smollm2-135m-instruct``, mean over the tokens /
  the last token's state (``model.pooling: last``);
* ``*-centred``: the same vectors with the pool's mean taken out and L2-normalised again
  (``model.center``; the eval split with the pool's mean); MiniLM centred as a control.

Each model runs one forward pass per batch: the mean vectors come from ``Encoder.encode_batch``,
and a second ``Encoder`` (pooling ``last``) pools the same ``last_hidden_state``, replayed by a
stub model, so both poolings use the product code and cost one forward. Throughput is that pass
over all 1,500 texts (texts/s, CPU seconds, torch threads, 1-minute load average before/after).

For each feature set: the mean pairwise cosine over the pool (off-diagonal), and the accuracy on
the 500 eval texts of the campaigns' head (``HeadTrainer``, defaults = conf/banking77.yaml: C 20,
balanced) trained on 100 and 300 random pool examples, seeds 0-2 (the same labeled sets for
every feature set).

    .venv/bin/python benchmarks/decoder_features.py [--threads N]

Results: ``benchmarks/results/decoder_features.json`` (a list of rows) and ``.md``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.plain import cpu_model, offline_env, shared_data  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MODELS = {"minilm": "packaged:all-MiniLM-L6-v2", "smollm2": "packaged:smollm2-135m-instruct"}
LABEL_COUNTS = (100, 300)
SEEDS = (0, 1, 2)


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def sample(rows: list[dict], n: int, seed: int = 0) -> list[dict]:
    idx = np.random.default_rng(seed).choice(len(rows), n, replace=False)
    return [rows[i] for i in sorted(idx)]


class _Replay:
    """Stands in for the model: returns the output of the forward pass it was handed."""

    out = None

    def __call__(self, input_ids=None, attention_mask=None):
        return self.out


def embed_both(path: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Mean- and last-pooled vectors ``[n, d]`` of ``texts`` from one forward pass per batch."""
    import torch

    from alft.models.encoder import EncodeOptions, Encoder, Tokens, resolve_model_path

    t0 = time.perf_counter()
    resolved = resolve_model_path(path)  # the first SmolLM2 resolution dequantizes the GGUF (~40 s)
    resolve_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    mean_enc = Encoder(resolved, EncodeOptions(pooling="mean"))
    mean_enc._load()
    load_s = time.perf_counter() - t0
    last_enc = Encoder(resolved, EncodeOptions(pooling="last"))
    replay = _Replay()
    last_enc._tokenizer, last_enc._model = mean_enc._tokenizer, replay

    def keep(module, args, output):
        replay.out = output

    mean_enc._model.register_forward_hook(keep)
    load0, wall0, cpu0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
    batches = mean_enc.batches(texts)
    tokens = Tokens(flat=mean_enc._flat, starts=mean_enc._starts, lengths=mean_enc._lengths)
    d = mean_enc.dim
    mean = np.empty((len(texts), d), dtype=np.float32)  # [n, d]
    last = np.empty_like(mean)  # [n, d]
    for pos in batches:
        mean[pos] = mean_enc.encode_batch(pos, tokens)
        # the same hidden states pooled at the last token: an index, no second forward pass
        last[pos] = last_enc.encode_batch(pos, tokens)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    load1 = os.getloadavg()[0]
    facts = {
        "texts": len(texts),
        "tokens": int(tokens.lengths.sum()),
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "texts_per_s": round(len(texts) / wall, 1),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": [round(load0, 2), round(load1, 2)],
        "resolve_seconds": round(resolve_s, 1),
        "load_model_seconds": round(load_s, 1),
        "dim": d,
    }
    return mean, last, facts


def mean_cosine(x: np.ndarray) -> float:
    """Mean off-diagonal cosine of the rows of ``x`` ``[n, d]`` (rows L2-normalised)."""
    n = x.shape[0]
    s = x.astype(np.float64).sum(0)  # [d]
    return float((s @ s - n) / (n * (n - 1)))


def head_accuracy(xp: np.ndarray, yp: np.ndarray, xe: np.ndarray, ye: np.ndarray, labels: list[str], picks: np.ndarray) -> float:
    from alft.config import HeadTrainerConfig
    from alft.models.head import HeadTrainer

    head = HeadTrainer(HeadTrainerConfig()).fit([""] * picks.size, xp[picks], yp[picks], labels, seed=0)
    return float((head.predict_proba([""] * len(ye), xe).argmax(1) == ye).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 when the 1-min load > 0.5, else 2)")
    args = ap.parse_args()
    offline_env()
    import torch

    from alft.models.encoder import center, pool_mean

    load_start = os.getloadavg()[0]
    threads = args.threads or (1 if load_start > 0.5 else min(2, os.cpu_count() or 1))
    torch.set_num_threads(threads)
    data = shared_data() / "banking77"
    labels = json.loads((data / "labels.json").read_text())
    index = {lab: i for i, lab in enumerate(labels)}
    pool = sample(read_rows(data / "train.jsonl"), 1000)
    ev = sample(read_rows(data / "test.jsonl"), 500)
    yp = np.array([index[r["label"]] for r in pool])
    ye = np.array([index[r["label"]] for r in ev])
    texts = [r["text"] for r in pool] + [r["text"] for r in ev]
    # the same labeled sets for every feature set: seed s draws n pool rows
    picks = {(n, s): np.sort(np.random.default_rng(s).choice(len(pool), n, replace=False)) for n in LABEL_COUNTS for s in SEEDS}

    feats: dict[str, dict] = {}
    speed: dict[str, dict] = {}
    for name, path in MODELS.items():
        mean, last, facts = embed_both(path, texts)
        speed[name] = facts
        print(json.dumps({"model": name, **facts}), flush=True)
        poolings = {"mean": mean, "last": last} if name == "smollm2" else {"mean": mean}
        for pooling, x in poolings.items():
            xp, xe = x[: len(pool)], x[len(pool) :]  # pool rows, eval rows
            m = pool_mean(xp)  # [d]
            feats[f"{name}-{pooling}"] = {"model": name, "pooling": pooling, "center": False, "xp": xp, "xe": xe}
            feats[f"{name}-{pooling}-centred"] = {
                "model": name, "pooling": pooling, "center": True, "xp": center(xp, m), "xe": center(xe, m),
            }

    rows: list[dict] = []
    for fname, f in feats.items():
        accs = {}
        for n in LABEL_COUNTS:
            for s in SEEDS:
                acc = head_accuracy(f["xp"], yp, f["xe"], ye, labels, picks[(n, s)])
                accs.setdefault(n, []).append(acc)
                rows.append({"kind": "accuracy", "features": fname, "model": MODELS[f["model"]], "pooling": f["pooling"],
                             "center": f["center"], "labels": n, "seed": s, "accuracy": round(acc, 4)})
        summary = {
            "kind": "features", "features": fname, "model": MODELS[f["model"]], "pooling": f["pooling"],
            "center": f["center"], "mean_cosine_pool": round(mean_cosine(f["xp"]), 4),
            **{f"accuracy_{n}_median": round(statistics.median(a), 4) for n, a in accs.items()},
            **{f"accuracy_{n}_range": [round(min(a), 4), round(max(a), 4)] for n, a in accs.items()},
            "embedding": speed[f["model"]],
        }
        rows.append(summary)
        print(json.dumps({k: v for k, v in summary.items() if k != "embedding"}), flush=True)
    machine = {
        "kind": "machine", "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": threads,
        "load_avg_1m_start": round(load_start, 2), "load_avg_1m_end": round(os.getloadavg()[0], 2),
        "pool": len(pool), "eval": len(ev), "seeds": list(SEEDS), "torch": torch.__version__,
    }
    rows.insert(0, machine)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "decoder_features.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / "decoder_features.md").write_text(report(rows))
    print(report(rows))


def report(rows: list[dict]) -> str:
    m = rows[0]
    lines = [
        "# Decoder embeddings as features (BANKING77)",
        "",
        (
            f"Pool: {m['pool']} BANKING77 training examples, eval: {m['eval']} test examples (both `default_rng(0)`). "
            "Head: the campaigns' logistic regression (C 20, balanced) on 100 / 300 random pool labels, "
            f"seeds {', '.join(map(str, m['seeds']))}: median [min-max] accuracy. Mean cosine: off-diagonal, over the pool. "
            f"texts/s: one forward pass over the 1,500 texts, {m['torch_threads']} torch thread(s), {m['cpu']}, "
            f"{m['cores']} cores, 1-min load {m['load_avg_1m_start']} at start, {m['load_avg_1m_end']} at end."
        ),
        "",
        "| features | pooling | centred | mean cosine | acc @100 | acc @300 | texts/s | CPU s | load (before/after) |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["kind"] != "features":
            continue
        e = r["embedding"]
        a1, a3 = r["accuracy_100_range"], r["accuracy_300_range"]
        lines.append(
            f"| {r['features']} | {r['pooling']} | {'yes' if r['center'] else 'no'} | {r['mean_cosine_pool']:.2f} | "
            f"{r['accuracy_100_median']:.3f} [{a1[0]:.3f}-{a1[1]:.3f}] | {r['accuracy_300_median']:.3f} [{a3[0]:.3f}-{a3[1]:.3f}] | "
            f"{e['texts_per_s']:.0f} | {e['cpu_seconds']:.0f} | {e['load_avg_1m'][0]} / {e['load_avg_1m'][1]} |"
        )
    lines.append("")
    lines.append("texts/s and CPU s are per model (both poolings of a model share one forward pass).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
