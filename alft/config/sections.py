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


#: ``packaged:<name>`` models that install with the project (``alft.models.packaged``): the
#: encoder, and two causal LMs shipped as GGUF files.
PACKAGED_MODELS = ("all-MiniLM-L6-v2", "smollm2-135m-instruct", "gemma3-270m")


class ModelConfig(Strict):
    """The encoder whose embeddings are the features (and the base for the transformer trainer)."""

    path: str = Field(
        "packaged:all-MiniLM-L6-v2",
        description="model folder, hub id, packaged:all-MiniLM-L6-v2 (the encoder shipped on PyPI), "
        "packaged:smollm2-135m-instruct or packaged:gemma3-270m (causal LMs shipped as GGUF files), or "
        "gguf:/path/to/file.gguf (any GGUF file transformers reads); a GGUF model is dequantized once "
        "into a transformers folder in the alft cache (model.cache_dir)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="where the causal LM of a generation campaign runs (scoring, fine-tuning, "
        "evaluation): auto = CUDA when torch sees a GPU, else CPU; CUDA runs in bfloat16 where the GPU "
        "supports it (fine-tuning in float32 weights with bf16 autocast), CPU in float32",
    )
    max_length: int = Field(128, ge=8, le=8192, description="tokens per text; longer ones are truncated")
    batch_size: int = Field(
        256,
        ge=1,
        le=4096,
        description="most texts per forward pass when embedding (a batch also stops at 2,048 "
        "padded tokens)",
    )
    pooling: Literal["mean", "last", "cls"] = Field(
        "mean",
        description="how a text's token states become one vector: mean = average over its tokens; "
        "last = its last token's state (for a decoder, the one position that saw the whole text); "
        "cls = its first token's (BERT-style [CLS]); part of the embedding cache key",
    )
    center: bool = Field(
        False,
        description="subtract the pool's mean vector from the pool's and the eval split's features "
        "(the eval split with the pool's mean, never its own), then L2-normalise again; for decoder "
        "embeddings, whose vectors are nearly all alike. Applied after the cache, which keeps the raw vectors",
    )
    backend: Literal["auto", "onnx", "torch"] = Field(
        "auto",
        description="how the encoder embeds: onnx = ONNX Runtime on the encoder exported once (fused by "
        "onnxruntime's transformer optimizer, cached in the alft cache by the model's digest; vectors equal "
        "torch's within 1e-5; ~2.4x torch's speed on a 2-core CPU, benchmarks/embedding_throughput.py); torch = transformers in torch; auto = onnx when "
        "onnxruntime is installed and the model is a BERT-like encoder that exports, else torch (a log "
        "line names the choice). onnx without onnxruntime is an error",
    )
    onnx_quantize: Literal["int8"] | None = Field(
        None,
        description="int8 = embed with the ONNX graph's int8 dynamic quantisation (weights int8, cached "
        "apart from the fp32 graph): faster on CPU, vectors differ slightly, so it is part of the embedding "
        "cache key; needs the onnx backend (auto must resolve to onnx); null = fp32",
    )
    num_threads: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads, and the ONNX Runtime session's intra-op threads (default: all cores)",
    )
    blas_threads: int = Field(
        1,
        ge=1,
        le=1024,
        description="BLAS threads (OpenBLAS of numpy, SciPy, scikit-learn and FAISS, set through "
        "threadpoolctl) while a strategy scores and selects and while the head trainer fits; 1 because "
        "these are many small or memory-bound calls, where a thread pool's hand-off costs more than it "
        "gives (the head's fit ran 10x slower with 2 threads than with 1 on 2 shared cores); raise it on "
        "a dedicated many-core machine. Torch steps use model.num_threads",
    )
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
    def _quantize_needs_onnx(self) -> ModelConfig:
        if self.onnx_quantize is not None and self.backend == "torch":
            raise ValueError("model.onnx_quantize needs model.backend onnx or auto, not torch")
        return self

    @field_validator("path")
    @classmethod
    def _known_packaged(cls, v: str) -> str:
        if v.startswith("packaged:") and v.removeprefix("packaged:") not in PACKAGED_MODELS:
            known = ", ".join(f"packaged:{n}" for n in PACKAGED_MODELS)
            raise ValueError(f"unknown packaged model '{v}'; known: {known}")
        if v.startswith("gguf:") and not v.removeprefix("gguf:").strip():
            raise ValueError("gguf: needs a file path, e.g. gguf:/models/model.Q4_K_M.gguf")
        return v

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


