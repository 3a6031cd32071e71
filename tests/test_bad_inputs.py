"""The bad-input catalogue: each bad input fails with one message naming the problem and where, and changes nothing.

One table per route a user's input takes:

* ``RUN``: ``alft run CONFIG`` on top of a campaign folder that already holds a campaign
  (its store must keep its exact bytes, and the folder gain no file);
* ``UNREADABLE``: the same, with files and folders the process may not read or write
  (``chmod``; as root, in a subprocess without the capabilities that bypass permissions);
* ``RESUME``: a config that does not match the campaign it would resume (refused);
* ``IMPORT``: ``alft labels import FILE CONFIG`` on a campaign waiting for labels (its label
  events and store must stay as they were).

Each entry: how to build the input, the regex the one ``error:`` line must match, and what
must stay unchanged. Other bad inputs are tested where their parser lives: ``test_cli.py``
(CASES), ``test_config.py``, ``test_data.py``, ``test_labelfiles.py`` (ERRORS),
``test_labelstudio.py`` (EXPORT_ERRORS); ``test_fuzz_parsers.py`` fuzzes the parsers.

Decided here (documented in README, "Reliability"): a text longer than ``model.max_length``
tokens is not an error; it is truncated to its first ``max_length`` tokens, and the embed
step says how many texts reached the limit (``test_a_huge_text_is_truncated_and_said``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from alft.cli import app
from alft.config import load_config
from alft.store.campaign_store import CampaignStore
from tests.conftest import REPO, campaign_yaml, read_jsonl, write_jsonl

runner = CliRunner()


# ------------------------------------------------------------------ the setting
@dataclass
class Env:
    """What a case builds its input from: real data and model, and a folder of its own."""

    tmp: Path
    files: dict[str, Path]
    model: Path
    workdir: Path  # the existing campaign's folder

    def config(self, files: dict[str, Path] | None = None, model: Path | None = None, **over) -> Path:
        """A campaign config for the existing campaign ("kept"), top-level keys replaced by ``over``."""
        d = self.tmp / "bad"
        d.mkdir(exist_ok=True)
        over.setdefault("workdir", str(self.workdir))
        return campaign_yaml(d, files or self.files, model or self.model, name="kept", **over)

    def yaml_text(self, text: str) -> Path:
        d = self.tmp / "bad"
        d.mkdir(exist_ok=True)
        p = d / "campaign.yaml"
        p.write_text(text, encoding="utf-8")
        return p

    def edit(self, mutate: Callable[[dict], None], **over) -> Path:
        """A config whose parsed mapping ``mutate`` changed (nested keys)."""
        p = self.config(**over)
        doc = yaml.safe_load(p.read_text())
        mutate(doc)
        p.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
        return p

    def pool(self, mutate: Callable[[list[dict]], None] | None = None, raw: bytes | None = None, name: str = "pool.jsonl"):
        """Files with a changed pool: rows edited by ``mutate``, or ``raw`` bytes."""
        p = self.tmp / "data" / name
        p.parent.mkdir(exist_ok=True)
        if raw is not None:
            p.write_bytes(raw)
        else:
            rows = read_jsonl(self.files["pool"])
            mutate(rows)
            write_jsonl(p, rows)
        return {**self.files, "pool": p}

    def file(self, name: str, data: bytes) -> Path:
        p = self.tmp / "data" / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        return p

    def model_copy(self, change: Callable[[Path], None]) -> Path:
        m = self.tmp / "model"
        shutil.copytree(self.model, m)
        change(m)
        return m


@dataclass(frozen=True)
class Case:
    build: Callable[[Env], Path]  # -> the config to run
    message: str  # regex the one error line must match (newlines folded)
    kept: str = "the store's bytes and the campaign folder's files"


def _latin1_pool(env: Env) -> dict:
    text = env.files["pool"].read_text(encoding="utf-8").replace("card", "caf\u00e9", 1)
    return env.pool(raw=text.encode("latin-1"))


def _generation_with_margin(env: Env) -> Path:
    return env.edit(
        lambda d: d["data"].pop("labels"), task="generation", trainer={"kind": "sft"}, strategy={"name": "margin"}
    )


RUN: dict[str, Case] = {
    # --- the config file
    "malformed YAML": Case(
        lambda e: e.yaml_text("name: kept\nbudget: [60\nbatch_size: 20\n"),
        r"campaign.yaml line \d+ column \d+: malformed YAML",
    ),
    "a YAML list, not a mapping": Case(
        lambda e: e.yaml_text("- name: kept\n- budget: 60\n"), r"campaign.yaml: top level must be a mapping of keys, got list"
    ),
    "unknown key": Case(lambda e: e.config(budgett=60), r"campaign.yaml line \d+: unknown key 'budgett'"),
    "unknown nested key": Case(
        lambda e: e.edit(lambda d: d["model"].update(max_lenght=64)), r"campaign.yaml line \d+: unknown key 'model.max_lenght'"
    ),
    "wrong type (seed: abc)": Case(
        lambda e: e.config(seed="abc"), r"campaign.yaml line 2: seed: Input should be a valid integer.*\(got 'abc'\)"
    ),
    "wrong type (strategy a string)": Case(
        lambda e: e.config(strategy="margin"), r"campaign.yaml line \d+: strategy: Input should be a valid dictionary"
    ),
    "negative batch": Case(
        lambda e: e.config(batch_size=-5), r"campaign.yaml line \d+: batch_size: Input should be greater than 0 \(got -5\)"
    ),
    "zero budget": Case(lambda e: e.config(budget=0), r"campaign.yaml line \d+: budget: Input should be greater than 0 \(got 0\)"),
    "a number out of range (max_length 3)": Case(
        lambda e: e.edit(lambda d: d["model"].update(max_length=3)),
        r"campaign.yaml line \d+: model.max_length: Input should be greater than or equal to 8",
    ),
    "a share out of range (control_share 1)": Case(
        lambda e: e.config(strategy={"name": "margin", "control_share": 1.0}),
        r"line \d+: strategy.control_share: Input should be less than 1 \(got 1.0\)",
    ),
    "a strategy option of the wrong type": Case(
        lambda e: e.config(cold_start={"name": "kmeans", "options": {"niter": "many"}}),
        r"campaign.yaml: cold_start: kmeans option niter must be an integer >= 1, got 'many'",
    ),
    "a strategy needing probabilities in a generation campaign": Case(
        _generation_with_margin,
        r"strategy: strategy 'margin' needs probs, which a generation model does not give",
    ),
    "a cold start needing probabilities before any model": Case(
        lambda e: e.config(cold_start={"name": "entropy"}),
        r"cold_start: strategy 'entropy' needs probs from a trained model, which does not exist before the first labels",
    ),
    "an unset environment variable": Case(
        lambda e: e.config(tracking={"experiment": "${ALFT_SURELY_UNSET_VAR}"}),
        r"campaign.yaml line \d+: 'tracking.experiment': environment variable \$\{ALFT_SURELY_UNSET_VAR\} is not set",
    ),
    "a NUL byte in a path": Case(
        lambda e: e.edit(lambda d: d["data"]["pool"].update(path=d["data"]["pool"]["path"] + "\x00.jsonl")),
        r"campaign.yaml line \d+: 'data.pool.path' holds a NUL byte",
    ),
    "duplicate labels in the config": Case(
        lambda e: e.edit(lambda d: d["data"].update(labels=["a", "b", "a"])), r"data.labels: .*duplicate labels: \['a'\]"
    ),
    "a metric stop rule without eval data": Case(
        lambda e: e.edit(lambda d: d["data"].pop("eval"), stop={"target": {"value": 0.9}}),
        r"stop.plateau, stop.target and stop.forecast need data.eval",
    ),
    # --- the data files
    "pool file missing": Case(
        lambda e: e.config(files={**e.files, "pool": e.tmp / "nope.jsonl"}), r"data file not found: .*nope.jsonl"
    ),
    "pool is a folder, not a dataset": Case(
        lambda e: e.config(files={**e.files, "pool": e.tmp}), r"pool data .*: .*neither a `Dataset` directory"
    ),
    "pool file empty (0 bytes)": Case(
        lambda e: e.config(files=e.pool(raw=b"")), r"pool data .*pool.jsonl: the file is empty"
    ),
    "empty pool (blank lines only)": Case(
        lambda e: e.config(files=e.pool(raw=b"\n\n  \n")), r"pool data .*pool.jsonl: no rows \(the file holds no records\)"
    ),
    "empty pool (a CSV header only)": Case(
        lambda e: e.config(files=e.pool(raw=b"id,text,label\n", name="pool.csv")),
        r"pool data .*pool.csv: no rows \(the file holds no records\)",
    ),
    "pool in Latin-1, not UTF-8": Case(
        lambda e: e.config(files=_latin1_pool(e)),
        r"pool data .*pool.jsonl line \d+, column \d+: not UTF-8 \(byte 0xe9\); re-encode the file as UTF-8",
    ),
    "pool JSONL malformed": Case(
        lambda e: e.config(files=e.pool(raw=b'{"id": "a", "text": "x", "label": "l"}\n{"id": "b", "text": \n')),
        r"pool data .*pool.jsonl line 2, column \d+: not valid JSON \(Expecting value\); one JSON object per line",
    ),
    "a text that is binary (NUL bytes)": Case(
        lambda e: e.config(files=e.pool(lambda rows: rows[3].update(text="PK\x03\x04\x00\x00binary"))),
        r"pool data .*: 1 values of 'text' hold NUL bytes \(binary data\?\): row 4 \(id '",
    ),
    "a text that is a number": Case(
        lambda e: e.config(files=e.pool(lambda rows: rows[6].update(text=12))),
        r"pool data .*: column 'text' must hold text; 1 rows do not: row 7",
    ),
    "an empty text": Case(
        lambda e: e.config(files=e.pool(lambda rows: rows[2].update(text="  "))), r"1 empty texts: row 3 \(id '"
    ),
    "a missing id": Case(
        lambda e: e.config(files=e.pool(lambda rows: rows[9].update(id=None))), r"pool data .*: 1 rows have no id: row 10"
    ),
    "duplicate ids": Case(
        lambda e: e.config(files=e.pool(lambda rows: rows[7].update(id=rows[1]["id"]))),
        r"1 duplicate ids; first '.*' at rows 2 and 8",
    ),
    "a gold label not in the label set (eval)": Case(
        lambda e: e.config(files={**e.files, "eval": e.file("eval.jsonl", "".join(
            json.dumps({**r, "label": "refund_please"} if i == 4 else r) + "\n"
            for i, r in enumerate(read_jsonl(e.files["eval"]))).encode())}),
        r"eval data .*eval.jsonl: 1 rows have labels not in the label set \(8 labels\): 'refund_please'; first at row 5",
    ),
    "eval file missing": Case(
        lambda e: e.config(files={**e.files, "eval": e.tmp / "no-eval.jsonl"}), r"data file not found: .*no-eval.jsonl"
    ),
    "label set file missing": Case(
        lambda e: e.config(files={**e.files, "labels": e.tmp / "no-labels.json"}),
        r"data.labels file not found: .*no-labels.json",
    ),
    "label set file not JSON (Latin-1)": Case(
        lambda e: e.config(files={**e.files, "labels": e.file("labels.json", '["caf\u00e9", "b"]'.encode("latin-1"))}),
        r"data.labels file .*labels.json: not valid JSON",
    ),
    "label set file not a list": Case(
        lambda e: e.config(files={**e.files, "labels": e.file("labels.json", b'{"a": 1}')}),
        r"data.labels file .*labels.json: must hold a JSON list of non-empty strings",
    ),
    "a pool smaller than the first batch": Case(
        lambda e: e.config(files=e.pool(lambda rows: rows.__delitem__(slice(5, None)))),
        r"pool data .*: 5 rows, fewer than the first batch \(20\)",
    ),
    # --- the model folder
    "model folder without weights": Case(
        lambda e: e.config(model=e.model_copy(lambda m: (m / "model.safetensors").unlink())),
        r"model folder .*model holds no weights \(model.safetensors or pytorch_model.bin\)",
    ),
    "model folder without its tokenizer": Case(
        lambda e: e.config(model=e.model_copy(lambda m: [p.unlink() for p in m.glob("tokenizer*")])),
        r"model folder .*model holds no tokenizer",
    ),
    "model folder with a broken config.json": Case(
        lambda e: e.config(model=e.model_copy(lambda m: (m / "config.json").write_text('{"model_type": "bert",'))),
        r"model folder .*model: config.json cannot be read",
    ),
    "model folder without config.json": Case(
        lambda e: e.config(model=e.model_copy(lambda m: (m / "config.json").unlink())),
        r"model folder .*model has no config.json",
    ),
    "model path is a file": Case(
        lambda e: e.config(model=e.files["pool"]), r"model path .*pool.jsonl is a file; it must be a model folder"
    ),
    # --- the campaign folder
    "campaign folder is a file": Case(
        lambda e: e.config(workdir=str(e.files["pool"])), r"campaign folder .*pool.jsonl is a file, not a folder"
    ),
}


@pytest.fixture
def env(tmp_path, banking_subset, tiny_model) -> Env:
    """A campaign folder that already holds campaign "kept" with labels (bad runs must not touch it)."""
    workdir = tmp_path / "kept"
    cfg = load_config(campaign_yaml(tmp_path, banking_subset, tiny_model, name="kept", workdir=str(workdir)))
    store = CampaignStore(cfg.store_url())
    with store.transaction() as conn:
        store.create_campaign(
            conn, name="kept", uid="u", config={}, seed=3, pool_digest="x", pool_size=1,
            eval_digest=None, labels=["a", "b"], model_digest="m",
        )
        store.add_label_events(conn, "kept", 0, [("e1", "a")], "human", "page")
    store.close()
    return Env(tmp=tmp_path, files=banking_subset, model=tiny_model, workdir=workdir)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (a missing folder: nothing) with its SHA-256.

    SQLite's shared-memory index (``-shm``) and an empty write-ahead log (``-wal``) are
    what a reader leaves while its connection is open: they hold no data, so they are left out.
    """
    if not folder.exists():
        return {}
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.name.endswith("-shm") or (p.name.endswith("-wal") and p.stat().st_size == 0):
            continue
        out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def one_error(output: str, message: str) -> None:
    flat = " ".join(output.split())
    assert output.count("error:") == 1, output
    assert re.search(message, flat), f"{message!r} not in: {flat}"
    assert "Traceback" not in output, output


