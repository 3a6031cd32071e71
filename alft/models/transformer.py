"""The ``transformer`` classifier: fine-tuning of any ``AutoModelForSequenceClassification``
checkpoint (encoder, or decoder with a ``score`` head) with the HF ``Trainer`` on CPU: every
weight, or LoRA adapters (peft) plus the head; from the campaign's model each round, or
continuing the previous round's.

Saved as ``alft_model.json`` plus a ``save_pretrained`` folder ``hf/``, or, for LoRA, the
adapters and tokenizer in ``adapter/`` with the base model's path in the metadata.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from alft.config import LoraConfig, TransformerTrainerConfig
from alft.errors import ModelError, TrainerError
from alft.models.base import META, ModelOutputs, check_training_set, progress_callback
from alft.models.checkpoints import (
    is_peft,
    load_classifier,
    load_lora_classifier,
    pad_token_id,
)

#: MC-dropout rate on the classifier's input for models without dropout layers of their own
#: (the rate BERT-style heads use: ``classifier_dropout`` / ``hidden_dropout_prob`` = 0.1).
MC_FEATURE_DROPOUT = 0.1


class TransformerModel:
    """A fine-tuned sequence classifier; predicts in length-sorted batches under inference_mode.

    ``model`` is a transformers ``*ForSequenceClassification`` or a peft ``PeftModel`` around
    one (LoRA); ``base_model`` is the checkpoint a LoRA model's adapters apply to.
    """

    kind = "transformer"

    def __init__(
        self,
        labels: list[str],
        model,
        tokenizer,
        max_length: int,
        batch_size: int = 64,
        base_model: str | None = None,
    ) -> None:
        self.labels = labels
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.base_model = base_model

    @property
    def lora(self) -> bool:
        return is_peft(self.model)

    def predict_proba(self, texts: Sequence[str], embeddings: np.ndarray | None) -> np.ndarray:
        return self._passes(texts, features=False, samples=0, rng=None).probs

    def outputs(
        self,
        texts: Sequence[str],
        embeddings: np.ndarray | None,
        *,
        features: bool,
        samples: int,
        rng: np.random.Generator,
    ) -> ModelOutputs:
        """MC samples are forward passes with the model's own dropout layers switched on."""
        return self._passes(texts, features=features, samples=samples, rng=rng)

    def _output_layer(self):
        """The final ``Linear`` producing the logits (``classifier`` or ``score``).

        peft keeps the trained copy of a LoRA model's head in a ``ModulesToSaveWrapper``
        (``modules_to_save[adapter]``) next to the untouched original; the active copy is
        the one the forward pass runs, so that is the layer to hook and read.
        """
        import torch

        inner = self.model.get_base_model() if is_peft(self.model) else self.model
        for name in ("classifier", "score"):
            layer = getattr(inner, name, None)
            copies = getattr(layer, "modules_to_save", None)
            if copies is not None and layer.active_adapters:
                layer = copies[layer.active_adapters[0]]
            if isinstance(layer, torch.nn.Linear):
                return layer
            out_proj = getattr(layer, "out_proj", None)  # RoBERTa-style classification heads
            if isinstance(out_proj, torch.nn.Linear):
                return out_proj
        raise ModelError(
            f"{type(inner).__name__} has no linear output layer named classifier or score; "
            "strategies that need features or the head cannot use it"
        )

    def _passes(
        self, texts: Sequence[str], *, features: bool, samples: int, rng: np.random.Generator | None
    ) -> ModelOutputs:
        import torch

        self.model.eval()
        dev = next(self.model.parameters()).device
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        ids = enc["input_ids"]
        lengths = np.array([len(x) for x in ids])
        order = np.lexsort((np.arange(len(ids)), -lengths))
        n, c = len(ids), len(self.labels)
        probs = np.empty((n, c), dtype=np.float64)
        stack = np.empty((n, c, samples), dtype=np.float32) if samples else None  # [n, C, K]
        feats: np.ndarray | None = None
        captured: list[torch.Tensor] = []
        layer = self._output_layer() if features else None
        # The hook records the output layer's input on the deterministic pass only.
        capture = {"on": True}

        def grab(_module, inp, _out):
            if capture["on"]:
                captured.append(inp[0].detach())

        hooks = [layer.register_forward_hook(grab)] if layer is not None else []
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        model_pad = pad_token_id(self.model)
        dropouts = [m for m in self.model.modules() if isinstance(m, torch.nn.Dropout)]
        if samples and not any(d.p > 0 for d in dropouts):
            # Llama-style decoders have no dropout modules (attention dropout is a config
            # float, 0 in most checkpoints), so their MC passes would all be equal; drop the
            # classifier's input instead, as the dropout in front of an encoder's head does.
            def drop_features(_module, args):
                if capture["on"]:
                    return None
                return (torch.nn.functional.dropout(args[0], MC_FEATURE_DROPOUT, training=True), *args[1:])

            try:
                target = layer or self._output_layer()
            except ModelError:
                target = None  # no known head: the samples stay deterministic
            if target is not None:
                hooks.append(target.register_forward_pre_hook(drop_features))
        if samples and rng is not None:
            torch.manual_seed(int(rng.integers(2**31 - 1)))
        from alft import progress

        try:
            with torch.inference_mode(), progress.bar("predict", len(order) * (1 + samples)) as advance:
                for start in range(0, len(order), self.batch_size):
                    pos = order[start : start + self.batch_size]
                    width = int(lengths[pos].max())
                    x = np.full((len(pos), width), pad, dtype=np.int64)  # [b, L]
                    m = np.zeros((len(pos), width), dtype=np.int64)  # [b, L]
                    for r, p in enumerate(pos):
                        x[r, : lengths[p]] = ids[p]
                        m[r, : lengths[p]] = 1
                    # the model's device: CUDA after a GPU fine-tune, else CPU
                    xt, mt = torch.from_numpy(x).to(dev), torch.from_numpy(m).to(dev)
                    captured.clear()
                    logits = self.model(input_ids=xt, attention_mask=mt).logits
                    probs[pos] = torch.softmax(logits.float(), dim=-1).cpu().numpy()  # [b, C]
                    if layer is not None:
                        h = captured[-1].float()
                        if h.dim() == 3:
                            # Decoder classifiers score every position and keep the rightmost
                            # token that is not the config's pad id; pick the same one.
                            if model_pad is None:
                                last = mt.sum(1) - 1  # [b]
                            else:
                                real = (xt != model_pad).to(torch.int64)  # [b, L]
                                last = (torch.arange(width, device=dev) * real).argmax(-1)  # [b]
                            h = h[torch.arange(len(pos), device=dev), last]  # [b, h]
                        if feats is None:
                            feats = np.empty((n, h.shape[1]), dtype=np.float64)
                        feats[pos] = h.cpu().numpy()
                    advance(len(pos))
                    if samples:
                        capture["on"] = False
                        for d in dropouts:
                            d.train()
                        for k in range(samples):
                            lg = self.model(input_ids=xt, attention_mask=mt).logits
                            stack[pos, :, k] = torch.softmax(lg.float(), dim=-1).cpu().numpy()
                            advance(len(pos))
                        for d in dropouts:
                            d.eval()
                        capture["on"] = True
        finally:
            for h in hooks:
                h.remove()
            self.model.eval()
        out = ModelOutputs(probs=probs, prob_samples=stack)
        if layer is not None:
            w = layer.weight.detach().double().cpu().numpy()  # [C, h]
            b = (
                layer.bias.detach().double().cpu().numpy()
                if layer.bias is not None
                else np.zeros(w.shape[0])
            )
            out.features = feats
            out.head = (w, b, np.arange(w.shape[0], dtype=np.int64))
        return out

    def merged(self) -> TransformerModel:
        """A plain (non-peft) copy with the LoRA updates merged into the weights.

        The copy predicts like this model (up to float rounding) and saves as an ordinary
        transformers folder that needs neither peft nor the base checkpoint. A model without
        adapters returns itself.
        """
        if not self.lora:
            return self
        import copy

        plain = copy.deepcopy(self.model).merge_and_unload()  # the deep copy keeps self intact
        plain.eval()
        return TransformerModel(self.labels, plain, self.tokenizer, self.max_length, self.batch_size)

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        meta: dict = {"kind": "transformer", "labels": self.labels, "max_length": self.max_length}
        if self.lora:
            # adapters (and the trained head) only; the base weights stay where they are
            if self.base_model is None:
                raise ModelError(f"cannot save a LoRA model to {path} without its base model path")
            self.model.save_pretrained(path / "adapter")
            self.tokenizer.save_pretrained(path / "adapter")
            meta.update(lora=True, base_model=self.base_model)
        else:
            self.model.save_pretrained(path / "hf")
            self.tokenizer.save_pretrained(path / "hf")
        (path / META).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: Path, labels: list[str], max_length: int, meta: dict | None = None) -> TransformerModel:
        """Load a saved folder: ``hf/`` for a full model, base + ``adapter/`` for a LoRA model."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        meta = meta or {}
        if meta.get("lora"):
            base = str(meta.get("base_model") or "")
            tok = AutoTokenizer.from_pretrained(path / "adapter")
            model = load_lora_classifier(base, path / "adapter", labels, tok, trainable=False)
            return cls(labels, model, tok, max_length, base_model=base)
        try:
            tok = AutoTokenizer.from_pretrained(path / "hf")
            model = AutoModelForSequenceClassification.from_pretrained(path / "hf")
        except OSError as exc:
            raise ModelError(f"cannot load the transformer model in {path / 'hf'}: {exc}") from exc
        model.eval()
        return cls(labels, model, tok, max_length)


def _wrap_lora(model, cfg: LoraConfig):
    """Add fresh LoRA adapters; peft's SEQ_CLS task also trains (and saves) the classification head."""
    import warnings

    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    peft_cfg = PeftLoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        # None: peft's per-architecture defaults (the attention projections)
        target_modules=None if cfg.target_modules == "auto" else list(cfg.target_modules),
    )
    try:
        with warnings.catch_warnings():
            # GPT-2 keeps its projections in Conv1D; peft transposes them itself and says so
            warnings.filterwarnings("ignore", message="fan_in_fan_out is set to False")
            return get_peft_model(model, peft_cfg)
    except ValueError as exc:
        raise TrainerError(
            f"cannot add LoRA adapters to {type(model).__name__}: {exc}; "
            "set trainer.transformer.lora.target_modules to its projection module names"
        ) from exc


