"""Zero-shot cold start on BANKING77: accuracy and calibration per template and temperature.

The whole test split (3,080 texts, 77 intents) is embedded once with the packaged
all-MiniLM-L6-v2 (the campaign's default encoder, same options as ``ModelConfig``); each
template's 77 label sentences are embedded with the same encoder, and ``zero_shot_probs``
is evaluated at several temperatures. The temperature never changes the argmax, so
accuracy (and top-5 accuracy) is one number per template; the temperature decides how
peaked the probabilities are, measured by the expected calibration error (15 equal-width
bins of top-class confidence) and the mean top-class confidence.

Results go to ``benchmarks/results/zero_shot.json`` and ``.md``.

    .venv/bin/python benchmarks/zero_shot.py [--limit N]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.plain import cpu_model, offline_env, shared_data  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TEMPLATES = [
    "{label}",
    "a question about {label}",
    "The customer asks about {label}.",
    "banking customer support request: {label}",
]
TEMPERATURES = [0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="first N test rows only (a quick check)")
    args = ap.parse_args()
    offline_env()

    from alft.config import ModelConfig
    from alft.models.encoder import PACKAGED_MODEL, EncodeOptions, Encoder, resolve_model_path
    from alft.models.zeroshot import expected_calibration_error, label_sentences, zero_shot_probs

    data = shared_data() / "banking77"
    labels: list[str] = json.loads((data / "labels.json").read_text())
    with open(data / "test.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    if args.limit:
        rows = rows[: args.limit]
    index = {lab: i for i, lab in enumerate(labels)}
    y = np.array([index[r["label"]] for r in rows], dtype=np.int64)

    mc = ModelConfig()
    enc = Encoder(resolve_model_path(PACKAGED_MODEL), EncodeOptions(max_length=mc.max_length, batch_size=mc.batch_size))
    t0 = time.perf_counter()
    x = enc.encode([r["text"] for r in rows])
    embed_s = time.perf_counter() - t0
    print(f"embedded {len(rows)} test texts in {embed_s:.1f} s", flush=True)

    results = []
    for template in TEMPLATES:
        sentences = label_sentences(labels, template, None)
        lab_emb = enc.encode(sentences)
        per_t = []
        acc = top5 = None
        for temp in TEMPERATURES:
            p = zero_shot_probs(x, lab_emb, temp)
            pred = p.argmax(axis=1)
            a = float((pred == y).mean())
            t5 = float((np.argsort(-p, axis=1)[:, :5] == y[:, None]).any(axis=1).mean())
            if acc is None:
                acc, top5 = a, t5
            elif a != acc:  # argmax is temperature-free; a difference would be a bug
                raise SystemExit(f"accuracy changed with temperature: {acc} vs {a} at T={temp}")
            per_t.append(
                {
                    "temperature": temp,
                    "ece": expected_calibration_error(p, y, bins=15),
                    "mean_confidence": float(p.max(axis=1).mean()),
                    "nll": float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-300, None)).mean()),
                }
            )
        best = min(per_t, key=lambda r: r["ece"])
        results.append(
            {
                "template": template,
                "example_sentence": sentences[labels.index("card_arrival")] if "card_arrival" in index else sentences[0],
                "accuracy": acc,
                "top5_accuracy": top5,
                "best_ece_temperature": best["temperature"],
                "temperatures": per_t,
            }
        )
        print(f"{template!r}: accuracy {acc:.4f}, top-5 {top5:.4f}, best ECE {best['ece']:.4f} at T={best['temperature']}",
              flush=True)

    out = {
        "benchmark": "zero_shot",
        "data": f"banking77/test.jsonl ({len(rows)} rows, {len(labels)} intents)",
        "chance_accuracy": 1 / len(labels),
        "model": PACKAGED_MODEL,
        "encode_options": {"max_length": mc.max_length, "pooling": "mean", "normalize": True},
        "ece_bins": 15,
        "embed_seconds": embed_s,
        "machine": {"cpu": cpu_model(), "python": platform.python_version()},
        "results": results,
    }
    suffix = f"_limit{args.limit}" if args.limit else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"zero_shot{suffix}.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / f"zero_shot{suffix}.md").write_text(render_md(out))
    print(f"wrote {RESULTS / f'zero_shot{suffix}.json'} and .md")


def render_md(out: dict) -> str:
    temps = [r["temperature"] for r in out["results"][0]["temperatures"]]
    lines = [
        "# Zero-shot cold start on BANKING77",
        "",
        f"{out['data']}, encoder {out['model']} (mean pooling, L2), label sentences embedded with the same",
        f"encoder; p(c|x) = softmax(cos(x, s_c) / T). Chance accuracy {out['chance_accuracy']:.3f}.",
        f"Machine: {out['machine']['cpu']}; embedding the split took {out['embed_seconds']:.0f} s.",
        "Produced by `benchmarks/zero_shot.py`.",
        "",
        "Accuracy does not depend on T (the argmax is the same); calibration does. ECE: 15 equal-width",
        "bins of top-class confidence.",
        "",
        "| template | accuracy | top-5 | " + " | ".join(f"ECE T={t}" for t in temps) + " |",
        "|---|---|---|" + "---|" * len(temps),
    ]
    for r in out["results"]:
        eces = []
        for t in r["temperatures"]:
            cell = f"{t['ece']:.3f}"
            eces.append(f"**{cell}**" if t["temperature"] == r["best_ece_temperature"] else cell)
        lines.append(f"| `{r['template']}` | {r['accuracy']:.4f} | {r['top5_accuracy']:.4f} | " + " | ".join(eces) + " |")
    lines += [
        "",
        "Mean top-class confidence per temperature (compare with the accuracy column):",
        "",
        "| template | " + " | ".join(f"T={t}" for t in temps) + " |",
        "|---|" + "---|" * len(temps),
    ]
    for r in out["results"]:
        lines.append(f"| `{r['template']}` | " + " | ".join(f"{t['mean_confidence']:.3f}" for t in r["temperatures"]) + " |")
    best = max(out["results"], key=lambda r: r["accuracy"])
    lines += [
        "",
        f"Best template: `{best['template']}` ({best['accuracy']:.4f}). Best-calibrated temperature per template: "
        + ", ".join(f"`{r['template']}` T={r['best_ece_temperature']}" for r in out["results"])
        + " (the config's default is T = 0.05).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
