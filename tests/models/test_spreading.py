"""Label spreading for the semi-supervised head (``trainer.head.semi_supervised``)."""

from __future__ import annotations

import numpy as np
import pytest

from alft.config import HeadTrainerConfig, SemiSupervisedConfig, load_config
from alft.errors import ConfigError, TrainerError
from alft.models import spreading
from alft.models.head import HeadTrainer
from alft.models.spreading import knn_graph, pseudo_labels, spread_labels
from benchmarks.plain import run_plain
from tests.conftest import campaign_yaml


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clusters(rng: np.random.Generator, n_per: int, c: int, d: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(c, d))
    y = np.repeat(np.arange(c), n_per)
    return _unit(centres[y] + spread * rng.normal(size=(y.size, d))), y


def test_knn_graph_matches_brute_force_and_leaves_out_each_row_itself():
    x = _unit(np.random.default_rng(0).normal(size=(300, 16)))
    nbr, sim = knn_graph(x, 7)
    full = x @ x.T  # [n, n]
    np.fill_diagonal(full, -np.inf)
    want = np.argsort(-full, axis=1, kind="stable")[:, :7]
    assert (nbr != np.arange(300)[:, None]).all()
    np.testing.assert_allclose(sim, np.take_along_axis(full, want, axis=1), rtol=1e-5, atol=1e-6)
    assert (np.sort(nbr, axis=1) == np.sort(want, axis=1)).mean() > 0.99  # ties may swap equal neighbours


def test_knn_graph_on_a_pool_smaller_than_k_marks_the_missing_neighbours():
    x = _unit(np.random.default_rng(1).normal(size=(3, 4)))
    nbr, sim = knn_graph(x, 5)
    assert nbr.shape == (3, 5)
    assert ((nbr >= 0).sum(axis=1) == 2).all()  # the two other rows, then -1
    assert (sim[nbr < 0] == 0).all()


def test_the_approximate_graph_above_the_exact_limit_finds_most_true_neighbours(monkeypatch):
    x, _ = _clusters(np.random.default_rng(2), 200, 10, 24, 0.4)
    exact, _ = knn_graph(x, 10)
    monkeypatch.setattr(spreading, "EXACT_MAX_ROWS", 100)
    approx, _ = knn_graph(x, 10)
    recall = np.mean([np.intersect1d(a, b).size / 10 for a, b in zip(approx, exact)])
    assert recall > 0.9
    assert (approx != np.arange(x.shape[0])[:, None]).all()


def test_spreading_on_two_disconnected_pairs_gives_each_partner_its_pair_label():
    # hand-computed: 1-NN graph = {0-1, 2-3}; each component holds one label, so the partner's
    # spread distribution is all on that label whatever alpha is
    x = _unit(np.array([[1.0, 0.01], [1.0, -0.01], [-1.0, 0.02], [-1.0, -0.02]]))
    nbr, sim = knn_graph(x, 1)
    assert nbr.ravel().tolist() == [1, 0, 3, 2]
    dist = spread_labels(nbr, sim, np.array([0, 2]), np.array([1, 0]), 2, alpha=0.5, iterations=10)
    np.testing.assert_allclose(dist, [[0, 1], [0, 1], [1, 0], [1, 0]])


def test_spreading_decays_along_a_chain_as_computed_by_hand():
    # path graph 0-1-2 with equal weights: S = D^-1/2 W D^-1/2 has S01 = S12 = 1/sqrt(2);
    # labels 0 -> class 0 at row 0, class 1 at row 2. After one step from F = Y:
    # F1 = alpha * (S10 * Y0 + S12 * Y2) = alpha/sqrt(2) * [1, 1]: row 1 is split evenly
    nbr = np.array([[1, -1], [0, 2], [1, -1]])
    sim = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    dist = spread_labels(nbr, sim, np.array([0, 2]), np.array([0, 1]), 2, alpha=0.9, iterations=1)
    np.testing.assert_allclose(dist[1], [0.5, 0.5])
    # row 0 after one step: (1 - alpha) * Y0 + alpha * S01 * F1(=0) -> all class 0
    np.testing.assert_allclose(dist[0], [1.0, 0.0])


def test_rows_no_label_reaches_get_no_pseudo_label():
    x = _unit(np.array([[1.0, 0.0], [1.0, 0.001], [0.0, 1.0], [0.001, 1.0]]))
    rows, classes, conf = pseudo_labels(x, np.array([0]), np.array([0]), 2, k=1, alpha=0.9, iterations=20)
    assert rows.tolist() == [1]  # rows 2 and 3 form their own component, which holds no label
    assert classes.tolist() == [0] and conf[0] == pytest.approx(1.0)


