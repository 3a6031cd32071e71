"""Zero-shot classification by a causal LM: each label scored by the log-likelihood of its
verbalization after an instruction prompt.

For text ``x`` and label ``c`` with verbalization tokens ``v_c`` (the label name with ``_``
as spaces, or its description) followed by the end-of-answer token ``e``::

    s(x, c) = sum_j log p(v_c,j | prompt(x), v_c,<j)  +  log p(e | prompt(x), v_c)
    p(c | x) = softmax_c( s(x, c) / T )

The end token makes ``s`` the probability that the answer is exactly ``v_c``, not only that
it starts with it (otherwise "card" would collect the mass of "card arrival" as well).
The score is the *sum* over tokens, not the per-token mean: the sum is the probability of the
whole answer, and the mean, read from the same scores, was never better (SmolLM2: BANKING77
0.357 vs 0.271, SMS Spam 0.883 vs 0.873; Gemma 3: within noise; ``benchmarks/results/
llm_zero_shot.md``). Before the softmax each label's
content-free prior (its mean score after "N/A", "" and "[MASK]") is subtracted (``calibrate``).

Cost, for ``C`` labels: the tokens all prompts start with (system prompt, instructions) are
encoded once per call; each prompt's own tokens once per text; then every label's tokens in
*one* pass per batch of texts: the labels form a prefix tree (a shared first word is fed once),
fed as one sequence after the cached prompt with a 4-D mask that lets a node see the prompt
and its own ancestors only. The prompt's last position predicts each label's first token, each
node the next one (the last, the end token). So a text costs its own prompt tokens plus the
tree's nodes (238 for BANKING77's 77 names on SmolLM2, vs 379 label tokens), never ``C``
prompts, and no per-label copy of the prompt's KV cache. Sliding-window layers (Gemma 3,
Mistral) get a mask of their own; a batch that could reach the window holds equal lengths only.

Prompt: ``template`` with ``{text}`` (and ``{labels}``, the verbalizations joined by ", ")
filled, as the one user message of the tokenizer's chat template when it has one (the label
is the assistant's reply), else as plain text followed by ``Answer:``. Few-shot
demonstrations are earlier user/assistant turns (plain: earlier blocks) in the same layout.

As a ``ClassifierModel`` (round 0's prior, ``zero_shot.kind: llm``) it gives probabilities
only: no features or head (the label scores are not a linear layer on any feature), so
BADGE/EGL in round 0 need ``kind: similarity``; and no MC samples.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alft.config import ZeroShotConfig
from alft.errors import ConfigError, ModelError
from alft.models.base import META, ModelOutputs
from alft.models.causal_lm import _batches, _cache_kwarg, _cache_of
from alft.models.zeroshot import label_sentences, load_descriptions

KIND = "llm_zero_shot"
PLAIN_ANSWER = "Answer:"  # the plain layout's reply marker (models without a chat template)
_FIELDS = re.compile(r"\{(text|labels)\}")
_MARK = "\u2063ALFT\u2063"  # a string no chat template produces: finds where a reply ends
#: texts that say nothing (Zhao et al. 2021): the label prior is the mean score after them
CONTENT_FREE = ("N/A", "", "[MASK]")
#: ``{labels}`` in every turn after the first of a few-shot prompt (``LLMLabeler.prompt``)
LISTED_ABOVE = "the labels listed above"


def _common_prefix(rows: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix all ``rows`` share."""
    first = rows[0]
    k = len(first)
    for r in rows[1:]:
        k = min(k, len(r))
        diff = np.flatnonzero(np.asarray(first[:k]) != np.asarray(r[:k]))
        if diff.size:
            k = int(diff[0])
    return list(first[:k])


