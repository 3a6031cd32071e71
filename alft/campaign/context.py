"""What every step of a campaign shares: the context passed to tasks, and memoised resources.

A suspended or re-triggered flow re-runs from the top, so nothing here holds loop state:
the context is the config plus the campaign's identity, and every resource (store, data,
embeddings, models) is re-derived from it, memoised per process for speed only.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, PrivateAttr
from sqlalchemy.engine import Connection

from alft import faults
from alft.config import CampaignConfig
from alft.data import CampaignData, load_campaign_data
from alft.store.campaign_store import CampaignStore

log = logging.getLogger("alft")

# Steps of one round, in order. Also the names of the Prefect tasks.
STEP_ORDER = ("embed", "score", "select", "labels", "train", "evaluate", "stop")

# Stream ids that make every random draw independent: (seed, round, stream).
RNG_SELECT = 1
RNG_TRAIN = 2
RNG_MC = 3
RNG_STOP = 4  # the fixed stop set of the stabilizing-predictions rule (drawn with round 0)
RNG_CONTROL = 5  # the random control arm's draw (strategy.control_share); never touches RNG_SELECT
RNG_AUDIT = 6  # oracle.kind mixed: which would-be-auto examples go to people instead (the audit)


class CampaignContext(BaseModel):
    """The campaign's config and identity, opened once per flow run and handed to every task.

    ``store`` and ``data`` are the campaign's store handle and its checked pool/eval data,
    opened on first use and then kept by this context for the rest of the flow run, so a
    task never rebuilds them from the config. They are handles, not state: they are not
    part of the context's value (equality, pickling for a Dask worker or Prefect's
    persisted results) and are reopened wherever the context is unpickled. Loop state
    stays in the store.
    """

    model_config = ConfigDict(frozen=True)

    config: CampaignConfig
    uid: str
    _store: CampaignStore | None = PrivateAttr(None)
    _data: CampaignData | None = PrivateAttr(None)

    @property
    def store(self) -> CampaignStore:
        if self._store is None:
            self._store = open_store(self.config)
        return self._store

    @property
    def data(self) -> CampaignData:
        if self._data is None:
            self._data = campaign_data(self.config)
        return self._data

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        return {**state, "__pydantic_private__": {"_store": None, "_data": None}}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CampaignContext):
            return NotImplemented
        return (self.config, self.uid) == (other.config, other.uid)

    def __hash__(self) -> int:
        return hash(self.uid)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def workdir(self) -> Path:
        return self.config.workdir_path()

    def round_dir(self, round_: int) -> Path:
        return self.workdir / "rounds" / f"{round_:03d}"

    def rng(self, round_: int, stream: int) -> np.random.Generator:
        """The generator for one random stream of one round: same seed and round, same draws."""
        return np.random.default_rng([self.config.seed, round_, stream])

    def seed_for(self, round_: int, stream: int) -> int:
        return int(self.rng(round_, stream).integers(0, 2**31 - 1))

    def strategy_config(self, round_: int):
        return self.config.cold_start if round_ == 0 else self.config.strategy


@lru_cache(maxsize=16)
def _store(url: str) -> CampaignStore:
    return CampaignStore(url)


def open_store(cfg: CampaignConfig) -> CampaignStore:
    """The campaign store for ``cfg`` (one engine per URL per process)."""
    return _store(cfg.store_url())


def campaign_data(cfg: CampaignConfig) -> CampaignData:
    """Pool, eval and label set, loaded and checked (memoised while the files are unchanged)."""
    return load_campaign_data(cfg)


def resolve_model(cfg: CampaignConfig) -> str:
    from alft.models.encoder import resolve_model_path

    return resolve_model_path(cfg.model.path, cfg.cache_dir())


def set_threads(cfg: CampaignConfig) -> None:
    import torch

    n = cfg.model.num_threads or os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def blas_limits(cfg: CampaignConfig):
    """Context: BLAS thread pools held to ``model.blas_threads`` (threadpoolctl), restored after."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=cfg.model.blas_threads, user_api="blas")


def campaign_facts(cfg: CampaignConfig) -> dict[str, Any]:
    """What identifies a campaign's data and model; a resumed run must match it exactly.

    Loads and checks the data and resolves the model, so it is also the preflight check.
    """
    data = campaign_data(cfg)
    return {
        "seed": cfg.seed,
        "pool_digest": data.pool.digest,
        "pool_size": len(data.pool),
        "eval_digest": data.eval.digest if data.eval is not None else None,
        "labels": data.labels,
        "model_digest": model_key(cfg),
    }


_FACT_NAMES = {
    "seed": "seed",
    "pool_digest": "pool data (ids or texts changed)",
    "pool_size": "pool size",
    "eval_digest": "eval data",
    "labels": "label set",
    "model_digest": "model (weights, max_length or pooling)",
}


