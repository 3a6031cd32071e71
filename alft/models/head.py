"""The ``head`` classifier: multinomial logistic regression on the frozen encoder's
embeddings (seconds per round; the campaign's embeddings are its features).

Saved as ``alft_model.json`` plus ``head.npz`` (classes, coef, intercept).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alft.config import HeadTrainerConfig
from alft.errors import ModelError, TrainerError
from alft.models.base import META, ModelOutputs, check_training_set


@dataclass
class HeadModel:
    """Logistic regression weights over the label set; classes never seen get probability 0."""

    labels: list[str]
    classes: np.ndarray  # int64[k] label indices the model was fitted on
    coef: np.ndarray  # float64[k, d] (k == 1: constant model)
    intercept: np.ndarray  # float64[k]
    kind: str = "head"
    mc_dropout: float = 0.1

    def predict_proba(self, texts: Sequence[str], embeddings: np.ndarray | None) -> np.ndarray:
        if embeddings is None:
            raise ModelError("the head model predicts from embeddings; none were given")
        n, c = embeddings.shape[0], len(self.labels)
        out = np.zeros((n, c), dtype=np.float64)  # [n, C]
        if self.classes.size == 1:
            out[:, self.classes[0]] = 1.0
            return out
        # in blocks: a float64 copy of a million 384-d embeddings alone would be 2.9 GiB
        for start in range(0, n, 65536):
            block = np.asarray(embeddings[start : start + 65536], dtype=np.float64)  # [b, d]
            logits = block @ self.coef.T + self.intercept  # [b, k]
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
            out[start : start + 65536, self.classes] = p
        return out

    def outputs(
        self,
        texts: Sequence[str],
        embeddings: np.ndarray | None,
        *,
        features: bool,
        samples: int,
        rng: np.random.Generator,
    ) -> ModelOutputs:
        """MC samples drop input features at rate ``mc_dropout`` (inverted scaling).

        A classification head on a transformer sees its features through a dropout layer
        during training; dropping the frozen embeddings the same way is that layer's MC
        estimate for a head trained without it (cheap: one matmul per sample).
        """
        probs = self.predict_proba(texts, embeddings)
        out = ModelOutputs(probs=probs)
        if features:
            out.features = np.asarray(embeddings, dtype=np.float64)
            out.head = (self.coef, self.intercept, self.classes)
        if samples:
            keep = 1.0 - self.mc_dropout
            stack = np.empty((probs.shape[0], probs.shape[1], samples), dtype=np.float32)  # [n, C, K]
            for k in range(samples):
                mask = rng.random(embeddings.shape, dtype=np.float32) < keep  # [n, d]
                stack[:, :, k] = self.predict_proba(texts, embeddings * mask / keep)
            out.prob_samples = stack
        return out

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "head.npz", classes=self.classes, coef=self.coef, intercept=self.intercept)
        meta = {"kind": "head", "labels": self.labels, "mc_dropout": self.mc_dropout}
        (path / META).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: Path, labels: list[str], mc_dropout: float = 0.1) -> HeadModel:
        with np.load(path / "head.npz", allow_pickle=False) as z:
            return cls(
                labels=labels,
                classes=z["classes"],
                coef=z["coef"],
                intercept=z["intercept"],
                mc_dropout=mc_dropout,
            )


class HeadTrainer:
    """Fit ``HeadModel`` with scikit-learn's lbfgs logistic regression."""

    kind = "head"
    needs_embeddings = True

    def __init__(self, cfg: HeadTrainerConfig) -> None:
        self.cfg = cfg

    def fit(
        self,
        texts: Sequence[str],
        embeddings: np.ndarray | None,
        y: np.ndarray,
        labels: list[str],
        seed: int,
        progress: Callable[[str], None] | None = None,
        *,
        pool: np.ndarray | None = None,
        pool_rows: np.ndarray | None = None,
        pool_graph: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> HeadModel:
        """``pool``: float[n, d] every pool embedding, and ``pool_rows``: the labeled examples'
        row positions in it (same order as ``y``); both needed by ``semi_supervised``.
        ``pool_graph``: returns the pool's kNN graph (``spreading.knn_graph(pool, k)``) when the
        caller keeps one; called only while the pseudo-labels have weight."""
        from sklearn.linear_model import LogisticRegression

        check_training_set(y, labels)
        if embeddings is None or embeddings.shape[0] != y.shape[0]:
            raise TrainerError("the head trainer needs one embedding per labeled example")
        weights = None
        ss = self.cfg.semi_supervised
        w_pseudo = 0.0
        if ss is not None:
            from alft.models.spreading import pseudo_label_weight

            if pool is None or pool_rows is None or pool_rows.shape != y.shape:
                raise TrainerError(
                    "trainer.head.semi_supervised needs the pool's embeddings and the labeled rows' positions in it"
                )
            w_pseudo = pseudo_label_weight(ss.weight, int(y.size), len(labels), ss.fade_per_class)
            if progress is not None and w_pseudo == 0.0:
                progress(f"label spreading faded out: {y.size} labels >= {ss.fade_per_class:g} per class")
        if w_pseudo > 0.0:
            from alft.models.spreading import pseudo_labels

            rows, py, conf = pseudo_labels(
                np.asarray(pool, dtype=np.float32), pool_rows, y, len(labels),
                k=ss.k, alpha=ss.alpha, iterations=ss.iterations, seed=seed,
                graph=None if pool_graph is None else pool_graph(),
            )
            if progress is not None:
                progress(
                    f"label spreading: {rows.size} pseudo-labels, weight {w_pseudo:.3f} × confidence "
                    f"(mean {conf.mean() if conf.size else 0:.2f})"
                )
            embeddings = np.vstack([embeddings, pool[rows]])  # [m + u, d]
            weights = np.concatenate([np.ones(y.size), w_pseudo * conf])
            y = np.concatenate([y, py])
        classes = np.unique(y)
        if classes.size == 1:
            d = embeddings.shape[1]
            return HeadModel(labels, classes, np.zeros((1, d)), np.zeros(1), mc_dropout=self.cfg.mc_dropout)
        clf = LogisticRegression(
            C=self.cfg.C,
            max_iter=self.cfg.max_iter,
            class_weight=self.cfg.class_weight,
            random_state=seed,
        )
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            # few labels per class early on: lbfgs may stop short, and sklearn warns when
            # classes outnumber half the samples; both are expected in round 0
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.filterwarnings("ignore", message="The number of unique classes")
            clf.fit(embeddings.astype(np.float64), y, sample_weight=weights)
        coef, intercept = clf.coef_, clf.intercept_
        if classes.size == 2:  # sklearn keeps one row for binary problems; make it softmax-shaped
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        return HeadModel(labels, clf.classes_.astype(np.int64), coef, intercept, mc_dropout=self.cfg.mc_dropout)
