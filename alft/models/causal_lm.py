"""``GenerativeModel``: a causal LM (plain, or LoRA adapters over its base) that answers
instructions: generation, the uncertainty statistics the generative strategies score,
evaluation and embeddings. Its prompts follow ``alft.models.prompts``.

Saved as a folder holding ``alft_model.json`` plus ``adapter/`` (the peft LoRA adapter and
the tokenizer; the base model is read from ``base_model``) or ``hf/`` (a whole
``save_pretrained`` causal LM and its tokenizer). No pickle.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alft.config import SFTTrainerConfig
from alft.errors import DataError, ModelError
from alft.models.base import META
from alft.models.checkpoints import ensure_pad, load_causal_lm, pick_device, quiet_peft
from alft.models.prompts import IGNORE, PROMPT_TAIL, format_prompt, uses_chat_template
from alft.models.textmetrics import mean_rouge_l
from strategies.base import GenerationStats

if TYPE_CHECKING:
    from alft.data import Example


def _batches(lengths: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Positions grouped into batches of ``size``, longest first (position breaks ties).

    Similar lengths share a batch (little padding), and the grouping depends only on the
    lengths, so results do not depend on the input order beyond float noise.
    """
    order = np.lexsort((np.arange(lengths.size), -lengths))
    for start in range(0, order.size, size):
        yield order[start : start + size]


