"""Few-shot LLM labeling: the label listing in every turn (before) vs in the first turn only (now).

The LLM labeler (``oracle.prelabel: llm``, ``alft.models.llm_classifier.LLMLabeler``) shows
each text its ``shots`` nearest human-labeled examples as earlier chat turns. Each turn is the
template with ``{labels}`` filled; at 77 labels the listing is ~400 tokens, so a 4-shot prompt
held it 5 times, and only the system prompt was shared between texts (the first demonstration
already differs). Now the listing is in the first turn only (later turns say "the labels listed
above"), and with the shipped template (listing before ``{text}``) it is part of the prefix all
prompts share, encoded once per call.

Protocol: BANKING77, the packaged SmolLM2-135M-Instruct, the product's prelabel template and
label names; ``--per-class`` test texts per intent (default 1: 77 texts, ``default_rng(0)``);
demonstrations: each text's ``--shots`` (4) nearest examples, by the packaged MiniLM's cosine,
among ``--labeled`` (400) random training examples with their gold labels (the labeled set of a
campaign halfway through the effort benchmark's budget). Both layouts score the same texts with
the same demonstrations, interleaved in ``--repeats`` (2) chunks each; reported: accuracy,
prompt tokens per text (own, i.e. not shared), seconds and CPU seconds per text (median over
chunks), load average. Also the zero-shot row (no demonstrations) for reference.

    .venv/bin/python benchmarks/llm_fewshot_layout.py [--per-class 1] [--shots 4]

Results: ``benchmarks/results/llm_fewshot_layout.{json,md}``.
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


def every_turn(labeler_cls):
    """``labeler_cls`` with the former layout: the full listing in every turn."""
    from alft.models.llm_classifier import fill

    class EveryTurn(labeler_cls):
        def prompt(self, text, demos=None):
            listing = ", ".join(self.verbalizations)
            verbal = dict(zip(self.labels, self.verbalizations, strict=True))
            shots = [(fill(self.template, self._cut(t), listing), verbal[lab]) for t, lab in demos or ()]
            query = fill(self.template, self._cut(text), listing)
            messages = []
            for user, answer in shots:
                messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
            messages.append({"role": "user", "content": query})
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    return EveryTurn


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-class", type=int, default=1)
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--labeled", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=2, help="chunks per layout, interleaved")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "llm_fewshot_layout"))
    args = ap.parse_args()
    offline_env()
    import torch

    torch.set_num_threads(args.threads)
    from alft.campaign.prelabel import DEFAULT_LLM, PRELABEL_TEMPLATE, nearest_labeled
    from alft.models.checkpoints import load_causal_lm
    from alft.models.encoder import PACKAGED_MODEL, EncodeOptions, Encoder, resolve_model_path
    from alft.models.llm_classifier import LLMLabeler

    data = shared_data() / "banking77"
    labels = json.loads((data / "labels.json").read_text())
    rng = np.random.default_rng(0)
    test = read_rows(data / "test.jsonl")
    by = {lab: [r for r in test if r["label"] == lab] for lab in labels}
    texts_rows = [r for lab in labels for r in rng.permutation(np.array(by[lab], dtype=object))[: args.per_class]]
    train = read_rows(data / "train.jsonl")
    labeled = [train[int(i)] for i in rng.choice(len(train), args.labeled, replace=False)]
    enc = Encoder(resolve_model_path(PACKAGED_MODEL), EncodeOptions())
    q = enc.encode([r["text"] for r in texts_rows])  # [n, d], L2-normalised
    lab_emb = enc.encode([r["text"] for r in labeled])  # [L, d]
    near = nearest_labeled(q, lab_emb, args.shots)  # [n, shots], rows of labeled
    demos = [[(labeled[int(j)]["text"], labeled[int(j)]["label"]) for j in row] for row in near]
    y = np.array([labels.index(r["label"]) for r in texts_rows])
    texts = [r["text"] for r in texts_rows]

    path = resolve_model_path(DEFAULT_LLM)
    tok, lm = load_causal_lm(path, "prelabel LLM")
    layouts = {
        "first turn (now)": LLMLabeler(lm, tok, labels, model_path=path, template=PRELABEL_TEMPLATE),
        "every turn (before)": every_turn(LLMLabeler)(lm, tok, labels, model_path=path, template=PRELABEL_TEMPLATE),
    }
    chunks = np.array_split(np.arange(len(texts)), args.repeats)
    got: dict[str, dict] = {k: {"pred": np.full(len(texts), -1), "s": [], "cpu": []} for k in layouts}
    load0 = os.getloadavg()
    for pos in chunks:
        for name, lab in layouts.items():  # interleaved: both layouts see the same load
            c0, w0 = time.process_time(), time.perf_counter()
            p = lab.probs([texts[i] for i in pos], [demos[i] for i in pos])  # [P, C]
            got[name]["s"].append((time.perf_counter() - w0) / len(pos))
            got[name]["cpu"].append((time.process_time() - c0) / len(pos))
            got[name]["pred"][pos] = p.argmax(axis=1)
            print(f"{name}: chunk of {len(pos)} in {got[name]['s'][-1] * len(pos):.1f} s", flush=True)
    c0, w0 = time.process_time(), time.perf_counter()
    zs = layouts["first turn (now)"].probs(texts).argmax(axis=1)
    zs_s, zs_cpu = (time.perf_counter() - w0) / len(texts), (time.process_time() - c0) / len(texts)
    load1 = os.getloadavg()

    def own_tokens(lab) -> float:
        from alft.models.llm_classifier import _common_prefix

        ids = lab.prompt_ids(texts, demos)
        shared = len(_common_prefix(ids))
        return float(np.mean([len(i) - shared for i in ids])), shared

    rows = []
    for name, lab in layouts.items():
        own, shared = own_tokens(lab)
        rows.append({
            "layout": name, "shots": args.shots, "n": len(texts),
            "accuracy": round(float((got[name]["pred"] == y).mean()), 4),
            "own_tokens_per_text": round(own, 1), "shared_tokens": shared,
            "s_per_text": round(statistics.median(got[name]["s"]), 3),
            "cpu_s_per_text": round(statistics.median(got[name]["cpu"]), 3),
        })
    rows.append({
        "layout": "zero-shot (no demonstrations)", "shots": 0, "n": len(texts),
        "accuracy": round(float((zs == y).mean()), 4), "own_tokens_per_text": None, "shared_tokens": None,
        "s_per_text": round(zs_s, 3), "cpu_s_per_text": round(zs_cpu, 3),
    })
    meta = {"model": DEFAULT_LLM, "labeled": args.labeled, "per_class": args.per_class, "threads": args.threads,
            "load_before": [round(x, 2) for x in load0], "load_after": [round(x, 2) for x in load1], "cpu": cpu_model()}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "meta": meta}, indent=1) + "\n")
    speed = rows[1]["s_per_text"] / rows[0]["s_per_text"]
    lines = [
        "# Few-shot LLM labeling: label listing once vs in every turn", "",
        "`benchmarks/llm_fewshot_layout.py` (protocol in its docstring): BANKING77, SmolLM2-135M-Instruct, "
        f"{len(texts)} test texts, {args.shots} nearest of {args.labeled} labeled training examples as demonstrations, "
        f"{args.threads} torch threads; load average {meta['load_before']} -> {meta['load_after']}.", "",
        "| layout | shots | accuracy | own prompt tokens / text | shared tokens | s / text | CPU s / text |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['layout']} | {r['shots']} | {r['accuracy']:.3f} | {r['own_tokens_per_text'] or '-'} | "
                     f"{r['shared_tokens'] or '-'} | {r['s_per_text']:.3f} | {r['cpu_s_per_text']:.3f} |")
    lines += ["", f"Listing once: {speed:.1f}x faster per text (median over {args.repeats} interleaved chunks)."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
