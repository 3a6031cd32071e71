"""Selection at scale: time and peak extra memory of the diversity strategies on big pools.

Pools of 100,000 and 1,000,000 L2-normalised 384-d float32 vectors (the width of
all-MiniLM-L6-v2), clustered: 1,000 Gaussian centres with Zipf-like sizes and log-normal
spreads, generated in chunks from ``np.random.default_rng(seed)`` so that the pool itself
(1.5 GB at 1M) is the main memory. 100 pool ids are labeled; each strategy selects 1,000.

Measured per case, in this process, one case after the other:

* time: wall seconds of ``Strategy.query`` (score + select), median over repeats (3 at
  100k, 1 at 1M unless ``--repeats-1m``);
* peak extra memory: the kernel's peak resident set (``VmHWM``), reset through
  ``/proc/self/clear_refs`` just before the call, minus the resident set just before it.
  Unlike tracemalloc this sees FAISS's and BLAS's C++ allocations; it is exact for the
  process as a whole (no sampling), so it counts any other thread's allocations too (there
  are none here). The inputs (``QueryInputs``, including probabilities, features) are built
  before the reset and are not counted.
* quality: the covering radius (largest Euclidean distance from a candidate to its nearest
  labeled-or-selected example; lower is better spread), computed exactly with
  ``strategies.coreset.covering_radius``, and its ratio to exact k-center's on the same pool.

badge and two_stage are included when registered; they get probabilities from a random
linear head over the vectors (C=77 classes, softmax), ``features`` = the candidates'
vectors and ``head`` = that layer. A method whose 100k median, scaled linearly, would pass
``--max-projected-s`` at 1M is skipped there and recorded as such.

The machine this was written on is a shared 2-core VM: other processes come and go, so
single timings swing; compare medians and read ``loadavg`` in the results.

    .venv/bin/python benchmarks/selection_scale.py [--sizes 100000 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
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

RESULTS = ROOT / "benchmarks" / "results" / "selection_scale.json"
DIM = 384
N_CENTRES = 1000
N_LABELED = 100
K = 1000
N_CLASSES = 77
GEN_CHUNK = 100_000




def blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [
        {k: v for k, v in p.items() if k in ("user_api", "internal_api", "num_threads", "version")}
        for p in threadpool_info()
    ]


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> int:
    """Reset the kernel's peak-RSS counter to the current RSS; returns the current RSS (KiB)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return _status_kb("VmRSS")


def measured(fn) -> tuple[object, dict]:
    """``fn()``'s result and its ``wall_s``, ``cpu_s`` (this process, all threads) and
    ``peak_extra_mib`` (kernel peak RSS during the call minus RSS before it)."""
    before = reset_peak()
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return out, {"wall_s": wall, "cpu_s": cpu, "peak_extra_mib": (_status_kb("VmHWM") - before) / 1024}


def fixed_malloc() -> None:
    """Re-run this script with glibc's mmap threshold fixed (once), so peaks are exact.

    glibc raises its mmap threshold after big frees and then serves big blocks from a heap
    that stays resident: a later case would reuse those pages unseen by the peak. A fixed
    threshold keeps every block over 64 KiB an mmap, returned on free. It costs
    allocation-heavy code time (see the notes of the selection table).
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def labeled_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labeled, unlabeled) sorted pool ids: ``N_LABELED`` drawn with ``default_rng(seed + 2)``."""
    labeled = np.sort(np.random.default_rng(seed + 2).choice(n, N_LABELED, replace=False))
    return labeled, np.setdiff1d(np.arange(n), labeled)


