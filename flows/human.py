"""Waiting for people: the flow side of step 4 (Prefect pauses and suspends only from flows)."""

import time
from typing import Any

from alft.campaign.context import CampaignContext
from alft.errors import LabelError
from tasks.labels import LabelsInput, LabelStatus, collect_labels, request_labels, wait_for_labels


def await_labels(ctx: CampaignContext, status: LabelStatus) -> tuple[dict[str, Any] | None, str | None]:
    """Wait (flow code: Prefect pauses only from a flow) until labels may have arrived.

    Returns the run input that resumed the flow (and its key), or ``(None, None)`` after
    a poll interval. ``suspend`` ends this process; the resumed run re-runs the flow from
    the top and gets here again, where the same key hands it the input it was given.
    """
    oracle = ctx.config.oracle
    key = f"labels-r{status.round}-{status.waits + 1}"
    if status.mode == "poll":
        time.sleep(oracle.poll_s)
        return None, None
    from prefect.flow_runs import pause_flow_run, suspend_flow_run

    if status.mode == "pause":
        got = pause_flow_run(wait_for_input=LabelsInput, timeout=oracle.timeout_s, key=key, poll_interval=2)
    else:
        got = suspend_flow_run(wait_for_input=LabelsInput, timeout=oracle.timeout_s, key=key)
    given = {"annotator": got.annotator, "labels": dict(got.labels), "shown": dict(got.shown)} if got is not None else None
    return given, key


def wait_until_labeled(ctx: CampaignContext, round_no: int) -> None:
    """The human step as the flow runs it: ask, wait, collect, until the round may go on.

    In poll mode (no Prefect server to resume the run) this process checks the store every
    ``oracle.poll_s`` for up to ``oracle.timeout_s``.
    """
    status = request_labels(ctx, round_no)
    started = time.monotonic()
    while not status.ready:
        if status.mode == "poll" and time.monotonic() - started > ctx.config.oracle.timeout_s:
            raise LabelError(
                f"round {round_no}: waited {ctx.config.oracle.timeout_s} s, {status.total - status.resolved} "
                f"of {status.total} labels still missing; run the campaign again to keep waiting"
            )
        given, key = await_labels(ctx, status)
        status = collect_labels(ctx, round_no, given, key)
    wait_for_labels(ctx, round_no)
