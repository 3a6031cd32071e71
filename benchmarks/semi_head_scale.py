"""Cost of the semi-supervised head per round on big pools (``trainer.head.semi_supervised``).

The head's fit with label spreading does three things the plain head does not, all over the
whole pool: build the k-nearest-neighbour graph (FAISS: exact up to 100k rows, IVF above;
once per campaign, ``alft.campaign.graph``), spread the labels over it (sparse products, 30
steps), and fit the logistic regression on the labeled rows plus every pseudo-labeled pool
row. This script times each part, and the plain head's fit on the labeled rows alone as the
baseline, on the synthetic clustered pools
of ``selection_scale.py`` (L2-normalised 384-d float32, 1,000 Gaussian centres): 500 labeled
rows whose class (77 classes) is the nearest of 77 random directions, the shipped settings
(k 10, alpha 0.9, 30 steps, weight 0.3 faded at 30 per class), BLAS held to 1 thread as a
campaign holds it (``model.blas_threads``), FAISS with its default OpenMP threads.

Measured per part, one after the other in this process: wall and CPU seconds (median over
``--repeats`` at 100k, one run at 1M), and the peak extra resident memory (kernel high-water
mark reset before the part, minus the resident set before it), so FAISS's and BLAS's
allocations count. The pool itself (1.5 GB at 1M) is built before and not counted. Parts:
``plain_fit``; ``knn_graph`` (the first round that needs it); ``semi_fit``, the head's fit
given that graph, as every later round runs it, split in two by the trainer's progress line
(printed once the pseudo-labels exist): ``spread_s`` (spreading) and ``lr_s`` (the logistic
regression on labels + pseudo-labels). A first round costs ``knn_graph + semi_fit``.

    .venv/bin/python benchmarks/semi_head_scale.py [--sizes 100000 1000000] [--repeats 3]
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.plain import cpu_model  # noqa: E402
from benchmarks.selection_scale import make_pool, measured  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "semi_head_scale.json"
N_CLASSES = 77
N_LABELED = 500


def run_size(n: int, repeats: int, seed: int, log) -> dict:
    from threadpoolctl import threadpool_limits

    from alft.config.trainers import HeadTrainerConfig, SemiSupervisedConfig
    from alft.models.head import HeadTrainer
    from alft.models.spreading import knn_graph, pseudo_label_weight

    t0 = time.perf_counter()
    pool = make_pool(n, seed)  # [n, d]
    rng = np.random.default_rng(seed + 1)
    directions = rng.standard_normal((N_CLASSES, pool.shape[1])).astype(np.float32)  # [C, d]
    rows = np.sort(rng.choice(n, size=N_LABELED, replace=False))
    y = (pool[rows] @ directions.T).argmax(axis=1)  # [m]
    labels = [f"c{i}" for i in range(N_CLASSES)]
    log(f"n={n:,}: pool built in {time.perf_counter() - t0:.0f} s; {np.unique(y).size} classes among the labels")
    ss = SemiSupervisedConfig(k=10)
    parts: dict[str, list[dict]] = {"plain_fit": [], "knn_graph": [], "semi_fit": []}
    extra = {}
    with threadpool_limits(limits=1, user_api="blas"):
        # untimed: the first fit pays sklearn's and FAISS's imports
        HeadTrainer(HeadTrainerConfig(C=20.0)).fit([], pool[rows[:50]], y[:50], labels, seed=0)
        for r in range(repeats):
            plain = HeadTrainer(HeadTrainerConfig(C=20.0, class_weight="balanced"))
            _, m = measured(lambda: plain.fit([], pool[rows], y, labels, seed=0))
            parts["plain_fit"].append(m)
            graph, m = measured(lambda: knn_graph(pool, ss.k, seed=0))
            parts["knn_graph"].append(m)
            semi = HeadTrainer(HeadTrainerConfig(C=20.0, class_weight="balanced", semi_supervised=ss))
            said: list[tuple[float, str]] = []
            t0 = time.perf_counter()
            _, m = measured(lambda: semi.fit([], pool[rows], y, labels, seed=0, pool=pool, pool_rows=rows,
                                            pool_graph=lambda: graph,
                                            progress=lambda msg: said.append((time.perf_counter(), msg))))
            del graph
            # the trainer's line "label spreading: N pseudo-labels, ..." marks the end of spreading
            at, line = next((t, msg) for t, msg in said if msg.startswith("label spreading:"))
            m["spread_s"] = at - t0
            m["lr_s"] = m["wall_s"] - m["spread_s"]
            extra["reached"] = int(line.split()[2])
            parts["semi_fit"].append(m)
            log(f"n={n:,} repeat {r}: " + ", ".join(f"{k} {v[-1]['wall_s']:.1f} s" for k, v in parts.items() if v)
                + f" (spreading {m['spread_s']:.1f} s + logistic regression {m['lr_s']:.1f} s)")
    extra["pseudo_weight"] = pseudo_label_weight(ss.weight, N_LABELED, N_CLASSES, ss.fade_per_class)
    summary = {
        k: {f: statistics.median(m[f] for m in v) for f in ("wall_s", "cpu_s", "peak_extra_mib") + (
            ("spread_s", "lr_s") if k == "semi_fit" else ())}
        for k, v in parts.items()
    }
    return {"n": n, "repeats": repeats, "labeled": N_LABELED, "classes": N_CLASSES, "runs": parts, "median": summary,
            **extra, "first_round_s": summary["knn_graph"]["wall_s"] + summary["semi_fit"]["wall_s"],
            "semi_over_plain": summary["semi_fit"]["wall_s"] / summary["plain_fit"]["wall_s"]}


def write_markdown(report: dict, path: Path) -> None:
    lines = [
        "# Semi-supervised head: cost per round on big pools",
        "",
        f"`benchmarks/semi_head_scale.py` (protocol in its docstring); {report['machine']['cpu']}, "
        f"{report['machine']['cores']} cores, load average {report['machine']['load_before']} before, "
        f"{report['machine']['load_after']} after.",
        "",
        "| pool | part | wall s (median) | CPU s | peak extra MiB | repeats |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    names = {"plain_fit": "plain head fit (500 labels)", "knn_graph": "kNN graph (FAISS; first round only)",
             "semi_fit": "**semi-supervised fit, graph given** (every round)"}
    for s in report["sizes"]:
        for k, label in names.items():
            m = s["median"][k]
            lines.append(f"| {s['n']:,} | {label} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} | {m['peak_extra_mib']:,.0f} | {s['repeats']} |")
    lines.append("")
    for s in report["sizes"]:
        f = s["median"]["semi_fit"]
        lines.append(f"- {s['n']:,} rows: {s['reached']:,} pseudo-labels (weight {s['pseudo_weight']:.3f} x confidence); "
                     f"a round's semi-supervised fit is {f['spread_s']:.1f} s spreading + {f['lr_s']:.1f} s logistic "
                     f"regression; the first round adds the graph: {s['first_round_s']:.0f} s in all.")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3, help="repeats below 1M rows (1M: one run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    load_before = os.getloadavg()
    sizes = []
    for n in a.sizes:  # written after each size: a 1M run that dies keeps the smaller ones
        sizes.append(run_size(n, a.repeats if n < 1_000_000 else 1, a.seed, log))
        report = {
            "machine": {"python": platform.python_version(), "cpu": cpu_model(), "cores": os.cpu_count(),
                        "load_before": [round(v, 2) for v in load_before],
                        "load_after": [round(v, 2) for v in os.getloadavg()]},
            "sizes": sizes,
        }
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=1))
        write_markdown(report, a.out.with_suffix(".md"))
    log(f"-> {a.out}")


if __name__ == "__main__":
    main()