def _cache_kwarg(hf_model) -> str:
    """The forward argument taking the KV cache: ``cache`` (transformers >= 5.2x renamed it;
    the old name warns) or ``past_key_values``."""
    import inspect

    try:
        params = inspect.signature(hf_model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic forward
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _keep_last(hf_model, k: int) -> dict:
    """``logits_to_keep=k`` when the model takes it: the LM head then runs on the last ``k``
    columns only (a [b, L, V] logits tensor is ~0.2 GB per 1k tokens at a 49k vocabulary)."""
    import inspect

    try:
        params = inspect.signature(hf_model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic forward
        return {}
    return {"logits_to_keep": k} if "logits_to_keep" in params else {}


def _below(first: np.ndarray, rows: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """``decoded`` at ``rows``; every other row its ``first`` value shifted by one constant so the
    best of them sits 1 below the lowest decoded value (they rank after every decoded row, in
    their own order). float64[n]."""
    out = first.astype(np.float64, copy=True)
    rest = np.ones(first.size, dtype=bool)
    rest[rows] = False
    if rest.any() and rows.size:
        out[rest] = first[rest] - first[rest].max() + decoded.min() - 1.0
    out[rows] = decoded
    return out


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return out.past_key_values if cache is None else cache


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
        ensure_pad(tokenizer, self._hf())
        self.model.eval()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_base(
        cls, base_model: str, cfg: SFTTrainerConfig, *, device: str = "auto", training: bool = False
    ) -> GenerativeModel:
        """The untrained pretrained model (round 0 can use its uncertainty) on ``device``
        (``model.device``; ``training``: float32 weights even on a GPU)."""
        from alft.models.encoder import resolve_model_path

        path = resolve_model_path(base_model)
        tok, model = load_causal_lm(path, "base model", device=pick_device(device), training=training)
        return cls(
            model,
            tok,
            base_model=path,
            lora=False,
            max_length=cfg.max_length,
            chat_template=uses_chat_template(tok, cfg.chat_template),
            max_new_tokens=cfg.max_new_tokens,
            gen_batch_size=cfg.gen_batch_size,
        )

    @classmethod
    def load(
        cls, path: Path, *, trainable: bool = False, device: str = "auto", training: bool | None = None
    ) -> GenerativeModel:
        """Load a folder written by ``save`` onto ``device`` (``trainable``: a LoRA adapter keeps
        training; ``training``, default ``trainable``: float32 weights even on a GPU)."""
        path = Path(path)
        meta = _read_meta(path)
        dev = pick_device(device)
        training = trainable if training is None else training
        kwargs = dict(
            base_model=meta["base_model"],
            lora=bool(meta["lora"]),
            max_length=int(meta["max_length"]),
            chat_template=bool(meta["chat_template"]),
            max_new_tokens=int(meta.get("max_new_tokens", 64)),
            gen_batch_size=int(meta.get("gen_batch_size", 8)),
        )
        if not meta["lora"]:
            tok, model = load_causal_lm(str(path / "hf"), "saved model", device=dev, training=training)
            return cls(model, tok, **kwargs)
        from peft import PeftModel
        from transformers import AutoTokenizer

        adapter = path / "adapter"
        if not (adapter / "adapter_config.json").exists():
            raise ModelError(f"{path}: a LoRA model folder needs {adapter}/adapter_config.json")
        _, base = load_causal_lm(
            meta["base_model"], f"base model of the adapter in {path}", device=dev, training=training
        )
        try:
            tok = AutoTokenizer.from_pretrained(adapter)
            with quiet_peft():
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
    @property
    def device(self):
        """The torch device the weights are on (inputs go there, results come back as numpy)."""
        return next(self.model.parameters()).device

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
        dev = self.device
        eos = torch.tensor(sorted(self._eos_ids()), dtype=torch.long, device=dev)
        pad = int(self.tokenizer.pad_token_id)
        limit = self._position_limit()
        cache_arg = _cache_kwarg(self._hf())
        keep = _keep_last(self._hf(), 1)
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
                mask = torch.from_numpy(m).to(dev)
                position = (mask.cumsum(1) - 1).clamp(min=0)  # [b, W]
                steps = max_new_tokens if limit is None else max(1, min(max_new_tokens, limit - width))
                out = self.model(
                    input_ids=torch.from_numpy(x).to(dev),
                    attention_mask=mask,
                    position_ids=position,
                    use_cache=steps > 1,
                    **keep,  # left padded: every row's next token is predicted at the last column
                )
                logits = out.logits[:, -1].float()  # [b, V]
                cache = _cache_of(out)
                next_pos = mask.sum(1, keepdim=True)  # [b, 1] position of the next token
                alive = torch.ones(len(pos), dtype=torch.bool, device=dev)  # [b]
                ent_sum = torch.zeros(len(pos), dtype=torch.float64, device=dev)  # [b]
                nll_sum = torch.zeros(len(pos), dtype=torch.float64, device=dev)  # [b]
                count = torch.zeros(len(pos), dtype=torch.float64, device=dev)  # [b]
                for t in range(steps):
                    logp = torch.log_softmax(logits, dim=-1)  # [b, V]
                    ent = -(logp.exp() * logp).sum(-1)  # [b] nats
                    tok = logp.argmax(-1)  # [b] greedy: the most probable token (lowest id on ties)
                    nll = -logp.gather(1, tok[:, None])[:, 0]  # [b]
                    live = alive.double()
                    ent_sum += live * ent.double()
                    nll_sum += live * nll.double()
                    count += live
                    chosen = tok.tolist()
                    for r in torch.nonzero(alive)[:, 0].tolist():
                        tokens[pos[r]].append(chosen[r])
                    alive &= ~torch.isin(tok, eos)
                    if t == steps - 1 or not bool(alive.any()):
                        break
                    feed = torch.where(alive, tok, torch.full_like(tok, pad))[:, None]  # [b, 1]
                    mask = torch.cat([mask, torch.ones(len(pos), 1, dtype=mask.dtype, device=dev)], dim=1)  # [b, W+t+1]
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
                ent_mean[pos] = (ent_sum / count).cpu().numpy()
                nll_mean[pos] = (nll_sum / count).cpu().numpy()
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
        dev = self.device
        self.model.eval()
        with torch.inference_mode(), progress.bar(what, n) as advance:
            for pos in _batches(lengths, self.gen_batch_size):
                width = int(lengths[pos].max())
                # left padded, so every row's targets sit in the last columns: the LM head then
                # runs on the last k columns only (k = longest target + 1), not the prompts
                x = np.full((len(pos), width), pad, dtype=np.int64)  # [b, L]
                m = np.zeros((len(pos), width), dtype=np.int64)  # [b, L]
                y = np.full((len(pos), width), IGNORE, dtype=np.int64)  # [b, L] target at its own column
                for r, p in enumerate(pos):
                    c, t = contexts[p], targets[p]
                    x[r, width - len(c) - len(t) :] = c + t
                    m[r, width - len(c) - len(t) :] = 1
                    y[r, width - len(t) :] = t
                k = min(width, int(counts[pos].max()) + 1)
                keep = _keep_last(self._hf(), k)
                if not keep:
                    k = width  # the model computes every column's logits
                mask = torch.from_numpy(m).to(dev)
                position = (mask.cumsum(1) - 1).clamp(min=0)  # [b, L]
                logits = self.model(
                    input_ids=torch.from_numpy(x).to(dev), attention_mask=mask, position_ids=position, **keep
                ).logits  # [b, k, V]: columns L-k .. L-1
                # column i predicts token i + 1: the targets of columns L-k+1 .. L-1
                yt = torch.from_numpy(y[:, width - k + 1 :]).to(dev)  # [b, k-1]
                sel = yt != IGNORE  # [b, k-1]
                logp = torch.log_softmax(logits[:, :-1][sel].float(), dim=-1)  # [N, V] only scored positions
                tok_nll = -logp.gather(1, yt[sel][:, None])[:, 0].double()  # [N]
                row = torch.nonzero(sel)[:, 0]  # [N] batch row of each scored token
                sums = torch.zeros(len(pos), dtype=torch.float64, device=dev).index_add_(0, row, tok_nll)  # [b]
                nll_sum[pos] = sums.cpu().numpy()
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
        *,
        decode: int | None = None,
        rank_by: str = "entropy",
    ) -> GenerationStats:
        """What the generative strategies score, one value per example (float64[n] each).

        ``mean_entropy`` and ``mean_nll`` come from greedy decoding (``max_new_tokens``
        steps at most, the step that emits EOS included). ``decode`` bounds that cost: None
        decodes every row; otherwise one pass over every prompt (no decoding) gives each row
        its first-token entropy and greedy NLL, only the ``decode`` rows highest in ``rank_by``
        (``entropy`` or ``nll``) are decoded, and the other rows keep their first-token values
        shifted below every decoded one (``_below``: they rank after the shortlist, in
        first-token order). ``decode=0``: first-token values for every row. ``ifd`` (only with
        ``candidates``): mean NLL of the candidate's tokens given the prompt over their
        mean NLL after only a BOS token (Li et al., 2024); the same response tokens (cut
        to fit after the prompt, no EOS, as in the paper) in both passes, teacher-forced
        (no decoding). Deterministic.
        """
        if rank_by not in ("entropy", "nll"):
            raise ValueError(f"rank_by must be 'entropy' or 'nll', got {rank_by!r}")
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
        steps = max_new_tokens or self.max_new_tokens
        n = len(examples)
        if decode is None or decode >= n:
            _, ent, nll = self._greedy(examples, steps, "generation stats")
        else:
            _, ent, nll = self._greedy(examples, 1, "first-token stats")
            if decode > 0:
                key = ent if rank_by == "entropy" else nll
                rows = np.lexsort((np.arange(n), -key))[:decode]  # best first; position breaks ties
                _, ent_s, nll_s = self._greedy([examples[int(i)] for i in rows], steps, "generation stats (shortlist)")
                ent, nll = _below(ent, rows, ent_s), _below(nll, rows, nll_s)
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

    def embed(self, examples: Sequence[Example], pooling: str = "mean") -> np.ndarray:
        """float32[n, h]: the last hidden state pooled over the prompt tokens, L2-normalised.

        ``pooling`` as ``model.pooling``: mean over the prompt tokens, ``last`` prompt token,
        or ``cls`` (the first).
        """
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
                mask = torch.from_numpy(m).to(self.device)
                res = self.model(
                    input_ids=torch.from_numpy(x).to(self.device),
                    attention_mask=mask,
                    position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                    output_hidden_states=True,
                    **_keep_last(self._hf(), 1),  # the logits are not read: skip the LM head
                )
                hidden = res.hidden_states[-1].float()  # [b, L, h]
                if pooling == "last":  # right padded: a prompt's last token is at length - 1
                    last = torch.from_numpy(lengths[pos] - 1).to(self.device)  # [b]
                    pooled = hidden[torch.arange(len(pos), device=self.device), last]  # [b, h]
                elif pooling == "cls":
                    pooled = hidden[:, 0]  # [b, h]
                else:
                    w = mask.unsqueeze(-1).float()  # [b, L, 1]
                    pooled = (hidden * w).sum(1) / w.sum(1).clamp(min=1.0)  # [b, h]
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                if out is None:
                    out = np.empty((n, pooled.shape[1]), dtype=np.float32)
                out[pos] = pooled.cpu().numpy()
                advance(len(pos))
        if out is None:
            out = np.empty((0, int(self._hf().config.hidden_size)), dtype=np.float32)
        return out


def load_generative(path: Path, device: str = "auto") -> GenerativeModel:
    """Load a generative model folder (``GenerativeModel.load``)."""
    return GenerativeModel.load(path, device=device)
