"""Per-round helpers the step tasks share: strategy inputs, round files, models, training sets."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from alft.campaign import CampaignContext, campaign_data, embeddings_for, open_store
from alft.errors import LabelError, StoreError
from strategies import QueryInputs, Strategy, get_strategy


def round_strategy(ctx: CampaignContext, round_no: int) -> tuple[Strategy, str]:
    """The strategy of a round: the cold-start one for round 0, the main one after."""
    sc = ctx.strategy_config(round_no)
    return get_strategy(sc.name, **sc.options), sc.name


def round_files(ctx: CampaignContext, round_no: int) -> dict[str, Path]:
    d = ctx.round_dir(round_no)
    return {
        "candidates": d / "candidates.npy",
        "scores": d / "scores.npy",
        "probs": d / "probs.npy",
        "model": d / "model",
        "confusion": d / "confusion.png",
    }


def pool_embeddings(ctx: CampaignContext) -> np.ndarray:
    pool = campaign_data(ctx.config).pool
    return embeddings_for(ctx.config, pool.texts, pool.digest)


def eval_embeddings(ctx: CampaignContext) -> np.ndarray | None:
    ev = campaign_data(ctx.config).eval
    return None if ev is None else embeddings_for(ctx.config, ev.texts, ev.digest)


@lru_cache(maxsize=2)
def _load_model(path: str, stamp: float):
    from alft.trainers import load_model

    return load_model(Path(path))


def round_model(ctx: CampaignContext, round_no: int):
    """The model trained in ``round_no`` (read from the path its train step recorded)."""
    res = open_store(ctx.config).step_result(ctx.name, round_no, "train")
    if res is None:
        raise StoreError(f"round {round_no} has no trained model yet")
    path = ctx.workdir / res["model_dir"]
    if not path.exists():
        raise StoreError(f"the model of round {round_no} is missing from {path}")
    return _load_model(str(path), path.stat().st_mtime)


def predict_pool(ctx: CampaignContext, model, pool_ids: np.ndarray) -> np.ndarray:
    """Class probabilities ``[m, C]`` of the given pool ids (row positions follow ``pool_ids``)."""
    pool = campaign_data(ctx.config).pool
    emb = pool_embeddings(ctx)[pool_ids] if model.kind == "head" else None
    texts = [pool.texts[int(i)] for i in pool_ids]
    return model.predict_proba(texts, emb)


def query_inputs(
    ctx: CampaignContext, round_no: int, needs: frozenset[str], candidates: np.ndarray | None
) -> QueryInputs:
    """Build the strategy's inputs from the store: candidates, labeled ids, probs, embeddings.

    ``candidates`` (pool ids) comes from the score step's file when selecting, so select
    sees exactly what score saw; None computes it as the pool minus everything selected.
    """
    store = open_store(ctx.config)
    pool = campaign_data(ctx.config).pool
    selected = np.asarray(sorted(store.selected_pool_ids(ctx.name)), dtype=np.int64)
    candidates_given = candidates is not None
    if candidates is None:
        candidates = np.setdiff1d(np.arange(len(pool), dtype=np.int64), selected)
    probs = None
    if "probs" in needs:
        probs_file = ctx.round_dir(round_no) / "probs.npy"
        if candidates_given and probs_file.exists():  # select reuses what score computed
            probs = np.load(probs_file).astype(np.float64)
        else:
            probs = predict_pool(ctx, round_model(ctx, round_no - 1), candidates)
    emb = pool_embeddings(ctx) if "embeddings" in needs else None
    return QueryInputs(unlabeled=candidates, labeled=selected, probs=probs, embeddings=emb)


def batch_size_for(ctx: CampaignContext, round_no: int, n_candidates: int) -> int:
    """Labels to ask for this round: the first batch, then batch_size within the budget."""
    cfg = ctx.config
    n_selected_before = sum(
        1 for s in open_store(cfg).selections(ctx.name) if s["round"] < round_no
    )
    k = cfg.first_batch if round_no == 0 else min(cfg.batch_size, cfg.budget - n_selected_before)
    return max(0, min(k, n_candidates))


def training_set(ctx: CampaignContext) -> tuple[np.ndarray, np.ndarray]:
    """Pool ids and label indices of every labeled example (current labels, pool-id order)."""
    data = campaign_data(ctx.config)
    labels = open_store(ctx.config).current_labels(ctx.name)
    index = {lab: i for i, lab in enumerate(data.labels)}
    pids, ys = [], []
    for ex, lab in labels.items():
        if lab not in index:
            raise LabelError(f"example {ex!r} has label {lab!r}, which is not in the label set")
        try:
            pids.append(data.pool.pool_id(ex))
        except KeyError:
            raise LabelError(f"labeled example {ex!r} is not in the pool") from None
        ys.append(index[lab])
    order = np.argsort(pids, kind="stable")
    return np.asarray(pids, dtype=np.int64)[order], np.asarray(ys, dtype=np.int64)[order]
