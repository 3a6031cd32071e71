"""LLM zero-shot classification (``zero_shot.kind: llm``) against MiniLM similarity (``kind: similarity``).

Accuracy of each packaged LLM (SmolLM2-135M-Instruct, Gemma-3-270M, both through
``packaged:`` resolution) and of the packaged all-MiniLM-L6-v2 similarity on:

* BANKING77 test: a fixed stratified subset, ``--per-class`` texts per intent (default 10: 770 of
  3,080; Gemma ``--gemma-per-class``, default 3: 231), drawn with ``default_rng(0)``. Labels: the
  names (``_`` as spaces), 77 of them.
* SMS Spam test: a fixed random subset of ``--sms`` texts (default 300, the split's class mix),
  ``default_rng(0)``. Labels through descriptions ("A personal message" / "Spam"): "ham" is jargon.

Each LLM is run once per dataset with the product defaults (template, calibration, batch size);
the same scores give the four variants reported: summed vs per-token-mean log-likelihood, with
and without the content-free calibration (the product: summed, calibrated). The temperature
never touches the test subsets: it is fitted (``fit_temperature``, NLL) on training-split labels
with SmolLM2 (BANKING77 train 1 per intent, SMS Spam train 100 texts); ECE is reported on the
test subsets at a grid of temperatures and at the fitted one.

Throughput: torch on ``--threads`` (2) threads, ``OMP_WAIT_POLICY=PASSIVE`` (a spinning OpenMP
thread burns a shared core while it waits); the texts are scored in chunks of ~1/5 of the
subset, and texts/s is the median over chunks; CPU seconds and the 1-minute load average are
recorded. MiniLM's texts/s (median of 3 encodes of the same texts, same run) is the baseline.

    .venv/bin/python benchmarks/llm_zero_shot.py [--quick]

Results: ``benchmarks/results/llm_zero_shot.json`` (a list of rows) and ``.md``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse  # noqa: E402
import itertools  # noqa: E402
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
SMS_DESCRIPTIONS = {"ham": "A personal message", "spam": "Spam"}
TEMPERATURES = [0.5, 1.0, 2.0, 3.0, 5.0]
LLMS = {"smollm2-135m-instruct": "packaged:smollm2-135m-instruct", "gemma3-270m": "packaged:gemma3-270m"}


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def stratified(rows: list[dict], labels: list[str], per_class: int, seed: int = 0) -> list[dict]:
    """``per_class`` rows of every label (all of a smaller class), label-set order, fixed seed."""
    rng = np.random.default_rng(seed)
    out = []
    for lab in labels:
        group = [r for r in rows if r["label"] == lab]
        take = rng.choice(len(group), min(per_class, len(group)), replace=False)
        out += [group[i] for i in sorted(take)]
    return out


def random_subset(rows: list[dict], n: int, seed: int = 0) -> list[dict]:
    idx = np.random.default_rng(seed).choice(len(rows), min(n, len(rows)), replace=False)
    return [rows[i] for i in sorted(idx)]


def calibration(probs: np.ndarray, y: np.ndarray) -> dict:
    from alft.models.zeroshot import expected_calibration_error

    return {
        "ece": expected_calibration_error(probs, y, bins=15),
        "nll": float(-np.log(np.clip(probs[np.arange(y.size), y], 1e-300, None)).mean()),
        "mean_confidence": float(probs.max(axis=1).mean()),
    }


def timed_chunks(fn, texts: list[str], chunks: int = 5) -> tuple[list, dict]:
    """``fn`` over ~equal chunks of ``texts``; outputs in order and the timing facts."""
    bounds = np.linspace(0, len(texts), min(chunks, len(texts)) + 1).astype(int)
    outs, rates = [], []
    wall0, cpu0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    for a, b in itertools.pairwise(bounds):
        t = time.perf_counter()
        outs.append(fn(texts[a:b]))
        rates.append((b - a) / (time.perf_counter() - t))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    facts = {
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "texts_per_s": round(statistics.median(rates), 3),
        "texts_per_s_chunks": [round(r, 3) for r in rates],
        "load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }
    return outs, facts


def minilm_rows(datasets: dict, threads: int) -> list[dict]:
    from alft.config import ModelConfig, ZeroShotConfig
    from alft.models.encoder import (
        PACKAGED_MODEL,
        EncodeOptions,
        Encoder,
        resolve_model_path,
    )
    from alft.models.zeroshot import build_zero_shot, zero_shot_probs

    mc = ModelConfig()
    enc = Encoder(resolve_model_path(PACKAGED_MODEL), EncodeOptions(max_length=mc.max_length, batch_size=mc.batch_size))
    out = []
    for name, d in datasets.items():
        cfg = ZeroShotConfig(descriptions=d["descriptions"])  # the similarity defaults: {label}, T 0.05
        zs = build_zero_shot(enc, d["labels"], cfg)
        texts = [r["text"] for r in d["test"]]
        rates, cpu = [], []
        for _ in range(3):
            t, c = time.perf_counter(), time.process_time()
            emb = enc.encode(texts)
            rates.append(len(texts) / (time.perf_counter() - t))
            cpu.append(time.process_time() - c)
        p = zero_shot_probs(emb, zs.label_emb, cfg.temperature)
        y = d["y"]
        out.append(
            {
                "dataset": name,
                "model": "all-MiniLM-L6-v2 (similarity)",
                "accuracy": float((p.argmax(1) == y).mean()),
                "n": len(texts),
                "seconds": round(len(texts) / statistics.median(rates), 2),
                "cpu_seconds": round(statistics.median(cpu), 2),
                "texts_per_s": round(statistics.median(rates), 1),
                "threads": threads,
                "temperature": cfg.temperature,
                "calibration": calibration(p, y),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
        )
        print(json.dumps(out[-1]), flush=True)
    return out


def llm_row(name: str, path: str, dname: str, d: dict, threads: int, fit: dict | None) -> dict:
    from alft.config import ZeroShotConfig
    from alft.models.llm_classifier import LLMLabeler, fit_temperature, softmax_rows

    t0, c0 = time.perf_counter(), time.process_time()
    lab = LLMLabeler.from_config(ZeroShotConfig(kind="llm", model=path, descriptions=d["descriptions"]), d["labels"])
    load_s, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    texts = [r["text"] for r in d["test"]]
    t0, c0 = time.perf_counter(), time.process_time()
    prior = lab.prior()  # [C] once per labeler: part of the cost
    prior_s, prior_cpu = time.perf_counter() - t0, time.process_time() - c0
    parts, facts = timed_chunks(lab.scores, texts)
    s = np.concatenate(parts)  # [n, C] summed log-likelihoods
    tokens = np.array([len(t) for t in lab._label_targets()])  # [C] label tokens + end token
    y = d["y"]

    def acc(z: np.ndarray) -> float:
        return float((z.argmax(1) == y).mean())

    row = {
        "dataset": dname,
        "model": f"{name} (llm)",
        "accuracy": acc(s - prior),
        "accuracy_uncalibrated": acc(s),
        "accuracy_mean_per_token": acc((s - prior) / tokens),
        "accuracy_mean_per_token_uncalibrated": acc(s / tokens),
        "n": len(texts),
        **facts,
        "threads": threads,
        "load_model_seconds": round(load_s, 1),
        "load_model_cpu_seconds": round(load_cpu, 1),
        "prior_seconds": round(prior_s, 2),
        "prior_cpu_seconds": round(prior_cpu, 2),
        "layout": "chat template" if lab.chat else "plain (Answer:)",
        "template": lab.template,
        "label_tree_nodes": int(lab._tree.tokens.shape[1]),
        "label_tokens": int(tokens.sum()),
        "calibration_by_temperature": {str(t): calibration(softmax_rows(s - prior, t), y) for t in TEMPERATURES},
    }
    if fit is not None:  # a temperature from training-split labels, then measured on the test subset
        fs = lab.scores([r["text"] for r in fit["rows"]]) - prior
        temp = fit_temperature(fs, fit["y"])
        row["fitted_temperature"] = {"on": fit["what"], "T": round(temp, 3), **calibration(softmax_rows(s - prior, temp), y)}
    print(json.dumps({k: v for k, v in row.items() if k != "calibration_by_temperature"}), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-class", type=int, default=10, help="BANKING77 test texts per intent")
    ap.add_argument("--gemma-per-class", type=int, default=3, help="BANKING77 test texts per intent for Gemma")
    ap.add_argument("--sms", type=int, default=300, help="SMS Spam test texts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="1 per intent, 20 SMS texts, _quick files")
    args = ap.parse_args()
    offline_env()
    import torch

    torch.set_num_threads(args.threads)
    if args.quick:
        args.per_class, args.gemma_per_class, args.sms = 1, 1, 20

    data = shared_data()
    bl = json.loads((data / "banking77" / "labels.json").read_text())
    sl = json.loads((data / "sms_spam" / "labels.json").read_text())

    def dataset(rows, labels, descriptions):
        return {"test": rows, "labels": labels, "descriptions": descriptions,
                "y": np.array([labels.index(r["label"]) for r in rows], dtype=np.int64)}

    bank_test = read_rows(data / "banking77" / "test.jsonl")
    sms_test = read_rows(data / "sms_spam" / "test.jsonl")
    full = {
        "banking77": dataset(stratified(bank_test, bl, args.per_class), bl, None),
        "sms_spam": dataset(random_subset(sms_test, args.sms), sl, SMS_DESCRIPTIONS),
    }
    gemma = dict(full, banking77=dataset(stratified(bank_test, bl, args.gemma_per_class), bl, None))
    fits = {
        "banking77": stratified(read_rows(data / "banking77" / "train.jsonl"), bl, 1, seed=1),
        "sms_spam": random_subset(read_rows(data / "sms_spam" / "train.jsonl"), 100 if not args.quick else 10, seed=1),
    }
    fits = {
        k: {"rows": v, "y": np.array([full[k]["labels"].index(r["label"]) for r in v]), "what": f"{k} train, {len(v)} texts"}
        for k, v in fits.items()
    }
    cpu0 = time.process_time()
    rows = minilm_rows(full, args.threads)
    for dname, d in full.items():
        rows.append(llm_row("smollm2-135m-instruct", LLMS["smollm2-135m-instruct"], dname, d, args.threads, fits[dname]))
    for dname, d in gemma.items():
        rows.append(llm_row("gemma3-270m", LLMS["gemma3-270m"], dname, d, args.threads, None))
    for r in rows:
        base = next(b for b in rows if b["dataset"] == r["dataset"] and "MiniLM" in b["model"])
        r["speed_vs_minilm"] = round(r["texts_per_s"] / base["texts_per_s"], 5)
        r["machine"] = cpu_model()
        r["majority_rate"] = round(float(np.bincount(full[r["dataset"]]["y"]).max() / full[r["dataset"]]["y"].size), 4)
    total_cpu = time.process_time() - cpu0
    print(f"total CPU {total_cpu / 60:.1f} min", flush=True)
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"llm_zero_shot{suffix}.json").write_text(json.dumps(rows, indent=1) + "\n")
    (RESULTS / f"llm_zero_shot{suffix}.md").write_text(render_md(rows, total_cpu))
    print(f"wrote {RESULTS / f'llm_zero_shot{suffix}.json'} and .md")


def render_md(rows: list[dict], total_cpu: float) -> str:
    lines = [
        "# LLM zero-shot vs MiniLM similarity",
        "",
        "Produced by `benchmarks/llm_zero_shot.py` (see its docstring for the subsets and the method).",
        (
            f"Machine: {rows[0]['machine']}, torch on {rows[0]['threads']} threads, shared with other work "
            f"(1-minute load average in the table); whole run {total_cpu / 60:.1f} CPU minutes."
        ),
        "LLM accuracy = the product defaults (summed label log-likelihood, content-free calibration);",
        (
            "the other columns are the same scores read another way. Majority-class rate of each subset: "
            + ", ".join(sorted({f"{r['dataset']} {r['majority_rate']:.3f}" for r in rows if "MiniLM" in r["model"]}))
            + ". Gemma's BANKING77 subset is smaller (n column): the run stays under ~25 CPU minutes."
        ),
        "",
        "| dataset | model | n | accuracy | uncalibrated | mean/token | mean/token uncal. | texts/s | CPU s/text | vs MiniLM | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        llm = "accuracy_uncalibrated" in r
        cells = [
            r["dataset"], r["model"], str(r["n"]), f"{r['accuracy']:.3f}",
            f"{r['accuracy_uncalibrated']:.3f}" if llm else "-",
            f"{r['accuracy_mean_per_token']:.3f}" if llm else "-",
            f"{r['accuracy_mean_per_token_uncalibrated']:.3f}" if llm else "-",
            f"{r['texts_per_s']:.2f}", f"{r['cpu_seconds'] / r['n']:.3f}", f"{r['speed_vs_minilm']:.4f}",
            str(r["load_avg_1m"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Calibration of the LLM probabilities on the test subsets (ECE, 15 bins / NLL):", ""]
    lines += [
        "| dataset | model | " + " | ".join(f"T={t}" for t in TEMPERATURES) + " | fitted on train |",
        "|---|---|" + "---|" * (len(TEMPERATURES) + 1),
    ]
    for r in rows:
        if "calibration_by_temperature" not in r:
            continue
        cal = r["calibration_by_temperature"]
        fit = r.get("fitted_temperature")
        fitted = f"T={fit['T']}: {fit['ece']:.3f} / {fit['nll']:.3f}" if fit else "-"
        lines.append(
            f"| {r['dataset']} | {r['model']} | "
            + " | ".join(f"{cal[str(t)]['ece']:.3f} / {cal[str(t)]['nll']:.3f}" for t in TEMPERATURES)
            + f" | {fitted} |"
        )
    sms = [r for r in rows if r["dataset"] == "sms_spam"]
    if sms:
        lines += ["", f"SMS Spam subset: {sms[0]['n']} texts."]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
