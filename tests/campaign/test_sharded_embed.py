"""Sharded embedding without Prefect: bit-identical to the unsharded path, resumable per shard."""

from __future__ import annotations

import numpy as np
import pytest

from alft.config import load_config
from alft.models.embedcache import text_keys
from tests.conftest import SHARED, campaign_yaml, read_jsonl

TEXTS = [r["text"] for r in read_jsonl(SHARED / "banking77" / "train.jsonl")[:4000]]


def config(tmp_path, files, model, cache, **model_opts):
    over = [f"model.cache_dir={cache}", "model.num_threads=1"] + [f"model.{k}={v}" for k, v in model_opts.items()]
    return load_config(campaign_yaml(tmp_path, files, model), over)


def cached(cfg, texts) -> np.ndarray:
    from alft.campaign.context import embedding_cache

    return embedding_cache(cfg).get(text_keys(texts))


@pytest.fixture
def reference(tmp_path, banking_subset, tiny_model):
    """The unsharded path's vectors of TEXTS (after 500 of them were cached first)."""
    from alft.campaign.context import embed_with_cache

    cfg = config(tmp_path, banking_subset, tiny_model, tmp_path / "ref-cache")
    embed_with_cache(cfg, TEXTS[1000:1500], "pre")
    embed_with_cache(cfg, TEXTS, "all")
    return cached(cfg, TEXTS)


def test_sharded_vectors_are_bit_identical_and_a_rerun_embeds_nothing(reference, tmp_path, banking_subset, tiny_model):
    from alft.campaign.context import embed_with_cache, embedding_cache
    from alft.campaign.sharded import embed_sharded_inline

    cfg = config(tmp_path, banking_subset, tiny_model, tmp_path / "cache", shards=3)
    embed_with_cache(cfg, TEXTS[1000:1500], "pre")  # same starting cache as the reference
    texts = TEXTS + TEXTS[:50]  # duplicates are embedded once
    distinct = len(set(TEXTS[:1000] + TEXTS[1500:]))
    first = embed_sharded_inline(cfg, texts, 3)
    assert first == {"texts": len(texts), "embedded": distinct, "cached": len(texts) - distinct, "shards": 3, "processes": 1}
    got = cached(cfg, TEXTS)
    assert got.dtype == np.float32 and np.array_equal(got, reference)  # bit for bit
    cache = embedding_cache(cfg)
    assert cache.count() == len(set(TEXTS))
    assert not (cache.dir / "shards").exists() or not any((cache.dir / "shards").iterdir())
    again = embed_sharded_inline(cfg, texts, 3)
    assert again == {"texts": len(texts), "embedded": 0, "cached": len(texts), "shards": 0, "processes": 0}


def test_a_rerun_after_a_crash_redoes_only_unfinished_shards(reference, tmp_path, banking_subset, tiny_model, monkeypatch):
    import alft.campaign.sharded as sharded
    from alft.campaign.context import embed_with_cache

    cfg = config(tmp_path, banking_subset, tiny_model, tmp_path / "cache", shards=3)
    embed_with_cache(cfg, TEXTS[1000:1500], "pre")
    plans = sharded.plan_shards(cfg, TEXTS, 3)
    assert len(plans) == 3 and len({p.name for p in plans}) == 3
    assert sum(len(p.texts) for p in plans) == len(set(TEXTS)) - 500
    # shard 1 finished, shard 2 killed after its first committed flush, shard 3 never started
    assert sharded.embed_shard(cfg, plans[0])["embedded"] == len(plans[0].texts)

    class Killed(Exception):
        pass

    def kill(name):
        raise Killed(name)

    monkeypatch.setattr(sharded.faults, "point", kill)
    with pytest.raises(Killed, match="embed.shard.flush"):
        sharded.embed_shard(cfg, plans[1])
    monkeypatch.undo()
    flush = 1024 // cfg.model.batch_size
    done_in_2 = sum(plans[1].sizes[:flush])
    assert 0 < done_in_2 < len(plans[1].texts)

    # the re-run plans the same shards (nothing was merged) and embeds only what is missing
    assert [p.name for p in sharded.plan_shards(cfg, TEXTS, 3)] == [p.name for p in plans]
    out = sharded.embed_sharded_inline(cfg, TEXTS, 3)
    assert out["embedded"] == len(plans[1].texts) - done_in_2 + len(plans[2].texts)
    assert np.array_equal(cached(cfg, TEXTS), reference)


def test_merge_keeps_rows_another_writer_added(tmp_path):
    """Merging skips keys the main cache already has; one commit for all shards."""
    from alft.models.embedcache import EmbeddingCache

    main = EmbeddingCache(tmp_path, "m", 4)
    keys = text_keys([f"t{i}" for i in range(10)])
    vecs = np.arange(40, dtype=np.float32).reshape(10, 4)
    with main.writer() as w:
        w.append(keys[:3], vecs[:3])
    a, b = main.shard("a"), main.shard("b")
    with a.writer() as w:
        w.append(keys[2:6], vecs[2:6])
    with b.writer() as w:
        w.append(keys[6:], vecs[6:])
    meta_writes = []
    import alft.models.embedcache as ec

    real = ec.atomic_write_text
    ec.atomic_write_text = lambda *a, **k: (meta_writes.append(a[0]), real(*a, **k))
    try:
        assert main.merge([a, b]) == 7
    finally:
        ec.atomic_write_text = real
    assert len(meta_writes) == 1  # one commit point for the whole merge
    assert main.count() == 10 and np.array_equal(main.get(keys), vecs)
    assert not a.dir.exists() and not b.dir.exists()


def test_config_keys(tmp_path, banking_subset, tiny_model):
    from alft.errors import ConfigError
    from alft.campaign.sharded import task_runner_for

    cfg = config(tmp_path, banking_subset, tiny_model, tmp_path / "c")
    assert (cfg.model.shards, cfg.model.task_runner, cfg.model.dask_address) == (1, "thread", None)
    assert task_runner_for(cfg) is None
    with pytest.raises(ConfigError, match="dask_address needs model.task_runner: dask"):
        config(tmp_path, banking_subset, tiny_model, tmp_path / "c", dask_address="tcp://127.0.0.1:8786")
    with pytest.raises(ConfigError, match="shards"):
        config(tmp_path, banking_subset, tiny_model, tmp_path / "c", shards=0)
    runner = task_runner_for(config(tmp_path, banking_subset, tiny_model, tmp_path / "c", task_runner="dask", shards=4))
    assert type(runner).__name__ == "DaskTaskRunner"
    assert runner.cluster_kwargs["threads_per_worker"] == 1 and runner.cluster_kwargs["processes"] is True
