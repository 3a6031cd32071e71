"""Models and trainers by kind: ``load_model`` reopens any saved alft model folder by the kind
in its ``alft_model.json`` (``head``, ``transformer``, or a generative ``sft`` model), and
``make_trainer`` builds the trainer a ``TrainerConfig`` names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from alft.errors import ModelError
from alft.models.base import META, ClassifierModel
from alft.models.head import HeadModel
from alft.models.transformer import TransformerModel

if TYPE_CHECKING:
    from alft.config import TrainerConfig
    from alft.models.causal_lm import GenerativeModel


def load_model(path: Path, *, device: str = "auto") -> ClassifierModel | GenerativeModel:
    """Load a model folder written by ``save`` (classifiers, or a generative ``sft`` model on
    ``device``, ``model.device``)."""
    meta_path = Path(path) / META
    if not meta_path.exists():
        raise ModelError(f"{path} is not an alft model folder (no {META})")
    meta = json.loads(meta_path.read_text())
    if meta["kind"] == "head":
        return HeadModel.load(Path(path), meta["labels"], float(meta.get("mc_dropout", 0.1)))
    if meta["kind"] == "transformer":
        return TransformerModel.load(Path(path), meta["labels"], int(meta.get("max_length", 128)), meta)
    if meta["kind"] == "sft":
        # imports peft and the generation code: only here
        from alft.models.causal_lm import GenerativeModel

        return GenerativeModel.load(Path(path), device=device)
    raise ModelError(f"{path}: unknown model kind {meta['kind']!r}")


def make_trainer(tc: TrainerConfig, base_model: str, workdir: Path, device: str = "auto"):
    """The trainer ``tc.kind`` names; ``base_model`` is a resolved model path (transformer, sft);
    ``device`` (``model.device``) is where the sft trainer runs."""
    if tc.kind == "head":
        from alft.models.head import HeadTrainer

        return HeadTrainer(tc.head)
    if tc.kind == "sft":
        from alft.models.sft import SFTTrainer

        return SFTTrainer(tc.sft, base_model, workdir, device)
    from alft.models.transformer import TransformerTrainer

    return TransformerTrainer(tc.transformer, base_model, workdir)
