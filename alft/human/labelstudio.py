"""The Label Studio route: the pending batch as Label Studio tasks, its export read back.

Export side (Label Studio's "Basic Label Studio JSON format" for import): one task per
example, ``{"data": {"text", "alft_id", "alft_round"}, "predictions": [...]}``; the
prediction, where the round has a proposal (``oracle.prelabel``), pre-selects the proposed
label (``score`` = its confidence, which Label Studio shows) so annotators correct rather
than start from nothing. The matching labeling config is a ``Text`` object and a
single-choice ``Choices`` control.

Import side: Label Studio's JSON export (a list of tasks, each with its ``annotations``),
or its JSON_MIN export (one flat record per annotation). Every non-cancelled annotation
becomes one ``LabelRow`` by annotator ``labelstudio:<email or user id>``; predictions are
never labels: a task's prediction is what its annotators were shown, so each row carries
it (``proposal``, ``proposal_confidence``) and the label is recorded as accepted (equal)
or corrected. JSON_MIN carries no predictions (the CLI takes the stored proposals then).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from alft.errors import LabelError
from alft.human.files import MAX_BYTES, LabelRow, decode_utf8, read_bytes_capped
from alft.store.batches import Shown

# Characters XML 1.0 cannot hold even escaped (a label with one cannot be a Choice value).
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


# ---------------------------------------------------------------- export: tasks and config
def _attr(value: str, what: str) -> str:
    """``value`` escaped for a double-quoted XML attribute."""
    if _XML_BAD.search(value):
        raise LabelError(f"{what} {value!r} holds a control character XML cannot carry")
    return escape(value, {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})


def labeling_config(labels: Sequence[str], from_name: str = "label", to_name: str = "text") -> str:
    """Label Studio labeling config (XML) for single-choice text classification over ``labels``."""
    if not labels:
        raise LabelError("the label set is empty: no labeling config to write")
    choices = "\n".join(f'    <Choice value="{_attr(lab, "label")}"/>' for lab in labels)
    return (
        "<View>\n"
        f'  <Text name="{_attr(to_name, "name")}" value="$text"/>\n'
        f'  <Choices name="{_attr(from_name, "name")}" toName="{_attr(to_name, "name")}" '
        'choice="single" showInline="false" required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def prediction(
    probs: np.ndarray, labels: Sequence[str], from_name: str, to_name: str, model_version: str
) -> dict[str, Any] | None:
    """A Label Studio prediction choosing the most probable label; None for unusable probs."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.size != len(labels) or p.size == 0 or not np.all(np.isfinite(p)):
        return None
    top = int(np.argmax(p))
    return {
        "model_version": model_version,
        "score": float(p[top]),
        "result": [
            {
                "from_name": from_name,
                "to_name": to_name,
                "type": "choices",
                "value": {"choices": [labels[top]]},
            }
        ],
    }


