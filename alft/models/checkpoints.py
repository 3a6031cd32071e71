"""Hugging Face checkpoints in memory: sequence classifiers and causal LMs, with or without
peft LoRA adapters. torch, transformers and peft are imported inside the functions."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alft.errors import ModelError


def is_peft(model) -> bool:
    """A peft-wrapped model (checked by attribute, so peft is not imported for plain models)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def pad_token_id(model) -> int | None:
    """The pad id the model itself pools with (decoder classifiers score the last non-pad token)."""
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "pad_token_id", None)


# --------------------------------------------------------------------------- sequence classifiers
def load_classifier(source: str | Path, labels: list[str], tok):
    """``AutoModelForSequenceClassification`` over ``labels`` (a fresh head if ``source`` has none)."""
    import transformers
    from transformers import AutoModelForSequenceClassification

    transformers.logging.set_verbosity_error()  # "newly initialized head" is the point, not news
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={lab: i for i, lab in enumerate(labels)},
        )
    except OSError as exc:
        raise ModelError(f"cannot load '{source}' as a sequence classifier: {exc}") from exc
    if pad_token_id(model) is None and tok.pad_token_id is not None:
        # decoder checkpoints ship without a pad id; the classifier pools on it
        model.config.pad_token_id = tok.pad_token_id
    return model


def load_lora_classifier(base: str, adapter: Path, labels: list[str], tok, *, trainable: bool):
    """A base checkpoint with saved adapters (and their trained head) applied."""
    if not base or (base.startswith(("/", ".", "~")) and not Path(base).expanduser().exists()):
        raise ModelError(f"the LoRA model in {adapter.parent} needs its base model '{base}', which is missing")
    from peft import PeftModel

    model = load_classifier(base, labels, tok)
    try:
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the LoRA adapters in {adapter}: {exc}") from exc
    model.eval()
    return model


# --------------------------------------------------------------------------- causal LMs
def pick_device(setting: str = "auto") -> str:
    """``cuda`` or ``cpu`` for ``model.device`` (auto: CUDA when torch sees a GPU)."""
    import torch

    if setting == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if setting == "cuda" and not available:
        raise ModelError(
            f"model.device is 'cuda', but torch {torch.__version__} sees no CUDA device "
            "(a CPU-only build, or no GPU visible); set model.device to auto or cpu"
        )
    if setting not in ("auto", "cuda"):
        raise ModelError(f"model.device must be auto, cpu or cuda, got {setting!r}")
    return "cuda" if available else "cpu"


def compute_dtype(device: str, *, training: bool = False):
    """bfloat16 for inference on a CUDA GPU that supports it, else float32.

    CPU stays float32: bf16 matmuls are slower there and lose precision. Training keeps float32
    weights everywhere (the Trainer autocasts to bf16 on CUDA): AdamW on bf16 weights drops
    most small updates.
    """
    import torch

    if device == "cuda" and not training and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_causal_lm(path: str, what: str, *, device: str = "cpu", training: bool = False):
    """An ``AutoModelForCausalLM`` on ``device`` (dtype: ``compute_dtype``) and its tokenizer
    (pad token = EOS when missing)."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=compute_dtype(device, training=training))
    except OSError as exc:
        raise ModelError(f"cannot load {what} '{path}': {exc}") from exc
    except ValueError as exc:  # the config names an architecture without a causal-LM head
        raise ModelError(f"{what} '{path}' is not a causal language model: {exc}") from exc
    ensure_pad(tok, model)
    if device != "cpu":
        model.to(device)
    model.eval()
    return tok, model


def ensure_pad(tok, model) -> None:
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ModelError(
                f"tokenizer of '{tok.name_or_path}' has neither a pad nor an EOS token; "
                "generation needs an EOS token"
            )
        tok.pad_token = tok.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id


@contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence peft's warnings that ask nothing of us."""
    with warnings.catch_warnings():
        # GPT-2's Conv1D layers: peft switches fan_in_fan_out on by itself and says so
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        # peft 0.21 calls a transformers 5 method deprecated in favour of another
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield
