"""Prove the dataset on the model it is for: fine-tune the target on alft's labels and on random sets.

The campaign selected its examples with a cheap proxy (by default frozen MiniLM + a linear
head). What a user takes away is a fine-tuning dataset for a *target* model, so the claim
that alft's examples beat random ones is measured on that target: for each size ``n`` the
target is fine-tuned on the campaign's first ``n`` labels (selection order) and on
``repeats`` random sets of ``n`` pool examples labeled with the data's gold labels, with the
same hyper-parameters and evaluation split. Repeat ``r`` of both arms uses one training seed,
so their difference is a paired one.

Index spaces: *pool ids* (positions in the loaded pool) for what is trained on; *example
ids* (the data's id column) in the store. The random draw depends only on the target seed,
the size, the repeat and the pool size: never on what the campaign selected.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alft.config import CampaignConfig, TargetModelConfig
from alft.errors import AlftError

if TYPE_CHECKING:
    # the store and data behind the context load only where a run trains (the plan and the
    # draws stay importable on a machine with just the model stack: benchmarks/transfer.py)
    from alft.campaign.context import CampaignContext

ARMS = ("alft", "random")

# Stream ids of the target comparison, apart from the campaign's round streams
# (alft.campaign.context.RNG_*): (seed, stream, n_labels, repeat).
RNG_TARGET_DRAW = 101
RNG_TARGET_TRAIN = 102


class TargetError(AlftError):
    """The target comparison cannot run as configured (no target section, too few labels, no gold)."""


@dataclass(frozen=True)
class TargetRun:
    """One fine-tune of the target: ``arm`` (alft | random) on ``n_labels`` examples, repeat ``repeat``."""

    arm: str
    n_labels: int
    repeat: int

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.arm, self.n_labels, self.repeat)

    @property
    def name(self) -> str:
        return f"{self.arm} · {self.n_labels} labels · repeat {self.repeat}"


def target_of(cfg: CampaignConfig) -> TargetModelConfig:
    if cfg.target is None:
        raise TargetError(
            f"campaign '{cfg.name}' has no target section: add `target: {{model: <checkpoint>, trainer: ...}}` "
            "to its config (see the README's 'Proving the dataset on the target model')"
        )
    return cfg.target


def target_seed(cfg: CampaignConfig) -> int:
    t = target_of(cfg)
    return cfg.seed if t.seed is None else t.seed


def spec_digest(cfg: CampaignConfig) -> str:
    """What makes two comparisons the same: the target section and its seed (not the campaign's labels)."""
    payload = {"target": target_of(cfg).model_dump(mode="json"), "seed": target_seed(cfg), "task": cfg.task}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def plan(target: TargetModelConfig, n_labeled: int) -> list[TargetRun]:
    """Every run of the comparison, alft's and random's interleaved per size and repeat.

    Raises TargetError when a size exceeds the labels the campaign has.
    """
    sizes = list(target.labels) if target.labels is not None else [n_labeled]
    if n_labeled < 1:
        raise TargetError("the campaign has no labels yet: run it before comparing on the target")
    too_many = [n for n in sizes if n > n_labeled]
    if too_many:
        raise TargetError(
            f"target.labels asks for {too_many} labels but the campaign has {n_labeled}; "
            "lower them or raise the campaign's budget first"
        )
    runs = [TargetRun(arm, n, r) for n in sorted(sizes) for r in range(target.repeats) for arm in ARMS]
    runs += [TargetRun("random", n, r) for n in sorted(set(target.random_labels) - set(sizes)) for r in range(target.repeats)]
    return runs


def alft_examples(selections: Sequence[Mapping[str, Any]], labels: Mapping[str, str], n: int) -> list[str]:
    """Example ids of the first ``n`` labeled examples in selection order (round, then position)."""
    order = sorted(selections, key=lambda s: (s["round"], s["position"]))
    labeled = [s["example_id"] for s in order if s["example_id"] in labels]
    if len(labeled) < n:
        raise TargetError(f"the campaign has {len(labeled)} labeled examples, {n} requested")
    return labeled[:n]


def random_pool_ids(eligible: np.ndarray, n: int, seed: int, repeat: int) -> np.ndarray:
    """``n`` pool ids drawn uniformly without replacement from ``eligible`` (pool ids with gold), sorted.

    Its own generator, ``(seed, RNG_TARGET_DRAW, n, repeat)``: the campaign's selections
    never enter the draw, so the control cannot lean on (or away from) alft's choices.
    """
    if n > len(eligible):
        raise TargetError(f"a random set of {n} needs {n} pool examples with gold labels; the pool has {len(eligible)}")
    rng = np.random.default_rng([seed, RNG_TARGET_DRAW, n, repeat])
    return np.sort(rng.choice(eligible, size=n, replace=False))


def train_seed(seed: int, repeat: int) -> int:
    """The training seed of repeat ``repeat``: the same for both arms (a paired comparison)."""
    return int(np.random.default_rng([seed, RNG_TARGET_TRAIN, repeat]).integers(0, 2**31 - 1))


def gold_pool_ids(ctx: CampaignContext) -> np.ndarray:
    """Pool ids whose gold label is known (the random arm's candidates)."""
    gold = ctx.data.pool.gold
    if gold is None:
        raise TargetError(
            "the random control needs gold labels in the pool (data.label_field): a campaign labeled "
            "only by people has no labels for random examples. Label a random sample (e.g. the "
            "campaign's random control arm, strategy.control_share) and point data.label_field at it"
        )
    return np.asarray([i for i, g in enumerate(gold) if g is not None], dtype=np.int64)


def training_data(ctx: CampaignContext, run: TargetRun, seed: int) -> tuple[np.ndarray, list[str]]:
    """Pool ids (sorted) and their labels (or reference responses) for one run."""
    data = ctx.data
    if run.arm == "alft":
        labels = ctx.store.current_labels(ctx.name, overlap=ctx.config.oracle.policy())
        ids = alft_examples(ctx.store.selections(ctx.name), labels, run.n_labels)
        pids = np.asarray(data.pool.pool_ids(ids), dtype=np.int64)
        order = np.argsort(pids, kind="stable")
        return pids[order], [labels[ids[i]] for i in order]
    pids = random_pool_ids(gold_pool_ids(ctx), run.n_labels, seed, run.repeat)
    return pids, [data.pool.gold[int(i)] for i in pids]


def target_view(cfg: CampaignConfig) -> CampaignConfig:
    """The campaign config with the target's model: its embeddings for a head target."""
    t = target_of(cfg)
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"path": t.model})})