class _TextDataset:
    def __init__(self, enc: dict, y: np.ndarray) -> None:
        self.enc = enc
        self.y = y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        item = {k: v[i] for k, v in self.enc.items()}
        item["labels"] = int(self.y[i])
        return item


class TransformerTrainer:
    """Fine-tune a sequence classifier: every weight, or LoRA adapters plus the head.

    ``cfg.init``: ``base`` starts each round from the campaign's checkpoint with a fresh
    head; ``previous`` continues from the folder of the previous round's model (its head,
    and its adapters when it has them).
    """

    kind = "transformer"
    needs_embeddings = False

    def __init__(self, cfg: TransformerTrainerConfig, base_model: str, workdir: Path) -> None:
        self.cfg = cfg
        self.base_model = base_model
        self.workdir = workdir

    def initial_model(self, labels: list[str], seed: int, previous: Path | None = None) -> TransformerModel:
        """The model training starts from (the fresh head is drawn from ``seed``).

        previous: a saved model folder to continue from; LoRA adapters in it keep training
        (a config now asking for full fine-tuning merges them first), a full model gets new
        adapters when ``cfg.lora`` is set.
        """
        import torch
        from transformers import AutoTokenizer

        torch.manual_seed(seed)  # the new head's initialisation
        base = self.base_model
        if previous is None:
            source: str | Path = base
        else:
            meta_path = Path(previous) / META
            if not meta_path.exists():
                raise TrainerError(f"cannot continue from {previous}: not an alft model folder (no {META})")
            meta = json.loads(meta_path.read_text())
            if meta.get("kind") != "transformer":
                raise TrainerError(f"cannot continue from {previous}: a {meta.get('kind')!r} model, not a transformer")
            if meta.get("labels") != labels:
                raise TrainerError(f"cannot continue from {previous}: its label set differs from the campaign's")
            if meta.get("lora"):
                base = str(meta["base_model"])
                tok = AutoTokenizer.from_pretrained(Path(previous) / "adapter")
                model = load_lora_classifier(base, Path(previous) / "adapter", labels, tok, trainable=True)
                if self.cfg.lora is None:
                    model = model.merge_and_unload()
                    base = None
                return TransformerModel(labels, model, tok, self.cfg.max_length, base_model=base)
            source = base = str(Path(previous) / "hf")
        try:
            tok = AutoTokenizer.from_pretrained(source)
        except OSError as exc:
            raise ModelError(f"cannot load the tokenizer of '{source}' for fine-tuning: {exc}") from exc
        if tok.pad_token is None:  # decoder-only models ship without one
            tok.pad_token = tok.eos_token
        model = load_classifier(source, labels, tok)
        if self.cfg.lora is not None:
            model = _wrap_lora(model, self.cfg.lora)
        return TransformerModel(labels, model, tok, self.cfg.max_length, base_model=base if self.cfg.lora else None)

    def fit(
        self,
        texts: Sequence[str],
        embeddings: np.ndarray | None,
        y: np.ndarray,
        labels: list[str],
        seed: int,
        progress: Callable[[str], None] | None = None,
        *,
        previous: Path | None = None,
    ) -> TransformerModel:
        """Fine-tune on ``texts``/``y``; ``previous``: the last round's model folder (init=previous)."""
        import math
        import tempfile

        import torch
        import transformers
        from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

        from alft import progress as bars

        check_training_set(y, labels)
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        start = self.initial_model(labels, seed, previous)
        model, tok = start.model, start.tokenizer
        model.train()
        enc = tok(list(texts), truncation=True, max_length=self.cfg.max_length)
        data = _TextDataset(dict(enc), y)
        with tempfile.TemporaryDirectory(dir=self.workdir, prefix=".hf-trainer-") as tmp:
            args = TrainingArguments(
                output_dir=tmp,
                # CUDA when the machine has it (Trainer moves the model there); the CPU path is the tested default
                use_cpu=not torch.cuda.is_available(),
                report_to="none",
                save_strategy="no",
                eval_strategy="no",
                logging_strategy="no",
                disable_tqdm=True,
                num_train_epochs=self.cfg.epochs,
                per_device_train_batch_size=self.cfg.batch_size,
                learning_rate=self.cfg.learning_rate,
                weight_decay=self.cfg.weight_decay,
                warmup_steps=self.cfg.warmup_ratio,  # transformers 5: a float < 1 is a ratio
                seed=seed,
                data_seed=seed,
                dataloader_num_workers=0,
                # our dataset is a plain list of dicts; peft models hide the forward signature
                remove_unused_columns=False,
            )
            steps = math.ceil(math.ceil(len(data) / self.cfg.batch_size) * self.cfg.epochs)
            with bars.bar("fine-tune", steps) as advance:
                trainer = Trainer(
                    model=model,
                    args=args,
                    train_dataset=data,
                    data_collator=DataCollatorWithPadding(tok),
                    callbacks=[progress_callback(advance)],
                )
                trainer.train()
        model.eval()
        return TransformerModel(labels, model, tok, self.cfg.max_length, base_model=start.base_model)
