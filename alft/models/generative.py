"""Instruction -> response models: prompt layout, causal-LM SFT (LoRA or full), generation,
the uncertainty statistics the generative strategies score, evaluation and embeddings.

Token layout of one training example (``max_length`` = L)::

    [ prompt tokens ........................ ][ response tokens ......... ][EOS]
      labels -100 (no loss)                     labels = the tokens (loss on these only)

* The prompt is ``format_prompt``'s string, tokenized on its own; the response is tokenized
  on its own (no special tokens) and EOS is appended. Tokenizing the two apart is what
  makes the split exact, and it is what the model sees at generation time: the prompt's
  tokens, then its own continuation.
* Truncation: the prompt gets at most ``L - L // 4`` tokens (its first ones, plus its last
  ``PROMPT_TAIL`` tokens, which hold the "### Response:" or assistant marker the model must
  answer after); the response keeps as many of its first tokens as fit in the rest (always
  at least ``L // 4``), EOS only when it fits. Prompts are cut the same way for training,
  generation, scoring and embedding, so a long prompt means the same tokens everywhere.
* Padding: decoding batches are padded on the left (every row's next token is at the last
  column), teacher-forced and embedding batches on the right; position ids always come
  from the attention mask, so padding never shifts a row's positions.
* A tokenizer without a pad token (GPT-2, Llama) pads with EOS; padded positions are
  masked and never labeled, so the EOS the model must learn is unaffected.

Models are saved as a folder holding ``alft_model.json`` plus ``adapter/`` (the peft LoRA
adapter and the tokenizer; the base model is read from ``base_model``) or ``hf/`` (a whole
``save_pretrained`` causal LM and its tokenizer). No pickle.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alft.config import SFTTrainerConfig
from alft.errors import DataError, ModelError, TrainerError
from alft.models.textmetrics import mean_rouge_l
from strategies.base import GenerationStats

__all__ = ["Example", "GenerativeModel", "SFTTrainer", "format_prompt", "load_generative"]

META = "alft_model.json"
IGNORE = -100  # label of tokens outside the loss (torch's CrossEntropyLoss ignore_index)
PROMPT_TAIL = 16  # last prompt tokens kept by truncation: they hold the response marker


@dataclass(frozen=True)
class Example:
    """One instruction, with its optional input (the data's input column; empty when absent)."""

    instruction: str
    input: str = ""

    def __post_init__(self) -> None:
        if self.input is None:  # a missing input cell reads as None
            object.__setattr__(self, "input", "")
        if not isinstance(self.instruction, str) or not isinstance(self.input, str):
            raise DataError(
                f"an example's instruction and input must be strings, got "
                f"{type(self.instruction).__name__} and {type(self.input).__name__}"
            )


def format_prompt(tokenizer: Any, ex: Example, chat_template: bool) -> str:
    """The prompt string of ``ex``, ending where the response starts.

    With ``chat_template`` allowed and a tokenizer that has one: a single user message
    (instruction, a blank line, the input when non-empty) rendered with
    ``add_generation_prompt=True``. Otherwise the Alpaca layout::

        ### Instruction:
        <instruction>

        ### Input:            (only when the input is non-empty)
        <input>

        ### Response:
    """
    instruction, inp = ex.instruction.strip(), ex.input.strip()
    if chat_template and getattr(tokenizer, "chat_template", None):
        content = f"{instruction}\n\n{inp}" if inp else instruction
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    parts = [f"### Instruction:\n{instruction}\n\n"]
    if inp:
        parts.append(f"### Input:\n{inp}\n\n")
    parts.append("### Response:\n")
    return "".join(parts)


def _uses_template(tokenizer: Any, setting: str) -> bool:
    return setting == "auto" and bool(getattr(tokenizer, "chat_template", None))


def _batches(lengths: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Positions grouped into batches of ``size``, longest first (position breaks ties).

    Similar lengths share a batch (little padding), and the grouping depends only on the
    lengths, so results do not depend on the input order beyond float noise.
    """
    order = np.lexsort((np.arange(lengths.size), -lengths))
    for start in range(0, order.size, size):
        yield order[start : start + size]


def _load_causal_lm(path: str, what: str):
    """A float32 ``AutoModelForCausalLM`` and its tokenizer (pad token = EOS when missing)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(path)
        # float32: CPU training and scoring in bf16 are slower and lose precision
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except OSError as exc:
        raise ModelError(f"cannot load {what} '{path}': {exc}") from exc
    except ValueError as exc:  # the config names an architecture without a causal-LM head
        raise ModelError(f"{what} '{path}' is not a causal language model: {exc}") from exc
    _ensure_pad(tok, model)
    model.eval()
    return tok, model


def _ensure_pad(tok, model) -> None:
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ModelError(
                f"tokenizer of '{tok.name_or_path}' has neither a pad nor an EOS token; "
                "generation needs an EOS token"
            )
        tok.pad_token = tok.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id


def _cache_kwarg(hf_model) -> str:
    """The forward argument taking the KV cache: ``cache`` (transformers >= 5.2x renamed it;
    the old name warns) or ``past_key_values``."""
    import inspect

    try:
        params = inspect.signature(hf_model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic forward
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return out.past_key_values if cache is None else cache


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """Silence peft's warnings that ask nothing of us."""
    with warnings.catch_warnings():
        # GPT-2's Conv1D layers: peft switches fan_in_fan_out on by itself and says so
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        # peft 0.21 calls a transformers 5 method deprecated in favour of another
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _read_meta(path: Path) -> dict:
    meta_path = Path(path) / META
    if not meta_path.exists():
        raise ModelError(f"{path} is not an alft model folder (no {META})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{meta_path}: unreadable ({exc})") from exc
    if meta.get("kind") != "sft":
        raise ModelError(f"{path} holds a {meta.get('kind')!r} model, not a generative (sft) one")
    return meta


# --------------------------------------------------------------------------- the model
class GenerativeModel:
    """A causal LM (plain, or a peft LoRA adapter over its base) that answers instructions."""

    kind = "sft"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        base_model: str,
        lora: bool,
        max_length: int,
        chat_template: bool,
        max_new_tokens: int = 64,
        gen_batch_size: int = 8,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.base_model = base_model
        self.lora = lora
        self.max_length = max_length
        self.chat_template = chat_template
        self.max_new_tokens = max_new_tokens
        self.gen_batch_size = gen_batch_size
        _ensure_pad(tokenizer, self._hf())
        self.model.eval()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_base(cls, base_model: str, cfg: SFTTrainerConfig) -> GenerativeModel:
        """The untrained pretrained model (round 0 can use its uncertainty)."""
        from alft.models.encoder import resolve_model_path

        path = resolve_model_path(base_model)
        tok, model = _load_causal_lm(path, "base model")
        return cls(
            model,
            tok,
            base_model=path,
            lora=False,
            max_length=cfg.max_length,
            chat_template=_uses_template(tok, cfg.chat_template),
            max_new_tokens=cfg.max_new_tokens,
            gen_batch_size=cfg.gen_batch_size,
        )

    @classmethod
    def load(cls, path: Path, *, trainable: bool = False) -> GenerativeModel:
        """Load a folder written by ``save`` (``trainable``: a LoRA adapter keeps training)."""
        path = Path(path)
        meta = _read_meta(path)
        kwargs = dict(
            base_model=meta["base_model"],
            lora=bool(meta["lora"]),
            max_length=int(meta["max_length"]),
            chat_template=bool(meta["chat_template"]),
            max_new_tokens=int(meta.get("max_new_tokens", 64)),
            gen_batch_size=int(meta.get("gen_batch_size", 8)),
        )
        if not meta["lora"]:
            tok, model = _load_causal_lm(str(path / "hf"), "saved model")
            return cls(model, tok, **kwargs)
        from peft import PeftModel
        from transformers import AutoTokenizer

        adapter = path / "adapter"
        if not (adapter / "adapter_config.json").exists():
            raise ModelError(f"{path}: a LoRA model folder needs {adapter}/adapter_config.json")
        _, base = _load_causal_lm(meta["base_model"], f"base model of the adapter in {path}")
        try:
            tok = AutoTokenizer.from_pretrained(adapter)
            with _quiet_peft():
                model = PeftModel.from_pretrained(base, adapter, is_trainable=trainable)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"cannot load the LoRA adapter {adapter}: {exc}") from exc
        return cls(model, tok, **kwargs)

    def save(self, path: Path) -> None:
        """Write ``alft_model.json`` plus ``adapter/`` (LoRA) or ``hf/`` (whole model)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        folder = path / ("adapter" if self.lora else "hf")
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        meta = {
            "kind": "sft",
            "lora": self.lora,
            "base_model": self.base_model,
            "max_length": self.max_length,
            "chat_template": self.chat_template,
            "max_new_tokens": self.max_new_tokens,
            "gen_batch_size": self.gen_batch_size,
        }
        (path / META).write_text(json.dumps(meta, indent=1))

    def merged(self) -> GenerativeModel:
        """The adapter folded into the base weights: a plain causal LM (``save`` -> ``hf/``).

        Works on a copy (``merge_and_unload`` rewrites the base layers in place), so this
        model keeps its adapter; the copy costs one more model in memory.
        """
        if not self.lora:
            return self
        plain = copy.deepcopy(self.model).merge_and_unload()
        return GenerativeModel(
            plain,
            self.tokenizer,
            base_model=self.base_model,
            lora=False,
            max_length=self.max_length,
            chat_template=self.chat_template,
            max_new_tokens=self.max_new_tokens,
            gen_batch_size=self.gen_batch_size,
        )

    # ------------------------------------------------------------------ token layout
    def _hf(self):
        """The transformers model underneath a peft wrapper (itself when there is none)."""
        get = getattr(self.model, "get_base_model", None)
        return get() if callable(get) else self.model

    def prompts(self, examples: Sequence[Example]) -> list[str]:
        return [format_prompt(self.tokenizer, ex, self.chat_template) for ex in examples]

    def prompt_ids(self, examples: Sequence[Example]) -> list[list[int]]:
        """Token ids of each prompt, truncated (see the module docstring)."""
        if not examples:
            return []
        # A rendered chat template already holds its special tokens (BOS and markers);
        # the plain layout gets whatever the tokenizer adds by itself.
        templated = self.chat_template and bool(getattr(self.tokenizer, "chat_template", None))
        enc = self.tokenizer(self.prompts(examples), add_special_tokens=not templated)
        budget = self.max_length - self.max_length // 4
        tail = min(PROMPT_TAIL, budget // 4)
        return [ids if len(ids) <= budget else ids[: budget - tail] + ids[-tail:] for ids in enc["input_ids"]]

    def response_ids(
        self, prompts: Sequence[list[int]], responses: Sequence[str], *, eos: bool
    ) -> list[list[int]]:
        """Token ids of each response (+ EOS when ``eos``), cut to fit after its prompt."""
        enc = self.tokenizer(list(responses), add_special_tokens=False)["input_ids"]
        tail = [self.tokenizer.eos_token_id] if eos else []
        return [(r + tail)[: self.max_length - len(p)] for p, r in zip(prompts, enc, strict=True)]

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        gen_eos = getattr(getattr(self._hf(), "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:  # chat models may end a turn with a token of their own
            ids |= set(gen_eos) if isinstance(gen_eos, (list, tuple)) else {gen_eos}
        return {i for i in ids if i is not None}

    def _position_limit(self) -> int | None:
        cfg = self._hf().config
        return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)

    # ------------------------------------------------------------------ passes
    def _greedy(
        self, examples: Sequence[Example], max_new_tokens: int, what: str
    ) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
        """Greedy decoding: generated ids (EOS included when reached), and per row the
        mean entropy and mean NLL of the chosen token over the generated steps."""
        import torch

        from alft import progress

        prompts = self.prompt_ids(examples)
        n = len(prompts)
        tokens: list[list[int]] = [[] for _ in range(n)]
        ent_mean = np.zeros(n, dtype=np.float64)
        nll_mean = np.zeros(n, dtype=np.float64)
        eos = torch.tensor(sorted(self._eos_ids()), dtype=torch.long)
        pad = int(self.tokenizer.pad_token_id)
        limit = self._position_limit()
        cache_arg = _cache_kwarg(self._hf())
        lengths = np.array([len(p) for p in prompts], dtype=np.int64)
        self.model.eval()
        with torch.inference_mode(), progress.bar(what, n) as advance:
            for pos in _batches(lengths, self.gen_batch_size):
                width = int(lengths[pos].max())
                x = np.full((len(pos), width), pad, dtype=np.int64)  # [b, W] left padded
                m = np.zeros((len(pos), width), dtype=np.int64)  # [b, W]
                for r, p in enumerate(pos):
                    x[r, width - lengths[p] :] = prompts[p]
                    m[r, width - lengths[p] :] = 1
                mask = torch.from_numpy(m)
                position = (mask.cumsum(1) - 1).clamp(min=0)  # [b, W]
                steps = max_new_tokens if limit is None else max(1, min(max_new_tokens, limit - width))
                out = self.model(
                    input_ids=torch.from_numpy(x), attention_mask=mask, position_ids=position, use_cache=True
                )
                logits = out.logits[:, -1].float()  # [b, V]
                cache = _cache_of(out)
                next_pos = mask.sum(1, keepdim=True)  # [b, 1] position of the next token
                alive = torch.ones(len(pos), dtype=torch.bool)  # [b]
                ent_sum = torch.zeros(len(pos), dtype=torch.float64)  # [b]
                nll_sum = torch.zeros(len(pos), dtype=torch.float64)  # [b]
                count = torch.zeros(len(pos), dtype=torch.float64)  # [b]
                for t in range(steps):
                    logp = torch.log_softmax(logits, dim=-1)  # [b, V]
                    ent = -(logp.exp() * logp).sum(-1)  # [b] nats
                    tok = logp.argmax(-1)  # [b] greedy: the most probable token (lowest id on ties)
                    nll = -logp.gather(1, tok[:, None])[:, 0]  # [b]
                    live = alive.double()
                    ent_sum += live * ent.double()
                    nll_sum += live * nll.double()
                    count += live
                    for r in torch.nonzero(alive)[:, 0].tolist():
                        tokens[pos[r]].append(int(tok[r]))
                    alive &= ~torch.isin(tok, eos)
                    if t == steps - 1 or not bool(alive.any()):
                        break
                    feed = torch.where(alive, tok, torch.full_like(tok, pad))[:, None]  # [b, 1]
                    mask = torch.cat([mask, torch.ones(len(pos), 1, dtype=mask.dtype)], dim=1)  # [b, W+t+1]
                    out = self.model(
                        input_ids=feed,
                        attention_mask=mask,
                        position_ids=next_pos,
                        use_cache=True,
                        **{cache_arg: cache},
                    )
                    logits = out.logits[:, -1].float()  # [b, V]
                    cache = _cache_of(out)
                    next_pos = next_pos + 1
                ent_mean[pos] = (ent_sum / count).numpy()
                nll_mean[pos] = (nll_sum / count).numpy()
                advance(len(pos))
        return tokens, ent_mean, nll_mean

    def _teacher_forced(
        self, contexts: Sequence[list[int]], targets: Sequence[list[int]], what: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Summed NLL (nats) of each ``targets`` row given its ``contexts`` row, and its
        token count; float64[n] each. Rows without target tokens sum to 0 over 0 tokens."""
        import torch

        from alft import progress

        n = len(contexts)
        nll_sum = np.zeros(n, dtype=np.float64)
        counts = np.array([len(t) for t in targets], dtype=np.int64)
        lengths = np.array([len(c) + len(t) for c, t in zip(contexts, targets, strict=True)], dtype=np.int64)
        pad = int(self.tokenizer.pad_token_id)
        self.model.eval()
        with torch.inference_mode(), progress.bar(what, n) as advance:
            for pos in _batches(lengths, self.gen_batch_size):
                width = int(lengths[pos].max())
                x = np.full((len(pos), width), pad, dtype=np.int64)  # [b, L] right padded
                m = np.zeros((len(pos), width), dtype=np.int64)  # [b, L]
                y = np.full((len(pos), width), IGNORE, dtype=np.int64)  # [b, L] target at its own position
                for r, p in enumerate(pos):
                    c, t = contexts[p], targets[p]
                    x[r, : len(c) + len(t)] = c + t
                    m[r, : len(c) + len(t)] = 1
                    y[r, len(c) : len(c) + len(t)] = t
                mask = torch.from_numpy(m)
                position = (mask.cumsum(1) - 1).clamp(min=0)  # [b, L]
                logits = self.model(
                    input_ids=torch.from_numpy(x), attention_mask=mask, position_ids=position
                ).logits  # [b, L, V]
                # position i predicts token i + 1: shift the targets left by one
                yt = torch.from_numpy(y[:, 1:])  # [b, L-1]
                sel = yt != IGNORE  # [b, L-1]
                logp = torch.log_softmax(logits[:, :-1][sel].float(), dim=-1)  # [N, V] only scored positions
                tok_nll = -logp.gather(1, yt[sel][:, None])[:, 0].double()  # [N]
                row = torch.nonzero(sel)[:, 0]  # [N] batch row of each scored token
                sums = torch.zeros(len(pos), dtype=torch.float64).index_add_(0, row, tok_nll)  # [b]
                nll_sum[pos] = sums.numpy()
                advance(len(pos))
        return nll_sum, counts

    # ------------------------------------------------------------------ public
    def generate(self, examples: Sequence[Example], max_new_tokens: int | None = None) -> list[str]:
        """Greedy responses (batched, left padded, each stopping at EOS), special tokens removed."""
        tokens, _, _ = self._greedy(examples, max_new_tokens or self.max_new_tokens, "generate")
        eos = self._eos_ids()
        return [
            self.tokenizer.decode([t for t in ids if t not in eos], skip_special_tokens=True).strip()
            for ids in tokens
        ]

    def stats(
        self,
        examples: Sequence[Example],
        candidates: Sequence[str] | None = None,
        max_new_tokens: int | None = None,
    ) -> GenerationStats:
        """What the generative strategies score, one value per example (float64[n] each).

        ``mean_entropy`` and ``mean_nll`` come from greedy decoding (``max_new_tokens``
        steps at most, the step that emits EOS included). ``ifd`` (only with
        ``candidates``): mean NLL of the candidate's tokens given the prompt over their
        mean NLL after only a BOS token (Li et al., 2024); the same response tokens (cut
        to fit after the prompt, no EOS, as in the paper) in both passes. Deterministic.
        """
        if candidates is not None:  # bad candidates fail before the long decoding pass
            if len(candidates) != len(examples):
                raise DataError(
                    f"IFD needs one candidate response per example: {len(examples)} examples, "
                    f"{len(candidates)} candidates"
                )
            for i, c in enumerate(candidates):
                if not isinstance(c, str) or not c.strip():
                    raise DataError(
                        f"candidate response of row {i} is empty; IFD needs a non-empty candidate "
                        "for every example (data.candidate_field)"
                    )
        _, ent, nll = self._greedy(examples, max_new_tokens or self.max_new_tokens, "generation stats")
        ifd = None
        if candidates is not None:
            prompts = self.prompt_ids(examples)
            resp = self.response_ids(prompts, candidates, eos=False)
            for i, r in enumerate(resp):
                if not r:  # only when the tokenizer turns the text into nothing
                    raise DataError(f"candidate response of row {i} has no tokens; IFD needs at least one")
            # the response alone still needs a first context token to predict its first token
            start = self.tokenizer.bos_token_id
            start = self.tokenizer.eos_token_id if start is None else start
            cond, count = self._teacher_forced(prompts, resp, "IFD given prompt")
            alone, _ = self._teacher_forced([[start]] * len(resp), resp, "IFD alone")
            # NLLs are > 0 in exact arithmetic; the floor only keeps a float underflow finite
            ifd = (cond / count) / np.maximum(alone / count, 1e-12)
        return GenerationStats(mean_entropy=ent, mean_nll=nll, ifd=ifd)

    def evaluate(self, examples: Sequence[Example], references: Sequence[str]) -> dict[str, float]:
        """``loss`` (token-weighted mean NLL of the references + EOS given the prompts),
        ``perplexity`` = exp(loss), ``rouge_l`` (mean ROUGE-L F1 of the greedy responses
        against the references), ``n_eval``."""
        if len(examples) != len(references):
            raise DataError(
                f"evaluation needs one reference per example: {len(examples)} examples, "
                f"{len(references)} references"
            )
        if not examples:
            raise DataError("evaluation needs at least one example")
        prompts = self.prompt_ids(examples)
        resp = self.response_ids(prompts, references, eos=True)
        sums, counts = self._teacher_forced(prompts, resp, "evaluate")
        loss = float(sums.sum() / max(1, int(counts.sum())))
        rouge = mean_rouge_l(self.generate(examples), list(references))
        return {"loss": loss, "perplexity": math.exp(loss), "rouge_l": rouge, "n_eval": len(examples)}

    def embed(self, examples: Sequence[Example]) -> np.ndarray:
        """float32[n, h]: the last hidden state mean-pooled over the prompt tokens, L2-normalised."""
        import torch

        from alft import progress

        prompts = self.prompt_ids(examples)
        n = len(prompts)
        lengths = np.array([len(p) for p in prompts], dtype=np.int64)
        pad = int(self.tokenizer.pad_token_id)
        out: np.ndarray | None = None
        self.model.eval()
        with torch.inference_mode(), progress.bar("embed prompts", n) as advance:
            for pos in _batches(lengths, self.gen_batch_size):
                width = int(lengths[pos].max())
                x = np.full((len(pos), width), pad, dtype=np.int64)  # [b, L] right padded
                m = np.zeros((len(pos), width), dtype=np.int64)  # [b, L]
                for r, p in enumerate(pos):
                    x[r, : lengths[p]] = prompts[p]
                    m[r, : lengths[p]] = 1
                mask = torch.from_numpy(m)
                res = self.model(
                    input_ids=torch.from_numpy(x),
                    attention_mask=mask,
                    position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                    output_hidden_states=True,
                )
                hidden = res.hidden_states[-1].float()  # [b, L, h]
                w = mask.unsqueeze(-1).float()  # [b, L, 1]
                pooled = (hidden * w).sum(1) / w.sum(1).clamp(min=1.0)  # [b, h]
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                if out is None:
                    out = np.empty((n, pooled.shape[1]), dtype=np.float32)
                out[pos] = pooled.numpy()
                advance(len(pos))
        if out is None:
            out = np.empty((0, int(self._hf().config.hidden_size)), dtype=np.float32)
        return out


def load_generative(path: Path) -> GenerativeModel:
    """Load a generative model folder (``GenerativeModel.load``)."""
    return GenerativeModel.load(path)


# --------------------------------------------------------------------------- training
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

    def __init__(self, cfg: SFTTrainerConfig, base_model: str, workdir: Path) -> None:
        self.cfg = cfg
        self.base_model = base_model
        self.workdir = Path(workdir)

    def start_model(self, previous: Path | None) -> GenerativeModel:
        """The model training starts from: the base model, or (``init: previous`` and a
        ``previous`` folder) the last round's; LoRA adapters attached when configured."""
        cfg = self.cfg
        if cfg.init == "previous" and previous is not None:
            prev = GenerativeModel.load(Path(previous), trainable=cfg.lora is not None)
            if prev.lora and cfg.lora is None:
                prev = prev.merged()  # full fine-tuning continues from the merged weights
            model = prev
            # this round's limits apply from here on
            model.max_length, model.max_new_tokens = cfg.max_length, cfg.max_new_tokens
            model.gen_batch_size = cfg.gen_batch_size
        else:
            model = GenerativeModel.from_base(self.base_model, cfg)
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
            with _quiet_peft():
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

        import transformers
        from transformers import Trainer, TrainingArguments

        from alft import progress
        from alft.models.trainers import _ProgressCallback

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
        ids, labels = self.encode(model, examples, responses)
        data = _SFTDataset(ids, labels)
        model.model.train()
        self.workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.workdir, prefix=".hf-sft-") as tmp:
            args = TrainingArguments(
                output_dir=tmp,
                use_cpu=True,
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
                    callbacks=[_ProgressCallback(advance)],
                )
                trainer.train()
        model.model.eval()
        return model
