"""Decoder embeddings on ONNX Runtime: SmolLM2-135M-Instruct exported to ONNX vs alft's torch ``Encoder``.

Question: can the packaged decoder (``packaged:smollm2-135m-instruct``, a Llama-architecture
model) be exported to ONNX and run in ONNX Runtime for *embeddings* (``model.pooling: mean``:
the last hidden state averaged over the real tokens, L2-normalised), and is that faster than
the torch path on this CPU?

Protocol:

* Model: ``resolve_model_path("packaged:smollm2-135m-instruct")`` (the GGUF dequantised to a
  Hugging Face folder), loaded by alft's torch ``Encoder`` (``AutoModel`` = the base
  ``LlamaModel``, no LM head; eager attention, as alft loads it for ``max_length <= 128``).
* Export: that same module, wrapped to return ``last_hidden_state`` with ``use_cache=False``
  (no KV cache), inputs ``input_ids`` and ``attention_mask``, batch and sequence axes
  dynamic; the arguments of ``alft.models.onnx_backend.export``: TorchScript exporter
  (``dynamo=False``), opset 17, constant folding, traced on a *right-padded* batch so the
  mask path is data, not folded away.
* Optimiser: onnxruntime's transformer optimizer, tried with ``model_type`` ``qwen3`` (the
  one decoder entry for a RoPE + GQA + RMSNorm model in this onnxruntime) and ``gpt2``;
  the fused operators are counted and each graph is checked against torch on a padded batch.
  A graph that fails (error, or hidden states off by more than 1e-3) is recorded and
  dropped. One ONNX graph is timed: the usable fused graph with the most fused operators
  (ties: fewest nodes), else the plain export (``--bench-plain`` times both).
* Sessions: ``alft.models.onnx_backend.session`` (CPU EP, ``ORT_ENABLE_ALL``, sequential,
  ``--threads`` intra-op threads). ONNX embeddings go through the product's own batching and
  numpy pooling: an ``Encoder`` whose ``_onnx`` runner is set to the benchmark's graph, so
  tokenizer, truncation to 128, length-sorted batches, right padding, masked mean and L2
  norm are exactly the torch path's; only the forward pass differs.
* Data: 500 BANKING77 test texts, ``default_rng(0)`` sample (``--n``).
* Batches: ``EncodeOptions(batch_size=B, max_tokens=B * 128)`` for B in 32 and 64, so the
  batch size, not the token budget, sets the rows per forward (texts are length-sorted, so
  padding is small either way).
* Timing: every embedder is warmed up once; then ``--repeats`` (3) repeats, each running
  every (batch size, embedder) pair once, the embedder order rotating per repeat. One run =
  ``Encoder.encode`` over all texts (tokenising included, the same for every embedder).
  Recorded per run: wall seconds, sentences/s, process CPU seconds, 1-minute load average
  before and after. Reported: medians, ONNX-over-torch speed-up of the medians.
* Agreement: max abs difference of the L2-normalised vectors of each ONNX graph vs torch at
  the same batch size (identical batches); torch b32 vs torch b64 as the float-noise floor.

The machine is a shared 2-core VM: single timings swing; compare medians, read the load.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/decoder_onnx.py [--threads 2] [--repeats 3] [--n 500]

Results: ``benchmarks/results/decoder_onnx.json`` and ``benchmarks/results/decoder_onnx.md``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.plain import cpu_model, shared_data  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MODEL = "packaged:smollm2-135m-instruct"
MAX_LENGTH = 128
OPTIMIZER_TYPES = ("qwen3", "gpt2")
CHECK_TOL = 1e-3  # hidden-state agreement a fused graph must reach to be benchmarked


def load_texts(n: int, seed: int = 0) -> list[str]:
    with open(shared_data() / "banking77" / "test.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    idx = np.random.default_rng(seed).choice(len(rows), n, replace=False)
    return [rows[i]["text"] for i in sorted(idx)]


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def export_decoder(model, tokenizer, out: Path) -> None:
    """``model`` (a ``LlamaModel``) -> ONNX, ``(input_ids, attention_mask) -> last_hidden_state``
    (alft's exporter, ``alft.models.onnx_backend.export_hidden``, with ``use_cache=False``)."""
    import torch

    from alft.models.onnx_backend import export_hidden

    # A right-padded example (as Encoder.encode_batch pads): the mask must be traced as data.
    enc = tokenizer(["How do I locate my card?", "Card?"], padding=True, return_tensors="pt")
    tokenizer_side = getattr(tokenizer, "padding_side", "right")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if tokenizer_side == "left":  # re-pad on the right
        lengths = mask.sum(1)
        width = ids.shape[1]
        new_ids = torch.full_like(ids, tokenizer.pad_token_id or 0)
        new_mask = torch.zeros_like(mask)
        for i, n in enumerate(lengths.tolist()):
            new_ids[i, :n] = ids[i, width - n :]
            new_mask[i, :n] = 1
        ids, mask = new_ids, new_mask
    if int(mask.sum()) == mask.numel():
        raise RuntimeError("the trace example must contain padding")
    export_hidden(model, out, ["input_ids", "attention_mask"], (ids.to(torch.int64), mask.to(torch.int64)), use_cache=False)


def op_counts(path: Path) -> dict[str, int]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return dict(collections.Counter(n.op_type for n in m.graph.node).most_common())


def optimize(raw: Path, out: Path, model_type: str, config) -> dict:
    """onnxruntime's transformer optimizer on ``raw``; what it fused (or the error)."""
    from onnxruntime.transformers.optimizer import optimize_model

    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = optimize_model(
                str(raw),
                model_type=model_type,
                num_heads=int(config.num_attention_heads),
                hidden_size=int(config.hidden_size),
            )
            stats = {k: v for k, v in (opt.get_fused_operator_statistics() or {}).items() if v}
            opt.save_model_to_file(str(out), use_external_data_format=False)
    except Exception as exc:  # noqa: BLE001 - recorded, the plain graph is used
        return {
            "model_type": model_type, "ok": False, "seconds": round(time.perf_counter() - t0, 1),
            "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=4)[-1500:],
        }
    return {
        "model_type": model_type, "ok": True, "seconds": round(time.perf_counter() - t0, 1),
        "fused_operator_statistics": stats, "size_mb": round(out.stat().st_size / 2**20, 1),
        "op_counts": op_counts(out),
    }


def check_graph(graph: Path, torch_enc, texts: list[str], threads: int) -> dict:
    """Masked hidden states of a padded batch (not the trace's shapes) vs torch."""
    import torch

    from alft.models.onnx_backend import OnnxRunner

    tok = torch_enc.tokenize(texts)
    positions = np.arange(len(texts))
    lengths = tok.lengths
    width = int(lengths.max())
    valid = np.arange(width)[None, :] < lengths[:, None]
    idx = tok.starts[:, None] + np.minimum(np.arange(width)[None, :], lengths[:, None] - 1)
    ids = np.where(valid, tok.flat.take(idx), torch_enc._tokenizer.pad_token_id or 0)
    mask = valid.astype(np.int64)
    with torch.inference_mode():
        ref = torch_enc._model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    got = OnnxRunner(graph, threads).hidden(ids, mask)
    diff = float(np.abs(got - ref)[valid].max())
    return {"shape": list(ids.shape), "padded_rows": int((~valid).any(1).sum()), "max_abs_diff_hidden": diff,
            "max_abs_hidden": float(np.abs(ref[valid]).max()), "rows": len(positions)}


def onnx_encoder(graph: Path, torch_enc, threads: int):
    """An ``Encoder`` sharing ``torch_enc``'s tokenizer, running ``graph`` (product pooling in numpy)."""
    from alft.models.encoder import Encoder
    from alft.models.onnx_backend import OnnxRunner

    enc = Encoder(torch_enc.path, torch_enc.options)
    enc._tokenizer = torch_enc._tokenizer
    enc._model = types.SimpleNamespace(config=torch_enc._model.config)  # dim only; no torch forward
    enc._onnx = OnnxRunner(graph, threads)
    enc.backend = "onnx"
    return enc


def options(batch_size: int):
    from alft.models.encoder import EncodeOptions

    return EncodeOptions(pooling="mean", max_length=MAX_LENGTH, batch_size=batch_size,
                         max_tokens=batch_size * MAX_LENGTH, backend="torch")


def timed(enc, texts: list[str], batch_size: int) -> tuple[np.ndarray, dict]:
    enc.options = options(batch_size)
    l0, w0, c0 = load1(), time.perf_counter(), time.process_time()
    vecs = enc.encode(texts)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return vecs, {"wall_s": round(wall, 3), "sentences_per_s": round(len(texts) / wall, 2),
                  "cpu_s": round(cpu, 2), "load_before": l0, "load_after": load1()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--bench-plain", action="store_true", help="also time the unfused graph when a fused one is usable")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the graphs here (default: a temp dir, removed)")
    ap.add_argument("--out", type=Path, default=RESULTS / "decoder_onnx.json")
    ap.add_argument("--render", action="store_true", help="only rewrite the .md from the JSON at --out (e.g. after adding a 'conclusion' list)")
    args = ap.parse_args()
    if args.render:
        return write(json.loads(args.out.read_text(encoding="utf-8")), args.out)

    import onnx
    import onnxruntime
    import torch
    import transformers

    from alft.models.encoder import Encoder, resolve_model_path

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    load_start = load1()
    texts = load_texts(args.n)
    path = resolve_model_path(MODEL)
    torch_enc = Encoder(path, options(args.batch_sizes[0]))
    torch_enc._load()
    model = torch_enc._model
    model.config.use_cache = False
    result: dict = {
        "question": "SmolLM2-135M-Instruct embeddings (mean pooling, L2) on ONNX Runtime vs torch",
        "model": MODEL, "model_class": type(model).__name__,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "n_texts": len(texts), "max_length": MAX_LENGTH, "batch_sizes": args.batch_sizes,
        "threads": args.threads, "repeats": args.repeats,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__},
        "load_avg_1m_start": load_start,
    }

    work = args.workdir or Path(tempfile.mkdtemp(prefix="decoder-onnx-"))
    work.mkdir(parents=True, exist_ok=True)
    graphs: dict[str, Path] = {}
    try:
        raw = work / "raw.onnx"
        from alft.models.onnx_backend import OPSET

        export = {"opset": OPSET, "exporter": "torch.onnx.export(dynamo=False)", "use_cache": False}
        l0, t0, c0 = load1(), time.perf_counter(), time.process_time()
        try:
            if not raw.exists():
                export_decoder(model, torch_enc._tokenizer, raw)
                export["reused"] = False
            else:
                export["reused"] = True
            export.update(ok=True)
        except Exception as exc:  # noqa: BLE001 - the answer, then
            export.update(ok=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=6)[-3000:])
        export.update(seconds=round(time.perf_counter() - t0, 1), cpu_s=round(time.process_time() - c0, 1),
                      load_before=l0, load_after=load1())
        result["export"] = export
        print("export:", {k: v for k, v in export.items() if k != "traceback"}, flush=True)
        if not export["ok"]:
            print(export["traceback"], flush=True)
            return write(result, args.out)
        export["size_mb"] = round(raw.stat().st_size / 2**20, 1)
        export["op_counts"] = op_counts(raw)
        graphs["onnx_plain"] = raw

        check_texts = texts[:7] + ["Card?"]
        result["checks"] = {}
        try:
            result["checks"]["onnx_plain"] = check_graph(raw, torch_enc, check_texts, args.threads)
        except Exception as exc:  # noqa: BLE001
            result["checks"]["onnx_plain"] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=6)[-3000:]}
            print("plain graph does not run:", result["checks"]["onnx_plain"], flush=True)
            return write(result, args.out)
        print("check plain:", result["checks"]["onnx_plain"], flush=True)

        result["optimizer"] = []
        for mt in OPTIMIZER_TYPES:
            out = work / f"opt_{mt}.onnx"
            info = optimize(raw, out, mt, model.config)
            if info["ok"]:
                try:
                    chk = check_graph(out, torch_enc, check_texts, args.threads)
                    info["check"] = chk
                    info["usable"] = chk["max_abs_diff_hidden"] <= CHECK_TOL
                except Exception as exc:  # noqa: BLE001
                    info["check"] = {"error": f"{type(exc).__name__}: {exc}"}
                    info["usable"] = False
                info["fused_anything"] = bool(info["fused_operator_statistics"])
            result["optimizer"].append(info)
            print("optimizer:", {k: v for k, v in info.items() if k not in ("op_counts", "traceback")}, flush=True)
        # Benchmark one ONNX graph: the fused one with the most fused operators (then the
        # fewest nodes); the plain graph when nothing usable fused (or with --bench-plain).
        fused_ok = [o for o in result["optimizer"] if o.get("usable") and o.get("fused_anything")]
        if fused_ok:
            best = max(fused_ok, key=lambda o: (sum(o["fused_operator_statistics"].values()), -sum(o["op_counts"].values())))
            if not args.bench_plain:
                graphs.pop("onnx_plain")
            graphs[f"onnx_opt_{best['model_type']}"] = work / f"opt_{best['model_type']}.onnx"
        result["benchmarked"] = list(graphs)

        # --- the timed runs -------------------------------------------------------------
        embedders = {"torch": torch_enc}
        for name, g in graphs.items():
            embedders[name] = onnx_encoder(g, torch_enc, args.threads)
        names = list(embedders)
        for name in names:  # warm-up (first-call allocations, ORT arena)
            timed(embedders[name], texts[:64], args.batch_sizes[0])
        runs: list[dict] = []
        vectors: dict[tuple[str, int], np.ndarray] = {}
        for r in range(args.repeats):
            order = names[r % len(names):] + names[: r % len(names)]
            for b in args.batch_sizes:
                for name in order:
                    vecs, rec = timed(embedders[name], texts, b)
                    vectors.setdefault((name, b), vecs)
                    runs.append({"repeat": r, "batch_size": b, "embedder": name, **rec})
                    print(runs[-1], flush=True)
        result["runs"] = runs

        summary = []
        for b in args.batch_sizes:
            t_med = statistics.median(x["sentences_per_s"] for x in runs if x["embedder"] == "torch" and x["batch_size"] == b)
            for name in names:
                rs = [x for x in runs if x["embedder"] == name and x["batch_size"] == b]
                med = statistics.median(x["sentences_per_s"] for x in rs)
                row = {
                    "embedder": name, "batch_size": b,
                    "median_sentences_per_s": round(med, 1),
                    "per_repeat_sentences_per_s": [x["sentences_per_s"] for x in rs],
                    "median_cpu_s": round(statistics.median(x["cpu_s"] for x in rs), 1),
                    "median_wall_s": round(statistics.median(x["wall_s"] for x in rs), 2),
                    "speedup_vs_torch": round(med / t_med, 2),
                    "load_before": [x["load_before"] for x in rs], "load_after": [x["load_after"] for x in rs],
                    "max_abs_diff_vs_torch": float(np.abs(vectors[(name, b)] - vectors[("torch", b)]).max()),
                    "min_cosine_vs_torch": float((vectors[(name, b)] * vectors[("torch", b)]).sum(1).min()),
                }
                summary.append(row)
        result["summary"] = summary
        if len(args.batch_sizes) > 1:
            b0, b1 = args.batch_sizes[:2]
            result["noise_floor_torch_b%d_vs_b%d" % (b0, b1)] = float(np.abs(vectors[("torch", b0)] - vectors[("torch", b1)]).max())
    finally:
        result["load_avg_1m_end"] = load1()
        result["total_seconds"] = round(time.perf_counter() - t_start, 1)
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    write(result, args.out)


