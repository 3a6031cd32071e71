"""Pool and eval data through Hugging Face ``datasets``, with schema checks.

A loaded split is a ``TextDataset``: parallel lists indexed by *pool id* (the row position
in the loaded split). Every check names the file, the row and the id it failed on.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from alft.config import CampaignConfig, DataConfig, DataSource
from alft.errors import DataError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_EXT = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Example:
    """One instruction, with its optional input (the data's input column; empty when absent)."""

    instruction: str
    input: str = ""

    def __post_init__(self) -> None:
        if self.input is None:  # a missing input cell reads as None
            object.__setattr__(self, "input", "")
        if not isinstance(self.instruction, str) or not isinstance(self.input, str):
            raise DataError(
                f"an example's instruction and input must be strings, got "
                f"{type(self.instruction).__name__} and {type(self.input).__name__}"
            )


@dataclass(frozen=True)
class TextDataset:
    """A loaded split. ``ids[i]``, ``texts[i]`` and ``gold[i]`` describe pool id ``i``."""

    ids: list[str]
    texts: list[str]
    gold: list[str | None] | None
    source: str
    fmt: str
    digest: str
    _index: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    # task generation: ``texts[i]`` is the instruction (and input) the expert answers; the
    # parts are kept apart because prompts are built from them, not from the joined text
    instructions: list[str] | None = None
    inputs: list[str] | None = None
    candidates: list[str] | None = None  # draft responses (shown to correct; the ifd strategy)

    def examples(self, pool_ids=None) -> list:
        """``Example`` of each pool id (all when None); generation splits only."""
        if self.instructions is None:
            raise DataError(f"{self.source}: not a generation split (no instruction column was read)")
        rows = range(len(self.ids)) if pool_ids is None else (int(i) for i in pool_ids)
        return [Example(self.instructions[i], self.inputs[i] if self.inputs else "") for i in rows]

    def __len__(self) -> int:
        return len(self.ids)

    def pool_id(self, example_id: str) -> int:
        """Pool id of an example id; KeyError if the split has no such id."""
        if not self._index:
            self._index.update({x: i for i, x in enumerate(self.ids)})
        return self._index[example_id]

    def pool_ids(self, example_ids: list[str]) -> list[int]:
        return [self.pool_id(x) for x in example_ids]


def detect_format(src: DataSource) -> str:
    """The loader to use for ``src``: json, csv, parquet, disk (a saved dataset) or hub."""
    if src.format != "auto":
        return src.format
    p = Path(src.path)
    if p.is_dir():
        return "disk"
    if p.exists():
        fmt = _EXT.get(p.suffix.lower())
        if fmt is None:
            raise DataError(
                f"{src.path}: cannot tell the format from the extension '{p.suffix}'; "
                "set format: json|csv|parquet"
            )
        return fmt
    if p.is_absolute() or src.path.startswith((".", "~")) or not _HUB_ID.match(src.path):
        raise DataError(f"data file not found: {src.path}")
    return "hub"


def check_text_file(path: str | Path, where: str, chunk: int = 1 << 20) -> None:
    """A text data file must be readable and UTF-8; DataError naming the first bad byte's line and column.

    ``datasets`` reads a Latin-1 JSONL file without complaint and fails only when a column
    is read, without saying where; this scan (one pass, ~1 s per GB) says where.
    """
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise DataError(f"{where}: cannot read ({exc.strerror})") from None
    with fh:
        base = 0  # file offset of buf[0]
        lines = 0  # newlines before base
        last_nl = -1  # file offset of the last newline before base
        carry = b""
        while True:
            try:
                data = fh.read(chunk)
            except OSError as exc:
                raise DataError(f"{where}: cannot read ({exc.strerror})") from None
            buf = carry + data
            if not buf:
                return
            try:
                buf.decode("utf-8")
                good = len(buf)
            except UnicodeDecodeError as exc:
                # a character cut by the chunk boundary: keep its bytes for the next chunk
                if data and exc.reason == "unexpected end of data" and exc.start >= len(buf) - 3:
                    good = exc.start
                else:
                    bad = base + exc.start
                    head = buf[: exc.start]
                    n = lines + head.count(b"\n")
                    nl = head.rfind(b"\n")
                    col = bad - ((base + nl) if nl >= 0 else last_nl)
                    raise DataError(
                        f"{where} line {n + 1}, column {col}: not UTF-8 (byte 0x{buf[exc.start]:02x}); "
                        "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                    ) from None
            done = buf[:good]
            nl = done.rfind(b"\n")
            if nl >= 0:
                last_nl = base + nl
            lines += done.count(b"\n")
            base += good
            carry = buf[good:]
            if not data:
                return


def _root_cause(exc: BaseException) -> str:
    """The first line of the innermost message of an exception chain (datasets wraps the parser's)."""
    from alft.errors import chain

    msgs = [text.splitlines()[0] for e in chain(exc) if (text := str(e).strip())]
    return msgs[-1] if msgs else type(exc).__name__


def _first_bad_json(path: str | Path) -> str | None:
    """Where a JSON or JSONL file that datasets refused is malformed: ``line N: ...`` (or None)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return None
    if text.lstrip().startswith("["):  # one JSON document (an array of records)
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            return f"line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg})"
        except (ValueError, RecursionError) as exc:
            return f": not valid JSON ({type(exc).__name__})"
        return None
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            return f"line {n}, column {exc.colno}: not valid JSON ({exc.msg}); one JSON object per line"
        except (ValueError, RecursionError) as exc:
            return f"line {n}: not valid JSON ({type(exc).__name__})"
        if not isinstance(obj, dict):
            return f"line {n}: a JSON object is expected, got {type(obj).__name__}"
    return None


def _load_raw(src: DataSource, fmt: str, role: str):
    """Return a ``datasets.Dataset`` for the split."""
    import datasets

    datasets.disable_progress_bars()
    path = src.path
    try:
        if fmt in ("json", "csv", "parquet"):
            if not Path(path).exists():
                raise DataError(f"{role} data file not found: {path}")
            if Path(path).stat().st_size == 0:
                raise DataError(f"{role} data {path}: the file is empty")
            if fmt != "parquet":
                check_text_file(path, f"{role} data {path}")
            # datasets logs a failed parse as an ERROR line of its own: the DataError says it
            level = datasets.logging.get_verbosity()
            datasets.logging.set_verbosity(datasets.logging.CRITICAL + 10)
            try:
                return datasets.load_dataset(fmt, data_files=str(path), split="train")
            finally:
                datasets.logging.set_verbosity(level)
        if fmt == "disk":
            if not Path(path).is_dir():
                raise DataError(f"{role} data folder not found: {path}")
            obj = datasets.load_from_disk(path)
        else:  # hub
            obj = datasets.load_dataset(path, split=src.split)
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"{role} data {path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{role} data {path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "re-encode the file as UTF-8"
        ) from None
    except Exception as exc:  # datasets/pyarrow raise many types; name the file, keep the cause
        if "corresponds to no data" in str(exc):  # blank lines only, or a CSV header only
            raise DataError(f"{role} data {path}: no rows (the file holds no records)") from None
        if fmt == "json" and (bad := _first_bad_json(path)) is not None:
            raise DataError(f"{role} data {path} {bad}") from None
        hint = ""
        if fmt == "hub":
            hint = " (hub datasets need a network, or HF_DATASETS_OFFLINE=0 and a local cache)"
        raise DataError(f"{role} data {path}: cannot load as {fmt}{hint}: {_root_cause(exc)}") from exc
    if isinstance(obj, datasets.DatasetDict):
        if src.split not in obj:
            raise DataError(
                f"{role} data {path}: no split '{src.split}' (splits: {', '.join(obj)})"
            )
        obj = obj[src.split]
    return obj


def _digest(ids: list[str], texts: list[str], extra: list[str] | None = None) -> str:
    h = hashlib.sha256()
    for i, t in zip(ids, texts, strict=True):
        h.update(i.encode("utf-8", "surrogatepass"))
        h.update(b"\x1f")
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x1e")
    if extra is not None:  # candidate responses: they change what the ifd strategy sees
        h.update(b"\x1d")
        for t in extra:
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\x1e")
    return h.hexdigest()


def join_prompt(instruction: str, input_: str) -> str:
    """The one text that stands for an instruction example (embedding, display, digest)."""
    return f"{instruction}\n\n{input_}" if input_ and input_.strip() else instruction


def _first_rows(rows: list[int], ids: list[str] | None = None, n: int = 3) -> str:
    parts = []
    for r in rows[:n]:
        parts.append(f"row {r + 1}" + (f" (id {ids[r]!r})" if ids is not None else ""))
    more = f" and {len(rows) - n} more" if len(rows) > n else ""
    return ", ".join(parts) + more


def _text_column(ds, col: str, where: str, ids: list[str], *, required: bool, noun: str | None = None) -> list[str]:
    """A text column: strings (or null -> empty when not required), no NUL bytes."""
    raw = ds[col][:]  # one Arrow read: iterating a datasets Column formats row by row (~15 s per pass at 1M rows)
    not_str = [i for i, t in enumerate(raw) if t is not None and not isinstance(t, str)]
    if not_str:
        raise DataError(
            f"{where}: column '{col}' must hold text; {len(not_str)} rows do not: {_first_rows(not_str, ids)}"
        )
    if required:
        empty = [i for i, t in enumerate(raw) if t is None or not t.strip()]
        if empty:
            what = noun or f"values in '{col}'"
            raise DataError(f"{where}: {len(empty)} empty {what}: {_first_rows(empty, ids)}")
    out = ["" if t is None else t for t in raw]
    binary = [i for i, t in enumerate(out) if "\x00" in t]
    if binary:
        raise DataError(
            f"{where}: {len(binary)} values of '{col}' hold NUL bytes (binary data?): {_first_rows(binary, ids)}"
        )
    return out


def _load_split(
    src: DataSource, dcfg: DataConfig, role: str, need_gold: bool, task: str = "classification"
) -> TextDataset:
    fmt = detect_format(src)
    ds = _load_raw(src, fmt, role)
    where = f"{role} data {src.path}"
    if len(ds) == 0:
        raise DataError(f"{where}: no rows")
    cols = list(ds.column_names)
    generation = task == "generation"
    main = dcfg.instruction_field if generation else dcfg.text_field
    wanted = [dcfg.id_field, main] + ([dcfg.label_field] if need_gold else [])
    if generation and dcfg.candidate_field is not None:
        wanted.append(dcfg.candidate_field)
    for col in wanted:
        if col is not None and col not in cols:
            raise DataError(f"{where}: no column '{col}' (columns: {', '.join(cols)})")
    raw_ids = ds[dcfg.id_field][:]
    null_ids = [i for i, x in enumerate(raw_ids) if x is None or (isinstance(x, str) and not x.strip())]
    if null_ids:
        raise DataError(f"{where}: {len(null_ids)} rows have no id: {_first_rows(null_ids)}")
    ids = [str(x) for x in raw_ids]
    seen: dict[str, int] = {}
    dups: list[tuple[str, int, int]] = []
    for i, x in enumerate(ids):
        if x in seen:
            dups.append((x, seen[x], i))
        else:
            seen[x] = i
    if dups:
        x, a, b = dups[0]
        raise DataError(
            f"{where}: {len(dups)} duplicate ids; first {x!r} at rows {a + 1} and {b + 1}"
        )
    instructions = inputs = candidates = None
    if generation:
        instructions = _text_column(ds, main, where, ids, required=True)
        has_input = dcfg.input_field is not None and dcfg.input_field in cols
        inputs = _text_column(ds, dcfg.input_field, where, ids, required=False) if has_input else None
        texts = [join_prompt(ins, inputs[i] if inputs else "") for i, ins in enumerate(instructions)]
        if dcfg.candidate_field is not None:
            candidates = _text_column(ds, dcfg.candidate_field, where, ids, required=True)
    else:
        texts = _text_column(ds, main, where, ids, required=True, noun="texts")
    gold = None
    if dcfg.label_field is not None and dcfg.label_field in cols:
        gold = [None if g is None else str(g) for g in ds[dcfg.label_field][:]]
        if need_gold:
            missing = [i for i, g in enumerate(gold) if g is None or not g.strip()]
            if missing:
                raise DataError(
                    f"{where}: {len(missing)} rows have no gold label in "
                    f"'{dcfg.label_field}': {_first_rows(missing, ids)}"
                )
    return TextDataset(
        ids=ids,
        texts=texts,
        gold=gold,
        source=src.path,
        fmt=fmt,
        digest=_digest(ids, texts, candidates),
        instructions=instructions,
        inputs=inputs,
        candidates=candidates,
    )


def _stamp(path: str) -> tuple:
    p = Path(path)
    try:
        st = p.stat()
        return (st.st_mtime_ns, st.st_size)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return (0, 0)


@lru_cache(maxsize=8)
def _cached_split(
    src_json: str, dcfg_json: str, role: str, need_gold: bool, stamp: tuple, task: str
) -> TextDataset:
    return _load_split(
        DataSource.model_validate_json(src_json), DataConfig.model_validate_json(dcfg_json), role, need_gold, task
    )


def load_split(
    src: DataSource, dcfg: DataConfig, role: str, need_gold: bool, task: str = "classification"
) -> TextDataset:
    """Load and check one split; memoised per process while the file is unchanged."""
    return _cached_split(src.model_dump_json(), dcfg.model_dump_json(), role, need_gold, _stamp(src.path), task)


def resolve_labels(dcfg: DataConfig, pool: TextDataset) -> list[str]:
    """The campaign's label set, in a fixed order (class index = position)."""
    if isinstance(dcfg.labels, list):
        return [str(x) for x in dcfg.labels]
    if isinstance(dcfg.labels, str):
        p = Path(dcfg.labels)
        if not p.exists():
            raise DataError(f"data.labels file not found: {p}")
        try:
            labels = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"data.labels file {p}: not valid JSON ({exc})") from None
        if not isinstance(labels, list) or not all(isinstance(x, str) and x.strip() for x in labels):
            raise DataError(f"data.labels file {p}: must hold a JSON list of non-empty strings")
        if len(set(labels)) != len(labels):
            dup = sorted(k for k, v in Counter(labels).items() if v > 1)
            raise DataError(f"data.labels file {p}: duplicate labels {dup}")
        if len(labels) < 2:
            raise DataError(f"data.labels file {p}: needs at least 2 labels, has {len(labels)}")
        return labels
    if pool.gold is None:
        raise DataError("data.labels is not set and the pool has no gold column to infer it from")
    labels = sorted({g for g in pool.gold if g is not None})
    if len(labels) < 2:
        raise DataError(f"the pool's gold column has {len(labels)} distinct labels; need at least 2")
    return labels


def check_gold_in_labels(ds: TextDataset, labels: list[str], role: str) -> None:
    """Every gold value must be in the label set."""
    if ds.gold is None:
        return
    known = set(labels)
    bad = [i for i, g in enumerate(ds.gold) if g is not None and g not in known]
    if bad:
        values = sorted({ds.gold[i] for i in bad})
        shown = ", ".join(repr(v) for v in values[:5]) + (" ..." if len(values) > 5 else "")
        raise DataError(
            f"{role} data {ds.source}: {len(bad)} rows have labels not in the label set "
            f"({len(labels)} labels): {shown}; first at {_first_rows(bad, ds.ids, 1)}"
        )


@dataclass(frozen=True)
class CampaignData:
    """Pool, eval split and label set of a campaign, all checked."""

    pool: TextDataset
    eval: TextDataset | None
    labels: list[str]


def load_campaign_data(cfg: CampaignConfig) -> CampaignData:
    """Load and check everything the campaign reads; raise DataError naming the first problem.

    Task generation has no label set (``labels == []``): the gold column holds reference
    responses, and a label is whatever response the expert writes.
    """
    need_pool_gold = cfg.oracle.gold
    generation = cfg.task == "generation"
    pool = load_split(cfg.data.pool, cfg.data, "pool", need_pool_gold, cfg.task)
    labels = [] if generation else resolve_labels(cfg.data, pool)
    if not generation:
        check_gold_in_labels(pool, labels, "pool")
    ev = None
    if cfg.data.eval is not None:
        if cfg.data.label_field is None:
            raise DataError("data.eval needs data.label_field: evaluation compares against gold")
        ev = load_split(cfg.data.eval, cfg.data, "eval", need_gold=True, task=cfg.task)
        if not generation:
            check_gold_in_labels(ev, labels, "eval")
    if len(pool) < cfg.first_batch:
        raise DataError(
            f"pool data {pool.source}: {len(pool)} rows, fewer than the first batch "
            f"({cfg.first_batch})"
        )
    return CampaignData(pool=pool, eval=ev, labels=labels)
