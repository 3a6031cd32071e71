"""Re-embedding: fill the embedding cache for a campaign's model (after a model change).

The cache is content-addressed by (model digest, max_length, pooling), so a changed model
folder or a new ``model.path`` gets a folder of its own, empty until something embeds the
pool with it. Doing that ahead of time keeps the campaign's next embed step instant.
Nothing is written to the campaign store.
"""

from __future__ import annotations

from typing import Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from alft.campaign.context import campaign_data, embed_with_cache, model_key, open_store
from alft.config import CampaignConfig
from tasks._common import say


class SplitEmbedding(BaseModel):
    """One split's texts: how many were in the cache already, how many were embedded now."""

    split: Literal["pool", "eval"]
    texts: int
    cached: int = Field(description="texts whose vectors were in the cache already")
    embedded: int = Field(description="distinct texts embedded by this run")
    seconds: float


class ReembedResult(BaseModel):
    """What a re-embed run did (the flow's persisted result)."""

    campaign: str
    model: str = Field(description="model.path of the config")
    model_key: str = Field(description="the cache folder: model digest and encode options")
    cache_dir: str
    splits: list[SplitEmbedding]
    texts: int
    cached: int
    embedded: int
    campaign_model: Literal["same", "changed", "no campaign"] = Field(
        description="the model of the stored campaign of this name compared with this one; changed: the "
        "campaign cannot resume with it (start a new campaign under another name)"
    )


@task(name="embed split", task_run_name="embed {split}", cache_policy=NO_CACHE)
def embed_split(cfg: CampaignConfig, split: Literal["pool", "eval"]) -> SplitEmbedding:
    """Embed the split's texts that the cache lacks; count them and the ones it had."""
    import time

    data = campaign_data(cfg)
    texts = data.pool.texts if split == "pool" else data.eval.texts
    t0 = time.perf_counter()
    out = embed_with_cache(cfg, texts, split)
    res = SplitEmbedding(
        split=split,
        texts=len(texts),
        cached=out["cached"],
        embedded=out["embedded"],
        seconds=round(time.perf_counter() - t0, 3),
    )
    say("re-embed %s: %d texts, %d from the cache, %d embedded", split, res.texts, res.cached, res.embedded)
    return res


@task(name="compare campaign model", cache_policy=NO_CACHE)
def campaign_model(cfg: CampaignConfig) -> Literal["same", "changed", "no campaign"]:
    """Whether the stored campaign of this name was created with this model."""
    from tasks.scheduling import store_exists

    camp = open_store(cfg).campaign(cfg.name) if store_exists(cfg) else None
    if camp is None:
        return "no campaign"
    if camp["model_digest"] == model_key(cfg):
        return "same"
    say(
        "campaign %s was created with another model (%s); this cache (%s) serves a new campaign "
        "with this model: the existing one cannot resume with it",
        cfg.name,
        camp["model_digest"],
        model_key(cfg),
    )
    return "changed"
