"""``binary``: two classes from one logit (notes 001, "Perceptron", logistic output; "Loss Functions": binary
cross-entropy and hinge).

Outputs ``(N,)`` logits; a logit above 0 is the positive class for ``bce`` and ``hinge`` alike. Targets ``(N,)`` 0/1.
Metrics: accuracy, precision, recall, F1 and ROC-AUC of the positive class (torchmetrics' binary metrics).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pipelines.tasks.classification import ClassificationTask

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    import torchmetrics


class Binary(ClassificationTask):
    """Binary classification from one logit per sample."""

    name: ClassVar[str] = "binary"
    exact_classes: ClassVar[int | None] = 2
    description: ClassVar[str] = "two classes from one logit"
    losses: ClassVar[tuple[str, ...]] = ("bce", "hinge")

    def build_metrics(self, full: bool = True) -> torchmetrics.MetricCollection:
        import torchmetrics
        from torchmetrics import classification as C

        metrics: dict[str, torchmetrics.Metric | torchmetrics.MetricCollection] = {"acc": C.BinaryAccuracy()}
        if full:
            metrics |= {
                "precision": C.BinaryPrecision(),
                "recall": C.BinaryRecall(),
                "f1": C.BinaryF1Score(),
                "roc_auc": C.BinaryAUROC(),
            }
        return torchmetrics.MetricCollection(metrics)

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().sigmoid()

    def headline_sum(self, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((outputs > 0).long() == y).sum()

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.float().sigmoid()

    def predicted_classes(self, scores: torch.Tensor) -> torch.Tensor:
        return (scores > 0).long()

    def curve_columns(self, probs: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {"positive": (probs, labels)}

    def confusion_matrix(self, probs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        from torchmetrics.functional.classification import binary_confusion_matrix

        return binary_confusion_matrix(probs, labels).numpy()


TASK = Binary
