"""The config sections about the data, the encoder, the strategy, the oracle and where results go.

``data``, ``model``, ``strategy`` (and ``cold_start``), ``oracle``, ``zero_shot``,
``tracking`` and ``store``; the trainers are in ``alft.config.trainers``, the stop rules in
``alft.config.stopping``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from alft.config.base import Strict


class DataSource(Strict):
    """Where a split comes from: a file (JSONL, CSV, Parquet), a saved dataset folder, or a hub id."""

    path: str = Field(description="file, saved `datasets` folder, or Hugging Face Hub dataset id")
    format: Literal["auto", "json", "csv", "parquet", "disk", "hub"] = "auto"
    split: str = Field("train", description="split to take from a dataset folder or hub id")


class DataConfig(Strict):
    """Pool and evaluation data and the names of their columns."""

    pool: DataSource
    eval: DataSource | None = None
    id_field: str = "id"
    text_field: str = "text"
    label_field: str | None = Field(
        "label",
        description="gold label column: read by the simulated oracle and the evaluation "
        "(task generation: the reference response column)",
    )
    instruction_field: str = Field("instruction", description="task generation: the instruction column")
    input_field: str | None = Field(
        "input", description="task generation: optional input column (may be empty or missing per row)"
    )
    candidate_field: str | None = Field(
        None,
        description="task generation: a candidate (draft) response column, shown to the expert to "
        "correct and used by the ifd strategy",
    )
    labels: list[str] | str | None = Field(
        None,
        description="the label set: a list, a JSON file holding a list, or null to take the "
        "sorted distinct values of the pool's gold column",
    )

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, v: list[str] | str | None) -> list[str] | str | None:
        if isinstance(v, list):
            if len(v) < 2:
                raise ValueError(f"needs at least 2 labels, got {len(v)}")
            dup = sorted({x for x in v if v.count(x) > 1})
            if dup:
                raise ValueError(f"duplicate labels: {dup}")
            if any(not str(x).strip() for x in v):
                raise ValueError("labels must be non-empty strings")
        return v


class ModelConfig(Strict):
    """The encoder whose embeddings are the features (and the base for the transformer trainer)."""

    path: str = Field(
        "packaged:all-MiniLM-L6-v2",
        description="model folder, hub id, or packaged:all-MiniLM-L6-v2 (shipped on PyPI)",
    )
    max_length: int = Field(128, ge=8, le=8192, description="tokens per text; longer ones are truncated")
    batch_size: int = Field(
        256,
        ge=1,
        le=4096,
        description="most texts per forward pass when embedding (a batch also stops at 2,048 "
        "padded tokens)",
    )
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores)")
    cache_dir: str | None = Field(
        None, description="embedding cache folder (default: $ALFT_CACHE_DIR or ~/.cache/alft)"
    )
    embeddings: Literal["base", "current"] = Field(
        "base",
        description="features of the diversity strategies: base = model.path, frozen and cached; "
        "current = the last round's fine-tuned model (refreshed each round; transformer and sft "
        "trainers)",
    )
    shards: int = Field(
        1,
        ge=1,
        le=1024,
        description="embed step: split the texts missing from the cache into this many shards, each "
        "embedded by its own Prefect task on the flow's task runner (vectors are bit-identical to 1)",
    )
    task_runner: Literal["thread", "dask"] = Field(
        "thread",
        description="the campaign flow's task runner (set by `alft run`): thread = Prefect's thread "
        "pool; dask = prefect-dask's DaskTaskRunner (extra `dask`), so shards run on a Dask cluster",
    )
    dask_address: str | None = Field(
        None,
        description="task_runner dask: scheduler address of a running cluster (tcp://host:8786); "
        "default: a LocalCluster of min(shards, cores) single-threaded worker processes for the run",
    )

    @model_validator(mode="after")
    def _dask_address_needs_dask(self) -> ModelConfig:
        if self.dask_address is not None and self.task_runner != "dask":
            raise ValueError("model.dask_address needs model.task_runner: dask")
        return self


class StrategyConfig(Strict):
    """A registered strategy by name, with its options."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    dedup: float | None = Field(
        None,
        gt=0,
        le=1,
        description="drop candidates whose cosine similarity to a labeled example or to one earlier "
        "in the batch exceeds this (near-duplicate gating; e.g. 0.95)",
    )
    control_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="random control arm: in every round after round 0, round(share * k) of the k "
        "examples are drawn uniformly from the candidates the strategy did not pick (marked "
        "random-control); their labels estimate the previous model's accuracy on the unlabeled "
        "pool without bias (alft/campaign/control.py)",
    )


