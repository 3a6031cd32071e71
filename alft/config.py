"""Typed campaign configuration: YAML in ``conf/``, validated by pydantic, overridable from the CLI.

Rules
-----
* Unknown keys are errors (``extra="forbid"``); messages name the key, the file and the line.
* ``${VAR}`` and ``${VAR:-default}`` in string values are replaced from the environment, so
  secrets (a PostgreSQL password in ``store.url``) stay out of files.
* Relative paths are resolved against the config file's folder, except ``workdir``, whose
  default is ``runs/<name>`` under the current directory.
* ``--set key.sub=value`` overrides are applied before validation; values are YAML scalars.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alft.errors import ConfigError

__all__ = [
    "CampaignConfig",
    "DataConfig",
    "DataSource",
    "load_config",
    "parse_overrides",
]


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


class HeadTrainerConfig(Strict):
    """Multinomial logistic regression on frozen embeddings."""

    C: float = Field(20.0, gt=0, description="inverse L2 regularisation strength")
    max_iter: int = Field(1000, ge=10)
    class_weight: Literal["balanced"] | None = Field(
        "balanced",
        description="uncertainty sampling skews the labeled classes; balanced weights undo that "
        "(+0.5 to +1 accuracy point at 1,000 BANKING77 labels with margin)",
    )
    mc_dropout: float = Field(
        0.1, gt=0, lt=1, description="feature dropout rate of the MC samples (strategies such as bald)"
    )


class LoraConfig(Strict):
    """Low-rank adapters (peft): only the adapters (and a classification head) are trained."""

    r: int = Field(8, ge=1, le=1024, description="adapter rank")
    alpha: float = Field(16.0, gt=0, description="scaling numerator: the update is scaled by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["auto"] = Field(
        "auto",
        description="module names to adapt; auto: the attention projections of the architecture "
        "(peft's defaults per model type)",
    )


class TransformerTrainerConfig(Strict):
    """Fine-tuning of an AutoModelForSequenceClassification checkpoint (encoder or decoder) on CPU."""

    epochs: float = Field(3.0, gt=0)
    learning_rate: float = Field(5e-5, gt=0, lt=1)
    batch_size: int = Field(16, ge=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    max_length: int = Field(128, ge=8, le=8192)
    lora: LoraConfig | None = Field(None, description="train LoRA adapters instead of every weight")
    init: Literal["base", "previous"] = Field(
        "base",
        description="base: start each round from model.path (a fresh head); previous: continue "
        "from the last round's fine-tuned weights",
    )


class SFTTrainerConfig(Strict):
    """Causal-LM supervised fine-tuning for instruction -> response data (loss on the response only)."""

    epochs: float = Field(3.0, gt=0)
    learning_rate: float = Field(2e-4, gt=0, lt=1)
    batch_size: int = Field(4, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    max_length: int = Field(512, ge=16, le=32768, description="prompt + response tokens; longer ones are cut")
    lora: LoraConfig | None = Field(
        default_factory=LoraConfig, description="LoRA adapters (default); null: full fine-tuning"
    )
    init: Literal["base", "previous"] = "base"
    chat_template: Literal["auto", "never"] = Field(
        "auto", description="auto: format prompts with the tokenizer's chat template when it has one"
    )
    max_new_tokens: int = Field(
        64, ge=1, le=4096, description="greedy continuation length for uncertainty and evaluation"
    )
    gen_batch_size: int = Field(8, ge=1, le=1024, description="prompts per generation batch")


class TrainerConfig(Strict):
    """Which trainer fine-tunes each round, and the options of each."""

    kind: Literal["head", "transformer", "sft"] = Field(
        "head", description="head | transformer (classification) | sft (generation)"
    )
    mc_samples: int = Field(
        10, ge=2, le=200, description="stochastic passes per candidate for strategies that need prob_samples"
    )
    head: HeadTrainerConfig = Field(default_factory=HeadTrainerConfig)
    transformer: TransformerTrainerConfig = Field(default_factory=TransformerTrainerConfig)
    sft: SFTTrainerConfig = Field(default_factory=SFTTrainerConfig)


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


METRICS = {"classification": ("accuracy", "macro_f1"), "generation": ("rouge_l",)}


class PlateauConfig(Strict):
    metric: Literal["accuracy", "macro_f1", "rouge_l"] = "accuracy"
    patience: int = Field(2, ge=1)
    min_delta: float = Field(0.002, ge=0)


class TargetConfig(Strict):
    metric: Literal["accuracy", "macro_f1", "rouge_l"] = "accuracy"
    value: float = Field(gt=0, le=1)


class StabilizingConfig(Strict):
    """Stop once predictions stop changing (Bloodgood & Vijay-Shanker, 2009)."""

    threshold: float = Field(0.99, gt=0, le=1, description="Cohen's kappa between consecutive rounds' predictions")
    window: int = Field(3, ge=1, description="consecutive round pairs that must all reach the threshold")
    stop_set: Literal["eval", "pool_sample"] = Field(
        "eval", description="eval: the eval split's predictions; pool_sample: a fixed sample of the pool"
    )
    stop_set_size: int = Field(2000, ge=1, description="pool_sample: examples in the stop set")


class UncertaintyStopConfig(Strict):
    """Stop once the model is sure about the unlabeled pool."""

    threshold: float = Field(0.05, gt=0, le=1)
    measure: Literal["least_confidence", "margin", "entropy"] = Field(
        "least_confidence", description="entropy is normalised by log C"
    )
    reduce: Literal["mean", "max"] = "mean"


class ForecastConfig(Strict):
    """Fit a learning curve (inverse power law) and stop when the next batch would gain too little."""

    metric: Literal["accuracy", "macro_f1", "rouge_l"] = "accuracy"
    min_gain_per_label: float = Field(
        2e-5, gt=0, description="forecast gain of the next batch per label (2e-5 = 0.2 points per 100 labels)"
    )
    min_rounds: int = Field(5, ge=3, description="rounds before the curve is trusted (3 parameters)")
    patience: int = Field(2, ge=1, description="consecutive rounds the forecast must stay below the threshold")
    max_rmse: float | None = Field(None, gt=0, description="ignore fits worse than this (metric units)")


class StopConfig(Strict):
    """Stop rules beyond the budget (always on) and an exhausted pool (always on)."""

    max_rounds: int | None = Field(None, ge=1, description="rounds including the cold start")
    plateau: PlateauConfig | None = None
    target: TargetConfig | None = None
    stabilizing: StabilizingConfig | None = None
    uncertainty: UncertaintyStopConfig | None = None
    forecast: ForecastConfig | None = None


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


NAME_RE = r"^[a-z0-9][a-z0-9._-]{0,62}$"


class CampaignConfig(Strict):
    """A whole campaign: what to label, with which model, how many, and when to stop."""

    name: str = Field(pattern=NAME_RE, description="campaign name: lowercase, digits, . _ -")
    seed: int = Field(0, ge=0, description="every random choice derives from it and the round")
    budget: int = Field(gt=0, description="total labels, the cold-start batch included")
    batch_size: int = Field(100, gt=0, description="labels asked for per round after round 0")
    initial_size: int | None = Field(
        None, gt=0, description="labels asked for in round 0 (default: batch_size)"
    )
    workdir: str | None = Field(None, description="campaign folder (default: runs/<name>)")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    strategy: StrategyConfig = Field(default_factory=lambda: StrategyConfig(name="margin"))
    task: Literal["classification", "generation"] = Field(
        "classification",
        description="classification: a label from the label set; generation: the expert writes the "
        "reference response to an instruction",
    )
    cold_start: StrategyConfig = Field(default_factory=lambda: StrategyConfig(name="kmeans"))
    zero_shot: ZeroShotConfig | None = Field(
        None,
        description="classification: give round 0 zero-shot probabilities (so it can use uncertainty "
        "or hybrid strategies) and log their accuracy",
    )
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    oracle: OracleConfig = Field(default_factory=OracleConfig)
    stop: StopConfig = Field(default_factory=StopConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)

    @property
    def first_batch(self) -> int:
        return self.initial_size or self.batch_size

    @model_validator(mode="after")
    def _check(self) -> CampaignConfig:
        from strategies import StrategyError, get_spec, get_strategy

        MODEL_INPUTS = {"probs", "prob_samples", "features", "head", "generation"}  # noqa: N806
        CLASSIFIER_INPUTS = {"probs", "prob_samples", "features", "head"}  # noqa: N806
        generation = self.task == "generation"

        if generation != (self.trainer.kind == "sft"):
            raise ValueError(
                f"task '{self.task}' cannot use trainer.kind '{self.trainer.kind}': generation "
                "campaigns train with sft, classification ones with head or transformer"
            )
        if generation and self.data.labels is not None:
            raise ValueError("task generation has no label set: remove data.labels")
        if generation and self.zero_shot is not None:
            raise ValueError("zero_shot gives class probabilities: it needs task classification")
        if self.model.embeddings == "current" and self.trainer.kind == "head":
            raise ValueError(
                "model.embeddings 'current' needs a fine-tuned encoder (trainer.kind transformer or "
                "sft); the head trainer never changes the base model's embeddings"
            )
        if self.budget < self.first_batch:
            raise ValueError(
                f"budget ({self.budget}) is smaller than one batch "
                f"(initial_size={self.first_batch}); raise budget or lower initial_size"
            )
        for key in ("strategy", "cold_start"):
            sc: StrategyConfig = getattr(self, key)
            try:
                get_spec(sc.name)
                built = get_strategy(sc.name, **sc.options)
            except StrategyError as exc:
                raise ValueError(f"{key}: {exc}") from None
            if key == "cold_start" and sc.control_share > 0:
                raise ValueError(
                    "cold_start.control_share: round 0 has no model to measure; set "
                    "strategy.control_share (rounds after round 0) instead"
                )
            model_needs = sorted(built.needs & MODEL_INPUTS)
            wrong = sorted(built.needs & (CLASSIFIER_INPUTS if generation else {"generation"}))
            if wrong:
                gives = "generation statistics" if generation else "class probabilities and features"
                raise ValueError(
                    f"{key}: strategy '{sc.name}' needs {', '.join(wrong)}, which a {self.task} model "
                    f"does not give (it gives {gives}); run `alft strategies` for the list"
                )
            if "generation" in built.needs and self.data.candidate_field is None and sc.name == "ifd":
                raise ValueError(f"{key}: strategy 'ifd' needs candidate responses: set data.candidate_field")
            if key == "cold_start" and model_needs:
                # before any label the pretrained model is all there is: a causal LM scores its
                # own generations, and a zero-shot classifier gives probabilities and features
                allowed = {"generation"} if generation else (
                    {"probs", "features", "head"} if self.zero_shot is not None else set()
                )
                missing = sorted(set(model_needs) - allowed)
                if missing:
                    hint = (
                        "set zero_shot to give round 0 probabilities, or use random, kmeans or kcenter"
                        if not generation
                        else "use random, kmeans, kcenter or a generation strategy"
                    )
                    raise ValueError(
                        f"cold_start: strategy '{sc.name}' needs {', '.join(missing)} from a trained "
                        f"model, which does not exist before the first labels; {hint}"
                    )
        metric_rules = [r for r in (self.stop.plateau, self.stop.target, self.stop.forecast) if r is not None]
        if metric_rules and self.data.eval is None:
            raise ValueError("stop.plateau, stop.target and stop.forecast need data.eval (metrics come from it)")
        for key in ("stabilizing", "uncertainty"):
            if getattr(self.stop, key) is not None and generation:
                raise ValueError(f"stop.{key} reads class predictions: it needs task classification")
        st = self.stop.stabilizing
        if st is not None and st.stop_set == "eval" and self.data.eval is None:
            raise ValueError("stop.stabilizing.stop_set 'eval' needs data.eval; or use stop_set: pool_sample")
        for rule in metric_rules:
            if rule.metric not in METRICS[self.task]:
                raise ValueError(
                    f"stop rule metric '{rule.metric}' is not measured in a {self.task} campaign "
                    f"(it has {', '.join(METRICS[self.task])})"
                )
        if self.oracle.kind == "human" and self.oracle.deadline_s is None and self.oracle.min_fraction < 1:
            raise ValueError("oracle.min_fraction below 1 needs oracle.deadline_s (when it may apply)")
        if self.oracle.kind == "simulated" and self.data.label_field is None:
            raise ValueError("oracle.kind 'simulated' needs data.label_field (the gold column)")
        return self

    # ----------------------------------------------------------------- resolved paths
    def workdir_path(self) -> Path:
        return Path(self.workdir) if self.workdir else Path("runs") / self.name

    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{(self.workdir_path() / 'campaign.db').resolve()}"

    def tracking_uri(self) -> str:
        return self.tracking.uri or f"sqlite:///{(self.workdir_path() / 'mlflow.db').resolve()}"

    def experiment_name(self) -> str:
        return self.tracking.experiment or f"alft/{self.name}"

    def cache_dir(self) -> Path:
        if self.model.cache_dir:
            return Path(self.model.cache_dir)
        env = os.environ.get("ALFT_CACHE_DIR")
        return Path(env) if env else Path.home() / ".cache" / "alft"


# --------------------------------------------------------------------------- loading

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _UnsetVariable(Exception):
    def __init__(self, key: tuple[str, ...], name: str) -> None:
        self.key, self.name = key, name


def _expand_env(value: Any, key: tuple[str, ...] = ()) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise _UnsetVariable(key, name)

        return _ENV_RE.sub(repl, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, (*key, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*key, str(i))) for i, v in enumerate(value)]
    return value


def _where(key: tuple[str, ...], source: str, text: str, overridden: set) -> str:
    """``source line N`` (or ``source (from --set key)``) of the closest key that has one."""
    lines: dict[tuple[str, ...], int] | None = None
    for cut in range(len(key), -1, -1):
        if key[:cut] in overridden:
            return f"{source} (from --set {'.'.join(key[:cut])})"
        if lines is None:
            lines = _line_map(text)
        if key[:cut] in lines:
            return f"{source} line {lines[key[:cut]]}"
    return source


def _line_map(text: str) -> dict[tuple[str, ...], int]:
    """Key path -> 1-based line number, for error messages."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = (*path, str(k.value))
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                key = (*path, str(i))
                lines[key] = v.start_mark.line + 1
                walk(v, key)

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def parse_overrides(items: list[str]) -> dict[tuple[str, ...], Any]:
    """``["budget=500", "strategy.name=entropy"]`` -> ``{("budget",): 500, ...}``."""
    out: dict[tuple[str, ...], Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value (e.g. --set budget=500)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
        out[tuple(key.split("."))] = value
    return out


def _apply_override(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"--set {'.'.join(path)}: '{'.'.join(path[: i + 1])}' is not a mapping"
            )
        node = child
    node[path[-1]] = value


def _format_validation(
    exc: ValidationError, source: str, lines: dict[tuple[str, ...], int], overridden: set[tuple[str, ...]]
) -> str:
    msgs = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        dotted = ".".join(loc) or "(top level)"
        where = source
        # walk up to the closest key that has a line (a missing key's parent, say)
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in overridden:
                where = f"{source} (from --set {'.'.join(loc[:cut])})"
                break
            if loc[:cut] in lines:
                where = f"{source} line {lines[loc[:cut]]}"
                break
        if err["type"] == "extra_forbidden":
            msg = f"unknown key '{dotted}'"
        elif err["type"] == "missing":
            msg = f"missing required key '{dotted}'"
        else:
            text = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
            msg = f"{dotted}: {text}{shown}" if loc else f"{text}"
        msgs.append(f"{where}: {msg}")
    return "invalid config\n  " + "\n  ".join(msgs)


def _refuse_nul(value: Any, key: tuple[str, ...], source: str, text: str, overridden: set) -> None:
    """A NUL byte in a key or value is never meant (and breaks every path given to the OS)."""
    bad: tuple[str, ...] | None = None
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and "\x00" in k:
                bad = (*key, k)
                break
            _refuse_nul(v, (*key, str(k)), source, text, overridden)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_nul(v, (*key, str(i)), source, text, overridden)
    elif isinstance(value, str) and "\x00" in value:
        bad = key
    if bad is None:
        return
    dotted = ".".join(bad) or "(top level)"
    raise ConfigError(f"{_where(bad, source, text, overridden)}: '{dotted}' holds a NUL byte")


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make relative local paths absolute against ``base`` (the config file's folder)."""

    def fix(value: str | None) -> str | None:
        if not value or "://" in value or value.startswith("packaged:"):
            return value
        p = Path(value).expanduser()
        if p.is_absolute():
            return str(p)
        candidate = (base / p).resolve()
        # A relative string that is not a local path is left alone: it may be a hub id.
        return str(candidate) if candidate.exists() or value.startswith(".") else value

    d = data.get("data")
    if isinstance(d, dict):
        for split in ("pool", "eval"):
            src = d.get(split)
            if isinstance(src, dict) and isinstance(src.get("path"), str):
                if src.get("format") != "hub":
                    src["path"] = fix(src["path"])
        if isinstance(d.get("labels"), str):
            d["labels"] = fix(d["labels"])
    m = data.get("model")
    if isinstance(m, dict):
        for key in ("path", "cache_dir"):
            if isinstance(m.get(key), str):
                m[key] = fix(m[key])
    z = data.get("zero_shot")
    if isinstance(z, dict) and isinstance(z.get("descriptions"), str):
        z["descriptions"] = fix(z["descriptions"])
    if isinstance(data.get("workdir"), str):
        w = Path(data["workdir"]).expanduser()
        data["workdir"] = str(w if w.is_absolute() else (base / w).resolve())


def read_text_file(path: Path, where: str, encoding: str = "utf-8") -> str:
    """A config-side text file's contents, or a ConfigError naming ``where`` and the problem."""
    try:
        return Path(path).read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror})") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> CampaignConfig:
    """Read, override, validate and resolve a campaign config file.

    The returned config has absolute local paths and an absolute ``workdir``, so it can be
    passed to a flow run that executes elsewhere (a worker, a deployment).
    """
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"config path is a folder, not a YAML file: {path}")
    text = read_text_file(path, source)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}{where}: malformed YAML: {problem}") from None
    if data is None:
        raise ConfigError(f"{source}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping of keys, got {type(data).__name__}")
    over = parse_overrides(overrides or [])
    for key_path, value in over.items():
        _apply_override(data, key_path, value)
    try:
        data = _expand_env(data)
    except _UnsetVariable as exc:
        raise ConfigError(
            f"{_where(exc.key, source, text, set(over))}: '{'.'.join(exc.key)}': environment variable "
            f"${{{exc.name}}} is not set (write ${{{exc.name}:-default}} for a default)"
        ) from None
    _refuse_nul(data, (), source, text, set(over))
    _resolve_paths(data, path.resolve().parent)
    if "workdir" not in data or data["workdir"] is None:
        name = data.get("name")
        if isinstance(name, str) and re.match(NAME_RE, name):
            data["workdir"] = str((Path.cwd() / "runs" / name).resolve())
    try:
        return CampaignConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source, _line_map(text), set(over))) from None


def config_from_dict(data: dict[str, Any], source: str = "<parameters>") -> CampaignConfig:
    """Validate a config given as a mapping (flow parameters from the Prefect API)."""
    try:
        return CampaignConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source, {}, set())) from None


def config_digest(cfg: CampaignConfig) -> str:
    """Stable short digest of the resolved config (for tags and change detection)."""
    import hashlib

    blob = json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
