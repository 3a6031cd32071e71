"""Step 1: embed the pool and the eval split with the campaign's encoder (cached on disk)."""

from __future__ import annotations


from alft.campaign import CampaignContext, campaign_data, embed_with_cache, model_key, run_step
from tasks._common import say, step_task


@step_task("embed", "embed")
def embed_pool(ctx: CampaignContext, round_no: int) -> dict:
    """Make sure every pool and eval text has a cached embedding; embed only the missing ones."""

    def compute():
        data = campaign_data(ctx.config)
        # The result records what is embedded, not how much work it took: a cache hit
        # and a fresh embed must leave the same campaign state.
        out = {"model_key": model_key(ctx.config)}
        pool = embed_with_cache(ctx.config, data.pool.texts, "pool")
        out["pool_texts"] = pool["texts"]
        fresh = pool["embedded"]
        if data.eval is not None:
            ev = embed_with_cache(ctx.config, data.eval.texts, "eval")
            out["eval_texts"] = ev["texts"]
            fresh += ev["embedded"]
        say("round %d · embed: %d texts newly embedded, the rest from the cache", round_no, fresh)
        return out, None

    result = run_step(ctx, round_no, "embed", compute)
    say("round %d · embed: %d pool texts ready", round_no, result["pool_texts"])
    return result
