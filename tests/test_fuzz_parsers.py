"""Fuzz the parsers of user input: a clear error (ConfigError / LabelError) or a valid parse, never a crash.

* the campaign config (``alft.config.load_config``): arbitrary text, arbitrary YAML
  mappings over the real keys, and ``--set`` overrides;
* the label-import parsers (``alft.labelfiles``, ``alft.labelstudio``) up to the store:
  whatever a file holds, the import either writes a valid submission or writes nothing.

``tests/test_labelfiles.py`` and ``tests/test_labelstudio.py`` fuzz the readers alone; here
the whole import path runs against a campaign store and its label events are compared.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from alft.config import CampaignConfig, load_config
from alft.errors import AlftError, ConfigError
from alft.human.files import check_campaign, file_round, group_by_annotator, load_label_file
from alft.human.labeling import LabelItem, submit_many
from alft.human.labelstudio import from_export
from tests.conftest import pending_store

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

GOOD = {
    "name": "fuzz",
    "budget": 300,
    "batch_size": 50,
    "data": {"pool": {"path": "pool.jsonl"}, "eval": {"path": "eval.jsonl"}},
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz-config")
    (d / "pool.jsonl").write_text('{"id": "a", "text": "x", "label": "l"}\n')
    (d / "eval.jsonl").write_text('{"id": "b", "text": "y", "label": "l"}\n')
    return d


def load_text(folder: Path, text: str | bytes, overrides: list[str] | None = None):
    p = folder / "c.yaml"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = load_config(p, overrides)
    except ConfigError as exc:
        assert str(exc).strip()
        event("ConfigError")
        return None
    event("valid config")
    assert isinstance(cfg, CampaignConfig)
    assert cfg.budget >= cfg.first_batch > 0
    return cfg


# ------------------------------------------------------------------ config: arbitrary text
@FUZZ
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_arbitrary_text_is_a_config_or_a_config_error(folder, text):
    load_text(folder, text)


@FUZZ
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_are_a_config_or_a_config_error(folder, data):
    load_text(folder, data)


_yaml_bits = st.sampled_from(
    ["name: fuzz\n", "budget: 300\n", "batch_size: 50\n", "data:\n", "  pool: {path: pool.jsonl}\n",
     "  pool:\n    path: pool.jsonl\n", "  eval: {path: eval.jsonl}\n", "strategy: {name: margin}\n",
     "strategy:\n  name: kmeans\n  options: {niter: 3}\n", "  - a\n", "- b\n", "&a x: *a\n", "!!python/object:os.system {}\n",
     "key: [1, 2\n", "'unterminated\n", "\t\n", "budget: 1e400\n", "seed: -1\n", "seed: 0x10\n", "seed: .inf\n",
     "workdir: ${NOPE_UNSET}\n", "workdir: '${HOME:-x}'\n", "? complex\n: key\n", "<<: {budget: 3}\n",
     "initial_size: 0\n", "task: generation\n", "trainer: {kind: sft}\n", "model: {max_length: 9999999}\n",
     "stop: {target: {value: 2}}\n", "oracle: {kind: human, min_fraction: 0.5}\n", "data: 3\n", "null\n", "~\n",
     "zero_shot: {}\n", "zero_shot: {descriptions: nope.json}\n", "name: \"a\\0b\"\n", "data:\n  labels: [a]\n"]
)


@FUZZ
@given(parts=st.lists(_yaml_bits, max_size=10))
def test_spliced_yaml_is_a_config_or_a_config_error(folder, parts):
    load_text(folder, "".join(parts))


# ------------------------------------------------------------------ config: arbitrary mappings
KEYS = {
    (): ["name", "seed", "budget", "batch_size", "initial_size", "workdir", "data", "model", "strategy", "task",
         "cold_start", "zero_shot", "trainer", "oracle", "stop", "tracking", "store", "extra"],
    ("data",): ["pool", "eval", "id_field", "text_field", "label_field", "instruction_field", "input_field",
                "candidate_field", "labels"],
    ("model",): ["path", "max_length", "batch_size", "num_threads", "cache_dir", "embeddings"],
    ("strategy",): ["name", "options", "dedup", "control_share"],
    ("trainer",): ["kind", "mc_samples", "head", "transformer", "sft"],
    ("oracle",): ["kind", "annotator", "wait", "timeout_s", "poll_s", "overlap", "resolve", "adjudicator",
                  "min_fraction", "deadline_s"],
    ("stop",): ["max_rounds", "plateau", "target", "stabilizing", "uncertainty", "forecast"],
    ("tracking",): ["uri", "experiment", "artifact_location", "log_models", "registered_model"],
}
_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(0, 400), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["margin", "kmeans", "entropy", "bald", "random", "head", "transformer", "sft", "generation",
                     "classification", "pool.jsonl", "eval.jsonl", "human", "simulated", "accuracy", "rouge_l",
                     "${HOME}", "${UNSET_ALFT_FUZZ}", "packaged:all-MiniLM-L6-v2", "sqlite:///x.db", "\x00", "-1"]),
)
_value = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.one_of(st.text(string.ascii_lowercase + "_", max_size=10), st.sampled_from(
        ["name", "path", "options", "niter", "k", "C", "value", "metric", "patience", "head", "lora", "r"])), inner,
        max_size=4),
    max_leaves=12,
)


@st.composite
def mutated_config(draw):
    """The good config with a few keys (known ones, mostly) set to arbitrary values."""
    doc = json.loads(json.dumps(GOOD))
    for _ in range(draw(st.integers(0, 3))):
        parent = draw(st.sampled_from(sorted(KEYS)))
        key = draw(st.sampled_from(KEYS[parent]))
        node = doc
        for part in parent:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[key] = draw(_value)
    return doc


@FUZZ
@given(doc=mutated_config())
def test_mutated_mappings_are_a_config_or_a_config_error(folder, doc):
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        assume(False)
    load_text(folder, text)


_override_key = st.sampled_from(
    ["budget", "seed", "name", "strategy.name", "strategy.options.niter", "strategy", "data.pool.path", "data",
     "model.max_length", "trainer.kind", "stop.plateau.patience", "budget.x", "a..b", "", "data.labels", "task"]
)


@FUZZ
@given(items=st.lists(st.one_of(
    st.tuples(_override_key, st.text(max_size=10)).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.sampled_from(["budget=400", "strategy.name=entropy", "seed=5", "stop.max_rounds=3", "strategy={name: bald}",
                     "data.labels=[a, b]", "model.max_length=64", "trainer.head.C=2"]),
    st.text(max_size=12),
), max_size=4))
def test_arbitrary_overrides_are_a_config_or_a_config_error(folder, items):
    load_text(folder, yaml.safe_dump(GOOD), items)


# ------------------------------------------------------------------ label imports, up to the store
LABELS = ["x", "y", "z"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A campaign "c" whose round 1 batch (e1..e4) waits for labels.

    Shared by every example: accepted imports add events (the batch stays pending until its
    labels step runs), so later examples also meet retries, undos and changed votes.
    """
    return pending_store(tmp_path_factory.mktemp("fuzz-store") / "c.db", LABELS)


