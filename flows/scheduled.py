"""The scheduled round: run on a cron schedule, continue a campaign only if it can go on.

Each run re-reads the campaign's config file, then (``tasks/scheduling.py``) continues the
campaign when labels arrived or its stop rule no longer holds, resumes a run waiting on a
batch that became ready, or does nothing, and says which and why in a log line and in its
persisted result (``ScheduledRoundResult``).

The campaign goes on in its own flow run of the campaign deployment (so a human round can
suspend it without holding this run), or, with ``campaign_deployment`` empty, inline as a
subflow of this run.
"""

# No `from __future__ import annotations` here: a deployment validates its parameters
# against the real classes, which string annotations would hide.
import datetime as dt
import logging
from typing import Annotated, Optional

from prefect import flow
from pydantic import Field

from alft.params import CampaignRef
from tasks.scheduling import (
    ScheduledRoundResult,
    check_campaign,
    load_campaign,
    resume_waiting_run,
    start_campaign_run,
    watch_run,
)

#: The campaign deployment that prefect.yaml and `alft serve` create.
CAMPAIGN_DEPLOYMENT = "alft-campaign/campaign"

log = logging.getLogger("alft")


def _say(message: str) -> None:
    from prefect.logging import get_run_logger

    log.info(message)
    get_run_logger().info(message)


@flow(
    name="alft-scheduled-round",
    flow_run_name="scheduled · {campaign.config_file}",
    persist_result=True,
    validate_parameters=True,
)
def scheduled_round(
    campaign: CampaignRef,
    campaign_deployment: Annotated[
        Optional[str],
        Field(
            pattern=r"^[^/]+/[^/]+$",
            description="deployment (flow/name) that runs the campaign; null: run it inline, as a subflow",
        ),
    ] = CAMPAIGN_DEPLOYMENT,
    wait_s: Annotated[
        int,
        Field(ge=0, le=86400, description="seconds to wait for the campaign run to finish or to wait for labels"),
    ] = 0,
) -> ScheduledRoundResult:
    """Continue the campaign if labels arrived (or its budget was raised); otherwise do nothing, and say why.

    Args:
        campaign: the campaign's config file (re-read every run) and overrides
        campaign_deployment: deployment (flow/name) that runs the campaign; null: run it
            inline, as a subflow of this run
        wait_s: seconds to wait for the campaign run to finish or to wait for labels
            again (0: return once it is started)
    """
    cfg = load_campaign(campaign)
    plan = check_campaign(cfg)
    run_id, state, summary = None, None, None
    action, reason = plan.action, plan.reason
    if plan.action == "resumed":
        run_id = resume_waiting_run(cfg, plan)
        if run_id is None:
            action, reason = "nothing", f"{plan.reason}, but another route resumed it first"
    elif plan.action == "continued":
        if campaign_deployment:
            run_id = start_campaign_run(cfg, campaign_deployment)
        else:
            from flows.campaign import campaign as campaign_flow

            summary = campaign_flow(cfg)
            state = "Completed"
    if run_id is not None and wait_s > 0:
        state, summary = watch_run(run_id, wait_s, resumed=action == "resumed")
    result = ScheduledRoundResult(
        **{
            **plan.model_dump(),
            "action": action,
            "reason": reason,
            "flow_run_id": run_id or plan.flow_run_id,
            "flow_run_state": state,
            "summary": summary,
            "checked_at": dt.datetime.now(dt.timezone.utc),
        }
    )
    verb = {"continued": "continues", "resumed": "resumed", "nothing": "nothing to do"}[action]
    where = f" (flow run {result.flow_run_id}{', ' + state if state else ''})" if action != "nothing" else ""
    _say(f"campaign {cfg.name}: {verb}: {reason}{where}")
    return result
