"""MLflow tracking tasks: everything they log is read back from the campaign store.

They run after the store commits, retry with backoff (MLflow is I/O that can blip), and are
idempotent, so a resumed campaign re-syncs whatever a crash left unlogged and never adds a
duplicate run. Store writes never wait on MLflow.
"""

from __future__ import annotations

import functools
import logging
import os

from prefect import task
from prefect.cache_policies import NO_CACHE

from alft import faults
from alft.campaign.context import CampaignContext
from alft.config import config_digest
from alft.errors import AlftError, TrackingError
from alft.campaign.tracking import Tracker, default_artifact_location, flatten
from tasks._common import say

DEFAULT_RETRY_DELAYS = [2.0, 5.0, 15.0]


def retry_delays(raw: str | None = None) -> list[float]:
    """Seconds between the tries of a tracking task: ``$ALFT_TRACK_RETRY_DELAYS`` ("2,5,15").

    One number per retry ("" or "none": no retry); unset or malformed: 2, 5 and 15 s.
    Read once, when this module is imported (tests shorten it; an outage lasts longer).
    """
    raw = os.environ.get("ALFT_TRACK_RETRY_DELAYS") if raw is None else raw
    if raw is None:
        return list(DEFAULT_RETRY_DELAYS)
    if raw.strip().lower() in ("", "none"):
        return []
    try:
        delays = [float(x) for x in raw.replace(",", " ").split()]
    except ValueError:
        delays = []
    if not delays or any(not (0 <= d < 86400) for d in delays):
        logging.getLogger("alft").warning(
            "ALFT_TRACK_RETRY_DELAYS=%r is not a list of seconds (e.g. 2,5,15); using %s", raw, DEFAULT_RETRY_DELAYS
        )
        return list(DEFAULT_RETRY_DELAYS)
    return delays


RETRY_DELAYS = retry_delays()


def _public_uri(uri: str) -> str:
    """The tracking URI without a password (http://user:secret@host -> http://user:***@host)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _tracking_failure(exc: BaseException) -> bool:
    """An error of MLflow or of the connection to it (not a bug, not the store)."""
    from mlflow.exceptions import MlflowException
    from requests import RequestException  # a dependency of mlflow

    return isinstance(exc, (MlflowException, RequestException, ConnectionError, TimeoutError))


def _short_cause(exc: BaseException) -> str:
    """What went wrong, in a few words for the common cases (MLflow quotes whole urllib3 reprs)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if any(m in text for m in ("Connection refused", "Failed to establish a new connection", "NewConnectionError")):
        return "cannot connect (connection refused: is the server running?)"
    if any(m in text for m in ("timed out", "ReadTimeout", "ConnectTimeout")):
        return "the server did not answer in time"
    return text if len(text) <= 300 else text[:297] + "..."


def mlflow_errors(what: str):
    """Turn MLflow and connection errors of a tracking task into one clear TrackingError.

    Prefect retries the task on it (``RETRY_DELAYS``); the last one reaches the CLI, which
    prints it as one line. Nothing else is caught: the store's own errors stay as they are.
    ``what`` is formatted with the task's keyword arguments (``round {round_no}``).
    """

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(ctx: CampaignContext, *args, **kwargs):
            try:
                return fn(ctx, *args, **kwargs)
            except AlftError:
                raise
            except Exception as exc:
                if not _tracking_failure(exc):
                    raise
                names = fn.__code__.co_varnames[1 : fn.__code__.co_argcount]
                label = what.format(**dict(zip(names, args)), **kwargs)
                cause = _short_cause(exc)
                raise TrackingError(
                    f"MLflow at {_public_uri(ctx.config.tracking_uri())}: {label} failed "
                    f"({1 + len(RETRY_DELAYS)} tries): {cause}. The campaign store keeps every result; "
                    "run the same command again once MLflow is reachable, and what is not logged yet is logged then"
                ) from exc

        return wrapper

    return deco


def tracker_for(ctx: CampaignContext) -> Tracker:
    cfg = ctx.config
    uri = cfg.tracking_uri()
    art = cfg.tracking.artifact_location or default_artifact_location(uri, ctx.workdir)
    return Tracker(uri, cfg.experiment_name(), art)


