"""ONNX Runtime backend of the sentence encoder: export once, fuse, cache on disk, run.

Only the transformer is exported (``input_ids``, ``attention_mask``[, ``token_type_ids``]
-> ``last_hidden_state``, batch and sequence axes dynamic); pooling and L2 normalisation
stay in ``Encoder.encode_batch`` (numpy), written to match the torch path's arithmetic. The
export is the TorchScript exporter (``dynamo=False``: the dynamo exporter needs
``onnxscript``, which alft does not install), then onnxruntime's transformer optimizer
(``model_type="bert"``) fuses embeddings + LayerNorm, attention, GELU and bias-adds.

Cache layout, ``<cache root>/onnx/<model digest>-<exporter stamp>/``::

    model.onnx         the optimised fp32 graph
    model.int8.onnx    its int8 dynamic quantisation (model.onnx_quantize: int8), on demand
    <graph>.json       {"blake2b", "size", ...}: written after the graph; the commit point
    lock               flock target (alft.fsutil.folder_lock): one process builds, the others wait and reuse

Both files are written to a temporary name and renamed into place (``alft.fsutil``), so a
killed export never leaves a graph under the final name; a graph whose sidecar is missing
or whose bytes do not match it (truncated, corrupted) is rebuilt.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from alft.errors import ModelError
from alft.fsutil import atomic_write, atomic_write_text, file_digest, folder_lock

log = logging.getLogger("alft")

#: ``config.model_type`` values exported by default (``model.backend: auto``) and fused with
#: the optimizer's BERT fusions; anything else (decoders, ...) stays on torch.
ONNX_MODEL_TYPES = {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet"}
OPSET = 17
QUANTIZATIONS = ("int8",)


def missing_packages() -> list[str]:
    """The packages the ONNX backend needs that are not importable (empty when none)."""
    out = []
    for name in ("onnxruntime", "onnx"):
        try:
            __import__(name)
        except ImportError:
            out.append(name)
    return out


def require_packages() -> None:
    missing = missing_packages()
    if missing:
        raise ModelError(
            f"model.backend 'onnx' needs the {' and '.join(missing)} package"
            f"{'s' if len(missing) > 1 else ''}: pip install {' '.join(missing)} "
            "(or set model.backend: torch)"
        )


def unsupported_reason(model) -> str | None:
    """Why ``model`` is not exported (None when it is a supported encoder)."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ONNX_MODEL_TYPES:
        return f"model_type '{model_type}' is not an encoder the ONNX backend exports ({', '.join(sorted(ONNX_MODEL_TYPES))})"
    return None


def _stamp() -> str:
    """Exporter identity in the cache key: a new torch/onnxruntime may export or fuse differently."""
    import onnxruntime
    import torch

    return f"opset{OPSET}-torch{torch.__version__.split('+')[0]}-ort{onnxruntime.__version__}"


def graph_dir(cache_root: Path, digest: str) -> Path:
    return Path(cache_root) / "onnx" / f"{digest}-{_stamp()}"


def _sidecar(graph: Path) -> Path:
    return graph.with_name(graph.name + ".json")


