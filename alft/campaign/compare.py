"""Comparing campaigns: learning curves side by side, and what they say in numbers.

Pure computations (tested by hand-computed cases in ``tests/test_compare.py``), plus reading
a campaign's curve from its store, the table and figure, and logging them to MLflow through
``alft.tracking``.

Per campaign, over one metric (``accuracy`` by default) against labels:

* **AUC**: the normalised area under the curve (``alft.evaluation.normalized_auc``, a mean of
  the metric over the label range) on the *common* label range of all compared campaigns
  (from the largest first point to the smallest last point; the curves are cut there by
  linear interpolation), so a campaign that ran longer is not credited for labels the others
  never got. When the campaigns cover the same range this is the plain normalised AUC.
* **final**: the metric of the campaign's last evaluated round.
* **labels to reach the baseline's final metric**: the first point where the curve reaches
  it, linearly interpolated between the two rounds around the crossing; None when the curve
  never reaches it. A campaign whose first round already reaches it reports that round's
  labels (it may have needed fewer: flagged ``at_first_point``).
* **saving** ``= 1 - labels needed / baseline's labels needed``, both by the same rule, so the
  baseline's own saving is exactly 0; None when the campaign never reaches the target.
  Positive: fewer labels than the baseline for the baseline's final metric.

The baseline is ``--baseline NAME``, else the one campaign whose strategy is ``random``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alft.errors import AlftError


@dataclass(frozen=True)
class Curve:
    """One campaign's metric against labels (round order), with what identifies the campaign."""

    name: str
    strategy: str
    labels: tuple[float, ...]
    values: tuple[float, ...]
    facts: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- pure numbers
def labels_to_reach(labels: Sequence[float], values: Sequence[float], target: float) -> float | None:
    """Labels at which the curve first reaches ``target``, linearly interpolated; None if never."""
    eps = 1e-12
    for i, (x, y) in enumerate(zip(labels, values, strict=True)):
        if y >= target - eps:
            if i == 0:
                return float(x)
            x0, y0 = float(labels[i - 1]), float(values[i - 1])  # y0 < target <= y
            return x0 + (target - y0) * (float(x) - x0) / (float(y) - y0)
    return None


def label_saving(needed: float | None, baseline_needed: float | None) -> float | None:
    """``1 - needed / baseline_needed``: the share of the baseline's labels not needed."""
    if needed is None or baseline_needed is None or baseline_needed <= 0:
        return None
    return 1.0 - needed / baseline_needed


def common_range(curves: Sequence[Curve]) -> tuple[float, float] | None:
    """The label range every curve covers, or None when they do not overlap."""
    drawn = [c for c in curves if c.labels]
    if not drawn:
        return None
    lo = max(c.labels[0] for c in drawn)
    hi = min(c.labels[-1] for c in drawn)
    return (float(lo), float(hi)) if lo <= hi else None


