"""The scheduled round's tasks: may the campaign go on, and how (start a run, resume one, or not)?

A scheduled run (nightly, say) looks at the store and at the campaign's flow runs and
decides one of three things:

* ``continued``: a new campaign run is needed: the waiting round's batch became ready
  (labels arrived, or a deadline let the labeled share suffice) and no run waits on it;
  the stop rule no longer holds under the config as it is now (a raised budget); or a
  run was interrupted (a round half done, nothing running);
* ``resumed``: a paused or suspended run waits on a batch that is now ready (a deadline
  passed, or labels came by a route that did not resume it): resume that run;
* ``nothing``: and why (labels still missing, the campaign stopped, a run in progress, not
  started yet). Nothing is written anywhere.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from alft.campaign.context import CampaignContext, open_store
from alft.config import CampaignConfig
from alft.params import CampaignRef
from tasks._common import say
from tasks._prefect import ActiveRun, active_runs
from tasks.campaign import CampaignSummary

Action = Literal["continued", "resumed", "nothing"]


class RoundPlan(BaseModel):
    """What the scheduled round decided, before acting on it."""

    campaign: str
    action: Action
    reason: str
    round: int | None = None
    resolved: int | None = None  # the waiting round's labels resolved ...
    total: int | None = None  # ... of its batch
    flow_run_id: str | None = None  # the waiting run to resume


class ScheduledRoundResult(BaseModel):
    """What a scheduled round did, and why (the flow's persisted result)."""

    campaign: str
    action: Action = Field(description="continued: started a campaign run; resumed: woke a waiting one; nothing")
    reason: str
    round: int | None = Field(None, description="the round the decision is about")
    resolved: int | None = Field(None, description="labels resolved in the waiting round's batch")
    total: int | None = Field(None, description="size of the waiting round's batch")
    flow_run_id: str | None = Field(None, description="the campaign flow run started or resumed")
    flow_run_state: str | None = Field(None, description="its state when this run returned")
    summary: CampaignSummary | None = Field(None, description="the campaign summary, when that run finished in time")
    checked_at: dt.datetime


# --------------------------------------------------------------------------- deciding
def store_exists(cfg: CampaignConfig) -> bool:
    """False for a SQLite store whose file is missing (checked without creating it)."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    url = make_url(cfg.store_url())
    return url.get_backend_name() != "sqlite" or Path(url.database or "").exists()


def decide(cfg: CampaignConfig, runs: list[ActiveRun]) -> RoundPlan:
    """The scheduled round's decision for campaign ``cfg.name`` (reads only)."""
    from alft.human.labeling import pending_batch, readiness
    from alft.store.leases import orphaned
    from alft.store.engine import safe_url
    from tasks.campaign import stop_decision

    name = cfg.name
    orphans: dict[str, str] = {}

    def plan(action: Action, reason: str, **kw) -> RoundPlan:
        if orphans and action == "continued":
            reason += " (" + "; ".join(f"flow run {fid}: {why}" for fid, why in orphans.items()) + ")"
        return RoundPlan(campaign=name, action=action, reason=reason, **kw)

    camp = open_store(cfg).campaign(name) if store_exists(cfg) else None
    if camp is None:
        return plan("nothing", f"campaign {name} has not started (not in {safe_url(cfg.store_url())}); "
                    "start it with the campaign deployment or `alft run`")
    store = open_store(cfg)
    busy = [r for r in runs if r.state_type != "PAUSED"]
    # a run Prefect still shows running whose process is gone (killed, or it lost the API
    # and could not say so) carries nothing on: the next campaign run marks it Crashed
    orphans.update(orphaned(store, name, [r.id for r in busy]))
    busy = [r for r in busy if r.id not in orphans]
    if busy:
        r = busy[0]
        return plan("nothing", f"flow run {r.id} of campaign {name} is {r.state_name}: it carries the campaign on")
    paused = {r.id: r for r in runs if r.state_type == "PAUSED"}  # suspended, or paused in a live process

    rounds = store.rounds(name)
    unfinished = next((r["round"] for r in rounds if r["finished_at"] is None), None)
    if unfinished is not None:
        r = int(unfinished)
        batch = pending_batch(store, name, cfg.oracle.policy())
        if batch is not None and batch.round == r and cfg.oracle.people:
            total = len(batch.items)
            counts = {"round": r, "resolved": total - len(batch.remaining()), "total": total}
            wait = store.wait_row(name, r)
            ready, why = readiness(batch, wait, cfg.oracle.model_dump())
            if not ready:
                return plan("nothing", f"round {r} waits for labels: {why}", **counts)
            waiting = wait["flow_run_id"] if wait is not None else None
            if waiting is not None and str(waiting) in paused:
                return plan(
                    "resumed", f"round {r}: labels arrived ({why}); its flow run waits", flow_run_id=str(waiting), **counts
                )
            if paused:
                other = next(iter(paused.values()))
                return plan("nothing", f"round {r} is ready ({why}), but flow run {other.id} is {other.state_name}: "
                            "resume or cancel it", **counts)
            return plan("continued", f"round {r}: labels arrived ({why})", **counts)
        if paused:
            other = next(iter(paused.values()))
            return plan("nothing", f"flow run {other.id} of campaign {name} is {other.state_name}", round=r)
        done = [s["step"] for s in store.steps(name, r)]
        after = f"after its {done[-1]} step" if done else "before its first step"
        return plan("continued", f"round {r} was interrupted {after} and no run carries it on", round=r)
    if paused:
        other = next(iter(paused.values()))
        return plan("nothing", f"flow run {other.id} of campaign {name} is {other.state_name}")
    if not rounds:
        return plan("continued", f"campaign {name} has no round yet (its first run was interrupted)")
    ctx = CampaignContext(config=cfg, uid=camp["uid"])
    decision = stop_decision(ctx, store.history(name))
    last = int(rounds[-1]["round"])
    if decision.stop:
        return plan("nothing", f"campaign {name} stopped: {decision.reason}", round=last)
    if camp["stop_rule"] is not None:
        return plan(
            "continued",
            f"its stop rule no longer holds under the config as it is now (was: {camp['stop_reason']}; "
            f"budget now {cfg.budget})",
            round=last + 1,
        )
    return plan("continued", f"round {last} finished and no stop rule holds; the run was interrupted", round=last + 1)


@task(name="load campaign config", cache_policy=NO_CACHE)
def load_campaign(ref: CampaignRef) -> CampaignConfig:
    """Read the config file named by the parameters (re-read every run: edits count)."""
    cfg = ref.load()
    say("campaign %s: config %s%s", cfg.name, ref.config_file, f" with {', '.join(ref.overrides)}" if ref.overrides else "")
    return cfg


@task(name="check campaign", cache_policy=NO_CACHE)
def check_campaign(cfg: CampaignConfig) -> RoundPlan:
    """Decide whether the campaign may go on: from the store and the campaign's flow runs."""
    from alft.campaign.context import preflight

    plan = decide(cfg, active_runs(cfg.name))
    if plan.action == "continued":
        # A run started now must be able to resume this campaign: same data, labels, model.
        preflight(cfg)
    return plan


@task(name="resume waiting run", cache_policy=NO_CACHE)
def resume_waiting_run(cfg: CampaignConfig, plan: RoundPlan) -> str | None:
    """Resume the run waiting on the ready batch (once: the store records who resumed it)."""
    from alft.human.labeling import SubmitResult, resume_if_complete

    store = open_store(cfg)
    remaining = (plan.total or 0) - (plan.resolved or 0)
    done = SubmitResult(round=plan.round, written=0, unchanged=0, remaining=remaining, complete=remaining == 0)
    return resume_if_complete(store, cfg.name, done)


@task(name="start campaign run", cache_policy=NO_CACHE)
def start_campaign_run(cfg: CampaignConfig, deployment: str) -> str:
    """Create a run of the campaign deployment with this config; its flow run id."""
    from prefect.deployments import run_deployment

    fr = run_deployment(
        deployment,
        parameters={"config": cfg.model_dump(mode="json")},
        timeout=0,
        as_subflow=False,  # its own run: it may suspend and be resumed long after this one ended
        tags=["alft:scheduled-round"],
    )
    say("campaign %s: started flow run %s of %s", cfg.name, fr.id, deployment)
    return str(fr.id)


@task(name="watch campaign run", cache_policy=NO_CACHE)
def watch_run(flow_run_id: str, wait_s: float, resumed: bool = False) -> tuple[str | None, CampaignSummary | None]:
    """Wait up to ``wait_s`` for the run to finish or to wait for labels; its state and summary.

    ``resumed``: the run was paused when this started, so a paused state counts only once
    it is a new one (the run went on and waits again).
    """
    import time

    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + wait_s
    old_pause = None
    first = True
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(flow_run_id).state
            if first and resumed and state is not None and state.is_paused():
                old_pause = state.id
            first = False
            if state is not None and (state.is_final() or (state.is_paused() and state.id != old_pause)):
                break
            if time.monotonic() >= deadline:
                break
            time.sleep(1.0)
    if state is None:
        return None, None
    if state.is_failed() or state.is_crashed() or state.is_cancelled():
        from alft.errors import AlftError

        raise AlftError(f"campaign flow run {flow_run_id} ended {state.name}: {state.message or ''}".strip())
    return state.name, (state.result() if state.is_completed() else None)