def _accepts(model, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - exotic forward
        return False


def check_template(template: str) -> str:
    """The prompt template, or one ConfigError line when ``{text}`` is missing."""
    if not isinstance(template, str) or "{text}" not in template:
        raise ConfigError(
            f"zero_shot.template {template!r} must contain {{text}} (where the text to classify goes); "
            "{labels} (the label list) is optional"
        )
    return template


def fill(template: str, text: str, labels: str) -> str:
    """``{text}`` and ``{labels}`` replaced in one pass (braces in the text stay as written)."""
    return _FIELDS.sub(lambda m: text if m.group(1) == "text" else labels, template)


def softmax_rows(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / T)`` per row, float64 ``[n, C]``; a non-finite score is an error."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)  # [n, C]
    if not np.isfinite(z).all():
        row = int(np.flatnonzero(~np.isfinite(z).all(axis=1))[0])
        raise ModelError(f"LLM label scores of row {row} hold a NaN or infinite value; the model output is broken")
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def fit_temperature(logits: np.ndarray, y: np.ndarray, lo: float = 0.01, hi: float = 100.0) -> float:
    """The T in [lo, hi] minimising the mean NLL of ``softmax(logits / T)`` on labels ``y``.

    A log-spaced grid, then golden-section search around its best point (the NLL is smooth
    and, in practice, unimodal in log T). Use labels the campaign already has, never the
    evaluation split.
    """
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if logits.ndim != 2 or y.shape != (logits.shape[0],) or logits.shape[0] == 0:
        raise ModelError(f"fit_temperature needs scores [n, C] and labels [n] with n > 0, got {logits.shape} and {y.shape}")
    if y.min() < 0 or y.max() >= logits.shape[1]:
        raise ModelError(f"fit_temperature: a label index is outside [0, {logits.shape[1]})")

    def nll(log_t: float) -> float:
        p = softmax_rows(logits, math.exp(log_t))
        return float(-np.log(np.maximum(p[np.arange(y.size), y], 1e-300)).mean())

    grid = np.linspace(math.log(lo), math.log(hi), 41)
    vals = [nll(g) for g in grid]
    i = int(np.argmin(vals))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    g = (math.sqrt(5) - 1) / 2
    for _ in range(40):
        c, d = b - g * (b - a), a + g * (b - a)
        if nll(c) < nll(d):
            b = d
        else:
            a = c
    return float(math.exp((a + b) / 2))


@dataclass(frozen=True)
class LabelTree:
    """The label targets as a prefix tree of the tokens fed after the prompt.

    Target ``c`` = verbalization tokens ``v_1..v_k`` + end token. ``v_1`` is predicted by the
    prompt's last position (``first[c]``); node ``i`` feeds one token at ``depth[i]`` (1 for
    ``v_1``) and its logits predict the next target token. Score term ``t`` is
    log p(``term_token[t]`` at node ``term_node[t]``) and adds to label ``term_label[t]``.
    """

    first: Any  # long[C] first target token per label
    tokens: Any  # long[1, N] token fed at each node
    depth: Any  # long[N]
    ancestors: Any  # bool[N, N]: [i, j] = node j is node i or one of its ancestors
    term_node: Any  # long[T]
    term_token: Any  # long[T]
    term_label: Any  # long[T]

    @classmethod
    def build(cls, targets: Sequence[Sequence[int]]) -> LabelTree:
        import torch

        index: dict[tuple[int, ...], int] = {}
        parent: list[int] = []
        fed: list[int] = []
        node, token, label = [], [], []
        for c, t in enumerate(targets):
            for j in range(len(t) - 1):  # every token but the end one is fed
                key = tuple(t[: j + 1])
                if key not in index:
                    index[key] = len(fed)
                    parent.append(index[key[:-1]] if j else -1)
                    fed.append(t[j])
                node.append(index[key])
                token.append(t[j + 1])
                label.append(c)
        n = len(fed)
        anc = np.zeros((n, n), dtype=bool)
        depth = np.zeros(n, dtype=np.int64)
        for i in range(n):  # parents come before their children
            anc[i, i] = True
            if parent[i] >= 0:
                anc[i] |= anc[parent[i]]
                depth[i] = depth[parent[i]] + 1
            else:
                depth[i] = 1
        long = torch.long
        return cls(
            first=torch.tensor([t[0] for t in targets], dtype=long),
            tokens=torch.tensor([fed], dtype=long),
            depth=torch.from_numpy(depth),
            ancestors=torch.from_numpy(anc),
            term_node=torch.tensor(node, dtype=long),
            term_token=torch.tensor(token, dtype=long),
            term_label=torch.tensor(label, dtype=long),
        )

    def to(self, device) -> LabelTree:
        return LabelTree(**{k: getattr(self, k).to(device) for k in self.__dataclass_fields__})


class LLMLabeler:
    """A causal LM that scores every label of the campaign's label set for a text.

    Index spaces: ``probs(texts)`` row ``i`` is ``texts[i]`` (input order, whatever the
    internal batching); column ``c`` is ``labels[c]``, the campaign's label set in its order.
    """

    kind = KIND

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        labels: Sequence[str],
        *,
        model_path: str,
        template: str,
        descriptions: dict[str, str] | None = None,
        temperature: float = 1.0,
        calibrate: bool = True,
        batch_size: int = 4,
        max_text_tokens: int = 256,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.model_path = model_path
        self.template = check_template(template)
        self.descriptions = dict(descriptions or {})
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        # The label name with _ and - as spaces, in lower case, or its description as written
        # (checked against the label set). One case for every name: with names as written,
        # BANKING77's one capitalised label (Refund_not_showing_up) won most rows. Lower, not the
        # capital a chat reply starts with: capitals measured worse with SmolLM2 (BANKING77
        # zero-shot 0.095 vs 0.195, SMS Spam 2-shot 0.26 vs 0.83 on 200 test texts each:
        # "Spam" is an answer the model gives whatever the text).
        names = label_sentences(self.labels, "{label}", self.descriptions)
        self.verbalizations = [
            v if lab in self.descriptions else v.lower() for lab, v in zip(self.labels, names, strict=True)
        ]
        self.temperature = float(temperature)
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ConfigError(f"zero_shot.temperature must be a finite number > 0, got {temperature!r}")
        self.calibrate = bool(calibrate)
        self.batch_size = int(batch_size)
        self.max_text_tokens = int(max_text_tokens)
        self._prior: np.ndarray | None = None
        self._tree = LabelTree.build(self._label_targets()).to(model.device)
        self.model.eval()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: ZeroShotConfig, labels: Sequence[str], device: str = "cpu") -> LLMLabeler:
        """Load ``cfg.model`` (a folder, hub id or ``packaged:`` name) for ``labels`` on
        ``device`` (``model.device``: auto, cpu or cuda)."""
        from alft.models.checkpoints import load_causal_lm, pick_device
        from alft.models.encoder import resolve_model_path

        path = resolve_model_path(cfg.model)
        tok, model = load_causal_lm(path, "zero-shot model", device=pick_device(device))
        return cls(
            model,
            tok,
            labels,
            model_path=path,
            template=cfg.template,
            descriptions=load_descriptions(cfg.descriptions),
            temperature=cfg.temperature,
            calibrate=cfg.calibrate,
            batch_size=cfg.batch_size,
            max_text_tokens=cfg.max_text_tokens,
        )

    def save(self, path: Path) -> None:
        """Write ``alft_model.json`` only: the LM is read back from ``model_path`` (not copied)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "kind": KIND,
            "labels": self.labels,
            "model_path": self.model_path,
            "template": self.template,
            "descriptions": self.descriptions,
            "temperature": self.temperature,
            "calibrate": self.calibrate,
            "batch_size": self.batch_size,
            "max_text_tokens": self.max_text_tokens,
        }
        (path / META).write_text(json.dumps(meta, indent=1, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> LLMLabeler:
        """Read a folder written by ``save`` (its LM from the recorded ``model_path``)."""
        from alft.models.checkpoints import load_causal_lm

        meta_path = Path(path) / META
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{meta_path}: cannot read ({exc})") from None
        if not isinstance(meta, dict) or meta.get("kind") != KIND:
            got = meta.get("kind") if isinstance(meta, dict) else type(meta).__name__
            raise ModelError(f"{meta_path}: kind {got!r}, not {KIND!r}")
        tok, model = load_causal_lm(meta["model_path"], f"zero-shot model of {path}")
        keys = ("template", "descriptions", "temperature", "calibrate", "batch_size", "max_text_tokens")
        return cls(model, tok, meta["labels"], model_path=meta["model_path"], **{k: meta[k] for k in keys})

    # ------------------------------------------------------------------ prompts
    def _answer_end(self) -> int:
        """The token that ends a reply: what the chat template writes after an assistant
        message (``<|im_end|>``), the newline of the plain layout, else EOS."""
        tok = self.tokenizer
        if self.chat:
            rendered = tok.apply_chat_template(
                [{"role": "user", "content": "x"}, {"role": "assistant", "content": _MARK}], tokenize=False
            )
            after = rendered.split(_MARK, 1)[1] if _MARK in rendered else ""
        else:
            after = "\n"
        ids = tok(after, add_special_tokens=False)["input_ids"] if after else []
        end = ids[0] if ids else tok.eos_token_id
        if end is None:
            raise ModelError(f"zero-shot model '{self.model_path}': no token ends a reply (no chat template end, no EOS)")
        return int(end)

    def _label_targets(self) -> list[list[int]]:
        """Per label (label-set order): its verbalization's tokens and the end token."""
        lead = "" if self.chat else " "  # plain layout: "Answer: card arrival"
        enc = self.tokenizer([lead + v for v in self.verbalizations], add_special_tokens=False)["input_ids"]
        end = self._answer_end()
        for lab, ids in zip(self.labels, enc, strict=True):
            if not ids:
                raise ConfigError(f"label {lab!r}: its verbalization has no tokens; give it a description")
        return [list(ids) + [end] for ids in enc]

    def _cut(self, text: str) -> str:
        """``text`` cut to its first ``max_text_tokens`` tokens (the instructions never are)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= self.max_text_tokens else self.tokenizer.decode(ids[: self.max_text_tokens])

    def prompt(self, text: str, demos: Sequence[tuple[str, str]] | None = None) -> str:
        """The prompt string for ``text``, ending where the label's tokens start.

        With demonstrations, ``{labels}`` lists the label set in the first turn only; later
        turns say ``LISTED_ABOVE`` instead. The listing is most of a prompt's tokens at many
        labels (BANKING77: ~400 of a turn's ~430 with SmolLM2's tokenizer), so repeating it per
        shot multiplied a text's cost by the number of shots, and with the listing before the
        text (the shipped template) the first turn's listing is in the prefix every prompt
        shares, encoded once per call (``benchmarks/results/llm_fewshot_layout.md``).
        """
        listing = ", ".join(self.verbalizations)
        verbal = dict(zip(self.labels, self.verbalizations, strict=True))
        shots = []
        for j, (d_text, d_label) in enumerate(demos or ()):
            if d_label not in verbal:
                raise ModelError(
                    f"few-shot demonstration {j}: label {d_label!r} is not in the label set of {len(self.labels)}"
                )
            shots.append((fill(self.template, self._cut(d_text), listing if j == 0 else LISTED_ABOVE), verbal[d_label]))
        query = fill(self.template, self._cut(text), LISTED_ABOVE if shots else listing)
        if self.chat:
            messages = []
            for user, answer in shots:
                messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
            messages.append({"role": "user", "content": query})
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        blocks = [f"{user}\n{PLAIN_ANSWER} {answer}\n\n" for user, answer in shots]
        return "".join(blocks) + f"{query}\n{PLAIN_ANSWER}"

    def prompt_ids(self, texts: Sequence[str], demos: Sequence[Sequence[tuple[str, str]]] | None) -> list[list[int]]:
        if demos is not None and len(demos) != len(texts):
            raise ModelError(f"few-shot demonstrations: {len(demos)} lists for {len(texts)} texts; need one per text")
        prompts = [self.prompt(t, None if demos is None else demos[i]) for i, t in enumerate(texts)]
        # a rendered chat template holds its special tokens already; the plain layout gets BOS
        return self.tokenizer(prompts, add_special_tokens=not self.chat)["input_ids"]

    # ------------------------------------------------------------------ scoring
    def scores(
        self, texts: Sequence[str], demos: Sequence[Sequence[tuple[str, str]]] | None = None
    ) -> np.ndarray:
        """Log-likelihood (nats, summed over the label's tokens and the end token) of each
        label's verbalization after each text's prompt: float64 ``[n, C]``, rows = ``texts``."""
        import torch

        from alft import progress

        prompts = self.prompt_ids(texts, demos)
        n = len(prompts)
        out = np.zeros((n, len(self.labels)), dtype=np.float64)
        if n == 0:
            return out
        tree = self._tree
        pad = int(self.tokenizer.pad_token_id)
        cache_arg = _cache_kwarg(self.model)
        # the LM head on the prompt's last position only: W x V logits per prompt saved
        last_only = {"logits_to_keep": 1} if _accepts(self.model, "logits_to_keep") else {}
        dev = self.model.device
        # The tokens every prompt starts with (system prompt, instructions, the label list) are
        # encoded once; each prompt keeps at least its last token, whose logits are needed.
        shared = _common_prefix(prompts)
        shared = shared[: min(len(p) for p in prompts) - 1]
        lengths = np.array([len(p) - len(shared) for p in prompts], dtype=np.int64)
        with torch.inference_mode(), progress.bar("zero-shot LLM scoring", n) as advance:
            prefix = None
            if shared:
                prefix = _cache_of(self.model(input_ids=torch.tensor([shared], device=dev), use_cache=True, **last_only))
            for pos in self._groups(lengths, len(shared)):
                width = int(lengths[pos].max())
                x = np.full((len(pos), width), pad, dtype=np.int64)  # [P, W] own tokens, left padded
                m = np.zeros((len(pos), width), dtype=np.int64)  # [P, W]
                for r, p in enumerate(pos):
                    x[r, width - lengths[p] :] = prompts[p][len(shared) :]
                    m[r, width - lengths[p] :] = 1
                own = torch.from_numpy(m).to(dev)
                mask = torch.cat([torch.ones(len(pos), len(shared), dtype=own.dtype, device=dev), own], dim=1)  # [P, S+W]
                extra = {}
                if prefix is not None:
                    extra[cache_arg] = copy.deepcopy(prefix)  # the tree pass extends it: a copy per batch
                    extra[cache_arg].batch_repeat_interleave(len(pos))
                res = self.model(
                    input_ids=torch.from_numpy(x).to(dev),
                    attention_mask=mask,
                    position_ids=len(shared) + (own.cumsum(1) - 1).clamp(min=0),  # [P, W]
                    use_cache=True,
                    **last_only,
                    **extra,
                )
                # the prompt's last position predicts every label's first token
                logp = torch.log_softmax(res.logits[:, -1].float(), dim=-1)  # [P, V]
                first = logp[:, tree.first].double()  # [P, C]
                rest = self._tree_pass(_cache_of(res), mask, cache_arg)  # [P, C]
                out[pos] = (first + rest).cpu().numpy()
                advance(len(pos))
        return out

    def _tree_pass(self, cache, mask, cache_arg: str):
        """Every label's tokens after the cached prompts in one forward pass: float64
        ``[P, C]``, the sum over each label of log p(next target token | prompt, its tokens so far).

        The tree's nodes (the labels' distinct token prefixes) are fed as one sequence per
        prompt row; a 4-D mask lets node i see its row's prompt and its own ancestors only,
        at position (prompt length + depth - 1), so each node's logits are exactly those of
        the label sequence it lies on, fed alone. A prefix shared by several labels is fed once.
        """
        import torch

        tree = self._tree
        rows = mask.shape[0]
        plen = mask.sum(1)  # [P] real prompt tokens per row
        ids = tree.tokens.expand(rows, -1)  # [P, N]
        position = plen[:, None] + tree.depth[None, :] - 1  # [P, N]
        attn = self._tree_mask(mask, position)
        logits = self.model(
            input_ids=ids, attention_mask=attn, position_ids=position, use_cache=True, **{cache_arg: cache}
        ).logits  # [P, N, V]
        lse = torch.logsumexp(logits.float(), dim=-1)  # [P, N]
        term = logits[:, tree.term_node, tree.term_token].float() - lse[:, tree.term_node]  # [P, T]
        sums = torch.zeros(rows, len(self.labels), dtype=torch.float64, device=term.device)  # [P, C]
        return sums.index_add_(1, tree.term_label, term.double())

    def _tree_mask(self, mask, position):
        """Additive 4-D mask ``[P, 1, N, keys]`` (0 = may attend): the row's real prompt tokens
        and the node's ancestors. Sliding-window layers keep only their last ``window - 1``
        prompt keys and see keys less than ``window`` positions back: they get a mask of their own."""
        import torch

        tree = self._tree
        dtype = self.model.dtype
        rows, width = mask.shape
        n = tree.tokens.shape[1]
        allowed = torch.cat(
            [mask.bool()[:, None, :].expand(rows, n, width), tree.ancestors[None].expand(rows, n, n)], dim=2
        )  # [P, N, W + N]
        full = self._additive(allowed, dtype)
        window, types = self._window()
        if window is None:
            return full
        kept = min(width, window - 1)
        key_pos = torch.cat([(mask.cumsum(1) - 1)[:, width - kept :], position], dim=1)  # [P, kept + N]
        near = position[:, :, None] - key_pos[:, None, :] < window  # [P, N, kept + N] within the window
        sliding = self._additive(allowed[:, :, width - kept :] & near, dtype)
        if not types:  # every layer slides (Mistral style)
            return sliding
        return {"full_attention": full, "sliding_attention": sliding}

    def _window(self) -> tuple[int | None, list[str]]:
        """(sliding window, layer types) of a model with sliding-window layers; (None, ...) else."""
        cfg = self.model.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        window = getattr(cfg, "sliding_window", None)
        types = list(getattr(cfg, "layer_types", None) or [])
        if not window or (types and "sliding_attention" not in types):
            return None, types
        return int(window), types

    def _groups(self, lengths: np.ndarray, shared: int) -> list[np.ndarray]:
        """Prompt rows per forward pass, longest first.

        A sliding-window layer counts pad columns as tokens (its window is in cache columns)
        and keeps only its last ``window - 1`` columns, so once a padded batch could reach the
        window its rows would see other keys than alone: then only equal lengths share a batch.
        """
        window, _ = self._window()
        if window is None or shared + int(lengths.max()) + self._tree.tokens.shape[1] < window:
            return list(_batches(lengths, self.batch_size))
        out = []
        for length in np.unique(lengths)[::-1]:
            same = np.flatnonzero(lengths == length)
            out += [same[i : i + self.batch_size] for i in range(0, same.size, self.batch_size)]
        return out

    @staticmethod
    def _additive(allowed, dtype):
        import torch

        zero = torch.zeros((), dtype=dtype, device=allowed.device)
        return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]  # [P, 1, N, keys]

    def prior(self) -> np.ndarray:
        """The zero-shot prompt's label prior: mean score after the content-free texts
        ``CONTENT_FREE`` (Zhao et al. 2021, "Calibrate before use"); float64 ``[C]``, computed once."""
        if self._prior is None:
            self._prior = self.scores(list(CONTENT_FREE)).mean(axis=0)  # [C]
        return self._prior

    def logits(self, texts: Sequence[str], demos: Sequence[Sequence[tuple[str, str]]] | None = None) -> np.ndarray:
        """What the softmax reads: ``scores``, minus ``prior()`` on zero-shot rows when
        ``calibrate``; float64 ``[n, C]``, rows = ``texts``.

        A label the model would say whatever the text (a short or frequent phrase, the first
        one listed) gets a high score everywhere; the prior takes that part out, leaving what
        the text adds. With SmolLM2 it moves accuracy from 0.19 to 0.36 on BANKING77 and from
        0.12 to 0.88 on SMS Spam (``benchmarks/results/llm_zero_shot.md``). Rows with demonstrations are not
        calibrated: their prior depends on the demonstrations (three more prompts per row).
        """
        out = self.scores(texts, demos)
        if self.calibrate and len(texts):
            zero = np.array([demos is None or not demos[i] for i in range(len(texts))])  # [n]
            out[zero] -= self.prior()
        return out

    def probs(self, texts: Sequence[str], demos: Sequence[Sequence[tuple[str, str]]] | None = None) -> np.ndarray:
        """Class probabilities ``softmax(logits / T)``: float64 ``[n, C]``, rows sum to 1.

        ``texts[i]`` -> row ``i``; column ``c`` -> ``labels[c]`` (the campaign's label set, in
        its order). ``demos[i]`` (optional) are few-shot ``(text, label)`` demonstrations
        placed in text ``i``'s prompt before it, in the given order (e.g. the k nearest
        already-labeled examples, chosen by the caller); each label must be in the label set.
        ``demos=None`` or an empty list is zero-shot (calibrated by ``prior()`` when
        ``calibrate``); rows with demonstrations are not calibrated (see ``logits``).
        """
        return softmax_rows(self.logits(texts, demos), self.temperature)

    # ------------------------------------------------------------------ ClassifierModel
    def predict_proba(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        """``probs(texts)``; the campaign's embeddings are not used (the LM reads the texts)."""
        return self.probs(list(texts))

    def outputs(
        self,
        texts: Sequence[str],
        embeddings: np.ndarray | None,
        *,
        features: bool,
        samples: int,
        rng: np.random.Generator | None = None,
    ) -> ModelOutputs:
        """Probabilities only: no features/head (BADGE, EGL) and no MC samples (BALD)."""
        if features:
            raise ModelError(
                "the LLM zero-shot model (zero_shot.kind llm) gives no features or output layer: strategies "
                "that need them (badge, egl) need zero_shot.kind similarity in round 0, or a trained model"
            )
        if samples:
            raise ModelError(
                f"the LLM zero-shot model gives no MC samples (asked for {samples}); strategies that need "
                "them (bald and other MC ones) need a trained model"
            )
        return ModelOutputs(probs=self.predict_proba(texts, embeddings))