def clip_curve(
    labels: Sequence[float], values: Sequence[float], lo: float, hi: float
) -> tuple[list[float], list[float]]:
    """The curve restricted to ``[lo, hi]``, with interpolated end points."""
    x = np.asarray(labels, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if lo == hi:
        return [lo], [float(np.interp(lo, x, y))]
    inside = (x > lo) & (x < hi)
    xs = [lo, *x[inside].tolist(), hi]
    ys = [float(np.interp(lo, x, y)), *y[inside].tolist(), float(np.interp(hi, x, y))]
    return xs, ys


def auc_on_range(labels: Sequence[float], values: Sequence[float], lo: float, hi: float) -> float:
    """Normalised AUC of the curve over ``[lo, hi]`` (a range it covers)."""
    from alft.campaign.evaluation import normalized_auc

    xs, ys = clip_curve(labels, values, lo, hi)
    return normalized_auc(xs, ys)


def pick_baseline(curves: Sequence[Curve], baseline: str | None) -> Curve | None:
    """``baseline`` by name, else the one campaign whose strategy is ``random`` (None if none)."""
    if baseline is not None:
        for c in curves:
            if c.name == baseline:
                return c
        raise AlftError(f"--baseline {baseline}: not among the compared campaigns ({', '.join(c.name for c in curves)})")
    rand = [c for c in curves if c.strategy == "random"]
    if len(rand) > 1:
        raise AlftError(
            f"{len(rand)} campaigns use strategy random ({', '.join(c.name for c in rand)}); "
            "pick the baseline with --baseline NAME"
        )
    return rand[0] if rand else None


def compare_curves(curves: Sequence[Curve], metric: str = "accuracy", baseline: str | None = None) -> dict[str, Any]:
    """The comparison table: one row per campaign, plus the range, the baseline and notes."""
    if not curves:
        raise AlftError("nothing to compare: no campaign given")
    empty = [c.name for c in curves if not c.labels]
    if empty:
        raise AlftError(f"campaign {', '.join(empty)} has no evaluated round with metric '{metric}'")
    base = pick_baseline(curves, baseline)
    rng = common_range(curves)
    notes: list[str] = []
    ranges = {c.name: (c.labels[0], c.labels[-1]) for c in curves}
    differ = len(set(ranges.values())) > 1
    if rng is None:
        notes.append(
            "the campaigns' label ranges do not overlap ("
            + ", ".join(f"{n} {a:g}-{b:g}" for n, (a, b) in ranges.items())
            + "): no AUC"
        )
    elif differ:
        notes.append(
            f"AUC over the common label range {rng[0]:g}-{rng[1]:g} (the campaigns cover "
            + ", ".join(f"{n} {a:g}-{b:g}" for n, (a, b) in ranges.items())
            + ")"
        )
    target = base_needed = None
    if base is not None:
        target = base.values[-1]
        base_needed = labels_to_reach(base.labels, base.values, target)
        notes.append(
            f"baseline {base.name} (strategy {base.strategy}): final {metric} {target:.4f} at "
            f"{base.labels[-1]:g} labels, first reached at {base_needed:g}; saving = 1 - labels needed / {base_needed:g}"
        )
    else:
        notes.append("no baseline (no campaign uses strategy random; pass --baseline NAME): no label saving")
    rows = []
    for c in curves:
        row: dict[str, Any] = {
            "campaign": c.name,
            "strategy": c.strategy,
            "rounds": len(c.labels),
            "labels": c.labels[-1],
            f"final_{metric}": c.values[-1],
            "auc": None if rng is None else auc_on_range(c.labels, c.values, *rng),
            "labels_to_baseline_final": None,
            "saving_vs_baseline": None,
            **c.facts,
        }
        if target is not None:
            needed = labels_to_reach(c.labels, c.values, target)
            row["labels_to_baseline_final"] = needed
            row["saving_vs_baseline"] = label_saving(needed, base_needed)
            if needed is None:
                notes.append(f"{c.name} never reaches the baseline's final {metric} {target:.4f}: no saving")
            elif c.values[0] >= target and c is not base:
                row["at_first_point"] = True
                notes.append(f"{c.name} reaches it at its first round ({c.labels[0]:g} labels): it may need fewer")
        rows.append(row)
    return {
        "metric": metric,
        "common_range": None if rng is None else list(rng),
        "ranges": {n: list(r) for n, r in ranges.items()},
        "baseline": None
        if base is None
        else {"campaign": base.name, "strategy": base.strategy, "target": target, "labels_needed": base_needed},
        "rows": rows,
        "curves": {c.name: {"labels": list(c.labels), metric: list(c.values)} for c in curves},
        "notes": notes,
    }


# --------------------------------------------------------------------------- reading, writing
CONTROL_KEYS = ("control.accuracy", "control.strategy_error", "control.random_error")


def read_curve(store, name: str, metric: str, display: str | None = None) -> Curve:
    """The campaign's evaluated rounds that have ``metric``, from its store."""
    from alft.config import CampaignConfig

    row = store.campaign(name)
    if row is None:
        raise AlftError(f"no campaign '{name}' in the store")
    cfg = CampaignConfig.model_validate(row["config"])
    hist = store.history(name)
    pts = [(h.n_labels, h.metrics[metric]) for h in hist if metric in h.metrics]
    if not pts:
        have = sorted({k for h in hist for k in h.metrics if not k.startswith("f1/")})
        raise AlftError(
            f"campaign '{name}' has no evaluated round with metric '{metric}'"
            + (f" (it has {', '.join(have)})" if have else " (no round evaluated yet)")
        )
    facts: dict[str, Any] = {
        "seed": cfg.seed,
        "cold_start": cfg.cold_start.name,
        "stop_reason": row.get("stop_reason"),
        "mlflow_run_id": row.get("mlflow_run_id"),
    }
    if cfg.strategy.control_share:
        facts["control_share"] = cfg.strategy.control_share
        ctl = [h.metrics for h in hist if "control.accuracy" in h.metrics]
        for key in CONTROL_KEYS:
            vals = [m[key] for m in ctl if key in m]
            if vals:  # the mean over rounds of the previous model's numbers
                facts[f"mean_{key.replace('.', '_')}"] = float(np.mean(vals))
    return Curve(
        name=display or name,
        strategy=cfg.strategy.name,
        labels=tuple(float(p[0]) for p in pts),
        values=tuple(float(p[1]) for p in pts),
        facts=facts,
    )


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}"


