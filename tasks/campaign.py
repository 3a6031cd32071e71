"""Campaign-level tasks: open (or resume) a campaign, plan the next round, summarise."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from alft.campaign.context import (
    CampaignContext,
    campaign_facts,
    open_store,
    verify_campaign,
)
from alft.config import CampaignConfig, config_digest
from tasks._common import say


@task(name="open campaign", cache_policy=NO_CACHE)
def open_campaign(config: CampaignConfig) -> CampaignContext:
    """Check data, model and store; create the campaign or verify it; hold the campaign's run lease."""
    facts = campaign_facts(config)
    store = open_store(config)
    config.workdir_path().mkdir(parents=True, exist_ok=True)
    existing = store.campaign(config.name)
    if existing is None:
        uid = uuid.uuid4().hex
        with store.transaction() as conn:
            store.create_campaign(conn, name=config.name, uid=uid, config=config.model_dump(mode="json"), **facts)
        say("campaign %s created (pool %d, %d labels)", config.name, facts["pool_size"], len(facts["labels"]))
    else:
        verify_campaign(config, existing, facts, store.url)
        uid = existing["uid"]
        say("campaign %s resumed (config %s)", config.name, config_digest(config))
    ctx = CampaignContext(config=config, uid=uid)
    hold_campaign(ctx)
    return ctx


def hold_campaign(ctx: CampaignContext) -> None:
    """Take the campaign's run lease for this flow run (``CampaignBusyError`` if a live process
    has it) and mark the flow runs that crashed holding it, or that ended without telling
    Prefect, as Crashed."""
    from alft.store import leases
    from tasks._prefect import active_runs, crash_orphans, flow_run_id

    key = flow_run_id()
    if key is None:
        return  # plain task calls (benchmarks, tests): no flow run to hold it
    store, name = ctx.store, ctx.name
    for old in leases.acquire(store, name, key):
        say("campaign %s: taking over from run %s (%s)", name, old.flow_run_id, old.why)

    others = [r.id for r in active_runs(name) if r.id != key and r.state_type != "PAUSED"]
    for fid in crash_orphans(name, leases.orphaned(store, name, others), by=key):
        say("campaign %s: flow run %s had no process left; marked Crashed", name, fid)


@contextmanager
def holding(ctx: CampaignContext) -> Iterator[None]:
    """The flow's body holds the run lease; it ends with the body, however the body ends."""
    from prefect.exceptions import Pause

    from alft.store import leases
    from tasks._prefect import flow_run_id

    reason = "completed"
    try:
        yield
    except Pause:
        reason = "suspended (waiting for labels)"
        raise
    except BaseException as exc:
        reason = f"failed: {type(exc).__name__}"
        raise
    finally:
        key = flow_run_id()
        if key is not None:
            leases.release(ctx.store, ctx.name, key, reason)


def stop_history(ctx: CampaignContext, history):
    """The store's history plus what the stabilizing and uncertainty rules read per round."""
    import dataclasses

    import numpy as np

    from alft.campaign.rounds import round_files

    st = ctx.config.stop
    if st.stabilizing is None and st.uncertainty is None:
        return history
    key = "eval_pred" if st.stabilizing is None or st.stabilizing.stop_set == "eval" else "stop_pred"
    out = []
    for rec in history:
        path = round_files(ctx, rec.round)[key]
        pred = np.load(path) if st.stabilizing is not None and path.exists() else None
        unc = rec.metrics.get("pool_uncertainty")
        out.append(dataclasses.replace(rec, stop_set_pred=pred, pool_uncertainty=unc))
    return out


def stop_decision(ctx: CampaignContext, history):
    """The stop rules of ``ctx.config`` applied to ``history``."""
    from strategies.stopping import decide

    cfg = ctx.config
    st = cfg.stop
    history = stop_history(ctx, history)
    forecast = None
    if st.forecast is not None:
        n_last = history[-1].n_labels if history else 0
        pool_left = len(ctx.data.pool) - n_last
        nxt = min(cfg.batch_size, cfg.budget - n_last, pool_left)
        forecast = {
            "metric": st.forecast.metric,
            "min_gain_per_label": st.forecast.min_gain_per_label,
            "min_rounds": st.forecast.min_rounds,
            "patience": st.forecast.patience,
            "max_rmse": st.forecast.max_rmse,
            "next_batch": nxt if nxt >= 1 else None,
        }
    return decide(
        history,
        budget=cfg.budget,
        pool_size=len(ctx.data.pool),
        max_rounds=st.max_rounds,
        plateau_rule=(st.plateau.metric, st.plateau.patience, st.plateau.min_delta) if st.plateau else None,
        target_rule=(st.target.metric, st.target.value) if st.target else None,
        kappa_rule=(st.stabilizing.threshold, st.stabilizing.window) if st.stabilizing else None,
        uncertainty_rule=st.uncertainty.threshold if st.uncertainty else None,
        forecast_rule=forecast,
    )


@task(name="plan round", cache_policy=NO_CACHE)
def next_round(ctx: CampaignContext) -> int | None:
    """The round to run: the first unfinished one, a new one, or None once a stop rule holds."""
    store = ctx.store
    rounds = store.rounds(ctx.name)
    for r in rounds:
        if r["finished_at"] is None:
            return int(r["round"])
    camp = store.campaign(ctx.name)
    if rounds:
        decision = stop_decision(ctx, store.history(ctx.name))
        if decision.stop:
            if camp["stop_reason"] != decision.reason:
                with store.transaction() as conn:
                    store.set_stop(conn, ctx.name, rounds[-1]["round"], decision.rule, decision.reason)
            say("campaign %s stopped: %s", ctx.name, decision.reason)
            return None
        if camp["stop_rule"] is not None:
            with store.transaction() as conn:
                store.clear_stop(conn, ctx.name)
            say("campaign %s continues: its stop rule (%s) no longer holds", ctx.name, camp["stop_rule"])
    round_no = len(rounds)
    store.ensure_round(ctx.name, round_no, ctx.strategy_config(round_no).name)
    return round_no


