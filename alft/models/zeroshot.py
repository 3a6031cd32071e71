"""Zero-shot cold start: class probabilities from text-label similarity in the encoder's space.

Before any label exists there is no classifier, so round 0 can only use diversity
strategies. The campaign's encoder already places texts in a space where a short
sentence naming an intent lies near the texts that express it, so each label becomes a
sentence (``template`` with ``{label}`` filled, or a hand-written description), the
sentence is embedded with the *same* encoder as the pool, and

    p(c | x) = softmax_c( cos(x, s_c) / T ).

That is a linear layer on the (unit) text embeddings: weight ``s_c / (|s_c| T)``, no bias.
``ZeroShotModel.outputs`` exposes it as the model's head and the text embeddings as its
features, so gradient-embedding strategies (BADGE, EGL) work in round 0 as well as
uncertainty ones. It has no stochastic passes: MC strategies (BALD) need a trained model.

The temperature does not change the ranking (accuracy), only how peaked the probabilities
are: it matters for calibration and for strategies that read probability values
(entropy, margin thresholds). ``benchmarks/zero_shot.py`` measures both on BANKING77.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from alft.config import ZeroShotConfig, read_text_file
from alft.errors import ConfigError, ModelError
from alft.models.base import META, ModelOutputs

KIND = "zero_shot"
LABEL_EMB_FILE = "label_emb.npy"
MAX_DESCRIPTIONS_BYTES = 10 * 1024 * 1024  # a description file is kilobytes; more is a wrong path
# Rows per block when computing probabilities: bounds the float64 copies at ~block x (d + C).
_BLOCK_ROWS = 65536
# Norm floor (as torch's F.normalize): a zero vector gets similarity 0 to every label.
_EPS = 1e-12


class _Encodes(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


# --------------------------------------------------------------------------- label sentences
def label_name(label: str) -> str:
    """``"card_payment-fee"`` -> ``"card payment fee"`` (runs of spaces collapsed)."""
    return " ".join(label.replace("_", " ").replace("-", " ").split())


def load_descriptions(
    value: Mapping[str, Any] | str | Path | None, *, base: Path | None = None, name: str = "zero_shot.descriptions"
) -> dict[str, str] | None:
    """A label -> description mapping, given inline or as the path of a JSON object file.

    ``base`` resolves a relative path (the config file's folder); without it, the current
    directory. Every value must be a non-empty string; ConfigError names the file and key.
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        return _check_description_map(value, name)
    if not isinstance(value, (str, Path)):
        raise ConfigError(f"{name} must be a mapping or a JSON file path, got {type(value).__name__}")
    if isinstance(value, str) and not value.strip():
        raise ConfigError(f"{name}: the file path is empty")
    path = Path(value).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    where = f"{name} file {path}"
    if not path.exists():
        raise ConfigError(f"{where} not found")
    if not path.is_file():
        raise ConfigError(f"{where} is not a regular file")
    size = path.stat().st_size
    if size > MAX_DESCRIPTIONS_BYTES:
        raise ConfigError(f"{where} is {size / 1e6:.1f} MB, over the {MAX_DESCRIPTIONS_BYTES / 1e6:.0f} MB limit")
    text = read_text_file(path, where, encoding="utf-8-sig")  # -sig: editors that add a BOM
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object {{label: description}}, got {type(data).__name__}")
    return _check_description_map(data, where)


def _check_description_map(data: Mapping[Any, Any], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, text in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{where}: label {key!r} is not a string")
        if not isinstance(text, str):
            raise ConfigError(f"{where}: the description of label {key!r} is {type(text).__name__}, not a string")
        out[key] = text
    return out


def label_sentences(
    labels: Sequence[str],
    template: str = "{label}",
    descriptions: Mapping[str, str] | None = None,
    where: str = "zero_shot.descriptions",
) -> list[str]:
    """One sentence per label, in label order: its description, else the filled template.

    ``{label}`` is replaced literally (other braces in the template stay as written). A
    description of a label not in ``labels`` is refused, since it is almost always a typo
    that would silently leave the intended label on the template.
    """
    if "{label}" not in template:
        raise ConfigError(f"zero_shot.template {template!r} must contain {{label}}")
    if len(labels) == 0:
        raise ConfigError("zero-shot needs at least one label; the label set is empty")
    if len(set(labels)) != len(labels):
        dup = sorted(lab for lab, k in Counter(labels).items() if k > 1)
        raise ConfigError(f"the label set repeats {', '.join(map(repr, dup[:5]))}")
    descriptions = _check_description_map(descriptions or {}, where)
    known = set(labels)
    unknown = sorted(k for k in descriptions if k not in known)
    if unknown:
        shown = ", ".join(map(repr, unknown[:5])) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ConfigError(
            f"{where}: {len(unknown)} label(s) not in the label set of {len(labels)}: {shown}"
        )
    empty = sorted(k for k, v in descriptions.items() if not v.strip())
    if empty:
        raise ConfigError(
            f"{where}: empty description for {', '.join(map(repr, empty[:5]))}; "
            "give a sentence or leave the label out (it then uses the template)"
        )
    out = []
    for lab in labels:
        if lab in descriptions:
            out.append(descriptions[lab].strip())
            continue
        name = label_name(lab)
        if not name:
            raise ConfigError(f"label {lab!r} has no name left once _ and - become spaces; give it a description")
        out.append(template.replace("{label}", name))
    return out


# --------------------------------------------------------------------------- probabilities
def _check_finite(x: np.ndarray, what: str) -> None:
    # block-wise, so a million-row check never allocates an n x d boolean array
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        block = x[start : start + _BLOCK_ROWS]
        if not np.isfinite(block).all():
            bad = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise ModelError(f"{what} row {bad} holds a NaN or infinite value; the encoder output is broken")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _EPS)


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not math.isfinite(t) or t <= 0:
        raise ConfigError(f"zero-shot temperature must be a finite number > 0, got {temperature!r}")
    return t


def zero_shot_probs(text_emb: np.ndarray, label_emb: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(cos(text, label) / T)`` over labels: float64 ``[n, C]``, rows sum to 1.

    Both sides are normalised here, so raw (unnormalised) vectors give the same answer as
    unit ones. The max logit is subtracted per row before ``exp`` (T = 0.01 puts logits in
    [-100, 100], whose exp would overflow float32 and lose all precision near 0).
    """
    t = _check_temperature(temperature)
    text_emb = np.asarray(text_emb)
    label_emb = np.asarray(label_emb)
    if text_emb.ndim != 2 or label_emb.ndim != 2:
        raise ModelError(
            f"zero-shot needs 2-d arrays: text embeddings of shape {text_emb.shape}, label embeddings {label_emb.shape}"
        )
    if label_emb.shape[0] == 0:
        raise ModelError("zero-shot needs at least one label embedding")
    if text_emb.shape[1] != label_emb.shape[1]:
        raise ModelError(
            f"text embeddings have {text_emb.shape[1]} dimensions, label embeddings {label_emb.shape[1]}: "
            "they must come from the same encoder"
        )
    _check_finite(label_emb, "label embeddings")
    _check_finite(text_emb, "text embeddings")
    norms = np.linalg.norm(label_emb.astype(np.float64), axis=1)  # [C]
    if (norms < _EPS).any():
        row = int(np.flatnonzero(norms < _EPS)[0])
        raise ModelError(f"label embedding {row} is the zero vector: no direction to compare texts with")
    lab = _unit_rows(label_emb)  # [C, d]
    n, c = text_emb.shape[0], lab.shape[0]
    out = np.empty((n, c), dtype=np.float64)
    for start in range(0, n, _BLOCK_ROWS):
        logits = _unit_rows(text_emb[start : start + _BLOCK_ROWS]) @ lab.T / t  # [b, C]
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        out[start : start + _BLOCK_ROWS] = logits
    return out


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-class confidence: sum over equal-width bins of |accuracy - confidence| x share.

    Bins are (lo, hi] with the first one closed at 0, the usual definition (Guo et al. 2017).
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y)
    if probs.ndim != 2 or y.shape != (probs.shape[0],):
        raise ValueError(f"probs {probs.shape} and labels {y.shape} do not match: need [n, C] and [n]")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    n = probs.shape[0]
    if n == 0:
        return 0.0
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    which = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += abs(correct[m].mean() - conf[m].mean()) * m.sum() / n
    return float(ece)


# --------------------------------------------------------------------------- the model
@dataclass
class ZeroShotModel:
    """The label sentences' embeddings as a fixed linear classifier over text embeddings.

    ``label_emb`` rows follow ``labels``; they are stored unit-normalised (float64).
    ``sentences`` are kept for provenance (what each label was embedded as).
    """

    labels: list[str]
    label_emb: np.ndarray  # float64[C, d], unit rows
    temperature: float
    sentences: list[str] = field(default_factory=list)
    kind: str = KIND

    def __post_init__(self) -> None:
        self.temperature = _check_temperature(self.temperature)
        emb = np.asarray(self.label_emb)
        if emb.ndim != 2 or emb.shape[0] != len(self.labels):
            raise ModelError(
                f"zero-shot model: {len(self.labels)} labels but label embeddings of shape {emb.shape}"
            )
        _check_finite(emb, "label embeddings")
        norms = np.linalg.norm(emb.astype(np.float64), axis=1)
        if (norms < _EPS).any():
            row = int(np.flatnonzero(norms < _EPS)[0])
            raise ModelError(f"label embedding {row} ({self.labels[row]!r}) is the zero vector")
        self.label_emb = _unit_rows(emb)
        if self.sentences and len(self.sentences) != len(self.labels):
            raise ModelError(f"zero-shot model: {len(self.sentences)} sentences for {len(self.labels)} labels")

    @property
    def dim(self) -> int:
        return int(self.label_emb.shape[1])

    def _embeddings(self, embeddings: np.ndarray | None, n_texts: int | None) -> np.ndarray:
        if embeddings is None:
            raise ModelError("the zero-shot model predicts from the campaign's embeddings; none were given")
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise ModelError(
                f"zero-shot model expects embeddings [n, {self.dim}] from the campaign's encoder, got {emb.shape}"
            )
        if n_texts is not None and emb.shape[0] != n_texts:
            raise ModelError(f"{n_texts} texts but {emb.shape[0]} embeddings")
        return emb

    def predict_proba(self, texts: Sequence[str], embeddings: np.ndarray | None) -> np.ndarray:
        emb = self._embeddings(embeddings, len(texts) if texts is not None else None)
        return zero_shot_probs(emb, self.label_emb, self.temperature)

    def head(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(weight [C, d], bias [C], classes [C]) whose logits on unit features are cos / T."""
        c = len(self.labels)
        return self.label_emb / self.temperature, np.zeros(c), np.arange(c, dtype=np.int64)

    def outputs(
        self,
        texts: Sequence[str],
        embeddings: np.ndarray | None,
        *,
        features: bool,
        samples: int,
        rng: np.random.Generator | None = None,
    ) -> ModelOutputs:
        """Probabilities; with ``features``, the unit text embeddings and the similarity head.

        Features are normalised so that ``features @ weight.T + bias`` is exactly the softmax
        input (the campaign's embeddings are unit already: a no-op there).
        """
        if samples:
            raise ModelError(
                f"the zero-shot model gives no MC samples (asked for {samples}): it has no dropout or "
                "training noise; strategies that need them (bald and other MC ones) need a trained model"
            )
        emb = self._embeddings(embeddings, len(texts) if texts is not None else None)
        out = ModelOutputs(probs=zero_shot_probs(emb, self.label_emb, self.temperature))
        if features:
            out.features = _unit_rows(emb)
            out.head = self.head()
        return out

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / LABEL_EMB_FILE, self.label_emb, allow_pickle=False)
        meta = {
            "kind": KIND,
            "labels": self.labels,
            "temperature": self.temperature,
            "dim": self.dim,
            "sentences": self.sentences,
        }
        (path / META).write_text(json.dumps(meta, indent=1, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path, labels: list[str] | None = None) -> ZeroShotModel:
        """Read a folder written by ``save``; ``labels`` (if given) must match the stored ones."""
        path = Path(path)
        meta_path = path / META
        if not meta_path.is_file():
            raise ModelError(f"{path} is not an alft model folder (no {META})")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{meta_path}: cannot read ({exc})") from None
        if not isinstance(meta, dict) or meta.get("kind") != KIND:
            got = meta.get("kind") if isinstance(meta, dict) else type(meta).__name__
            raise ModelError(f"{meta_path}: kind {got!r}, not {KIND!r}")
        stored = meta.get("labels")
        if not isinstance(stored, list) or not all(isinstance(x, str) for x in stored):
            raise ModelError(f"{meta_path}: 'labels' must be a list of strings")
        if labels is not None and list(labels) != stored:
            raise ModelError(f"{path}: the model's {len(stored)} labels differ from the {len(labels)} expected")
        try:
            emb = np.load(path / LABEL_EMB_FILE, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path / LABEL_EMB_FILE}: cannot read ({exc})") from None
        if "dim" in meta and emb.ndim == 2 and emb.shape[1] != meta["dim"]:
            raise ModelError(f"{path / LABEL_EMB_FILE}: {emb.shape[1]} dimensions, {META} says {meta['dim']}")
        return cls(
            labels=stored,
            label_emb=emb,
            temperature=meta.get("temperature", 0.05),
            sentences=list(meta.get("sentences") or []),
        )


def build_zero_shot(
    encoder: _Encodes, labels: Sequence[str], cfg: ZeroShotConfig, *, base: Path | None = None
) -> ZeroShotModel:
    """Embed the label sentences with the campaign's encoder (the pool's vector space).

    ``encoder`` is the ``alft.embedding.Encoder`` the pool was embedded with
    (``alft.campaign.encoder_for(cfg)``): label and text vectors must share one space.
    ``base`` resolves a relative descriptions path (the config file's folder).
    """
    sentences = label_sentences(labels, cfg.template, load_descriptions(cfg.descriptions, base=base))
    emb = np.asarray(encoder.encode(sentences))
    if emb.ndim != 2 or emb.shape[0] != len(sentences):
        raise ModelError(f"the encoder returned shape {emb.shape} for {len(sentences)} label sentences")
    return ZeroShotModel(labels=list(labels), label_emb=emb, temperature=cfg.temperature, sentences=sentences)
