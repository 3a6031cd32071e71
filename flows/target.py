"""Prove the dataset on the model it is for: the target comparison as a Prefect flow.

Fine-tunes the campaign's ``target`` model on alft's labels and on random sets of the same
size (``alft.campaign.target``), one task per (arm, size, repeat). Every finished run is a
row in the campaign store, so a killed comparison re-run trains only what is missing.
"""

# No `from __future__ import annotations` here: a deployment validates its parameters
# against the real classes, which string annotations would hide.
import time

from prefect import flow

from alft.params import CampaignRef
from tasks.target import (
    TargetSummary,
    open_target,
    plan_target,
    summarize_target,
    target_run,
    track_target,
)


@flow(name="alft-target", flow_run_name="target · {campaign.config_file}", persist_result=True, validate_parameters=True)
def target(campaign: CampaignRef) -> TargetSummary:
    """Fine-tune the target on alft's labels and on random sets of the same size; log the comparison.

    Args:
        campaign: the campaign's config file (with its `target` section) and overrides
    """
    started = time.perf_counter()
    ctx = open_target(campaign)
    spec, runs = plan_target(ctx)
    for run in runs:
        target_run(ctx, spec, run)
    summary = summarize_target(ctx, spec, runs, time.perf_counter() - started)
    run_id = track_target(ctx, spec, summary.sizes, summary.headline)
    return summary.model_copy(update={"mlflow_run_id": run_id})
