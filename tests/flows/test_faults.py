"""Fault injection at every step, and an MLflow server that goes away: the campaign resumes to the same result.

* ``test_killed_at_every_step_ends_as_the_uninterrupted_run``: one campaign, killed with
  SIGKILL (``ALFT_FAULT``, ``alft/faults.py``) at the start of and inside the committing
  transaction of each of the seven steps, inside the labels transaction, while embedding
  and while tracking; each kill is followed by a re-run that goes on to the next fault. Its
  store dump, selected ids, exported labeled dataset and MLflow runs must equal those of
  one uninterrupted run with the same seed (the module's ``reference``).
* ``test_mlflow_server_going_away_mid_round``: a real ``mlflow server``, stopped just before
  round 1 is tracked: the track task retries with backoff, then the run fails with one
  clear error; the store keeps every step; with the server back, a re-run resumes and logs
  the untracked rounds once.
* ``test_prefect_server_going_away_mid_round``: a real ``prefect server start``, stopped while
  round 1 trains: the next step's API check retries with backoff, then the run fails with
  one clear error; the store keeps every finished step; with the server back (same
  database), the scheduled round sees that the run Prefect still shows RUNNING has no
  process, a re-run resumes, marks it Crashed and ends as the uninterrupted run.

The kills run in one sequence, not one campaign per fault: every ``alft run`` process
costs ~10 s of start-up on a 2-core machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alft.campaign.context import STEP_ORDER
from alft.config import load_config
from alft.store.campaign_store import CampaignStore
from tests.conftest import REPO, campaign_yaml
from tests.servers import mlflow_server_process, prefect_server_process

pytestmark = pytest.mark.slow

NAME = "faults"


def run_cli(cfg: Path, api_url: str, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "PREFECT_API_URL": api_url, **env}
    return subprocess.run(
        [sys.executable, "-m", "alft.cli", "run", str(cfg)],
        env=full, cwd=REPO, capture_output=True, text=True, timeout=600,
    )


def outcome(cfg_path: Path) -> dict:
    """What an interrupted campaign must end with: its store, batches and labeled dataset."""
    from alft.campaign.export import labeled_rows

    cfg = load_config(cfg_path)
    store = CampaignStore(cfg.store_url())
    try:
        return {
            "dump": store.dump(NAME),
            "selected": [(s["round"], s["position"], s["example_id"]) for s in store.selections(NAME)],
            "labeled": [{k: v for k, v in r.items() if k != "labeled_at"} for r in labeled_rows(store, NAME, cfg)],
        }
    finally:
        store.close()


def mlflow_rounds(cfg_path: Path) -> dict:
    """MLflow's view: the campaign runs, and each round's runs with their metric histories."""
    from mlflow import MlflowClient

    cfg = load_config(cfg_path)
    client = MlflowClient(cfg.tracking_uri())
    exp = client.get_experiment_by_name(cfg.experiment_name())
    runs = client.search_runs([exp.experiment_id])
    rounds: dict[str, list] = {}
    for r in runs:
        if r.data.tags.get("alft.kind") == "round":
            rounds.setdefault(r.data.tags["alft.round"], []).append(r)
    return {
        "campaign_runs": [r.info.run_id for r in runs if r.data.tags.get("alft.kind") == "campaign"],
        "round_runs": {k: [r.info.run_id for r in v] for k, v in sorted(rounds.items())},
        "accuracy_points": {
            k: [len(client.get_metric_history(r.info.run_id, "accuracy")) for r in v] for k, v in sorted(rounds.items())
        },
        "client": client,
    }


def assert_each_round_tracked_once(cfg_path: Path, n_rounds: int) -> None:
    ml = mlflow_rounds(cfg_path)
    assert len(ml["campaign_runs"]) == 1, ml["campaign_runs"]
    assert list(ml["round_runs"]) == [str(i) for i in range(n_rounds)]
    assert all(len(v) == 1 for v in ml["round_runs"].values()), ml["round_runs"]  # a resumed round kept its run
    assert all(v == [1] for v in ml["accuracy_points"].values()), ml["accuracy_points"]  # and logged once
    cfg = load_config(cfg_path)
    store = CampaignStore(cfg.store_url())
    rows = store.rounds(NAME)
    store.close()
    assert all(r["tracked_at"] is not None for r in rows)
    assert {str(r["round"]): [r["mlflow_run_id"]] for r in rows} == ml["round_runs"]


@pytest.fixture(scope="module")
def reference(prefect_server, banking_subset, tiny_model, tmp_path_factory):
    """One uninterrupted run: 3 rounds of 20 labels (budget 60) with the tiny BERT and the head trainer."""
    tmp = tmp_path_factory.mktemp("faults-reference")
    cfg = campaign_yaml(tmp, banking_subset, tiny_model, name=NAME)
    t0 = time.monotonic()
    proc = run_cli(cfg, prefect_server)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = outcome(cfg)
    out["seconds"] = time.monotonic() - t0
    assert [r for r, _, _ in out["selected"]].count(2) == 20  # three rounds ran
    return out


# The kills, in the order a campaign reaches them: a flush of the embedding cache (round 0),
# the start of every step in round 1 (where every step has a model to work with), inside
# the commits that write a batch, its proposals (prelabel.commit: the transaction that stores
# what annotators are shown) and its labels (labels.commit is inside the transaction
# that records the labels) and the one that closes the round, the MLflow run of round 1
# logged but the store not told, and the commit of the stop step that stops the campaign
# (round 2: the budget is spent). Every other step's commit point is the same code path
# (``run_step``), so it is not killed again here: each kill costs a process start (~10 s).
# r1.track.start is the MLflow test's pause point.
FAULTS = [
    "embed.flush",
    "r1.embed.start",
    "r1.score.start",
    "r1.select.start",
    "r1.select.commit",
    "r1.labels.start",
    "r1.prelabel.commit",
    "r1.labels.commit",
    "r1.train.start",
    "r1.evaluate.start",
    "r1.stop.start",
    "r1.stop.commit",
    "r1.track",
    "r2.stop.commit",
]
assert {f.split(".")[1] for f in FAULTS if f.startswith("r1.")} >= set(STEP_ORDER)  # every step is killed


def test_killed_at_every_step_ends_as_the_uninterrupted_run(reference, prefect_server, banking_subset, tiny_model, tmp_path):
    cfg = campaign_yaml(tmp_path, banking_subset, tiny_model, name=NAME)
    env = {"ALFT_CACHE_DIR": str(tmp_path / "cache")}  # empty: the first run really embeds (embed.flush)
    times = []
    for fault in FAULTS:
        t0 = time.monotonic()
        killed = run_cli(cfg, prefect_server, ALFT_FAULT=fault, **env)
        times.append((fault, round(time.monotonic() - t0, 1)))
        # -SIGKILL: the process reached the point and killed itself there (the point exists)
        assert killed.returncode == -signal.SIGKILL, f"{fault}: exit {killed.returncode}\n{killed.stderr[-3000:]}"
        parts = fault.split(".")
        if len(parts) == 3 and parts[1] in STEP_ORDER:
            store = CampaignStore(load_config(cfg).store_url())
            # killed before or inside its transaction: the step is not recorded, so it runs again
            assert store.step_result(NAME, int(parts[0][1:]), parts[1]) is None, fault
            store.close()
    resumed = run_cli(cfg, prefect_server, **env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = outcome(cfg)
    assert got["dump"] == reference["dump"]
    assert got["selected"] == reference["selected"]
    assert got["labeled"] == reference["labeled"]
    assert_each_round_tracked_once(cfg, 3)
    # every killed run was found without a process by the next one and marked Crashed in
    # Prefect (a RUNNING run left behind would block the scheduled round)
    store = CampaignStore(load_config(cfg).store_url())
    held = [r["flow_run_id"] for r in store.leases(NAME, live_only=False)]
    store.close()
    assert len(held) == len(FAULTS) + 1
    states = {r["id"]: r["state_type"] for r in prefect_flow_runs(prefect_server, id={"any_": held})}
    assert [states[f] for f in held] == ["CRASHED"] * len(FAULTS) + ["COMPLETED"]
    print(f"\nreference run {reference['seconds']:.1f} s; kills: {times}")


def test_a_kill_inside_a_human_label_import_writes_nothing(prefect_server, banking_subset, tiny_model, tmp_path):
    """``alft labels import`` killed inside its transaction: no event; the same import again writes them once."""
    from tests.human.test_labelfiles import build_pending_campaign
    from tests.conftest import read_jsonl, write_jsonl

    cfg = build_pending_campaign(tmp_path, banking_subset, tiny_model)
    c = load_config(cfg)
    out = tmp_path / "batch.jsonl"
    cli = [sys.executable, "-m", "alft.cli", "labels"]
    res = subprocess.run([*cli, "export", str(cfg), "--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    gold = {r["id"]: r["label"] for r in read_jsonl(banking_subset["pool"])}
    rows = read_jsonl(out)
    for r in rows:
        r["label"] = gold[r["id"]]
    write_jsonl(out, rows)
    store = CampaignStore(c.store_url())
    before = store.label_events(c.name)
    imp = [*cli, "import", str(out), str(cfg), "--annotator", "ann"]
    killed = subprocess.run(imp, cwd=REPO, capture_output=True, text=True, env={**os.environ, "ALFT_FAULT": "r0.labels.submit"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert store.label_events(c.name) == before
    res = subprocess.run(imp, cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "round 0: 20 written" in res.stdout
    assert len(store.label_events(c.name)) == len(before) + 20
    store.close()


# ------------------------------------------------------------------ the MLflow server goes away
@pytest.fixture
def mlflow(tmp_path):
    """A real ``mlflow server`` (stop and start it again: same port, same database)."""
    server = mlflow_server_process(tmp_path)
    server.start()
    yield server
    server.stop()


def run_pausing(argv: list[str], env: dict, on_first_stop, log: Path) -> tuple[int, list[float]]:
    """Run ``argv``; each time it stops itself (``ALFT_FAULT_SIGNAL=STOP``) note when, and continue it.

    ``on_first_stop()`` runs while the process is stopped the first time. Returns the exit
    code and the times of the stops.
    """
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    stops: list[float] = []
    deadline = time.monotonic() + 600
    while True:
        assert time.monotonic() < deadline, "the campaign process did not finish"
        pid, status = os.waitpid(proc.pid, os.WUNTRACED)
        if os.WIFSTOPPED(status):
            stops.append(time.monotonic())
            if len(stops) == 1:
                on_first_stop()
            os.kill(proc.pid, signal.SIGCONT)
            continue
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen
        return proc.returncode, stops


def test_mlflow_server_going_away_mid_round(reference, prefect_server, mlflow, banking_subset, tiny_model, tmp_path):
    cfg = campaign_yaml(tmp_path, banking_subset, tiny_model, name=NAME, tracking={"uri": mlflow.url})
    delays = [0.5, 1.0, 1.5]
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "ALFT_FAULT": "r1.track.start",  # round 1 is in the store; its tracking is about to start
        "ALFT_FAULT_SIGNAL": "STOP",
        "ALFT_TRACK_RETRY_DELAYS": ",".join(map(str, delays)),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
        # Prefect logs each failed try with its traceback (ERROR); here only alft's own output counts
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
    }
    log = tmp_path / "run1.log"
    code, stops = run_pausing(
        [sys.executable, "-m", "alft.cli", "run", str(cfg)], env, mlflow.stop, log
    )
    out = log.read_text(errors="replace")
    assert code == 2, out[-3000:]
    # the first try and one per retry delay, each after its delay
    assert len(stops) == 1 + len(delays), out[-3000:]
    gaps = [b - a for a, b in zip(stops, stops[1:])]
    assert all(g >= d * 0.9 for g, d in zip(gaps, delays)), gaps
    assert out.count("error:") == 1 and "Traceback" not in out, out[-3000:]
    line = " ".join(out[out.index("error:"):].split())
    assert (
        f"error: MLflow at {mlflow.url}: logging round 1 failed (4 tries): cannot connect "
        "(connection refused: is the server running?)" in line
    ), line
    assert "The campaign store keeps every result; run the same command again once MLflow is reachable" in line

    # the store has everything up to round 1, whatever MLflow did
    store = CampaignStore(load_config(cfg).store_url())
    rows = {r["round"]: r for r in store.rounds(NAME)}
    assert sorted(rows) == [0, 1] and rows[1]["finished_at"] is not None
    assert rows[0]["tracked_at"] is not None and rows[1]["tracked_at"] is None
    assert {s["step"] for s in store.steps(NAME, 1)} == set(STEP_ORDER)
    store.close()

    mlflow.start()  # back, with the same database
    resumed = run_cli(cfg, prefect_server, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert outcome(cfg)["dump"] == reference["dump"]  # MLflow never changed what the campaign did
    assert_each_round_tracked_once(cfg, 3)


# ------------------------------------------------------------------ the Prefect server goes away
def prefect_flow_runs(api: str, **flow_runs: dict) -> list[dict]:
    """The flow runs the Prefect API at ``api`` lists for a ``flow_runs`` filter (default: campaign NAME's), oldest first."""
    import httpx

    body = {"flow_runs": flow_runs or {"name": {"any_": [NAME]}}, "sort": "START_TIME_ASC"}
    return httpx.post(f"{api}/flow_runs/filter", json=body).json()


def test_prefect_server_going_away_mid_round(reference, banking_subset, tiny_model, tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tasks._prefect import active_runs
    from tasks.scheduling import decide

    server = prefect_server_process(tmp_path)  # its database lives in tmp_path: the restarted server keeps it
    api = server.url
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    cfg = campaign_yaml(tmp_path, banking_subset, tiny_model, name=NAME)
    server.start()
    try:
        env = {
            **base,
            "PREFECT_API_URL": api,
            "ALFT_FAULT": "r1.train.start",  # round 1's train step has started: the server goes now
            "ALFT_FAULT_SIGNAL": "STOP",
            "PREFECT_CLIENT_MAX_RETRIES": "2",  # backoff 2 then 4 s (default 5 tries: about a minute)
            "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",  # only alft's own lines count here
        }
        log = tmp_path / "run1.log"
        code, stops = run_pausing([sys.executable, "-m", "alft.cli", "run", str(cfg)], env, server.stop, log)
        out = log.read_text(errors="replace")
        assert code == 2 and len(stops) == 1, out[-3000:]
        assert out.count("error:") == 1 and "Traceback" not in out, out[-3000:]
        assert "ERROR" not in out[out.index("error:"):], out[-3000:]  # the line is the last word
        line = " ".join(out[out.index("error:"):].split())
        # the step after the one running when the server went refused to start
        prefix = f"error: Prefect API at {api}: unreachable before round 1 · evaluate (3 tries over "
        assert line.startswith(prefix), line
        waited = int(line[len(prefix):].split(" s)")[0])
        assert waited >= 4, line  # two retries with backoff (2 and 4 s, jittered)
        assert "cannot connect (connection refused: is the server running?)" in line
        assert "The campaign store keeps every finished step; run the same command again once the Prefect server is up" in line

        store = CampaignStore(load_config(cfg).store_url())
        assert [s["step"] for s in store.steps(NAME, 1)] == ["embed", "score", "select", "labels", "train"]
        assert store.round_row(NAME, 1)["finished_at"] is None
        (lease,) = store.leases(NAME, live_only=False)
        assert lease["ended_at"] is not None and lease["end_reason"] == "failed: OrchestratorError"
        store.close()

        server.start()  # back, with the same database
        (lost,) = prefect_flow_runs(api)
        assert lost["state_type"] == "RUNNING"  # Prefect was never told: the old blocker of scheduled rounds
        with temporary_settings({PREFECT_API_URL: api}):
            runs = active_runs(NAME)
            plan = decide(load_config(cfg), runs)
        assert [r.id for r in runs] == [lost["id"]]
        assert plan.action == "continued", plan
        assert plan.reason == (
            "round 1 was interrupted after its train step and no run carries it on "
            f"(flow run {lost['id']}: its process ended (failed: OrchestratorError))"
        )

        resumed = run_cli(cfg, api, PREFECT_CLIENT_MAX_RETRIES="2")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"flow run {lost['id']} had no process left; marked Crashed" in " ".join(resumed.stderr.split())
        got = outcome(cfg)
        assert got["dump"] == reference["dump"]
        assert got["selected"] == reference["selected"] and got["labeled"] == reference["labeled"]
        assert_each_round_tracked_once(cfg, 3)
        first, second = prefect_flow_runs(api)
        assert first["id"] == lost["id"] and first["state_type"] == "CRASHED"
        assert first["state"]["message"] == (
            "alft: no process runs this flow run any more (its process ended (failed: OrchestratorError)); "
            f"campaign {NAME} was resumed by flow run {second['id']}"
        )
        assert second["state_type"] == "COMPLETED"
    finally:
        server.stop()


# ------------------------------------------------------------------ one campaign, two runs
def test_a_second_run_of_a_running_campaign_is_refused(prefect_server, banking_subset, tiny_model, tmp_path):
    """While one process runs a campaign, ``alft run`` of the same campaign changes nothing and says who runs it."""
    import socket

    cfg = campaign_yaml(tmp_path, banking_subset, tiny_model, name="busy", budget=40)
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "ALFT_FAULT": "r1.select.start", "ALFT_FAULT_SIGNAL": "STOP"}
    with open(tmp_path / "first.log", "wb") as fh:
        first = subprocess.Popen(
            [sys.executable, "-m", "alft.cli", "run", str(cfg)], env=env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT
        )
    try:
        _, status = os.waitpid(first.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), (tmp_path / "first.log").read_text()[-3000:]
        store = CampaignStore(load_config(cfg).store_url())
        (lease,) = store.leases("busy")
        before = store.dump("busy")
        second = run_cli(cfg, prefect_server)
        assert second.returncode == 2, second.stderr[-3000:]
        line = " ".join(second.stderr[second.stderr.index("error:"):].split())
        assert line.startswith(
            f"error: campaign busy is already being run by flow run {lease['flow_run_id']} (started "
        ), line
        assert f"UTC; process {first.pid} on {socket.gethostname()} is running): two runs of one campaign" in line
        assert "Traceback" not in second.stderr
        assert store.dump("busy") == before and store.leases("busy") == [lease]  # refused before any write
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, status = os.waitpid(first.pid, 0)
    first.returncode = os.waitstatus_to_exitcode(status)
    assert first.returncode == 0, (tmp_path / "first.log").read_text()[-3000:]
    (ended,) = store.leases("busy", live_only=False)
    assert ended["end_reason"] == "completed"
    assert [r["round"] for r in store.rounds("busy")] == [0, 1]
    store.close()
