"""Step 4: get labels for the persisted batch, from the simulated oracle or from people.

Simulated: one task reads the gold column. Human: a small group of tasks; the waiting
itself is flow code (``flows/human.py``: Prefect pauses and suspends only from a flow):

    request_labels    record the wait, publish where to label, report the batch
    (flow)            suspend / pause / poll until labels may have arrived
    collect_labels    turn a resumed run's input into label events, report the batch
    wait_for_labels   the step: close the round's labeling (the rest returns to the pool
                      when a deadline let it go on incomplete)

Every label, whatever its route, is written by ``alft.labeling.submit``; the flow reads
them back from the store.
"""

from __future__ import annotations

import os
from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput
from pydantic import BaseModel, Field

from alft.campaign.context import CampaignContext, run_step
from alft.errors import LabelError
from tasks._common import in_prefect_run, say, step_task


class LabelsInput(RunInput):
    """Labels typed into the Prefect UI (or sent through its API) to resume a waiting round."""

    annotator: str = Field("prefect-ui", description="who is labeling")
    labels: dict[str, str] = Field(default_factory=dict, description="example id -> label")
    shown: dict[str, str] = Field(
        default_factory=dict,
        description="example id -> the proposal the labeler was shown with it (a label, or a generation "
        "draft), so the label is recorded as accepted or corrected; ids not here were typed",
    )


class LabelStatus(BaseModel):
    """Where the round's batch stands, as the flow needs it to decide whether to wait."""

    round: int
    total: int
    resolved: int
    ready: bool
    reason: str
    mode: str
    waits: int = 0  # run inputs consumed so far this round (names the next wait's key)


def wait_mode(setting: str) -> str:
    """``auto``: suspend in a deployment, pause against a Prefect server, else poll."""
    if setting != "auto":
        return setting
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None and ctx.flow_run.deployment_id is not None:
        return "suspend"
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL"):
        return "pause"  # a server other processes can reach to resume this run
    return "poll"


def _status(ctx: CampaignContext, round_no: int, mode: str) -> LabelStatus:
    from alft.human.labeling import pending_batch, readiness

    store = ctx.store
    oracle = ctx.config.oracle
    if store.step_result(ctx.name, round_no, "labels") is not None:
        return LabelStatus(round=round_no, total=0, resolved=0, ready=True, reason="labels step done", mode=mode)
    batch = pending_batch(store, ctx.name, oracle.policy())
    if batch is None or batch.round != round_no:
        raise LabelError(f"round {round_no} has no batch waiting for labels")
    ready, reason = readiness(batch, store.wait_row(ctx.name, round_no), oracle.model_dump())
    total = len(batch.items)
    return LabelStatus(
        round=round_no,
        total=total,
        resolved=total - len(batch.remaining()),
        ready=ready,
        reason=reason,
        mode=mode,
        waits=store.consumed_count(ctx.name, round_no),
    )


def _arm(ctx: CampaignContext, round_no: int, mode: str) -> None:
    from prefect.context import FlowRunContext

    fr = FlowRunContext.get()
    run_id = str(fr.flow_run.id) if fr is not None and fr.flow_run is not None else None
    store = ctx.store
    with store.transaction() as conn:
        store.set_wait(conn, ctx.name, round_no, mode, None if mode == "poll" else run_id)


