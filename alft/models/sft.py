"""``SFTTrainer``: supervised fine-tuning of a causal LM on (instruction, response) pairs,
loss on the response tokens only (the layout of ``alft.models.prompts``); LoRA adapters or
every weight, from the base model or the previous round's."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from alft.config import SFTTrainerConfig
from alft.errors import TrainerError
from alft.models.base import progress_callback
from alft.models.causal_lm import GenerativeModel
from alft.models.checkpoints import quiet_peft
from alft.models.prompts import IGNORE

if TYPE_CHECKING:
    from alft.data import Example


class _SFTDataset:
    def __init__(self, input_ids: list[list[int]], labels: list[list[int]]) -> None:
        self.input_ids = input_ids
        self.labels = labels

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "labels": self.labels[i]}


class _PadCollator:
    """Right-pads a batch: pad id in ``input_ids``, 0 in ``attention_mask``, -100 in ``labels``."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict:
        import torch

        width = max(len(it["input_ids"]) for it in items)
        x = torch.full((len(items), width), self.pad_id, dtype=torch.long)  # [b, L]
        m = torch.zeros((len(items), width), dtype=torch.long)  # [b, L]
        y = torch.full((len(items), width), IGNORE, dtype=torch.long)  # [b, L]
        for r, it in enumerate(items):
            k = len(it["input_ids"])
            x[r, :k] = torch.tensor(it["input_ids"])
            m[r, :k] = 1
            y[r, :k] = torch.tensor(it["labels"])
        return {"input_ids": x, "attention_mask": m, "labels": y}


class SFTTrainer:
    """Supervised fine-tuning of a causal LM on (instruction, response) pairs, loss on the
    response only; LoRA adapters (``cfg.lora``) or every weight (``cfg.lora = None``)."""

    kind = "sft"
    needs_embeddings = False

    def __init__(self, cfg: SFTTrainerConfig, base_model: str, workdir: Path, device: str = "auto") -> None:
        self.cfg = cfg
        self.base_model = base_model
        self.workdir = Path(workdir)
        self.device = device  # model.device: auto | cpu | cuda

    def start_model(self, previous: Path | None) -> GenerativeModel:
        """The model training starts from: the base model, or (``init: previous`` and a
        ``previous`` folder) the last round's; LoRA adapters attached when configured."""
        cfg = self.cfg
        if cfg.init == "previous" and previous is not None:
            prev = GenerativeModel.load(
                Path(previous), trainable=cfg.lora is not None, device=self.device, training=True
            )
            if prev.lora and cfg.lora is None:
                prev = prev.merged()  # full fine-tuning continues from the merged weights
            model = prev
            # this round's limits apply from here on
            model.max_length, model.max_new_tokens = cfg.max_length, cfg.max_new_tokens
            model.gen_batch_size = cfg.gen_batch_size
        else:
            model = GenerativeModel.from_base(self.base_model, cfg, device=self.device, training=True)
        if cfg.lora is not None and not model.lora:
            if cfg.init == "previous" and previous is not None:
                # new adapters over the previous round's full weights: those are their base
                model.base_model = str((Path(previous) / "hf").resolve())
            model.model = self._attach_lora(model.model)
            model.lora = True
        if cfg.lora is None:
            # every weight trains (a merged adapter comes back with its base frozen by peft)
            for p in model.model.parameters():
                p.requires_grad_(True)
        return model

    def _attach_lora(self, hf_model):
        from peft import LoraConfig, get_peft_model

        lc = self.cfg.lora
        targets = None if lc.target_modules == "auto" else list(lc.target_modules)
        config = LoraConfig(
            r=lc.r,
            lora_alpha=lc.alpha,
            lora_dropout=lc.dropout,
            target_modules=targets,  # None: peft's defaults for the model type
            task_type="CAUSAL_LM",
        )
        model_type = getattr(hf_model.config, "model_type", "?")
        try:
            with quiet_peft():
                return get_peft_model(hf_model, config)
        except ValueError as exc:
            where = "peft has no default target modules for it" if targets is None else f"targets {targets}"
            raise TrainerError(
                f"cannot attach LoRA adapters to '{self.base_model}' (model type {model_type}; "
                f"{where}): {exc}; set trainer.sft.lora.target_modules"
            ) from exc

    def encode(
        self, model: GenerativeModel, examples: Sequence[Example], responses: Sequence[str]
    ) -> tuple[list[list[int]], list[list[int]]]:
        """``input_ids`` (prompt + response + EOS, cut to max_length) and ``labels`` (-100
        over the prompt) of each training pair."""
        prompts = model.prompt_ids(examples)
        resp = model.response_ids(prompts, responses, eos=True)
        ids = [p + r for p, r in zip(prompts, resp, strict=True)]
        labels = [[IGNORE] * len(p) + r for p, r in zip(prompts, resp, strict=True)]
        return ids, labels

    def fit(
        self,
        examples: Sequence[Example],
        responses: Sequence[str],
        seed: int,
        previous: Path | None = None,
    ) -> GenerativeModel:
        import tempfile

        import torch
        import transformers
        from transformers import Trainer, TrainingArguments

        from alft import progress

        cfg = self.cfg
        if len(examples) != len(responses):
            raise TrainerError(
                f"SFT needs one response per example: {len(examples)} examples, {len(responses)} responses"
            )
        if not examples:
            raise TrainerError("no labeled examples to train on")
        for i, r in enumerate(responses):
            if not isinstance(r, str) or not r.strip():
                raise TrainerError(
                    f"response of training example {i} is empty; SFT needs a response to learn"
                )
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        # LoRA's A matrices are drawn at attach time, before the Trainer seeds anything
        transformers.set_seed(seed)
        model = self.start_model(previous)
        on_gpu = model.device.type == "cuda"
        ids, labels = self.encode(model, examples, responses)
        data = _SFTDataset(ids, labels)
        model.model.train()
        self.workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.workdir, prefix=".hf-sft-") as tmp:
            args = TrainingArguments(
                output_dir=tmp,
                use_cpu=not on_gpu,
                # float32 weights, bf16 matmuls (autocast) where the GPU has them; CPU stays float32
                bf16=on_gpu and torch.cuda.is_bf16_supported(),
                report_to="none",
                save_strategy="no",
                eval_strategy="no",
                logging_strategy="no",
                disable_tqdm=True,
                num_train_epochs=cfg.epochs,
                per_device_train_batch_size=cfg.batch_size,
                learning_rate=cfg.learning_rate,
                weight_decay=cfg.weight_decay,
                warmup_steps=cfg.warmup_ratio,  # transformers 5: a float < 1 is a ratio
                seed=seed,
                data_seed=seed,
                dataloader_num_workers=0,
                remove_unused_columns=False,  # the collator builds exactly the model's inputs
                label_names=["labels"],
            )
            steps = math.ceil(math.ceil(len(data) / cfg.batch_size) * cfg.epochs)
            with progress.bar("fine-tune (sft)", steps) as advance:
                trainer = Trainer(
                    model=model.model,
                    args=args,
                    train_dataset=data,
                    data_collator=_PadCollator(int(model.tokenizer.pad_token_id)),
                    callbacks=[progress_callback(advance)],
                )
                trainer.train()
        model.model.eval()
        return model
