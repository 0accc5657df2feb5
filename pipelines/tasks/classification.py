"""What every classification task shares: accuracy-based error, the confusion matrix, ROC and precision-recall
curves, and the example-prediction figure (image grid, text reviews or table rows).

:mod:`pipelines.tasks.binary`, :mod:`pipelines.tasks.multiclass` and :mod:`pipelines.tasks.localization` (its class
part) build on :class:`ClassificationTask`; it is not a task itself.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any, ClassVar

from pipelines.tasks.base import Evaluation, Task

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

#: ROC and precision-recall curves are resampled on this many evenly spaced false-positive rates / recalls.
CURVE_POINTS = 101


def csv_text(header: list[str], rows: Any) -> str:
    """CSV text of ``rows`` (iterables of cells) under ``header``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


class ClassificationTask(Task):
    """A classifier of C classes: ``acc``, macro ``precision``/``recall``/``f1`` and ``roc_auc``; error 1 - accuracy.

    Subclasses give :meth:`probabilities` (scores -> class probabilities) and :meth:`curve_columns` (one-vs-rest
    columns for the ROC and PR curves); :meth:`class_view` picks the class part of outputs and targets.
    """

    metrics: ClassVar[tuple[str, ...]] = ("acc", "precision", "recall", "f1", "roc_auc")
    headline: ClassVar[str] = "acc"
    primary: ClassVar[str] = "acc"
    higher_is_better: ClassVar[bool] = True
    summary: ClassVar[tuple[str, ...]] = ("acc", "f1", "roc_auc")
    error_unit: ClassVar[str] = "classification error"
    reads_classes: ClassVar[bool] = True

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("classes") or [str(i) for i in range(self.num_classes or 2)])

    def error(self, metrics: dict[str, float]) -> float:
        return 1.0 - metrics["acc"]

    def class_labels(self, y: np.ndarray) -> np.ndarray:
        return y

    # -------------------------------------------------------------------------------------- evaluation

    def class_scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """The class part of the network outputs (localization: without the boxes)."""
        return outputs

    def class_view(self, outputs: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(class scores, integer labels)`` of outputs and targets (localization: without the boxes)."""
        return self.class_scores(outputs), y.long()

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Class scores -> probabilities: ``(N,)`` of the positive class (binary) or ``(N, C)`` (multiclass)."""
        raise NotImplementedError

    def predicted_classes(self, scores: torch.Tensor) -> torch.Tensor:
        """Class scores -> predicted labels ``(N,)``."""
        raise NotImplementedError

    def class_probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Class scores -> ``(N, C)`` probabilities, one column per class of :attr:`classes` (binary too)."""
        import torch

        probs = self.probabilities(scores)
        return torch.stack([1 - probs, probs], dim=1) if probs.ndim == 1 else probs

    def serve(self, outputs: torch.Tensor) -> dict[str, np.ndarray]:
        """``label`` (the class name), ``probability`` (the label's) and ``probability_<class>`` for every class."""
        import numpy as np

        probs = self.class_probabilities(self.class_scores(outputs)).numpy()
        best = probs.argmax(axis=1)
        columns: dict[str, np.ndarray] = {
            "label": np.array(self.classes, dtype=object)[best],
            "probability": probs[np.arange(len(probs)), best],
        }
        return columns | {f"probability_{name}": probs[:, k] for k, name in enumerate(self.classes)}

    def curve_columns(self, probs: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """One-vs-rest ``{label: (scores of that class, 0/1 targets)}`` for ROC and PR curves."""
        return {str(c): (probs[:, c], (labels == c).long()) for c in range(probs.shape[-1])}

    def confusion_matrix(self, probs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        """``(C, C)`` counts, rows actual, columns predicted."""
        from torchmetrics.functional.classification import multiclass_confusion_matrix

        return multiclass_confusion_matrix(probs, labels, probs.shape[-1]).numpy()

    def curves(self, probs: torch.Tensor, labels: torch.Tensor) -> tuple[dict, dict]:
        """``(roc, pr)``: ``{label: (fpr, tpr, auc)}`` resampled on :data:`CURVE_POINTS` false-positive rates and
        ``{label: (recall, precision, average_precision)}`` resampled on as many recalls."""
        import numpy as np
        from torchmetrics.functional.classification import (
            binary_auroc,
            binary_average_precision,
            binary_precision_recall_curve,
            binary_roc,
        )

        grid = np.linspace(0, 1, CURVE_POINTS)
        roc, pr = {}, {}
        for label, (p, t) in self.curve_columns(probs, labels).items():
            fpr, tpr, _ = binary_roc(p, t)
            roc[label] = (grid, np.interp(grid, fpr.numpy(), tpr.numpy()), float(binary_auroc(p, t)))
            precision, recall, _ = binary_precision_recall_curve(p, t)
            order = np.argsort(
                recall.numpy(), kind="stable"
            )  # recall falls along the thresholds; interp wants it rising
            pr[label] = (
                grid,
                np.interp(grid, recall.numpy()[order], precision.numpy()[order]),
                float(binary_average_precision(p, t)),
            )
        return roc, pr

    def evaluate(self, evaluation: Evaluation) -> None:
        """Confusion matrix, ROC and PR curves of the test split (figures and CSV tables), the mean average precision
        as ``test_average_precision``, and the example predictions."""
        from pipelines import plots

        test = evaluation.splits["test"]
        scores, labels = self.class_view(test.outputs, test.y)
        probs = self.probabilities(scores)
        matrix = self.confusion_matrix(probs, labels)
        roc, pr = self.curves(probs, labels)
        classes = self.classes
        predicted = self.predicted_classes(scores)
        evaluation.tables["confusion.csv"] = csv_text(
            ["actual", "predicted"], ((classes[a], classes[p]) for a, p in zip(labels.tolist(), predicted.tolist()))
        )
        evaluation.tables["roc.csv"] = csv_text(
            ["class", "fpr", "tpr"],
            ((c, f"{f:.4f}", f"{t:.4f}") for c, (fpr, tpr, _) in roc.items() for f, t in zip(fpr, tpr)),
        )
        evaluation.tables["pr.csv"] = csv_text(
            ["class", "recall", "precision"],
            ((c, f"{r:.4f}", f"{p:.4f}") for c, (rec, prec, _) in pr.items() for r, p in zip(rec, prec)),
        )
        evaluation.test_metrics["average_precision"] = sum(ap for *_, ap in pr.values()) / len(pr)
        evaluation.details["test_confusion_matrix"] = matrix.tolist()
        evaluation.figures["confusion_matrix.png"] = plots.confusion_figure(matrix, classes)
        evaluation.figures["roc.png"] = plots.roc_figure(dict(list(roc.items())[:10]))
        evaluation.figures["pr.png"] = plots.pr_figure(dict(list(pr.items())[:10]))
        evaluation.figures["predictions.png"] = self.prediction_figure(evaluation)

    def boxes(self, outputs: torch.Tensor, y: torch.Tensor) -> list | None:
        """Per sample ``(true box, predicted box)`` to draw on the prediction grid, or ``None``."""
        return None

    def prediction_figure(self, evaluation: Evaluation, examples: int = 32):
        """Example test predictions: an image grid (misclassified in red; boxes where :meth:`boxes` gives them),
        or text reviews / table rows with the predicted class's probability. Every misclassified sample among the
        first few hundred, up to half the grid, then correct ones, in test order."""
        import numpy as np

        from pipelines import plots

        data, meta, test = evaluation.data, evaluation.data.meta, evaluation.splits["test"]
        scores, labels = self.class_view(test.outputs, test.y)
        probs = self.probabilities(scores)
        confidence = (probs if probs.ndim == 1 else probs.max(-1).values).numpy()
        predicted = self.predicted_classes(scores).numpy()
        actual = labels.numpy()
        if probs.ndim == 1:  # binary: the probability of the predicted class
            confidence = np.where(predicted == 1, confidence, 1 - confidence)
        wrong = predicted != actual
        window = np.arange(min(len(actual), 20 * examples))
        n_wrong = min(examples // 2, int(wrong[window].sum()))
        chosen = np.sort(
            np.concatenate([window[wrong[window]][:n_wrong], window[~wrong[window]][: examples - n_wrong]])
        )
        classes = self.classes
        if meta["modality"] == "image":
            from pipelines.data.prepared import to_unit_range

            pixels = np.clip(to_unit_range(np.asarray(data.x["test"][chosen]), meta), 0.0, 1.0)
            boxes = self.boxes(test.outputs, test.y)
            return plots.image_grid_figure(
                pixels,
                [classes[a] for a in actual[chosen]],
                [classes[p] for p in predicted[chosen]],
                wrong[chosen].tolist(),
                boxes=None if boxes is None else [boxes[i] for i in chosen],
            )
        chosen = chosen[:16]
        texts = sample_texts(data, chosen)
        lines = [
            f"{classes[predicted[i]]:>9} p={confidence[i]:.2f} (actual {classes[actual[i]]}) | {text[:110]}"
            for i, text in zip(chosen, texts)
        ]
        return plots.examples_figure(lines, wrong[chosen].tolist())


def sample_texts(data, index) -> list[str]:
    """Test samples ``index`` of a text or table dataset as one line of text each: the decoded review, or
    ``feature=value`` pairs."""
    meta, x = data.meta, data.x["test"]
    if meta["modality"] == "text":
        from tokenizers import Tokenizer

        from pipelines.data.prepared import PREPARED_ROOT

        tokenizer = Tokenizer.from_file(str(PREPARED_ROOT / meta["dataset"] / "tokenizer.json"))
        return [tokenizer.decode([int(t) for t in x[i] if t != 0]) for i in index]
    names = meta.get("feature_names") or [f"x{j}" for j in range(x.shape[1])]
    return [", ".join(f"{n}={v:.2f}" for n, v in zip(names, x[i])) for i in index]
