"""The encoder's ONNX Runtime backend: same vectors as torch, graph cache, fallbacks, errors.

Real onnxruntime and real (tiny random, or the packaged MiniLM) models throughout; the only
patches make an export fail or hide onnxruntime, which is what those tests are about.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

from alft.errors import ModelError
from alft.models import onnx_backend as ob
from alft.models.embedcache import model_digest
from alft.models.encoder import PACKAGED_MODEL, EncodeOptions, Encoder, resolve_model_path
from tests.conftest import SHARED, read_jsonl
from tests.tiny_models import tiny_llama

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [r["text"] for r in read_jsonl(SHARED / "banking77" / "train.jsonl")[:60]]


def encoders(path, cache, **kw) -> tuple[Encoder, Encoder]:
    onnx = Encoder(str(path), EncodeOptions(backend="onnx", **kw), cache_dir=cache)
    torch_ = Encoder(str(path), EncodeOptions(backend="torch", **kw))
    return onnx, torch_


def graph_of(path, cache, name="model.onnx"):
    return ob.graph_dir(cache, model_digest(str(path))) / name


@pytest.fixture
def export_calls(monkeypatch):
    """Counts real exports (the export itself still runs)."""
    calls = []
    real = ob.export

    def counting(model, out):
        calls.append(out)
        return real(model, out)

    monkeypatch.setattr(ob, "export", counting)
    return calls


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"pooling": "cls"},
        {"pooling": "last"},
        {"normalize": False},
        {"batch_size": 1},  # unpadded batches: the torch path runs them without a mask
    ],
    ids=["mean", "cls", "last", "raw", "unpadded"],
)
def test_onnx_vectors_equal_torch_on_tiny_bert(tiny_model, tmp_path, kw):
    onnx, torch_ = encoders(tiny_model, tmp_path, **kw)
    a, b = onnx.encode(TEXTS), torch_.encode(TEXTS)
    assert onnx.backend == "onnx" and torch_.backend == "torch"
    assert a.dtype == np.float32 and a.shape == b.shape == (len(TEXTS), 32)
    assert float(np.abs(a - b).max()) < 1e-5


def test_graph_is_fused_cached_and_reused(tiny_model, tmp_path, export_calls):
    first, _ = encoders(tiny_model, tmp_path)
    v1 = first.encode(TEXTS[:10])
    graph = graph_of(tiny_model, tmp_path)
    assert len(export_calls) == 1 and graph.exists() and ob.is_valid(graph)
    assert first._onnx.graph == graph
    import json

    assert json.loads(graph.with_name("model.onnx.json").read_text())["fused_attention"] is True
    mtime = graph.stat().st_mtime_ns
    second, _ = encoders(tiny_model, tmp_path)
    np.testing.assert_array_equal(second.encode(TEXTS[:10]), v1)
    assert len(export_calls) == 1  # the second load reused the graph
    assert graph.stat().st_mtime_ns == mtime
    # no temporary files or folders left next to the graph
    assert sorted(p.name for p in graph.parent.iterdir()) == ["lock", "model.onnx", "model.onnx.json"]


@pytest.mark.parametrize("damage", ["truncated", "flipped", "no_sidecar", "garbage"])
def test_damaged_cached_graph_is_rebuilt(tiny_model, tmp_path, export_calls, damage):
    ref = Encoder(str(tiny_model), EncodeOptions(backend="torch")).encode(TEXTS[:20])
    encoders(tiny_model, tmp_path)[0].encode(TEXTS[:2])
    graph = graph_of(tiny_model, tmp_path)
    data = graph.read_bytes()
    if damage == "truncated":  # a partial file
        graph.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":  # still parses, wrong weights
        graph.write_bytes(data[:-100] + bytes(b ^ 0xFF for b in data[-100:]))
    elif damage == "no_sidecar":  # killed between the graph's rename and its sidecar's
        graph.with_name("model.onnx.json").unlink()
    else:
        graph.write_bytes(b"not an onnx graph")
    again, _ = encoders(tiny_model, tmp_path)
    out = again.encode(TEXTS[:20])
    assert len(export_calls) == 2 and ob.is_valid(graph)
    assert float(np.abs(out - ref).max()) < 1e-5


def test_failed_export_leaves_no_graph(tiny_model, tmp_path, monkeypatch):
    def broken(raw, out, config):
        out.write_bytes(b"half a graph")
        raise RuntimeError("optimizer crashed")

    monkeypatch.setattr(ob, "_optimize", broken)
    with pytest.raises(RuntimeError, match="optimizer crashed"):
        encoders(tiny_model, tmp_path)[0].encode(TEXTS[:2])
    folder = graph_of(tiny_model, tmp_path).parent
    assert sorted(p.name for p in folder.iterdir()) == ["lock"]
    monkeypatch.undo()
    enc, _ = encoders(tiny_model, tmp_path)
    enc.encode(TEXTS[:2])
    assert enc.backend == "onnx" and ob.is_valid(graph_of(tiny_model, tmp_path))


def test_explicit_onnx_without_onnxruntime_is_one_clear_error(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    enc = Encoder(str(tiny_model), EncodeOptions(backend="onnx"), cache_dir=tmp_path)
    with pytest.raises(ModelError, match=r"needs the onnxruntime package: pip install onnxruntime"):
        enc.encode(TEXTS[:2])


def test_auto_without_onnxruntime_uses_torch_and_says_so(tiny_model, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    enc = Encoder(str(tiny_model), EncodeOptions(), cache_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="alft"):
        enc.encode(TEXTS[:2])
    assert enc.backend == "torch"
    assert "embedding backend: torch (model.backend auto; onnxruntime not installed)" in caplog.text


def test_auto_picks_onnx_and_logs_it(tiny_model, tmp_path, caplog):
    enc = Encoder(str(tiny_model), EncodeOptions(), cache_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="alft"):
        enc.encode(TEXTS[:2])
    assert enc.backend == "onnx"
    assert "embedding backend: onnx" in caplog.text and "model.backend auto" in caplog.text


def test_auto_falls_back_to_torch_when_the_export_fails(tiny_model, tmp_path, monkeypatch, caplog):
    import torch

    def refuse(*args, **kwargs):
        raise torch.onnx.errors.UnsupportedOperatorError("aten::made_up", 17, 18)

    monkeypatch.setattr(torch.onnx, "export", refuse)
    enc = Encoder(str(tiny_model), EncodeOptions(), cache_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="alft"):
        got = enc.encode(TEXTS[:10])
    assert enc.backend == "torch"
    assert "embedding backend: torch (model.backend auto; ONNX export failed: UnsupportedOperatorError" in caplog.text
    ref = Encoder(str(tiny_model), EncodeOptions(backend="torch")).encode(TEXTS[:10])
    np.testing.assert_array_equal(got, ref)
    # an explicit onnx surfaces the failure instead
    with pytest.raises(torch.onnx.errors.UnsupportedOperatorError):
        Encoder(str(tiny_model), EncodeOptions(backend="onnx"), cache_dir=tmp_path).encode(TEXTS[:2])
    # and int8 cannot silently become fp32 torch vectors (they are cached under another key)
    with pytest.raises(ModelError, match="onnx_quantize 'int8' needs the ONNX backend"):
        Encoder(str(tiny_model), EncodeOptions(quantize="int8"), cache_dir=tmp_path).encode(TEXTS[:2])


@pytest.fixture(scope="module")
def llama_path(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("llama"), TEXTS)


def test_auto_keeps_a_causal_lm_on_torch(llama_path, tmp_path, caplog):
    enc = Encoder(str(llama_path), EncodeOptions(pooling="last"), cache_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="alft"):
        enc.encode(TEXTS[:3])
    assert enc.backend == "torch"
    assert "embedding backend: torch (model.backend auto; model_type 'llama' is not an encoder" in caplog.text
    assert not (tmp_path / "onnx").exists()
    with pytest.raises(ModelError, match="model.backend 'onnx' cannot run .*model_type 'llama'"):
        Encoder(str(llama_path), EncodeOptions(backend="onnx"), cache_dir=tmp_path).encode(TEXTS[:3])


def test_session_threads_follow_the_setting(tiny_model, tmp_path):
    import torch

    enc = Encoder(str(tiny_model), EncodeOptions(backend="onnx"), cache_dir=tmp_path, num_threads=2)
    enc.encode(TEXTS[:2])
    assert enc._onnx.num_threads == 2
    assert enc._onnx.session.get_session_options().intra_op_num_threads == 2
    # without num_threads: torch's count in force (the one_torch_thread fixture: 1)
    enc = Encoder(str(tiny_model), EncodeOptions(backend="onnx"), cache_dir=tmp_path)
    enc.encode(TEXTS[:2])
    assert torch.get_num_threads() == 1
    assert enc._onnx.session.get_session_options().intra_op_num_threads == 1


def test_int8_graph_is_cached_apart_and_keyed(tiny_model, tmp_path, export_calls):
    fp32, _ = encoders(tiny_model, tmp_path)
    int8 = Encoder(str(tiny_model), EncodeOptions(backend="onnx", quantize="int8"), cache_dir=tmp_path)
    a, q = fp32.encode(TEXTS), int8.encode(TEXTS)
    assert int8._onnx.graph == graph_of(tiny_model, tmp_path, "model.int8.onnx")
    assert ob.is_valid(int8._onnx.graph) and ob.is_valid(graph_of(tiny_model, tmp_path))
    assert len(export_calls) == 1  # the int8 graph quantises the cached fp32 one
    cos = (a * q).sum(1)
    assert not np.array_equal(a, q) and cos.min() > 0.95
    assert int8.options.key() == fp32.options.key() + "-int8"
    with pytest.raises(ModelError, match="int8 quantization is an ONNX backend feature"):
        EncodeOptions(backend="torch", quantize="int8")


def test_model_config_backend_fields(tmp_path):
    from alft.config import ModelConfig

    m = ModelConfig()
    assert m.backend == "auto" and m.onnx_quantize is None
    assert ModelConfig(backend="onnx", onnx_quantize="int8").onnx_quantize == "int8"
    with pytest.raises(ValueError, match="onnx_quantize needs model.backend onnx or auto"):
        ModelConfig(backend="torch", onnx_quantize="int8")
    with pytest.raises(ValueError):
        ModelConfig(backend="tensorrt")
    with pytest.raises(ValueError):
        ModelConfig(onnx_quantize="int4")


@pytest.mark.slow
def test_packaged_minilm_onnx_equals_torch(tmp_path):
    path = resolve_model_path(PACKAGED_MODEL)
    texts = [r["text"] for r in read_jsonl(SHARED / "banking77" / "test.jsonl")[:50]]
    onnx, torch_ = encoders(path, tmp_path)
    a, b = onnx.encode(texts), torch_.encode(texts)
    assert onnx.backend == "onnx" and a.shape == (50, 384)
    assert float(np.abs(a - b).max()) < 1e-5
    fused = ob._sidecar(onnx._onnx.graph).read_text()
    assert '"fused_attention": true' in fused
