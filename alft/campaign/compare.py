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

**Seeds.** Campaigns whose configs differ only in ``name``, ``seed``, ``workdir``, ``store``
and ``tracking`` are repeats of one configuration: ``compare_curves`` replaces them by their
mean curve (on the label range all of them cover, each interpolated at every label point
any of them has), drawn with a min-max band. Its row says how many seeds, the AUC and final
metric as mean ± sd over the seeds, and the saving twice: from the mean curves (the headline)
and its range over every (seed of the campaign, seed of the baseline) pair, each pair by the
rule above. A range that spans 0 is called out in the notes: the curves are not
distinguishable at these seeds, whatever the headline says.
"""

from __future__ import annotations

import hashlib
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
    #: the seeds' own curves when this is a mean over repeats (empty for one campaign)
    members: tuple[Curve, ...] = ()


#: config keys that do not change what a campaign measures: repeats differ only in these
REPEAT_KEYS = ("name", "seed", "workdir", "store", "tracking")


def repeat_key(config: dict[str, Any]) -> str:
    """Digest of a campaign config (``model_dump(mode="json")``) without ``REPEAT_KEYS``."""
    rest = {k: v for k, v in config.items() if k not in REPEAT_KEYS}
    return hashlib.blake2b(json.dumps(rest, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()


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


# --------------------------------------------------------------------------- seeds
def mean_curve(members: Sequence[Curve]) -> tuple[list[float], np.ndarray]:
    """(labels, values[seeds, points]) of ``members`` on the label range all of them cover:
    every label point any of them has there, each member linearly interpolated at it."""
    rng = common_range(members)
    if rng is None:
        raise AlftError(
            "the seeds of one configuration do not overlap in labels: "
            + ", ".join(f"{c.name} {c.labels[0]:g}-{c.labels[-1]:g}" for c in members)
        )
    xs = sorted({float(x) for c in members for x in c.labels if rng[0] <= x <= rng[1]})
    return xs, np.array([np.interp(xs, c.labels, c.values) for c in members])  # [seeds, points]


def _group_name(members: Sequence[Curve]) -> str:
    names = [c.name for c in members]
    prefix = names[0]
    for n in names[1:]:
        while not n.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix.rstrip("-_.s").rstrip("-_.") if prefix != names[0] else prefix
    return f"{prefix or names[0]} ({len(members)} seeds)"


def group_seeds(curves: Sequence[Curve]) -> list[Curve]:
    """Curves with repeats of one configuration (same ``facts["repeat_key"]``) replaced, at
    the first one's place, by their mean curve (``members``: the repeats); others as given."""
    groups: dict[str, list[Curve]] = {}
    for c in curves:
        key = c.facts.get("repeat_key")
        groups.setdefault(key if key is not None else f"\0{id(c)}", []).append(c)
    out = []
    for members in groups.values():
        if len(members) == 1:
            out.append(members[0])
            continue
        xs, ys = mean_curve(members)
        seeds = [m.facts.get("seed") for m in members]
        facts = {k: v for k, v in members[0].facts.items() if k not in ("seed", "mlflow_run_id", "stop_reason")}
        facts.update(seeds=seeds, campaigns=[m.name for m in members])
        out.append(Curve(_group_name(members), members[0].strategy, tuple(xs), tuple(ys.mean(0).tolist()),
                         facts, tuple(members)))
    return out


def _pair_savings(c: Curve, base: Curve) -> list[float | None]:
    """Saving of each seed of ``c`` against each seed of ``base`` (each pair by the one rule)."""
    out = []
    for b in base.members or (base,):
        needed_b = labels_to_reach(b.labels, b.values, b.values[-1])
        for m in c.members or (c,):
            out.append(label_saving(labels_to_reach(m.labels, m.values, b.values[-1]), needed_b))
    return out