def run_tags(ctx: CampaignContext) -> dict[str, str]:
    """Tags the MLflow UI filters and compares on (campaign and round runs carry the same)."""
    cfg = ctx.config
    data = ctx.data
    return {
        "strategy": cfg.strategy.name,
        "cold_start": cfg.cold_start.name,
        "seed": str(cfg.seed),
        "task": cfg.task,
        "trainer": cfg.trainer.kind,
        "model": cfg.model.path,
        "dataset": cfg.data.pool.path,
        "dataset_digest": data.pool.digest[:16],
        "control_share": str(cfg.strategy.control_share),
        "config_digest": config_digest(cfg),
    }


def encoder_record(ctx: CampaignContext) -> dict:
    """The campaign's encoder as a logged model records it (head models embed with it)."""
    from alft.campaign.context import feature_mean, resolve_model
    from alft.models.pyfunc import encoder_config

    m = ctx.config.model
    mean = feature_mean(ctx.config, ctx.data)
    return encoder_config(m.path, resolve_model(ctx.config), m.max_length, m.batch_size, m.pooling, mean, onnx_quantize=m.onnx_quantize)


def registered_name(ctx: CampaignContext) -> str:
    return ctx.config.tracking.registered_model or f"alft-{ctx.name}"


@task(name="track campaign", retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS, cache_policy=NO_CACHE)
@mlflow_errors("logging the campaign run")
def track_campaign(ctx: CampaignContext) -> str:
    """Get or create the campaign's MLflow parent run; log config, tags and dataset inputs."""
    store = ctx.store
    tracker = tracker_for(ctx)
    run_id = tracker.campaign_run(ctx.name, ctx.uid, run_tags(ctx))
    camp = store.campaign(ctx.name)
    if camp["mlflow_run_id"] != run_id:
        with store.transaction() as conn:
            store.update_campaign(conn, ctx.name, mlflow_run_id=run_id, mlflow_experiment_id=tracker.experiment_id())
    tracker.log_params_once(run_id, flatten(camp["config"]))
    tracker.set_tags(run_id, run_tags(ctx))
    tracker.log_dict(run_id, ctx.config.model_dump(mode="json"), "config.yaml")
    data = ctx.data
    dcfg = ctx.config.data
    if ctx.config.task == "generation":
        cols = [dcfg.id_field, dcfg.instruction_field] + [
            c for c in (dcfg.input_field, dcfg.candidate_field, dcfg.label_field) if c
        ]
    else:
        cols = [dcfg.id_field, dcfg.text_field] + ([dcfg.label_field] if dcfg.label_field else [])
    inputs = [
        {"name": "pool", "source": data.pool.source, "digest": data.pool.digest, "context": "pool", "columns": cols}
    ]
    if data.eval is not None:
        inputs.append(
            {"name": "eval", "source": data.eval.source, "digest": data.eval.digest, "context": "eval", "columns": cols}
        )
    tracker.log_inputs(run_id, inputs)
    return run_id


