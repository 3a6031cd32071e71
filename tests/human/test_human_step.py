"""Step 4 in human mode without Prefect: readiness, deadlines, the rest back in the pool."""

from __future__ import annotations

import datetime as dt

import pytest

from alft.config import load_config
from alft.errors import LabelError
from alft.human.labeling import LabelItem, pending_batch, submit
from alft.store.campaign_store import CampaignStore
from alft.store.schema import waits
from tests.conftest import campaign_yaml, read_jsonl


@pytest.fixture
def waiting(tmp_path, banking_subset, tiny_model):
    """A human campaign whose round 0 batch of 6 waits (the plain step functions)."""
    from tasks.campaign import open_campaign
    from tasks.embed import embed_pool
    from tasks.labels import request_labels
    from tasks.score import score_pool
    from tasks.select import select_batch

    cfg = load_config(
        campaign_yaml(
            tmp_path, banking_subset, tiny_model, name="human-step", budget=12, initial_size=6, batch_size=6,
            oracle={"kind": "human", "wait": "poll", "min_fraction": 0.5, "deadline_s": 3600},
        )
    )
    ctx = open_campaign.fn(cfg)
    embed_pool.fn(ctx, 0)
    score_pool.fn(ctx, 0)
    select_batch.fn(ctx, 0)
    status = request_labels.fn(ctx, 0)
    assert (status.ready, status.mode, status.total, status.resolved) == (False, "poll", 6, 0)
    store = CampaignStore(cfg.store_url())
    gold = {r["id"]: r["label"] for r in read_jsonl(banking_subset["pool"])}
    return cfg, ctx, store, gold


def _labels(cfg):
    from alft.campaign.context import campaign_data

    return campaign_data(cfg).labels


def _age_wait(store, name, seconds):
    with store.transaction() as conn:
        conn.execute(
            waits.update().where(waits.c.campaign == name).values(
                started_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)
            )
        )


def test_the_step_refuses_to_close_an_incomplete_batch_before_the_deadline(waiting):
    from tasks.labels import wait_for_labels

    cfg, ctx, store, gold = waiting
    ids = pending_batch(store, cfg.name).example_ids
    submit(store, cfg.name, [LabelItem(ex, gold[ex]) for ex in ids[:3]], annotator="a", source="file", label_set=_labels(cfg))
    with pytest.raises(LabelError, match="cannot close its labeling yet: 3 of 6 labeled"):
        wait_for_labels.fn(ctx, 0)
    assert store.step_result(cfg.name, 0, "labels") is None


def test_after_the_deadline_enough_labels_let_the_round_go_on_and_the_rest_returns(waiting):
    from tasks.labels import collect_labels, wait_for_labels

    cfg, ctx, store, gold = waiting
    ids = pending_batch(store, cfg.name).example_ids
    submit(store, cfg.name, [LabelItem(ex, gold[ex]) for ex in ids[:2]], annotator="a", source="file", label_set=_labels(cfg))
    _age_wait(store, cfg.name, 7200)
    assert not collect_labels.fn(ctx, 0, None, None).ready  # 2 of 6 < 50%
    submit(store, cfg.name, [LabelItem(ids[2], gold[ids[2]])], annotator="a", source="file", label_set=_labels(cfg))
    status = collect_labels.fn(ctx, 0, None, None)
    assert status.ready and "deadline of 3600 s passed with 3 of 6 labeled" in status.reason
    result = wait_for_labels.fn(ctx, 0)
    assert result["n_labeled"] == 3 and sorted(result["released"]) == sorted(ids[3:])
    # the released examples are candidates again; the labeled ones stay selected
    assert sorted(s["example_id"] for s in store.selections(cfg.name, 0)) == sorted(ids[:3])
    assert set(store.current_labels(cfg.name)) == set(ids[:3])


def test_a_prefect_input_is_written_once_even_when_replayed(waiting):
    from tasks.labels import collect_labels

    cfg, ctx, store, gold = waiting
    ids = pending_batch(store, cfg.name).example_ids
    given = {"annotator": "ui", "labels": {ids[0]: gold[ids[0]]}}
    collect_labels.fn(ctx, 0, given, "labels-r0-1")
    # the annotator undoes it on the page; a suspended run re-running from the top must not
    # bring the label back by replaying the same input
    submit(store, cfg.name, [LabelItem(ids[0], None, "retract")], annotator="ui", source="page", label_set=_labels(cfg))
    collect_labels.fn(ctx, 0, given, "labels-r0-1")
    assert ids[0] not in store.current_labels(cfg.name)
    assert [e["kind"] for e in store.label_events(cfg.name)] == ["label", "retract"]
