"""Embedding: correctness against a per-text reference, the on-disk cache, resumability."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alft.models.embedcache import EmbeddingCache, model_digest, text_keys
from alft.models.encoder import PACKAGED_MODEL, EncodeOptions, Encoder, resolve_model_path
from alft.errors import ModelError
from tests.conftest import SHARED, read_jsonl

TEXTS = [r["text"] for r in read_jsonl(SHARED / "banking77" / "train.jsonl")[:300:7]]


def reference(path: str, texts: list[str]) -> np.ndarray:
    """One text at a time, no padding at all: what batching must reproduce."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    out = []
    with torch.inference_mode():
        for t in texts:
            enc = tok(t, return_tensors="pt", truncation=True, max_length=128)
            h = model(**enc).last_hidden_state[0].mean(0)
            out.append((h / h.norm()).numpy())
    return np.stack(out)


def test_packaged_minilm_matches_unbatched_mean_pooling():
    path = resolve_model_path(PACKAGED_MODEL)
    got = Encoder(path, EncodeOptions(batch_size=8)).encode(TEXTS)
    np.testing.assert_allclose(got, reference(path, TEXTS), atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_batch_size_does_not_change_vectors(tiny_model):
    a = Encoder(str(tiny_model), EncodeOptions(batch_size=1)).encode(TEXTS)
    b = Encoder(str(tiny_model), EncodeOptions(batch_size=13)).encode(TEXTS)
    np.testing.assert_allclose(a, b, atol=2e-5)
    assert a.dtype == np.float32 and a.shape == (len(TEXTS), 32)


def test_batches_are_length_sorted_and_cover_every_text(tiny_model):
    enc = Encoder(str(tiny_model), EncodeOptions(batch_size=5))
    batches = enc.batches(TEXTS)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(TEXTS)))
    lengths = enc._lengths[flat]
    assert (np.diff(lengths) <= 0).all()


def test_model_path_errors(tmp_path):
    with pytest.raises(ModelError, match="model path does not exist"):
        resolve_model_path(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        resolve_model_path(str(tmp_path / "empty"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelError, match="is a file"):
        resolve_model_path(str(tmp_path / "file"))


def test_incomplete_model_folder_is_named(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="cannot load encoder model"):
        Encoder(str(tmp_path / "m")).encode(["hello"])


def test_cache_round_trip_and_dedupe(tmp_path):
    cache = EmbeddingCache(tmp_path, "m1", dim=4)
    keys = text_keys(["a", "b", "c"])
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert (cache.lookup(keys) == -1).all()
    with cache.writer() as w:
        w.append(keys[:2], vecs[:2])
    assert cache.lookup(keys).tolist() == [0, 1, -1]
    with cache.writer() as w:
        w.append(keys[2:], vecs[2:])
    np.testing.assert_array_equal(cache.get(text_keys(["c", "a", "a"])), vecs[[2, 0, 0]])


def test_cache_ignores_rows_past_the_commit_point(tmp_path):
    cache = EmbeddingCache(tmp_path, "m1", dim=2)
    with cache.writer() as w:
        w.append(text_keys(["a"]), np.ones((1, 2), dtype=np.float32))
    # a writer killed after writing vectors and keys but before the meta rename
    with open(cache._vec, "ab") as fh:
        fh.write(np.full(2, 7, dtype=np.float32).tobytes())
    with open(cache._keys, "ab") as fh:
        fh.write(text_keys(["b"]).tobytes())
    assert cache.lookup(text_keys(["b"])).tolist() == [-1]
    with cache.writer() as w:  # the next writer truncates the garbage, then appends
        w.append(text_keys(["c"]), np.zeros((1, 2), dtype=np.float32))
    assert cache.count() == 2
    assert cache._vec.stat().st_size == 2 * 2 * 4
    assert cache.lookup(text_keys(["a", "b", "c"])).tolist() == [0, -1, 1]


def test_cache_refuses_nan(tmp_path):
    cache = EmbeddingCache(tmp_path, "m1", dim=2)
    with pytest.raises(Exception, match="NaN"):
        with cache.writer() as w:
            w.append(text_keys(["a"]), np.array([[np.nan, 1]], dtype=np.float32))
    assert cache.count() == 0


def test_model_digest_follows_weights(tiny_model, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    assert model_digest(str(copy)) == model_digest(str(tiny_model))
    with open(copy / "model.safetensors", "r+b") as fh:
        fh.seek(-8, 2)
        fh.write(b"\x00" * 8)
    assert model_digest(str(copy)) != model_digest(str(tiny_model))