@task(
    name="track round",
    task_run_name="round {round_no} · track",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    cache_policy=NO_CACHE,
)
@mlflow_errors("logging round {round_no}")
def track_round(ctx: CampaignContext, round_no: int) -> str | None:
    """Log the round to its nested MLflow run: params, metrics, batch table, plots, model."""
    from alft.campaign.evaluation import learning_curve_figure

    store = ctx.store
    rr = store.round_row(ctx.name, round_no)
    if rr is None or rr["finished_at"] is None:
        return None
    faults.point(f"r{round_no}.track.start")
    camp = store.campaign(ctx.name)
    parent = camp["mlflow_run_id"]
    tracker = tracker_for(ctx)
    run_id = rr["mlflow_run_id"] or tracker.round_run(parent, ctx.name, ctx.uid, round_no, run_tags(ctx))
    if rr["mlflow_run_id"] != run_id:
        store.set_round_run(ctx.name, round_no, run_id)
    if rr["tracked_at"] is not None:
        return run_id
    steps = {s["step"]: s for s in store.steps(ctx.name, round_no)}
    ev = steps["evaluate"]
    n_labels = int(ev["result"]["n_labels"])
    ts = int(ev["finished_at"].timestamp() * 1000)
    tracker.log_params_once(run_id, flatten(ctx.config.model_dump(mode="json")))
    values = dict(store.metrics(ctx.name, round_no).get(round_no, {}))
    step_seconds = {f"seconds.{k}": float(v["seconds"]) for k, v in steps.items()}
    round_seconds = sum(step_seconds.values())
    headline = {k: v for k, v in values.items() if not k.startswith("f1/")}
    tracker.log_metrics(run_id, {**values, **step_seconds, "n_labels": n_labels, "seconds": round_seconds}, n_labels, ts)
    tracker.log_metrics(parent, {**headline, "n_labels": n_labels, "round": round_no, "round_seconds": round_seconds}, n_labels, ts)

    pool = ctx.data.pool
    sel = store.selections(ctx.name, round_no)
    if not any(a.path == "selected.json" for a in tracker.client.list_artifacts(run_id)):
        tracker.log_table(
            run_id,
            [
                {
                    "example_id": s["example_id"],
                    "pool_id": s["pool_id"],
                    "position": s["position"],
                    "score": s["score"],
                    "strategy": s["strategy"],
                    "text": pool.texts[s["pool_id"]],
                }
                for s in sel
            ],
            "selected.json",
        )
    # the human side: who labeled what, accepted / corrected / typed / auto, audits, waiting
    from alft.campaign.provenance import human_side

    human_metrics, human = human_side(store, ctx.name, round_no, ctx.config.task == "generation")
    tracker.log_metrics(run_id, human_metrics, n_labels, ts)
    if human["labels"]:
        tracker.log_table(run_id, human["labels"], "labels.json")
    tracker.log_dict(run_id, human["annotators"], "annotators.json")
    if human["prelabel"]["source"] is not None:
        tracker.log_dict(run_id, human["prelabel"], "prelabel.json")
    sel_info = (steps.get("select", {}).get("result") or {}).get("info")
    if sel_info:
        # adaptive strategies' decisions (arm, probabilities, reward, switch reason)
        tracker.log_dict(run_id, sel_info, "selection_info.json")
        numeric = {
            f"select.{k}": float(v)
            for k, v in sel_info.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        numeric.update(
            {f"select.p.{a}": float(v) for a, v in (sel_info.get("probabilities") or {}).items()}
        )
        if numeric:
            tracker.log_metrics(run_id, numeric, n_labels, ts)
        if "arm" in sel_info:
            tracker.set_tags(run_id, {"alft.arm": str(sel_info["arm"])})
    per_class = {k[3:]: v for k, v in values.items() if k.startswith("f1/")}
    if per_class:
        tracker.log_dict(run_id, per_class, "per_class_f1.json")
    confusion = ev["result"].get("confusion")
    if confusion:
        tracker.log_artifact(run_id, ctx.workdir / confusion)
    model_dir = steps["train"]["result"]["model_dir"]
    if ctx.config.tracking.log_models:
        # an MLflow model (pyfunc) holding the model folder; found again on a re-track
        tracker.log_model(run_id, ctx.workdir / model_dir, encoder=encoder_record(ctx), step=n_labels)
    else:
        tracker.log_artifacts(run_id, ctx.workdir / model_dir, "model")
    # run_tags again: a round run created before a tag existed gets it now
    tracker.set_tags(run_id, {**run_tags(ctx), "alft.n_labels": str(n_labels), "alft.strategy": rr["strategy"]})

    # learning curve of the campaign so far, on the parent run (overwritten each round)
    pts, names = learning_curve_points(ctx.config.task, store.history(ctx.name))
    fig = learning_curve_figure({ctx.name: pts}, f"{ctx.name}: learning curve", names)
    tracker.log_figure(parent, fig, "learning_curve.png")
    stop = steps.get("stop", {}).get("result", {})
    stop_metrics = {f"forecast.{k}": float(v) for k, v in (stop.get("forecast") or {}).items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None}
    if stop.get("kappa") is not None:
        stop_metrics["stop.kappa"] = float(stop["kappa"])
    if stop_metrics:
        tracker.log_metrics(run_id, stop_metrics, n_labels, ts)
    if stop.get("forecast"):
        tracker.log_dict(run_id, stop["forecast"], "stop_forecast.json")
    if stop.get("stop"):
        tracker.set_tags(parent, {"alft.stop_rule": stop["rule"], "alft.stop_reason": stop["reason"]})
        tracker.finish(parent)
    tracker.finish(run_id)
    faults.point(f"r{round_no}.track")
    store.mark_tracked(ctx.name, round_no)
    say("round %d · track: MLflow run %s", round_no, run_id)
    publish_rounds(ctx, tracker, parent)
    return run_id


def _curve_link(ctx: CampaignContext, tracker: Tracker, parent: str) -> str:
    """Where a reader finds the parent run's learning curve: a path on this machine for a local
    artifact store, the run's page for a tracking server, else the artifact URI."""
    from urllib.parse import unquote, urlsplit

    run = tracker.client.get_run(parent).info
    uri = run.artifact_uri.rstrip("/") + "/learning_curve.png"
    if uri.startswith("file:"):
        path = unquote(urlsplit(uri).path)
        return f"<{path}>" if " " in path else path
    server = _public_uri(ctx.config.tracking_uri()).rstrip("/")
    if server.startswith(("http://", "https://")):
        return f"{server}/#/experiments/{run.experiment_id}/runs/{parent}"
    return uri


def publish_rounds(ctx: CampaignContext, tracker: Tracker, parent: str) -> None:
    """The Prefect markdown artifact ``<campaign>-rounds``: the round table so far, the stop
    state and the learning curve's link. One key per campaign: each round adds its newest version.

    After the store's tracked mark: should the Prefect API fail here, the next round's table
    (or a re-run's) holds this round too.
    """
    import re

    from tasks._common import in_prefect_run
    from tasks.campaign import build_summary, rounds_markdown

    if not in_prefect_run():
        return
    from prefect.artifacts import create_markdown_artifact

    summary = build_summary(ctx)
    summary = summary.model_copy(update={"tracking_uri": _public_uri(summary.tracking_uri)})
    curve = _curve_link(ctx, tracker, parent)
    last = summary.rounds[-1] if summary.rounds else None
    create_markdown_artifact(
        markdown=rounds_markdown(summary, curve),
        key=re.sub(r"[^a-z0-9-]", "-", f"{ctx.name}-rounds"),
        description=f"campaign {ctx.name} after round {last.round if last else '-'}: "
        + (summary.stop_reason or "not stopped"),
    )


def learning_curve_points(task: str, history) -> tuple[list[tuple], tuple[str, ...]]:
    """(labels, metric...) points of the parent run's learning curve, and the metric names; the
    pretrained model's round-0 point (zero-shot accuracy, or the base causal LM's ROUGE-L) at 0 labels."""
    nan = float("nan")
    first = history[0].metrics if history else {}
    if task == "generation":
        pts = [(h.n_labels, h.metrics.get("rouge_l", nan)) for h in history]
        if "base.rouge_l" in first:
            pts.insert(0, (0, first["base.rouge_l"]))
        return pts, ("ROUGE-L",)
    pts = [(h.n_labels, h.metrics.get("accuracy", nan), h.metrics.get("macro_f1", nan)) for h in history]
    if "zero_shot.accuracy" in first:
        pts.insert(0, (0, first["zero_shot.accuracy"], first.get("zero_shot.macro_f1", nan)))
    return pts, ("accuracy", "macro-F1")


@task(
    name="register model",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    cache_policy=NO_CACHE,
)
@mlflow_errors("registering the final model")
def register_final_model(ctx: CampaignContext) -> str | None:
    """Register the stopped campaign's last model in the MLflow model registry (once per run)."""
    store = ctx.store
    camp = store.campaign(ctx.name)
    if camp["stop_reason"] is None or camp["stopped_round"] is None:
        return None  # still running (or waiting for labels): no final model yet
    round_no = int(camp["stopped_round"])
    rr = store.round_row(ctx.name, round_no)
    if rr is None or rr["mlflow_run_id"] is None or rr["tracked_at"] is None:
        say("campaign %s: round %d is not tracked yet; its model is registered once it is", ctx.name, round_no)
        return None
    tracker = tracker_for(ctx)
    run_id = rr["mlflow_run_id"]
    if not ctx.config.tracking.log_models:
        # rounds logged only their folders; the final model still goes to the registry
        model_dir = store.step_result(ctx.name, round_no, "train")["model_dir"]
        n_labels = store.step_result(ctx.name, round_no, "evaluate")["n_labels"]
        tracker.log_model(run_id, ctx.workdir / model_dir, encoder=encoder_record(ctx), step=int(n_labels))
    name = registered_name(ctx)
    version = tracker.register_model(
        name, run_id, tags={"alft.campaign": ctx.name, "alft.round": str(round_no), "alft.stop_reason": camp["stop_reason"]}
    )
    uri = f"models:/{name}/{version}"
    tracker.set_tags(camp["mlflow_run_id"], {"alft.registered_model": uri})
    say("campaign %s: final model (round %d) registered as %s", ctx.name, round_no, uri)
    return uri