class MixedConfig(Strict):
    """``oracle.kind: mixed``: which proposals are accepted without a human, and how that is checked.

    Each round, the threshold is the smallest confidence ``t`` such that, over the campaign's
    human-labeled examples whose proposal had confidence >= t and agreed with the classifier,
    the one-sided Clopper-Pearson upper bound (level ``confidence``) of the proposal's error
    rate is at most ``max_error``, with at least ``min_calibration`` such examples; without
    one, nothing is accepted (``alft/campaign/mixed.py``).
    """

    max_error: float = Field(
        0.02, gt=0, lt=1, description="largest tolerated error rate of auto-accepted labels (upper bound)"
    )
    confidence: float = Field(
        0.95, ge=0.5, lt=1, description="level of the one-sided Clopper-Pearson upper bound on that error rate"
    )
    min_calibration: int = Field(
        50,
        ge=1,
        description="fewest human-labeled calibration examples at or above a threshold before it may be used",
    )
    audit_share: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="share (rounded up) of each round's would-be-auto examples sent to people instead, "
        "without their proposal; their error is logged as auto.audit_error",
    )
    annotator: str = Field("llm-auto", min_length=1, max_length=128, description="annotator of auto-accepted labels")
    export_auto: bool = Field(
        True, description="`alft export` includes auto-accepted labels (marked provenance auto); --no-auto leaves them out"
    )


class OracleConfig(Strict):
    """Who answers the label requests: ``simulated`` reads the gold column, ``human`` waits,
    ``mixed`` accepts confident proposals by itself and asks ``human`` (people or gold) for the rest.

    A human round persists its batch, says where to label it, then waits without holding
    a worker: ``suspend`` (the flow run ends and re-runs from the top on resume; needs a
    deployment), ``pause`` (the process stays, blocked on the Prefect API), ``poll`` (the
    process checks the store, for runs without a Prefect server to resume them), or
    ``auto``: suspend in a deployment, pause against a Prefect server, poll otherwise.
    """

    kind: Literal["simulated", "human", "mixed"] = "simulated"
    human: Literal["human", "simulated"] = Field(
        "human",
        description="kind mixed: who labels what is not auto-accepted: human = people (page, files, Label "
        "Studio, Prefect input), simulated = the gold column (benchmarks, tests)",
    )
    prelabel: Literal["none", "model", "llm", "pooled"] = Field(
        "model",
        description="what annotators are shown with each example: model = the previous round's classifier's "
        "label (generation: the data's candidate response), llm = the LLM labeler's label (generation: "
        "a draft the current causal LM writes), pooled = the label of the classifier's and the LLM "
        "labeler's probabilities pooled (product, weights fitted on the campaign's human labels; "
        "classification only), none = nothing",
    )
    prelabel_model: str | None = Field(
        None,
        description="prelabel llm or pooled: the LLM labeler's causal LM (folder, hub id, packaged: or gguf: name; "
        "default packaged:smollm2-135m-instruct); generation: the causal LM writing drafts (default: the "
        "campaign's current model)",
    )
    prelabel_shots: int = Field(
        4,
        ge=0,
        le=64,
        description="prelabel llm or pooled: demonstrations per text, its nearest labeled examples by inner product "
        "of the campaign's embeddings (0: zero-shot)",
    )
    prelabel_descriptions: dict[str, str] | str | None = Field(
        None,
        description="prelabel llm or pooled: label -> description (or a JSON file of one), scored instead of the label "
        "name (a name like 'ham' is jargon to an LLM); default: zero_shot.descriptions when zero_shot is set",
    )
    preselect_min_confidence: float = Field(
        0.5,
        ge=0,
        le=1,
        description="the page pre-selects a proposal (Enter accepts it) only at or above this confidence; "
        "below, it is shown with its confidence and nothing is selected",
    )
    mixed: MixedConfig = Field(default_factory=MixedConfig, description="kind mixed: the auto-accept rule")
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

    @model_validator(mode="after")
    def _check_mixed(self) -> OracleConfig:
        if self.kind != "mixed":
            # compared with the defaults, not "was it given": a stored config lists every key
            if self.human != "human" or self.mixed != MixedConfig():
                key = "human" if self.human != "human" else "mixed"
                raise ValueError(f"oracle.{key} applies to oracle.kind mixed only (kind is {self.kind!r})")
            return self
        if self.prelabel == "none":
            raise ValueError("oracle.kind mixed accepts proposals: set oracle.prelabel to model, llm or pooled")
        if self.overlap != 1:
            raise ValueError(f"oracle.kind mixed needs oracle.overlap 1 (an auto label is the example's one vote), got {self.overlap}")
        return self

    @property
    def people(self) -> bool:
        """Whether the round waits for people (kind human, or mixed with human: human)."""
        return self.kind == "human" or (self.kind == "mixed" and self.human == "human")

    @property
    def gold(self) -> bool:
        """Whether the gold column answers (kind simulated, or mixed with human: simulated)."""
        return not self.people

    def policy(self):
        """How label events resolve into labels (``alft.labeling.ResolvePolicy``)."""
        from alft.resolve import ResolvePolicy

        return ResolvePolicy(overlap=self.overlap, rule=self.resolve, adjudicator=self.adjudicator)


