"""The pool's k-nearest-neighbour graph for the semi-supervised head, built once per campaign.

The graph depends only on the pool's features (frozen: the cached vectors, centred the same
way every round), ``k`` and the seed of the inverted-file index's training sample, so
rebuilding it each round repeats the round's most expensive part (52 s of 86 s at 100k rows,
``benchmarks/results/semi_head_scale.md``). It is kept in the embedding cache folder, next to
the vectors it was built from, keyed by what it depends on, and written atomically: a killed
build leaves no file, and the next round builds it again.

Index space: rows are pool **row positions** (= pool ids), as in ``alft.models.spreading``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alft.config import CampaignConfig
from alft.data import CampaignData
from alft.errors import TrainerError

_GRAPH_MEMO: dict[Path, tuple[np.ndarray, np.ndarray]] = {}


def graph_path(cfg: CampaignConfig, data: CampaignData, k: int) -> Path:
    """Where the pool's graph for ``k`` neighbours lives (one file per features, k and seed)."""
    from alft.campaign.context import model_key

    centred = "centred" if cfg.model.center else "raw"
    name = f"{model_key(cfg)}-{data.pool.digest}-{centred}-k{k}-seed{cfg.seed}.npz"
    return Path(cfg.cache_dir()) / "knn_graphs" / name


def pool_graph(cfg: CampaignConfig, data: CampaignData, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(int64[n, k] neighbour row positions, float32[n, k] similarities) of the pool's
    features: read from the cache when built before, else built (``knn_graph``) and stored."""
    from alft.campaign.context import features_for
    from alft.fsutil import atomic_write
    from alft.models.spreading import knn_graph

    path = graph_path(cfg, data, k)
    if path in _GRAPH_MEMO:
        return _GRAPH_MEMO[path]
    n = len(data.pool.ids)
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            nbr, sim = z["nbr"], z["sim"]
        if nbr.shape != (n, k) or sim.shape != (n, k) or nbr.dtype != np.int64:
            raise TrainerError(
                f"the cached neighbour graph {path} is {nbr.shape} {nbr.dtype} for a pool of {n} rows "
                f"and k={k}; delete it and it is built again"
            )
    else:
        nbr, sim = knn_graph(features_for(cfg, data, "pool"), k, seed=cfg.seed)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, nbr=nbr, sim=sim)

        atomic_write(path, write)
    if len(_GRAPH_MEMO) >= 2:
        _GRAPH_MEMO.pop(next(iter(_GRAPH_MEMO)))
    _GRAPH_MEMO[path] = (nbr, sim)
    return nbr, sim