def proposal_prediction(shown: Shown, from_name: str, to_name: str, model_version: str) -> dict[str, Any]:
    """A Label Studio prediction choosing a proposed label (``score``: its confidence, if any)."""
    pred: dict[str, Any] = {
        "model_version": model_version,
        "result": [
            {"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [shown.label]}}
        ],
    }
    if shown.confidence is not None:
        pred["score"] = float(shown.confidence)
    return pred


def to_tasks(
    batch,
    pool_texts: Sequence[str],
    labels: Sequence[str],
    probs_by_example: Mapping[str, np.ndarray] | None = None,
    from_name: str = "label",
    to_name: str = "text",
    model_version: str = "alft",
    only_remaining: bool = True,
    campaign: str | None = None,
    shown_by_example: Mapping[str, Shown] | None = None,
) -> list[dict[str, Any]]:
    """Label Studio tasks for the pending batch, with pre-annotations: the proposals in
    ``shown_by_example`` (example id -> what the page shows with it), else the top label of
    ``probs_by_example``.

    ``campaign`` (the CLI passes it) is written as ``data.alft_campaign`` and checked on import.
    """
    todo = set(batch.remaining()) if only_remaining else None
    tasks = []
    for s in batch.items:
        ex = s["example_id"]
        if todo is not None and ex not in todo:
            continue
        task: dict[str, Any] = {
            "data": {"text": pool_texts[s["pool_id"]], "alft_id": ex, "alft_round": batch.round}
        }
        if campaign is not None:
            task["data"]["alft_campaign"] = campaign
        sh = (shown_by_example or {}).get(ex)
        if sh is not None and sh.kind == "label":
            task["predictions"] = [proposal_prediction(sh, from_name, to_name, model_version)]
        elif shown_by_example is None and probs_by_example is not None and ex in probs_by_example:
            pred = prediction(probs_by_example[ex], labels, from_name, to_name, model_version)
            if pred is not None:
                task["predictions"] = [pred]
        tasks.append(task)
    return tasks


# ---------------------------------------------------------------- import: the export read back
def _load(path_or_obj: Any) -> tuple[Any, str]:
    """The parsed export and a name for messages."""
    if isinstance(path_or_obj, (str, Path)):
        path = Path(path_or_obj)
        text = decode_utf8(read_bytes_capped(path, MAX_BYTES, "Label Studio export"), path, "Label Studio export")
        if not text.strip():
            raise LabelError(f"Label Studio export {path} is empty")
        try:
            return json.loads(text), str(path)
        except json.JSONDecodeError as exc:
            hint = " (one JSON object per line is JSONL: pass --format jsonl)" if exc.msg == "Extra data" else ""
            raise LabelError(
                f"Label Studio export {path} line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg}){hint}"
            ) from None
        except (ValueError, RecursionError) as exc:
            raise LabelError(f"Label Studio export {path}: not valid JSON ({type(exc).__name__})") from None
    return path_or_obj, "Label Studio export"


def _annotator(who: Any, where: str) -> str:
    """``labelstudio:<email>`` (or ``<user id>``) from an annotation's ``completed_by``."""
    if isinstance(who, Mapping):
        email = who.get("email")
        if isinstance(email, str) and email.strip():
            return f"labelstudio:{email.strip()}"
        who = who.get("id")
    if isinstance(who, bool) or who is None:
        raise LabelError(f"{where}: no annotator (completed_by is {json.dumps(who)})")
    if isinstance(who, int) or (isinstance(who, str) and who.strip()):
        return f"labelstudio:{str(who).strip()}"
    raise LabelError(f"{where}: completed_by must be a user id or a user object, got {type(who).__name__}")


def _alft_id(data: Any, where: str) -> str:
    if not isinstance(data, Mapping) or "alft_id" not in data:
        raise LabelError(f"{where}: no data.alft_id: this task was not exported by `alft labels export`")
    ex = data["alft_id"]
    if not isinstance(ex, str) or not ex.strip():
        raise LabelError(f"{where}: data.alft_id must be a non-empty string, got {json.dumps(ex)[:40]}")
    return ex


def _round(data: Mapping[str, Any], where: str) -> int | None:
    r = data.get("alft_round")
    if r is None:
        return None
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise LabelError(f"{where}: data.alft_round must be a round number, got {json.dumps(r)[:40]}")
    return r


def _campaign(data: Mapping[str, Any], where: str) -> str | None:
    c = data.get("alft_campaign")
    if c is None:
        return None
    if not isinstance(c, str) or not c.strip():
        raise LabelError(f"{where}: data.alft_campaign must be a campaign name, got {json.dumps(c)[:40]}")
    return c


def _one_label(choices: Any, where: str) -> str:
    if not isinstance(choices, list) or not choices:
        raise LabelError(f"{where}: the choices result holds no choice")
    if len(choices) > 1:
        shown = ", ".join(json.dumps(c, ensure_ascii=False)[:40] for c in choices[:5])
        raise LabelError(f"{where}: {len(choices)} choices ({shown}) for a single-choice label; pick one")
    label = choices[0]
    if not isinstance(label, str):
        raise LabelError(f"{where}: the chosen label must be a string, got {type(label).__name__}")
    if not label:
        raise LabelError(f"{where}: the chosen label is empty")
    return label


def _annotation_label(ann: Mapping[str, Any], from_name: str, where: str) -> str:
    """The label of one (non-cancelled) annotation: its single ``choices`` result."""
    result = ann.get("result")
    if not isinstance(result, list):
        raise LabelError(f"{where}: 'result' must be a list")
    ours = [
        r for r in result
        if isinstance(r, Mapping) and r.get("type") == "choices" and r.get("from_name") == from_name
    ]
    if not ours:
        seen = sorted({f"{r.get('from_name')} ({r.get('type')})" for r in result if isinstance(r, Mapping)})
        also = f" (results: {', '.join(seen)})" if seen else " (the result is empty)"
        raise LabelError(f"{where}: no 'choices' result from {from_name!r}{also}")
    if len(ours) > 1:
        raise LabelError(f"{where}: {len(ours)} 'choices' results from {from_name!r}; a single one is expected")
    value = ours[0].get("value")
    if not isinstance(value, Mapping):
        raise LabelError(f"{where}: the choices result has no 'value'")
    return _one_label(value.get("choices"), where)


def _prediction(task: Mapping[str, Any], from_name: str, where: str) -> tuple[str | None, float | None]:
    """The label (and score) the task's prediction pre-selected, or (None, None) without one."""
    import math

    preds = task.get("predictions") or []
    if not isinstance(preds, list):
        raise LabelError(f"{where}: 'predictions' must be a list")
    for pred in preds:
        if not isinstance(pred, Mapping):
            continue  # a prediction id (some exports): nothing to compare with
        for r in pred.get("result") or []:
            if isinstance(r, Mapping) and r.get("type") == "choices" and r.get("from_name") == from_name:
                label = _one_label((r.get("value") or {}).get("choices") if isinstance(r.get("value"), Mapping) else None,
                                   f"{where} prediction")
                score = pred.get("score")
                if score is not None and (
                    isinstance(score, bool) or not isinstance(score, (int, float))
                    or not math.isfinite(score) or not 0 <= score <= 1
                ):
                    raise LabelError(f"{where}: the prediction's score {json.dumps(score)[:40]} is not a probability")
                return label, None if score is None else float(score)
    return None, None


def _from_task(task: Mapping[str, Any], where: str, from_name: str) -> list[LabelRow]:
    """Rows of one task of the full JSON export."""
    data = task.get("data")
    ex = _alft_id(data, where)
    where = f"{where} (id {ex!r})"
    rnd = _round(data, where)
    camp = _campaign(data, where)
    proposal, score = _prediction(task, from_name, where)
    anns = task.get("annotations") or []  # a task nobody labeled: nothing to import
    if not isinstance(anns, list):
        raise LabelError(f"{where}: 'annotations' must be a list")
    rows = []
    for j, ann in enumerate(anns, 1):
        at = f"{where} annotation {j}"
        if not isinstance(ann, Mapping):
            raise LabelError(f"{at}: an annotation must be an object")
        if ann.get("was_cancelled") or ann.get("skipped"):
            continue  # skipped in Label Studio: the annotator chose not to label it
        label = _annotation_label(ann, from_name, at)
        rows.append(
            LabelRow(ex, label, _annotator(ann.get("completed_by"), at), "label", rnd, at, camp, proposal, score)
        )
    return rows


def _from_min_record(rec: Mapping[str, Any], where: str, from_name: str) -> list[LabelRow]:
    """Rows of one JSON_MIN record (task data flattened, one record per annotation)."""
    ex = _alft_id(rec, where)
    where = f"{where} (id {ex!r})"
    rnd = _round(rec, where)
    camp = _campaign(rec, where)
    if from_name not in rec:
        if "annotation_id" in rec or "annotator" in rec:
            raise LabelError(f"{where}: an annotation without a {from_name!r} value (is the Choices control named so?)")
        return []  # a task without an annotation
    value = rec[from_name]
    if isinstance(value, Mapping):
        label = _one_label(value.get("choices"), where)
    elif isinstance(value, list):  # several choices come out as a list or a {"choices": [...]}
        label = _one_label(value, where)
    elif isinstance(value, str):
        label = _one_label([value], where)
    else:
        raise LabelError(f"{where}: the chosen label must be a string, got {type(value).__name__}")
    return [LabelRow(ex, label, _annotator(rec.get("annotator"), where), "label", rnd, where, camp)]


#: Columns of Label Studio's CSV (and TSV) export that an alft label file never has; with the
#: task data flattened into columns, alft's tasks also bring ``alft_id``.
_CSV_EXPORT_COLUMNS = frozenset({"annotation_id", "lead_time"})


def refuse_csv_export(path: str | Path) -> None:
    """LabelError when ``path`` is a Label Studio CSV export, judged by its header row.

    Its ``id`` column is Label Studio's task number, not alft's example id, so read as an
    alft label file it would fail as "not in the pending batch"; alft reads the JSON exports.
    """
    import csv
    import io

    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(65536).decode("utf-8", errors="replace").lstrip("\ufeff")
    first = head.splitlines()[0] if head.strip() else ""
    for delimiter in (",", "\t"):
        try:
            header = {c.strip() for c in next(csv.reader(io.StringIO(first), delimiter=delimiter), [])}
        except csv.Error:
            continue
        if "alft_id" in header or _CSV_EXPORT_COLUMNS <= header:
            ours = sorted(header & (_CSV_EXPORT_COLUMNS | {"alft_id", "annotator", "id"}))
            raise LabelError(
                f"{path} is a Label Studio CSV export (columns {', '.join(ours)}, ...), which alft does not "
                "read: export the project from Label Studio as JSON (or JSON-MIN) and import that file"
            )


def from_export(path_or_obj: Any, from_name: str = "label") -> list[LabelRow]:
    """Label rows from a Label Studio JSON (or JSON_MIN) export: a path, or the parsed list."""
    obj, name = _load(path_or_obj)
    if not isinstance(obj, list):
        raise LabelError(
            f"{name}: a Label Studio JSON export is a list of tasks, got {type(obj).__name__} "
            "(export with the JSON or JSON_MIN format)"
        )
    rows: list[LabelRow] = []
    for i, task in enumerate(obj, 1):
        where = f"{name} task {i}"
        if not isinstance(task, Mapping):
            raise LabelError(f"{where}: a task must be an object, got {type(task).__name__}")
        if "data" in task:
            rows += _from_task(task, where, from_name)
        else:
            rows += _from_min_record(task, where, from_name)
    return rows


def probs_for_batch(batch, candidates: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
    """Class probabilities of the batch's examples (by example id) from the round's score files."""
    if probs.ndim != 2 or len(candidates) != len(probs):
        return {}
    row_of = {int(p): i for i, p in enumerate(np.asarray(candidates).reshape(-1))}
    return {
        s["example_id"]: probs[row_of[int(s["pool_id"])]] for s in batch.items if int(s["pool_id"]) in row_of
    }