def is_valid(graph: Path) -> bool:
    """The graph exists and its bytes match the sidecar written after it."""
    side = _sidecar(graph)
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        if graph.stat().st_size != meta["size"]:
            return False
        return file_digest(graph, "blake2b") == meta["blake2b"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _commit(built: Path, graph: Path, describe: dict) -> None:
    """Move ``built`` to ``graph`` atomically, then write its sidecar (the commit point)."""
    _sidecar(graph).unlink(missing_ok=True)  # a stale sidecar must never vouch for a new graph
    atomic_write(graph, lambda tmp: os.replace(built, tmp))
    meta = {"size": graph.stat().st_size, "blake2b": file_digest(graph, "blake2b"), **describe}
    atomic_write_text(_sidecar(graph), json.dumps(meta, indent=2) + "\n")


def _input_names(model) -> list[str]:
    names = ["input_ids", "attention_mask"]
    params = inspect.signature(model.forward).parameters
    if "token_type_ids" in params and getattr(model.config, "type_vocab_size", 0):
        names.append("token_type_ids")
    return names


def export(model, out: Path) -> None:
    """Export ``model``'s transformer (to ``last_hidden_state``) as an fp32 ONNX graph."""
    import torch

    names = _input_names(model)
    # A padded example: the mask path must be traced as data, not folded to "no padding".
    ids = torch.tensor([[2, 7, 8, 9, 10, 3], [2, 7, 8, 3, 0, 0]], dtype=torch.int64)
    example = {
        "input_ids": ids,
        "attention_mask": (ids != 0).to(torch.int64),
        "token_type_ids": torch.zeros_like(ids),
    }
    export_hidden(model, out, names, tuple(example[n] for n in names))


def export_hidden(model, out: Path, names: list[str], example: tuple, **forward_kwargs) -> None:
    """Trace ``model(**inputs, **forward_kwargs).last_hidden_state`` into an fp32 ONNX graph at
    ``out``, inputs ``names`` (``example``: one padded int64 tensor each), batch and sequence
    axes dynamic (``OPSET``, the TorchScript exporter)."""
    import torch

    class Hidden(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs)), **forward_kwargs).last_hidden_state

    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    # The tracer warns about shape checks it folds (mask padding past the sequence length,
    # which cannot happen here) and about advanced indexing; the tests check the graph
    # against torch on padded and unpadded batches.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Hidden(model).eval(),
            example,
            str(out),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _optimize(raw: Path, out: Path, config) -> bool:
    """Fuse ``raw`` with onnxruntime's BERT fusions into ``out``; True when attention fused."""
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(
        str(raw),
        model_type="bert",
        num_heads=int(getattr(config, "num_attention_heads", 0) or 0),
        hidden_size=int(getattr(config, "hidden_size", 0) or 0),
    )
    opt.save_model_to_file(str(out), use_external_data_format=False)
    ops = {n.op_type for n in opt.model.graph.node}
    return "Attention" in ops or "MultiHeadAttention" in ops


def _quantize(fp32: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The fused graph's contrib ops (Attention, SkipLayerNormalization) defeat ONNX shape
    # inference; their outputs are float32 tensors.
    root = logging.getLogger()
    quiet = _DropMessage("Please consider to run pre-processing")  # advice for static quantisation
    root.addFilter(quiet)
    try:
        quantize_dynamic(
            str(fp32),
            str(out),
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.removeFilter(quiet)


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def build_graph(model, cache_root: Path, digest: str, quantize: str | None = None) -> Path:
    """The cached graph of ``model`` (exported, fused, quantised as asked), built when missing or invalid."""
    folder = graph_dir(cache_root, digest)
    fp32 = folder / "model.onnx"
    target = fp32 if quantize is None else folder / f"model.{quantize}.onnx"
    if is_valid(target):
        return target
    with folder_lock(folder):
        if not is_valid(fp32):
            with tempfile.TemporaryDirectory(prefix=".export-", dir=folder) as tmp:
                raw, fused = Path(tmp) / "raw.onnx", Path(tmp) / "fused.onnx"
                log.info("exporting %s to ONNX in %s", getattr(model.config, "_name_or_path", "model"), folder)
                export(model, raw)
                fused_attention = _optimize(raw, fused, model.config)
                _commit(fused, fp32, {"variant": "fp32", "fused_attention": fused_attention})
        if target != fp32 and not is_valid(target):
            with tempfile.TemporaryDirectory(prefix=".quant-", dir=folder) as tmp:
                q = Path(tmp) / "q.onnx"
                _quantize(fp32, q)
                _commit(q, target, {"variant": quantize})
    return target


def session(graph: Path, num_threads: int):
    """An onnxruntime CPU session on ``graph`` with ``num_threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(num_threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(graph), sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """``last_hidden_state`` of a batch through an onnxruntime session (thread-safe ``run``)."""

    def __init__(self, graph: Path, num_threads: int) -> None:
        self.graph = graph
        self.num_threads = num_threads
        self.session = session(graph, num_threads)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def hidden(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        return self.session.run(["last_hidden_state"], {k: feed[k] for k in self.inputs})[0]
