"""Embedding throughput: alft's ``Encoder`` (torch, ONNX, ONNX int8) against sentence-transformers on BANKING77.

All embed the same BANKING77 training texts with the packaged all-MiniLM-L6-v2, in one
process and at one thread count: alft with the campaign's model defaults (``ModelConfig``)
on each backend (``torch``, ``onnx``, ``onnx`` + ``int8``; ``alft`` in the results is the
default backend, ``model.backend: auto``), sentence-transformers with ``encode(batch_size=B,
normalize_embeddings=True)`` for every ``B`` in ``--st-batch-sizes``. Each is loaded once and
warmed up; then repeats run them all, interleaved, the order rotating each repeat (so none
always runs on a cooler or warmer machine). Reported: sentences/s per repeat, the medians,
the ratio of the medians against sentence-transformers at ``batch_size=32`` and at its best
batch size (``ratio_vs_best_st``), the largest absolute differences between outputs, and
(``--accuracy``) the cost of int8 in a logistic-regression head's BANKING77 test accuracy.
Results go to ``benchmarks/results/embedding_throughput.json``.

The machine this was written on is a shared 2-core VM: other processes come and go, so
single timings swing by 20% or more; compare medians, and read ``loadavg`` in the results.

    .venv/bin/python benchmarks/embedding_throughput.py [--repeats 5] [--threads N] [--sample N | --limit N]
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


def load_rows(split: str = "train") -> list[dict]:
    with open(shared_data() / "banking77" / f"{split}.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def pick_rows(rows: list[dict], limit: int | None, sample: int | None, seed: int = 0) -> list[dict]:
    """The first ``limit`` rows, or a seeded random ``sample`` (the file is sorted by label)."""
    if sample:
        import random

        return random.Random(seed).sample(rows, min(sample, len(rows)))
    return rows[:limit] if limit else rows


def load_texts(limit: int | None) -> list[str]:
    return [r["text"] for r in pick_rows(load_rows(), limit, None)]




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


def int8_accuracy(encoders: dict, train_rows: list[dict], test_rows: list[dict]) -> dict:
    """BANKING77 test accuracy of a logistic-regression head on each encoder's vectors."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    out = {"train_texts": len(train_rows), "test_texts": len(test_rows), "head": "LogisticRegression(C=10, max_iter=2000)"}
    for name, enc in encoders.items():
        xtr = enc.encode([r["text"] for r in train_rows])
        xte = enc.encode([r["text"] for r in test_rows])
        head = LogisticRegression(C=10.0, max_iter=2000).fit(xtr, [r["label"] for r in train_rows])
        out[f"{name}_accuracy"] = float(np.mean(head.predict(xte) == np.array([r["label"] for r in test_rows])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repeats", type=int, default=5, help="interleaved timed repeats (at least 3 for a report)")
    ap.add_argument("--threads", type=int, default=None, help="torch and ONNX threads for all (default: torch's own)")
    ap.add_argument("--limit", type=int, default=None, help="first N texts only (quick checks)")
    ap.add_argument("--sample", type=int, default=None, help="a seeded random sample of N texts (all labels)")
    ap.add_argument(
        "--st-batch-sizes", default="16,32,64,128,256", help="sentence-transformers batch sizes to time (32 is always in)"
    )
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 ONNX encoder")
    ap.add_argument("--accuracy", action="store_true", help="also measure int8's cost in head accuracy (test split)")
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
    rows = pick_rows(load_rows(), args.limit, args.sample)
    texts = [r["text"] for r in rows]
    mcfg = ModelConfig()
    path = resolve_model_path(mcfg.path)

    def options(**kw) -> EncodeOptions:
        return EncodeOptions(max_length=mcfg.max_length, batch_size=mcfg.batch_size, **kw)

    st_sizes = sorted({ST_BATCH_SIZE, *(int(x) for x in args.st_batch_sizes.split(",") if x.strip())})
    t0 = time.perf_counter()
    alft = Encoder(path, options(backend=mcfg.backend, quantize=mcfg.onnx_quantize), num_threads=threads)
    alft._load()
    load_s = time.perf_counter() - t0  # includes the ONNX export on a cold cache
    encoders = {
        "alft_torch": Encoder(path, options(backend="torch")),
        "alft_onnx": Encoder(path, options(backend="onnx"), num_threads=threads),
    }
    if not args.no_int8:
        encoders["alft_onnx_int8"] = Encoder(path, options(backend="onnx", quantize="int8"), num_threads=threads)
    t1 = time.perf_counter()
    st = SentenceTransformer(path, device="cpu")
    st_load_s = time.perf_counter() - t1
    for enc in encoders.values():
        enc._load()
    default_name = f"alft_{alft.backend}" + ("_int8" if alft.options.quantize else "")

    def run_enc(enc):
        return lambda: enc.encode(texts)

    def run_st(bs: int):
        return lambda: st.encode(texts, batch_size=bs, normalize_embeddings=True, convert_to_numpy=True)

    runners = {name: run_enc(enc) for name, enc in encoders.items()}
    runners.update({f"st_b{bs}": run_st(bs) for bs in st_sizes})
    warm = texts[:500]
    for enc in encoders.values():
        enc.encode(warm)
    for bs in st_sizes:
        st.encode(warm, batch_size=bs, normalize_embeddings=True)

    batches = alft.batches(texts)
    lengths = alft._lengths
    real_tokens = int(lengths.sum())
    padded_tokens = int(sum(int(lengths[b].max()) * len(b) for b in batches))

    seconds: dict[str, list[float]] = {k: [] for k in runners}
    repeats = []
    diffs: dict[str, float] = {}

    def note_diff(key: str, a: np.ndarray, b: np.ndarray) -> float:
        d = float(np.abs(a - b).max())
        diffs[key] = max(diffs.get(key, 0.0), d)
        return d

    print(f"{len(texts)} texts, {threads} threads, {args.repeats} repeats, default backend {alft.backend}", flush=True)
    names0 = list(runners)
    for r in range(args.repeats):
        k = r % len(names0)
        names = names0[k:] + names0[:k]
        row: dict = {"repeat": r, "order": names, "loadavg_before": loadavg()}
        outputs: dict[str, np.ndarray] = {}
        for name in names:
            t = time.perf_counter()
            outputs[name] = runners[name]()
            dt = time.perf_counter() - t
            seconds[name].append(dt)
            row[f"{name}_s"] = dt
            row[f"{name}_sentences_per_s"] = len(texts) / dt
        ref = outputs["alft_torch"]
        row["max_abs_diff_onnx_vs_torch"] = note_diff("onnx_vs_torch", outputs["alft_onnx"], ref)
        if "alft_onnx_int8" in outputs:
            row["max_abs_diff_int8_vs_torch"] = note_diff("int8_vs_torch", outputs["alft_onnx_int8"], ref)
        st32 = outputs[f"st_b{ST_BATCH_SIZE}"]
        row["max_abs_diff"] = note_diff("alft_vs_sentence_transformers", outputs[default_name], st32)
        note_diff("torch_vs_sentence_transformers", ref, st32)
        # ST's vectors do not depend on its batch size beyond float noise
        for bs in st_sizes:
            note_diff("sentence_transformers_batch_sizes", outputs[f"st_b{bs}"], st32)
        row["loadavg_after"] = loadavg()
        repeats.append(row)
        print(f"repeat {r}: " + ", ".join(f"{n} {len(texts) / seconds[n][-1]:.0f}/s" for n in names0), flush=True)

    med = {k: statistics.median(v) for k, v in seconds.items()}
    rate = {k: len(texts) / v for k, v in med.items()}
    st_rates = {bs: rate[f"st_b{bs}"] for bs in st_sizes}
    best_bs = max(st_rates, key=st_rates.get)
    rate["alft"], med["alft"] = rate[default_name], med[default_name]
    rate["sentence_transformers"], med["sentence_transformers"] = rate[f"st_b{ST_BATCH_SIZE}"], med[f"st_b{ST_BATCH_SIZE}"]
    ratio = rate["alft"] / rate["sentence_transformers"]
    ratio_best = rate["alft"] / st_rates[best_bs]
    result = {
        "benchmark": "embedding_throughput",
        "data": "banking77/train.jsonl (text field)"
        + (f", seeded random sample of {args.sample}" if args.sample else (f", first {args.limit}" if args.limit else "")),
        "n_texts": len(texts),
        "model": mcfg.path,
        "alft_backend": alft.backend,
        "alft_default": default_name,
        "alft_options": {
            "max_length": alft.options.max_length,
            "batch_size": alft.options.batch_size,
            "max_tokens": alft.options.max_tokens,
            "backend": mcfg.backend,
            "onnx_quantize": mcfg.onnx_quantize,
            "attn_implementation": alft._model.config._attn_implementation,
            "onnx_graph": str(encoders["alft_onnx"]._onnx.graph),
            "onnx_intra_op_threads": encoders["alft_onnx"]._onnx.num_threads,
            "batches": len(batches),
            "real_tokens": real_tokens,
            "padded_tokens": padded_tokens,
            "padding_overhead": padded_tokens / real_tokens - 1,
        },
        "sentence_transformers_options": {"batch_size": ST_BATCH_SIZE, "normalize_embeddings": True},
        "sentence_transformers_batch_sizes": st_sizes,
        "sentence_transformers_best_batch_size": best_bs,
        "repeats": repeats,
        "median_s": med,
        "median_sentences_per_s": rate,
        "ratio_of_medians_alft_over_st": ratio,
        "ratio_vs_best_st": ratio_best,
        "ratios_vs_best_st": {n: rate[n] / st_rates[best_bs] for n in encoders},
        "ratios_vs_st_b32": {n: rate[n] / rate["sentence_transformers"] for n in encoders},
        "onnx_over_torch": rate["alft_onnx"] / rate["alft_torch"],
        # alft's default backend against sentence-transformers (the field's original meaning)
        "max_abs_diff": diffs["alft_vs_sentence_transformers"],
        "max_abs_diff_onnx_vs_torch": diffs["onnx_vs_torch"],
        "max_abs_diffs": diffs,
        "load_s": load_s,
        "st_load_s": st_load_s,
        "loadavg_end": loadavg(),
        "environment": environment(threads),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if args.accuracy and "alft_onnx_int8" in encoders:
        test_rows = load_rows("test")
        print("int8 accuracy cost: head on the benchmark texts, BANKING77 test split ...", flush=True)
        acc = int8_accuracy(
            {"fp32": encoders["alft_onnx"], "int8": encoders["alft_onnx_int8"]}, rows, test_rows
        )
        acc["int8_minus_fp32"] = acc["int8_accuracy"] - acc["fp32_accuracy"]
        result["int8_accuracy"] = acc
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    lines = [
        f"# Embedding throughput: {len(texts)} BANKING77 texts, all-MiniLM-L6-v2, {threads} threads",
        "",
        "| embedder | median s | median sentences/s | vs ST best | per repeat (sentences/s) |",
        "|---|---:|---:|---:|---|",
    ]
    for name in runners:
        per = ", ".join(f"{len(texts) / s:.0f}" for s in seconds[name])
        lines.append(f"| {name} | {med[name]:.2f} | {rate[name]:.0f} | {rate[name] / st_rates[best_bs]:.2f}x | {per} |")
    lines += [
        "",
        f"alft default backend: {default_name}. Ratio of medians vs sentence-transformers at batch 32: "
        f"**{ratio:.2f}x**; at its best batch size ({best_bs}): **{ratio_best:.2f}x**. "
        f"ONNX over torch: {result['onnx_over_torch']:.2f}x.",
        f"Max abs diff: onnx vs torch {diffs['onnx_vs_torch']:.2e}"
        + (f", int8 vs torch {diffs['int8_vs_torch']:.2e}" if "int8_vs_torch" in diffs else "")
        + f", alft vs sentence-transformers {diffs['alft_vs_sentence_transformers']:.2e}.",
        f"Load average per repeat (1 min, before): {[row['loadavg_before'][0] for row in repeats if row['loadavg_before']]}; "
        f"at the end: {result['loadavg_end']}. torch {result['environment']['torch']}, "
        f"{result['environment']['cpu_model']}, {os.cpu_count()} cores (shared).",
    ]
    if "int8_accuracy" in result:
        a = result["int8_accuracy"]
        lines.append(
            f"int8 accuracy cost (logistic regression on {a['train_texts']} train vectors, {a['test_texts']} test texts): "
            f"fp32 {a['fp32_accuracy']:.4f}, int8 {a['int8_accuracy']:.4f} ({a['int8_minus_fp32']:+.4f})."
        )
    md = "\n".join(lines) + "\n"
    args.out.with_suffix(".md").write_text(md)
    print()
    print(md)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