def write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print("wrote", out, "and", out.with_suffix(".md"))


def _fmt(x) -> str:
    return f"{x:.1e}" if isinstance(x, float) else str(x)


def markdown(res: dict) -> str:
    m = res["machine"]
    ex = res.get("export", {})
    lines = [
        "# Decoder embeddings on ONNX Runtime: SmolLM2-135M-Instruct",
        "",
        f"{res['n_texts']} BANKING77 test texts (`default_rng(0)`), `{res['model']}` ({res['model_class']}, "
        f"{res['attn_implementation']} attention), mean pooling over real tokens, L2, max_length {res['max_length']}; "
        f"{res['threads']} threads (torch and ORT intra-op), {res['repeats']} interleaved repeats. "
        f"{m['cpu']}, {m['cores']} cores (shared); torch {m['torch']}, transformers {m['transformers']}, "
        f"onnxruntime {m['onnxruntime']}, onnx {m['onnx']}.",
        "",
    ]
    if not ex.get("ok"):
        lines += ["**Export failed.**", "", "```", str(ex.get("error")), "```", ""]
        return "\n".join(lines)
    lines.append(
        f"Export (TorchScript exporter, opset {ex['opset']}, dynamic batch/sequence, no KV cache): "
        f"{ex['seconds']} s wall ({ex['cpu_s']} CPU s), graph {ex['size_mb']} MB, {sum(ex['op_counts'].values())} nodes."
    )
    for o in res.get("optimizer", []):
        if o["ok"]:
            chk = o.get("check", {})
            lines.append(
                f"Optimizer `{o['model_type']}`: {o['seconds']} s, fused {o['fused_operator_statistics'] or 'nothing'}, "
                f"{sum(o['op_counts'].values())} nodes, hidden-state diff vs torch "
                f"{_fmt(chk.get('max_abs_diff_hidden', chk.get('error')))}; benchmarked: {'yes' if ('onnx_opt_' + o['model_type']) in res.get('benchmarked', []) else 'no'}."
            )
        else:
            lines.append(f"Optimizer `{o['model_type']}` failed: `{o['error']}`.")
    lines.append("")
    if res.get("summary"):
        lines += [
            "| embedder | batch | median sent/s | per repeat | speed-up vs torch | median CPU s | max abs diff vs torch | load before (per repeat) |",
            "|---|---:|---:|---|---:|---:|---:|---|",
        ]
        for r in res["summary"]:
            lines.append(
                f"| {r['embedder']} | {r['batch_size']} | {r['median_sentences_per_s']} | "
                f"{', '.join(str(x) for x in r['per_repeat_sentences_per_s'])} | {r['speedup_vs_torch']:.2f}x | "
                f"{r['median_cpu_s']} | {r['max_abs_diff_vs_torch']:.1e} | {', '.join(str(x) for x in r['load_before'])} |"
            )
        lines.append("")
        nf = [v for k, v in res.items() if k.startswith("noise_floor")]
        if nf:
            lines.append(f"Noise floor (torch at the two batch sizes): {nf[0]:.1e}. "
                         f"1-min load {res['load_avg_1m_start']} at start, {res['load_avg_1m_end']} at end; total {res['total_seconds']} s.")
        lines.append("")
    if res.get("conclusion"):
        lines += ["## Conclusion", "", *res["conclusion"], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
