"""What every route shows an annotator with each example of the pending batch.

The round's stored proposals (``alft.campaign.prelabel``), except those accepted without a
human (``auto``) and those audited blind (``audit``: shown nothing). Two cases have no
stored proposals and keep what the page showed before proposals were stored:

* a classification round whose proposals are not computed yet (a batch selected before the
  store had them, or the labels step has not started): with ``prelabel: model``, the
  previous classifier's top label from the score step's ``probs.npy``, when it exists;
* a generation campaign with ``prelabel: model``: the data's candidate response as a draft.

``preselected`` is the page's rule: a proposal is pre-selected (Enter accepts it) only at or
above ``oracle.preselect_min_confidence``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from alft.campaign.context import CampaignContext
from alft.store.batches import Shown


def batch_shown(
    ctx: CampaignContext, round_no: int, items: Sequence[dict[str, Any]], store=None
) -> tuple[dict[str, Shown], bool]:
    """example id -> what is shown with it (absent: nothing); and whether that is final (the
    round's proposals are stored, so it cannot change). ``items``: the batch's selections
    rows; ``store``: the store to read (default the context's)."""
    from alft.campaign.prelabel import saved_probs

    cfg = ctx.config
    source = cfg.oracle.prelabel
    if source == "none":
        return {}, True
    pool = ctx.data.pool
    generation = cfg.task == "generation"
    if generation and source == "model":
        if pool.candidates is None:
            return {}, True
        return {
            s["example_id"]: Shown("draft", draft=pool.candidates[int(s["pool_id"])])
            for s in items
            if pool.candidates[int(s["pool_id"])].strip()
        }, True
    store = store if store is not None else ctx.store
    if store.prelabel_round(ctx.name, round_no) is not None:
        out = {}
        for p in store.proposals(ctx.name, round_no):
            if p["decision"] is not None:
                continue  # auto: nobody is asked; audit: asked blind
            out[p["example_id"]] = (
                Shown("draft", draft=p["label"]) if generation else Shown("label", p["label"], p["confidence"])
            )
        return out, True
    if generation or source != "model" or not items:
        return {}, False
    pids = np.asarray([int(s["pool_id"]) for s in items], dtype=np.int64)
    probs = saved_probs(ctx, round_no, pids)  # [k, C] or None
    if probs is None:
        return {}, False
    labels = ctx.data.labels
    top = probs.argmax(axis=1)
    return {
        s["example_id"]: Shown("label", labels[int(top[i])], float(probs[i, top[i]])) for i, s in enumerate(items)
    }, False


def preselected(shown: Shown | None, min_confidence: float) -> bool:
    """Whether the page pre-selects ``shown`` (Enter accepts it): a label proposal at or above
    ``min_confidence``; a proposal without a confidence never is."""
    return (
        shown is not None
        and shown.kind == "label"
        and shown.confidence is not None
        and shown.confidence >= min_confidence
    )
