"""Sharded embedding: the texts a cache lacks, split into shards that embed independently.

``plan_shards`` forms exactly the batches the unsharded path (``embed_with_cache``) would
run, and deals them round-robin to ``n`` shards; each shard embeds its own batches into
its own staging cache (``EmbeddingCache.shard``), so shard writers never share a file or a
lock, wherever they run (threads, Dask worker processes). ``merge_shards`` copies the
shards into the main cache in one commit.

Why the vectors are bit-identical to the unsharded path: a vector depends on the batch it
was computed in (padding width, matmul shapes), and every batch here is one of the
unsharded path's batches, embedded whole. (Thread count does not change MiniLM's vectors
on this CPU: tested 1, 2 and 3 torch threads.)

Why a re-run after a crash redoes only unfinished shards: a shard's folder name is the
digest of its text keys and batch grouping, and the plan is a pure function of the texts
the main cache lacks, which do not change until the merge commits. So the re-run plans the
same shards, finds the finished ones complete in their folders (their tasks return at
once) and the committed batches of an unfinished one, and embeds only the rest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from alft import faults
from alft.config import CampaignConfig
from alft.errors import AlftError

log = logging.getLogger("alft")


class ShardPlan:
    """One shard: its texts (in batch order) and batches as position ranges into them.

    ``index`` (0-based) of ``count``; ``name``: the staging folder, a digest of the keys and
    the grouping; ``sizes``: rows of each batch, in order. Carries the cache's folder so a
    worker process elsewhere (sharing the filesystem) writes where the planner reads,
    whatever its own ``$ALFT_CACHE_DIR``.

    A plain class on purpose: Prefect walks dataclasses, pydantic models and collections
    among task parameters (looking for futures) and rebuilds them, which would copy every
    text (and its ``quote`` wrapper comes out of prefect-dask's walk as a bare tuple).
    """

    __slots__ = ("index", "count", "name", "texts", "sizes", "cache_root", "model_key")

    def __init__(
        self, *, index: int, count: int, name: str, texts: tuple[str, ...], sizes: tuple[int, ...],
        cache_root: str, model_key: str,
    ) -> None:
        self.index, self.count, self.name = index, count, name
        self.texts, self.sizes = texts, sizes
        self.cache_root, self.model_key = cache_root, model_key

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        return f"ShardPlan({self.index + 1}/{self.count}, {len(self.texts)} texts, {len(self.sizes)} batches, {self.name})"

    def groups(self) -> list[np.ndarray]:
        offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        return [np.arange(offsets[j], offsets[j + 1]) for j in range(len(self.sizes))]


def _main_cache(cfg: CampaignConfig, root: str, key: str):
    from alft.campaign.context import encoder_for
    from alft.models.embedcache import EmbeddingCache

    return EmbeddingCache(
        Path(root),
        key,
        encoder_for(cfg).dim,
        describe={
            "model": cfg.model.path, "max_length": cfg.model.max_length, "pooling": cfg.model.pooling, "normalize": True,
        },
    )


def plan_shards(cfg: CampaignConfig, texts: list[str], n: int) -> list[ShardPlan]:
    """Shards of the distinct texts the cache lacks (empty when every text is cached).

    The batches are ``Encoder.batches`` of those texts, in the order the unsharded path
    forms them; batch ``j`` goes to shard ``j mod n`` (batches hold ~2k padded tokens
    each, so dealing them round-robin balances the shards' work).
    """
    from alft.campaign.context import embedding_cache, encoder_for, model_key
    from alft.models.embedcache import text_keys

    cache = embedding_cache(cfg)
    keys = text_keys(texts)
    missing = np.flatnonzero(cache.lookup(keys) < 0)
    if missing.size == 0:
        cache.prune_shards()
        return []
    _, first = np.unique(keys[missing], axis=0, return_index=True)
    todo = missing[np.sort(first)]
    todo_texts = [texts[i] for i in todo]
    todo_keys = keys[todo]
    batches = encoder_for(cfg).batches(todo_texts)
    n = max(1, min(n, len(batches)))
    root, mkey = str(cache.dir.parent), model_key(cfg)
    plans = []
    for s in range(n):
        mine = batches[s::n]
        pos = np.concatenate(mine)
        sizes = tuple(len(b) for b in mine)
        h = hashlib.blake2b(digest_size=12)
        h.update(np.ascontiguousarray(todo_keys[pos]).tobytes())
        h.update(np.asarray(sizes, dtype=np.int64).tobytes())
        plans.append(
            ShardPlan(
                index=s,
                count=n,
                name=h.hexdigest(),
                texts=tuple(todo_texts[i] for i in pos),
                sizes=sizes,
                cache_root=root,
                model_key=mkey,
            )
        )
    return plans


def shard_threads(cfg: CampaignConfig) -> int:
    """Torch threads for one shard: ``model.num_threads``; in a Dask worker its thread
    count (workers x threads should match the cores); else every core."""
    if cfg.model.num_threads:
        return cfg.model.num_threads
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        return os.cpu_count() or 1


def embed_shard(cfg: CampaignConfig, plan: ShardPlan) -> dict[str, Any]:
    """Embed the batches of ``plan`` missing from its staging cache; commit as it goes.

    Returns ``index``, ``texts``, ``embedded``, ``cached`` and ``seconds``.
    """
    import torch

    from alft.campaign.context import encoder_for
    from alft.models.embedcache import text_keys

    t0 = time.perf_counter()
    main = _main_cache(cfg, plan.cache_root, plan.model_key)
    keys = text_keys(plan.texts)
    out = {"index": plan.index, "texts": len(plan.texts), "embedded": 0, "cached": len(plan.texts), "pid": os.getpid()}
    if (main.lookup(keys) >= 0).all():  # merged by an earlier (or concurrent) run
        return {**out, "seconds": round(time.perf_counter() - t0, 4)}
    shard = main.shard(plan.name)
    with shard.writer() as w:
        have = shard.lookup(keys) >= 0
        groups = [g for g in plan.groups() if not have[g].all()]  # whole batches are committed
        if groups:
            n = shard_threads(cfg)
            if torch.get_num_threads() != n:
                torch.set_num_threads(n)
            enc = encoder_for(cfg)
            sub = np.concatenate(groups)  # shard positions of the texts to embed
            tokens = enc.tokenize([plan.texts[i] for i in sub])
            flush_every = max(1, 1024 // cfg.model.batch_size)  # as the unsharded path
            pend_pos: list[np.ndarray] = []
            pend_vec: list[np.ndarray] = []
            start = 0
            for i, g in enumerate(groups):
                local = np.arange(start, start + len(g))  # positions in `tokens`
                start += len(g)
                pend_vec.append(enc.encode_batch(local, tokens))
                pend_pos.append(g)
                if (i + 1) % flush_every == 0 or i == len(groups) - 1:
                    p = np.concatenate(pend_pos)
                    w.append(keys[p], np.concatenate(pend_vec))
                    pend_pos, pend_vec = [], []
                    faults.point("embed.shard.flush")
            embedded = int(sub.size)
            out.update(embedded=embedded, cached=len(plan.texts) - embedded, threads=n)
    return {**out, "seconds": round(time.perf_counter() - t0, 4)}


def merge_shards(cfg: CampaignConfig, plans: list[ShardPlan]) -> int:
    """Copy every shard into the main cache (one commit) and delete the shard folders."""
    from alft.models.embedcache import text_keys

    if not plans:
        return 0
    main = _main_cache(cfg, plans[0].cache_root, plans[0].model_key)
    shards = [main.shard(p.name) for p in plans]
    for p, sh in zip(plans, shards):
        if sh.count() < len(p.texts) and (main.lookup(text_keys(p.texts)) < 0).any():
            raise AlftError(f"embedding shard {p.index + 1}/{p.count} ({sh.dir}) is incomplete: run the embed again")
    return main.merge(shards)


def embed_sharded_inline(cfg: CampaignConfig, texts: list[str], n: int) -> dict[str, int]:
    """The sharded path without Prefect: shards one after the other in this process."""
    plans = plan_shards(cfg, texts, n)
    results = [embed_shard(cfg, p) for p in plans]
    merge_shards(cfg, plans)
    return summarize(texts, plans, results)


def summarize(texts: list[str], plans: list[ShardPlan], results: list[dict]) -> dict[str, int]:
    """``texts``, ``embedded`` (distinct texts embedded now), ``cached`` (the other texts),
    ``shards`` and ``processes`` (how many processes ran them)."""
    embedded = sum(r["embedded"] for r in results)
    return {
        "texts": len(texts),
        "embedded": embedded,
        "cached": len(texts) - embedded,
        "shards": len(plans),
        "processes": len({r["pid"] for r in results}),
    }


def task_runner_for(cfg: CampaignConfig):
    """The campaign flow's task runner for ``model.task_runner``; None = the flow's default."""
    if cfg.model.task_runner == "thread":
        return None
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise AlftError(
            "model.task_runner 'dask' needs prefect-dask: pip install 'alft[dask]'"
        ) from None
    if cfg.model.dask_address:
        return DaskTaskRunner(address=cfg.model.dask_address)
    workers = max(1, min(cfg.model.shards, os.cpu_count() or 1))
    return DaskTaskRunner(
        # ":0": the scheduler's HTTP endpoint (health, metrics; no bokeh dashboard) on a free port
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": ":0"}
    )
