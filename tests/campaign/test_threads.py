"""BLAS thread pools are held to model.blas_threads where numpy/scikit-learn/FAISS work runs."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_info

from alft.campaign.context import blas_limits
from alft.config import load_config
from alft.errors import ConfigError
from alft.models.head import HeadTrainer
from benchmarks.plain import run_plain
from tests.conftest import campaign_yaml


def _blas_threads() -> set[int]:
    return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}


def test_blas_limits_hold_every_blas_pool_and_restore_it(tmp_path, banking_subset, tiny_model):
    cfg = load_config(campaign_yaml(tmp_path, banking_subset, tiny_model, name="threads"))
    assert cfg.model.blas_threads == 1  # the default: one campaign never oversubscribes the cores
    before = _blas_threads()
    with blas_limits(cfg.model_copy(update={"model": cfg.model.model_copy(update={"blas_threads": 3})})):
        assert _blas_threads() == {3}
    assert _blas_threads() == before


def test_the_head_fits_with_the_configured_blas_threads(tmp_path, banking_subset, tiny_model, monkeypatch):
    seen: list[set[int]] = []
    fit = HeadTrainer.fit

    def spy(self, *args, **kwargs):
        seen.append(_blas_threads())
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(HeadTrainer, "fit", spy)
    path = campaign_yaml(tmp_path, banking_subset, tiny_model, name="threads-fit", budget=40)
    cfg = load_config(path, overrides=["model.blas_threads=3"])
    run_plain(cfg)
    assert seen and all(s == {3} for s in seen)  # 3: neither the default pools nor 1


def test_blas_threads_below_one_is_refused(tmp_path, banking_subset, tiny_model):
    path = campaign_yaml(tmp_path, banking_subset, tiny_model, name="threads-bad")
    with pytest.raises(ConfigError, match="blas_threads"):
        load_config(path, overrides=["model.blas_threads=0"])