def compare_curves(
    curves: Sequence[Curve], metric: str = "accuracy", baseline: str | None = None, seeds: bool = True
) -> dict[str, Any]:
    """The comparison table: one row per campaign (per configuration, its seeds averaged, when
    ``seeds``), plus the range, the baseline and notes."""
    if not curves:
        raise AlftError("nothing to compare: no campaign given")
    empty = [c.name for c in curves if not c.labels]
    if empty:
        raise AlftError(f"campaign {', '.join(empty)} has no evaluated round with metric '{metric}'")
    if seeds:
        curves = group_seeds(curves)
        if baseline is not None:  # the baseline may be named by any of its seeds
            baseline = next((c.name for c in curves if baseline in c.facts.get("campaigns", ())), baseline)
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
        if c.members:
            row["seeds_n"] = len(c.members)
            row[f"final_{metric}_sd"] = float(np.std([m.values[-1] for m in c.members], ddof=1))
            if rng is not None:
                row["auc_sd"] = float(np.std([auc_on_range(m.labels, m.values, *rng) for m in c.members], ddof=1))
            band = mean_curve(c.members)[1]
            row["band"] = {"min": band.min(0).tolist(), "max": band.max(0).tolist()}
        if target is not None:
            needed = labels_to_reach(c.labels, c.values, target)
            row["labels_to_baseline_final"] = needed
            row["saving_vs_baseline"] = label_saving(needed, base_needed)
            if (c.members or base.members) and c is not base:
                pairs = _pair_savings(c, base)
                got = [p for p in pairs if p is not None]
                row["saving_range"] = [min(got), max(got)] if got else None
                row["saving_pairs_unreached"] = len(pairs) - len(got)
                if got and min(got) < 0 < max(got) or (got and len(got) < len(pairs)):
                    notes.append(
                        f"{c.name}: the saving over seed pairs spans "
                        + (f"{min(got):+.0%} to {max(got):+.0%}" if got else "nothing")
                        + (f" ({len(pairs) - len(got)} of {len(pairs)} pairs never reach it)" if len(got) < len(pairs) else "")
                        + f": not distinguishable from the baseline at {len(c.members) or 1} x {len(base.members) or 1} seeds"
                    )
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
        "groups": {c.name: list(c.facts["campaigns"]) for c in curves if c.members},
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
        "repeat_key": repeat_key(cfg.model_dump(mode="json")),
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
    grouped = any(r.get("seeds_n") for r in comparison["rows"])
    if grouped:
        head.insert(2, "seeds")
        head.append("saving over seed pairs")
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
        if grouped:
            n = r.get("seeds_n")
            line.insert(2, str(n or 1))
            if n:  # mean ± sd over the seeds
                line[5] += f" ± {r[f'final_{m}_sd']:.4f}"
                if r["auc"] is not None and "auc_sd" in r:
                    line[6] += f" ± {r['auc_sd']:.4f}"
            sr = r.get("saving_range")
            line.append(
                "-" if "saving_range" not in r else "never" if sr is None
                else f"{sr[0]:+.0%} to {sr[1]:+.0%}" + (f" ({r['saving_pairs_unreached']} never)" if r["saving_pairs_unreached"] else "")
            )
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
    colour = {ln.get_label(): ln.get_color() for ln in ax.get_lines()}
    for c in curves:
        if c.members:  # the seeds' min-max around the mean line
            ys = mean_curve(c.members)[1]
            ax.fill_between(c.labels, ys.min(0), ys.max(0), color=colour.get(names[c.name]), alpha=0.15, lw=0)
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
        for key, val in (("auc", r["auc"]), ("saving", r["saving_vs_baseline"]), ("labels_needed", r["labels_to_baseline_final"]),
                         ("auc_sd", r.get("auc_sd")), (f"final_{m}_sd", r.get(f"final_{m}_sd"))):
            if val is not None:
                values[f"{key}.{n}"] = val
    tracker.log_metrics(run_id, values, 0, int(time.time() * 1000))
    tracker.log_params_once(run_id, {"metric": m, "baseline": base["campaign"] if base else "none",
                                    "common_range": str(comparison["common_range"])})
    for p in paths.values():
        tracker.log_artifact(run_id, p)
    tracker.finish(run_id)
    return run_id