def table_rows(comparison: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the human table (the CLI and the markdown file print the same)."""
    m = comparison["metric"]
    rng = comparison["common_range"]
    auc_head = f"AUC {rng[0]:g}-{rng[1]:g}" if rng else "AUC"
    head = ["campaign", "strategy", "rounds", "labels", f"final {m}", auc_head, "labels to baseline final", "saving"]
    control = any("mean_control_accuracy" in r for r in comparison["rows"])
    if control:
        head += ["control acc (mean)", "error strategy / random (mean)"]
    cells = []
    for r in comparison["rows"]:
        needed = r["labels_to_baseline_final"]
        saving = r["saving_vs_baseline"]
        line = [
            r["campaign"],
            r["strategy"],
            str(r["rounds"]),
            f"{r['labels']:g}",
            f"{r[f'final_{m}']:.4f}",
            "-" if r["auc"] is None else f"{r['auc']:.4f}",
            ("never" if comparison["baseline"] else "-") if needed is None else f"{needed:.1f}",
            "-" if saving is None else f"{saving:+.1%}",
        ]
        if control:
            se, re_ = r.get("mean_control_strategy_error"), r.get("mean_control_random_error")
            line += [
                _fmt(r.get("mean_control_accuracy")),
                "-" if se is None or re_ is None else f"{se:.3f} / {re_:.3f}",
            ]
        cells.append(line)
    return head, cells


def markdown(comparison: dict[str, Any]) -> str:
    head, cells = table_rows(comparison)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    lines.append("")
    lines += [f"- {n}" for n in comparison["notes"]]
    return "\n".join(lines) + "\n"


def figure(curves: Sequence[Curve], comparison: dict[str, Any], title: str | None = None):
    """All learning curves on one plot; the baseline's final metric and the common range marked."""
    from alft.campaign.evaluation import learning_curve_figure

    metric = comparison["metric"]
    names = {c.name: f"{c.name} ({c.strategy})" for c in curves}
    fig = learning_curve_figure(
        {names[c.name]: list(zip(c.labels, c.values, strict=True)) for c in curves},
        title or f"{metric} against labels",
        (metric,),
    )
    ax = fig.axes[0]
    base = comparison["baseline"]
    if base is not None:
        ax.axhline(base["target"], color="k", ls="--", lw=0.8, label=f"{base['campaign']} final")
    rng = comparison["common_range"]
    if rng is not None and list(rng) != [min(c.labels[0] for c in curves), max(c.labels[-1] for c in curves)]:
        ax.axvspan(rng[0], rng[1], color="grey", alpha=0.08, label="common range (AUC)")
    ax.legend(fontsize=8)
    return fig


def write_outputs(curves: Sequence[Curve], comparison: dict[str, Any], out: Path) -> dict[str, Path]:
    """The figure at ``out`` and the table next to it (``.json``, ``.md``)."""
    from alft.fsutil import atomic_write, atomic_write_text

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = figure(curves, comparison)
    fmt = out.suffix.lstrip(".").lower() or "png"
    atomic_write(out, lambda tmp: fig.savefig(tmp, format=fmt, dpi=110))
    import matplotlib.pyplot as plt

    plt.close(fig)
    paths = {"figure": out, "json": out.with_suffix(".json"), "markdown": out.with_suffix(".md")}
    atomic_write_text(paths["json"], json.dumps(comparison, indent=2, default=str) + "\n")
    atomic_write_text(paths["markdown"], markdown(comparison))
    return paths


def log_comparison(
    tracking_uri: str, experiment: str, artifact_location: str | None, comparison: dict[str, Any], paths: dict[str, Path]
) -> str:
    """A new ``comparison`` run in ``experiment``: the figure, the table, a metric per campaign."""
    import time

    from alft.campaign.tracking import Tracker

    tracker = Tracker(tracking_uri, experiment, artifact_location)
    names = [r["campaign"] for r in comparison["rows"]]
    base = comparison["baseline"]
    tags = {
        "alft.campaigns": ",".join(names)[:5000],
        "alft.metric": comparison["metric"],
        "alft.baseline": base["campaign"] if base else "",
        "strategies": ",".join(sorted({r["strategy"] for r in comparison["rows"]})),
    }
    run_id = tracker.comparison_run("compare: " + " vs ".join(names)[:200], tags)
    values: dict[str, float] = {}
    m = comparison["metric"]
    for r in comparison["rows"]:
        n = r["campaign"]
        values[f"final_{m}.{n}"] = r[f"final_{m}"]
        for key, val in (("auc", r["auc"]), ("saving", r["saving_vs_baseline"]), ("labels_needed", r["labels_to_baseline_final"])):
            if val is not None:
                values[f"{key}.{n}"] = val
    tracker.log_metrics(run_id, values, 0, int(time.time() * 1000))
    tracker.log_params_once(run_id, {"metric": m, "baseline": base["campaign"] if base else "none",
                                    "common_range": str(comparison["common_range"])})
    for p in paths.values():
        tracker.log_artifact(run_id, p)
    tracker.finish(run_id)
    return run_id
