"""BADGE's k-means++ seeding: the lazy D^2 sampler against the eager loop it replaced.

Pools from ``benchmarks/selection_scale.py`` (clustered, L2-normalised, 384-d), a random
77-class linear head over them (its gradient embedding ``(p - e_y) ⊗ h`` is what BADGE
seeds over), 100 labeled, a batch of ``--k`` (1,000). Per pool size, on the same gradient
factors and sketch:

* ``exact``: ``||g_i - g_c||^2`` from the factors (``strategies.model_change.kmeanspp_exact``
  vs ``benchmarks.badge_reference.eager_exact``); the eager loop up to ``--eager-exact-max``
  (100k: at 1M it is 1,000 passes over ~2.2 GB of factors), the lazy one at every size;
* ``sketch``: the 256-wide Khatri-Rao sketch BADGE uses at scale (``sketch_dim: auto``),
  lazy GEMM updates vs eager FAISS passes. The sketch is built once and not timed (the
  same for both).

Time: wall and CPU seconds of the seeding alone, median over ``--repeats`` interleaved runs
(lazy, eager, lazy, eager, ...), each with its own seed; the load average before and after.
Quality, the same in expectation (both draw from the D^2 distribution): the k-means
potential of the picks (sum over rows of the squared distance to the nearest pick, on the
same distances), median over repeats. Work counters of the lazy sampler: proposals,
rejections, single-row and full updates.

    .venv/bin/python benchmarks/badge_seeding.py [--sizes 100000 1000000] [--repeats 3]

Results: ``benchmarks/results/badge_seeding.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.badge_reference import eager_exact, eager_sketch  # noqa: E402
from benchmarks.plain import cpu_model  # noqa: E402
from benchmarks.selection_scale import N_LABELED, make_pool, model_inputs  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
#: The sketch width timed here (the same 256 as badge_auto.py's default and selection_scale's sketch row).
SKETCH_DIM = 256


def potential(sq_dists, m: int, picks: np.ndarray, chunk: int = 65536) -> float:
    """Sum over rows of the squared distance to the nearest pick (k-means potential)."""
    total = 0.0
    for s in range(0, m, chunk):
        rows = np.arange(s, min(m, s + chunk))
        best = np.full(rows.size, np.inf)
        for c in range(0, picks.size, 256):
            best = np.minimum(best, np.maximum(sq_dists(rows, picks[c : c + 256]), 0).min(axis=1))
        total += float(best.sum())
    return total


def timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--exact-max", type=int, default=1_000_000, help="largest pool with exact-path rows")
    ap.add_argument("--eager-exact-max", type=int, default=100_000,
                    help="largest pool where the eager exact loop runs (above: lazy only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "badge_seeding"))
    args = ap.parse_args()
    from strategies import QueryInputs
    from strategies.model_change import (
        _first_centre,
        gradient_embedding,
        gradient_sq_norms,
        sketch_gradients,
    )
    from strategies.seeding import d2_seeding

    rows = []
    for n in args.sizes:
        emb = make_pool(n, args.seed)
        unlabeled = np.arange(N_LABELED, n, dtype=np.int64)
        probs, features, head = model_inputs(emb, unlabeled, args.seed)
        inputs = QueryInputs(unlabeled=unlabeled, labeled=np.arange(N_LABELED), probs=probs, features=features, head=head)
        a, b = gradient_embedding(inputs)  # [m, C], [m, h]
        del probs, inputs
        m = a.shape[0]
        sq_norms = gradient_sq_norms(a, b)  # [m]
        first = _first_centre(sq_norms, np.random.default_rng(args.seed))
        sk = np.ascontiguousarray(sketch_gradients(a, b, SKETCH_DIM, np.random.default_rng(args.seed)))
        sk_sq = np.einsum("ij,ij->i", sk, sk, dtype=np.float64)

        def exact_d(r, c):
            return sq_norms[r, None] + sq_norms[None, c] - 2.0 * (a[r] @ a[c].T) * (b[r] @ b[c].T)

        def sketch_d(r, c):
            if r.size == 1:
                return (((sk[c] - sk[r[0]]) ** 2).sum(axis=1, dtype=np.float64))[None, :]
            return sk_sq[r, None] + sk_sq[None, c] - 2.0 * (sk[r] @ sk[c].T)

        paths = {"sketch": (sketch_d, lambda rng: eager_sketch(sk, first, args.k, rng))}
        if n <= args.exact_max:
            paths["exact"] = (
                exact_d, (lambda rng: eager_exact(a, b, sq_norms, first, args.k, rng)) if n <= args.eager_exact_max else None
            )
        for path, (dist, eager) in paths.items():
            got = {"lazy": [], "eager": []}
            stats = []
            load0 = os.getloadavg()
            for rep in range(args.repeats):
                seed = args.seed + 100 + rep
                (picks, st), w, c = timed(lambda: d2_seeding(first, dist, m, args.k, np.random.default_rng(seed)))
                got["lazy"].append((w, c, potential(dist, m, picks)))
                stats.append(st)
                if eager is not None:
                    picks, w, c = timed(lambda: eager(np.random.default_rng(seed)))
                    got["eager"].append((w, c, potential(dist, m, picks)))
                print(f"n={n} {path} rep {rep}: lazy {got['lazy'][-1][0]:.1f} s"
                      + (f", eager {got['eager'][-1][0]:.1f} s" if got["eager"] else ""), flush=True)
            load1 = os.getloadavg()
            row = {"pool": n, "candidates": m, "k": args.k, "path": path, "repeats": args.repeats,
                   "load_before": [round(x, 2) for x in load0], "load_after": [round(x, 2) for x in load1]}
            for name, vals in got.items():
                for j, key in enumerate(("s", "cpu_s", "potential")):
                    row[f"{name}_{key}"] = round(statistics.median(v[j] for v in vals), 2) if vals else None
            row["speedup"] = round(row["eager_s"] / row["lazy_s"], 2) if row["eager_s"] else None
            row["lazy_work"] = {key: int(statistics.median(s[key] for s in stats)) for key in stats[0]}
            rows.append(row)
            print(json.dumps(row), flush=True)
        del emb, features, a, b, sk
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "cpu": cpu_model()}, indent=1) + "\n")
    lines = [
        "# BADGE seeding: lazy D^2 sampling vs the eager loop", "",
        "`benchmarks/badge_seeding.py` (protocol in its docstring): clustered 384-d pools, a random 77-class head, "
        f"100 labeled, {args.k} picks; seeding time only, median of {args.repeats} interleaved runs; {cpu_model()}, 2 cores.", "",
        "| pool | path | lazy s | eager s | speed-up | lazy CPU s | eager CPU s | potential lazy / eager | lazy: proposals / rejected / row updates / full updates | load before -> after |",
        "|---:|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        w = r["lazy_work"]
        eager_pot = "not run" if r["eager_potential"] is None else f"{r['eager_potential']:.4g}"
        lines.append(
            f"| {r['pool']:,} | {r['path']} | {r['lazy_s']} | {r['eager_s'] or 'not run'} | "
            f"{str(r['speedup']) + 'x' if r['speedup'] else '-'} | {r['lazy_cpu_s']} | "
            f"{r['eager_cpu_s'] or '-'} | {r['lazy_potential']:.4g} / {eager_pot} | "
            f"{w['proposals']} / {w['rejected']} / {w['row_updates']} / {w['full_updates']} | {r['load_before']} -> {r['load_after']} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
