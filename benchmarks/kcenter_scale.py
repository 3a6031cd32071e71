"""Exact k-center at scale: the lazy traversal against the eager one it replaced.

Pools of ``--sizes`` (100,000 and 1,000,000) clustered, L2-normalised 384-d float32 vectors
(``selection_scale.make_pool``), 100 pool ids labeled with ``default_rng(seed)``, a batch of
1,000. Methods, one process, interleaved per repeat:

* ``lazy``: ``strategies.coreset.kcenter_select`` (alft today);
* ``eager``: ``kcenter_reference.eager_kcenter``, the traversal alft shipped before (one
  pass over every candidate per pick, the same FAISS kernel), the reference for time and
  picks. At 1M it runs ``--eager-repeats-1m`` times (default 1: ~2 minutes each).

Per run: wall and CPU seconds of the call, peak extra resident memory (VmHWM reset through
``/proc/self/clear_refs`` just before, minus VmRSS then) and its ratio to the pool matrix,
the covering radius, whether the picks equal the eager ones, and the 1-minute load average.
Reported: medians per (size, method) and ``speedup`` = eager median / lazy median (CPU and
wall) from the same run.

    .venv/bin/python benchmarks/kcenter_scale.py [--sizes 100000 1000000] [--repeats 3]

Results: ``benchmarks/results/kcenter_scale.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.kcenter_reference import eager_kcenter  # noqa: E402
from benchmarks.plain import cpu_model  # noqa: E402
from benchmarks.selection_scale import make_pool, measured  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "kcenter_scale"
K = 1000
N_LABELED = 100


def run(method: str, emb: np.ndarray, unlabeled: np.ndarray, labeled: np.ndarray) -> tuple[dict, list[int]]:
    from strategies import QueryInputs
    from strategies.coreset import covering_radius, kcenter_select

    inputs = QueryInputs(unlabeled=unlabeled, labeled=labeled, embeddings=emb)
    if method == "lazy":
        picks, m = measured(lambda: unlabeled[kcenter_select(None, inputs, K, np.random.default_rng(0)).rows].tolist())
    else:
        picks, m = measured(lambda: eager_kcenter(emb, unlabeled, labeled, K))
    cpu, wall, peak = m["cpu_s"], m["wall_s"], m["peak_extra_mib"] * 1024  # peak in KiB as before
    pos = {int(p): i for i, p in enumerate(unlabeled.tolist())}
    radius = covering_radius(inputs, np.array([pos[p] for p in picks]))
    row = {
        "method": method, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
        "peak_extra_mib": round(peak / 1024, 1),
        "peak_vs_matrix": round(peak * 1024 / emb.nbytes, 3),
        "covering_radius": round(radius, 5), "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    return row, picks


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--eager-repeats-1m", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    report: dict = {
        "machine": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
        "numpy": np.__version__, "k": K, "labeled": N_LABELED, "loadavg_start": os.getloadavg()[0],
        "sizes": [],
    }
    for n in args.sizes:
        emb = make_pool(n, args.seed)
        rng = np.random.default_rng(args.seed)
        labeled = rng.choice(n, N_LABELED, replace=False)
        unlabeled = rng.permutation(np.setdiff1d(np.arange(n), labeled))
        runs: list[dict] = []
        eager_picks = None
        lazy_picks: list[list[int]] = []
        for rep in range(args.repeats):
            for method in ("lazy", "eager"):
                if method == "eager" and n >= 1_000_000 and rep >= args.eager_repeats_1m:
                    continue
                row, picks = run(method, emb, unlabeled, labeled)
                row["repeat"] = rep
                if method == "eager":
                    eager_picks = picks
                else:
                    lazy_picks.append(picks)
                runs.append(row)
                print(n, json.dumps(row), flush=True)
        med = {
            m: {f: statistics.median(r[f] for r in runs if r["method"] == m)
                for f in ("cpu_s", "wall_s", "peak_extra_mib", "peak_vs_matrix", "covering_radius")}
            for m in ("lazy", "eager")
        }
        report["sizes"].append({
            "n": n, "runs": runs, "median": med,
            "speedup_cpu": round(med["eager"]["cpu_s"] / med["lazy"]["cpu_s"], 2),
            "speedup_wall": round(med["eager"]["wall_s"] / med["lazy"]["wall_s"], 2),
            "identical_picks": all(p == eager_picks for p in lazy_picks),
        })
        del emb
    report["loadavg_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    write_markdown(report, args.out.with_suffix(".md"))
    return report


def write_markdown(report: dict, path: Path) -> None:
    lines = [
        "# Exact k-center at scale: lazy against eager",
        "",
        f"{report['k']} picks, {report['labeled']} labeled, clustered unit 384-d float32 pools; "
        f"medians over repeats, interleaved in one process. Machine: {report['machine']}, "
        f"{report['cores']} cores; load average {report['loadavg_start']:.2f} at the start, "
        f"{report['loadavg_end']:.2f} at the end.",
        "",
        "| pool | method | runs | wall s | CPU s | peak extra MiB | x matrix | covering radius | speed-up (CPU / wall) | same picks |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for s in report["sizes"]:
        for m in ("eager", "lazy"):
            med = s["median"][m]
            runs = sum(r["method"] == m for r in s["runs"])
            extra = f"{s['speedup_cpu']}x / {s['speedup_wall']}x" if m == "lazy" else ""
            same = ("yes" if s["identical_picks"] else "NO") if m == "lazy" else "reference"
            lines.append(
                f"| {s['n']:,} | {m} | {runs} | {med['wall_s']:.1f} | {med['cpu_s']:.1f} | "
                f"{med['peak_extra_mib']:.0f} | {med['peak_vs_matrix']:.2f} | {med['covering_radius']:.4f} | {extra} | {same} |"
            )
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