def verify_campaign(cfg: CampaignConfig, existing: dict[str, Any], facts: dict[str, Any], url: str) -> None:
    """Raise CampaignMismatchError when the stored campaign was made from other data or model."""
    from alft.errors import CampaignMismatchError
    from alft.store.engine import safe_url

    diffs = [_FACT_NAMES[k] for k, v in facts.items() if existing[k] != v]
    if diffs:
        raise CampaignMismatchError(
            f"campaign '{cfg.name}' in {safe_url(url)} was created with a different "
            f"{', '.join(dict.fromkeys(diffs))}; keep the original settings to resume it, "
            "or give this config a new name"
        )


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".gguf")
_TOKENIZER_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
    "tokenizer.model", "vocab.model",
)


def check_model_folder(path: str) -> None:
    """A local model folder must hold a readable config.json, weights and a tokenizer.

    transformers would otherwise fail late (no weights: in the embed step, after the
    campaign is created) or not at all: without tokenizer files, transformers 5 builds a
    tokenizer of special tokens only, and every text embeds as a row of [UNK].
    """
    from alft.errors import ModelError

    p = Path(path)
    if not p.is_dir():
        return  # a hub id: checked when it is loaded
    try:
        names = [f.name for f in p.iterdir()]
    except OSError as exc:
        raise ModelError(f"model folder {p}: cannot list it ({exc.strerror})") from None
    if not any(n.endswith(_WEIGHT_SUFFIXES) for n in names):
        raise ModelError(
            f"model folder {p} holds no weights (model.safetensors or pytorch_model.bin); "
            "copy the whole folder that save_pretrained wrote"
        )
    if not any(n in _TOKENIZER_FILES or n.endswith(".tiktoken") for n in names):
        raise ModelError(
            f"model folder {p} holds no tokenizer (none of {', '.join(_TOKENIZER_FILES[:3])}, ...); "
            "save the tokenizer into the same folder (tokenizer.save_pretrained)"
        )
    try:
        cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise ModelError(f"model folder {p}: config.json cannot be read ({why})") from None
    if not isinstance(cfg, dict) or "model_type" not in cfg and "architectures" not in cfg:
        raise ModelError(f"model folder {p}: config.json names no model_type (is it a transformers model?)")


