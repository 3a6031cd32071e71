"""The target comparison's tasks: open it, one fine-tune per (arm, size, repeat), log it to MLflow."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from alft.campaign.context import CampaignContext
from alft.campaign.target import TargetRun
from alft.params import CampaignRef
from tasks._common import say
from tasks.track import RETRY_DELAYS, mlflow_errors, tracker_for


class TargetSummary(BaseModel):
    """What a target comparison measured (the flow's persisted result)."""

    campaign: str
    spec: str
    target_model: str
    trainer: str
    metric: str
    sizes: list[dict[str, Any]]  # alft.campaign.target.summarize rows
    headline: str | None
    runs: int
    seconds: float
    mlflow_run_id: str | None = None


@task(name="open target comparison", cache_policy=NO_CACHE)
def open_target(ref: CampaignRef) -> CampaignContext:
    """Load the config, check the target section and find the campaign it compares."""
    from alft.campaign.context import campaign_facts, open_store, verify_campaign
    from alft.campaign.target import TargetError, target_of
    from alft.store.engine import safe_url

    cfg = ref.load()
    target_of(cfg)
    facts = campaign_facts(cfg)
    store = open_store(cfg)
    existing = store.campaign(cfg.name)
    if existing is None:
        raise TargetError(
            f"campaign '{cfg.name}' is not in {safe_url(store.url)}: run it first (alft run {ref.config_file})"
        )
    verify_campaign(cfg, existing, facts, store.url)
    return CampaignContext(config=cfg, uid=existing["uid"])


@task(name="plan target comparison", cache_policy=NO_CACHE)
def plan_target(ctx: CampaignContext) -> tuple[str, list[TargetRun]]:
    """The comparison's spec digest and its runs, sized by the labels the campaign has now."""
    from alft.campaign.target import plan, spec_digest, target_of

    n_labeled = len(ctx.store.current_labels(ctx.name, overlap=ctx.config.oracle.policy()))
    runs = plan(target_of(ctx.config), n_labeled)
    spec = spec_digest(ctx.config)
    say("target %s (spec %s): %d runs over %d labels", target_of(ctx.config).model, spec, len(runs), n_labeled)
    return spec, runs


@task(name="summarize target comparison", cache_policy=NO_CACHE)
def summarize_target(ctx: CampaignContext, spec: str, runs: list[TargetRun], seconds: float) -> TargetSummary:
    """Per-size means and paired differences of the finished runs, read back from the store."""
    from alft.campaign.target import headline, primary_metric, summarize, target_of
    from alft.store import target_runs

    done = target_runs.finished(ctx.store, ctx.name, spec)
    rows = {r.key: done[r.key] for r in runs if r.key in done}
    metric = primary_metric(ctx.config.task)
    sizes = summarize(rows, metric)
    t = target_of(ctx.config)
    line = headline(sizes)
    if line:
        say(line)
    return TargetSummary(
        campaign=ctx.name, spec=spec, target_model=t.model, trainer=t.trainer.kind, metric=metric,
        sizes=sizes, headline=line, runs=len(rows), seconds=seconds,
    )


@task(name="target run", task_run_name="target · {run.arm} · {run.n_labels} labels · r{run.repeat}", cache_policy=NO_CACHE)
def target_run(ctx: CampaignContext, spec: str, run: TargetRun) -> dict[str, Any]:
    """Fine-tune and evaluate the target for one run, unless the store already has it."""
    from alft import faults
    from alft.campaign.target import fit_and_evaluate
    from alft.store import target_runs

    done = target_runs.finished(ctx.store, ctx.name, spec).get(run.key)
    if done is not None:
        say("target · %s: done before (%s)", run.name, _fmt(done["metrics"]))
        return done
    point = f"target.{run.arm}.{run.n_labels}.{run.repeat}"
    faults.point(f"{point}.start")
    out = fit_and_evaluate(ctx, spec, run)
    faults.point(f"{point}.commit")
    row = target_runs.record(ctx.store, ctx.name, spec, run.key, **out)
    say("target · %s: %s in %.1f s", run.name, _fmt(row["metrics"]), row["seconds"])
    return row


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))


@task(name="track target comparison", retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS, cache_policy=NO_CACHE)
@mlflow_errors("logging the target comparison")
def track_target(ctx: CampaignContext, spec: str, sizes: list[dict[str, Any]], headline: str | None) -> str:
    """Log the comparison to its MLflow run: per-size means and differences, the runs table, the plot, alft's models."""
    import matplotlib.pyplot as plt

    from alft.campaign.target import figure, target_of
    from alft.campaign.tracking import flatten
    from alft.store import target_runs

    target = target_of(ctx.config)
    tracker = tracker_for(ctx)
    run_id = tracker.target_run(ctx.name, ctx.uid, spec, {"alft.target_model": target.model, "alft.trainer": target.trainer.kind})
    tracker.log_params_once(run_id, flatten(target.model_dump(mode="json"), "target."))
    rows = target_runs.finished(ctx.store, ctx.name, spec)
    for s in sizes:
        stamp = max(r["finished_at"] for (_, n, _), r in rows.items() if n == s["n_labels"])
        m = s["metric"]
        values = {
            f"target.alft.{m}": s["alft_mean"],
            f"target.random.{m}": s["random_mean"],
            f"target.random.{m}_sd": s["random_sd"],
            f"target.diff.{m}": s["diff_mean"],
            f"target.diff.{m}_sd": s["diff_sd"],
        }
        # the finishing time of the size's last run: a re-log writes the same points again
        tracker.log_metrics(run_id, {k: v for k, v in values.items() if v is not None}, s["n_labels"], int(stamp.timestamp() * 1000))
    table = [
        {"arm": arm, "n_labels": n, "repeat": r, "seconds": row["seconds"], "model_dir": row["model_dir"], **row["metrics"]}
        for (arm, n, r), row in sorted(rows.items())
    ]
    tracker.log_table(run_id, table, "target_runs.json")
    tracker.log_dict(run_id, {"spec": spec, "sizes": sizes, "headline": headline}, "target_summary.json")
    fig = figure(sizes, f"{ctx.name} · target {target.model}")
    tracker.log_figure(run_id, fig, "target_curve.png")
    plt.close(fig)
    if headline:
        tracker.set_tags(run_id, {"alft.target_headline": headline})
    if ctx.config.tracking.log_models:
        for (arm, n, r), row in sorted(rows.items()):
            if arm == "alft" and r == 0 and row["model_dir"]:
                tracker.log_model(run_id, ctx.workdir / row["model_dir"], name=f"alft-n{n}", encoder=_encoder(ctx), step=n)
    return run_id


def _encoder(ctx: CampaignContext) -> dict:
    """The target's encoder as a head model's MLflow model records it."""
    from alft.campaign.context import feature_mean, resolve_model
    from alft.campaign.target import target_view
    from alft.models.pyfunc import encoder_config

    view = target_view(ctx.config)
    m = view.model
    return encoder_config(m.path, resolve_model(view), m.max_length, m.batch_size, m.pooling, feature_mean(view, ctx.data), onnx_quantize=m.onnx_quantize)
