"""Step 7: apply the stop rules to the campaign history."""

from __future__ import annotations


from alft.campaign import CampaignContext, open_store, run_step
from tasks._common import say, step_task
from tasks.campaign import stop_decision


@step_task("stop", "stop-check")
def stop_check(ctx: CampaignContext, round_no: int) -> dict:
    """Decide from the store's history whether the campaign stops; close the round."""
    store = open_store(ctx.config)

    def compute():
        history = store.history(ctx.name)
        decision = stop_decision(ctx, history)
        n_labels = history[-1].n_labels if history else 0

        def commit(conn):
            if decision.stop:
                store.set_stop(conn, ctx.name, round_no, decision.rule, decision.reason)
            store.finish_round(conn, ctx.name, round_no, n_labels)

        return {"stop": decision.stop, "rule": decision.rule, "reason": decision.reason}, commit

    result = run_step(ctx, round_no, "stop", compute)
    say("round %d · stop-check: %s", round_no, result["reason"] if result["stop"] else "continue")
    return result
