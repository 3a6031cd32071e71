"""Re-embed a campaign's pool (and eval split) with its current model: fill the embedding cache.

Run it after changing ``model.path`` or the model folder's weights: the cache is keyed by
the model's content, so the new model starts with an empty folder. The result counts the
texts found in the cache and the texts embedded.
"""

# No `from __future__ import annotations` here: a deployment validates its parameters
# against the real classes, which string annotations would hide.
import logging

from prefect import flow

from alft.params import CampaignRef
from tasks.reembed import ReembedResult, campaign_model, embed_split
from tasks.scheduling import load_campaign

log = logging.getLogger("alft")


@flow(name="alft-re-embed", flow_run_name="re-embed · {campaign.config_file}", persist_result=True, validate_parameters=True)
def reembed(campaign: CampaignRef) -> ReembedResult:
    """Embed every pool and eval text the cache lacks for the campaign's model; report embedded vs cached.

    Args:
        campaign: the campaign's config file and overrides (``model.path=...`` names another model)
    """
    from prefect.logging import get_run_logger

    from alft.campaign.context import model_key

    cfg = load_campaign(campaign)
    splits = [embed_split(cfg, "pool")]
    if cfg.data.eval is not None:
        splits.append(embed_split(cfg, "eval"))
    result = ReembedResult(
        campaign=cfg.name,
        model=cfg.model.path,
        model_key=model_key(cfg),
        cache_dir=str(cfg.cache_dir()),
        splits=splits,
        texts=sum(s.texts for s in splits),
        cached=sum(s.cached for s in splits),
        embedded=sum(s.embedded for s in splits),
        campaign_model=campaign_model(cfg),
    )
    line = (
        f"re-embed {cfg.name}: {result.texts} texts, {result.cached} from the cache, {result.embedded} embedded "
        f"(model {result.model}, cache {result.cache_dir}/{result.model_key})"
    )
    log.info(line)
    get_run_logger().info(line)
    return result