def check_workdir(cfg: CampaignConfig) -> None:
    """The campaign folder must be (or be creatable as) a folder this process can write in.

    Checked before anything is written, so a read-only or full location fails with its name
    instead of half-way through the first step. The probe is an anonymous temporary file.
    """
    import tempfile

    from alft.errors import AlftError

    path = cfg.workdir_path().absolute()
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        where = f"campaign folder {path}" + ("" if probe == path else f": {probe}")
        raise AlftError(f"{where} is a file, not a folder; set workdir to a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        what = "campaign folder" if probe == path else f"campaign folder {path} cannot be created:"
        raise AlftError(
            f"{what} {probe} is not writable ({exc.strerror}); make it writable or set workdir to another folder"
        ) from None


def prelabel_descriptions(cfg) -> dict[str, str] | None:
    """``oracle.prelabel_descriptions``, else ``zero_shot.descriptions`` when zero_shot is set,
    read and checked (label -> description), or None."""
    from alft.models.zeroshot import load_descriptions

    value, name = cfg.oracle.prelabel_descriptions, "oracle.prelabel_descriptions"
    if value is None and cfg.zero_shot is not None:
        value, name = cfg.zero_shot.descriptions, "zero_shot.descriptions"
    return load_descriptions(value, name=name)


def preflight(cfg: CampaignConfig) -> dict[str, Any]:
    """Every check that needs no write: data, labels, model, an existing campaign's identity,
    and that no live process runs it already."""
    from sqlalchemy.engine import make_url

    facts = campaign_facts(cfg)
    check_model_folder(resolve_model(cfg))
    if cfg.oracle.prelabel in ("llm", "pooled") and cfg.task == "classification":
        # a bad descriptions file is found now, not at the first batch's proposals
        from alft.models.zeroshot import label_sentences

        where = "oracle.prelabel_descriptions" if cfg.oracle.prelabel_descriptions is not None else "zero_shot.descriptions"
        label_sentences(campaign_data(cfg).labels, "{label}", prelabel_descriptions(cfg), where=where)
    check_workdir(cfg)
    url = make_url(cfg.store_url())
    local_missing = url.get_backend_name() == "sqlite" and not Path(url.database or "").exists()
    if not local_missing:
        store = open_store(cfg)
        existing = store.campaign(cfg.name)
        if existing is not None:
            from alft.store.leases import check_free

            verify_campaign(cfg, existing, facts, cfg.store_url())
            check_free(store, cfg.name)
    return facts


# --------------------------------------------------------------------------- embeddings
@lru_cache(maxsize=4)
def _encoder(
    path: str,
    max_length: int,
    batch_size: int,
    pooling: str = "mean",
    backend: str = "auto",
    quantize: str | None = None,
    cache_dir: str | None = None,
    num_threads: int | None = None,
):
    from alft.models.encoder import EncodeOptions, Encoder

    options = EncodeOptions(
        max_length=max_length, batch_size=batch_size, pooling=pooling, backend=backend, quantize=quantize
    )
    return Encoder(path, options, cache_dir=cache_dir, num_threads=num_threads)


def encoder_for(cfg: CampaignConfig):
    """The campaign's encoder (memoised). Its ONNX session, if any, takes ``model.num_threads``
    intra-op threads, else torch's thread count when it is made (``set_threads``, ``shard_threads``)."""
    m = cfg.model
    return _encoder(
        resolve_model(cfg), m.max_length, m.batch_size, m.pooling, m.backend, m.onnx_quantize,
        str(cfg.cache_dir()), m.num_threads,
    )


@lru_cache(maxsize=4)
def _model_digest(path: str, stamp: float) -> str:
    from alft.models.embedcache import model_digest

    return model_digest(path)


def model_key(cfg: CampaignConfig) -> str:
    """Cache folder name: the model's content digest plus the encode options."""
    path = resolve_model(cfg)
    stamp = Path(path).stat().st_mtime if Path(path).exists() else 0.0
    quant = f"-{cfg.model.onnx_quantize}" if cfg.model.onnx_quantize else ""  # int8 vectors differ
    enc_opts = f"len{cfg.model.max_length}-{cfg.model.pooling}-l2{quant}"  # EncodeOptions.key()
    return f"{_model_digest(path, stamp)}-{enc_opts}"


def embedding_cache(cfg: CampaignConfig):
    from alft.models.embedcache import EmbeddingCache

    enc = encoder_for(cfg)
    return EmbeddingCache(
        cfg.cache_dir(),
        model_key(cfg),
        enc.dim,
        describe={
            "model": cfg.model.path, "max_length": cfg.model.max_length, "pooling": cfg.model.pooling, "normalize": True,
            **({"onnx_quantize": cfg.model.onnx_quantize} if cfg.model.onnx_quantize else {}),
        },
    )


def embed_with_cache(cfg: CampaignConfig, texts: list[str], label: str) -> dict[str, int]:
    """Make sure every text has a cached vector; embed the missing ones (committing as it goes).

    Returns ``texts``, ``embedded`` (distinct texts this call embedded) and ``cached`` (texts
    already in the cache). The missing texts are decided again under the cache's writer
    lock: two campaigns embedding the same pool at once (two flow runs, two processes)
    leave one copy of each vector, the second one finding the first one's work.
    """
    from alft.models.embedcache import text_keys

    cache = embedding_cache(cfg)
    keys = text_keys(texts)
    if (cache.lookup(keys) >= 0).all():
        return {"texts": len(texts), "embedded": 0, "cached": len(texts)}
    try:
        return _embed_missing(cfg, cache, texts, keys, label)
    except OSError as exc:  # a full or read-only disk: the batches committed before are kept
        from alft.errors import AlftError

        raise AlftError(
            f"embedding cache {cache.dir}: cannot write ({exc.strerror}); the vectors committed "
            "before are kept: make room (or set model.cache_dir / $ALFT_CACHE_DIR) and run again"
        ) from None


def _embed_missing(cfg: CampaignConfig, cache, texts: list[str], keys: np.ndarray, label: str) -> dict[str, int]:
    from alft import progress

    with cache.writer() as w:
        missing = np.flatnonzero(cache.lookup(keys) < 0)
        if missing.size == 0:  # another process embedded them while this one waited for the lock
            return {"texts": len(texts), "embedded": 0, "cached": len(texts)}
        # one vector per distinct text
        _, first = np.unique(keys[missing], axis=0, return_index=True)
        todo = missing[np.sort(first)]
        todo_texts = [texts[i] for i in todo]
        todo_keys = keys[todo]
        set_threads(cfg)
        enc = encoder_for(cfg)
        batches = enc.batches(todo_texts)
        lengths = getattr(enc, "_lengths", None)  # token counts, already cut at max_length
        if lengths is not None and (cut := int((lengths >= cfg.model.max_length).sum())):
            # long texts are accepted: each is truncated to its first max_length tokens
            log.info(
                "embed %s: %d of %d texts reach model.max_length (%d tokens); longer ones are truncated",
                label, cut, len(todo_texts), cfg.model.max_length,
            )
        flush_every = max(1, 1024 // cfg.model.batch_size)  # whole batches, so a resume re-forms the same ones
        with progress.bar(f"embed {label}", len(todo_texts)) as advance:
            pend_pos: list[np.ndarray] = []
            pend_vec: list[np.ndarray] = []
            for i, pos in enumerate(batches):
                pend_vec.append(enc.encode_batch(pos))
                pend_pos.append(pos)
                advance(len(pos))
                if (i + 1) % flush_every == 0 or i == len(batches) - 1:
                    p = np.concatenate(pend_pos)
                    w.append(todo_keys[p], np.concatenate(pend_vec))
                    pend_pos, pend_vec = [], []
                    faults.point("embed.flush")
    return {"texts": len(texts), "embedded": int(todo.size), "cached": int(len(texts) - missing.size)}


_EMB_MEMO: dict[tuple, np.ndarray] = {}


def embeddings_for(cfg: CampaignConfig, texts: list[str], digest: str) -> np.ndarray:
    """float32 ``[n, d]`` vectors of ``texts``, memoised by content digest.

    Missing vectors (a cache folder deleted between steps) are embedded again, so a later
    step never depends on the embed step's side effect still being on disk.
    """
    from alft.models.embedcache import text_keys

    key = (str(cfg.cache_dir()), model_key(cfg), digest)
    if key not in _EMB_MEMO:
        embed_with_cache(cfg, texts, "texts")
        if len(_EMB_MEMO) >= 4:
            _EMB_MEMO.pop(next(iter(_EMB_MEMO)))
        _EMB_MEMO[key] = embedding_cache(cfg).get(text_keys(texts))
    return _EMB_MEMO[key]


_MEAN_MEMO: dict[tuple, np.ndarray] = {}


def feature_mean(cfg: CampaignConfig, data: CampaignData) -> np.ndarray | None:
    """float64 ``[d]``: the pool's mean vector when ``model.center`` is set, else None."""
    if not cfg.model.center:
        return None
    from alft.models.encoder import pool_mean

    key = (str(cfg.cache_dir()), model_key(cfg), data.pool.digest)
    if key not in _MEAN_MEMO:
        if len(_MEAN_MEMO) >= 4:
            _MEAN_MEMO.pop(next(iter(_MEAN_MEMO)))
        _MEAN_MEMO[key] = pool_mean(embeddings_for(cfg, data.pool.texts, data.pool.digest))
    return _MEAN_MEMO[key]


def features_for(cfg: CampaignConfig, data: CampaignData, split: str) -> np.ndarray:
    """float32 ``[n, d]`` features of the ``pool`` (pool-id rows) or ``eval`` split (eval rows).

    The cached vectors, centred on the pool's mean with ``model.center`` (the eval split
    too: its own mean would shift it differently from the features the head learnt on).
    Centring is data-dependent, so it happens here, after the cache, which keeps the raw
    vectors whatever the pool: another pool (or none centred) shares them.
    """
    part = data.pool if split == "pool" else data.eval
    if part is None:
        raise ValueError(f"features_for: the campaign has no '{split}' split")
    mean = feature_mean(cfg, data)
    if mean is None:
        return embeddings_for(cfg, part.texts, part.digest)
    from alft.models.encoder import center

    key = (str(cfg.cache_dir()), model_key(cfg), part.digest, "centred", data.pool.digest)
    if key not in _EMB_MEMO:
        raw = embeddings_for(cfg, part.texts, part.digest)
        if len(_EMB_MEMO) >= 4:
            _EMB_MEMO.pop(next(iter(_EMB_MEMO)))
        _EMB_MEMO[key] = center(raw, mean)
    return _EMB_MEMO[key]


# --------------------------------------------------------------------------- steps
def run_step(
    ctx: CampaignContext,
    round_: int,
    step: str,
    compute: Callable[[], tuple[dict[str, Any], Callable[[Connection], None] | None]],
) -> dict[str, Any]:
    """Run a step once: skip it if the store says it is done, else compute and commit.

    ``compute`` returns the step's JSON result and an optional ``commit(conn)`` writing the
    step's own rows (it may return updates to the result); both land in one transaction
    with the step's done-marker.
    """
    store = ctx.store
    done = store.step_result(ctx.name, round_, step)
    if done is not None:
        log.info("round %d: %s already done, skipped", round_, step)
        return done
    faults.point(f"r{round_}.{step}.start")
    t0 = time.perf_counter()
    result, commit = compute()
    seconds = time.perf_counter() - t0
    result = {**result, "seconds": round(seconds, 4)}
    with store.transaction() as conn:
        if commit is not None:
            # a commit may re-read under the transaction's locks and correct the result
            # (what it read before the transaction may have changed since)
            result.update(commit(conn) or {})
        faults.point(f"r{round_}.{step}.commit")
        store.finish_step(conn, ctx.name, round_, step, result, seconds)
    return result


def rel(ctx: CampaignContext, path: Path) -> str:
    """A path inside the campaign folder, relative to it (so the folder can move)."""
    return str(Path(path).resolve().relative_to(ctx.workdir.resolve()))

