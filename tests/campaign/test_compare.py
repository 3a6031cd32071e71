"""Comparing campaigns: hand-computed numbers, and `alft compare` end to end on two tiny
campaigns (random vs margin) with the MLflow tags both run levels carry."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from alft.campaign.compare import (
    Curve,
    auc_on_range,
    clip_curve,
    common_range,
    compare_curves,
    label_saving,
    labels_to_reach,
    mean_curve,
    repeat_key,
    table_rows,
)
from alft.errors import AlftError


# --------------------------------------------------------------------------- pure numbers
def test_labels_to_reach_interpolates_linearly_at_the_first_crossing():
    x, y = [10, 20, 30], [0.5, 0.7, 0.9]
    assert labels_to_reach(x, y, 0.8) == pytest.approx(25.0)  # 20 + 0.1 / 0.2 * 10
    assert labels_to_reach(x, y, 0.7) == pytest.approx(20.0)  # reached exactly at a round
    assert labels_to_reach(x, y, 0.4) == 10.0  # already at the first point
    assert labels_to_reach(x, y, 0.95) is None  # never
    # not monotone: the first crossing counts (10 + 0.25 / 0.3 * 10)
    assert labels_to_reach([10, 20, 30, 40], [0.5, 0.8, 0.6, 0.9], 0.75) == pytest.approx(10 + 25 / 3)


def test_label_saving():
    assert label_saving(25.0, 40.0) == pytest.approx(0.375)
    assert label_saving(40.0, 40.0) == 0.0
    assert label_saving(50.0, 40.0) == pytest.approx(-0.25)  # more labels than the baseline
    assert label_saving(None, 40.0) is None


def test_auc_on_the_common_range():
    a = Curve("a", "margin", (10, 20, 30, 40, 50), (0.5, 0.6, 0.7, 0.8, 0.9))
    b = Curve("b", "random", (20, 30, 40), (0.6, 0.6, 0.9))
    c = Curve("c", "entropy", (15, 45), (0.4, 1.0))
    assert common_range([a, b, c]) == (20.0, 40.0)
    assert auc_on_range(a.labels, a.values, 20, 40) == pytest.approx(0.7)  # linear: the midpoint
    assert auc_on_range(b.labels, b.values, 20, 40) == pytest.approx((10 * 0.6 + 10 * 0.75) / 20)  # 0.675
    # cut between rounds: end points interpolated (0.5 at 20, 0.9 at 40)
    assert clip_curve(c.labels, c.values, 20, 40) == ([20, 40], [pytest.approx(0.5), pytest.approx(0.9)])
    assert auc_on_range(c.labels, c.values, 20, 40) == pytest.approx(0.7)
    assert common_range([a, Curve("d", "x", (60, 70), (0.1, 0.2))]) is None


def test_compare_curves_against_the_random_baseline():
    rand = Curve("r", "random", (20, 40, 60), (0.5, 0.6, 0.7))
    marg = Curve("m", "margin", (20, 40, 60, 80), (0.55, 0.75, 0.8, 0.85))
    slow = Curve("s", "entropy", (20, 40, 60), (0.5, 0.55, 0.6))
    res = compare_curves([rand, marg, slow])
    rows = {r["campaign"]: r for r in res["rows"]}
    assert res["baseline"] == {"campaign": "r", "strategy": "random", "target": 0.7, "labels_needed": 60.0}
    assert res["common_range"] == [20.0, 60.0]
    assert rows["r"]["saving_vs_baseline"] == 0.0
    assert rows["m"]["labels_to_baseline_final"] == pytest.approx(35.0)  # 20 + 0.15 / 0.2 * 20
    assert rows["m"]["saving_vs_baseline"] == pytest.approx(1 - 35 / 60)
    assert rows["s"]["labels_to_baseline_final"] is None and rows["s"]["saving_vs_baseline"] is None
    # margin's AUC stops at 60 labels like the others: (20*0.65 + 20*0.775) / 40
    assert rows["m"]["auc"] == pytest.approx((20 * 0.65 + 20 * 0.775) / 40)
    assert rows["m"]["final_accuracy"] == 0.85
    notes = " ".join(res["notes"])
    assert "common label range 20-60" in notes and "s never reaches" in notes
    # an explicit baseline, none, and two random ones
    assert compare_curves([rand, marg], baseline="m")["rows"][1]["saving_vs_baseline"] == 0.0
    assert compare_curves([marg, slow])["baseline"] is None
    with pytest.raises(AlftError, match="pick the baseline with --baseline"):
        compare_curves([rand, Curve("r2", "random", (20,), (0.5,))])
    with pytest.raises(AlftError, match="--baseline x: not among"):
        compare_curves([rand, marg], baseline="x")


def _seed(name: str, strategy: str, key: str, seed: int, values) -> Curve:
    return Curve(name, strategy, (20, 40, 60), tuple(values), {"repeat_key": key, "seed": seed})


def test_repeats_that_differ_only_in_seed_become_one_mean_curve_with_its_spread():
    r0, r1 = _seed("lc-r-s0", "random", "R", 0, (0.5, 0.6, 0.7)), _seed("lc-r-s1", "random", "R", 1, (0.5, 0.62, 0.66))
    m0, m1 = _seed("lc-m-s0", "margin", "M", 0, (0.55, 0.75, 0.8)), _seed("lc-m-s1", "margin", "M", 1, (0.6, 0.7, 0.74))
    res = compare_curves([r0, m0, r1, m1])
    rows = {r["campaign"]: r for r in res["rows"]}
    assert list(rows) == ["lc-r (2 seeds)", "lc-m (2 seeds)"]
    assert res["groups"] == {"lc-r (2 seeds)": ["lc-r-s0", "lc-r-s1"], "lc-m (2 seeds)": ["lc-m-s0", "lc-m-s1"]}
    # the baseline is the random mean (0.5, 0.61, 0.68): its final 0.68 first reached at 60
    assert res["baseline"]["target"] == pytest.approx(0.68) and res["baseline"]["labels_needed"] == pytest.approx(60)
    m = rows["lc-m (2 seeds)"]
    assert m["seeds_n"] == 2 and m["seeds"] == [0, 1]
    # margin's mean (0.575, 0.725, 0.77) reaches 0.68 at 20 + 0.105 / 0.15 * 20 = 34
    assert m["labels_to_baseline_final"] == pytest.approx(34) and m["saving_vs_baseline"] == pytest.approx(1 - 34 / 60)
    # per seed pair: m0 reaches r0's 0.7 at 35, r1's 0.66 at 31; m1 at 40 and 32; both baselines need 60
    assert m["saving_range"] == [pytest.approx(1 - 40 / 60), pytest.approx(1 - 31 / 60)]
    assert m["saving_pairs_unreached"] == 0
    # member AUCs over 20-60: 0.7125 and 0.685; the random seeds' are both 0.6
    assert m["auc"] == pytest.approx((0.7125 + 0.685) / 2) and m["auc_sd"] == pytest.approx(0.0275 / math.sqrt(2))
    assert rows["lc-r (2 seeds)"]["auc_sd"] == pytest.approx(0.0, abs=1e-12)
    assert m["final_accuracy"] == pytest.approx(0.77) and m["final_accuracy_sd"] == pytest.approx(0.06 / math.sqrt(2))
    assert m["band"] == {"min": [0.55, 0.7, 0.74], "max": [0.6, 0.75, 0.8]}
    assert not any("not distinguishable" in n for n in res["notes"])
    head, cells = table_rows(res)
    assert head[2] == "seeds" and head[-1] == "saving over seed pairs"
    assert cells[1][2] == "2" and cells[1][-1] == "+33% to +48%" and " ± 0.0424" in cells[1][5]
    # per seed, as before
    assert len(compare_curves([r0, m0, r1, m1], seeds=False, baseline="lc-r-s0")["rows"]) == 4
    # the baseline may be named by one of its seeds
    assert compare_curves([r0, m0, r1, m1], baseline="lc-r-s1")["baseline"]["campaign"] == "lc-r (2 seeds)"


def test_a_saving_that_some_seed_pairs_never_reach_is_called_indistinguishable():
    r0, r1 = _seed("r-0", "random", "R", 0, (0.5, 0.6, 0.7)), _seed("r-1", "random", "R", 1, (0.5, 0.62, 0.66))
    x0, x1 = _seed("x-0", "entropy", "X", 0, (0.5, 0.6, 0.71)), _seed("x-1", "entropy", "X", 1, (0.5, 0.6, 0.65))
    res = compare_curves([r0, r1, x0, x1])
    x = res["rows"][1]
    # x0 reaches 0.7 at 40 + 0.1 / 0.11 * 20 and 0.66 at 40 + 0.06 / 0.11 * 20; x1 reaches neither
    assert x["saving_range"] == [pytest.approx(1 - (40 + 20 / 1.1) / 60), pytest.approx(1 - (40 + 1.2 / 0.11) / 60)]
    assert x["saving_pairs_unreached"] == 2
    assert any("2 of 4 pairs never reach it" in n and "not distinguishable" in n for n in res["notes"])


def test_the_mean_curve_uses_every_seeds_points_inside_the_range_all_cover():
    a = Curve("a", "m", (20, 40, 60), (0.2, 0.4, 0.6))
    b = Curve("b", "m", (20, 30, 50), (0.3, 0.4, 0.5))
    xs, ys = mean_curve([a, b])
    assert xs == [20, 30, 40, 50]
    np.testing.assert_allclose(ys, [[0.2, 0.3, 0.4, 0.5], [0.3, 0.4, 0.45, 0.5]])
    with pytest.raises(AlftError, match="seeds of one configuration do not overlap"):
        mean_curve([a, Curve("c", "m", (70, 80), (0.1, 0.2))])


def test_repeat_key_ignores_only_what_does_not_change_the_measurement():
    cfg = {"name": "a", "seed": 0, "workdir": "x", "store": {}, "tracking": {}, "strategy": {"name": "margin"}}
    assert repeat_key(cfg) == repeat_key({**cfg, "name": "b", "seed": 7, "workdir": "y", "tracking": {"uri": "z"}})
    assert repeat_key(cfg) != repeat_key({**cfg, "strategy": {"name": "entropy"}})


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def two_campaigns(tmp_path_factory, banking_subset, tiny_model):
    """random (80 labels) and margin with a 0.25 control arm (100 labels), run without Prefect;
    and a second seed of the random one (``cmp-random-s4``)."""
    from alft.config import load_config
    from benchmarks.plain import run_plain
    from tests.conftest import campaign_yaml

    out = {}
    for name, strategy, budget, seed in (
        ("cmp-random", {"name": "random"}, 80, 3),
        ("cmp-margin", {"name": "margin", "control_share": 0.25}, 100, 3),
        ("cmp-random-s4", {"name": "random"}, 80, 4),
    ):
        tmp = tmp_path_factory.mktemp(name)
        path = campaign_yaml(
            tmp, banking_subset, tiny_model, name=name, strategy=strategy, budget=budget, seed=seed,
            tracking={"log_models": False},
        )
        cfg = load_config(path)
        run_plain(cfg)
        out[name] = (path, cfg)
    return out


def test_every_campaign_and_round_run_carries_the_comparison_tags(two_campaigns):
    from mlflow import MlflowClient

    from alft.campaign.context import CampaignContext
    from alft.config import config_digest
    from alft.store.campaign_store import CampaignStore
    from tasks.track import track_campaign, track_round

    _, cfg = two_campaigns["cmp-margin"]
    store = CampaignStore(cfg.store_url())
    ctx = CampaignContext(config=cfg, uid=store.campaign(cfg.name)["uid"])
    track_campaign.fn(ctx)
    rounds = [r["round"] for r in store.rounds(cfg.name)]
    for r in rounds:
        track_round.fn(ctx, r)
    client = MlflowClient(tracking_uri=cfg.tracking_uri())
    exp = client.get_experiment_by_name(cfg.experiment_name())
    runs = client.search_runs([exp.experiment_id])
    kinds = sorted(r.data.tags["alft.kind"] for r in runs)
    assert kinds == ["campaign"] + ["round"] * len(rounds)
    want = {
        "strategy": "margin",
        "cold_start": "kmeans",
        "seed": "3",
        "task": "classification",
        "trainer": "head",
        "model": cfg.model.path,
        "dataset": cfg.data.pool.path,
        "config_digest": config_digest(cfg),
        "control_share": "0.25",
    }
    for run in runs:
        tags = run.data.tags
        assert {k: tags.get(k) for k in want} == want, tags.get("alft.kind")
        assert len(tags["dataset_digest"]) == 16
    # the control arm's numbers reach the round runs (rounds >= 1) from the store
    by_round = {int(r.data.tags["alft.round"]): r for r in runs if r.data.tags["alft.kind"] == "round"}
    metrics = store.metrics(cfg.name)
    assert "control.accuracy" not in by_round[0].data.metrics
    for r in rounds[1:]:
        for key in ("control.accuracy", "control.strategy_error", "control.random_error", "control.n"):
            assert by_round[r].data.metrics[key] == pytest.approx(metrics[r][key])


def test_compare_cli_end_to_end(two_campaigns, tmp_path):
    from mlflow import MlflowClient

    from alft.cli import app
    from alft.campaign.compare import auc_on_range
    from alft.store.campaign_store import CampaignStore

    rpath, rcfg = two_campaigns["cmp-random"]
    mpath, mcfg = two_campaigns["cmp-margin"]
    out = tmp_path / "cmp" / "random-vs-margin.png"
    # the margin campaign by its folder, the random one by its config file
    res = CliRunner().invoke(app, ["compare", str(rpath), str(mcfg.workdir_path()), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = json.loads(out.with_suffix(".json").read_text())
    md = out.with_suffix(".md").read_text()
    assert "| cmp-random | random |" in md and "| cmp-margin | margin |" in md

    def curve(cfg):
        h = CampaignStore(cfg.store_url()).history(cfg.name)
        return [p.n_labels for p in h], [p.metrics["accuracy"] for p in h]

    rx, ry = curve(rcfg)
    mx, my = curve(mcfg)
    assert rx == [20, 40, 60, 80] and mx == [20, 40, 60, 80, 100]
    assert table["common_range"] == [20.0, 80.0]
    assert "common label range 20-80" in res.output  # says the ranges differ
    rows = {r["campaign"]: r for r in table["rows"]}
    assert table["baseline"]["campaign"] == "cmp-random" and table["baseline"]["target"] == ry[-1]
    assert rows["cmp-random"]["saving_vs_baseline"] == 0.0
    assert rows["cmp-random"]["auc"] == pytest.approx(auc_on_range(rx, ry, 20, 80))
    assert rows["cmp-margin"]["auc"] == pytest.approx(auc_on_range(mx[:4], my[:4], 20, 80))
    assert rows["cmp-margin"]["final_accuracy"] == my[-1]
    needed = labels_to_reach(mx, my, ry[-1])
    base_needed = labels_to_reach(rx, ry, ry[-1])
    assert rows["cmp-margin"]["labels_to_baseline_final"] == (None if needed is None else pytest.approx(needed))
    if needed is None:
        assert "cmp-margin never reaches" in res.output
    else:
        assert rows["cmp-margin"]["saving_vs_baseline"] == pytest.approx(1 - needed / base_needed)
    assert rows["cmp-margin"]["control_share"] == 0.25 and 0 <= rows["cmp-margin"]["mean_control_accuracy"] <= 1
    # a comparison run in the first campaign's MLflow, holding the figure and the table
    client = MlflowClient(tracking_uri=rcfg.tracking_uri())
    exp = client.get_experiment_by_name("alft/compare")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.data.tags["alft.kind"] == "comparison" and run.data.tags["alft.baseline"] == "cmp-random"
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        "random-vs-margin.png", "random-vs-margin.json", "random-vs-margin.md"
    }
    assert run.data.metrics["auc.cmp-margin"] == pytest.approx(rows["cmp-margin"]["auc"])
    assert not math.isnan(run.data.metrics["final_accuracy.cmp-random"])


def test_compare_cli_averages_the_seeds_of_one_configuration(two_campaigns, tmp_path):
    from alft.cli import app
    from alft.store.campaign_store import CampaignStore

    (r3, c3), (r4, c4), (mp, _) = (two_campaigns[n] for n in ("cmp-random", "cmp-random-s4", "cmp-margin"))
    out = tmp_path / "seeds.png"
    res = CliRunner().invoke(app, ["compare", str(r3), str(mp), str(r4), "--out", str(out), "--no-mlflow"])
    assert res.exit_code == 0, res.output
    table = json.loads(out.with_suffix(".json").read_text())
    assert [r["campaign"] for r in table["rows"]] == ["cmp-random (2 seeds)", "cmp-margin"]
    assert table["groups"] == {"cmp-random (2 seeds)": ["cmp-random", "cmp-random-s4"]}
    acc = [[p.metrics["accuracy"] for p in CampaignStore(c.store_url()).history(c.name)] for c in (c3, c4)]
    row = table["rows"][0]
    assert row["seeds"] == [3, 4] and row["final_accuracy"] == pytest.approx((acc[0][-1] + acc[1][-1]) / 2)
    assert row["band"]["min"] == pytest.approx([min(a, b) for a, b in zip(*acc, strict=True)])
    assert table["baseline"]["campaign"] == "cmp-random (2 seeds)"
    assert "saving_range" in table["rows"][1] and "saving over seed pairs" in out.with_suffix(".md").read_text()
    res = CliRunner().invoke(app, ["compare", str(r3), str(r4), str(mp), "--out", str(out), "--no-mlflow",
                                   "--per-seed", "--baseline", "cmp-random"])
    assert res.exit_code == 0, res.output
    assert [r["campaign"] for r in json.loads(out.with_suffix(".json").read_text())["rows"]] == [
        "cmp-random", "cmp-random-s4", "cmp-margin"
    ]


def test_compare_cli_bad_input(two_campaigns, tmp_path):
    from alft.cli import app

    rpath, _ = two_campaigns["cmp-random"]
    mpath, _ = two_campaigns["cmp-margin"]
    runner = CliRunner()
    res = runner.invoke(app, ["compare", str(rpath), str(mpath), "--out", str(tmp_path / "x.png"), "--baseline", "nope"])
    assert res.exit_code == 2 and "--baseline nope: not among" in res.output
    res = runner.invoke(app, ["compare", str(rpath), "--out", str(tmp_path / "x.png"), "--metric", "rouge_l"])
    assert res.exit_code == 2 and "no evaluated round with metric 'rouge_l'" in res.output
    assert not (tmp_path / "x.png").exists()
