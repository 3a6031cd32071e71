"""Both trainers learn a learnable task, save and load back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from alft.config import HeadTrainerConfig, TransformerTrainerConfig
from alft.errors import TrainerError
from alft.models.head import HeadTrainer
from alft.models.loading import load_model
from alft.models.transformer import TransformerTrainer
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


def _head_outputs_consistent(out):
    logits = out.features @ out.head[0].T + out.head[1]  # [n, C]
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def test_transformer_outputs_expose_features_head_and_mc_samples(tiny_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from alft.models.transformer import TransformerModel

    tok = AutoTokenizer.from_pretrained(tiny_model)
    hf = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3)
    model = TransformerModel(["a", "b", "c"], hf, tok, max_length=32, batch_size=4)
    texts = ["my card is lost", "how do I top up", "refund please", "a", "exchange rate for euros today?"]
    out = model.outputs(texts, None, features=True, samples=3, rng=np.random.default_rng(0))
    assert out.features.shape == (5, hf.config.hidden_size)
    # the captured features and the output layer reproduce the deterministic probabilities
    np.testing.assert_allclose(_head_outputs_consistent(out), out.probs, atol=1e-5)
    assert out.prob_samples.shape == (5, 3, 3)
    np.testing.assert_allclose(out.prob_samples.sum(1), 1.0, atol=1e-5)
    assert np.abs(out.prob_samples - out.probs[:, :, None]).max() > 1e-4  # dropout was on
    again = model.outputs(texts, None, features=False, samples=3, rng=np.random.default_rng(0))
    np.testing.assert_allclose(again.prob_samples, out.prob_samples)  # seeded from the rng
    # dropout is off again afterwards
    assert not hf.training
    np.testing.assert_allclose(model.predict_proba(texts, None), out.probs, atol=1e-6)


def test_head_outputs_features_are_the_embeddings_and_mc_is_seeded():
    x, y = blobs()
    model = HeadTrainer(HeadTrainerConfig(C=1.0, mc_dropout=0.2)).fit([], x, y, list("abcd"), seed=0)
    out = model.outputs([], x[:20], features=True, samples=5, rng=np.random.default_rng(1))
    np.testing.assert_allclose(out.features, x[:20])
    np.testing.assert_allclose(_head_outputs_consistent(out), out.probs, atol=1e-10)
    assert out.prob_samples.shape == (20, 4, 5)
    np.testing.assert_allclose(out.prob_samples.sum(1), 1.0, atol=1e-5)
    same = model.outputs([], x[:20], features=False, samples=5, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(same.prob_samples, out.prob_samples)
    assert same.features is None and same.head is None


def test_outputs_need_a_linear_output_layer(tiny_model):
    from transformers import AutoTokenizer, BertModel

    from alft.errors import ModelError
    from alft.models.transformer import TransformerModel

    bare = TransformerModel(["a", "b"], BertModel.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model), 16)
    with pytest.raises(ModelError, match="no linear output layer named classifier or score"):
        bare.outputs(["x"], None, features=True, samples=0, rng=np.random.default_rng(0))
