"""Matplotlib figures logged as PNG artifacts to MLflow (headless ``Agg`` backend)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def confusion_figure(matrix: np.ndarray, classes: Sequence[str], title: str = "Confusion matrix (test)") -> Figure:
    """Heatmap of a ``(C, C)`` confusion matrix; rows are actual classes, columns predicted ones."""
    matrix = np.asarray(matrix)
    size = max(4.0, 0.5 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes, yticklabels=classes,
           xlabel="predicted", ylabel="actual", title=title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(int(value)), ha="center", va="center", fontsize=8,
                color="white" if value > threshold else "black")
    fig.tight_layout()
    return fig


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str = "ROC (test)") -> Figure:
    """ROC curves: ``{label: (fpr, tpr, auc)}``, with the chance diagonal."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def history_figure(rows: list[dict[str, float]], metric: str) -> Figure:
    """Loss and ``metric`` against epoch, train and validation together."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = [row["epoch"] for row in rows]
    for ax, name in zip(axes, ("loss", metric)):
        for split in ("train", "val"):
            values = [row.get(f"{split}_{name}") for row in rows]
            if any(v is not None and v == v for v in values):
                ax.plot(epochs, values, marker="o", label=split)
        ax.set(xlabel="epoch", ylabel=name, title=f"{name} per epoch")
        ax.legend()
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)