def import_file(store, path: Path, fmt: str):
    """What `alft labels import` does: parse, group, one all-or-nothing submission."""
    before = store.label_events("c")
    try:
        if fmt == "label-studio":
            rows = from_export(path)
        else:
            rows = load_label_file(path, fmt).rows
        check_campaign(rows, "c")
        groups = group_by_annotator(rows, "fuzzer")
        result = submit_many(
            store, "c", [(a, [LabelItem(r.example_id, r.label, r.kind) for r in rs]) for a, rs in groups.items()],
            source="file", label_set=LABELS, round_=file_round(rows),
        )
    except AlftError as exc:  # LabelError, LabelRejected, NoPendingBatch
        assert str(exc).strip()
        assert store.label_events("c") == before, "a refused import wrote label events"
        event(f"refused: {type(exc).__name__}")
        return None
    event("accepted")
    after = store.label_events("c")
    assert len(after) == len(before) + result.written
    new = after[len(before):]
    assert all(e["round"] == 1 and e["example_id"] in {"e1", "e2", "e3", "e4"} for e in new)
    assert all(e["label"] in LABELS for e in new if e["kind"] == "label")
    assert all(r.campaign in (None, "c") for r in rows)
    return result


_row = st.fixed_dictionaries(
    {"id": st.sampled_from(["e1", "e2", "e3", "e4", "e9", "", " ", "e1\x00"]) | st.text(max_size=4)},
    optional={
        "label": st.sampled_from(LABELS + ["", "w", None]) | st.integers() | st.text(max_size=3),
        "kind": st.sampled_from(["label", "retract", "unsure", "maybe", None]),
        "round": st.sampled_from([0, 1, 2, -1, "1", "one", None, True, 2**70]),
        "annotator": st.sampled_from(["ann", "", None, 3, "x" * 200]),
        "campaign": st.sampled_from(["c", "other", None, 3]),
    },
)