def run_folder(ctx: CampaignContext, spec: str, run: TargetRun) -> Path:
    return ctx.workdir / "target" / spec / f"{run.arm}-n{run.n_labels}-r{run.repeat}"


def fit_and_evaluate(ctx: CampaignContext, spec: str, run: TargetRun) -> dict[str, Any]:
    """Fine-tune the target for one run, save it, and evaluate it on the eval split."""
    from alft.campaign.context import features_for, rel, resolve_model, set_threads
    from alft.fsutil import atomic_dir
    from alft.models.loading import make_trainer

    cfg = ctx.config
    data = ctx.data
    if data.eval is None or data.eval.gold is None:
        raise TargetError("the target comparison evaluates on the eval split: set data.eval with gold labels")
    target = target_of(cfg)
    view = target_view(cfg)
    seed = target_seed(cfg)
    pids, ys = training_data(ctx, run, seed)
    started = time.perf_counter()
    set_threads(cfg)
    folder = run_folder(ctx, spec, run)
    folder.parent.mkdir(parents=True, exist_ok=True)
    trainer = make_trainer(target.trainer, resolve_model(view), folder.parent)
    tseed = train_seed(seed, run.repeat)
    if cfg.task == "generation":
        model = trainer.fit(data.pool.examples(pids), ys, seed=tseed)
        metrics = {k: float(v) for k, v in model.evaluate(data.eval.examples(), data.eval.gold).items()}
    else:
        from alft.campaign.evaluation import classification_metrics

        index = {lab: i for i, lab in enumerate(data.labels)}
        y = np.asarray([index[v] for v in ys], dtype=np.int64)
        texts = [data.pool.texts[int(i)] for i in pids]
        head = trainer.needs_embeddings
        emb = features_for(view, data, "pool")[pids] if head else None
        model = trainer.fit(texts, emb, y, data.labels, seed=tseed)
        eval_emb = features_for(view, data, "eval") if head else None
        pred = model.predict_proba(data.eval.texts, eval_emb).argmax(axis=1)  # [n_eval]
        gold = np.asarray([index[g] for g in data.eval.gold], dtype=np.int64)
        full = classification_metrics(gold, pred, data.labels)
        metrics = {"accuracy": full["accuracy"], "macro_f1": full["macro_f1"]}
    path = atomic_dir(folder, model.save)
    return {
        "metrics": metrics,
        "seconds": time.perf_counter() - started,
        "model_dir": rel(ctx, path),
        "example_ids": [data.pool.ids[int(i)] for i in pids],
    }