def make_pool(n: int, seed: int) -> np.ndarray:
    """float32[n, DIM], unit rows, around N_CENTRES centres of Zipf-like sizes and log-normal
    spreads; built GEN_CHUNK rows at a time so the output is the only big allocation."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N_CENTRES, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, N_CENTRES + 1) ** 0.8  # Zipf-like cluster sizes
    weights /= weights.sum()
    # per-coordinate sd: the noise norm is ~ sd * sqrt(DIM), so 0.01..0.08 gives clusters
    # from tight (cos ~0.97 to the centre) to loose (cos ~0.6)
    spread = np.exp(rng.normal(np.log(0.03), 0.5, size=N_CENTRES)).clip(0.01, 0.08).astype(np.float32)
    out = np.empty((n, DIM), dtype=np.float32)
    for s in range(0, n, GEN_CHUNK):
        e = min(n, s + GEN_CHUNK)
        which = rng.choice(N_CENTRES, size=e - s, p=weights)  # [b]
        x = rng.standard_normal((e - s, DIM), dtype=np.float32)  # [b, d]
        x *= spread[which, None]
        x += centres[which]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s:e] = x
    return out


def model_inputs(emb: np.ndarray, unlabeled: np.ndarray, seed: int):
    """probs float64[m, C], features float32[m, DIM] and the LinearHead producing them."""
    from strategies import LinearHead

    rng = np.random.default_rng(seed + 1)
    w = rng.normal(scale=3.0, size=(N_CLASSES, DIM))  # logits' sd ~3 on unit vectors
    b = rng.normal(scale=0.5, size=N_CLASSES)
    head = LinearHead(weight=w, bias=b, classes=np.arange(N_CLASSES))
    features = emb[unlabeled]  # [m, d] float32 copy
    probs = np.empty((unlabeled.size, N_CLASSES), dtype=np.float64)
    for s in range(0, unlabeled.size, GEN_CHUNK):
        z = features[s : s + GEN_CHUNK].astype(np.float64) @ w.T + b  # [b, C]
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        probs[s : s + GEN_CHUNK] = z
    return probs, features, head


CASES = [
    # (label, registry name, options)
    ("kcenter", "kcenter", {}),
    ("kcenter_approx", "kcenter_approx", {}),
    ("kcenter_approx(sample=10k)", "kcenter_approx", {"sample": 10_000}),
    ("kmeans", "kmeans", {}),
    (
        "kmeans(farthest_from_labeled, weight_by_size)",
        "kmeans",
        {"pick": "farthest_from_labeled", "weight_by_size": True},
    ),
    ("badge", "badge", {}),
    ("badge(sketch_dim=256)", "badge", {"sketch_dim": 256}),
    ("two_stage", "two_stage", {}),
]
NEEDS_MODEL = {"badge", "two_stage"}
#: The peer: small-text's greedy coreset (``small_text.query_strategies.coresets.greedy_coreset``,
#: what its ``GreedyCoreset`` calls), Euclidean on the unit vectors. It recomputes the distances
#: of every candidate to every centre for each pick, so it is run for ``PEER_PROBE`` picks only
#: and its time for ``K`` picks projected (see ``peer_case``).
PEER_LABEL = "small-text GreedyCoreset"
PEER_PROBE = (5, 10)


def _peer_work(n: int) -> int:
    """Candidate-to-centre distance rows computed by ``n`` greedy picks (pick j: labeled + j)."""
    return n * N_LABELED + n * (n - 1) // 2


def peer_case(plain, kcenter_ids: np.ndarray | None, log) -> dict:
    """small-text's greedy coreset, time-capped: ``PEER_PROBE`` picks timed, ``K`` projected.

    Its time per pick grows with the centres it compares against (labeled + picked so far), so
    the projection scales the longer probe's time by ``_peer_work(K) / _peer_work(probe)``; the
    shorter probe checks that model (``model_check``: its predicted over measured time).
    ``same_first_picks``: how many of its picks are alft kcenter's first picks, in order.
    """
    try:
        from small_text.query_strategies.coresets import greedy_coreset
    except ImportError:
        return {"case": PEER_LABEL, "skipped": "small-text is not installed (pip install small-text)"}
    import small_text

    row: dict = {"case": PEER_LABEL, "strategy": "small_text.greedy_coreset", "version": small_text.__version__,
                 "options": {"distance_metric": "euclidean", "normalized": True}}
    times = {}
    picks = None
    for n in PEER_PROBE:
        gc.collect()
        t = time.perf_counter()
        out = greedy_coreset(plain.embeddings, plain.unlabeled, plain.labeled, n, distance_metric="euclidean",
                             normalized=True)
        times[n] = time.perf_counter() - t
        picks = plain.unlabeled[np.asarray(out, dtype=np.int64)]  # its positions -> pool ids
        log(f"  {PEER_LABEL}: {n} picks in {times[n]:.1f}s")
    lo, hi = PEER_PROBE
    projected = times[hi] * _peer_work(K) / _peer_work(hi)
    same = 0
    if kcenter_ids is not None:
        for a, b in zip(picks.tolist(), kcenter_ids[:hi].tolist()):
            if a != b:
                break
            same += 1
    row.update(
        probe_s={str(n): t for n, t in times.items()},
        projected_s=projected,
        model_check=(times[hi] * _peer_work(lo) / _peer_work(hi)) / times[lo],
        same_first_picks=same,
        probe_picks=hi,
    )
    log(f"  {PEER_LABEL}: ~{projected:.0f}s projected for {K} picks; first {same}/{hi} picks as kcenter's")
    return row


def run_size(
    n: int, repeats: int, seed: int, skip: dict[str, str], log, cases: list[str] | None = None, peer: bool = False,
) -> dict:
    from strategies import QueryInputs, available, get_strategy
    from strategies.coreset import covering_radius

    registered = {s.name for s in available()}
    t0 = time.perf_counter()
    emb = make_pool(n, seed)
    gen_s = time.perf_counter() - t0
    labeled, unlabeled = labeled_split(n, seed)
    log(f"n={n}: pool generated in {gen_s:.1f}s ({emb.nbytes / 2**30:.2f} GiB)")
    plain = QueryInputs(unlabeled=unlabeled, labeled=labeled, embeddings=emb)
    full = None
    results: dict = {"n_pool": n, "n_candidates": int(unlabeled.size), "generate_s": gen_s, "cases": []}
    exact_radius = None
    kcenter_ids = None
    for label, name, options in CASES:
        if cases is not None and label not in cases:
            continue
        row: dict = {"case": label, "strategy": name, "options": options}
        results["cases"].append(row)
        if name not in registered:
            row["skipped"] = "not registered"
            log(f"  {label}: not registered")
            continue
        if label in skip:
            row["skipped"] = skip[label]
            log(f"  {label}: skipped ({skip[label]})")
            continue
        if name in NEEDS_MODEL and full is None:
            probs, features, head = model_inputs(emb, unlabeled, seed)
            full = QueryInputs(
                unlabeled=unlabeled, labeled=labeled, embeddings=emb, probs=probs, features=features, head=head
            )
            del probs, features
        inputs = full if name in NEEDS_MODEL else plain
        strategy = get_strategy(name, **options)
        times, peaks, query = [], [], None
        for r in range(repeats):
            gc.collect()
            base = reset_peak()
            load = os.getloadavg()
            t = time.perf_counter()
            query = strategy.query(inputs, K, np.random.default_rng(seed + 10 + r))
            times.append(time.perf_counter() - t)
            peaks.append((_status_kb("VmHWM") - base) / 1024)
            log(f"  {label} [{r}]: {times[-1]:.2f}s, +{peaks[-1]:.0f} MiB (load {load[0]:.2f})")
        rows = np.searchsorted(inputs.unlabeled, query.pool_ids)  # unlabeled is sorted here
        assert (inputs.unlabeled[rows] == query.pool_ids).all()
        t = time.perf_counter()
        radius = covering_radius(plain, rows)
        row.update(
            times_s=times,
            median_s=statistics.median(times),
            peak_extra_mib=peaks,
            median_peak_extra_mib=statistics.median(peaks),
            covering_radius=radius,
            radius_check_s=time.perf_counter() - t,
            info={k: v for k, v in query.info.items() if isinstance(v, (int, float, str, bool, type(None)))},
        )
        if label == "kcenter":
            exact_radius = radius
            kcenter_ids = np.asarray(query.pool_ids)
        if exact_radius:
            row["radius_vs_exact_kcenter"] = radius / exact_radius
        log(f"  {label}: median {row['median_s']:.2f}s, radius {radius:.4f}")
    if peer:
        results["cases"].append(peer_case(plain, kcenter_ids, log))
    del plain, full, emb
    gc.collect()
    return results


def write_markdown(report: dict, path: Path) -> None:
    m = report["machine"]
    lines = [
        "# Selection at scale",
        "",
        f"Clustered pools of L2-normalised {DIM}-d float32 vectors ({N_CENTRES} Gaussian centres, "
        f"Zipf-like sizes, log-normal spreads), {N_LABELED} labeled, batch of {K}. "
        "Time: median wall seconds of `Strategy.query` "
        f"({report['repeats']} repeats at 100k, {report['repeats_1m']} at 1M). "
        "Peak extra memory: kernel peak RSS (VmHWM, reset via /proc/self/clear_refs) minus RSS "
        "before the call, so FAISS/BLAS allocations count; inputs are built beforehand and not "
        "counted. Radius: covering radius of the batch (Euclidean, exact), and its ratio to exact "
        "kcenter's on the same pool (lower is better spread).",
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} cores, {m['mem_total_gib']:.0f} GiB; "
        f"python {m['python']}, numpy {m['numpy']}, faiss {m['faiss']}. Shared VM: load average "
        f"{report['loadavg_start'][0]:.2f} at the start, {report['loadavg_end'][0]:.2f} at the end "
        + ("(another job was running: treat timings as upper bounds and compare medians)."
           if report["loadavg_start"][0] > 1.5 else "(nothing else running; the load is this job's own threads)."),
        "",
        "| pool | method | time (s) | peak extra (MiB) | covering radius | vs exact kcenter |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for size in report["sizes"]:
        n = f"{size['n_pool']:,}"
        for c in size["cases"]:
            if "projected_s" in c:
                lo, hi = PEER_PROBE
                lines.append(
                    f"| {n} | {c['case']} {c['version']} | ~{c['projected_s']:,.0f} projected ({hi} picks took "
                    f"{c['probe_s'][str(hi)]:.1f} s) | | | |"
                )
                continue
            if "skipped" in c:
                lines.append(f"| {n} | {c['case']} | skipped: {c['skipped']} | | | |")
                continue
            ratio = c.get("radius_vs_exact_kcenter")
            lines.append(
                f"| {n} | {c['case']} | {c['median_s']:.1f} | {c['median_peak_extra_mib']:.0f} | "
                f"{c['covering_radius']:.4f} | {'' if ratio is None else f'{ratio:.3f}'} |"
            )
    lines += ["", *notes(report)]
    path.write_text("\n".join(lines) + "\n")


def notes(report: dict) -> list[str]:
    """What the table does not say by itself, derived from the results."""
    out = ["Notes:", ""]
    by = {(sz["n_pool"], c["case"]): c for sz in report["sizes"] for c in sz["cases"]}
    for sz in report["sizes"]:
        c = by.get((sz["n_pool"], "kcenter_approx"), {})
        if c.get("info", {}).get("sampled") == sz["n_candidates"]:
            out.append(
                f"- At {sz['n_pool']:,}, kcenter_approx's default sample (100,000) covers the "
                "whole pool, so it runs exact k-center (same batch, same time)."
            )
    big = max(report["sizes"], key=lambda sz: sz["n_pool"])
    kc = by.get((big["n_pool"], "kcenter"), {})
    if "median_s" in kc:
        gb = big["n_candidates"] * report["dim"] * 4 / 1e9
        out.append(
            f"- kcenter's traversal is lazy (`strategies/coreset._greedy`): at {big['n_pool']:,} its "
            f"{kc['median_s']:.1f} s are {kc['median_s'] / report['k'] * 1000:.0f} ms per pick, where one "
            f"pass over the {gb:.1f} GB of candidates per pick (the eager loop) is bound by memory "
            "bandwidth; its extra memory is O(m) (distance vector, one block)."
        )
    bd = by.get((big["n_pool"], "badge"), {})
    if bd.get("info", {}).get("badge_path") == "exact":
        out.append(
            "- badge's `sketch_dim: auto` is the exact path; `sketch_dim=256` runs a Khatri-Rao sketch of "
            "that width. Both seed with lazy D^2 draws (`strategies/seeding.py`); most of their time is the "
            "gradient embedding (and the sketch's build). Interleaved: benchmarks/results/badge_auto.md."
        )
    peer = by.get((100_000, PEER_LABEL), {})
    if "projected_s" in peer:
        kc = by.get((100_000, "kcenter"), {})
        lo, hi = PEER_PROBE
        out.append(
            f"- {PEER_LABEL} (small-text {peer['version']}, `greedy_coreset`, Euclidean): it recomputes every "
            f"candidate's distances to every centre for each pick, so it was run for {lo} and {hi} picks "
            f"({peer['probe_s'][str(lo)]:.1f} and {peer['probe_s'][str(hi)]:.1f} s) and its time for {report['k']:,} "
            f"projected from the work per pick (labeled + picked centres; the {lo}-pick run is predicted within "
            f"{abs(peer['model_check'] - 1) * 100:.0f} %): ~{peer['projected_s']:,.0f} s, "
            + (f"{peer['projected_s'] / kc['median_s']:,.0f}x alft's exact kcenter. " if "median_s" in kc else "")
            + f"Its first {peer['same_first_picks']} of {hi} picks are kcenter's, in order: its loop indexes the "
            "vectors with positions into `indices_unlabeled` when it adds a pick to the centres, so it parts from "
            "greedy k-center when labeled rows sit among the unlabeled ones; with the labeled rows last its picks "
            "are kcenter's (tests/strategies/test_peer_coreset.py)."
        )
    out += [
        "- Times are taken with glibc's mmap threshold fixed at 64 KiB (`MALLOC_MMAP_THRESHOLD_`, so the "
        "peaks are exact), which makes allocation-heavy methods slower than in a campaign: exact kcenter at "
        "1M took 13.1-16.1 s that way and 8.8-9.1 s with glibc's defaults on the same pool (2026-12-07; "
        "benchmarks/kcenter_scale.py, default malloc: 9.4 s median of 3).",
        "- kmeans' extra memory is mostly its training sample (max_points_per_centroid x "
        "n_clusters = 256,000 rows at 1M) and FAISS's k-means buffers.",
        "- Not counted anywhere above: building `QueryInputs`, whose validation "
        "(`np.isfinite(embeddings[unlabeled])`) briefly copies the candidates' embeddings "
        "(about 1.9 GB at 1M with the boolean mask).",
        "- badge and two_stage come from other modules and get their probabilities from a random "
        f"linear head ({N_CLASSES} classes); their rows are here for scale, not for tuning.",
        f"- Load average {report['loadavg_start'][0]:.1f} at the start and "
        f"{report['loadavg_end'][0]:.1f} at the end on {report['machine']['cpu_count']} cores: "
        + ("other jobs shared the CPU, so single timings are noisy upper bounds."
           if report["loadavg_start"][0] > 1.5 else "no other job ran; single timings (1M) still swing on a shared VM."),
    ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3, help="repeats below 1M")
    ap.add_argument("--repeats-1m", type=int, default=1, help="repeats at 1M and above")
    ap.add_argument("--max-projected-s", type=float, default=900.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--cases", nargs="+", choices=[c[0] for c in CASES], help="only these cases (default: all)")
    ap.add_argument("--peer-max", type=int, default=100_000,
                    help=f"largest pool with the {PEER_LABEL} row (time-capped; 0: none)")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json")
    args = ap.parse_args()
    if args.markdown_only:
        write_markdown(json.loads(args.out.read_text()), args.out.with_suffix(".md"))
        print(args.out.with_suffix(".md").read_text())
        return

    fixed_malloc()

    import faiss

    def log(msg: str) -> None:
        print(msg, flush=True)

    report: dict = {
        "benchmark": "selection_scale",
        "dim": DIM,
        "n_centres": N_CENTRES,
        "n_labeled": N_LABELED,
        "k": K,
        "seed": args.seed,
        "repeats": args.repeats,
        "repeats_1m": args.repeats_1m,
        "memory_method": "VmHWM after the call minus VmRSS before it, peak reset via "
        "/proc/self/clear_refs; glibc MALLOC_MMAP_THRESHOLD_=65536 so freed blocks leave the RSS",
        "machine": {
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "mem_total_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "faiss": faiss.__version__,
            "faiss_omp_threads": faiss.omp_get_max_threads(),
            "blas": blas_info(),
            "platform": platform.platform(),
        },
        "loadavg_start": list(os.getloadavg()),
        "sizes": [],
    }
    medians: dict[str, tuple[int, float]] = {}
    for n in sorted(args.sizes):
        skip = {}
        for label, (n0, s) in medians.items():
            projected = s * n / n0
            if projected > args.max_projected_s:
                skip[label] = f"{s:.0f}s at {n0:,}, ~{projected:.0f}s projected"
        reps = args.repeats_1m if n >= 1_000_000 else args.repeats
        size = run_size(n, reps, args.seed, skip, log, args.cases, peer=n <= args.peer_max)
        report["sizes"].append(size)
        for c in size["cases"]:
            if "median_s" in c:
                medians[c["case"]] = (n, c["median_s"])
        report["loadavg_end"] = list(os.getloadavg())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # after each size: partial results survive
        write_markdown(report, args.out.with_suffix(".md"))
    log(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