class OracleConfig(Strict):
    """Who answers the label requests: ``simulated`` reads the gold column, ``human`` waits.

    A human round persists its batch, says where to label it, then waits without holding
    a worker: ``suspend`` (the flow run ends and re-runs from the top on resume; needs a
    deployment), ``pause`` (the process stays, blocked on the Prefect API), ``poll`` (the
    process checks the store, for runs without a Prefect server to resume them), or
    ``auto``: suspend in a deployment, pause against a Prefect server, poll otherwise.
    """

    kind: Literal["simulated", "human"] = "simulated"
    annotator: str = "oracle:gold"
    wait: Literal["auto", "suspend", "pause", "poll"] = "auto"
    timeout_s: int = Field(7 * 24 * 3600, ge=1, description="longest wait for one batch")
    poll_s: float = Field(2.0, gt=0, description="store check interval in poll mode")
    overlap: int = Field(1, ge=1, le=10, description="annotators per example (votes needed to resolve one)")
    resolve: Literal["majority", "unanimous"] = Field(
        "majority",
        description="overlap > 1: majority = a strict majority of the votes wins, a tie asks one more "
        "annotator; unanimous = every disagreement is routed back to its annotators until they agree",
    )
    adjudicator: str | None = Field(
        None, description="overlap > 1: this annotator's vote decides a disputed example"
    )
    min_fraction: float = Field(
        1.0, gt=0, le=1, description="with a deadline: the share of the batch that lets the round go on"
    )
    deadline_s: int | None = Field(
        None, ge=1, description="seconds after which min_fraction suffices; the rest returns to the pool"
    )
    page_url: str = Field(
        "http://127.0.0.1:8765", description="where `alft label` serves the labeling page (shown in the artifact)"
    )

    def policy(self):
        """How label events resolve into labels (``alft.labeling.ResolvePolicy``)."""
        from alft.resolve import ResolvePolicy

        return ResolvePolicy(overlap=self.overlap, rule=self.resolve, adjudicator=self.adjudicator)


class ZeroShotConfig(Strict):
    """Cold start from the pretrained encoder: class probabilities from text-label similarity."""

    template: str = Field(
        "{label}",
        description="how a label becomes a sentence to embed; {label} is the label name with _ and - "
        "as spaces",
    )
    descriptions: dict[str, str] | str | None = Field(
        None, description="label -> description (or a JSON file of one); used instead of the template"
    )
    temperature: float = Field(0.05, gt=0, le=10, description="softmax temperature over cosine similarities")

    @field_validator("template")
    @classmethod
    def _has_label(cls, v: str) -> str:
        if "{label}" not in v:
            raise ValueError("template must contain {label}")
        return v


class TrackingConfig(Strict):
    """MLflow. Default: SQLite file ``mlflow.db`` in the campaign folder."""

    uri: str | None = None
    experiment: str | None = Field(None, description="default: alft/<campaign name>")
    artifact_location: str | None = Field(
        None, description="default: <workdir>/mlartifacts for a sqlite:/// or file tracking URI"
    )
    log_models: bool = Field(
        True, description="log each round's model as an MLflow model (mlflow.pyfunc can load it back)"
    )
    registered_model: str | None = Field(
        None,
        description="model registry name of the campaign's final model (default: alft-<campaign name>); "
        "registered when the campaign stops",
    )


class StoreConfig(Strict):
    """The campaign store: any SQLAlchemy URL. Default: SQLite ``campaign.db`` in the campaign folder."""

    url: str | None = None
