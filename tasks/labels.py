"""Step 4: get labels for the selected batch (simulated oracle: the gold column)."""

from __future__ import annotations


from alft.campaign import CampaignContext, campaign_data, open_store, run_step
from alft.errors import LabelError
from tasks._common import say, step_task


@step_task("labels", "wait for labels")
def wait_for_labels(ctx: CampaignContext, round_no: int) -> dict:
    """Ask the oracle for the persisted batch's labels and record them as label events."""
    store = open_store(ctx.config)
    oracle = ctx.config.oracle

    def compute():
        batch = store.selections(ctx.name, round_no)
        if not batch:
            raise LabelError(f"round {round_no} has no selected batch to label")
        have = store.current_labels(ctx.name)
        pool = campaign_data(ctx.config).pool
        if pool.gold is None:
            raise LabelError("the simulated oracle needs the pool's gold label column")
        todo = [(s["example_id"], pool.gold[s["pool_id"]]) for s in batch if s["example_id"] not in have]

        def commit(conn):
            if todo:
                store.add_label_events(conn, ctx.name, round_no, todo, oracle.annotator, "simulated")

        return {"n_requested": len(batch), "n_labeled": len(todo), "annotator": oracle.annotator}, commit

    result = run_step(ctx, round_no, "labels", compute)
    say("round %d · labels: %d from %s", round_no, result["n_labeled"], result["annotator"])
    return result
