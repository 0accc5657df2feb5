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
    ax.set(
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xticklabels=classes,
        yticklabels=classes,
        xlabel="predicted",
        ylabel="actual",
        title=title,
    )
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(
            j, i, str(int(value)), ha="center", va="center", fontsize=8, color="white" if value > threshold else "black"
        )
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


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure rendered as PNG bytes (for files written atomically)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def close(fig: Figure) -> None:
    plt.close(fig)


# ------------------------------------------------------------------------------------------ gradient flow


def grad_flow_table(rows: list[dict]) -> list[dict]:
    """Per-layer summary of :meth:`pipelines.diagnostics.GradientDiagnostics.layer_rows` over the whole run:
    ``order``, ``layer``, mean of the mean |grad|, max of the max |grad|, median gradient L2 norm (input side first).
    """
    by_layer: dict[str, list[dict]] = {}
    for row in rows:
        by_layer.setdefault(row["layer"], []).append(row)
    table = []
    for layer, items in sorted(by_layer.items(), key=lambda kv: kv[1][0]["order"]):
        table.append(
            {
                "order": items[0]["order"],
                "layer": layer,
                "grad_mean": float(np.mean([r["grad_mean"] for r in items])),
                "grad_max": float(np.max([r["grad_max"] for r in items])),
                "grad_norm": float(np.median([r["grad_norm"] for r in items])),
            }
        )
    return table


def grad_flow_figure(rows: list[dict], title: str = "Gradient flow") -> Figure:
    """The grad-flow bar plot (max |grad| and mean |grad| per layer, input side left, log scale) beside the
    per-layer gradient L2 norm over training steps (one line per layer). ``rows``: ``layer_rows()`` output."""
    table = grad_flow_table(rows)
    layers = [t["layer"] for t in table]
    fig, (bars, lines) = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.arange(len(layers))
    floor = 1e-12  # log scale: zero gradients are drawn at the floor
    bars.bar(x, [max(t["grad_max"], floor) for t in table], color="c", alpha=0.5, label="max |grad|")
    bars.bar(x, [max(t["grad_mean"], floor) for t in table], color="b", alpha=0.8, width=0.5, label="mean |grad|")
    bars.set(
        yscale="log",
        xticks=x,
        xlabel="layer (input side first)",
        ylabel="|gradient|",
        title="per-layer gradients over the run",
    )
    bars.set_xticklabels(layers, rotation=60, ha="right", fontsize=7)
    bars.legend(fontsize=8)
    colors = plt.cm.viridis(np.linspace(0, 1, max(len(layers), 2)))
    for color, layer in zip(colors, layers):
        points = sorted((r["step"], r["grad_norm"]) for r in rows if r["layer"] == layer)
        lines.plot([p[0] for p in points], [max(p[1], floor) for p in points], color=color, label=layer)
    lines.set(yscale="log", xlabel="step", ylabel="gradient L2 norm", title="per-layer gradient norm over time")
    if len(layers) <= 12:
        lines.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------- curves and bias/variance


def pr_figure(
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str = "Precision-recall (test)"
) -> Figure:
    """Precision-recall curves: ``{label: (recall, precision, average_precision)}``."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, (recall, precision, ap) in curves.items():
        ax.plot(recall, precision, label=f"{label} (AP {ap:.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return fig


def bias_variance_figure(components: dict[str, float], title: str, unit: str = "") -> Figure:
    """Horizontal bars of named error components (e.g. reference error, avoidable bias, variance; or bias²,
    variance, noise), with their values written beside them."""
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(components) + 1.5))
    names, values = list(components), [components[k] for k in components]
    colors = ["tab:red" if v < 0 else "tab:blue" for v in values]
    ax.barh(names, values, color=colors)
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.4g}", va="center", fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(xlabel=unit or "error", title=title)
    fig.tight_layout()
    return fig


def learning_curve_figure(rows: list[dict], verdict: str, unit: str = "error") -> Figure:
    """Train and validation error against training-set size (``rows``: ``train_samples``, ``train_error``,
    ``val_error``), with the verdict on whether more data helps as the title."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    sizes = [r["train_samples"] for r in rows]
    for split, marker in (("train", "o"), ("val", "s")):
        ax.plot(sizes, [r[f"{split}_error"] for r in rows], marker=marker, label=f"{split} {unit}")
    ax.set(xscale="log", xlabel="training samples", ylabel=unit, title=verdict)
    ax.title.set_fontsize(9)
    ax.legend()
    fig.tight_layout()
    return fig


