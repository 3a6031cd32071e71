"""Metrics and the plots people look at: confusion matrix, learning curve."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """Accuracy, macro-F1 over the classes present in ``y_true``, and per-class F1 (``f1/<label>``)."""
    from sklearn.metrics import accuracy_score, f1_score

    present = np.unique(y_true)
    per_class = f1_score(y_true, y_pred, labels=present, average=None, zero_division=0)
    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
    }
    for idx, f1 in zip(present, per_class, strict=True):
        out[f"f1/{labels[int(idx)]}"] = float(f1)
    return out


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str], title: str):
    """A row-normalised confusion matrix as a matplotlib Figure (rows: gold, columns: predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    c = len(labels)
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(c)).astype(np.float64)  # [C, C]
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = min(4 + 0.16 * c, 22)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fs = max(3, 10 - c // 12)
    ax.set_xticks(range(c), labels=labels, rotation=90, fontsize=fs)
    ax.set_yticks(range(c), labels=labels, fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    if c <= 12:
        for i in range(c):
            for j in range(c):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    # fixed margins instead of tight_layout: measuring 2 x C tick labels costs ~0.3 s at C=77
    margin = min(0.3, 0.06 + 0.0045 * max(len(str(lab)) for lab in labels))
    fig.subplots_adjust(left=margin, bottom=margin, right=0.95, top=0.95)
    return fig


def learning_curve_figure(
    curves: dict[str, list[tuple[int, float, float]]],
    title: str,
    metrics: tuple[str, str] | tuple[str] = ("accuracy", "macro-F1"),
):
    """Metrics against labels; ``curves`` maps a name to (labels, metric 1, metric 2) points.

    One panel per metric name; a generation campaign draws one (ROUGE-L).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), sharex=True, squeeze=False)
    axes = axes[0]
    for name, pts in curves.items():
        if not pts:
            continue
        x = [p[0] for p in pts]
        for i, ax in enumerate(axes):
            ax.plot(x, [p[1 + i] for p in pts], marker="o", ms=3, label=name)
    for ax, metric in zip(axes, metrics, strict=True):
        ax.set_xlabel("labels")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def normalized_auc(x: Sequence[float], y: Sequence[float]) -> float:
    """Trapezoidal area under ``y(x)`` divided by the x range: a mean metric over the curve."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.size < 2 or x[-1] == x[0]:
        return float(y[-1]) if y.size else float("nan")
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / (x[-1] - x[0]))