def _publish(ctx: CampaignContext, status: LabelStatus) -> None:
    """A markdown artifact (and a log line) saying where and how to label the batch."""
    import re

    oracle = ctx.config.oracle
    cfg_hint = "<your campaign config>"
    text = (
        f"## Round {status.round} of campaign `{ctx.name}` waits for labels\n\n"
        f"{status.resolved} of {status.total} labeled ({status.reason}).\n\n"
        f"* **Labeling page**: run `alft label {cfg_hint}` and open the URL it prints "
        f"(served at {oracle.page_url} by default; the URL carries the access token).\n"
        f"* **File**: `alft labels export {cfg_hint} --out batch.jsonl`, fill the `label` column, "
        f"then `alft labels import batch.jsonl {cfg_hint} --annotator NAME`.\n"
        f"* **Label Studio**: `alft labels export {cfg_hint} --out tasks.json --format label-studio`, "
        f"import the export back with `--format label-studio`.\n"
        f"* **Prefect UI**: resume this flow run and fill `labels` (example id -> label).\n\n"
        f"The round goes on by itself once the batch is complete"
        + (
            f", or {oracle.deadline_s} s after it was first requested if {oracle.min_fraction:.0%} is labeled"
            if oracle.deadline_s
            else ""
        )
        + f". Waiting mode: {status.mode}."
    )
    say(
        "round %d · labels: waiting for %d of %d labels (%s); label with `alft label`, "
        "`alft labels import`, Label Studio or the Prefect UI",
        status.round,
        status.total - status.resolved,
        status.total,
        status.mode,
    )
    if in_prefect_run():
        from prefect.artifacts import create_markdown_artifact

        key = re.sub(r"[^a-z0-9-]", "-", f"{ctx.name}-round-{status.round}-labels")
        create_markdown_artifact(markdown=text, key=key, description=f"where to label round {status.round}")


def _say_proposals(round_no: int, marker: dict[str, Any]) -> None:
    info = marker["info"]
    if marker["source"] == "none":
        return
    auto = f"; {info['auto']} accepted without a human, {info['audit']} audited" if "auto" in info else ""
    th = info.get("threshold")
    cal = (f" (threshold {th:.4f} from {info['calibration_n']} calibration labels)" if th is not None
           else f" (no threshold yet: {info['calibration_n']} calibration labels)") if "calibration_n" in info else ""
    say("round %d · labels: proposals by %s%s%s", round_no, marker["source"], auto, cal)


def _shown_from_input(ctx: CampaignContext, round_no: int, shown: dict[str, str]) -> dict:
    """The Prefect input's ``shown`` as ``Shown`` per example (confidence from the stored proposal)."""
    from alft.store.batches import Shown

    if not shown:
        return {}
    stored = {p["example_id"]: p for p in ctx.store.proposals(ctx.name, round_no)}
    if ctx.config.task == "generation":
        return {str(ex): Shown("draft", draft=str(text)) for ex, text in shown.items()}
    out = {}
    for ex, lab in shown.items():
        p = stored.get(str(ex))
        conf = p["confidence"] if p is not None and p["label"] == lab else None
        out[str(ex)] = Shown("label", str(lab), conf)
    return out


def _control(name: str, label: str):
    from prefect import task

    return task(name=name, task_run_name=f"round {{round_no}} · {label}", cache_policy=NO_CACHE)


@_control("request-labels", "ask for labels")
def request_labels(ctx: CampaignContext, round_no: int) -> LabelStatus:
    """Propose labels once, record the wait, publish where to label the batch, and report it."""
    from alft.campaign.prelabel import ensure_proposals

    mode = wait_mode(ctx.config.oracle.wait)
    if ctx.store.step_result(ctx.name, round_no, "labels") is None:
        _say_proposals(round_no, ensure_proposals(ctx, round_no))
    status = _status(ctx, round_no, mode)
    if not status.ready:
        _arm(ctx, round_no, mode)
        _publish(ctx, status)
    return status


@_control("collect-labels", "collect labels")
def collect_labels(
    ctx: CampaignContext, round_no: int, given: dict[str, Any] | None, key: str | None
) -> LabelStatus:
    """Write the labels a resumed run's input carried (once per input), report the batch."""
    from alft.human.labeling import LabelItem, submit

    mode = wait_mode(ctx.config.oracle.wait)
    if given and given.get("labels"):
        data = ctx.data
        shown = _shown_from_input(ctx, round_no, given.get("shown") or {})
        result = submit(
            ctx.store,
            ctx.name,
            [LabelItem(str(ex), str(lab), shown=shown.get(str(ex))) for ex, lab in given["labels"].items()],
            annotator=str(given.get("annotator") or "prefect-ui"),
            source="prefect",
            label_set=data.labels,
            overlap=ctx.config.oracle.policy(),
            round_=round_no,
            input_key=key,
        )
        say("round %d · labels: %d from the Prefect run input (%d unchanged)", round_no, result.written, result.unchanged)
    elif key is not None:
        # An input without labels (a route resuming the run) still uses up its key: the
        # next wait must get a new one, or Prefect would hand this input back again.
        store = ctx.store
        with store.transaction() as conn:
            store.consume_input(conn, ctx.name, key, round_no)
    status = _status(ctx, round_no, mode)
    if not status.ready:
        _arm(ctx, round_no, mode)
    return status