def seeds_figure(rows: list[dict], unit: str = "test error") -> Figure:
    """Test error of each seed, with the mean and one standard deviation."""
    fig, ax = plt.subplots(figsize=(5, 4))
    values = np.array([r["test_error"] for r in rows])
    seeds = [int(r["seed"]) for r in rows]
    ax.scatter(seeds, values, zorder=3)
    ax.set_xticks(seeds)
    ax.axhline(values.mean(), color="grey", label=f"mean {values.mean():.4g}")
    ax.axhspan(
        values.mean() - values.std(ddof=1),
        values.mean() + values.std(ddof=1),
        color="grey",
        alpha=0.2,
        label=f"± 1 std ({values.std(ddof=1):.2g})",
    )
    ax.set(xlabel="seed", ylabel=unit, title=f"{unit} across {len(values)} seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------- predictions


def image_grid_figure(
    images: np.ndarray,
    actual: Sequence[str],
    predicted: Sequence[str],
    wrong: Sequence[bool],
    columns: int = 8,
    title: str = "Test predictions (misclassified in red)",
    boxes: Sequence[tuple[Sequence[float], Sequence[float]]] | None = None,
) -> Figure:
    """A grid of images ``(N, C, H, W)`` (C = 1 or 3; pixels in [0, 1], or any range: each image is then scaled),
    titled ``predicted (actual)`` (``predicted`` alone where ``actual`` is empty), with misclassified ones framed and titled in red.

    ``boxes``: per image ``(true, predicted)`` boxes ``(x1, y1, x2, y2)`` in fractions of the image side, drawn in
    green (true) and orange (predicted) (localization)."""
    n = len(images)
    rows = max(1, int(np.ceil(n / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(1.4 * columns, 1.6 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, image, a, p, w) in enumerate(zip(axes.flat, images, actual, predicted, wrong)):
        img = np.asarray(image, dtype=float)
        if img.min() < 0 or img.max() > 1:
            img = (img - img.min()) / (np.ptp(img) or 1.0)
        ax.imshow(
            img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0)), cmap="gray" if img.shape[0] == 1 else None
        )
        ax.set_title(f"{p} ({a})" if a else p, fontsize=8, color="red" if w else "black")
        if boxes is not None:
            height, width = img.shape[-2:]
            for box, color in zip(boxes[i], ("lime", "orange")):
                x1, y1, x2, y2 = (float(v) for v in box)
                ax.add_patch(
                    plt.Rectangle(
                        (x1 * width - 0.5, y1 * height - 0.5),
                        (x2 - x1) * width,
                        (y2 - y1) * height,
                        fill=False,
                        edgecolor=color,
                        linewidth=1.2,
                    )
                )
        if w:
            ax.axis("on")
            ax.set(xticks=[], yticks=[])
            for spine in ax.spines.values():
                spine.set(color="red", linewidth=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def examples_figure(lines: Sequence[str], wrong: Sequence[bool], title: str = "Example test predictions") -> Figure:
    """Example predictions of text or tabular models, one line each (wrong ones in red)."""
    fig, ax = plt.subplots(figsize=(12, 0.32 * len(lines) + 1))
    ax.axis("off")
    for i, (line, w) in enumerate(zip(lines, wrong)):
        ax.text(
            0,
            1 - (i + 0.5) / max(len(lines), 1),
            line,
            fontsize=8,
            family="monospace",
            color="red" if w else "black",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
