"""The oracle's new keys: prelabel, preselection, mixed; defaults keep existing configs as they were."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from alft.config import CampaignConfig, OracleConfig


def campaign(**oracle) -> dict:
    return {
        "name": "c", "budget": 10, "batch_size": 5,
        "data": {"pool": {"path": "pool.jsonl"}},
        "oracle": oracle,
    }


def test_defaults_keep_todays_behaviour():
    o = OracleConfig()
    assert (o.kind, o.prelabel, o.preselect_min_confidence, o.prelabel_shots) == ("simulated", "model", 0.5, 4)
    assert (o.mixed.max_error, o.mixed.audit_share, o.mixed.annotator, o.mixed.export_auto) == (0.02, 0.1, "llm-auto", True)
    assert o.gold and not o.people
    assert OracleConfig(kind="human").people
    # a stored config lists every key: it validates again as it was
    again = CampaignConfig.model_validate(CampaignConfig.model_validate(campaign(kind="human")).model_dump(mode="json"))
    assert again.oracle == OracleConfig(kind="human")


def test_mixed_decides_who_answers_the_rest():
    assert OracleConfig(kind="mixed").people  # human: human by default
    sim = OracleConfig(kind="mixed", human="simulated")
    assert sim.gold and not sim.people


@pytest.mark.parametrize(
    ("oracle", "message"),
    [
        ({"kind": "mixed", "prelabel": "none"}, "oracle.kind mixed accepts proposals: set oracle.prelabel to model, llm or pooled"),
        ({"kind": "mixed", "overlap": 2}, "oracle.kind mixed needs oracle.overlap 1"),
        ({"kind": "human", "human": "simulated"}, "oracle.human applies to oracle.kind mixed only (kind is 'human')"),
        ({"mixed": {"max_error": 0.1}}, "oracle.mixed applies to oracle.kind mixed only (kind is 'simulated')"),
        ({"kind": "mixed", "mixed": {"max_error": 0}}, "greater than 0"),
        ({"kind": "mixed", "mixed": {"audit_share": 1}}, "less than 1"),
        ({"kind": "mixed", "mixed": {"surprise": 1}}, "Extra inputs are not permitted"),
        ({"preselect_min_confidence": 1.5}, "less than or equal to 1"),
        ({"prelabel": "gpt"}, "'none', 'model', 'llm' or 'pooled'"),
        ({"prelabel_shots": -1}, "greater than or equal to 0"),
    ],
)
def test_bad_oracle_settings_say_what_is_wrong(oracle, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        OracleConfig(**oracle)


def test_mixed_needs_classification_and_gold_when_simulated():
    with pytest.raises(ValidationError, match="oracle.kind mixed auto-accepts confident class labels: it needs task classification"):
        CampaignConfig.model_validate({
            **campaign(kind="mixed"), "task": "generation", "trainer": {"kind": "sft"},
            "strategy": {"name": "token_entropy"}, "cold_start": {"name": "random"},
        })
    bad = campaign(kind="mixed", human="simulated")
    bad["data"]["label_field"] = None
    with pytest.raises(ValidationError, match="oracle.human 'simulated' needs data.label_field"):
        CampaignConfig.model_validate(bad)
