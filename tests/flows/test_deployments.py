"""Deployments: prefect.yaml, `alft serve`, triggers through the Prefect API, the scheduled round, re-embed.

One `alft serve` process (the real CLI) serves the three deployments against the test
server for the whole module; runs are triggered the three ways Prefect offers (its CLI,
`run_deployment`, the REST endpoint) and their persisted results read back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from alft.config import load_config
from alft.params import CampaignRef
from alft.store.campaign_store import CampaignStore
from tests.conftest import campaign_yaml, read_jsonl

# Everything that needs the Prefect server is slow; the prefect.yaml and CLI checks are not.
slow = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = "alft-campaign/campaign"
SCHEDULED = "alft-scheduled-round/scheduled-round"
REEMBED = "alft-re-embed/re-embed"
NEVER = "0 3 29 2 *"  # a real cron schedule that does not fire while the tests run


def _wait_for(predicate, timeout=120.0, what="condition", every=0.3):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _create_flow_run(api_url: str, deployment_id, parameters: dict, tries: int = 6):
    """POST create_flow_run over plain REST, retrying 503 the way Prefect's own client does.

    The server answers 503 to a request that hit a locked SQLite database (several runs being
    created and started at once): a retryable answer, which any REST caller has to retry.
    """
    import httpx

    for attempt in range(tries):
        res = httpx.post(f"{api_url}/deployments/{deployment_id}/create_flow_run",
                         json={"parameters": parameters}, timeout=30)
        if res.status_code != 503:
            return res
        time.sleep(min(2 ** attempt, 8))
    return res


def _config(tmp: Path, files, tiny: Path, name: str, cache: Path | None = None, **over) -> Path:
    """A small campaign config in its own folder (so its store and MLflow are its own);
    ``cache``: an embedding cache folder of its own."""
    folder = tmp / name
    folder.mkdir(parents=True, exist_ok=True)
    over.setdefault("workdir", str(folder / "work"))
    over.setdefault("budget", 12)
    over.setdefault("initial_size", 6)
    over.setdefault("batch_size", 6)
    over.setdefault("tracking", {"log_models": False})  # the final model only: seconds less per round
    path = campaign_yaml(folder, files, tiny, name=name, **over)
    if cache is not None:
        data = yaml.safe_load(path.read_text())
        data["model"]["cache_dir"] = str(cache)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _final(flow_run_id, timeout=240.0):
    from prefect.client.orchestration import get_client

    def done():
        with get_client(sync_client=True) as client:
            fr = client.read_flow_run(flow_run_id)
        return fr if fr.state is not None and fr.state.is_final() else None

    return _wait_for(done, timeout=timeout, what=f"flow run {flow_run_id} to finish", every=0.5)


def _run_logs(flow_run_id) -> list[str]:
    """The log lines of a flow run, as the Prefect UI shows them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        return [log.message for log in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]


@pytest.fixture(scope="module")
def served(prefect_server, banking_subset, tiny_model, tmp_path_factory):
    """`alft serve CONFIG --cron ...` in a subprocess: the three deployments, served until the module ends."""
    tmp = tmp_path_factory.mktemp("serve")
    default_cfg = _config(tmp, banking_subset, tiny_model, "serve-default")
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PYTHONPATH": str(ROOT),
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
        "COLUMNS": "200",
    }
    log_path = tmp / "serve.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "alft.cli", "serve", str(default_cfg), "--cron", NEVER, "--timezone", "UTC"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        from prefect.client.orchestration import get_client

        def deployed():
            if proc.poll() is not None:
                raise AssertionError(f"alft serve exited: {log_path.read_text()}")
            with get_client(sync_client=True) as client:
                try:
                    return [client.read_deployment_by_name(n) for n in (CAMPAIGN, SCHEDULED, REEMBED)]
                except Exception:
                    return None

        deployments = _wait_for(deployed, timeout=120, what="alft serve to register the deployments")
        yield {"deployments": dict(zip(("campaign", "scheduled", "reembed"), deployments)),
               "default_cfg": default_cfg, "log": log_path, "env": env, "tmp": tmp}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
        log.close()


