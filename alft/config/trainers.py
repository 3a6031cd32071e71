"""The ``trainer`` section: which trainer fine-tunes each round, and the options of each."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alft.config.base import Strict


class SemiSupervisedConfig(Strict):
    """Label spreading over a k-nearest-neighbour graph of the pool's embeddings (Zhou et al.
    2004): the unlabeled pool gets spread labels, which join the head's fit as weighted
    pseudo-labels, faded out as the labels per class grow (README, "Semi-supervised head")."""

    kind: Literal["label_spreading"] = "label_spreading"
    k: int = Field(10, ge=1, le=200, description="neighbours per pool example in the graph")
    alpha: float = Field(
        0.9, gt=0, lt=1, description="how far labels travel: the share of each step taken from the neighbours"
    )
    iterations: int = Field(30, ge=1, le=1000, description="spreading steps (alpha^30 = 0.04 at 0.9)")
    weight: float = Field(
        0.3, gt=0, le=1, description="sample weight of a pseudo-label, times its spread confidence "
        "(a human label weighs 1)"
    )
    fade_per_class: float | None = Field(
        30.0, gt=0, description="the pseudo-labels' weight falls linearly with the labels per class "
        "(labels / classes) and is 0 from this many on: spread labels help a label-starved head and "
        "only blur one that has enough (null: constant weight)"
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
    semi_supervised: SemiSupervisedConfig | None = Field(
        None, description="also fit on the unlabeled pool's spread labels (null: labeled examples only)"
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
    decode_shortlist: float = Field(
        4.0,
        ge=1,
        le=1000,
        description="score step, strategies that read the model's own greedy response (token_entropy, "
        "sequence_nll, or composites using them): only the decode_shortlist x batch_size candidates with "
        "the highest first-token entropy (one teacher-forced pass over every prompt) are decoded; the rest "
        "keep their first-token value, shifted to rank below every decoded candidate. ifd needs no decoding",
    )


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
