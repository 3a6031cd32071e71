"""Step 7: apply the stop rules to the campaign history."""

from __future__ import annotations


from alft.campaign.context import CampaignContext, run_step
from tasks._common import say, step_task
from tasks.campaign import stop_decision, stop_history


@step_task("stop", "stop-check")
def stop_check(ctx: CampaignContext, round_no: int) -> dict:
    """Decide from the store's history whether the campaign stops; close the round."""
    store = ctx.store

    def compute():
        from strategies.stopping import prediction_kappas

        history = store.history(ctx.name)
        decision = stop_decision(ctx, history)
        n_labels = history[-1].n_labels if history else 0
        extra: dict = {}
        if decision.forecast is not None:
            extra["forecast"] = dict(decision.forecast)
        if ctx.config.stop.stabilizing is not None:
            kappas = prediction_kappas(stop_history(ctx, history))
            extra["kappa"] = kappas[-1] if kappas else None

        def commit(conn):
            if decision.stop:
                store.set_stop(conn, ctx.name, round_no, decision.rule, decision.reason)
            store.finish_round(conn, ctx.name, round_no, n_labels)

        return {"stop": decision.stop, "rule": decision.rule, "reason": decision.reason, **extra}, commit

    result = run_step(ctx, round_no, "stop", compute)
    fc = result.get("forecast")
    if fc and fc.get("status") == "ok":
        say(
            "round %d · stop-check: forecast %s %.4f at %d labels (%.2e per label, threshold %.2e)",
            round_no, fc["metric"], fc["predicted_next"], fc["n_next"], fc["gain_per_label"], fc["min_gain_per_label"],
        )
    elif fc:
        say("round %d · stop-check: no forecast yet (%s)", round_no, fc.get("message") or fc.get("status"))
    if result.get("kappa") is not None:
        say("round %d · stop-check: kappa with the previous round's predictions %.4f", round_no, result["kappa"])
    say("round %d · stop-check: %s", round_no, result["reason"] if result["stop"] else "continue")
    return result
