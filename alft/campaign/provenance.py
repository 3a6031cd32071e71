"""The human side of a round, as MLflow records it: who labeled what, how (accepted, corrected,
typed, auto), how good the proposals were, how the annotators agreed, and how long people
took. Everything is read from the store (MLflow is derived), so a re-track logs the same.

Per round ``r`` (the events of the examples selected in ``r``):

* ``labels.<p>`` and ``labels.<p>_rate`` for p in accepted, corrected, typed, auto: the
  standing votes (each annotator's latest event on an example, when it is a label) by
  provenance, and their share; ``labels.unknown`` counts votes stored before schema v4.
* ``prelabel.accuracy``: the share of human votes equal to the example's proposal, over the
  examples that had one (blind audits included: the honest measure); ``prelabel.n`` of them.
* ``prelabel.pool_share_llm`` / ``prelabel.pool_fit_rows`` (``prelabel: pooled``, rounds with a
  classifier): the LLM's share λ of the pool and the labeled rows it was fitted on (under
  ``alft.models.pooling.MIN_FIT``: ``DEFAULT_SHARE``).
* ``auto.count``, ``auto.threshold`` (only when one was calibrated), ``auto.calibration_n``,
  ``auto.audit_n`` (audited examples people labeled) and ``auto.audit_error`` (the share of
  those where people disagreed with the proposal; only when ``auto.audit_n > 0``).
* ``annotators.n``, ``agreement.percent`` / ``agreement.kappa`` / ``agreement.n_items`` (only
  when two annotators labeled one example), ``human.wait_seconds`` (from the first request for
  labels to the closing of the round; rounds that waited for people only).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from alft.resolve import agreement
from alft.store.batches import AUTO_SOURCE, PROVENANCES, Shown, provenance

_COLUMNS = ("example_id", "round", "kind", "label", "annotator", "source", "provenance", "shown",
            "proposal", "proposal_confidence", "created_at")


def standing_votes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each annotator's latest event per example, where it is a label (oldest first)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        latest[(e["example_id"], e["annotator"])] = e
    return [e for e in latest.values() if (e.get("kind") or "label") == "label"]


def label_table(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Who labeled what: one row per label event (labels, undos, unsure marks), oldest first."""
    out = []
    for e in events:
        row = {k: e.get(k) for k in _COLUMNS}
        row["created_at"] = e["created_at"].isoformat() if e.get("created_at") is not None else None
        out.append(row)
    return out


def human_side(store, name: str, round_no: int, generation: bool) -> tuple[dict[str, float], dict[str, Any]]:
    """The round's metrics (above) and artifacts: ``labels`` (the table), ``annotators``
    (labels per annotator), ``prelabel`` (the round's proposal record)."""
    events = store.batch_label_events(name, round_no)
    votes = standing_votes(events)
    metrics: dict[str, float] = {}
    by = Counter(v.get("provenance") or "unknown" for v in votes)
    total = len(votes)
    for p in PROVENANCES:
        metrics[f"labels.{p}"] = float(by.get(p, 0))
        if total:
            metrics[f"labels.{p}_rate"] = by.get(p, 0) / total
    if by.get("unknown"):
        metrics["labels.unknown"] = float(by["unknown"])

    props = {p["example_id"]: p for p in store.proposals(name, round_no)}
    human = [v for v in votes if v["source"] != AUTO_SOURCE]

    def equal(v, p) -> bool:
        shown = Shown("draft", draft=p["label"]) if generation else Shown("label", p["label"])
        return provenance(v["label"], shown, v["source"]) == "accepted"

    judged = [equal(v, props[v["example_id"]]) for v in human if v["example_id"] in props]
    if judged:
        metrics["prelabel.accuracy"] = sum(judged) / len(judged)
        metrics["prelabel.n"] = float(len(judged))

    marker = store.prelabel_round(name, round_no)
    info = (marker or {}).get("info") or {}
    if "pool_share" in info:  # prelabel pooled: the LLM's share and the labels that fitted it
        metrics["prelabel.pool_share_llm"] = float(info["pool_share"])
        metrics["prelabel.pool_fit_rows"] = float(info.get("fit_rows", 0))
    if "calibration_n" in info:
        metrics["auto.count"] = float(by.get("auto", 0))
        metrics["auto.calibration_n"] = float(info["calibration_n"])
        if info.get("threshold") is not None:
            metrics["auto.threshold"] = float(info["threshold"])
        audited = [equal(v, props[v["example_id"]]) for v in human
                   if v["example_id"] in props and props[v["example_id"]]["decision"] == "audit"]
        metrics["auto.audit_n"] = float(len(audited))
        if audited:
            metrics["auto.audit_error"] = 1 - sum(audited) / len(audited)

    people = Counter(v["annotator"] for v in human)
    metrics["annotators.n"] = float(len(people))
    agree = agreement([e for e in events if e["source"] != AUTO_SOURCE])
    if agree["n_items"]:
        metrics["agreement.percent"] = float(agree["percent"])
        metrics["agreement.n_items"] = float(agree["n_items"])
        if agree["kappa"] is not None:
            metrics["agreement.kappa"] = float(agree["kappa"])
    wait = store.wait_row(name, round_no)
    closed = next((s for s in store.steps(name, round_no) if s["step"] == "labels"), None)
    if wait is not None and closed is not None:
        metrics["human.wait_seconds"] = max(0.0, (_utc(closed["finished_at"]) - _utc(wait["started_at"])).total_seconds())
    artifacts = {
        "labels": label_table(events),
        "annotators": dict(sorted(Counter(v["annotator"] for v in votes).items())),
        "prelabel": {"source": (marker or {}).get("source"), **info},
    }
    return metrics, artifacts


def _utc(t):
    import datetime as dt

    return t if t.tzinfo is not None else t.replace(tzinfo=dt.timezone.utc)  # SQLite: naive UTC
