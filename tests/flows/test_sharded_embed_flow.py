"""Sharded embedding inside real Prefect flow runs: thread pool, and a local Dask cluster.

Vectors must equal the unsharded path's bit for bit, every shard must be its own task run
(``round 0 · embed pool i/n``), and a second run must embed nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
from prefect import flow

from alft.config import load_config
from alft.models.embedcache import text_keys
from tests.conftest import SHARED, campaign_yaml, read_jsonl

pytestmark = pytest.mark.slow

TEXTS = [r["text"] for r in read_jsonl(SHARED / "banking77" / "train.jsonl")[:2000]]


@flow(name="alft-embed-shards-test", persist_result=False)
def embed_flow(config, texts: list[str]) -> dict:
    from tasks.embed import embed_texts

    return embed_texts(config, texts, "pool", 0)


def config(tmp_path, files, model, cache, **model_opts):
    over = [f"model.cache_dir={cache}", "model.num_threads=1"] + [f"model.{k}={v}" for k, v in model_opts.items()]
    return load_config(campaign_yaml(tmp_path, files, model), over)


def vectors(cfg) -> np.ndarray:
    from alft.campaign.context import embedding_cache

    return embedding_cache(cfg).get(text_keys(TEXTS))


@pytest.fixture(scope="module")
def reference(banking_subset, tiny_model, tmp_path_factory):
    from alft.campaign.context import embed_with_cache

    tmp = tmp_path_factory.mktemp("ref")
    cfg = config(tmp, banking_subset, tiny_model, tmp / "cache")
    embed_with_cache(cfg, TEXTS, "pool")
    return vectors(cfg)


def shard_task_runs(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    assert all(r.state.is_completed() for r in runs)
    return sorted(r.name for r in runs)


def run_twice(flow_fn, cfg):
    state = flow_fn(cfg, TEXTS, return_state=True)
    first = state.result()
    names = shard_task_runs(state.state_details.flow_run_id)
    second = flow_fn(cfg, TEXTS)
    return first, names, second


def test_shards_on_the_thread_runner(prefect_server, reference, banking_subset, tiny_model, tmp_path):
    cfg = config(tmp_path, banking_subset, tiny_model, tmp_path / "cache", shards=3)
    first, names, second = run_twice(embed_flow, cfg)
    assert first["embedded"] == len(set(TEXTS)) and first["shards"] == 3
    assert names == ["round 0 · embed pool 1/3", "round 0 · embed pool 2/3", "round 0 · embed pool 3/3"]
    assert np.array_equal(vectors(cfg), reference)
    assert second["embedded"] == 0 and second["shards"] == 0


@pytest.fixture(scope="module")
def dask_cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def test_shards_on_a_local_dask_cluster(prefect_server, dask_cluster, reference, banking_subset, tiny_model, tmp_path):
    from alft.campaign.sharded import task_runner_for

    cfg = config(
        tmp_path, banking_subset, tiny_model, tmp_path / "cache", shards=4, task_runner="dask", dask_address=dask_cluster
    )
    runner = task_runner_for(cfg)
    first, names, second = run_twice(embed_flow.with_options(task_runner=runner), cfg)
    assert first["embedded"] == len(set(TEXTS)) and first["shards"] == 4
    assert first["processes"] == 2  # the two worker processes, not this one
    assert len(names) == 4 and all(n.startswith("round 0 · embed pool ") for n in names)
    assert np.array_equal(vectors(cfg), reference)
    assert second["embedded"] == 0 and second["shards"] == 0


def test_shards_on_a_cluster_the_runner_creates(prefect_server, reference, banking_subset, tiny_model, tmp_path):
    from prefect_dask import DaskTaskRunner

    cfg = config(tmp_path, banking_subset, tiny_model, tmp_path / "cache", shards=2, task_runner="dask")
    runner = DaskTaskRunner(
        cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"}
    )
    first = embed_flow.with_options(task_runner=runner)(cfg, TEXTS)
    assert first["embedded"] == len(set(TEXTS)) and first["shards"] == 2
    assert np.array_equal(vectors(cfg), reference)
