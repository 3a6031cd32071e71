"""What the adaptive strategies chose, round by round: the bandit's arm and the schedule's phase.

Reads the learning-curve runs that recorded them (``learning_curve.py`` keeps each round's
``arm``, ``phase`` and ``class_coverage``) and draws, per dataset and seed, one row of
markers per round coloured by the arm taken, with the schedule's class coverage beside it.
Writes ``benchmarks/results/adaptive_behaviour.{png,md,json}``.

    .venv/bin/python benchmarks/learning_curve.py --dataset banking77 --strategies bandit --variant bandit
    .venv/bin/python benchmarks/learning_curve.py --dataset banking77 --strategies schedule --variant schedule_coverage
    (the same for sms_spam), then
    .venv/bin/python benchmarks/adaptive_behaviour.py
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.plain import ROOT  # noqa: E402

RUNS = {"bandit": "bandit", "schedule": "schedule_coverage"}


def load(results: Path, dataset: str, strategy: str) -> dict[str, list[dict]] | None:
    path = results / f"learning_curve_{dataset}_{RUNS[strategy]}.json"
    if not path.exists():
        return None
    curves = json.loads(path.read_text())["curves"].get(strategy)
    if not curves or any("arm" not in p for c in curves.values() for p in c):
        raise SystemExit(f"{path}: no per-round arm recorded; re-run learning_curve.py")
    return curves


def summary(curves: dict[str, list[dict]]) -> dict:
    """Per seed: the arm of every round after round 0, the switch point, and the arm shares
    over the first and last 10 rounds."""
    out = {}
    for seed, curve in curves.items():
        rounds = curve[1:]  # round 0 is the cold start, not the strategy
        arms = [p["arm"] for p in rounds]
        late = next((p["labels"] for p in rounds if p.get("phase") == "late"), None)
        out[seed] = {
            "arms": arms,
            "first_late_labels": late,
            "coverage": [p.get("class_coverage") for p in curve],
            "share_first_10": dict(Counter(arms[:10])),
            "share_last_10": dict(Counter(arms[-10:])),
        }
    return out


def plot(data: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(d, s) for d in data for s in data[d]]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 1.6 + 1.1 * len(panels)), squeeze=False)
    palette = plt.get_cmap("tab10")
    colours: dict[str, tuple] = {}
    for ax, (dataset, strategy) in zip(axes[:, 0], panels, strict=True):
        curves = data[dataset][strategy]["curves"]
        for row, (seed, curve) in enumerate(curves.items()):
            for p in curve[1:]:
                arm = p["arm"]
                colours.setdefault(arm, palette(len(colours) % 10))
                ax.scatter(p["labels"], row, color=colours[arm], marker="s", s=60)
            if strategy == "schedule":
                cov = [(p["labels"], p["class_coverage"]) for p in curve if p.get("class_coverage") is not None]
                for x, c in cov:
                    ax.annotate(f"{c:.2f}", (x, row + 0.28), fontsize=6, ha="center")
        ax.set_yticks(range(len(curves)), [f"seed {s}" for s in curves])
        ax.set_ylim(-0.6, len(curves) - 0.2)
        ax.set_title(f"{dataset}: {strategy}" + (" (numbers: class coverage after the round)" if strategy == "schedule" else ""), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("labels (the round's batch was chosen at this count minus one batch)")
    handles = [plt.Line2D([], [], marker="s", ls="", color=c, label=a) for a, c in colours.items()]
    fig.legend(handles=handles, loc="upper right", fontsize=8, ncol=len(handles))
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(out, dpi=110)


def markdown(data: dict) -> str:
    lines = ["| dataset | strategy | seed | first uncertainty round ends at | arms, first 10 rounds | arms, last 10 rounds |", "|---|---|---|---|---|---|"]
    for dataset, by_strategy in data.items():
        for strategy, entry in by_strategy.items():
            for seed, s in entry["summary"].items():
                fmt = lambda c: ", ".join(f"{a} {n}" for a, n in sorted(c.items(), key=lambda kv: -kv[1]))  # noqa: E731
                late = "-" if strategy != "schedule" else (f"{s['first_late_labels']} labels" if s["first_late_labels"] else "never")
                lines.append(f"| {dataset} | {strategy} | {seed} | {late} | {fmt(s['share_first_10'])} | {fmt(s['share_last_10'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["banking77", "sms_spam"])
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    data: dict = {}
    for dataset in args.datasets:
        for strategy in RUNS:
            curves = load(args.results, dataset, strategy)
            if curves is not None:
                data.setdefault(dataset, {})[strategy] = {"curves": curves, "summary": summary(curves)}
    if not data:
        raise SystemExit("no bandit or schedule run with per-round arms found; see this script's docstring")
    out = args.results / "adaptive_behaviour"
    plot(data, out.with_suffix(".png"))
    out.with_suffix(".md").write_text(markdown(data))
    out.with_suffix(".json").write_text(
        json.dumps({d: {s: e["summary"] for s, e in v.items()} for d, v in data.items()}, indent=1)
    )
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