def test_mismatched_rows_and_labels_are_refused():
    nbr, sim = np.array([[1], [0]]), np.ones((2, 1), dtype=np.float32)
    with pytest.raises(TrainerError, match="2 labeled rows but 1 labels"):
        spread_labels(nbr, sim, np.array([0, 1]), np.array([0]), 2, alpha=0.9, iterations=3)
    with pytest.raises(TrainerError, match="outside the pool's 2 rows"):
        spread_labels(nbr, sim, np.array([5]), np.array([0]), 2, alpha=0.9, iterations=3)


def test_the_semi_supervised_head_beats_the_plain_head_with_one_label_per_cluster():
    rng = np.random.default_rng(3)
    x, y = _clusters(rng, 60, 8, 32, 1.1)  # overlapping clusters: few labels mislead the plain head
    xe, ye = x[1::2], y[1::2]
    pool = x[::2]
    ypool = y[::2]
    labels = [f"c{i}" for i in range(8)]
    plain_acc, semi_acc = [], []
    for seed in range(5):
        r = np.random.default_rng(seed)
        rows = np.array([r.choice(np.flatnonzero(ypool == c)) for c in range(8)])
        plain = HeadTrainer(HeadTrainerConfig()).fit([], pool[rows], ypool[rows], labels, seed=0)
        semi = HeadTrainer(HeadTrainerConfig(semi_supervised=SemiSupervisedConfig(k=10))).fit(
            [], pool[rows], ypool[rows], labels, seed=0, pool=pool, pool_rows=rows
        )
        plain_acc.append((plain.predict_proba([], xe).argmax(1) == ye).mean())
        semi_acc.append((semi.predict_proba([], xe).argmax(1) == ye).mean())
    assert np.mean(semi_acc) > np.mean(plain_acc) + 0.03, (plain_acc, semi_acc)


def test_the_semi_supervised_head_without_the_pool_is_refused():
    x = _unit(np.random.default_rng(4).normal(size=(4, 3)))
    trainer = HeadTrainer(HeadTrainerConfig(semi_supervised=SemiSupervisedConfig()))
    with pytest.raises(TrainerError, match="needs the pool's embeddings"):
        trainer.fit([], x[:2], np.array([0, 1]), ["a", "b"], seed=0)


def test_a_campaign_fits_the_head_on_the_pool_rows_of_its_labels(tmp_path, banking_subset, tiny_model, monkeypatch):
    calls: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    fit = HeadTrainer.fit

    def spy(self, texts, embeddings, y, labels, seed, progress=None, **kw):
        calls.append((embeddings, kw.get("pool"), kw.get("pool_rows")))
        return fit(self, texts, embeddings, y, labels, seed, progress, **kw)

    monkeypatch.setattr(HeadTrainer, "fit", spy)
    path = campaign_yaml(tmp_path, banking_subset, tiny_model, name="semi", budget=40)
    cfg = load_config(path, overrides=["trainer.head.semi_supervised={k: 5, weight: 0.5}"])
    run_plain(cfg)
    assert calls
    for emb, pool, rows in calls:
        assert pool is not None and rows is not None and rows.size == emb.shape[0]
        np.testing.assert_array_equal(pool[rows], emb)  # row positions, not some other index space


def test_unknown_semi_supervised_options_are_refused(tmp_path, banking_subset, tiny_model):
    path = campaign_yaml(tmp_path, banking_subset, tiny_model, name="semi-bad")
    with pytest.raises(ConfigError, match="semi_supervised"):
        load_config(path, overrides=["trainer.head.semi_supervised={kind: self_training}"])
    with pytest.raises(ConfigError, match="alpha"):
        load_config(path, overrides=["trainer.head.semi_supervised={alpha: 1.0}"])


def test_the_pseudo_label_weight_fades_linearly_to_zero_at_the_labels_per_class_given():
    # hand-computed: 0.3 * (1 - n / (C * fade))
    assert spreading.pseudo_label_weight(0.3, 0, 77, 30.0) == pytest.approx(0.3)
    assert spreading.pseudo_label_weight(0.3, 1155, 77, 30.0) == pytest.approx(0.15)
    assert spreading.pseudo_label_weight(0.3, 2310, 77, 30.0) == 0.0
    assert spreading.pseudo_label_weight(0.3, 100, 2, 30.0) == 0.0  # a binary set past 60 labels
    assert spreading.pseudo_label_weight(0.3, 10_000, 2, None) == pytest.approx(0.3)
    with pytest.raises(TrainerError, match="n_classes >= 1"):
        spreading.pseudo_label_weight(0.3, 10, 0, 30.0)


def test_a_faded_out_head_fits_exactly_the_plain_head_and_builds_no_graph(monkeypatch):
    rng = np.random.default_rng(5)
    x, y = _clusters(rng, 40, 2, 16, 0.8)
    rows = np.arange(0, 80, 2)  # 40 labels over 2 classes = 20 per class
    labels = ["a", "b"]
    monkeypatch.setattr(spreading, "knn_graph", lambda *a, **k: pytest.fail("graph built although faded out"))
    plain = HeadTrainer(HeadTrainerConfig()).fit([], x[rows], y[rows], labels, seed=0)
    faded = HeadTrainer(HeadTrainerConfig(semi_supervised=SemiSupervisedConfig(fade_per_class=20.0))).fit(
        [], x[rows], y[rows], labels, seed=0, pool=x, pool_rows=rows
    )
    np.testing.assert_array_equal(plain.predict_proba([], x), faded.predict_proba([], x))


