"""The target-model comparison's rows: one per finished fine-tune (arm, labels, repeat).

A row is the commit point of one target run: written once, in one transaction, after the
model is saved and evaluated. A comparison that was killed finds its finished runs here
and trains only the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from alft.store.schema import target_runs, utcnow

if TYPE_CHECKING:
    from alft.store.campaign_store import CampaignStore

#: (arm, n_labels, repeat): the identity of one run inside a target spec.
RunKey = tuple[str, int, int]


def finished(store: CampaignStore, name: str, spec: str) -> dict[RunKey, dict[str, Any]]:
    """The finished runs of target spec ``spec``, by (arm, n_labels, repeat)."""
    q = (
        select(target_runs)
        .where(target_runs.c.campaign == name, target_runs.c.spec == spec)
        .order_by(target_runs.c.arm, target_runs.c.n_labels, target_runs.c.repeat)
    )
    return {(r["arm"], r["n_labels"], r["repeat"]): r for r in store._rows(q, None)}


def specs(store: CampaignStore, name: str) -> list[str]:
    """Every target spec the campaign has runs of, the most recently finished last."""
    q = select(target_runs.c.spec, target_runs.c.finished_at).where(target_runs.c.campaign == name)
    latest: dict[str, Any] = {}
    for r in store._rows(q, None):
        if r["spec"] not in latest or r["finished_at"] > latest[r["spec"]]:
            latest[r["spec"]] = r["finished_at"]
    return sorted(latest, key=lambda s: latest[s])


def record(
    store: CampaignStore,
    name: str,
    spec: str,
    key: RunKey,
    *,
    seconds: float,
    metrics: dict[str, float],
    model_dir: str | None,
    example_ids: list[str],
) -> dict[str, Any]:
    """Write one finished run; a row already there (another process won the race) is kept and returned."""
    arm, n_labels, repeat = key
    with store.transaction() as conn:
        store.lock_campaign(conn, name)
        q = select(target_runs).where(
            target_runs.c.campaign == name,
            target_runs.c.spec == spec,
            target_runs.c.arm == arm,
            target_runs.c.n_labels == n_labels,
            target_runs.c.repeat == repeat,
        )
        existing = store._rows(q, conn)
        if existing:
            return existing[0]
        row = {
            "campaign": name,
            "spec": spec,
            "arm": arm,
            "n_labels": n_labels,
            "repeat": repeat,
            "seconds": float(seconds),
            "metrics": {k: float(v) for k, v in metrics.items()},
            "model_dir": model_dir,
            "example_ids": list(example_ids),
            "finished_at": utcnow(),
        }
        conn.execute(target_runs.insert().values(**row))
    return row
