"""Step 1: embed the pool and the eval split with the campaign's encoder (cached on disk)."""

from __future__ import annotations


from prefect import task
from prefect.cache_policies import NO_CACHE

from alft.campaign.context import CampaignContext, embed_with_cache, model_key, run_step
from alft.config import CampaignConfig
from tasks._common import say, step_task


@task(
    name="embed shard",
    task_run_name="round {round_no} · embed {label} {number}/{count}",
    cache_policy=NO_CACHE,  # the store and the shard folders decide what is done
    persist_result=False,
)
def embed_shard_task(config: CampaignConfig, shard, round_no: int, label: str, number: int, count: int) -> dict:
    """Embed one shard of the missing texts into its own staging folder of the cache."""
    from alft.campaign.sharded import embed_shard

    return embed_shard(config, shard)


def embed_texts(config: CampaignConfig, texts: list[str], label: str, round_no: int) -> dict:
    """Cache a vector for every text: in one piece, or (``model.shards`` > 1) in shards.

    Inside a flow run each shard is a task submitted to the flow's task runner (threads,
    or Dask workers with ``model.task_runner: dask``), then the shards are merged into the
    cache; outside one (``.fn`` calls, benchmarks) the shards run one after the other.
    """
    n = config.model.shards
    if n <= 1:
        return embed_with_cache(config, texts, label)
    from prefect.context import FlowRunContext
    from prefect.futures import wait

    from alft.campaign.sharded import embed_sharded_inline, merge_shards, plan_shards, summarize

    flow_ctx = FlowRunContext.get()
    if flow_ctx is None:
        return embed_sharded_inline(config, texts, n)
    plans = plan_shards(config, texts, n)
    runner = type(flow_ctx.task_runner).__name__
    if config.model.task_runner == "dask" and runner != "DaskTaskRunner":
        say("model.task_runner is dask but this flow runs on %s: the shards run there", runner)
    futures = [embed_shard_task.submit(config, p, round_no, label, p.index + 1, p.count) for p in plans]
    wait(futures)
    results = [f.result() for f in futures]  # raises the first failed shard's error
    merge_shards(config, plans)
    out = summarize(texts, plans, results)
    if plans:
        say(
            "round %d · embed %s: %d shards on %s, %d texts embedded",
            round_no, label, len(plans), runner, out["embedded"],
        )
    return out


@step_task("embed", "embed")
def embed_pool(ctx: CampaignContext, round_no: int) -> dict:
    """Make sure every pool and eval text has a cached embedding; embed only the missing ones."""

    def compute():
        data = ctx.data
        # The result records what is embedded, not how much work it took: a cache hit
        # and a fresh embed must leave the same campaign state.
        out = {"model_key": model_key(ctx.config)}
        pool = embed_texts(ctx.config, data.pool.texts, "pool", round_no)
        out["pool_texts"] = pool["texts"]
        fresh = pool["embedded"]
        if data.eval is not None:
            ev = embed_texts(ctx.config, data.eval.texts, "eval", round_no)
            out["eval_texts"] = ev["texts"]
            fresh += ev["embedded"]
        say("round %d · embed: %d texts newly embedded, the rest from the cache", round_no, fresh)
        return out, None

    result = run_step(ctx, round_no, "embed", compute)
    say("round %d · embed: %d pool texts ready", round_no, result["pool_texts"])
    return result
