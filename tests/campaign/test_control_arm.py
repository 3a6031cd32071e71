"""The random control arm (strategy.control_share): batch size, marking, reproducibility, what
the strategy still picks, and the estimator's numbers checked by hand and by recomputation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alft.campaign.control import CONTROL, control_metrics, control_size, draw_control

# strategies whose picks are sequential from a k-independent random state: asked for k - c,
# they return exactly the first k - c of what they return for k (see alft/campaign/control.py)
PREFIX_STRATEGIES = [
    ("least_confidence", {}), ("margin", {}), ("entropy", {}), ("bald", {}), ("egl", {}), ("fusion", {}),
    ("kcenter", {}), ("kcenter_approx", {}), ("kcenter_approx", {"sample": 20}), ("badge", {}),
]


# --------------------------------------------------------------------------- pure parts
def test_control_size_rounds_half_up_and_leaves_the_strategy_one_place():
    assert control_size(0.25, 20) == 5
    assert control_size(0.1, 15) == 2  # 1.5 rounds up
    assert control_size(0.1, 14) == 1  # 1.4
    assert control_size(0.0, 100) == 0
    assert control_size(0.5, 1) == 0  # a batch of one stays the strategy's
    assert control_size(0.99, 10) == 9  # round(9.9) = 10, capped at k - 1


def test_draw_control_is_a_uniform_draw_outside_the_strategys_picks():
    cands = np.arange(100, 200, dtype=np.int64)
    picks = np.array([150, 101, 199, 120], dtype=np.int64)
    ctl, spos, cpos = draw_control(np.random.default_rng([3, 1, 5]), cands, picks, 3, 7)
    assert ctl.size == 3 and np.unique(ctl).size == 3
    assert set(ctl) <= set(cands) and not set(ctl) & set(picks)
    assert sorted([*spos, *cpos]) == list(range(7)) and list(spos) == sorted(spos) and list(cpos) == sorted(cpos)
    again = draw_control(np.random.default_rng([3, 1, 5]), cands, picks, 3, 7)
    assert all(np.array_equal(a, b) for a, b in zip((ctl, spos, cpos), again, strict=True))
    # uniform: every non-picked candidate is drawn with probability c / |U \ S| (= 3/96)
    counts = np.zeros(200)
    n = 6000
    for i in range(n):
        counts[draw_control(np.random.default_rng(i), cands, picks, 3, 7)[0]] += 1
    rest = np.setdiff1d(cands, picks)
    freq = counts[rest] / n  # [96], expected 0.03125 each, sd ~0.0022
    assert abs(freq.mean() - 3 / 96) < 1e-12 and np.abs(freq - 3 / 96).max() < 0.011
    assert counts[picks].sum() == 0


def test_control_metrics_by_hand():
    # previous model right on 2 of 4 strategy picks and on 3 of 4 control examples;
    # 96 candidates the strategy did not pick (the control arm's population), 4 it did
    m = control_metrics([1, 0, 0, 1], [1, 1, 1, 0], n_rest=96, n_strategy=4)
    assert m["control.n"] == 4 and m["control.strategy_n"] == 4
    assert m["control.accuracy"] == 0.75 and m["control.random_error"] == 0.25
    assert m["control.strategy_error"] == 0.5 and m["control.error_lift"] == 0.25
    assert m["control.pool_accuracy"] == pytest.approx((4 * 0.5 + 96 * 0.75) / 100)  # 0.74
    assert m["control.accuracy_se"] == pytest.approx(math.sqrt((1 - 4 / 96) * 0.75 * 0.25 / 3))
    # a strategy pick left unlabeled (a deadline): no exact stratum, so no pool accuracy
    assert "control.pool_accuracy" not in control_metrics([1, 0, 0], [1, 1], n_rest=96, n_strategy=4)
    assert control_metrics([1, 0], [], n_rest=96) == {}


def test_control_accuracy_is_unbiased_for_the_rest_of_the_pool():
    """Averaged over every draw, the control arm's accuracy is the model's accuracy on U \\ S."""
    rng = np.random.default_rng(0)
    cands = np.arange(60, dtype=np.int64)
    correct = rng.random(60) < 0.7  # the previous model on each candidate
    picks = np.array([3, 8, 40], dtype=np.int64)
    truth = correct[np.setdiff1d(cands, picks)].mean()
    est = [
        control_metrics(correct[picks], correct[draw_control(np.random.default_rng(i), cands, picks, 5, 8)[0]], 57)
        for i in range(4000)
    ]
    acc = np.array([e["control.accuracy"] for e in est])
    assert abs(acc.mean() - truth) < 4 * acc.std() / math.sqrt(len(acc))
    # the standard error formula matches the spread of the estimate
    assert np.mean([e["control.accuracy_se"] for e in est]) == pytest.approx(acc.std(), rel=0.15)
    pool = np.array([e["control.pool_accuracy"] for e in est])
    assert abs(pool.mean() - correct.mean()) < 4 * pool.std() / math.sqrt(len(pool))


@pytest.mark.parametrize(("name", "options"), PREFIX_STRATEGIES)
def test_prefix_strategies_pick_the_first_k_minus_c_of_their_k_batch(name, options):
    from strategies import get_strategy
    from tests.strategies.conftest import make_inputs

    s = get_strategy(name, **options)
    for seed in range(3):
        inputs = make_inputs(seed=seed, n_pool=120)
        for k in (7, 20):
            c = control_size(0.25, k)
            full = s.query(inputs, k, np.random.default_rng([seed, 1, 1])).pool_ids
            part = s.query(inputs, k - c, np.random.default_rng([seed, 1, 1])).pool_ids
            assert list(part) == list(full[: k - c])


def test_config_bounds(tmp_path, banking_subset, tiny_model):
    from alft.config import load_config
    from alft.errors import ConfigError
    from tests.conftest import campaign_yaml

    path = campaign_yaml(tmp_path, banking_subset, tiny_model)
    assert load_config(path).strategy.control_share == 0.0
    assert load_config(path, ["strategy.control_share=0.3"]).strategy.control_share == 0.3
    with pytest.raises(ConfigError, match="control_share"):
        load_config(path, ["strategy.control_share=1"])
    with pytest.raises(ConfigError, match="round 0 has no model"):
        load_config(path, ["cold_start.control_share=0.2"])


# --------------------------------------------------------------------------- campaigns
@pytest.fixture(scope="module")
def runs(tmp_path_factory, banking_subset, tiny_model):
    """margin with share 0, and twice with share 0.25 (same seed); batches of 20, 80 labels."""
    from alft.campaign.context import CampaignContext
    from alft.config import load_config
    from alft.store.campaign_store import CampaignStore
    from benchmarks.plain import run_plain
    from tests.conftest import campaign_yaml

    out = {}
    for key, share in (("plain", 0.0), ("ctl", 0.25), ("ctl2", 0.25)):
        tmp = tmp_path_factory.mktemp(key)
        path = campaign_yaml(
            tmp, banking_subset, tiny_model, name="ctl-run", budget=80,
            strategy={"name": "margin", "control_share": share},
        )
        cfg = load_config(path)
        run_plain(cfg)
        store = CampaignStore(cfg.store_url())
        out[key] = (cfg, store, CampaignContext(config=cfg, uid=store.campaign(cfg.name)["uid"]))
    return out


def _batch(store, name, r):
    return [(s["example_id"], s["position"], s["strategy"], s["score"]) for s in store.selections(name, r)]


def test_batch_stays_k_with_round_share_k_marked_from_round_1(runs):
    cfg, store, _ = runs["ctl"]
    for r in range(4):
        sel = store.selections(cfg.name, r)
        assert len(sel) == 20 and sorted(s["position"] for s in sel) == list(range(20))
        n_ctl = sum(s["strategy"] == CONTROL for s in sel)
        assert n_ctl == (0 if r == 0 else round(0.25 * 20))
        assert {s["strategy"] for s in sel} - {CONTROL} == {"kmeans" if r == 0 else "margin"}
        res = store.step_result(cfg.name, r, "select")
        assert res["k"] == 20 and res.get("control", 0) == n_ctl
    assert len(store.current_labels(cfg.name)) == 80  # every control example labeled too


def test_control_arm_is_reproducible_for_a_seed(runs):
    cfg, a, _ = runs["ctl"]
    _, b, _ = runs["ctl2"]
    for r in range(4):
        assert _batch(a, cfg.name, r) == _batch(b, cfg.name, r)
    assert a.metrics(cfg.name) == b.metrics(cfg.name)


def test_strategy_part_equals_the_share_0_batch_where_it_holds_by_construction(runs):
    cfg, plain, _ = runs["plain"]
    _, ctl, ctx = runs["ctl"]
    # round 0 (cold start) is untouched by the control arm
    assert _batch(plain, cfg.name, 0) == _batch(ctl, cfg.name, 0)
    # round 1: same model, candidates, scores and RNG_SELECT stream; margin is a top-k selector,
    # so its 15 picks are the first 15 of the 20 it picks without a control arm, in order
    full = [s["example_id"] for s in plain.selections(cfg.name, 1)]
    part = [s["example_id"] for s in ctl.selections(cfg.name, 1) if s["strategy"] == "margin"]
    assert part == full[:15]
    # the control examples: candidates of round 1 outside the strategy's picks, with their margin scores
    cands = set(np.load(ctx.round_dir(1) / "candidates.npy").tolist())
    scores = np.load(ctx.round_dir(1) / "scores.npy")
    order = np.load(ctx.round_dir(1) / "candidates.npy")
    for s in ctl.selections(cfg.name, 1):
        assert s["pool_id"] in cands
        if s["strategy"] == CONTROL:
            assert s["score"] == pytest.approx(scores[np.searchsorted(order, s["pool_id"])])


def test_control_metrics_recomputed_from_the_previous_model(runs):
    from alft.campaign.context import campaign_data
    from alft.campaign.rounds import pool_embeddings, round_model

    cfg, store, ctx = runs["ctl"]
    data = campaign_data(cfg)
    index = {lab: i for i, lab in enumerate(data.labels)}
    labels = store.current_labels(cfg.name)
    metrics = store.metrics(cfg.name)
    assert not any(k.startswith("control.") for k in metrics[0])
    n_pool = len(data.pool)
    for r in (1, 2, 3):
        sel = store.selections(cfg.name, r)
        model = round_model(ctx, r - 1)
        pids = np.array([s["pool_id"] for s in sel])
        pred = model.predict_proba([data.pool.texts[i] for i in pids], pool_embeddings(ctx)[pids]).argmax(1)
        gold = np.array([index[labels[s["example_id"]]] for s in sel])
        right = pred == gold
        is_ctl = np.array([s["strategy"] == CONTROL for s in sel])
        m = metrics[r]
        n_rest = n_pool - 20 * r - 15  # candidates of round r minus the strategy's 15 picks
        assert m["control.n"] == 5 and m["control.strategy_n"] == 15
        assert m["control.accuracy"] == pytest.approx(right[is_ctl].mean())
        assert m["control.random_error"] == pytest.approx(1 - right[is_ctl].mean())
        assert m["control.strategy_error"] == pytest.approx(1 - right[~is_ctl].mean())
        assert m["control.pool_accuracy"] == pytest.approx(
            (15 * right[~is_ctl].mean() + n_rest * right[is_ctl].mean()) / (15 + n_rest)
        )
        p = right[is_ctl].mean()
        assert m["control.accuracy_se"] == pytest.approx(math.sqrt((1 - 5 / n_rest) * p * (1 - p) / 4))


def test_status_shows_the_control_arm(runs):
    from typer.testing import CliRunner

    from alft.cli import app

    cfg, store, _ = runs["ctl"]
    res = CliRunner().invoke(app, ["status", str(cfg.workdir_path())], env={"COLUMNS": "220"})
    assert res.exit_code == 0, res.output
    m = store.metrics(cfg.name)[2]
    assert "control arm: 0.25 of each batch" in res.output
    assert f"{m['control.strategy_error']:.3f} / {m['control.random_error']:.3f}" in res.output
    assert f"{m['control.accuracy']:.4f}" in res.output
