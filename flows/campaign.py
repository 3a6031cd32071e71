"""The active-learning campaign as a Prefect flow: orchestration only.

Each round runs the seven step tasks in order, then syncs MLflow. Every step checks the
campaign store first, so re-running this flow (after a crash, a suspension, or a new
trigger) resumes at the first unfinished step of the first unfinished round.

Rounds are task groups named ``round N · <step>`` inside one flow run rather than
subflows: a Prefect 3.9 subflow costs ~1.1 s to close (its heartbeat thread is joined
while it sleeps in 1 s ticks), which alone would exceed the per-round overhead budget.
"""


# No `from __future__ import annotations` here: a deployment validates its parameters
# against the real `CampaignConfig` class, which a string annotation would hide.
from prefect import flow

from alft.config import CampaignConfig
from tasks.campaign import CampaignSummary, holding, next_round, open_campaign, summarize, untracked_rounds
from tasks._prefect import campaign_run_name
from tasks.embed import embed_pool
from tasks.evaluate import evaluate
from flows.human import wait_until_labeled
from tasks.labels import wait_for_labels
from tasks.score import score_pool
from tasks.select import select_batch
from tasks.stop import stop_check
from tasks.track import register_final_model, track_campaign, track_round
from tasks.train import fine_tune


@flow(name="alft-campaign", flow_run_name=campaign_run_name, persist_result=True, validate_parameters=True)
def campaign(config: CampaignConfig) -> CampaignSummary:
    """Run active-learning rounds until a stop rule holds; return the campaign summary."""
    ctx = open_campaign(config)  # refuses while another live process runs this campaign
    with holding(ctx):
        track_campaign(ctx)
        for done in untracked_rounds(ctx):
            track_round(ctx, done)
        while (round_no := next_round(ctx)) is not None:
            embed_pool(ctx, round_no)
            score_pool(ctx, round_no)
            select_batch(ctx, round_no)
            if config.oracle.people:
                wait_until_labeled(ctx, round_no)  # ask, then suspend / pause / poll until labeled
            else:
                wait_for_labels(ctx, round_no)
            fine_tune(ctx, round_no)
            evaluate(ctx, round_no)
            stop_check(ctx, round_no)
            track_round(ctx, round_no)
        register_final_model(ctx)  # the loop ended on a stop rule: the last round's model
        return summarize(ctx)
