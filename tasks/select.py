"""Step 3: select the batch and persist it before anyone is asked for labels."""

from __future__ import annotations

import json
import math

import numpy as np

from alft.campaign.context import RNG_CONTROL, RNG_SELECT, CampaignContext, blas_limits, run_step
from alft.campaign.control import CONTROL, control_size, draw_control
from alft.campaign.rounds import batch_size_for, query_inputs, round_files, round_strategy
from tasks._common import in_prefect_run, say, step_task


@step_task("select", "select")
def select_batch(ctx: CampaignContext, round_no: int) -> dict:
    """Choose the round's batch with the strategy and commit it to the store."""
    store = ctx.store
    pool = ctx.data.pool

    def compute():
        strategy, spec_name = round_strategy(ctx, round_no)
        files = round_files(ctx, round_no)
        candidates = np.load(files["candidates"])
        scores = np.load(files["scores"]) if files["scores"].exists() else None
        inputs = query_inputs(ctx, round_no, strategy.needs, candidates=candidates)
        k = batch_size_for(ctx, round_no, n_candidates=inputs.n_candidates)
        # random control arm (rounds >= 1): the strategy gets k - c places, with its usual inputs
        # and generator; the c control examples come from a stream of their own (alft/campaign/control.py)
        c = control_size(ctx.config.strategy.control_share, k) if round_no > 0 else 0
        with blas_limits(ctx.config):
            query = strategy.select(scores, inputs, k - c, ctx.rng(round_no, RNG_SELECT))
        rows = [
            (pool.ids[int(p)], int(p), None if math.isnan(s) else float(s))
            for p, s in zip(query.pool_ids, query.scores, strict=True)
        ]
        positions = list(range(k))
        control_rows: list = []
        control_positions: list = []
        if c:
            ctl, positions, control_positions = draw_control(
                ctx.rng(round_no, RNG_CONTROL), candidates, query.pool_ids, c, k
            )
            # the strategy's score of each control example, where it has scores (for analysis)
            at = np.searchsorted(candidates, ctl)  # candidates are sorted pool ids (score step)
            control_rows = [
                (pool.ids[int(p)], int(p), None if scores is None else float(scores[int(i)]))
                for p, i in zip(ctl, at, strict=True)
            ]

        def commit(conn):
            store.add_selections(conn, ctx.name, round_no, rows, spec_name, positions=positions)
            if control_rows:
                store.add_selections(conn, ctx.name, round_no, control_rows, CONTROL, positions=control_positions)

        result = {"strategy": spec_name, "k": k}
        if c:
            result["control"] = c
        if query.info:
            # JSON round trip: numpy scalars in a strategy's info must not reach the store
            result["info"] = json.loads(json.dumps(dict(query.info), default=_jsonable))
            if "arm" in query.info:
                result["arm"] = str(query.info["arm"])
        return result, commit

    result = run_step(ctx, round_no, "select", compute)
    arm = f" (arm {result['arm']})" if "arm" in result else ""
    ctl = f" ({result['control']} of them {CONTROL})" if result.get("control") else ""
    say("round %d · select: %d examples by %s%s%s", round_no, result["k"], result["strategy"], arm, ctl)
    if in_prefect_run():
        _publish_batch(ctx, round_no)
    return result


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"strategy info holds a {type(value).__name__}, which is not JSON")


def _publish_batch(ctx: CampaignContext, round_no: int) -> None:
    """A Prefect table artifact listing the selected examples (the UI's view of the batch)."""
    import re

    from prefect.artifacts import create_table_artifact

    pool = ctx.data.pool
    sel = ctx.store.selections(ctx.name, round_no)
    table = [
        {
            "position": s["position"],
            "id": s["example_id"],
            "score": None if s["score"] is None else round(s["score"], 5),
            "text": pool.texts[s["pool_id"]][:300],
        }
        for s in sel
    ]
    key = re.sub(r"[^a-z0-9-]", "-", f"{ctx.name}-round-{round_no}-batch")
    create_table_artifact(
        table=table,
        key=key,
        description=f"Round {round_no} of campaign {ctx.name}: {len(table)} examples selected by "
        + (", ".join(sorted({s["strategy"] for s in sel})) or "-"),
    )
