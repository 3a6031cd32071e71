"""benchmarks/llm_effort.py: its time model by hand, and the whole script on a tiny setting
(tiny BERT encoder, tiny random Llama as the LLM labeler, 8 BANKING77 intents)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from benchmarks.llm_effort import choose_seconds, effort


def test_choosing_costs_two_seconds_for_two_labels_and_six_for_77():
    assert choose_seconds(2) == 2.0
    assert choose_seconds(77) == pytest.approx(6.0)
    assert choose_seconds(8) == pytest.approx(2 + 4 * math.log(4) / math.log(38.5))


def test_time_model_one_key_ranked_picks_and_passed_over_suggestions():
    def ev(ex, prov, conf, label="z", proposal=None, source="page", ann="a", kind="label"):
        return {"example_id": ex, "annotator": ann, "source": source, "kind": kind, "provenance": prov,
                "proposal_confidence": conf, "label": label, "proposal": proposal}

    events = [
        ev("e1", "accepted", 0.9, "a", "a"),  # Enter on a pre-selected proposal: 1 s
        ev("e2", "accepted", 0.3, "b", "b"),  # kept, not pre-selected: rank 1 of the list, 1 + 0.5
        ev("e3", "corrected", 0.9, "c", "x"),  # rank 3 of the list: 1 + 3 * 0.5
        ev("e4", "typed", None),  # nothing shown: a full choice among 77, 6 s
        ev("e5", "auto", 0.99, source="auto", ann="llm-auto"),  # nobody's time
        ev("e6", "typed", None), ev("e6", None, None, kind="retract"),  # undone: no standing label
        ev("e7", "corrected", 0.4, "z", "x"),  # not in the listed two: 6 + both read, 2 * 0.5
        ev("e8", "corrected", 0.4, "z", "x"),  # a proposal without a list (LLM): 6 + 0.5
        ev("e9", "typed", None, "c"),  # ranked, but nothing was shown (a blind audit): 6
    ]
    ranked = {"e2": ["b", "c"], "e3": ["x", "y", "c"], "e7": ["x", "y"], "e9": ["c"]}
    got = effort(events, 77, 0.5, ranked)
    assert got == {"human_decisions": 7, "one_key": 1, "ranked_picks": 2,
                   "human_seconds": round(1 + 1.5 + 2.5 + 6 + 7 + 6.5 + 6, 1)}
    # without the page's list, every label but the pre-selected one is a full choice
    assert effort(events, 77, 0.5)["human_seconds"] == round(1 + 6.5 + 6.5 + 6 + 6.5 + 6.5 + 6, 1)


def test_the_page_lists_labels_at_five_percent_or_more_best_first():
    from benchmarks.llm_effort import page_ranking

    probs = np.array([0.04, 0.5, 0.05, 0.3, 0.11])
    assert page_ranking(probs, ["a", "b", "c", "d", "e"]) == ["b", "d", "e", "c"]
    assert page_ranking(np.array([0.5, 0.5]), ["x", "y"]) == ["x", "y"]  # ties: label-set order


@pytest.mark.slow
def test_the_benchmark_runs_every_mode_on_a_tiny_setting(tmp_path, banking_subset, tiny_model):
    from benchmarks.llm_effort import main
    from tests.conftest import read_jsonl
    from tests.tiny_models import tiny_llama

    data = tmp_path / "data" / "banking77"
    data.mkdir(parents=True)
    shutil.copy(banking_subset["pool"], data / "train.jsonl")
    shutil.copy(banking_subset["eval"], data / "test.jsonl")
    shutil.copy(banking_subset["labels"], data / "labels.json")
    llm = tiny_llama(tmp_path / "llm", [r["text"] for r in read_jsonl(banking_subset["pool"])])
    out = tmp_path / "rows.json"
    rows = main([
        "--datasets", "banking77", "--pool", "120", "--eval", "40", "--budget", "40", "--batch", "20",
        "--shots", "2", "--threads", "1", "--encoder", str(tiny_model), "--llm", str(llm),
        "--data-dir", str(tmp_path / "data"), "--work", str(tmp_path / "work"), "--out", str(out),
    ])
    assert json.loads(out.read_text()) == rows
    # the modes, and who proposed
    assert [(r["mode"], r["prelabeler"]) for r in rows] == [
        ("none", None), ("prelabel", "llm"), ("mixed", "llm"), ("prelabel", "classifier"), ("mixed", "classifier"),
        ("prelabel", "llm+classifier"), ("mixed", "llm+classifier"),
    ]
    keys = {"dataset", "mode", "seed", "budget", "human_decisions", "human_seconds", "accuracy", "auto_labels", "auto_label_error"}
    assert all(keys <= set(r) for r in rows)
    none, pre, mixed, clf, clf_mixed, pooled, pooled_mixed = rows
    # nothing proposed: every one of the 40 labels is a full choice among 8
    assert (none["human_decisions"], none["one_key"], none["auto_labels"]) == (40, 0, 0)
    assert none["human_seconds"] == round(40 * choose_seconds(8), 1) and none["prelabel_accuracy"] is None
    assert pre["human_decisions"] == 40 and pre["prelabel_accuracy"] is not None
    # every text has an LLM proposal, and the page ranks the LLM's own probabilities (rounds 0 and 1)
    work = tmp_path / "work" / "effort-banking77-prelabel-s0"
    for r in (0, 1):
        with np.load(work / "rounds" / f"{r:03d}" / "proposal_probs.npz") as z:
            assert z["probs"].shape == (20, 8) and ("clf" in z.files) == (r == 1)
    assert pre["one_key"] + pre["ranked_picks"] <= 40
    full = choose_seconds(8)
    # each label costs 1 s (kept), 1 s + 0.5 s a listed label read (picked from the list), or a
    # full choice plus reading what was listed (at most 9 labels)
    assert pre["one_key"] + 1.5 * pre["ranked_picks"] <= pre["human_seconds"]
    assert pre["human_seconds"] <= pre["one_key"] + 5.5 * pre["ranked_picks"] + (40 - pre["one_key"] - pre["ranked_picks"]) * (full + 4.5)
    # pooled: round 0 is the LLM's alone (no classifier yet), round 1 the product with its weights
    assert pooled["human_decisions"] == 40 and pooled["prelabel_accuracy"] is not None and pooled["llm"] == str(llm)
    assert pooled_mixed["max_error"] == 0.02 and pooled_mixed["auto_labels"] == 0
    # 40 labels never calibrate a 2 % bound (that needs 149): mixed asks people for all of them
    assert (mixed["auto_labels"], mixed["auto_label_error"], mixed["human_decisions"]) == (0, None, 40)
    # classifier proposals: none in round 0 (no classifier yet), the head's label from round 1
    assert clf["llm"] is None and clf["prelabel_accuracy"] is not None and clf_mixed["max_error"] == 0.02
    assert all(0 <= r["accuracy"] <= 1 for r in rows)


def test_an_unknown_mode_is_refused_before_anything_runs(tmp_path, capsys):
    from benchmarks.llm_effort import main

    with pytest.raises(SystemExit):
        main(["--modes", "none,llm_only", "--out", str(tmp_path / "rows.json")])
    assert "--modes: unknown llm_only" in capsys.readouterr().err
    assert not (tmp_path / "rows.json").exists()
