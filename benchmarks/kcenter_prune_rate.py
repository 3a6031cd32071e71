"""Would cluster-bound pruning beat the lazy k-center? The share of work the triangle inequality saves.

Issue 17 named a second route to exact k-center at scale: cut the candidates into FAISS k-means
cells, keep each cell's radius ``r_c`` (largest distance of a member to its centroid) and its
members' largest distance to their nearest centre ``D_c``; after a pick ``s``, a whole cell is
skipped when ``|s - mu_c| - r_c >= D_c`` (no member can get closer to ``s`` than to its current
centre), and every other member is brought up to date. Its cost per pick is the rows it does not
skip. This script measures that share on the pools of ``selection_scale.py`` (clustered unit
384-d vectors, 100 labeled), for ``--cells`` cells (k-means on a sample, 10 iterations) over the
first ``--picks`` picks, exactly as the rule above (no approximation: a skipped row's distance
could not have changed).

The lazy traversal (``strategies.coreset._greedy``) refreshes only the stale candidates that
could be the next pick: at 300k, 1,000 picks refreshed 262k rows in all, under one pass. A
pruning scheme that updates most rows at every pick is an eager pass with extra bookkeeping.

    .venv/bin/python benchmarks/kcenter_prune_rate.py [--n 100000] [--cells 256 1024] [--picks 200]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.plain import cpu_model  # noqa: E402
from benchmarks.selection_scale import N_LABELED, labeled_split, make_pool  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def prune_rate(x: np.ndarray, d2: np.ndarray, cells: int, picks: int, seed: int) -> dict:
    """Rows and cells the triangle-inequality rule skips per pick; ``d2``: float32[m] squared
    distance of each candidate (row position) to its nearest labeled example (updated here)."""
    import faiss

    m, d = x.shape
    rng = np.random.default_rng(seed)
    km = faiss.Kmeans(d, cells, niter=10, seed=seed + 1, max_points_per_centroid=200)
    km.train(x[rng.choice(m, min(m, 200 * cells), replace=False)])
    to_c, lab = km.index.search(x, 1)  # [m, 1] each
    lab = lab[:, 0]
    radius = np.zeros(cells)
    np.maximum.at(radius, lab, np.sqrt(np.maximum(to_c[:, 0], 0.0)))
    sizes = np.bincount(lab, minlength=cells)
    skipped_rows = skipped_cells = 0
    for _ in range(picks):
        cmax = np.full(cells, -np.inf)
        np.maximum.at(cmax, lab, d2)  # [cells] D_c^2
        s = int(np.argmax(d2))
        sv = x[s]
        to_s = np.sqrt(((km.centroids - sv) ** 2).sum(axis=1))  # [cells] |s - mu_c|
        skip = to_s - radius >= np.sqrt(np.maximum(cmax, 0.0))  # [cells]
        skipped_cells += int(skip.sum())
        skipped_rows += int(sizes[skip].sum())
        upd = ~skip[lab]  # [m]
        d2[upd] = np.minimum(d2[upd], ((x[upd] - sv) ** 2).sum(axis=1))
        d2[s] = -np.inf
    return {
        "cells": cells, "picks": picks, "radius_median": float(np.median(radius)), "radius_max": float(radius.max()),
        "rows_skipped_share": skipped_rows / (picks * m), "cells_skipped_share": skipped_cells / (picks * cells),
        "rows_updated_per_pick": (picks * m - skipped_rows) / picks,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--cells", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--picks", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import faiss

    emb = make_pool(args.n, args.seed)
    labeled, unlabeled = labeled_split(args.n, args.seed)
    x = np.ascontiguousarray(emb[unlabeled])  # [m, d] row positions
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(emb[labeled]))
    d2_0 = np.maximum(index.search(x, 1)[0][:, 0], 0.0)  # [m]
    rows = []
    for c in args.cells:
        rows.append(prune_rate(x, d2_0.copy(), c, args.picks, args.seed))
        r = rows[-1]
        print(f"{c} cells: {r['rows_skipped_share']:.1%} of rows skipped per pick "
              f"({r['rows_updated_per_pick']:,.0f} updated), cell radius median {r['radius_median']:.3f}", flush=True)
    out = {"benchmark": "kcenter_prune_rate", "n_pool": args.n, "n_candidates": int(x.shape[0]),
           "covering_radius_start": float(np.sqrt(d2_0.max())), "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
           "rows": rows}
    (RESULTS / "kcenter_prune_rate.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [
        "# Cluster-bound pruning for exact k-center: what the triangle inequality skips",
        "",
        f"`benchmarks/kcenter_prune_rate.py`: {args.n:,}-row clustered unit 384-d pool, {N_LABELED} labeled, the "
        f"first {args.picks} picks; a cell is skipped when |s - mu_c| - r_c >= D_c (covering radius at the start "
        f"{out['covering_radius_start']:.3f}).",
        "",
        "| cells | cell radius median / max | rows skipped per pick | cells skipped | rows updated per pick |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['cells']:,} | {r['radius_median']:.3f} / {r['radius_max']:.3f} | "
                     f"{r['rows_skipped_share']:.1%} | {r['cells_skipped_share']:.1%} | {r['rows_updated_per_pick']:,.0f} |")
    lines += [
        "",
        "In 384 dimensions the cells are wide next to the distances being compared (a cell's radius is",
        "about half the covering radius), so the bound rarely clears a cell: most rows are brought up to",
        "date at every pick, an eager pass plus bookkeeping. The lazy traversal refreshes a small",
        "fraction of one pass per pick (300k candidates: 262k refreshes over 1,000 picks), so it stays",
        "the method; cluster-bound pruning was not built.",
    ]
    (RESULTS / "kcenter_prune_rate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
