"""alft's exact k-center against an independent implementation: small-text's greedy coreset.

small-text (``small_text.query_strategies.coresets.greedy_coreset``, what its ``GreedyCoreset``
calls) recomputes every distance per pick, so it is a slow but plain reference. Its loop indexes
the vectors with positions into ``indices_unlabeled`` when it adds a pick to the centres, so it
is only a faithful greedy coreset when the unlabeled indices are ``0..m-1`` (the labeled rows
last); on that layout its picks must be alft's, in order (benchmarks/selection_scale.py notes
where the two part on other layouts).
"""

from __future__ import annotations

import numpy as np

from strategies import QueryInputs, get_strategy


def test_kcenter_picks_what_small_texts_greedy_coreset_picks_on_a_prefix_layout():
    from small_text.query_strategies.coresets import greedy_coreset

    rng = np.random.default_rng(11)
    centres = rng.normal(size=(40, 32))
    x = centres[rng.integers(0, 40, size=3000)] + 0.3 * rng.normal(size=(3000, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # [n, d] unit rows
    labeled = np.arange(2950, 3000)  # pool ids; the unlabeled ones are 0..2949
    unlabeled = np.arange(2950)
    theirs = unlabeled[np.asarray(greedy_coreset(x, unlabeled, labeled, 25, distance_metric="euclidean",
                                                 normalized=True))]
    ours = get_strategy("kcenter").query(
        QueryInputs(unlabeled=unlabeled, labeled=labeled, embeddings=x), 25, np.random.default_rng(0)
    )
    assert ours.pool_ids.tolist() == theirs.tolist()