@pytest.mark.parametrize("case", list(RUN))
def test_bad_run_input(case, env):
    c = RUN[case]
    cfg = c.build(env)
    before = snapshot(env.workdir)
    res = runner.invoke(app, ["run", str(cfg)])
    assert res.exit_code == 2, res.output
    one_error(res.output, c.message)
    assert snapshot(env.workdir) == before, c.kept


# ------------------------------------------------------------------ permissions (chmod)
def unprivileged() -> list[str]:
    """A command prefix under which chmod is obeyed: as root, drop the capabilities that bypass it."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("running as root without setpriv (util-linux, a Debian base package): file permissions cannot be tested")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]


def _chmod(path: Path, mode: int) -> Path:
    path.chmod(mode)
    return path


def _unreadable_pool(env: Env) -> Path:
    files = env.pool(lambda rows: None)
    _chmod(files["pool"], 0o000)
    return env.config(files=files)


def _unreadable_config(env: Env) -> Path:
    return _chmod(env.config(), 0o000)


def _readonly_new_folder(env: Env) -> Path:
    parent = env.tmp / "readonly"
    parent.mkdir()
    cfg = env.config(workdir=str(parent / "campaign"))
    _chmod(parent, 0o555)
    return cfg


def _readonly_campaign_folder(env: Env) -> Path:
    cfg = env.config()
    _chmod(env.workdir, 0o555)  # the store inside stays writable: SQLite could not make its journal
    return cfg


UNREADABLE: dict[str, Case] = {
    "an unreadable pool file (chmod 000)": Case(_unreadable_pool, r"pool data .*pool.jsonl: cannot read \(Permission denied\)"),
    "an unreadable config file (chmod 000)": Case(_unreadable_config, r"campaign.yaml: cannot read \(Permission denied\)"),
    "a read-only folder for a new campaign": Case(
        _readonly_new_folder,
        r"campaign folder .*readonly/campaign cannot be created: .*readonly is not writable \(Permission denied\)",
    ),
    "a read-only campaign folder": Case(
        _readonly_campaign_folder,
        r"(campaign folder .*kept is not writable \(Permission denied\)|campaign store sqlite:///.*kept/campaign.db)",
    ),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_unreadable_or_read_only_input(case, env):
    prefix = unprivileged()
    c = UNREADABLE[case]
    try:
        cfg = c.build(env)
        before = snapshot(env.workdir)
        res = subprocess.run(
            [*prefix, sys.executable, "-m", "alft.cli", "run", str(cfg)],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )
        out = res.stdout + res.stderr
        assert res.returncode == 2, out
        one_error(out, c.message)
        assert snapshot(env.workdir) == before, c.kept
    finally:
        for p in (env.tmp / "readonly", env.workdir, env.tmp / "bad" / "campaign.yaml", env.tmp / "data" / "pool.jsonl"):
            if p.exists():
                p.chmod(0o755 if p.is_dir() else 0o644)


# ------------------------------------------------------------------ a resume that does not match
def _real_campaign(env: Env) -> None:
    """Make "kept" a campaign of the real data and model (the identity a resume compares)."""
    from alft.campaign.context import campaign_facts

    c = load_config(env.config())
    store = CampaignStore(c.store_url())
    with store.transaction() as conn:
        store.update_campaign(conn, "kept", **campaign_facts(c))
    store.close()


RESUME: dict[str, Case] = {
    "ids changed between runs": Case(
        lambda e: e.config(files=e.pool(lambda rows: rows[4].update(id=rows[4]["id"] + "-renamed"))),
        r"campaign 'kept' in sqlite:///.*was created with a different pool data \(ids or texts changed\); "
        r"keep the original settings to resume it",
    ),
    "a text changed between runs": Case(
        lambda e: e.config(files=e.pool(lambda rows: rows[0].update(text=rows[0]["text"] + "!"))),
        r"was created with a different pool data \(ids or texts changed\)",
    ),
    "rows removed between runs": Case(
        lambda e: e.config(files=e.pool(lambda rows: rows.pop())),
        r"was created with a different pool data \(ids or texts changed\), pool size",
    ),
    "another seed": Case(lambda e: e.config(seed=4), r"was created with a different seed;"),
    "another label set order": Case(
        lambda e: e.config(files={**e.files, "labels": e.file("labels.json", json.dumps(
            list(reversed(json.loads(e.files["labels"].read_text())))).encode())}),
        r"was created with a different label set;",
    ),
    "another model": Case(
        lambda e: e.config(model=e.model_copy(lambda m: (m / "config.json").write_text(
            (m / "config.json").read_text().replace("\n}", ',\n  "alft_note": 1\n}')))),
        r"was created with a different model \(weights, max_length or pooling\)",
    ),
}


@pytest.mark.parametrize("case", list(RESUME))
def test_a_resume_that_does_not_match_is_refused(case, env):
    _real_campaign(env)
    c = RESUME[case]
    cfg = c.build(env)
    before = snapshot(env.workdir)
    res = runner.invoke(app, ["run", str(cfg)])
    assert res.exit_code == 2, res.output
    one_error(res.output, c.message)
    assert snapshot(env.workdir) == before


# ------------------------------------------------------------------ label imports
@pytest.fixture(scope="module")
def waiting(tmp_path_factory, banking_subset, tiny_model):
    """A human-labeled campaign whose round 0 batch waits for labels, and its exported label files."""
    from tests.human.test_labelfiles import build_pending_campaign

    tmp = tmp_path_factory.mktemp("waiting")
    cfg = build_pending_campaign(tmp, banking_subset, tiny_model)
    for out in ("batch.csv", "batch.jsonl", "tasks.json"):
        res = runner.invoke(app, ["labels", "export", str(cfg), "--out", str(tmp / out)])
        assert res.exit_code == 0, res.output
    gold = {r["id"]: r["label"] for r in read_jsonl(banking_subset["pool"])}
    return {"cfg": cfg, "tmp": tmp, "gold": gold}


def _filled_jsonl(w, change: Callable[[list[dict]], None], name: str = "filled.jsonl") -> Path:
    rows = read_jsonl(w["tmp"] / "batch.jsonl")
    for r in rows:
        r["label"] = w["gold"][r["id"]]
        r["annotator"] = "ann"
    change(rows)
    return write_jsonl(w["tmp"] / "cases" / name, rows)


def _filled_tasks(w, change: Callable[[list[dict]], None]) -> Path:
    tasks = json.loads((w["tmp"] / "tasks.json").read_text(encoding="utf-8"))
    for i, t in enumerate(tasks):
        t["id"] = i + 1
        t["annotations"] = [{
            "id": i, "completed_by": {"id": 7, "email": "ann@example.com"}, "was_cancelled": False,
            "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                        "value": {"choices": [w["gold"][t["data"]["alft_id"]]]}}],
        }]
    change(tasks)
    p = w["tmp"] / "cases" / "export.json"
    p.parent.mkdir(exist_ok=True)
    p.write_text(json.dumps(tasks), encoding="utf-8")
    return p


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _rename_campaign(rows: list[dict]) -> None:
    for r in rows:
        r["campaign"] = "other-campaign"


def _ids_of_another_campaign(rows: list[dict]) -> None:
    for r in rows:
        r.pop("campaign")
        r["id"] = "other-" + r["id"]


IMPORT: dict[str, Case] = {
    "a label file exported from another campaign": Case(
        lambda w: _filled_jsonl(w, _rename_campaign),
        r"filled.jsonl line 1: the labels were exported from campaign 'other-campaign', not 'test-campaign'",
    ),
    "a label file holding another campaign's ids": Case(
        lambda w: _filled_jsonl(w, _ids_of_another_campaign),
        r"20 of 20 submitted labels refused, nothing was written.*'other-.*': not in the pending batch of round 0",
    ),
    "a label not in the label set": Case(
        lambda w: _filled_jsonl(w, lambda rows: rows[3].update(label="Card Arrival")),
        r"1 of 20 submitted labels refused, nothing was written.*label 'Card Arrival' is not in the label set",
    ),
    "a label file for a closed round": Case(
        lambda w: _filled_jsonl(w, lambda rows: [r.update(round=5) for r in rows]),
        r"stale submission: it is for round 5, the pending batch is round 0",
    ),
    "a label file without annotators": Case(
        lambda w: _filled_jsonl(w, lambda rows: [r.pop("annotator") for r in rows]), r"filled.jsonl line 1: no annotator: add an 'annotator' field or pass --annotator"
    ),
    "a label file in Latin-1": Case(
        lambda w: _write(w["tmp"] / "cases" / "latin1.csv", b"id,label,annotator\ne1,caf\xe9,ann\n"),
        r"latin1.csv line 2, column 7: not UTF-8 \(byte 0xe9\)",
    ),
    "a Label Studio export from another campaign": Case(
        lambda w: _filled_tasks(w, lambda t: [x["data"].update(alft_campaign="other-campaign") for x in t]),
        r"export.json task 1 \(id '.*'\) annotation 1: the labels were exported from campaign 'other-campaign'",
    ),
    "a Label Studio export without alft ids": Case(
        lambda w: _filled_tasks(w, lambda t: t[2]["data"].pop("alft_id")),
        r"export.json task 3: no data.alft_id: this task was not exported by `alft labels export`",
    ),
    "a Label Studio export without annotators": Case(
        lambda w: _filled_tasks(w, lambda t: t[0]["annotations"][0].pop("completed_by")),
        r"export.json task 1 \(id '.*'\) annotation 1: no annotator",
    ),
    "a Label Studio export without a result value": Case(
        lambda w: _filled_tasks(w, lambda t: t[1]["annotations"][0]["result"][0].pop("value")),
        r"export.json task 2 \(id '.*'\) annotation 1: the choices result has no 'value'",
    ),
}


@pytest.mark.parametrize("case", list(IMPORT))
def test_bad_label_import(case, waiting):
    c = IMPORT[case]
    (waiting["tmp"] / "cases").mkdir(exist_ok=True)
    path = c.build(waiting)
    cfg = load_config(waiting["cfg"])
    store = CampaignStore(cfg.store_url())
    before = (store.label_events(cfg.name), store.dump(cfg.name))
    res = runner.invoke(app, ["labels", "import", str(path), str(waiting["cfg"])])
    assert res.exit_code == 2, res.output
    one_error(res.output, c.message)
    assert (store.label_events(cfg.name), store.dump(cfg.name)) == before


def test_the_exports_name_their_campaign_and_import_back(waiting):
    """The good path of the same files: the campaign column is what lets the check above work."""
    rows = read_jsonl(waiting["tmp"] / "batch.jsonl")
    assert {r["campaign"] for r in rows} == {"test-campaign"}
    tasks = json.loads((waiting["tmp"] / "tasks.json").read_text(encoding="utf-8"))
    assert {t["data"]["alft_campaign"] for t in tasks} == {"test-campaign"}


# ------------------------------------------------------------------ a huge text: accepted, truncated, said
def test_a_huge_text_is_truncated_and_said(tmp_path, banking_subset, tiny_model, caplog):
    """A text far over model.max_length passes every check and embeds (its first max_length tokens)."""
    import logging

    import numpy as np

    from alft.campaign.context import embed_with_cache, embedding_cache
    from alft.data import load_campaign_data
    from alft.models.embedcache import text_keys

    rows = read_jsonl(banking_subset["pool"])
    rows[0]["text"] = "please " + "refund my card payment " * 20000  # ~460k characters
    files = {**banking_subset, "pool": write_jsonl(tmp_path / "pool.jsonl", rows)}
    path = campaign_yaml(tmp_path, files, tiny_model, name="huge")
    doc = yaml.safe_load(path.read_text())
    doc["model"].update(max_length=32, cache_dir=str(tmp_path / "cache"))
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)
    data = load_campaign_data(cfg)
    log = logging.getLogger("alft")  # the CLI stops it propagating: listen to it directly
    log.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="alft"):
            out = embed_with_cache(cfg, data.pool.texts[:40], "pool")
    finally:
        log.removeHandler(caplog.handler)
    assert out["embedded"] == 40
    assert re.search(r"embed pool: \d+ of 40 texts reach model.max_length \(32 tokens\); longer ones are truncated", caplog.text)
    short = rows[0]["text"][:300]  # still over 32 tokens: the same first 32
    embed_with_cache(cfg, [short], "short")
    vec = embedding_cache(cfg).get(text_keys([rows[0]["text"], short]))
    assert np.isfinite(vec).all()
    assert np.allclose(vec[0], vec[1], atol=1e-5)  # only the first 32 tokens count


# ------------------------------------------------------------------ settings from the environment
def test_tracking_retry_delays_from_the_environment(caplog):
    """``ALFT_TRACK_RETRY_DELAYS``: a list of seconds; anything else keeps the defaults, and says so."""
    import logging

    from tasks.track import DEFAULT_RETRY_DELAYS, _public_uri, retry_delays

    assert retry_delays("0.5,1, 2") == [0.5, 1.0, 2.0]
    assert retry_delays("none") == [] and retry_delays("") == []
    log = logging.getLogger("alft")  # the CLI stops it propagating: listen to it directly
    log.addHandler(caplog.handler)
    try:
        assert retry_delays("soon") == DEFAULT_RETRY_DELAYS
        assert retry_delays("-1") == DEFAULT_RETRY_DELAYS
    finally:
        log.removeHandler(caplog.handler)
    assert caplog.text.count("ALFT_TRACK_RETRY_DELAYS") == 2
    assert _public_uri("http://bob:s3cret@mlflow:5000") == "http://bob:***@mlflow:5000"
