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


# ------------------------------------------------------------------ YAML alias bombs
def _bomb(levels: int = 9, width: int = 9) -> str:
    """``levels`` anchored lists, each holding ``width`` aliases of the one before: width^levels nodes."""
    rows = ["    - &a0 [" + ", ".join(["laughing-out-loud-" * 3] * width) + "]"]
    rows += [f"    - &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(rows) + "\n"


_MEASURE = """
import json, resource, sys, time
from alft.config import load_config
from alft.errors import ConfigError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    load_config(sys.argv[1])
    message = None
except ConfigError as exc:
    message = str(exc)
seconds = time.perf_counter() - t0
grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"message": message, "seconds": seconds, "grown_kb": grown_kb}))
"""


@pytest.mark.parametrize(
    "where, expected",
    [
        ("data:\n  pool: {path: pool.jsonl}\n  labels:\n", r"line 6: 'data.labels' expands to 490,329,055 nodes through aliases \(at most 100,000\)"),
        ("data:\n  pool: {path: pool.jsonl}\nlaughs:\n", r"line 6: unknown key 'laughs' \(and it expands to 490,329,055 YAML nodes"),
    ],
    ids=["under data.labels", "under an unknown key"],
)
def test_a_yaml_alias_bomb_is_refused_at_once_in_little_memory(tmp_path, where, expected):
    """1 KB, 9 levels of 9 aliases: refused before anything is expanded (it used to grow without bound)."""
    import json
    import re
    import subprocess
    import sys

    p = write(tmp_path, "name: demo\nbudget: 300\nbatch_size: 50\n" + where + _bomb())
    assert 900 < p.stat().st_size < 1200
    # a subprocess: its peak RSS is its own, and a hang ends at the timeout (a failure, not a stuck suite)
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(p)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["message"] is not None and "\n" not in got["message"]
    assert got["message"].startswith(f"{p} line ") and re.search(expected, got["message"]), got["message"]
    assert got["seconds"] < 1.0, got
    assert got["grown_kb"] < 20_000, got  # 20 MB: the refusal builds nothing of the expansion


@pytest.mark.timeout(60)  # unguarded, the expansion ran until memory ran out
def test_an_alias_bomb_in_a_set_value_and_a_recursive_alias_are_refused(tmp_path):
    inline = "[" + ", ".join(["&a0 [x, x, x, x, x, x, x, x, x]"] + [
        f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)
    ]) + "]"
    with pytest.raises(ConfigError, match=r"^--set data\.labels: the YAML expands to 490,329,055 nodes through aliases"):
        load_config(write(tmp_path, GOOD), [f"data.labels={inline}"])
    with pytest.raises(ConfigError, match=r"c.yaml line 7: a YAML alias refers to a node that contains it \(recursive\)"):
        load_config(write(tmp_path, GOOD + "strategy: &s\n  options: {again: *s}\n"))
    with pytest.raises(ConfigError, match=r"the YAML nests too deeply"):
        load_config(write(tmp_path, GOOD + "tags: " + "[" * 2000 + "]" * 2000 + "\n"))


def test_configs_with_a_few_anchors_and_a_merge_key_still_load(tmp_path):
    from alft.config.loading import MAX_YAML_NODES

    text = GOOD.replace(
        "  pool: {path: pool.jsonl}\n  eval: {path: eval.jsonl}\n",
        "  pool: &split {path: pool.jsonl, format: json}\n  eval:\n    <<: *split\n    path: eval.jsonl\n"
        "  labels: &labels [l, m, n]\n",
    ) + "zero_shot:\n  template: 'about {label}'\n"
    cfg = load_config(write(tmp_path, text))
    assert cfg.data.eval.path == str((tmp_path / "eval.jsonl").resolve()) and cfg.data.eval.format == "json"
    assert cfg.data.pool.format == "json" and list(cfg.data.labels) == ["l", "m", "n"]
    # the limit counts expanded nodes: a wide label list written out in full is far below it
    many = "[" + ", ".join(f"label{i}" for i in range(5000)) + "]"
    assert len(load_config(write(tmp_path, GOOD), [f"data.labels={many}"]).data.labels) == 5000 < MAX_YAML_NODES


def test_finetune_config_differs_from_the_default_only_in_selection():
    """conf/banking77_finetune.yaml is the shipped BANKING77 campaign with the selection that
    transferred to fine-tuned targets: nothing else may drift from conf/banking77.yaml."""
    from alft.campaign.tracking import flatten  # the config as MLflow params: one string per leaf

    base = flatten(load_config(REPO / "conf" / "banking77.yaml").model_dump())
    tuned = flatten(load_config(REPO / "conf" / "banking77_finetune.yaml").model_dump())
    changed = {k for k in base.keys() | tuned.keys() if base.get(k) != tuned.get(k)}
    assert tuned["strategy.name"] == "badge" and tuned["trainer.head.semi_supervised"] == "null"
    assert base["strategy.name"] != "badge"
    semi = {k for k in changed if k.startswith("trainer.head.semi_supervised")}
    assert changed - semi == {"name", "workdir", "strategy.name"}
    assert tuned["target.trainer.kind"] == "transformer"
