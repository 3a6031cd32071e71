"""Both trainers learn a learnable task, save and load back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from alft.config import HeadTrainerConfig, TransformerTrainerConfig
from alft.errors import TrainerError
from alft.trainers import HeadTrainer, TransformerTrainer, load_model
from tests.conftest import SHARED, read_jsonl


def blobs(n=200, d=16, c=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(c, d)) * 3
    y = rng.integers(0, c, n)
    x = centers[y] + rng.normal(size=(n, d))
    return x.astype(np.float32), y


def test_head_learns_and_round_trips(tmp_path):
    x, y = blobs()
    labels = ["a", "b", "c", "d", "e"]  # "e" never seen: probability 0
    model = HeadTrainer(HeadTrainerConfig(C=1.0)).fit([""] * len(y), x[:150], y[:150], labels, seed=0)
    p = model.predict_proba([""] * 50, x[150:])
    assert p.shape == (50, 5)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert (p[:, 4] == 0).all()
    assert (p.argmax(1) == y[150:]).mean() > 0.9
    model.save(tmp_path / "m")
    np.testing.assert_array_equal(load_model(tmp_path / "m").predict_proba([], x[150:]), p)


def test_head_binary_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    x, y = blobs(c=2)
    model = HeadTrainer(HeadTrainerConfig(C=0.5, class_weight=None)).fit([], x, y, ["neg", "pos"], seed=0)
    ref = LogisticRegression(C=0.5, max_iter=1000).fit(x.astype(np.float64), y)
    np.testing.assert_allclose(model.predict_proba([], x), ref.predict_proba(x.astype(np.float64)), atol=1e-6)


def test_head_with_one_class_predicts_it():
    x, y = blobs(n=10, c=1)
    model = HeadTrainer(HeadTrainerConfig()).fit([], x, np.zeros(10, dtype=int), ["a", "b"], seed=0)
    assert (model.predict_proba([], x)[:, 0] == 1).all()


def test_head_refuses_empty_or_out_of_range():
    with pytest.raises(TrainerError, match="no labeled examples"):
        HeadTrainer(HeadTrainerConfig()).fit([], np.zeros((0, 3)), np.zeros(0, dtype=int), ["a", "b"], seed=0)
    with pytest.raises(TrainerError, match="out of range"):
        HeadTrainer(HeadTrainerConfig()).fit([], np.zeros((2, 3)), np.array([0, 5]), ["a", "b"], seed=0)


def test_transformer_fine_tune_learns_a_toy_task(tiny_model, tmp_path):
    # two real SMS classes are learnable from words alone even by a tiny random BERT
    rows = read_jsonl(SHARED / "sms_spam" / "train.jsonl")
    ham = [r["text"] for r in rows if r["label"] == "ham"][:80]
    spam = [r["text"] for r in rows if r["label"] == "spam"][:80]
    texts = ham[:60] + spam[:60]
    y = np.array([0] * 60 + [1] * 60)
    test_texts, test_y = ham[60:] + spam[60:], np.array([0] * 20 + [1] * 20)
    trainer = TransformerTrainer(
        TransformerTrainerConfig(epochs=8, learning_rate=2e-3, batch_size=16, max_length=64), str(tiny_model), tmp_path
    )
    model = trainer.fit(texts, None, y, ["ham", "spam"], seed=0)
    p = model.predict_proba(test_texts, None)
    assert p.shape == (40, 2)
    assert (p.argmax(1) == test_y).mean() >= 0.8
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    np.testing.assert_allclose(again.predict_proba(test_texts, None), p, atol=1e-5)
