"""Config validation: every shipped config loads; every bad one names the key, file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from alft.config import load_config, parse_overrides
from alft.errors import ConfigError
from tests.conftest import REPO

GOOD = """\
name: demo
budget: 300
batch_size: 50
data:
  pool: {path: pool.jsonl}
  eval: {path: eval.jsonl}
"""


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    (tmp_path / "pool.jsonl").write_text('{"id": "a", "text": "x", "label": "l"}\n')
    (tmp_path / "eval.jsonl").write_text('{"id": "b", "text": "y", "label": "l"}\n')
    return p


@pytest.mark.parametrize("path", sorted((REPO / "conf").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path, monkeypatch):
    monkeypatch.setenv("ALFT_GEN_MODEL", "/models/any-causal-lm")  # self_instruct.yaml names its model so
    cfg = load_config(path)
    assert cfg.name == path.stem.replace("_", "-") or cfg.name
    assert Path(cfg.data.pool.path).exists(), cfg.data.pool.path


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.data.pool.path == str((tmp_path / "pool.jsonl").resolve())
    assert cfg.first_batch == 50  # initial_size defaults to batch_size


def test_unknown_key_names_key_file_and_line(tmp_path):
    p = write(tmp_path, GOOD + "strategy:\n  name: margin\n  optoins: {}\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert f"{p} line 9: unknown key 'strategy.optoins'" in msg


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match=r"line 7: unknown key 'budgett'"):
        load_config(write(tmp_path, GOOD + "budgett: 3\n"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("batch_size=-5", r"batch_size: Input should be greater than 0 \(got -5\)"),
        ("budget=0", r"budget: Input should be greater than 0"),
        ("budget=10", r"budget \(10\) is smaller than one batch \(initial_size=50\)"),
        ("seed=abc", r"seed: Input should be a valid integer"),
        ("strategy.name=marginn", r"unknown strategy 'marginn' \(known: .*margin"),
        ("strategy={name: margin, options: {foo: 1}}", r"strategy 'margin' has no option 'foo'"),
        ("cold_start.name=entropy", r"cold_start: strategy .entropy. needs probs from a trained model"),
        ("trainer.kind=svm", r"trainer.kind: Input should be 'head', 'transformer' or 'sft'"),
        ("name=Bad Name", r"name: String should match pattern"),
        ("stop.plateau.patience=0", r"stop.plateau.patience: Input should be greater than or equal to 1"),
        ("model.max_length=3", r"model.max_length: Input should be greater than or equal to 8"),
    ],
)
def test_bad_values_are_named(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(write(tmp_path, GOOD), [override])
    assert "--set" in str(err.value) or "c.yaml" in str(err.value)


def test_metric_stop_rules_need_eval(tmp_path):
    text = GOOD.replace("  eval: {path: eval.jsonl}\n", "") + "stop: {target: {value: 0.9}}\n"
    with pytest.raises(ConfigError, match="stop.plateau, stop.target and stop.forecast need data.eval"):
        load_config(write(tmp_path, text))


def test_overrides_apply_before_validation(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), ["budget=500", "strategy.name=entropy", "stop.max_rounds=4"])
    assert (cfg.budget, cfg.strategy.name, cfg.stop.max_rounds) == (500, "entropy", 4)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["budget"])
    with pytest.raises(ConfigError, match="empty key"):
        parse_overrides(["a..b=1"])


def test_override_into_a_scalar_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="'budget' is not a mapping"):
        load_config(write(tmp_path, GOOD), ["budget.x=1"])


def test_environment_variables_expand(tmp_path, monkeypatch):
    monkeypatch.setenv("ALFT_TEST_STORE", "sqlite:////tmp/x.db")
    text = GOOD + "store: {url: '${ALFT_TEST_STORE}'}\ntracking: {experiment: '${ALFT_UNSET_VAR:-fallback}'}\n"
    cfg = load_config(write(tmp_path, text))
    assert cfg.store.url == "sqlite:////tmp/x.db"
    assert cfg.tracking.experiment == "fallback"


def test_unset_environment_variable_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"\$\{ALFT_SURELY_UNSET\} is not set"):
        load_config(write(tmp_path, GOOD + "store: {url: '${ALFT_SURELY_UNSET}'}\n"))


def test_malformed_yaml_names_line(tmp_path):
    with pytest.raises(ConfigError, match=r"line 2 column 10: malformed YAML: mapping values are not allowed"):
        load_config(write(tmp_path, "name: a\nbudget: 3: 4\n"))


def test_empty_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="the file is empty"):
        load_config(write(tmp_path, ""))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_missing_required_key(tmp_path):
    with pytest.raises(ConfigError, match="missing required key 'budget'"):
        load_config(write(tmp_path, GOOD.replace("budget: 300\n", "")))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_non_utf8_config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)


def test_label_list_checks(tmp_path):
    with pytest.raises(ConfigError, match="duplicate labels"):
        load_config(write(tmp_path, GOOD), ["data.labels=[a, b, a]"])
    with pytest.raises(ConfigError, match="at least 2 labels"):
        load_config(write(tmp_path, GOOD), ["data.labels=[a]"])
