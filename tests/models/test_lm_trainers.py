"""Classification fine-tuning of encoder and decoder checkpoints: full, LoRA, and continued rounds.

Tiny random BERT, GPT-2 and Llama models (built here, tokenizers trained on BANKING77) learn
a keyword task: label 1 when the text contains the word "card".
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from alft.config import LoraConfig, TransformerTrainerConfig
from alft.errors import ModelError, TrainerError
from alft.models.loading import load_model
from alft.models.transformer import TransformerTrainer
from tests.conftest import SHARED, read_jsonl

ARCHS = ("bert", "gpt2", "llama")
LABELS = ["other", "card"]
LORA = LoraConfig(r=4, alpha=8.0, dropout=0.05)


# tiny models on a shared 2-core machine: one torch thread is 2-10x faster than two
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(lora: bool, **kw) -> TransformerTrainerConfig:
    # LoRA trains far fewer weights from a random start: it needs the larger step
    lr = 3e-2 if lora else 2e-3
    return TransformerTrainerConfig(
        epochs=10, learning_rate=lr, batch_size=16, max_length=32, lora=LORA if lora else None, **kw
    )


def cross_entropy(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())




@pytest.fixture(scope="module")
def toy() -> tuple[list[str], np.ndarray, list[str]]:
    texts = [r["text"] for r in read_jsonl(SHARED / "banking77" / "train.jsonl")]
    has = [t for t in texts if "card" in t.lower().replace("?", " ").split()]
    hasnt = [t for t in texts if "card" not in t.lower()]
    train = has[:40] + hasnt[:40]
    return train, np.array([1] * 40 + [0] * 40), texts[:2000]


@pytest.fixture(scope="module")
def bases(tmp_path_factory, toy) -> dict:
    from tests.tiny_models import tiny_bert, tiny_gpt2, tiny_llama

    corpus = toy[2]
    root = tmp_path_factory.mktemp("lm-bases")
    return {
        "bert": tiny_bert(root / "bert", corpus),
        "gpt2": tiny_gpt2(root / "gpt2", corpus),
        "llama": tiny_llama(root / "llama", corpus),
    }


@pytest.fixture(scope="module")
def fitted(bases, toy, tmp_path_factory):
    """(arch, lora) -> the model one training run produced (trained once per module)."""
    cache: dict = {}
    work = tmp_path_factory.mktemp("lm-work")

    def get(arch: str, lora: bool):
        if (arch, lora) not in cache:
            texts, y, _ = toy
            trainer = TransformerTrainer(_config(lora), str(bases[arch]), work)
            cache[arch, lora] = trainer.fit(texts, None, y, LABELS, seed=0)
        return cache[arch, lora]

    return get


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("arch", ARCHS)
def test_one_training_run_lowers_the_loss(arch, lora, bases, toy, fitted, tmp_path):
    texts, y, _ = toy
    start = TransformerTrainer(_config(lora), str(bases[arch]), tmp_path).initial_model(LABELS, seed=0)
    model = fitted(arch, lora)
    before = cross_entropy(start.predict_proba(texts, None), y)
    after = cross_entropy(model.predict_proba(texts, None), y)
    assert after < before - 0.3, (before, after)
    assert model.lora is lora
    if lora:
        trainable = sum(p.numel() for p in model.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.model.parameters())
        assert trainable < total / 4  # adapters and the head, not the model


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_saves_loads_back_and_merges(arch, bases, toy, fitted, tmp_path):
    texts, _, _ = toy
    model = fitted(arch, True)
    p = model.predict_proba(texts, None)
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "alft_model.json").read_text())
    assert meta["lora"] is True and meta["base_model"] == str(bases[arch])
    assert (tmp_path / "m" / "adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "m" / "hf").exists()  # the base weights are not copied
    again = load_model(tmp_path / "m")
    assert again.lora
    np.testing.assert_allclose(again.predict_proba(texts, None), p, atol=1e-6)

    merged = model.merged()
    assert not merged.lora and model.lora  # merging works on a copy
    np.testing.assert_allclose(merged.predict_proba(texts, None), p, atol=1e-5)
    np.testing.assert_allclose(model.predict_proba(texts, None), p, atol=1e-7)
    merged.save(tmp_path / "merged")
    assert (tmp_path / "merged" / "hf" / "config.json").exists()  # a plain transformers folder
    np.testing.assert_allclose(load_model(tmp_path / "merged").predict_proba(texts, None), p, atol=1e-5)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("arch", ARCHS)
def test_features_and_head_reproduce_the_logits(arch, lora, toy, fitted):
    texts = toy[0][::4] + ["card", "a much longer question about the exchange rate of my card"]
    model = fitted(arch, lora)
    hidden = model.model.config.hidden_size
    out = model.outputs(texts, None, features=True, samples=3, rng=np.random.default_rng(0))
    w, b, classes = out.head
    assert out.features.shape == (len(texts), hidden)
    assert w.shape == (2, hidden) and b.shape == (2,)
    np.testing.assert_array_equal(classes, [0, 1])
    # decoder rows are right-padded in a batch: the features must be the last real token's
    np.testing.assert_allclose(_softmax(out.features @ w.T + b), out.probs, atol=1e-5)
    np.testing.assert_allclose(out.probs, model.predict_proba(texts, None), atol=1e-6)
    # MC dropout: the stochastic passes differ from the deterministic one, which is back after
    assert out.prob_samples.shape == (len(texts), 2, 3)
    np.testing.assert_allclose(out.prob_samples.sum(1), 1.0, atol=1e-5)
    assert np.abs(out.prob_samples - out.probs[:, :, None]).max() > 1e-5
    assert not model.model.training


@pytest.mark.parametrize(("arch", "lora"), [("bert", False), ("gpt2", True), ("llama", True)])
def test_init_previous_continues_from_the_saved_round(arch, lora, bases, toy, fitted, tmp_path):
    texts, y, _ = toy
    fitted(arch, lora).save(tmp_path / "r1")
    saved = load_model(tmp_path / "r1")
    trainer = TransformerTrainer(_config(lora, init="previous"), str(bases[arch]), tmp_path)
    from_base = trainer.initial_model(LABELS, seed=1)
    from_prev = trainer.initial_model(LABELS, seed=1, previous=tmp_path / "r1")
    # round 2 starts where round 1 ended (same predictions), far below a fresh start's loss
    p_prev = from_prev.predict_proba(texts, None)
    np.testing.assert_allclose(p_prev, saved.predict_proba(texts, None), atol=1e-6)
    assert cross_entropy(p_prev, y) < cross_entropy(from_base.predict_proba(texts, None), y) - 0.3
    if lora:  # the adapters continue: the same base, adapters already trained
        assert from_prev.lora and from_prev.base_model == str(bases[arch])
    r2 = trainer.fit(texts[::2], None, y[::2], LABELS, seed=1, previous=tmp_path / "r1")
    assert r2.lora is lora
    r2.save(tmp_path / "r2")
    if lora:  # round 2's folder points at the base, not at round 1
        assert json.loads((tmp_path / "r2" / "alft_model.json").read_text())["base_model"] == str(bases[arch])
    assert cross_entropy(load_model(tmp_path / "r2").predict_proba(texts, None), y) < 0.3


def test_switching_between_lora_and_full_keeps_the_weights(bases, toy, fitted, tmp_path):
    texts, _, _ = toy
    fitted("gpt2", True).save(tmp_path / "lora")
    fitted("gpt2", False).save(tmp_path / "full")
    p_lora = load_model(tmp_path / "lora").predict_proba(texts, None)
    p_full = load_model(tmp_path / "full").predict_proba(texts, None)
    base = str(bases["gpt2"])
    # LoRA round, now full fine-tuning: start from the merged weights
    full = TransformerTrainer(_config(False, init="previous"), base, tmp_path)
    merged = full.initial_model(LABELS, 0, previous=tmp_path / "lora")
    assert not merged.lora
    np.testing.assert_allclose(merged.predict_proba(texts, None), p_lora, atol=1e-5)
    # full round, now LoRA: new (zero) adapters on the previous weights, which become the base
    lora = TransformerTrainer(_config(True, init="previous"), base, tmp_path)
    adapted = lora.initial_model(LABELS, 0, previous=tmp_path / "full")
    assert adapted.lora and adapted.base_model == str(tmp_path / "full" / "hf")
    np.testing.assert_allclose(adapted.predict_proba(texts, None), p_full, atol=1e-6)


def test_bad_previous_and_missing_base_are_domain_errors(bases, fitted, tmp_path):
    base = str(bases["bert"])
    trainer = TransformerTrainer(_config(True, init="previous"), base, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainerError, match=f"cannot continue from {tmp_path / 'empty'}: not an alft model"):
        trainer.initial_model(LABELS, 0, previous=tmp_path / "empty")
    fitted("bert", True).save(tmp_path / "m")
    with pytest.raises(TrainerError, match="label set differs"):
        trainer.initial_model(["a", "b"], 0, previous=tmp_path / "m")
    meta_path = tmp_path / "m" / "alft_model.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "base_model": str(tmp_path / "gone")}))
    with pytest.raises(ModelError, match=f"needs its base model '{tmp_path / 'gone'}'"):
        load_model(tmp_path / "m")


def test_lora_without_known_target_modules_names_the_setting(toy, tmp_path):
    from transformers import BertConfig, BertModel

    from tests.tiny_models import train_wordpiece

    # peft has defaults for known architectures only; an explicit list that matches
    # nothing is the same failure for any model
    tok = train_wordpiece(toy[2][:200])
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "b")
    tok.save_pretrained(tmp_path / "b")
    cfg = _config(True).model_copy(update={"lora": LoraConfig(target_modules=["no_such_proj"])})
    with pytest.raises(TrainerError, match="trainer.transformer.lora.target_modules"):
        TransformerTrainer(cfg, str(tmp_path / "b"), tmp_path).initial_model(LABELS, 0)
