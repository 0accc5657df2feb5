"""``multiclass``: one of C classes from C logits (notes 001, softmax and categorical cross-entropy).

Outputs ``(N, C)`` logits, targets ``(N,)`` integer labels. Metrics: micro accuracy and macro precision, recall,
F1 and one-vs-rest ROC-AUC (torchmetrics).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pipelines.tasks.classification import ClassificationTask

if TYPE_CHECKING:  # pragma: no cover
    import torch
    import torchmetrics


class Multiclass(ClassificationTask):
    """C-class classification (C = ``meta['num_classes']``) from softmax over C logits."""

    name: ClassVar[str] = "multiclass"
    description: ClassVar[str] = "one of C classes from C logits"
    losses: ClassVar[tuple[str, ...]] = ("ce",)

    @property
    def num_classes(self) -> int:
        if not self.meta.get("num_classes"):
            raise ValueError(f"a {self.name} task needs num_classes in the dataset's meta.json")
        return int(self.meta["num_classes"])

    @property
    def num_outputs(self) -> int:
        return self.num_classes

    def build_metrics(self, full: bool = True) -> torchmetrics.MetricCollection:
        import torchmetrics
        from torchmetrics import classification as C

        n = self.num_classes
        metrics: dict[str, torchmetrics.Metric | torchmetrics.MetricCollection] = {
            "acc": C.MulticlassAccuracy(n, average="micro")
        }
        if full:
            metrics |= {
                "precision": C.MulticlassPrecision(n, average="macro"),
                "recall": C.MulticlassRecall(n, average="macro"),
                "f1": C.MulticlassF1Score(n, average="macro"),
                "roc_auc": C.MulticlassAUROC(n, average="macro"),
            }
        return torchmetrics.MetricCollection(metrics)

    def loss_targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float().softmax(dim=-1)

    def headline_sum(self, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (outputs.argmax(dim=-1) == y).sum()

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.float().softmax(dim=-1)

    def predicted_classes(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.argmax(dim=-1)


TASK = Multiclass