@FUZZ
@given(rows=st.lists(_row, max_size=5), junk=st.sampled_from(["", "\n", "{", "[1]\n", "\ufeff"]))
def test_jsonl_imports_write_a_valid_submission_or_nothing(store, tmp_path, rows, junk):
    f = tmp_path / "fuzz.jsonl"
    f.write_text(junk + "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8", errors="surrogatepass")
    import_file(store, f, "jsonl")


@FUZZ
@given(data=st.binary(max_size=300), fmt=st.sampled_from(["jsonl", "csv", "label-studio"]))
def test_arbitrary_bytes_import_nothing_or_a_valid_submission(store, tmp_path, data, fmt):
    f = tmp_path / ("fuzz.json" if fmt == "label-studio" else f"fuzz.{fmt}")
    f.write_bytes(data)
    import_file(store, f, fmt)


_cells = st.sampled_from(["id", "label", "kind", "round", "annotator", "campaign", "e1", "e2", "e9", "x", "y", "w",
                          "1", "0", "retract", "unsure", "", '"', '"a,b"', "c", "other"])


@FUZZ
@given(lines=st.lists(st.lists(_cells, min_size=1, max_size=5).map(",".join), max_size=6))
def test_csv_imports_write_a_valid_submission_or_nothing(store, tmp_path, lines):
    f = tmp_path / "fuzz.csv"
    f.write_text("\n".join(lines), encoding="utf-8")
    import_file(store, f, "csv")


_ls_keys = st.sampled_from(
    ["data", "alft_id", "alft_round", "alft_campaign", "annotations", "result", "was_cancelled", "completed_by",
     "email", "id", "from_name", "type", "value", "choices", "to_name"]
)
_ls_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["label", "choices", "e1", "e2", "x", "y", "w", "c"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_ls_keys, inner, max_size=5),
    max_leaves=30,
)


def _task(ex, lab, who):
    return {"id": 1, "data": {"text": "t", "alft_id": ex, "alft_round": 1}, "annotations": [
        {"id": 1, "completed_by": who, "was_cancelled": False,
         "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [lab]}}]}]}


@FUZZ
@given(obj=st.one_of(
    _ls_values,
    st.lists(st.builds(_task, st.sampled_from(["e1", "e2", "e9", ""]), st.sampled_from(LABELS + ["w"]),
                       st.sampled_from([1, {"id": 2, "email": "a@b"}, None, "x"])), max_size=4),
))
def test_label_studio_imports_write_a_valid_submission_or_nothing(store, tmp_path, obj):
    f = tmp_path / "fuzz.json"
    f.write_text(json.dumps(obj), encoding="utf-8")
    import_file(store, f, "label-studio")
