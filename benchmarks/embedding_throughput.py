"""Embedding throughput: alft's ``Encoder`` against sentence-transformers on BANKING77.

Both embed the 10,003 BANKING77 training texts with the packaged all-MiniLM-L6-v2, in one
process and at one torch thread count: alft with the campaign's model defaults
(``ModelConfig``), sentence-transformers with ``encode(batch_size=32,
normalize_embeddings=True)``. Each is loaded once and warmed up; then repeats alternate the
two (which one goes first alternates too, so neither always runs on a cooler or warmer
machine). Reported: sentences/s per repeat, the medians, the ratio of the medians, and the
largest absolute difference between the two outputs. Results go to
``benchmarks/results/embedding_throughput.json``.

The machine this was written on is a shared 2-core VM: other processes come and go, so
single timings swing by 20% or more; compare medians, and read ``loadavg`` in the results.

    .venv/bin/python benchmarks/embedding_throughput.py [--repeats 5] [--threads N] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.plain import cpu_model  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as the CLI runs it
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = ROOT / "benchmarks" / "results" / "embedding_throughput.json"
ST_BATCH_SIZE = 32


def shared_data() -> Path:
    """$ALFT_DATA_DIR, else ../shared/data next to the repository."""
    env = os.environ.get("ALFT_DATA_DIR")
    for c in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if (c / "banking77" / "train.jsonl").exists():
            return c.resolve()
    raise SystemExit("BANKING77 not found: set ALFT_DATA_DIR to the folder holding banking77/")


def load_texts(limit: int | None) -> list[str]:
    with open(shared_data() / "banking77" / "train.jsonl", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line in fh if line.strip()]
    return texts[:limit] if limit else texts




def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def environment(threads: int) -> dict:
    import numpy as np
    import sentence_transformers
    import torch
    import transformers
    from threadpoolctl import threadpool_info

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "numpy": np.__version__,
        "torch_num_threads": threads,
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "mkldnn_enabled": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM"),
        # threadpoolctl sees the shared OpenMP/BLAS libraries (numpy's, scipy's); torch links
        # MKL statically, so its own BLAS and OpenMP setup come from torch.__config__.
        "threadpools": [
            {k: info.get(k) for k in ("user_api", "internal_api", "num_threads", "version", "prefix", "architecture")}
            for info in threadpool_info()
        ],
        "torch_blas": next(
            (x.split("=", 1)[1] for x in torch.__config__.show().replace(",", " ").split() if x.startswith("BLAS_INFO=")),
            None,
        ),
        "torch_parallel_info": torch.__config__.parallel_info().strip().splitlines(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timed repeats (at least 5 for a report)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's own)")
    ap.add_argument("--limit", type=int, default=None, help="first N texts only (quick checks)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    import numpy as np
    import torch

    from alft.config import ModelConfig
    from alft.models.encoder import EncodeOptions, Encoder, resolve_model_path

    # After alft, as in a campaign process (which never imports sentence-transformers).
    from sentence_transformers import SentenceTransformer

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    texts = load_texts(args.limit)
    mcfg = ModelConfig()
    path = resolve_model_path(mcfg.path)
    options = EncodeOptions(max_length=mcfg.max_length, batch_size=mcfg.batch_size)

    t0 = time.perf_counter()
    alft = Encoder(path, options)
    st = SentenceTransformer(path, device="cpu")
    alft._load()
    load_s = time.perf_counter() - t0

    def run_alft() -> np.ndarray:
        return alft.encode(texts)

    def run_st() -> np.ndarray:
        return st.encode(texts, batch_size=ST_BATCH_SIZE, normalize_embeddings=True, convert_to_numpy=True)

    runners = {"alft": run_alft, "sentence_transformers": run_st}
    warm = texts[:1000]
    alft.encode(warm)
    st.encode(warm, batch_size=ST_BATCH_SIZE, normalize_embeddings=True)

    batches = alft.batches(texts)
    lengths = alft._lengths
    real_tokens = int(lengths.sum())
    padded_tokens = int(sum(int(lengths[b].max()) * len(b) for b in batches))

    seconds: dict[str, list[float]] = {k: [] for k in runners}
    repeats = []
    outputs: dict[str, np.ndarray] = {}
    max_abs_diff = 0.0
    print(f"{len(texts)} texts, {threads} torch threads, {args.repeats} repeats", flush=True)
    for r in range(args.repeats):
        names = list(runners) if r % 2 == 0 else list(reversed(runners))
        row: dict = {"repeat": r, "order": names, "loadavg_before": loadavg()}
        for name in names:
            t = time.perf_counter()
            outputs[name] = runners[name]()
            dt = time.perf_counter() - t
            seconds[name].append(dt)
            row[f"{name}_s"] = dt
            row[f"{name}_sentences_per_s"] = len(texts) / dt
        diff = float(np.abs(outputs["alft"] - outputs["sentence_transformers"]).max())
        max_abs_diff = max(max_abs_diff, diff)
        row["max_abs_diff"] = diff
        repeats.append(row)
        print(
            f"repeat {r}: alft {row['alft_sentences_per_s']:.0f}/s, "
            f"sentence-transformers {row['sentence_transformers_sentences_per_s']:.0f}/s",
            flush=True,
        )

    med = {k: statistics.median(v) for k, v in seconds.items()}
    rate = {k: len(texts) / v for k, v in med.items()}
    ratio = rate["alft"] / rate["sentence_transformers"]
    result = {
        "benchmark": "embedding_throughput",
        "data": "banking77/train.jsonl (text field)",
        "n_texts": len(texts),
        "model": mcfg.path,
        "alft_options": {
            "max_length": options.max_length,
            "batch_size": options.batch_size,
            "max_tokens": options.max_tokens,
            "attn_implementation": alft._model.config._attn_implementation,
            "batches": len(batches),
            "real_tokens": real_tokens,
            "padded_tokens": padded_tokens,
            "padding_overhead": padded_tokens / real_tokens - 1,
        },
        "sentence_transformers_options": {"batch_size": ST_BATCH_SIZE, "normalize_embeddings": True},
        "repeats": repeats,
        "median_s": med,
        "median_sentences_per_s": rate,
        "ratio_of_medians_alft_over_st": ratio,
        "max_abs_diff": max_abs_diff,
        "load_s": load_s,
        "loadavg_end": loadavg(),
        "environment": environment(threads),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print()
    print("| embedder | median s | median sentences/s | per repeat (sentences/s) |")
    print("|---|---:|---:|---|")
    for name in runners:
        per = ", ".join(f"{len(texts) / s:.0f}" for s in seconds[name])
        print(f"| {name} | {med[name]:.2f} | {rate[name]:.0f} | {per} |")
    print()
    print(
        f"ratio of medians (alft / sentence-transformers): **{ratio:.2f}x**; "
        f"max abs diff {max_abs_diff:.2e}; torch {result['environment']['torch']}, "
        f"{threads} threads, {result['environment']['cpu_model']}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
