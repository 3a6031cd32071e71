"""``CampaignConfig``: a whole campaign's config, and the checks across its sections."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from alft.config.base import Strict
from alft.config.sections import (
    DataConfig,
    ModelConfig,
    OracleConfig,
    StoreConfig,
    StrategyConfig,
    TrackingConfig,
    ZeroShotConfig,
)
from alft.config.stopping import METRICS, StopConfig
from alft.config.target import TargetModelConfig
from alft.config.trainers import TrainerConfig

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
    strategy: StrategyConfig = Field(default_factory=lambda: StrategyConfig(name="two_stage"))
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
    target: TargetModelConfig | None = Field(
        None,
        description="the model the dataset is for: `alft target` fine-tunes it on the campaign's "
        "labels and on random sets of the same size, and compares them on the eval split",
    )

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
        if self.target is not None and generation != (self.target.trainer.kind == "sft"):
            raise ValueError(
                f"target.trainer.kind '{self.target.trainer.kind}' cannot train a task '{self.task}' "
                "target: generation targets train with sft, classification ones with head or transformer"
            )
        if generation and self.data.labels is not None:
            raise ValueError("task generation has no label set: remove data.labels")
        if generation and self.zero_shot is not None:
            raise ValueError("zero_shot gives class probabilities: it needs task classification")
        if generation and self.oracle.prelabel == "pooled":
            raise ValueError(
                "oracle.prelabel pooled pools class probabilities: it needs task classification "
                "(generation: prelabel llm writes drafts, model shows the data's candidates)"
            )
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
                # own generations, a similarity zero-shot classifier gives probabilities and
                # features, an LLM one probabilities only
                zs = self.zero_shot
                allowed = {"generation"} if generation else (
                    set() if zs is None else {"probs"} if zs.kind == "llm" else {"probs", "features", "head"}
                )
                missing = sorted(set(model_needs) - allowed)
                if missing:
                    hint = (
                        "use random, kmeans, kcenter or a generation strategy"
                        if generation
                        else "zero_shot.kind llm gives probabilities only (kind similarity also gives "
                        "features and a head), or use random, kmeans or kcenter"
                        if zs is not None and zs.kind == "llm" and {"features", "head"} & set(missing)
                        else "set zero_shot to give round 0 probabilities, or use random, kmeans or kcenter"
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
        if self.oracle.people and self.oracle.deadline_s is None and self.oracle.min_fraction < 1:
            raise ValueError("oracle.min_fraction below 1 needs oracle.deadline_s (when it may apply)")
        if self.oracle.gold and self.data.label_field is None:
            who = "kind 'simulated'" if self.oracle.kind == "simulated" else "human 'simulated'"
            raise ValueError(f"oracle.{who} needs data.label_field (the gold column)")
        if self.oracle.kind == "mixed" and generation:
            raise ValueError(
                "oracle.kind mixed auto-accepts confident class labels: it needs task classification "
                "(a draft response has no confidence to calibrate)"
            )
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
        return Path(self.model.cache_dir) if self.model.cache_dir else default_cache_dir()


def default_cache_dir() -> Path:
    """The alft cache without a ``model.cache_dir``: ``$ALFT_CACHE_DIR`` or ``~/.cache/alft``."""
    env = os.environ.get("ALFT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "alft"
