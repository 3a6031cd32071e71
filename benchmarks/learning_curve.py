"""Learning-curve benchmark: strategies x seeds on a real dataset with the head trainer.

Protocol: 100 random initial labels, batches of 100 up to 2,000 labels, every registered
strategy with its default options, 3 seeds. Records accuracy and macro-F1 at every step,
the normalised area under both curves, seconds per step, and a full-data logistic-regression
reference on the same embeddings. Campaigns run in ``--jobs`` worker processes; the pool
is embedded once, before they start.

    .venv/bin/python benchmarks/learning_curve.py --dataset banking77 --jobs 2
    .venv/bin/python benchmarks/learning_curve.py --dataset sms_spam --jobs 2
    .venv/bin/python benchmarks/learning_curve.py --seeds 0 --strategies margin random
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.plain import ROOT, cpu_model, offline_env, run_plain  # noqa: E402

DATASETS = {"banking77": ROOT / "conf" / "banking77.yaml", "sms_spam": ROOT / "conf" / "sms_spam.yaml"}


def campaign_config(
    dataset: str, strategy: str, seed: int, budget: int, batch: int, initial: int, work: Path, extra: tuple = ()
):
    from alft.config import load_config

    return load_config(
        DATASETS[dataset],
        [
            f"name=lc-{dataset}-{strategy.replace('_', '-')}-s{seed}",
            f"seed={seed}",
            f"budget={budget}",
            f"batch_size={batch}",
            f"initial_size={initial}",
            "cold_start.name=random",
            # the protocol's head is the plain one; --set turns the shipped semi-supervised head on
            "trainer.head.semi_supervised=null",
            f"strategy={{name: {strategy}}}",
            "stop={}",
            f"workdir={work / f'{strategy}-s{seed}'}",
            *extra,
        ],
    )


def read_curve(cfg) -> list[dict]:
    from alft.campaign.context import open_store

    store = open_store(cfg)
    metrics = store.metrics(cfg.name)
    out = []
    for r in store.rounds(cfg.name):
        steps = {s["step"]: s["seconds"] for s in store.steps(cfg.name, r["round"])}
        ev = store.step_result(cfg.name, r["round"], "evaluate")
        sel = store.step_result(cfg.name, r["round"], "select") or {}
        out.append(
            {
                "round": r["round"],
                "labels": int(ev["n_labels"]),
                "accuracy": metrics[r["round"]]["accuracy"],
                "macro_f1": metrics[r["round"]]["macro_f1"],
                "seconds": steps,
                # what an adaptive strategy chose (bandit arm, schedule phase) and the coverage it read
                "arm": sel.get("arm") or sel.get("strategy"),
                "phase": (sel.get("info") or {}).get("phase"),
                "class_coverage": ev.get("class_coverage"),
            }
        )
    return out


def full_data_reference(cfg) -> dict:
    """Logistic regression (the head trainer) on every pool label: the ceiling of the curve."""
    import numpy as np

    from alft.campaign.context import campaign_data, embed_with_cache, embeddings_for
    from alft.models.head import HeadTrainer

    data = campaign_data(cfg)
    embed_with_cache(cfg, data.pool.texts, "pool")
    embed_with_cache(cfg, data.eval.texts, "eval")
    xp = embeddings_for(cfg, data.pool.texts, data.pool.digest)
    xe = embeddings_for(cfg, data.eval.texts, data.eval.digest)
    idx = {lab: i for i, lab in enumerate(data.labels)}
    yp = np.array([idx[g] for g in data.pool.gold])
    ye = np.array([idx[g] for g in data.eval.gold])
    t = time.perf_counter()
    # every pool example is labeled here: nothing is left to spread labels to
    model = HeadTrainer(cfg.trainer.head.model_copy(update={"semi_supervised": None})).fit([], xp, yp, data.labels, seed=0)
    pred = model.predict_proba([], xe).argmax(1)
    from sklearn.metrics import f1_score

    return {
        "labels": int(len(yp)),
        "accuracy": float((pred == ye).mean()),
        "macro_f1": float(f1_score(ye, pred, average="macro")),
        "fit_seconds": time.perf_counter() - t,
    }


def summarize(curves: dict[str, dict[int, list[dict]]], checkpoints: list[int]) -> dict:
    from alft.campaign.evaluation import normalized_auc

    table = {}
    for strategy, by_seed in curves.items():
        aucs, f1_aucs, at, f1_at = [], [], {c: [] for c in checkpoints}, {c: [] for c in checkpoints}
        step_seconds: dict[str, list[float]] = {}
        for curve in by_seed.values():
            x = [p["labels"] for p in curve]
            aucs.append(normalized_auc(x, [p["accuracy"] for p in curve]))
            f1_aucs.append(normalized_auc(x, [p["macro_f1"] for p in curve]))
            for c in checkpoints:
                at[c].extend(p["accuracy"] for p in curve if p["labels"] == c)
                f1_at[c].extend(p["macro_f1"] for p in curve if p["labels"] == c)
            for p in curve[1:]:  # round 0 includes one-off embedding of the pool
                for k, v in p["seconds"].items():
                    step_seconds.setdefault(k, []).append(v)
        table[strategy] = {
            "seeds": len(by_seed),
            "auc_accuracy_mean": statistics.mean(aucs),
            "auc_accuracy_std": statistics.pstdev(aucs),
            "auc_accuracy_by_seed": aucs,  # in the curves' seed order
            "auc_macro_f1_mean": statistics.mean(f1_aucs),
            "auc_macro_f1_std": statistics.pstdev(f1_aucs),
            "macro_f1_at": {str(c): (statistics.mean(v), statistics.pstdev(v)) for c, v in f1_at.items() if v},
            "accuracy_at": {str(c): (statistics.mean(v), statistics.pstdev(v)) for c, v in at.items() if v},
            "median_step_seconds": {k: statistics.median(v) for k, v in step_seconds.items()},
            "median_round_seconds": statistics.median(
                sum(p["seconds"].values()) for curve in by_seed.values() for p in curve[1:]
            ),
        }
    return table


def plot(curves, reference, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for strategy, by_seed in curves.items():
        xs = [p["labels"] for p in next(iter(by_seed.values()))]
        for ax, key in zip(axes, ("accuracy", "macro_f1"), strict=True):
            ys = np.array([[p[key] for p in c] for c in by_seed.values()])  # [seeds, rounds]
            ax.plot(xs, ys.mean(0), label=strategy, lw=1.6)
            ax.fill_between(xs, ys.min(0), ys.max(0), alpha=0.15)
    for ax, key in zip(axes, ("accuracy", "macro_f1"), strict=True):
        ax.axhline(reference[key], color="k", ls="--", lw=1, label=f"all {reference['labels']} labels")
        ax.set_xlabel("labels")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def markdown(table: dict, reference: dict, checkpoints: list[int]) -> str:
    head = (
        "| strategy | seeds | AUC (accuracy) | AUC (macro-F1) | "
        + " | ".join(f"acc @ {c}" for c in checkpoints)
        + f" | macro-F1 @ {checkpoints[-1]} | s / round |"
    )
    lines = [head, "|" + "---|" * (6 + len(checkpoints))]
    for s, row in sorted(table.items(), key=lambda kv: -kv[1]["auc_accuracy_mean"]):
        cells = [f"{row['accuracy_at'][str(c)][0]:.4f} ± {row['accuracy_at'][str(c)][1]:.4f}" for c in checkpoints]
        f1_last = row["macro_f1_at"][str(checkpoints[-1])]
        lines.append(
            f"| {s} | {row['seeds']} | {row['auc_accuracy_mean']:.4f} ± {row['auc_accuracy_std']:.4f} | "
            f"{row['auc_macro_f1_mean']:.4f} ± {row['auc_macro_f1_std']:.4f} | "
            + " | ".join(cells)
            + f" | {f1_last[0]:.4f} ± {f1_last[1]:.4f} | {row['median_round_seconds']:.2f} |"
        )
    lines.append(
        "| full data (LR) | - | - | - | "
        + " | ".join("" for _ in checkpoints[:-1])
        + f" | {reference['accuracy']:.4f} ({reference['labels']} labels) | {reference['macro_f1']:.4f} | - |"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="banking77", choices=sorted(DATASETS))
    ap.add_argument("--strategies", nargs="+", default=None, help="default: every registered strategy")
    ap.add_argument("--jobs", type=int, default=1, help="campaigns run at once (worker processes)")
    ap.add_argument(
        "--merge", action="store_true",
        help="keep the other strategies' curves from the existing results file (re-run a few)",
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--budget", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--initial", type=int, default=100)
    ap.add_argument("--checkpoints", nargs="+", type=int, default=[500, 1000, 2000])
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / ".work" / "learning_curve")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="config override for every campaign (e.g. trainer.head.semi_supervised={k: 10})",
    )
    ap.add_argument("--variant", default="", help="suffix of the results files and work folder (with --set)")
    ap.add_argument(
        "--record-default", metavar="STRATEGY", default=None,
        help="also copy this run's STRATEGY row into learning_curve_<dataset>.json's summary as 'default' "
        "(run with the shipped config's cold start, e.g. --set cold_start.name=kmeans)",
    )
    args = ap.parse_args()

    offline_env()
    import logging

    logging.getLogger("alft").setLevel(logging.WARNING)
    if args.strategies is None:
        from strategies import available, get_strategy

        # a classification benchmark: leave out what needs a generative model's statistics
        args.strategies = [s.name for s in available() if "generation" not in get_strategy(s.name).needs]
    suffix = f"_{args.variant}" if args.variant else ""
    args.work = args.work / f"{args.dataset}{suffix}"
    shutil.rmtree(args.work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    curves: dict[str, dict[int, list[dict]]] = {}
    started = time.time()
    jobs = [(args.dataset, st, seed, args.budget, args.batch, args.initial, args.work, tuple(args.set))
            for st in args.strategies for seed in args.seeds]
    cfg = campaign_config(*jobs[0])
    for _, (strategy, seed, curve, secs) in run_campaigns(list(enumerate(jobs)), args.jobs):
        curves.setdefault(strategy, {})[seed] = curve
        _report(strategy, seed, curve, secs)
    curves = {st: dict(sorted(curves[st].items())) for st in args.strategies}
    name = f"learning_curve_{args.dataset}{suffix}"
    previous = args.out / f"{name}.json"
    if args.merge and previous.exists():
        old = json.loads(previous.read_text())
        kept = {st: {int(k): v for k, v in c.items()} for st, c in old["curves"].items() if st not in curves}
        curves = {**kept, **curves}
        args.strategies = list(dict.fromkeys([*old["protocol"].get("strategies", []), *args.strategies]))
    reference = full_data_reference(cfg)
    table = summarize(curves, args.checkpoints)
    if args.merge and previous.exists() and "default" in old["summary"]:
        table["default"] = old["summary"]["default"]  # recorded from another run (--record-default)
    result = {
        "dataset": args.dataset,
        "protocol": {
            "initial": args.initial,
            "initial_strategy": "random",
            "batch": args.batch,
            "budget": args.budget,
            "trainer": "head (logistic regression, C=%s)" % cfg.trainer.head.C,
            "encoder": cfg.model.path,
            "seeds": args.seeds,
            "strategies": args.strategies,
            "jobs": args.jobs,
            "overrides": args.set,
        },
        "machine": {"python": platform.python_version(), "cpu": cpu_model(), "cores": _cores()},
        "minutes": (time.time() - started) / 60,
        "full_data_reference": reference,
        "summary": table,
        "curves": curves,
    }
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1))
    if args.record_default:
        main_file = args.out / f"learning_curve_{args.dataset}.json"
        main_result = json.loads(main_file.read_text())
        row = dict(table[args.record_default])
        row["config"] = {"strategy": args.record_default, "overrides": args.set, "source": f"{name}.json"}
        main_result["summary"]["default"] = row
        main_file.write_text(json.dumps(main_result, indent=1))
    md = markdown(table, reference, args.checkpoints)
    (args.out / f"{name}.md").write_text(md + "\n")
    plot(curves, reference, args.out / f"{name}.png", f"{args.dataset}: head trainer, {len(args.seeds)} seeds")
    print(md)


def run_campaigns(tagged_jobs: list[tuple], workers: int):
    """Run ``(tag, job)`` campaigns (``_one``'s jobs), ``workers`` at a time; yields
    ``(tag, (strategy, seed, curve, seconds))`` as each finishes.

    The pool is embedded first, so the workers find every vector in the shared cache.
    """
    _embed_once(campaign_config(*tagged_jobs[0][1]))
    if workers <= 1:
        for tag, job in tagged_jobs:
            yield tag, _one(job)
        return
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # one BLAS/OpenMP thread per worker: `workers` processes on as many cores, no oversubscription
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        futures = {ex.submit(_one, job): tag for tag, job in tagged_jobs}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def _embed_once(cfg) -> None:
    from alft.campaign.context import campaign_data, embed_with_cache

    data = campaign_data(cfg)
    embed_with_cache(cfg, data.pool.texts, "pool")
    embed_with_cache(cfg, data.eval.texts, "eval")


def _one(job):
    """One campaign (in a worker process): its learning curve and wall seconds."""
    offline_env()
    import logging

    logging.getLogger("alft").setLevel(logging.WARNING)
    dataset, strategy, seed, budget, batch, initial, work, extra = job
    cfg = campaign_config(dataset, strategy, seed, budget, batch, initial, work, extra)
    t = time.perf_counter()
    run_plain(cfg)
    return strategy, seed, read_curve(cfg), time.perf_counter() - t


def _report(strategy, seed, curve, secs) -> None:
    acc = {p["labels"]: p["accuracy"] for p in curve}
    print(
        f"{strategy:>16} seed {seed}: acc@1000 {acc.get(1000, float('nan')):.4f} "
        f"acc@{curve[-1]['labels']} {curve[-1]['accuracy']:.4f} ({secs:.0f} s)",
        flush=True,
    )




def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    main()