#: kind llm's prompt when the config gives none (``benchmarks/llm_zero_shot.py`` compared it with
#: others); {labels} is the label list, {text} the text to classify.
LLM_ZERO_SHOT_TEMPLATE = "Classify the following text.\n\nText: {text}\n\nAnswer with its category only."
#: kind llm's temperature when the config gives none: the NLL-optimal T of SmolLM2's calibrated
#: scores on training-split labels was 2.96 (BANKING77) and 3.16 (SMS Spam), never fitted on eval
LLM_ZERO_SHOT_TEMPERATURE = 3.0
#: kind llm's settings, which kind similarity must leave at their defaults
_LLM_ONLY = ("model", "calibrate", "batch_size", "max_text_tokens")


class ZeroShotConfig(Strict):
    """Cold start before any label: class probabilities from the pretrained encoder's text-label
    similarity (kind similarity) or from a causal LM's likelihood of each label (kind llm)."""

    kind: Literal["similarity", "llm"] = Field(
        "similarity",
        description="similarity: softmax of cosine(text, label sentence) in the campaign encoder's space "
        "(gives features and a head, so BADGE/EGL work in round 0); llm: softmax of a causal LM's "
        "log-likelihood of each label's name after a prompt (probabilities only; costs a prompt pass "
        "plus the label tokens per text)",
    )
    model: str = Field(
        "packaged:smollm2-135m-instruct",
        description="kind llm: the causal LM (a folder, hub id, packaged:smollm2-135m-instruct, "
        "packaged:gemma3-270m or gguf:<file>)",
    )
    template: str = Field(
        "{label}",
        description="kind similarity: how a label becomes a sentence to embed; {label} is the label name "
        "with _ and - as spaces. kind llm: the prompt (default " + repr(LLM_ZERO_SHOT_TEMPLATE) + "); must "
        "contain {text}, may contain {labels} (the label names, comma separated); sent as the user message of the model's "
        "chat template when it has one, else followed by 'Answer:'",
    )
    descriptions: dict[str, str] | str | None = Field(
        None,
        description="label -> description (or a JSON file of one); used instead of the template "
        "(kind llm: instead of the label name, as the answer scored and in {labels})",
    )
    temperature: float = Field(
        0.05,
        gt=0,
        le=100,
        description="softmax temperature: over cosine similarities (similarity, default 0.05), over summed "
        f"label log-likelihoods in nats (llm, default {LLM_ZERO_SHOT_TEMPERATURE})",
    )
    calibrate: bool = Field(
        True,
        description="kind llm: subtract each label's mean log-likelihood after content-free texts "
        "('N/A', '', '[MASK]'; Zhao et al. 2021) before the softmax, so a label the model says whatever "
        "the text does not win every row",
    )
    batch_size: int = Field(
        4,
        ge=1,
        le=1024,
        description="kind llm: texts per forward pass (the logits take batch x label tokens x vocabulary "
        "x 4 bytes)",
    )
    max_text_tokens: int = Field(
        256, ge=8, le=32768, description="kind llm: a text's first tokens kept in its prompt (the rest is cut)"
    )

    @model_validator(mode="before")
    @classmethod
    def _llm_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") == "llm":
            data = {"template": LLM_ZERO_SHOT_TEMPLATE, "temperature": LLM_ZERO_SHOT_TEMPERATURE, **data}
        return data

    @model_validator(mode="after")
    def _fits_kind(self) -> ZeroShotConfig:
        if self.kind == "similarity":
            if "{label}" not in self.template:
                raise ValueError("template must contain {label}")
            # compared with the defaults, not with the keys given: a dumped config re-validates
            changed = [k for k in _LLM_ONLY if getattr(self, k) != type(self).model_fields[k].default]
            if changed:
                raise ValueError(f"{', '.join(changed)} apply to kind llm only; set kind: llm or remove them")
        elif "{text}" not in self.template:
            raise ValueError(
                f"template {self.template!r} must contain {{text}} for kind llm (where the text goes); "
                "{labels} is optional"
            )
        return self


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
