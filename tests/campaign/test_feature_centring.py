"""model.center: the campaign's features are centred on the pool's mean; the cache keeps raw vectors."""

from __future__ import annotations

import numpy as np

from alft.config import load_config
from alft.models.embedcache import text_keys
from tests.conftest import campaign_yaml

ONE_THREAD = ["model.num_threads=1"]


def test_features_are_centred_on_the_pool_mean_and_the_cache_stays_raw(tmp_path, banking_subset, tiny_model):
    from alft.campaign.context import (
        campaign_data,
        embedding_cache,
        features_for,
        model_key,
    )
    from alft.models.encoder import center, pool_mean

    path = campaign_yaml(tmp_path, banking_subset, tiny_model)
    over = [f"model.cache_dir={tmp_path / 'cache'}", *ONE_THREAD]
    raw_cfg = load_config(path, over)
    cfg = load_config(path, over + ["model.center=true"])
    data = campaign_data(cfg)
    raw_pool = features_for(raw_cfg, data, "pool")  # [n_pool, d]
    raw_eval = features_for(raw_cfg, data, "eval")  # [n_eval, d]
    pool = features_for(cfg, data, "pool")
    ev = features_for(cfg, data, "eval")

    assert pool.shape == raw_pool.shape and ev.shape == raw_eval.shape
    np.testing.assert_allclose(np.linalg.norm(pool, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ev, axis=1), 1.0, rtol=1e-5)
    # near zero after re-normalising (exactly zero before it), far from the raw pool's mean
    assert np.linalg.norm(pool.mean(0)) < 0.2 * np.linalg.norm(raw_pool.mean(0))
    # the eval split moves by the pool's mean, not its own
    mean = pool_mean(raw_pool)
    np.testing.assert_allclose(ev, center(raw_eval, mean), atol=1e-6)
    assert not np.allclose(ev, center(raw_eval, pool_mean(raw_eval)), atol=1e-4)
    # one cache for both: centring is data-dependent, the cache holds the raw vectors
    assert model_key(cfg) == model_key(raw_cfg)
    np.testing.assert_array_equal(embedding_cache(cfg).get(text_keys(data.pool.texts)), raw_pool)


def test_pooling_is_in_the_campaign_cache_key(tmp_path, banking_subset, tiny_model):
    from alft.campaign.context import embedding_cache, model_key

    path = campaign_yaml(tmp_path, banking_subset, tiny_model)
    over = [f"model.cache_dir={tmp_path / 'cache'}", *ONE_THREAD]
    mean = load_config(path, over)
    cls = load_config(path, over + ["model.pooling=cls"])
    assert model_key(mean).endswith("-len64-mean-l2") and model_key(cls).endswith("-len64-cls-l2")
    assert embedding_cache(mean).dir != embedding_cache(cls).dir
