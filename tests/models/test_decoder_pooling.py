"""Decoder embeddings: last-token pooling, centring on the pool's mean, pooling in the cache key."""

from __future__ import annotations

import numpy as np
import pytest

from alft.config import load_config
from alft.data import Example
from alft.errors import ConfigError, ModelError
from alft.models.encoder import EncodeOptions, Encoder, center, pool_mean
from tests.test_config import GOOD, write
from tests.tiny_models import tiny_llama

WORDS = "apple banana cherry dog eagle fish grape house ice jam kite lemon".split()
# different token counts, so a batch of them is padded
TEXTS = ["apple", "banana cherry dog", "kite lemon ice jam house fish grape", "dog eagle"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def llama_path(tmp_path_factory):
    """A tiny random Llama whose tokenizer has no pad token and pads on the left.

    Neither matters to the encoder, which right-pads its own batches from token arrays.
    """
    from transformers import AutoTokenizer

    path = tiny_llama(tmp_path_factory.mktemp("llama"), [" ".join(WORDS)] * 20, chat_template=True)
    tok = AutoTokenizer.from_pretrained(path)
    tok.pad_token = None
    tok.padding_side = "left"
    tok.save_pretrained(path)
    return path


def direct(path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per text, no padding: (mean over its tokens, its last token's state), both L2-normalised."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    means, lasts = [], []
    with torch.inference_mode():
        for t in texts:
            ids = tok(t, return_tensors="pt", truncation=True, max_length=16)["input_ids"]
            h = model(input_ids=ids).last_hidden_state[0]  # [L, d]
            means.append(torch.nn.functional.normalize(h.mean(0), dim=0).numpy())
            lasts.append(torch.nn.functional.normalize(h[-1], dim=0).numpy())
    return np.stack(means), np.stack(lasts)


def test_last_pooling_is_the_last_real_token_state_in_a_padded_batch(llama_path):
    enc = Encoder(str(llama_path), EncodeOptions(max_length=16, pooling="last"))
    batches = enc.batches(TEXTS)
    assert len(batches) == 1 and len(set(enc._lengths.tolist())) > 1  # one batch, padded
    got = enc.encode(TEXTS)
    assert enc._tokenizer.pad_token_id is None
    want_mean, want_last = direct(llama_path, TEXTS)
    np.testing.assert_allclose(got, want_last, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    # mean pooling of a decoder under right padding and the causal mask: same as unpadded
    mean = Encoder(str(llama_path), EncodeOptions(max_length=16)).encode(TEXTS)
    np.testing.assert_allclose(mean, want_mean, atol=1e-5)
    assert not np.allclose(mean, got, atol=1e-3)


def test_causal_lm_embed_last_is_the_last_prompt_token(llama_path):
    import torch

    from alft.config import SFTTrainerConfig
    from alft.models.causal_lm import GenerativeModel

    model = GenerativeModel.from_base(str(llama_path), SFTTrainerConfig(max_length=32, gen_batch_size=4))
    examples = [Example(f"repeat: {w}") for w in ("apple", "kite lemon ice jam", "dog")]
    got = model.embed(examples, pooling="last")  # one padded batch
    want = []
    with torch.inference_mode():
        for p in model.prompt_ids(examples):
            h = model.model(input_ids=torch.tensor([p]), output_hidden_states=True).hidden_states[-1][0, -1]
            want.append(torch.nn.functional.normalize(h.float(), dim=0).numpy())
    np.testing.assert_allclose(got, np.stack(want), atol=1e-5)
    assert not np.allclose(got, model.embed(examples), atol=1e-3)  # mean is still the default


def test_center_removes_the_pool_mean_and_keeps_unit_norm():
    rng = np.random.default_rng(0)
    common = rng.normal(size=16)
    pool = common + 0.3 * rng.normal(size=(500, 16))  # [n_pool, d] nearly all alike
    pool = (pool / np.linalg.norm(pool, axis=1, keepdims=True)).astype(np.float32)
    mean = pool_mean(pool)  # [d]
    got = center(pool, mean)
    assert got.dtype == np.float32 and got.shape == pool.shape
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    # before re-normalising the rows are exactly zero-mean; after, the mean is near zero
    # (rows are rescaled by different norms) instead of the common direction's ~0.96
    assert np.linalg.norm(pool.mean(0)) > 0.9
    assert np.linalg.norm(got.mean(0)) < 0.05
    np.testing.assert_allclose((pool - mean).mean(0), 0.0, atol=1e-6)
    # the eval split is centred with the pool's mean, never its own
    ev = pool[:7] + 0.5
    want = (ev - mean) / np.linalg.norm(ev - mean, axis=1, keepdims=True)
    np.testing.assert_allclose(center(ev, mean), want, atol=1e-6)
    assert np.isfinite(center(mean[None, :].astype(np.float32), mean)).all()  # the mean itself: zeros
    with pytest.raises(ModelError, match="mean has shape \\(16,\\), the vectors have 8 dims"):
        center(pool[:, :8], mean)
    with pytest.raises(ModelError, match="non-empty"):
        pool_mean(pool[:0])


def test_cache_key_differs_between_poolings():
    keys = {p: EncodeOptions(pooling=p).key() for p in ("mean", "last", "cls")}
    assert keys["mean"] == "len128-mean-l2"  # unchanged: existing caches stay valid
    assert len(set(keys.values())) == 3
    with pytest.raises(ModelError, match="unknown pooling 'max'; known: mean, last, cls"):
        EncodeOptions(pooling="max")


def test_config_takes_pooling_and_center_and_rejects_an_unknown_pooling(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), ["model.pooling=last", "model.center=true"])
    assert cfg.model.pooling == "last" and cfg.model.center is True
    default = load_config(write(tmp_path, GOOD))
    assert default.model.pooling == "mean" and default.model.center is False
    with pytest.raises(ConfigError, match="model.pooling: Input should be 'mean', 'last' or 'cls'"):
        load_config(write(tmp_path, GOOD), ["model.pooling=max"])