# --------------------------------------------------------------------------- prefect.yaml
def test_prefect_yaml_validates_with_prefects_own_model_and_every_flow_signature():
    """prefect.yaml: Prefect 3.9.1's model of the file, importable entrypoints, parameters the flows accept."""
    from prefect.cli.deploy._config import _load_deploy_configs_and_actions
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.flows import load_flow_from_entrypoint
    from rich.console import Console

    from flows.deployments import NAMES

    raw = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    model = PrefectYamlModel.model_validate(raw)
    assert [d.name for d in model.deployments] == list(NAMES)
    # what `prefect deploy` itself reads (it prints validation problems and skips the file)
    configs, actions = _load_deploy_configs_and_actions(ROOT / "prefect.yaml", console=Console(quiet=True))
    assert [c["name"] for c in configs] == list(NAMES) and actions["pull"] == model.pull
    step = model.pull[0]["prefect.deployments.steps.set_working_directory"]
    assert step["directory"] == "{{ project-dir.stdout }}"
    assert model.build[0]["prefect.deployments.steps.run_shell_script"]["id"] == "project-dir"
    for d in model.deployments:
        assert d.work_pool is not None and d.work_pool.name == "alft-process", d.name
        assert d.enforce_parameter_schema is True
        flow = load_flow_from_entrypoint(str(ROOT / d.entrypoint))
        assert flow.persist_result is True
        params = dict(d.parameters)
        for sched in d.schedules or []:
            params = {**params, **sched.parameters}
        required = set(flow.parameters.required or [])
        if required <= params.keys():
            validated = flow.validate_parameters(params)  # raises on anything the flow would refuse
            if "campaign" in validated:
                cfg = validated["campaign"].model_copy(
                    update={"config_file": str(ROOT / validated["campaign"].config_file)}
                ).load()  # the config file named in prefect.yaml exists and loads
                assert cfg.name == "banking77"
        else:
            assert d.name == "campaign" and required == {"config"}  # the config is given per run
    sched = model.deployments[1]
    assert sched.name == "scheduled-round" and sched.schedules[0].cron == "0 3 * * *"
    assert sched.concurrency_limit == 1
    assert sched.parameters["campaign_deployment"] == CAMPAIGN


def test_serve_rejects_a_schedule_without_a_campaign_and_a_bad_cron(banking_subset, tiny_model, tmp_path):
    from typer.testing import CliRunner

    from alft.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["serve", "--cron", "0 3 * * *"])
    assert res.exit_code == 2 and "--cron needs CONFIG" in res.output
    cfg = _config(tmp_path, banking_subset, tiny_model, "cli-serve")
    res = runner.invoke(app, ["serve", str(cfg), "--cron", "61 3 * * *"])
    assert res.exit_code == 2 and "--cron '61 3 * * *'" in res.output
    res = runner.invoke(app, ["serve", str(cfg), "--set", "budget=-1"])
    assert res.exit_code == 2 and "budget" in res.output


@slow
def test_alft_serve_registers_three_deployments_with_the_schedule(served):
    log = served["log"].read_text()
    for name in (CAMPAIGN, SCHEDULED, REEMBED):
        assert f"serving {name}" in log
    dep = served["deployments"]["scheduled"]
    assert [s.schedule.cron for s in dep.schedules] == [NEVER]
    assert dep.parameters == {"campaign": {"config_file": str(served["default_cfg"]), "overrides": []}}
    assert dep.enforce_parameter_schema
    schema = served["deployments"]["campaign"].parameter_openapi_schema
    assert schema["required"] == ["config"]
    assert schema["definitions"]["CampaignConfig"]["properties"]["budget"]["exclusiveMinimum"] == 0