def test_a_half_faded_head_weighs_its_pseudo_labels_half_as_much(monkeypatch):
    seen: list[np.ndarray] = []
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression.fit

    def spy(self, X, y, sample_weight=None):
        seen.append(sample_weight)
        return fit(self, X, y, sample_weight=sample_weight)

    monkeypatch.setattr(LogisticRegression, "fit", spy)
    rng = np.random.default_rng(6)
    x, y = _clusters(rng, 30, 3, 16, 0.5)
    rows = np.array([0, 1, 30, 31, 60, 61])  # 6 labels, 3 classes: 2 per class of fade 4 -> half weight
    cfg = SemiSupervisedConfig(weight=0.4, fade_per_class=4.0)
    HeadTrainer(HeadTrainerConfig(semi_supervised=cfg)).fit([], x[rows], y[rows], ["a", "b", "c"], seed=0, pool=x, pool_rows=rows)
    (w,) = seen
    assert np.all(w[:6] == 1.0)
    _, _, conf = pseudo_labels(x, rows, y[rows], 3, k=cfg.k, alpha=cfg.alpha, iterations=cfg.iterations)
    np.testing.assert_allclose(w[6:], 0.2 * conf)


def test_a_given_graph_gives_the_same_head_as_building_it():
    rng = np.random.default_rng(6)
    x, y = _clusters(rng, 30, 4, 16, 1.0)
    rows = np.arange(0, 120, 15)
    labels = ["a", "b", "c", "d"]
    trainer = HeadTrainer(HeadTrainerConfig(semi_supervised=SemiSupervisedConfig(k=6)))
    built = trainer.fit([], x[rows], y[rows], labels, seed=0, pool=x, pool_rows=rows)
    given = trainer.fit([], x[rows], y[rows], labels, seed=0, pool=x, pool_rows=rows,
                        pool_graph=lambda: knn_graph(x, 6))
    np.testing.assert_array_equal(built.predict_proba([], x), given.predict_proba([], x))
    with pytest.raises(TrainerError, match=r"graph is \(120, 5\).*120 rows and k=6"):
        trainer.fit([], x[rows], y[rows], labels, seed=0, pool=x, pool_rows=rows, pool_graph=lambda: knn_graph(x, 5))


def test_a_campaign_builds_the_pool_graph_once_and_later_campaigns_read_it(tmp_path, banking_subset, tiny_model, monkeypatch):
    from alft.campaign import graph as graph_mod

    built: list[int] = []
    real = spreading.knn_graph

    def counting(x, k, seed=0):
        built.append(x.shape[0])
        return real(x, k, seed=seed)

    monkeypatch.setattr(spreading, "knn_graph", counting)
    graph_mod._GRAPH_MEMO.clear()
    path = campaign_yaml(tmp_path, banking_subset, tiny_model, name="semi-graph", budget=60)
    # a cache folder of its own: the session's is shared with the other campaigns' tests
    over = ["trainer.head.semi_supervised={k: 5, weight: 0.5, fade_per_class: null}", f"model.cache_dir={tmp_path / 'cache'}"]
    cfg = load_config(path, overrides=over)
    run_plain(cfg)
    from alft.campaign.context import open_store

    assert len(open_store(cfg).rounds(cfg.name)) >= 3 and len(built) == 1  # several rounds, one graph
    files = list((cfg.cache_dir() / "knn_graphs").glob("*.npz"))
    assert len(files) == 1 and files[0].name.endswith("-k5-seed%d.npz" % cfg.seed)
    from alft.campaign.context import features_for
    from alft.data import load_campaign_data

    data = load_campaign_data(cfg)
    with np.load(files[0]) as z:  # the cached graph is the pool features' exact graph
        np.testing.assert_array_equal(z["nbr"], real(features_for(cfg, data, "pool"), 5)[0])
    # another campaign on the same pool, features and seed, in a new process (no memo): read back
    graph_mod._GRAPH_MEMO.clear()
    run_plain(load_config(path, overrides=[*over, "name=semi-graph-2"]))
    assert len(built) == 1
    # a cache file that does not fit the pool is refused with its path, not silently used
    graph_mod._GRAPH_MEMO.clear()
    with open(files[0], "wb") as fh:
        np.savez(fh, nbr=np.zeros((3, 5), dtype=np.int64), sim=np.zeros((3, 5), dtype=np.float32))
    with pytest.raises(TrainerError, match=r"knn_graphs.*\(3, 5\).*delete it"):
        graph_mod.pool_graph(cfg, data, 5)
