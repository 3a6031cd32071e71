"""The file route: export the pending batch as JSONL or CSV, read labeled files back.

A label file has one row per judgement: ``id`` and ``label``, optionally ``annotator``,
``kind`` (label, retract or unsure), ``round`` (the round the batch was exported for,
so a file labeled against a closed batch is refused as stale) and ``campaign`` (the
campaign it was exported from: a file imported into another campaign is refused, even
when the two campaigns share a pool and so example ids), ``proposal`` and
``proposal_confidence`` (what the export proposed: the label, or a generation draft; a
label equal to it is recorded as accepted, another as corrected, one without it as typed).
Other columns (``text``, ``position``, ...) are ignored, so a file written by
``write_pending`` comes back as is.

Reading never half-succeeds: any problem raises ``LabelError`` naming the file and line,
and nothing reaches the store, because the CLI hands the rows to one ``submit_many``.
Rows whose ``label`` is present but empty are *blank*: the annotator did not get to them.
They are counted and reported, not imported, so a partly labeled export can be imported.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alft.errors import LabelError
from alft.fsutil import atomic_write_text
from alft.human.labeling import LabelItem
from alft.store.batches import Shown

#: The largest label file read (a batch of labels is kilobytes; a bigger file is a mistake).
MAX_BYTES = 50 * 1024 * 1024
KINDS = ("label", "retract", "unsure")
FORMATS = ("jsonl", "csv")
_FIELDS = ("id", "label", "annotator", "kind", "round", "campaign", "proposal", "proposal_confidence")


@dataclass(frozen=True)
class LabelRow:
    """One judgement read from a file; ``where`` says where it came from (for messages)."""

    example_id: str
    label: str | None
    annotator: str | None = None
    kind: str = "label"
    round: int | None = None
    where: str = ""
    campaign: str | None = None  # the campaign the file was exported from, when it says
    proposal: str | None = None  # what was proposed with it (a label or a draft), when it says
    proposal_confidence: float | None = None

    def item(self, generation: bool) -> LabelItem:
        """The submission of this row, with what was shown beside it (its provenance)."""
        shown = None
        if self.proposal:
            shown = (
                Shown("draft", draft=self.proposal)
                if generation
                else Shown("label", self.proposal, self.proposal_confidence)
            )
        return LabelItem(self.example_id, self.label, self.kind, shown)


@dataclass
class LabelFile:
    """What a label file held: its rows, and where its blank (unlabeled) rows were."""

    path: Path
    fmt: str
    rows: list[LabelRow]
    blank: list[str] = field(default_factory=list)  # "line 7", ... for rows with an empty label


# ---------------------------------------------------------------- reading, shared
def describe(path: Path) -> str:
    """``path``, plus where it really points when it is (or passes through) a symlink."""
    try:
        real = Path(os.path.realpath(path))
    except (OSError, ValueError):
        return str(path)
    return str(path) if real == Path(os.path.abspath(path)) else f"{path} (-> {real})"


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


def check_regular_file(path: str | Path, what: str = "label file") -> Path:
    """``path`` when it names a regular file (symlinks followed); LabelError naming what it is."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise LabelError(f"{what} not found: {describe(path)}") from None
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise LabelError(f"cannot read {what} {describe(path)}: {why}") from None
    if not stat.S_ISREG(st.st_mode):
        raise LabelError(f"{what} {describe(path)} is {_file_kind(st.st_mode)}, not a regular file")
    return path


