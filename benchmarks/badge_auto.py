"""BADGE end to end, exact path against the Khatri-Rao sketch: the evidence for ``sketch_dim: auto``.

The pools, labeled set and random 77-class head of ``benchmarks/selection_scale.py`` (clustered
unit 384-d vectors, 100 labeled, 1,000 picks). Per pool size the two paths run interleaved
(exact, sketch, exact, sketch, ...) on the same inputs, each a whole ``Strategy.query``: the
gradient embedding, the sketch's build where there is one, and the lazy D^2 seeding. Reported:
median wall and CPU seconds, their ratio (sketch over exact), peak extra memory (VmHWM, as in
selection_scale) and the load average around each call.

    .venv/bin/python benchmarks/badge_auto.py [--sizes 100000 1000000] [--repeats 3] [--sketch-dim 256]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.plain import cpu_model  # noqa: E402
from benchmarks.selection_scale import (  # noqa: E402
    K, N_LABELED, fixed_malloc, labeled_split, make_pool, measured, model_inputs,
)

RESULTS = ROOT / "benchmarks" / "results"


def run(sizes: list[int], repeats: int, sketch_dim: int, seed: int) -> dict:
    from strategies import QueryInputs, get_strategy

    paths = {"exact": get_strategy("badge", sketch_dim=None), "sketch": get_strategy("badge", sketch_dim=sketch_dim)}
    out = {"benchmark": "badge_auto", "k": K, "n_labeled": N_LABELED, "sketch_dim": sketch_dim, "repeats": repeats,
           "seed": seed, "machine": {"cpu": cpu_model(), "cores": os.cpu_count()}, "sizes": []}
    for n in sizes:
        emb = make_pool(n, seed)
        labeled, unlabeled = labeled_split(n, seed)
        probs, features, head = model_inputs(emb, unlabeled, seed)
        inputs = QueryInputs(unlabeled=unlabeled, labeled=labeled, embeddings=emb, probs=probs, features=features,
                             head=head)
        del probs, features
        rec = {p: {"wall_s": [], "cpu_s": [], "peak_extra_mib": [], "load": []} for p in paths}
        for r in range(repeats):
            for name, strategy in paths.items():
                gc.collect()
                load = os.getloadavg()[0]
                q, m = measured(lambda: strategy.query(inputs, K, np.random.default_rng(seed + 10 + r)))  # noqa: B023
                if q.info.get("badge_path") != name:
                    raise RuntimeError(f"asked for the {name} path, got {q.info}")
                for key, v in (*m.items(), ("load", load)):
                    rec[name][key].append(v)
                print(f"n={n:,} {name} [{r}]: {m['wall_s']:.2f} s wall, {m['cpu_s']:.2f} s CPU (load {load:.2f})",
                      flush=True)
        med = {p: {k: statistics.median(v) for k, v in d.items()} for p, d in rec.items()}
        out["sizes"].append({
            "n_pool": n, "runs": rec, "median": med,
            "sketch_over_exact_wall": med["sketch"]["wall_s"] / med["exact"]["wall_s"],
            "sketch_over_exact_cpu": med["sketch"]["cpu_s"] / med["exact"]["cpu_s"],
        })
        del inputs, emb
        gc.collect()
    return out


def render_md(out: dict) -> str:
    lines = [
        "# BADGE: exact path against the sketch, end to end",
        "",
        f"`benchmarks/badge_auto.py`: the pools of selection_scale (clustered unit 384-d, {out['n_labeled']} labeled, "
        f"random 77-class head), {out['k']:,} picks, the two paths interleaved on the same inputs, "
        f"median of {out['repeats']}; sketch width {out['sketch_dim']}. Machine: {out['machine']['cpu']}, "
        f"{out['machine']['cores']} cores.",
        "",
        "| pool | exact wall s | sketch wall s | sketch / exact (wall) | exact CPU s | sketch CPU s | sketch / exact (CPU) "
        "| peak extra MiB exact / sketch | load (median) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for s in out["sizes"]:
        e, k = s["median"]["exact"], s["median"]["sketch"]
        lines.append(
            f"| {s['n_pool']:,} | {e['wall_s']:.2f} | {k['wall_s']:.2f} | {s['sketch_over_exact_wall']:.2f} | "
            f"{e['cpu_s']:.2f} | {k['cpu_s']:.2f} | {s['sketch_over_exact_cpu']:.2f} | "
            f"{e['peak_extra_mib']:.0f} / {k['peak_extra_mib']:.0f} | {statistics.median(s['runs']['exact']['load'] + s['runs']['sketch']['load']):.2f} |"
        )
    above = ", ".join(f"{abs(1 - x['sketch_over_exact_wall']):.0%} {'faster' if x['sketch_over_exact_wall'] < 1 else 'slower'}"
                      f" at {x['n_pool']:,}" for x in out["sizes"])
    lines += [
        "",
        "What `sketch_dim: auto` does with this: the exact path. Since the seeding is lazy (a few passes",
        "over the gradient factors instead of one per pick), building the sketch costs about what it",
        f"saves (above, the sketch's wall time: {above}), and their",
        "peak memory is the gradient embedding's; the exact path draws from the true D^2 distribution.",
        "An explicit `sketch_dim: <width>` still runs the sketch.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sketch-dim", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="badge_auto", help="results file stem under benchmarks/results/")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json")
    args = ap.parse_args()
    if not args.markdown_only:
        fixed_malloc()  # as selection_scale: freed blocks leave the RSS, so the peaks are exact
    if args.markdown_only:
        out = json.loads((RESULTS / f"{args.out}.json").read_text())
        (RESULTS / f"{args.out}.md").write_text(render_md(out))
        print(render_md(out))
        return
    out = run(sorted(args.sizes), args.repeats, args.sketch_dim, args.seed)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / f"{args.out}.md").write_text(render_md(out))
    print(render_md(out))


if __name__ == "__main__":
    main()
