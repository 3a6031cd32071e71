"""On-disk embedding cache: one folder per (model, encode options), one row per distinct text.

Layout of ``<root>/<model key>/``::

    vectors.f32   float32 rows, [count, dim], row-major, append-only (memory-mapped to read)
    keys.u64      uint64 pairs, [count, 2]: the 16-byte BLAKE2b digest of each row's text
    meta.json     {"count", "dim", "model", "options"}: ``count`` is the commit point
    lock          flock target serialising writers

A writer appends vectors, then keys, fsyncs both, and only then rewrites ``meta.json``
(temporary file + rename). Rows past ``count`` are garbage from a killed writer and are
truncated by the next writer. So a killed embed leaves a valid cache holding every batch
committed before the kill, and a re-run embeds only what is missing.

Sharded embedding (``model.shards``) stages each shard in ``shards/<shard digest>/``, a
cache of the same format with its own lock, so shard writers (threads, Dask worker
processes) never contend. The digest covers the shard's text keys and batch grouping, so
a re-run of the same embed finds every finished shard (and the committed batches of an
unfinished one). ``merge`` then copies the shards' rows into this cache under its lock in
one commit and deletes the shard folders: the main cache holds all of a merge or none.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from alft.errors import AlftError
from alft.fsutil import atomic_write_text


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """16-byte BLAKE2b of each text as uint64 pairs ``[n, 2]``."""
    out = np.empty((len(texts), 2), dtype=np.uint64)
    buf = out.view(np.uint8).reshape(len(texts), 16)
    for i, t in enumerate(texts):
        buf[i] = np.frombuffer(
            hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest(), dtype=np.uint8
        )
    return out


def model_digest(path: str) -> str:
    """Digest of a model folder (file names, sizes, small files fully, large ones head+tail).

    A hub id (not a folder) digests its name: the hub revision is not known offline.
    """
    p = Path(path)
    h = hashlib.sha256()
    if not p.is_dir():
        h.update(f"hub:{path}".encode())
        return h.hexdigest()[:20]
    chunk = 4 << 20
    for f in sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")):
        size = f.stat().st_size
        h.update(f"{f.relative_to(p)}:{size}\n".encode())
        with f.open("rb") as fh:
            if size <= 2 * chunk:
                h.update(fh.read())
            else:
                h.update(fh.read(chunk))
                fh.seek(size - chunk)
                h.update(fh.read(chunk))
    return h.hexdigest()[:20]


class EmbeddingCache:
    """Append-only text -> vector store for one model and set of encode options."""

    def __init__(self, root: Path, model_key: str, dim: int, describe: dict | None = None) -> None:
        self.dir = Path(root) / model_key
        self.dim = dim
        self.describe = describe or {}
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AlftError(f"embedding cache {self.dir}: cannot create ({exc.strerror})") from None
        self._vec = self.dir / "vectors.f32"
        self._keys = self.dir / "keys.u64"
        self._meta = self.dir / "meta.json"

    # ---------------------------------------------------------------- reading
    def count(self) -> int:
        if not self._meta.exists():
            return 0
        meta = json.loads(self._meta.read_text())
        if meta["dim"] != self.dim:
            raise AlftError(
                f"embedding cache {self.dir}: holds dim {meta['dim']}, model gives {self.dim}"
            )
        return int(meta["count"])

    def _load_keys(self, count: int) -> np.ndarray:
        if count == 0:
            return np.empty((0, 2), dtype=np.uint64)
        return np.fromfile(self._keys, dtype=np.uint64, count=2 * count).reshape(count, 2)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Cache row of each key ``[n, 2]`` -> int64[n], -1 where absent."""
        count = self.count()
        stored = self._load_keys(count)  # [count, 2]
        rows = np.full(len(keys), -1, dtype=np.int64)
        if count == 0 or len(keys) == 0:
            return rows
        order = np.lexsort((stored[:, 1], stored[:, 0]))  # by hi, then lo
        hi_sorted = stored[order, 0]
        lo_sorted = stored[order, 1]
        pos = np.searchsorted(hi_sorted, keys[:, 0])
        pos_c = np.minimum(pos, count - 1)
        hit = (hi_sorted[pos_c] == keys[:, 0]) & (lo_sorted[pos_c] == keys[:, 1])
        rows[hit] = order[pos_c[hit]]
        # equal high halves with different low halves: resolve the few by a scan
        maybe = np.flatnonzero(~hit & (hi_sorted[pos_c] == keys[:, 0]))
        for i in maybe:
            j = int(pos[i])
            while j < count and hi_sorted[j] == keys[i, 0]:
                if lo_sorted[j] == keys[i, 1]:
                    rows[i] = order[j]
                    break
                j += 1
        return rows

    def vectors(self) -> np.ndarray:
        """Memory-mapped float32 ``[count, dim]`` (read-only)."""
        count = self.count()
        if count == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.memmap(self._vec, dtype=np.float32, mode="r", shape=(count, self.dim))

    def get(self, keys: np.ndarray) -> np.ndarray:
        """Vectors for ``keys`` (all must be present), float32 ``[n, dim]``."""
        rows = self.lookup(keys)
        if (rows < 0).any():
            raise AlftError(f"embedding cache {self.dir}: {int((rows < 0).sum())} texts missing")
        vecs = self.vectors()
        if len(rows) and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
            return np.asarray(vecs[rows[0] : rows[0] + len(rows)])
        return np.asarray(vecs[rows])

    # ---------------------------------------------------------------- writing
    @contextmanager
    def writer(self) -> Iterator[_Writer]:
        """Exclusive writer; truncates rows a killed writer left past the commit point."""
        with open(self.dir / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                count = self.count()
                for path, width in ((self._vec, 4 * self.dim), (self._keys, 16)):
                    if path.exists() and path.stat().st_size != count * width:
                        with open(path, "r+b") as fh:
                            fh.truncate(count * width)
                yield _Writer(self, count)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # ---------------------------------------------------------------- shards
    def shard(self, name: str) -> EmbeddingCache:
        """The staging cache of one shard: ``<dir>/shards/<name>/``, same format, own lock."""
        return EmbeddingCache(self.dir / "shards", name, self.dim, self.describe)

    def merge(self, shards: Sequence[EmbeddingCache], chunk_rows: int = 65536) -> int:
        """Copy the shards' committed rows this cache lacks, in one commit; delete the shards.

        Returns the number of rows added. A crash before the commit leaves this cache as it
        was and the shard folders intact (a re-run merges them again); after it, only the
        shard folders may be left, and ``prune_shards`` removes them.
        """
        with self.writer() as w:
            start = w.count

            def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
                seen = self._load_keys(start)
                for sh in shards:
                    n = sh.count()
                    keys = sh._load_keys(n)
                    new = _absent(keys, seen)
                    if not new.size:
                        continue
                    vecs = sh.vectors()
                    for s in range(0, new.size, chunk_rows):
                        rows = new[s : s + chunk_rows]
                        yield keys[rows], np.asarray(vecs[rows])
                    seen = np.concatenate([seen, keys[new]])

            w.append_many(chunks())
            added = w.count - start
        for sh in shards:
            _remove_tree(sh.dir)
        return added

    def prune_shards(self) -> int:
        """Delete shard folders whose every committed row is already in this cache."""
        root = self.dir / "shards"
        if not root.is_dir():
            return 0
        stored = self._load_keys(self.count())
        removed = 0
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            sh = EmbeddingCache(root, d.name, self.dim)
            try:
                keys = sh._load_keys(sh.count())
            except (OSError, ValueError, AlftError):
                continue
            if _absent(keys, stored).size == 0:
                _remove_tree(d)
                removed += 1
        return removed


def _absent(keys: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """Positions of ``keys`` [n, 2] not in ``stored`` [m, 2] (sorted int64)."""
    if len(keys) == 0:
        return np.empty(0, dtype=np.int64)
    if len(stored) == 0:
        return np.arange(len(keys), dtype=np.int64)
    k = np.ascontiguousarray(keys, dtype=np.uint64).view(np.dtype((np.void, 16))).ravel()
    s = np.ascontiguousarray(stored, dtype=np.uint64).view(np.dtype((np.void, 16))).ravel()
    return np.flatnonzero(~np.isin(k, s))


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


class _Writer:
    def __init__(self, cache: EmbeddingCache, count: int) -> None:
        self.cache = cache
        self.count = count

    def append(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Append rows and commit them (fsync, then the meta rename)."""
        self.append_many([(keys, vectors)])

    def append_many(self, chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """Append every ``(keys, vectors)`` chunk, then commit them all at once (one meta rename)."""
        c = self.cache
        added = 0
        with open(c._vec, "ab") as vfh, open(c._keys, "ab") as kfh:
            for keys, vectors in chunks:
                vectors = np.ascontiguousarray(vectors, dtype=np.float32)
                keys = np.ascontiguousarray(keys, dtype=np.uint64)
                if vectors.shape != (len(keys), c.dim):
                    raise AlftError(f"embedding cache: got vectors {vectors.shape}, keys {keys.shape}")
                if not np.isfinite(vectors).all():
                    raise AlftError("embedding cache: refusing to store NaN or inf vectors")
                vfh.write(vectors.tobytes())
                kfh.write(keys.tobytes())
                added += len(keys)
            if added == 0:
                return
            for fh in (vfh, kfh):
                fh.flush()
                os.fsync(fh.fileno())
        self.count += added
        atomic_write_text(
            c._meta,
            json.dumps({"count": self.count, "dim": c.dim, **c.describe}, sort_keys=True),
        )