class RoundSummary(BaseModel):
    round: int
    n_labels: int
    strategy: str
    accuracy: float | None = None
    macro_f1: float | None = None
    rouge_l: float | None = None
    perplexity: float | None = None
    zero_shot_accuracy: float | None = None
    pool_uncertainty: float | None = None
    kappa: float | None = None  # with the previous round's predictions on the stop set
    forecast: dict | None = None  # the learning-curve forecast of the next batch (stop.forecast)
    stop_reason: str | None = None
    seconds: float


class CampaignSummary(BaseModel):
    """What a campaign run returns (and persists as its Prefect result)."""

    name: str
    rounds: list[RoundSummary]
    stop_reason: str | None
    workdir: str
    store_url: str
    tracking_uri: str
    experiment: str
    mlflow_run_id: str | None


def build_summary(ctx: CampaignContext) -> CampaignSummary:
    from alft.store.engine import safe_url

    store = ctx.store
    metrics = store.metrics(ctx.name)
    rows = []
    for r in store.rounds(ctx.name):
        steps = store.steps(ctx.name, r["round"])
        ev = next((s["result"] for s in steps if s["step"] == "evaluate"), None)
        if ev is None:
            continue
        m = metrics.get(r["round"], {})
        stop_res = next((s["result"] for s in steps if s["step"] == "stop"), None) or {}
        rows.append(
            RoundSummary(
                round=r["round"],
                n_labels=int(ev["n_labels"]),
                strategy=r["strategy"],
                accuracy=m.get("accuracy"),
                macro_f1=m.get("macro_f1"),
                rouge_l=m.get("rouge_l"),
                perplexity=m.get("perplexity"),
                zero_shot_accuracy=m.get("zero_shot.accuracy"),
                pool_uncertainty=m.get("pool_uncertainty"),
                kappa=stop_res.get("kappa"),
                forecast=stop_res.get("forecast"),
                stop_reason=stop_res.get("reason") if stop_res.get("stop") else None,
                seconds=round(sum(s["seconds"] for s in steps), 2),
            )
        )
    camp = store.campaign(ctx.name) or {}
    return CampaignSummary(
        name=ctx.name,
        rounds=rows,
        stop_reason=camp.get("stop_reason"),
        workdir=str(ctx.workdir),
        store_url=safe_url(ctx.config.store_url()),
        tracking_uri=ctx.config.tracking_uri(),
        experiment=ctx.config.experiment_name(),
        mlflow_run_id=camp.get("mlflow_run_id"),
    )


#: The round table's metric columns: (RoundSummary field, header, format); a column shows when
#: some round has the metric.
_TABLE_METRICS = (
    ("accuracy", "accuracy", "{:.4f}"),
    ("macro_f1", "macro-F1", "{:.4f}"),
    ("rouge_l", "ROUGE-L", "{:.4f}"),
    ("perplexity", "perplexity", "{:.2f}"),
)


def rounds_markdown(summary: CampaignSummary, curve: str | None) -> str:
    """The campaign's rounds as a Markdown table with its stop state and a link to the learning
    curve (``curve``: the image's URL or path); the Prefect artifact each round ends with."""
    cols = [(f, h, fmt) for f, h, fmt in _TABLE_METRICS if any(getattr(r, f) is not None for r in summary.rounds)]
    head = ["round", "strategy", "labels", *(h for _, h, _ in cols), "seconds"]
    lines = [
        f"### {summary.name}: {len(summary.rounds)} rounds, "
        f"{summary.rounds[-1].n_labels if summary.rounds else 0} labels",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" if h == "strategy" else "---:" for h in head) + "|",
    ]
    for r in summary.rounds:
        cells = [str(r.round), r.strategy, str(r.n_labels)]
        cells += ["-" if getattr(r, f) is None else fmt.format(getattr(r, f)) for f, _, fmt in cols]
        lines.append("| " + " | ".join([*cells, f"{r.seconds:.1f}"]) + " |")
    lines += ["", f"**Stop:** {summary.stop_reason or 'not stopped: the next round follows'}", ""]
    if curve is not None:
        lines.append(f"**Learning curve:** [learning_curve.png]({curve})")
    if summary.mlflow_run_id:
        lines.append(f"MLflow: run `{summary.mlflow_run_id}` of experiment `{summary.experiment}` at `{summary.tracking_uri}`")
    return "\n".join(lines) + "\n"


@task(name="summarize", cache_policy=NO_CACHE)
def summarize(ctx: CampaignContext) -> CampaignSummary:
    """The campaign's rounds, labels, metrics and stop reason, read from the store."""
    return build_summary(ctx)


@task(name="rounds to track", cache_policy=NO_CACHE)
def untracked_rounds(ctx: CampaignContext) -> list[int]:
    """Finished rounds MLflow has not seen yet (a crash or an MLflow outage left them behind)."""
    return [
        int(r["round"])
        for r in ctx.store.rounds(ctx.name)
        if r["finished_at"] is not None and r["tracked_at"] is None
    ]