@step_task("labels", "wait for labels")
def wait_for_labels(ctx: CampaignContext, round_no: int) -> dict:
    """Close the round's labeling: simulated answers, or what people gave, read from the store."""
    store = ctx.store
    oracle = ctx.config.oracle

    def simulated():
        from alft.campaign.prelabel import ensure_proposals
        from alft.human.proposals import batch_shown

        batch = store.selections(ctx.name, round_no)
        if not batch:
            raise LabelError(f"round {round_no} has no selected batch to label")
        marker = ensure_proposals(ctx, round_no)
        _say_proposals(round_no, marker)
        have = store.current_labels(ctx.name, overlap=oracle.policy())
        pool = ctx.data.pool
        if pool.gold is None:
            raise LabelError("the simulated oracle needs the pool's gold label column")
        todo = [(s["example_id"], pool.gold[s["pool_id"]]) for s in batch if s["example_id"] not in have]
        # the gold oracle "sees" what a person would: its labels are accepted or corrected proposals
        shown, _ = batch_shown(ctx, round_no, batch)

        def commit(conn):
            if todo:
                store.add_label_events(
                    conn, ctx.name, round_no, todo, oracle.annotator, "simulated",
                    shown=[shown.get(ex) for ex, _ in todo],
                )

        result = {"n_requested": len(batch), "n_labeled": len(todo), "annotator": oracle.annotator}
        if "auto" in marker["info"]:
            result.update(auto=marker["info"]["auto"], audit=marker["info"]["audit"])
        return result, commit

    def human():
        from collections import Counter

        from alft.human.labeling import pending_batch, readiness

        batch = pending_batch(store, ctx.name, oracle.policy())
        if batch is None or batch.round != round_no:
            raise LabelError(f"round {round_no} has no batch waiting for labels")
        ready, reason = readiness(batch, store.wait_row(ctx.name, round_no), oracle.model_dump())
        if not ready:
            raise LabelError(f"round {round_no} cannot close its labeling yet: {reason}")
        def closing(b, events) -> dict:
            rest = b.remaining()
            return {
                "n_requested": len(b.items),
                "n_labeled": len(b.items) - len(rest),
                "released": rest,
                "annotators": dict(Counter(e["annotator"] for e in events)),
                "sources": dict(Counter(e["source"] for e in events)),
            }

        def commit(conn):
            # Under the campaign lock no submission can land between this read and the
            # release: a label that arrived since the check above is kept, not released.
            store.lock_campaign(conn, ctx.name)
            now = pending_batch(store, ctx.name, oracle.policy(), conn=conn)
            if now is None or now.round != round_no:
                raise LabelError(f"round {round_no} stopped waiting for labels while it was being closed")
            final = closing(now, store.batch_label_events(ctx.name, round_no, conn=conn))
            store.release_selections(conn, ctx.name, round_no, final["released"])
            return final

        return {**closing(batch, store.batch_label_events(ctx.name, round_no)), "reason": reason}, commit

    result = run_step(ctx, round_no, "labels", simulated if oracle.gold else human)
    who = result.get("annotator") or ", ".join(sorted(result.get("annotators", {}))) or "-"
    auto = f" ({result['auto']} more accepted without a human)" if result.get("auto") else ""
    say("round %d · labels: %d from %s%s", round_no, result["n_labeled"], who, auto)
    if result.get("released"):
        say("round %d · labels: %d unlabeled examples returned to the pool", round_no, len(result["released"]))
    return result
