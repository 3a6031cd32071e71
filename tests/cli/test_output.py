"""What the CLI prints for people and for files: the opening line of `alft run`, tables
through a pipe, and a Label Studio CSV export refused in one line."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from alft.cli import app as cli_app
from alft.config import load_config
from alft.store.campaign_store import CampaignStore
from tests.conftest import REPO, campaign_yaml
from tests.human.test_labelfiles import _store_of, build_pending_campaign, gold_of

runner = CliRunner()


# --------------------------------------------------------------------------- the opening line
@pytest.mark.parametrize("weights, shown", [(None, "head (class weights balanced)"), ("null", "head (class weights none)")])
def test_the_opening_line_says_the_heads_class_weighting(tmp_path, banking_subset, tiny_model, weights, shown):
    from rich.console import Console

    from alft.cli.run import _preflight

    over = [] if weights is None else [f"trainer.head.class_weight={weights}"]
    cfg = load_config(campaign_yaml(tmp_path, banking_subset, tiny_model), over)
    buf = io.StringIO()
    _preflight(cfg, Console(file=buf, width=400))
    first = buf.getvalue().splitlines()[0]
    assert first.startswith("campaign test-campaign: pool 240, eval 80, 8 labels; budget 60")
    assert f"; trainer {shown}; model {tiny_model}" in first


def test_the_opening_line_of_a_transformer_campaign_names_no_class_weighting(tmp_path, banking_subset, tiny_model):
    from rich.console import Console

    from alft.cli.run import _preflight

    cfg = load_config(campaign_yaml(tmp_path, banking_subset, tiny_model), ["trainer.kind=transformer"])
    buf = io.StringIO()
    _preflight(cfg, Console(file=buf, width=400))
    assert f"; trainer transformer; model {tiny_model}" in buf.getvalue().splitlines()[0]


# --------------------------------------------------------------------------- tables through a pipe
def _alft(*args: str) -> subprocess.CompletedProcess:
    """The real `alft` with stdout and stderr to pipes (no terminal; no $COLUMNS)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run(
        [sys.executable, "-m", "alft.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


LONG = "banking77-margin-sampling-balanced-head-long-descriptive-name"  # 61: names allow 63


def _campaign_with_rounds(st: CampaignStore, cfg, name: str, curve: list[tuple[int, float]], control: bool) -> None:
    """A campaign whose rounds were evaluated (what `status` and `compare` read), written to the store."""
    with st.transaction() as conn:
        st.create_campaign(
            conn, name=name, uid=name, config=cfg.model_copy(update={"name": name}).model_dump(mode="json", exclude_unset=True),
            seed=cfg.seed, pool_digest="p", pool_size=240, eval_digest="e", labels=["a", "b"], model_digest="m",
        )
    for r, (n, acc) in enumerate(curve):
        st.ensure_round(name, r, "kmeans" if r == 0 else cfg.strategy.name)
        metrics = {"accuracy": acc, "macro_f1": acc - 0.01}
        if control and r > 0:
            metrics.update({"control.n": 4.0, "control.accuracy": acc - 0.05, "control.accuracy_se": 0.02,
                            "control.strategy_error": 0.6, "control.random_error": 0.4})
        with st.transaction() as conn:
            for step in ("embed", "score", "select", "labels", "train"):
                st.finish_step(conn, name, r, step, {}, 0.5)
            st.finish_step(conn, name, r, "evaluate", {"n_labels": n}, 0.5)
            st.add_metrics(conn, name, r, n, metrics)
            st.finish_round(conn, name, r, n)


def test_status_and_compare_print_their_tables_whole_into_a_pipe(tmp_path, banking_subset, tiny_model):
    cfg = load_config(campaign_yaml(tmp_path, banking_subset, tiny_model),
                      ["strategy.control_share=0.25", "strategy.name=margin"])
    url = f"sqlite:///{tmp_path / 'many.db'}"
    st = CampaignStore(url)
    _campaign_with_rounds(st, cfg, LONG, [(20, 0.50), (40, 0.62), (60, 0.71)], control=True)
    other = LONG.replace("margin", "random")
    _campaign_with_rounds(st, cfg.model_copy(update={"strategy": cfg.strategy.model_copy(update={"name": "random"})}),
                          other, [(20, 0.48), (40, 0.55), (60, 0.64)], control=False)
    st.close()

    res = _alft("status", LONG, "--store", url)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    head = next(line for line in lines if "round" in line and "strategy" in line)
    # every column's name on the header line, uncut (rich squeezed them into 80 columns before)
    for col in ("selected", "accuracy", "macro-F1", "control n", "prev. model acc (control)",
                "error strategy / control", "seconds", "steps done", "MLflow"):
        assert col in head, (col, res.stdout)
    row = next(line for line in lines if line.startswith("│ 1 "))
    assert "0.5700 ± 0.0200" in row and "0.600 / 0.400" in row, res.stdout
    assert "│ embed, score, select, labels, train, evaluate │" in row, res.stdout
    assert any(line.startswith("control arm: 0.25 of each batch") and line.endswith("on the unlabeled pool") for line in lines)
    assert "…" not in res.stdout and max(map(len, lines)) > 80

    out = tmp_path / "cmp" / "curves.png"
    res = _alft("compare", LONG, other, "--store", url, "--out", str(out), "--no-mlflow")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    mine = next(line for line in lines if LONG in line)  # the whole name, on the row's one line
    assert "│ margin " in mine and "│ 0.7100 " in mine and "│ +25.9% " in mine and "│ 0.600 / 0.400 " in mine, res.stdout
    assert any(other in line and "random" in line for line in lines), res.stdout
    assert "labels to baseline final" in next(line for line in lines if "campaign" in line and "strategy" in line)
    assert "…" not in res.stdout


# --------------------------------------------------------------------------- Label Studio's CSV export
LS_CSV_HEADER = ["alft_campaign", "alft_id", "alft_round", "annotation_id", "annotator", "created_at", "id",
                 "label", "lead_time", "text", "updated_at"]


def test_a_label_studio_csv_export_is_refused_in_one_line(tmp_path, banking_subset, tiny_model):
    cfg_path = build_pending_campaign(tmp_path, banking_subset, tiny_model)
    st = _store_of(cfg_path)
    from alft.human.labeling import pending_batch

    ids = pending_batch(st, "test-campaign").example_ids
    gold = gold_of(banking_subset)
    # Label Studio's CSV of alft's tasks: the task data flattened into columns, and `id` is its task number
    export = tmp_path / "project-3-at-2026-11-25-10-00.csv"
    with open(export, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(LS_CSV_HEADER)
        for i, ex in enumerate(ids[:5]):
            w.writerow(["test-campaign", ex, 0, 100 + i, "ann@example.com", "2026-11-20T10:02:05Z", 41 + i,
                        gold[ex], 4.2, "some text, with a comma", "2026-11-20T10:02:06Z"])
    for fmt in ([], ["--format", "csv"], ["--format", "label-studio"]):
        res = runner.invoke(cli_app, ["labels", "import", str(export), str(cfg_path), *fmt])
        assert res.exit_code == 2, res.output
        assert len(res.output.strip().splitlines()) == 1, res.output
        assert res.output.startswith(f"error: {export} is a Label Studio CSV export (columns ")
        assert "export the project from Label Studio as JSON (or JSON-MIN)" in res.output
        assert "not in the pending batch" not in res.output
    assert st.label_events("test-campaign") == []

    # alft's own CSV label file (id, label, annotator) is not mistaken for one
    mine = tmp_path / "labels.csv"
    mine.write_text("id,label,annotator\n" + "".join(f"{ex},{gold[ex]},ann\n" for ex in ids[:5]), encoding="utf-8")
    res = runner.invoke(cli_app, ["labels", "import", str(mine), str(cfg_path)])
    assert res.exit_code == 0, res.output
    assert "round 0: 5 written" in res.output
    assert len(st.label_events("test-campaign")) == 5


# --------------------------------------------------------------------------- `alft run` into a pipe
@pytest.mark.slow
def test_alft_run_into_a_pipe_logs_progress_lines_and_one_opening_line(tmp_path, banking_subset, tiny_model):
    """Output to a pipe (no terminal): the embed step reports its progress as it goes, not only
    "N to do" and then nothing until it is done."""
    import re

    cfg = campaign_yaml(tmp_path, banking_subset, tiny_model, budget=40, tracking={"log_models": False})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_", "COLUMNS"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), ALFT_CACHE_DIR=str(tmp_path / "cache"))  # embeds anew
    res = subprocess.run([sys.executable, "-m", "alft.cli", "run", str(cfg)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    err = res.stderr.splitlines()
    assert err[0].startswith("campaign test-campaign: pool 240, eval 80, 8 labels; budget 40 (20 by kmeans, ")
    assert err[0].endswith(f"; trainer head (class weights balanced); model {tiny_model}")  # one line, not wrapped
    pool = [int(m.group(1)) for line in err if (m := re.search(r"embed pool: (\d+)/240 \(\d+%\), \d+ s so far", line))]
    assert len(pool) >= 5 and pool == sorted(pool) and pool[-1] < 240, res.stderr
    assert any("embed pool: 240 to do" in line for line in err) and any("embed pool: done in" in line for line in err)
    out = res.stdout.splitlines()
    assert any(re.match(r"│ +1 │ margin +│ +40 │ +0\.\d{4} │ +0\.\d{4} │", line) for line in out), res.stdout
    assert "stopped: budget exhausted: 40 labels / budget 40" in res.stdout
