"""The four deployments, as `alft serve` serves them (prefect.yaml declares the same four for a work pool).

=================  =====================================  ==========================================
deployment         flow (entrypoint)                      parameters
=================  =====================================  ==========================================
campaign           flows/campaign.py:campaign             ``config: CampaignConfig``
scheduled-round    flows/scheduled.py:scheduled_round     ``campaign: CampaignRef``, ``campaign_deployment``, ``wait_s``
re-embed           flows/reembed.py:reembed               ``campaign: CampaignRef``
target             flows/target.py:target                 ``campaign: CampaignRef`` (its ``target`` section)
=================  =====================================  ==========================================
"""

from __future__ import annotations

from typing import Any

from alft.params import CampaignRef

CAMPAIGN = "campaign"
SCHEDULED_ROUND = "scheduled-round"
REEMBED = "re-embed"
TARGET = "target"
NAMES = (CAMPAIGN, SCHEDULED_ROUND, REEMBED, TARGET)


def build_deployments(
    ref: CampaignRef | None = None, cron: str | None = None, timezone: str = "UTC", tags: list[str] | None = None
) -> list[Any]:
    """``RunnerDeployment`` objects of the four flows, for ``prefect.serve``.

    ``ref`` becomes the default parameters of the scheduled round, re-embed and target (a run
    may still name another config); ``cron`` schedules the scheduled round (needs ``ref``).
    Raises ValueError on a bad cron expression or time zone.
    """
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    from flows.campaign import campaign
    from flows.reembed import reembed
    from flows.scheduled import scheduled_round
    from flows.target import target

    if cron and ref is None:
        raise ValueError("a schedule needs a campaign config: the scheduled round checks one campaign")
    schedules = [Cron(cron, timezone=timezone)] if cron else None
    defaults = {"campaign": ref.model_dump(mode="json")} if ref is not None else None
    common: dict[str, Any] = {"tags": ["alft", *(tags or [])], "entrypoint_type": EntrypointType.MODULE_PATH}
    return [
        campaign.to_deployment(
            name=CAMPAIGN,
            description="Run (or resume) an active-learning campaign until a stop rule holds.",
            **common,
        ),
        scheduled_round.to_deployment(
            name=SCHEDULED_ROUND,
            description="Continue a campaign if labels arrived or its budget was raised; otherwise do nothing.",
            schedules=schedules,
            parameters=defaults,
            concurrency_limit=1,  # two scheduled checks at once could start the same campaign twice
            **common,
        ),
        reembed.to_deployment(
            name=REEMBED,
            description="Fill the embedding cache for the campaign's current model (after a model change).",
            parameters=defaults,
            **common,
        ),
        target.to_deployment(
            name=TARGET,
            description="Fine-tune the target model on the campaign's labels and on random sets of the same size.",
            parameters=defaults,
            **common,
        ),
    ]


def deployment_names() -> list[str]:
    """``flow/deployment`` of each, as `prefect deployment run` takes them."""
    from flows.campaign import campaign
    from flows.reembed import reembed
    from flows.scheduled import scheduled_round
    from flows.target import target

    pairs = ((campaign, CAMPAIGN), (scheduled_round, SCHEDULED_ROUND), (reembed, REEMBED), (target, TARGET))
    return [f"{f.name}/{n}" for f, n in pairs]
