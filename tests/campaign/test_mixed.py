"""oracle.kind mixed: the auto-accept threshold on hand-computed cases (pure functions, no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alft.campaign.mixed import AUDIT, AUTO, audit_size, auto_threshold, clopper_pearson_upper, decide


def test_the_upper_bound_matches_its_closed_forms():
    # no error in n: 1 - (1 - level)^(1/n); all wrong or nothing seen: 1
    assert clopper_pearson_upper(0, 149, 0.95) == pytest.approx(1 - 0.05 ** (1 / 149))
    assert clopper_pearson_upper(0, 2, 0.95) == pytest.approx(1 - math.sqrt(0.05))  # 0.77639
    # 1 error in 2: Beta(2, 1) has CDF x^2, so the bound is sqrt(0.95)
    assert clopper_pearson_upper(1, 2, 0.95) == pytest.approx(math.sqrt(0.95))  # 0.97468
    # 1 error in 3: Beta(2, 2) has CDF 3x^2 - 2x^3 = 0.95 at x = 0.86465
    assert clopper_pearson_upper(1, 3, 0.95) == pytest.approx(0.86465, abs=1e-5)
    assert clopper_pearson_upper(4, 4, 0.95) == 1.0 and clopper_pearson_upper(0, 0, 0.95) == 1.0


def test_149_agreeing_correct_labels_are_the_fewest_that_allow_a_2_percent_bound():
    # 1 - 0.05^(1/149) = 0.01991 <= 0.02 < 0.02004 = 1 - 0.05^(1/148)
    conf = np.linspace(0.9, 0.99, 149)
    th = auto_threshold(conf, np.ones(149, bool), max_error=0.02, min_labels=50, level=0.95)
    assert th.t == pytest.approx(0.9) and (th.n, th.errors) == (149, 0)
    th = auto_threshold(conf[1:], np.ones(148, bool), max_error=0.02, min_labels=50, level=0.95)
    assert th.t is None and th.n_calibration == 148


def test_the_smallest_threshold_under_the_bound_wins():
    # 150 correct at 0.99, then 50 at 0.6 of which 10 wrong: at 0.6 the bound is far above 2 %
    conf = np.r_[np.full(150, 0.99), np.full(50, 0.6)]
    correct = np.r_[np.ones(150, bool), np.arange(50) >= 10]
    th = auto_threshold(conf, correct, max_error=0.02, min_labels=50, level=0.95)
    assert th.t == pytest.approx(0.99) and (th.n, th.errors) == (150, 0)
    assert th.upper == pytest.approx(1 - 0.05 ** (1 / 150))


def test_a_hand_computed_small_case():
    # t=0.9: n=1 < min 2; t=0.8: n=2, e=0, bound 0.7764 <= 0.8; t=0.7: n=3, e=1, bound 0.8647 > 0.8
    th = auto_threshold(np.array([0.9, 0.8, 0.7]), np.array([True, True, False]), max_error=0.8, min_labels=2, level=0.95)
    assert (th.t, th.n, th.errors) == (0.8, 2, 0)
    assert th.upper == pytest.approx(1 - math.sqrt(0.05))
    # the order of the input does not matter
    th2 = auto_threshold(np.array([0.7, 0.9, 0.8]), np.array([False, True, True]), max_error=0.8, min_labels=2, level=0.95)
    assert th2 == th


def test_a_threshold_never_splits_tied_confidences():
    # at 0.9 both tied proposals count (n=2, e=1: bound 0.9747); split, the first alone (n=1)
    # or the correct one with 0.95 (n=2, e=0: bound 0.7764) would wrongly pass 0.8
    th = auto_threshold(np.array([0.95, 0.9, 0.9]), np.array([True, True, False]), max_error=0.8, min_labels=1, level=0.95)
    assert th.t is None
    th = auto_threshold(np.array([0.95, 0.9, 0.9]), np.array([True, False, True]), max_error=0.8, min_labels=1, level=0.95)
    assert th.t is None


def test_below_the_minimum_nothing_is_auto_accepted():
    th = auto_threshold(np.full(40, 0.99), np.ones(40, bool), max_error=0.2, min_labels=50, level=0.95)
    assert th.t is None and th.n_calibration == 40
    assert auto_threshold(np.empty(0), np.empty(0, bool), max_error=0.02, min_labels=1, level=0.95).t is None


def test_bad_calibration_input_is_refused():
    with pytest.raises(ValueError, match="3 confidences for 2 correctness flags"):
        auto_threshold(np.ones(3), np.ones(2, bool), max_error=0.1, min_labels=1, level=0.95)
    with pytest.raises(ValueError, match="not finite"):
        auto_threshold(np.array([0.5, np.nan]), np.ones(2, bool), max_error=0.1, min_labels=1, level=0.95)


def test_audit_size_rounds_up():
    assert [audit_size(0.1, n) for n in (0, 1, 9, 10, 11, 30)] == [0, 1, 1, 1, 2, 3]
    assert audit_size(0.0, 30) == 0


def test_decide_accepts_confident_agreeing_proposals_and_audits_a_share():
    conf = np.array([0.95, 0.99, 0.5, np.nan, 0.97, 0.96])
    agrees = np.array([True, True, True, True, False, True])
    d = decide(conf, agrees, 0.9, 0.0, np.random.default_rng(0))
    assert d.tolist() == [AUTO, AUTO, None, None, None, AUTO]  # 0.97 disagrees with the classifier
    d = decide(conf, agrees, 0.9, 0.5, np.random.default_rng([3, 1, 6]))
    assert sorted(x for x in d.tolist() if x) == [AUDIT, AUDIT, AUTO]  # ceil(0.5 * 3) = 2 audited
    again = decide(conf, agrees, 0.9, 0.5, np.random.default_rng([3, 1, 6]))
    assert d.tolist() == again.tolist()  # the same seed and round draw the same audit
    assert decide(conf, agrees, None, 0.1, np.random.default_rng(0)).tolist() == [None] * 6