# --------------------------------------------------------------------------- three triggers
@pytest.fixture(scope="module")
def triggered(served, banking_subset, tiny_model, tmp_path_factory):
    """Three campaigns triggered at once, by the Prefect CLI, run_deployment and the REST API."""
    from prefect.deployments import run_deployment

    tmp = tmp_path_factory.mktemp("triggers")
    cache = tmp / "emb-cache"  # empty: the three runs embed the same texts into it at the same time
    cfgs = {
        how: load_config(_config(tmp, banking_subset, tiny_model, f"via-{how}", cache=cache))
        for how in ("cli", "sdk", "rest")
    }
    params = {how: {"config": c.model_dump(mode="json")} for how, c in cfgs.items()}
    cli = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "deployment", "run", CAMPAIGN, "--params", json.dumps(params["cli"])],
        cwd=ROOT, env=served["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        ids = {"sdk": str(run_deployment(CAMPAIGN, parameters=params["sdk"], timeout=0).id)}
        res = _create_flow_run(served["env"]["PREFECT_API_URL"], served["deployments"]["campaign"].id, params["rest"])
        assert res.status_code == 201, res.text
        ids["rest"] = res.json()["id"]
    finally:  # never leave the CLI trigger running into the next test (it would add a run there)
        out, _ = cli.communicate(timeout=120)
    assert cli.returncode == 0, out
    ids["cli"] = next(line.split("UUID:")[1].strip() for line in out.splitlines() if "UUID:" in line)
    runs = {how: _final(i) for how, i in ids.items()}
    return {"cfgs": cfgs, "runs": runs, "cache": cache, "tmp": tmp}


@slow
def test_each_trigger_runs_the_campaign_and_its_result_reads_back(triggered):
    for how, fr in triggered["runs"].items():
        cfg = triggered["cfgs"][how]
        assert fr.state.is_completed(), (how, fr.state)
        assert fr.name == cfg.name
        summary = fr.state.result()  # the persisted CampaignSummary, read back from result storage
        assert summary.name == cfg.name and summary.workdir == str(cfg.workdir_path())
        assert [r.n_labels for r in summary.rounds] == [6, 12]
        assert summary.stop_reason == "budget exhausted: 12 labels / budget 12"


@slow
def test_a_name_the_caller_gives_is_kept_and_the_run_still_counts_for_its_campaign(served, banking_subset, tiny_model, tmp_path):
    """Runs are the campaign's by their config parameter, not their name: a caller may name them."""
    import datetime as dt

    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from tasks._prefect import active_runs, prefect_made
    from tasks.scheduling import decide

    cfg = load_config(_config(tmp_path, banking_subset, tiny_model, "caller-named"))
    params = {"config": cfg.model_dump(mode="json")}
    out = subprocess.run(  # the Prefect CLI's --flow-run-name
        [str(Path(sys.executable).parent / "prefect"), "deployment", "run", CAMPAIGN, "--params", json.dumps(params),
         "--flow-run-name", "relabel after the audit"],
        cwd=ROOT, env=served["env"], capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    fr = _final(next(line.split("UUID:")[1].strip() for line in out.stdout.splitlines() if "UUID:" in line))
    assert fr.state.is_completed(), fr.state
    assert fr.name == "relabel after the audit"  # it used to be renamed to the campaign
    assert fr.state.result().name == cfg.name

    # one that has not started yet, named by run_deployment's caller: the campaign's run all the same
    later = run_deployment(CAMPAIGN, parameters=params, flow_run_name="tomorrow's relabel", timeout=0,
                           scheduled_time=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1))
    try:
        runs = active_runs(cfg.name)
        assert [(r.id, r.state_type) for r in runs] == [(str(later.id), "SCHEDULED")]
        plan = decide(cfg, runs)
        assert (plan.action, plan.reason) == (
            "nothing", f"flow run {later.id} of campaign {cfg.name} is Scheduled: it carries the campaign on"
        )
        assert active_runs("no-such-campaign") == []
    finally:
        with get_client(sync_client=True) as client:
            client.delete_flow_run(later.id)
    # Prefect's own random names are still replaced by the campaign's (the triggers above);
    # a name of that shape is the only one not kept
    assert prefect_made("crimson-otter") and not prefect_made("relabel after the audit")
    assert not prefect_made("nightly-relabel") and not prefect_made(cfg.name)


@slow
def test_parallel_campaigns_keep_their_own_state(triggered, prefect_server, banking_subset, tiny_model):
    """The three ran at the same time, into one embedding cache; each store equals a sequential run's."""
    import numpy as np

    from alft.campaign.context import campaign_data, embedding_cache
    from alft.models.embedcache import text_keys
    from flows.campaign import campaign

    spans = sorted((fr.start_time, fr.end_time) for fr in triggered["runs"].values())
    assert any(a_end > b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans  # they overlapped
    for how, cfg in triggered["cfgs"].items():
        alone = cfg.model_copy(update={"workdir": str(triggered["tmp"] / f"sequential-{how}")})
        campaign(alone)
        got = CampaignStore(cfg.store_url()).dump(cfg.name)
        assert got == CampaignStore(alone.store_url()).dump(cfg.name), how
        assert CampaignStore(cfg.store_url()).campaign_names() == [cfg.name]
    # one vector per distinct text in the shared cache, although three processes embedded at once
    cfg = triggered["cfgs"]["cli"]
    data = campaign_data(cfg)
    texts = data.pool.texts + data.eval.texts
    cache = embedding_cache(cfg)
    assert cache.count() == len(np.unique(text_keys(texts), axis=0))


# --------------------------------------------------------------------------- bad parameters
@slow
def test_bad_parameters_are_refused_by_the_server_and_touch_nothing(served, banking_subset, tiny_model, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
    from prefect.deployments import run_deployment

    cfg = load_config(_config(tmp_path, banking_subset, tiny_model, "bad-params"))
    bad = {"config": {**cfg.model_dump(mode="json"), "budget": -5}}
    dep = served["deployments"]["campaign"]

    def n_runs():
        with get_client(sync_client=True) as client:
            return len(client.read_flow_runs(flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[dep.id]))))

    before = n_runs()
    with pytest.raises(Exception) as err:  # the SDK
        run_deployment(CAMPAIGN, parameters=bad, timeout=0)
    assert "Validation failed for field 'config.budget'" in str(err.value), err.value
    res = _create_flow_run(served["env"]["PREFECT_API_URL"], dep.id, bad)  # REST
    assert res.status_code == 409, res.text
    assert "'config.budget'" in res.json()["detail"] and "minimum of 0" in res.json()["detail"], res.text
    extra = {"config": {**cfg.model_dump(mode="json"), "budjet": 10}}  # a misspelt key
    res = _create_flow_run(served["env"]["PREFECT_API_URL"], dep.id, extra)
    assert res.status_code == 409 and "budjet" in res.json()["detail"], res.text
    out = subprocess.run(  # the Prefect CLI
        [str(Path(sys.executable).parent / "prefect"), "deployment", "run", CAMPAIGN, "--params", json.dumps(bad)],
        cwd=ROOT, env=served["env"], capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 1 and "'config.budget'" in out.stdout + out.stderr, out.stdout + out.stderr
    sched = served["deployments"]["scheduled"]  # a CampaignRef override that is not key=value
    res = _create_flow_run(served["env"]["PREFECT_API_URL"], sched.id,
                           {"campaign": {"config_file": "x.yaml", "overrides": ["budget: 5"]}})
    assert res.status_code == 409 and "overrides" in res.json()["detail"], res.text
    assert n_runs() == before
    assert not Path(cfg.workdir_path()).exists()

    # A config the schema cannot judge (budget below the first batch) is refused by the flow's own
    # validation before its first task: the run fails, the store is never created.
    semantic = {"config": {**cfg.model_dump(mode="json"), "budget": 3}}
    fr = _final(run_deployment(CAMPAIGN, parameters=semantic, timeout=0).id)
    assert fr.state.is_failed() and "smaller than one batch" in fr.state.message, fr.state
    assert not Path(cfg.workdir_path()).exists()


# --------------------------------------------------------------------------- scheduled round
@slow
def test_scheduled_round_does_nothing_until_labels_arrive_then_continues(served, banking_subset, tiny_model, tmp_path):
    from prefect.deployments import run_deployment

    from alft.campaign.context import campaign_data
    from alft.errors import LabelError
    from alft.human.labeling import LabelItem, pending_batch, submit
    from flows.campaign import campaign
    from flows.scheduled import scheduled_round
    from tasks._prefect import ActiveRun
    from tasks.scheduling import decide

    path = _config(tmp_path, banking_subset, tiny_model, "nightly", budget=6,
                   oracle={"kind": "human", "wait": "poll", "poll_s": 0.2, "timeout_s": 1})
    ref = CampaignRef(config_file=str(path))
    cfg = ref.load()
    gold = {r["id"]: r["label"] for r in read_jsonl(banking_subset["pool"])}
    labels = campaign_data(cfg).labels

    # not started: nothing, said in the persisted result of a run of the served deployment
    fr = _final(run_deployment(SCHEDULED, parameters={"campaign": ref.model_dump()}, timeout=0).id)
    assert fr.state.is_completed(), fr.state
    res = fr.state.result()
    assert res.action == "nothing" and "has not started" in res.reason
    assert not cfg.workdir_path().exists()
    line = f"campaign nightly: nothing to do: {res.reason}"
    _wait_for(lambda: any(line in m for m in _run_logs(fr.id)), timeout=30, what=f"the log line {line!r}")

    # round 0 selected, its batch waits (a poll-mode run that gave up after 1 s)
    with pytest.raises(LabelError):
        campaign(cfg)
    store = CampaignStore(cfg.store_url())
    res = scheduled_round(ref)
    assert (res.action, res.round, res.resolved, res.total) == ("nothing", 0, 0, 6)
    assert res.reason == "round 0 waits for labels: 0 of 6 labeled"
    running = ActiveRun(id="r1", state_type="RUNNING", state_name="Running")  # a run in flight wins
    assert decide(cfg, [running]).reason == "flow run r1 of campaign nightly is Running: it carries the campaign on"
    ids = pending_batch(store, cfg.name).example_ids
    submit(store, cfg.name, [LabelItem(ex, gold[ex]) for ex in ids[:4]], annotator="ann", source="file", label_set=labels)
    assert scheduled_round(ref).reason == "round 0 waits for labels: 4 of 6 labeled"

    # the batch is complete: the scheduled round continues the campaign (inline this time, as a
    # subflow: `campaign_deployment` null), which finishes
    submit(store, cfg.name, [LabelItem(ex, gold[ex]) for ex in ids[4:]], annotator="ann", source="file", label_set=labels)
    res = scheduled_round(ref, campaign_deployment=None)
    assert res.action == "continued" and res.reason == "round 0: labels arrived (all 6 labeled)"
    assert res.flow_run_state == "Completed" and [r.n_labels for r in res.summary.rounds] == [6]
    res = scheduled_round(ref)
    assert res.action == "nothing" and res.reason == "campaign nightly stopped: budget exhausted: 6 labels / budget 6"

    # the budget raised (an override here; editing the file works the same): a run of the campaign
    # deployment does round 1 and suspends for its labels; labels that arrive without resuming
    # it are found the next night
    more = CampaignRef(config_file=str(path), overrides=["budget=12", "oracle.wait=suspend", "oracle.timeout_s=600"])
    res = scheduled_round(more, wait_s=180)
    assert (res.action, res.round) == ("continued", 1)
    assert res.reason == (
        "its stop rule no longer holds under the config as it is now "
        "(was: budget exhausted: 6 labels / budget 6; budget now 12)"
    )
    assert res.flow_run_state == "Suspended", res
    run_id = res.flow_run_id
    res = scheduled_round(more)
    assert (res.action, res.reason) == ("nothing", "round 1 waits for labels: 0 of 6 labeled")
    ids = pending_batch(store, cfg.name).example_ids
    submit(store, cfg.name, [LabelItem(ex, gold[ex]) for ex in ids], annotator="ann", source="file", label_set=labels)
    res = scheduled_round(more, wait_s=180)
    assert (res.action, res.flow_run_id, res.flow_run_state) == ("resumed", run_id, "Completed"), res
    assert [r.n_labels for r in res.summary.rounds] == [6, 12]
    assert scheduled_round(more).reason == "campaign nightly stopped: budget exhausted: 12 labels / budget 12"


# --------------------------------------------------------------------------- re-embed
@slow
def test_reembed_fills_the_cache_and_reports_embedded_vs_cached(prefect_server, banking_subset, tiny_model, tmp_path):
    from flows.reembed import reembed

    cache = tmp_path / "cache"
    ref = CampaignRef(config_file=str(_config(tmp_path, banking_subset, tiny_model, "reembed", cache=cache)))
    first = reembed(ref)
    n_pool, n_eval = len(read_jsonl(banking_subset["pool"])), len(read_jsonl(banking_subset["eval"]))
    assert [(s.split, s.texts, s.cached) for s in first.splits] == [("pool", n_pool, 0), ("eval", n_eval, 0)]
    assert first.embedded == first.texts > 0 and first.campaign_model == "no campaign"
    assert first.cache_dir == str(cache) and (cache / first.model_key / "meta.json").exists()
    again = reembed(ref)
    assert (again.texts, again.cached, again.embedded) == (first.texts, first.texts, 0)
    assert again.model_key == first.model_key


# --------------------------------------------------------------------------- prefect deploy + process worker
@slow
def test_prefect_deploy_to_a_process_pool_and_a_worker_runs_it(served, banking_subset, tiny_model, tmp_path):
    """prefect.yaml through `prefect deploy --all` for real, then a process worker runs a deployment from it.

    A copy with renamed deployments (the served ones keep theirs) and the nightly schedule
    inactive; everything else as shipped.
    """
    from prefect.client.orchestration import get_client

    raw = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for d in raw["deployments"]:
        d["name"] = f"yaml-{d['name']}"
        for s in d.get("schedules") or []:
            s["active"] = False
    (tmp_path / "prefect.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    prefect = str(Path(sys.executable).parent / "prefect")
    env = {**served["env"], "PREFECT_CLI_PROMPT": "false"}

    def cli(*args, timeout=180, cwd=ROOT):
        out = subprocess.run([prefect, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"prefect {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    cli("work-pool", "create", "alft-process", "--type", "process", "--overwrite")
    cli("deploy", "--all", "--prefect-file", str(tmp_path / "prefect.yaml"))
    with get_client(sync_client=True) as client:
        deps = {n: client.read_deployment_by_name(n) for n in
                ("alft-campaign/yaml-campaign", "alft-scheduled-round/yaml-scheduled-round", "alft-re-embed/yaml-re-embed")}
    for dep in deps.values():
        assert dep.work_pool_name == "alft-process"
        assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
        assert dep.enforce_parameter_schema
    sched = deps["alft-scheduled-round/yaml-scheduled-round"]
    assert [(s.schedule.cron, s.schedule.timezone) for s in sched.schedules] == [("0 3 * * *", "UTC")]
    assert sched.parameters["campaign"] == {"config_file": "conf/banking77.yaml", "overrides": []}
    assert deps["alft-campaign/yaml-campaign"].parameter_openapi_schema["required"] == ["config"]

    # Triggered with `--param` (one parameter, as JSON) and a config path relative to the project
    # folder; a process worker started elsewhere picks the run up, changes to the project
    # folder (the pull step: the path and the entrypoint resolve only there) and runs it.
    cfg = _config(tmp_path, banking_subset, tiny_model, "by-worker", cache=tmp_path / "cache")
    ref = CampaignRef(config_file=os.path.relpath(cfg, ROOT))
    out = cli("deployment", "run", "alft-re-embed/yaml-re-embed", "--param", f"campaign={json.dumps(ref.model_dump())}")
    run_id = next(line.split("UUID:")[1].strip() for line in out.splitlines() if "UUID:" in line)
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    cli("worker", "start", "--pool", "alft-process", "--run-once", "--limit", "1", timeout=300, cwd=elsewhere)
    fr = _final(run_id, timeout=60)
    assert fr.state.is_completed(), fr.state
    res = fr.state.result()
    assert res.campaign == "by-worker" and res.embedded > 0 and res.cached == 0