def read_bytes_capped(path: str | Path, max_bytes: int = MAX_BYTES, what: str = "label file") -> bytes:
    """Read a regular file of at most ``max_bytes``; LabelError for anything else."""
    path = Path(path)
    # O_NONBLOCK: opening a FIFO must not hang waiting for a writer; fstat then refuses it.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise LabelError(f"{what} not found: {describe(path)}") from None
    except IsADirectoryError:
        raise LabelError(f"{what} {describe(path)} is a directory, not a regular file") from None
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise LabelError(f"cannot read {what} {describe(path)}: {why}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LabelError(f"{what} {describe(path)} is {_file_kind(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise LabelError(
                f"{what} {describe(path)} is {st.st_size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit"
            )
        chunks = []
        got = 0
        while True:  # read to EOF, but never past the cap (the file may grow while we read)
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
            if got > max_bytes:
                raise LabelError(f"{what} {describe(path)} grew past the {max_bytes / 1e6:.0f} MB limit while read")
        return b"".join(chunks)
    except OSError as exc:
        raise LabelError(f"cannot read {what} {describe(path)}: {exc.strerror}") from None
    finally:
        os.close(fd)


def decode_utf8(data: bytes, path: Path | str, what: str = "label file") -> str:
    """UTF-8 text (a leading byte-order mark dropped); LabelError naming line and column."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise LabelError(
            f"{what} {path} line {line}, column {col}: not UTF-8 (byte 0x{data[exc.start]:02x}); "
            "save it as UTF-8"
        ) from None


def _text(value: Any, name: str, where: str, *, optional: bool) -> str | None:
    """A field that must be a string (or, when ``optional``, absent/null/empty)."""
    if value is None:
        if optional:
            return None
        raise LabelError(f"{where}: '{name}' is null")
    if not isinstance(value, str):
        raise LabelError(f"{where}: '{name}' must be a string, got {type(value).__name__} {_short(value)}")
    if "\x00" in value:
        raise LabelError(f"{where}: '{name}' holds a NUL byte")
    return value


def _short(value: Any, n: int = 40) -> str:
    s = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return s if len(s) <= n else s[: n - 3] + "..."


def _row(values: dict[str, Any], where: str, blanks: list[str]) -> LabelRow | None:
    """Check one record's fields; None for a blank row (label present but empty)."""
    if "id" not in values:
        raise LabelError(f"{where}: no 'id'")
    if "label" not in values:
        raise LabelError(f"{where}: no 'label' (write an empty one for rows not labeled yet)")
    ex = _text(values["id"], "id", where, optional=False)
    if not ex.strip():
        raise LabelError(f"{where}: 'id' is empty")
    kind = _text(values.get("kind"), "kind", where, optional=True) or "label"
    if kind not in KINDS:
        raise LabelError(f"{where}: unknown kind {kind!r} (label, retract or unsure)")
    label = _text(values["label"], "label", where, optional=True)
    annotator = _text(values.get("annotator"), "annotator", where, optional=True) or None
    if annotator is not None and not annotator.strip():
        raise LabelError(f"{where}: 'annotator' is blank")
    rnd = values.get("round")
    if rnd is not None and rnd != "":
        if isinstance(rnd, str) and rnd.strip().isascii() and rnd.strip().isdigit() and len(rnd.strip()) < 10:
            rnd = int(rnd.strip())
        if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 0:
            raise LabelError(f"{where}: 'round' must be a round number, got {_short(rnd)}")
    else:
        rnd = None
    campaign = _text(values.get("campaign"), "campaign", where, optional=True) or None
    proposal = _text(values.get("proposal"), "proposal", where, optional=True) or None
    conf = _confidence(values.get("proposal_confidence"), where)
    if kind == "label" and not label:
        blanks.append(where)  # not labeled yet: reported, not imported
        return None
    return LabelRow(ex, label if kind == "label" else None, annotator, kind, rnd, where, campaign, proposal, conf)


def _confidence(value: Any, where: str) -> float | None:
    """``proposal_confidence``: a probability (a number, or its text in a CSV), or empty."""
    import math

    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise LabelError(f"{where}: 'proposal_confidence' must be a number, got {_short(value)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LabelError(f"{where}: 'proposal_confidence' must be a number, got {_short(value)}")
    try:
        value = float(value)
    except OverflowError:
        value = math.inf
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise LabelError(f"{where}: 'proposal_confidence' must be a probability in [0, 1], got {_short(value)}")
    return value


# ---------------------------------------------------------------- JSONL and CSV
def _read_jsonl(text: str, name: str, blanks: list[str]) -> list[LabelRow]:
    rows = []
    # split on newlines only: str.splitlines would also split inside a text holding U+2028
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{name} line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LabelError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:  # e.g. an integer of 5000 digits, deep nesting
            raise LabelError(f"{where}: not valid JSON ({type(exc).__name__}: {str(exc)[:80]})") from None
        if not isinstance(obj, dict):
            raise LabelError(f"{where}: a JSON object is expected, got {type(obj).__name__}")
        row = _row(obj, where, blanks)
        if row is not None:
            rows.append(row)
    return rows


def _read_csv(text: str, name: str, blanks: list[str]) -> list[LabelRow]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[LabelRow] = []
    header: list[str] | None = None
    start = 1
    try:
        for cells in reader:
            where = f"{name} line {start}"
            start = reader.line_num + 1  # a quoted field may span lines: the next row starts here
            if not cells or all(not c.strip() for c in cells):
                continue
            if header is None:
                header = [c.strip() for c in cells]
                dup = sorted({c for c in header if header.count(c) > 1 and c})
                if dup:
                    raise LabelError(f"{where}: the header repeats column {dup[0]!r}")
                for need in ("id", "label"):
                    if need not in header:
                        raise LabelError(
                            f"{where}: the header has no {need!r} column (columns: {', '.join(header)})"
                        )
                continue
            if len(cells) != len(header):
                raise LabelError(f"{where}: {len(cells)} fields, the header has {len(header)}")
            values = {k: v for k, v in zip(header, cells) if k in _FIELDS}
            row = _row(values, where, blanks)
            if row is not None:
                rows.append(row)
    except csv.Error as exc:
        raise LabelError(f"{name} line {reader.line_num}: malformed CSV ({exc})") from None
    if header is None:
        raise LabelError(f"{name}: no header row (id,label,...)")
    return rows


def format_for(path: str | Path, fmt: str | None = None) -> str:
    """The label file format: ``fmt`` when given, else from the suffix (.jsonl, .csv)."""
    if fmt and fmt != "auto":
        if fmt not in FORMATS:
            raise LabelError(f"unknown label file format {fmt!r} (jsonl or csv)")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".csv",):
        return "csv"
    raise LabelError(f"cannot tell the format of {path} from its suffix: name it .jsonl or .csv, or pass the format")


def load_label_file(path: str | Path, fmt: str | None = None, max_bytes: int = MAX_BYTES) -> LabelFile:
    """Read and check a whole label file (JSONL or CSV); LabelError naming file and line."""
    path = Path(path)
    kind = format_for(path, fmt)
    data = read_bytes_capped(path, max_bytes)
    text = decode_utf8(data, path)
    if not text.strip():
        raise LabelError(f"label file {path} is empty")
    blanks: list[str] = []
    rows = (_read_jsonl if kind == "jsonl" else _read_csv)(text, str(path), blanks)
    if not rows:
        if blanks:
            raise LabelError(f"label file {path}: all {len(blanks)} rows have an empty label; nothing to import")
        raise LabelError(f"label file {path} holds no label rows")
    return LabelFile(path=path, fmt=kind, rows=rows, blank=blanks)


def read_label_file(path: str | Path, fmt: str | None = None) -> list[LabelRow]:
    """The labeled rows of a JSONL or CSV label file (blank rows left out)."""
    return load_label_file(path, fmt).rows


# ---------------------------------------------------------------- rows to submissions
def group_by_annotator(
    rows: Iterable[LabelRow], default: str | None = None
) -> dict[str, list[LabelRow]]:
    """Rows per annotator (``default`` for rows naming none), in file order.

    Refuses a row without an annotator when there is no default, and the same example
    judged twice by one annotator (which one would be meant?), naming both places.
    """
    groups: dict[str, list[LabelRow]] = {}
    seen: dict[tuple[str, str], str] = {}
    for r in rows:
        ann = r.annotator or default
        if not ann:
            raise LabelError(f"{r.where}: no annotator: add an 'annotator' field or pass --annotator NAME")
        if len(ann) > 128:
            raise LabelError(f"{r.where}: annotator name longer than 128 characters ({len(ann)})")
        key = (ann, r.example_id)
        if key in seen:
            raise LabelError(
                f"{r.where}: {r.example_id!r} is judged twice by {ann!r} (first at {seen[key]}); keep one"
            )
        seen[key] = r.where
        groups.setdefault(ann, []).append(r)
    return groups


def file_round(rows: Sequence[LabelRow]) -> int | None:
    """The one round the rows were exported for (None when they do not say); mixed is an error."""
    rounds: dict[int, str] = {}
    for r in rows:
        if r.round is not None:
            rounds.setdefault(r.round, r.where)
    if len(rounds) > 1:
        shown = ", ".join(f"round {k} at {v}" for k, v in sorted(rounds.items()))
        raise LabelError(f"the labels come from several batches ({shown}); import one batch at a time")
    return next(iter(rounds), None)


def check_campaign(rows: Sequence[LabelRow], name: str) -> None:
    """Refuse rows exported from another campaign (their ``campaign`` field names it).

    Two campaigns on one pool share example ids (and, with one seed and cold start, even
    their first batches), so the ids alone cannot tell a file meant for the other one.
    """
    for r in rows:
        if r.campaign is not None and r.campaign != name:
            raise LabelError(
                f"{r.where}: the labels were exported from campaign {r.campaign!r}, not {name!r}; "
                f"import the file into {r.campaign!r}"
            )


# ---------------------------------------------------------------- writing the batch
def pending_rows(
    batch,
    pool_texts: Sequence[str],
    only_remaining: bool = True,
    campaign: str | None = None,
    shown: dict[str, Shown] | None = None,
) -> list[dict[str, Any]]:
    """One row per example of the pending batch to label (id, text, [campaign,] round, position,
    [proposal, proposal_confidence,] label); ``shown``: example id -> its proposal."""
    todo = set(batch.remaining()) if only_remaining else None
    out = []
    for s in batch.items:
        if todo is not None and s["example_id"] not in todo:
            continue
        row: dict[str, Any] = {"id": s["example_id"], "text": pool_texts[s["pool_id"]]}
        if campaign is not None:
            row["campaign"] = campaign
        row.update({"round": batch.round, "position": s["position"]})
        if shown is not None:
            sh = shown.get(s["example_id"])
            row["proposal"] = "" if sh is None else (sh.draft if sh.kind == "draft" else sh.label)
            row["proposal_confidence"] = "" if sh is None or sh.confidence is None else round(sh.confidence, 4)
        row["label"] = ""
        out.append(row)
    return out


def write_pending(
    batch,
    pool_texts: Sequence[str],
    path: str | Path,
    fmt: str | None = None,
    *,
    only_remaining: bool = True,
    campaign: str | None = None,
    shown: dict[str, Shown] | None = None,
) -> int:
    """Write the pending batch as a label file to fill in (atomically); the number of rows.

    ``campaign`` (the CLI passes it) adds a ``campaign`` column, checked on import;
    ``shown`` (example id -> proposal) adds ``proposal`` and ``proposal_confidence``.
    """
    path = Path(path)
    kind = format_for(path, fmt)
    rows = pending_rows(batch, pool_texts, only_remaining, campaign, shown)
    if kind == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:
        buf = io.StringIO(newline="")
        names = ["id", "text"] + (["campaign"] if campaign is not None else []) + ["round", "position"]
        names += (["proposal", "proposal_confidence"] if shown is not None else []) + ["label"]
        w = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        text = buf.getvalue()
    atomic_write_text(path, text)
    return len(rows)