def primary_metric(task: str) -> str:
    return "rouge_l" if task == "generation" else "accuracy"


def _mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def summarize(rows: Mapping[tuple[str, int, int], Mapping[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Per size: each arm's mean and sd over repeats, and the paired difference alft - random.

    The difference pairs repeat r of both arms (one training seed); its sd is over repeats.
    """
    sizes = sorted({n for (_, n, _) in rows})
    out = []
    for n in sizes:
        by_arm: dict[str, dict[int, float]] = {a: {} for a in ARMS}
        for (arm, m, r), row in rows.items():
            if m == n and metric in row["metrics"]:
                by_arm[arm][r] = float(row["metrics"][metric])
        a_mean, a_sd = _mean_sd(list(by_arm["alft"].values()))
        r_mean, r_sd = _mean_sd(list(by_arm["random"].values()))
        paired = [by_arm["alft"][r] - by_arm["random"][r] for r in sorted(by_arm["alft"]) if r in by_arm["random"]]
        d_mean, d_sd = _mean_sd(paired)
        out.append(
            {
                "n_labels": n,
                "metric": metric,
                "alft_mean": a_mean,
                "alft_sd": a_sd,
                "alft_n": len(by_arm["alft"]),
                "random_mean": r_mean,
                "random_sd": r_sd,
                "random_min": min(by_arm["random"].values()) if by_arm["random"] else None,
                "random_max": max(by_arm["random"].values()) if by_arm["random"] else None,
                "random_n": len(by_arm["random"]),
                "diff_mean": d_mean,
                "diff_sd": d_sd,
                "pairs": len(paired),
            }
        )
    return out


def headline(summary: Sequence[Mapping[str, Any]]) -> str | None:
    """One line for `alft status`: the largest size that both arms reached."""
    both = [s for s in summary if s["alft_mean"] is not None and s["random_mean"] is not None]
    if not both:
        return None
    s = both[-1]
    spread = f", ±{s['diff_sd']:.3f} over {s['pairs']} repeats" if s["pairs"] > 1 else ""
    return (
        f"target model: alft {s['alft_mean']:.3f} vs random {s['random_mean']:.3f} {s['metric']} "
        f"at {s['n_labels']:,} labels (difference {s['diff_mean']:+.3f}{spread})"
    )


def figure(summary: Sequence[Mapping[str, Any]], title: str):
    """Target metric vs labels: alft's mean (bars: sd) and random's mean with its min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rnd = [s for s in summary if s["random_mean"] is not None]
    if rnd:
        x = [s["n_labels"] for s in rnd]
        ax.plot(x, [s["random_mean"] for s in rnd], "o--", color="0.4", label="random (mean)")
        ax.fill_between(x, [s["random_min"] for s in rnd], [s["random_max"] for s in rnd], color="0.6", alpha=0.25, label="random (min-max)")
    al = [s for s in summary if s["alft_mean"] is not None]
    if al:
        ax.errorbar(
            [s["n_labels"] for s in al],
            [s["alft_mean"] for s in al],
            yerr=[0.0 if s["alft_sd"] is None or math.isnan(s["alft_sd"]) else s["alft_sd"] for s in al],
            fmt="o-",
            color="tab:blue",
            capsize=3,
            label="alft (mean ± sd)",
        )
    metric = summary[0]["metric"] if summary else "metric"
    ax.set_xlabel("labels")
    ax.set_ylabel(f"target {metric} (eval split)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
