"""MLflow behind one small module.

One experiment per campaign, a parent run per campaign, a nested run per round. Runs are
found again by tags (``alft.campaign_uid``, ``alft.round``), so a resumed round continues
its run instead of adding a duplicate. Everything here is idempotent: metrics carry the
timestamp of the store row they come from (MLflow keeps one point per key/step/time/value),
params are logged once, artifacts overwrite their own path.

Only ``MlflowClient`` is used (no fluent, thread-local active runs): Prefect may run tasks
in worker threads, where fluent nested runs would silently become top-level runs.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MAX_PARAM = 6000
_BAD_KEY = re.compile(r"[^0-9A-Za-z_\-. /]")


def metric_key(name: str) -> str:
    """MLflow accepts only ``[0-9A-Za-z_-. /]`` in keys; BANKING77 has ``reverted_card_payment?``."""
    return _BAD_KEY.sub("_", name)


def _hashed_key(name: str, digits: int = 8) -> str:
    import hashlib

    return f"{metric_key(name)}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:digits]}"


def metric_keys(names: Iterable[str]) -> dict[str, str]:
    """The MLflow key of each name, distinct for distinct names.

    An ASCII name keeps ``metric_key`` (``f1/reverted_card_payment_`` as before, so existing
    dashboards go on). A name with other characters loses them there (``f1/返金`` and
    ``f1/送金`` would both be ``f1/__``, the last value winning), so it gets a short hash of
    the whole name: ``f1/__-7f71508a``; so does an ASCII name whose key another name has too.
    ``Tracker.log_metrics`` logs the renamed ones' table as ``metric_names.json``.
    """
    from collections import Counter

    names = list(dict.fromkeys(names))
    shared = Counter(metric_key(n) for n in names)
    hashed = [n for n in names if not n.isascii() or (metric_key(n) != n and shared[metric_key(n)] > 1)]
    keys = {n: metric_key(n) for n in names}
    for digits in (8, 16, 64):  # a longer hash if two of 8 hex digits meet (2^-32 per pair)
        keys.update({n: _hashed_key(n, digits) for n in hashed})
        if len(set(keys.values())) == len(keys):
            break
    return keys


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b": "value"}`` strings, for MLflow params."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            s = "null" if v is None else str(v)
            out[key] = s if len(s) <= MAX_PARAM else s[: MAX_PARAM - 3] + "..."
    return out


def default_artifact_location(tracking_uri: str, workdir: Path) -> str | None:
    """For a local store (sqlite or file), artifacts go under the campaign folder, not ./mlruns."""
    if tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri:
        return (workdir / "mlartifacts").resolve().as_uri()
    return None  # a tracking server decides (--artifacts-destination)


class Tracker:
    """A campaign's view of MLflow."""

    def __init__(self, uri: str, experiment: str, artifact_location: str | None) -> None:
        from mlflow import MlflowClient

        self.uri = uri
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.client = MlflowClient(tracking_uri=uri)
        self._experiment_id: str | None = None

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                try:
                    self._experiment_id = self.client.create_experiment(
                        self.experiment, artifact_location=self.artifact_location
                    )
                except Exception:
                    # another process created it between our get and create
                    exp = self.client.get_experiment_by_name(self.experiment)
                    if exp is None:
                        raise
                    self._experiment_id = exp.experiment_id
            else:
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    def _find(self, filter_string: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id()], filter_string=filter_string, max_results=2, order_by=["attributes.start_time ASC"]
        )
        return runs[0].info.run_id if runs else None

    def campaign_run(self, name: str, uid: str, tags: Mapping[str, str]) -> str:
        """Get or create the campaign's parent run."""
        found = self._find(f"tags.`alft.campaign_uid` = '{uid}' and tags.`alft.kind` = 'campaign'")
        if found:
            return found
        run = self.client.create_run(
            self.experiment_id(),
            run_name=name,
            tags={"alft.kind": "campaign", "alft.campaign": name, "alft.campaign_uid": uid, **tags},
        )
        return run.info.run_id

    def round_run(self, parent_run_id: str, name: str, uid: str, round_: int, tags: Mapping[str, str]) -> str:
        """Get or create the nested run of round ``round_``."""
        found = self._find(
            f"tags.`alft.campaign_uid` = '{uid}' and tags.`alft.kind` = 'round' and tags.`alft.round` = '{round_}'"
        )
        if found:
            return found
        run = self.client.create_run(
            self.experiment_id(),
            run_name=f"round {round_}",
            tags={
                "mlflow.parentRunId": parent_run_id,
                "alft.kind": "round",
                "alft.campaign": name,
                "alft.campaign_uid": uid,
                "alft.round": str(round_),
                **tags,
            },
        )
        return run.info.run_id

    def target_run(self, name: str, uid: str, spec: str, tags: Mapping[str, str]) -> str:
        """Get or create the run of one target comparison (``alft target``): one per campaign and spec."""
        found = self._find(
            f"tags.`alft.campaign_uid` = '{uid}' and tags.`alft.kind` = 'target' and tags.`alft.target_spec` = '{spec}'"
        )
        if found:
            return found
        run = self.client.create_run(
            self.experiment_id(),
            run_name=f"target · {name}",
            tags={"alft.kind": "target", "alft.campaign": name, "alft.campaign_uid": uid, "alft.target_spec": spec, **tags},
        )
        return run.info.run_id

    def comparison_run(self, name: str, tags: Mapping[str, str]) -> str:
        """A new top-level run comparing campaigns (``alft compare``); one per invocation."""
        run = self.client.create_run(self.experiment_id(), run_name=name, tags={"alft.kind": "comparison", **tags})
        return run.info.run_id

    def log_params_once(self, run_id: str, params: Mapping[str, str]) -> None:
        """Log params the run does not have yet; a changed value is kept as a tag instead."""
        from mlflow.entities import Param, RunTag

        have = self.client.get_run(run_id).data.params
        new = [Param(k, v) for k, v in params.items() if k not in have]
        changed = [RunTag(f"alft.param_changed.{k}", v[:5000]) for k, v in params.items() if k in have and have[k] != v]
        for i in range(0, len(new), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(run_id, params=new[i : i + 100])
        if changed:
            self.client.log_batch(run_id, tags=changed)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, run_id: str, values: Mapping[str, float], step: int, timestamp_ms: int) -> None:
        """Log ``values`` under their MLflow keys (``metric_keys``); keys that differ from their
        names are listed in the run's ``metric_names.json`` (key -> name), merged over batches."""
        from mlflow.entities import Metric

        keys = metric_keys(values)
        ms = [Metric(keys[k], float(v), int(timestamp_ms), int(step)) for k, v in values.items()]
        for i in range(0, len(ms), 1000):
            self.client.log_batch(run_id, metrics=ms[i : i + 1000])
        renamed = {key: name for name, key in keys.items() if key != name}
        if renamed:
            self._log_metric_names(run_id, renamed)

    def _log_metric_names(self, run_id: str, renamed: Mapping[str, str]) -> None:
        """Add ``renamed`` (MLflow key -> metric name) to the run's ``metric_names.json``."""
        import json
        import tempfile

        from mlflow.exceptions import MlflowException

        table: dict[str, str] = {}
        if any(a.path == "metric_names.json" for a in self.client.list_artifacts(run_id)):
            with tempfile.TemporaryDirectory(prefix="alft-mlflow-") as tmp:
                try:
                    local = self.client.download_artifacts(run_id, "metric_names.json", tmp)
                    table = json.loads(Path(local).read_text(encoding="utf-8"))
                except (MlflowException, OSError, ValueError):
                    table = {}  # unreadable: written again whole below
        if all(table.get(k) == v for k, v in renamed.items()):
            return  # a re-log (resumed campaign): nothing new
        self.client.log_dict(run_id, {**table, **renamed}, "metric_names.json")

    def has_metric(self, run_id: str, key: str) -> bool:
        return key in self.client.get_run(run_id).data.metrics

    def log_inputs(self, run_id: str, datasets: list[dict[str, Any]]) -> None:
        """Record datasets as run inputs; each dict has name, source, digest, context, rows."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.types import ColSpec, Schema

        have = {(d.dataset.name, d.dataset.digest) for d in self.client.get_run(run_id).inputs.dataset_inputs}
        inputs = []
        for d in datasets:
            if (d["name"], d["digest"][:36]) in have:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                source = resolve_dataset_source(d["source"])
            schema = Schema([ColSpec("string", c) for c in d["columns"]])
            ds = MetaDataset(source=source, name=d["name"], digest=d["digest"][:36], schema=schema)
            inputs.append(DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", d["context"])]))
        if inputs:
            self.client.log_inputs(run_id, datasets=inputs)

    def log_table(self, run_id: str, rows: list[dict[str, Any]], artifact_file: str) -> None:
        import pandas as pd

        self.client.log_table(run_id, data=pd.DataFrame(rows), artifact_file=artifact_file)

    def log_dict(self, run_id: str, data: Any, artifact_file: str) -> None:
        self.client.log_dict(run_id, data, artifact_file)

    def log_figure(self, run_id: str, figure, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        self.client.log_figure(run_id, figure, artifact_file)
        plt.close(figure)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(run_id, str(folder), artifact_path)

    # ------------------------------------------------------------------ models
    def logged_model(self, run_id: str, name: str = "model"):
        """The MLflow logged model ``name`` of the run (a ``LoggedModel``), or None."""
        exp = self.client.get_run(run_id).info.experiment_id
        found = self.client.search_logged_models(
            [exp], filter_string=f"name = '{name}' AND source_run_id = '{run_id}'", max_results=10
        )
        if not found:
            return None
        from mlflow.entities import LoggedModelStatus

        ready = [m for m in found if m.status == LoggedModelStatus.READY]
        return (ready or list(found))[0]

    def log_model(
        self,
        run_id: str,
        model_dir: Path,
        *,
        name: str = "model",
        encoder: Mapping[str, Any] | None = None,
        step: int = 0,
    ) -> str:
        """Log the alft model folder ``model_dir`` as the run's MLflow pyfunc model ``name``.

        Returns the logged model's id (``models:/<id>``; ``runs:/<run_id>/<name>`` also loads
        it). Idempotent: a READY model of that name on the run is kept as it is; one left
        PENDING by a crash mid-upload gets its artifacts written again (same paths) and is
        finalized. ``encoder``: ``alft.mlflow_model.encoder_config(...)``, needed by head models.
        """
        import os
        import tempfile

        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model

        from alft.models import pyfunc as mlflow_model

        model = self.logged_model(run_id, name)
        if model is not None and model.status == LoggedModelStatus.READY:
            return model.model_id
        if model is None:
            exp = self.client.get_run(run_id).info.experiment_id
            model = self.client.create_logged_model(exp, name=name, source_run_id=run_id)
        # MLflow draws a tqdm bar per artifact copy; alft reports progress itself
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        with tempfile.TemporaryDirectory(prefix="alft-mlflow-model-") as tmp:
            local = Path(tmp) / name
            # the ids in MLmodel let MLflow tie a loaded model back to its run and logged model
            stamp = Model(
                artifact_path=model.artifact_location,
                model_uuid=model.model_id,
                run_id=run_id,
                model_id=model.model_id,
            )
            meta = mlflow_model.save(local, Path(model_dir), encoder=dict(encoder) if encoder else None, mlflow_model=stamp)
            self.client.log_model_artifacts(model.model_id, str(local))
        self.client.set_logged_model_tags(model.model_id, {"alft.kind": meta["kind"], "alft.lora": str(bool(meta.get("lora")))})
        outputs = self.client.get_run(run_id).outputs
        if model.model_id not in {o.model_id for o in (outputs.model_outputs if outputs else [])}:
            self.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step)])
        self.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        self.set_tags(run_id, {"alft.model_id": model.model_id})
        return model.model_id

    def register_model(self, registered_name: str, run_id: str, name: str = "model", tags: Mapping[str, str] | None = None) -> str:
        """Register the run's logged model ``name`` under ``registered_name``; returns the version.

        Idempotent: when a version of ``registered_name`` already comes from this run's
        model, that version is returned and none is added.
        """
        from mlflow.entities import LoggedModelStatus
        from mlflow.exceptions import MlflowException

        from alft.errors import ModelError

        model = self.logged_model(run_id, name)
        if model is None or model.status != LoggedModelStatus.READY:
            raise ModelError(f"MLflow run {run_id} has no logged model '{name}' to register as '{registered_name}'")
        # The artifact location, not models:/<id>: MLflow 3.17's SQL registry resolves a
        # models:/ source with a client on the process-global tracking URI, not this one.
        source = model.artifact_location
        try:
            self.client.create_registered_model(registered_name, tags=dict(tags or {}))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        for mv in self.client.search_model_versions(f"name = '{registered_name}' AND run_id = '{run_id}'"):
            if mv.source == source or getattr(mv, "model_id", None) == model.model_id:
                return str(mv.version)
        mv = self.client.create_model_version(
            registered_name, source=source, run_id=run_id, model_id=model.model_id, tags=dict(tags or {})
        )
        return str(mv.version)

    def finish(self, run_id: str) -> None:
        self.client.set_terminated(run_id, "FINISHED")

    def run_status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status
