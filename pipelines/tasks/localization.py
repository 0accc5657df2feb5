"""``localization``: the class and bounding box of the one object in an image (notes 000, "Image or Object
localization").

Outputs ``(N, C + 4)``: C class logits, then the box; targets ``(N, 5)`` ``(class, x1, y1, x2, y2)``, the box in
fractions of the image side (:mod:`models.boxes`). Losses: cross-entropy plus smooth-L1 and/or GIoU. Metrics:
class accuracy, mean IoU and accuracy at IoU >= 0.5 (right class and a box overlapping by at least half), the
primary metric. The confusion matrix, ROC and PR curves are those of the class part.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pipelines.tasks.multiclass import Multiclass

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    import torchmetrics


class Localization(Multiclass):
    """Single-object localization: a class and a box per image."""

    name: ClassVar[str] = "localization"
    description: ClassVar[str] = "the class and bounding box of one object"
    losses: ClassVar[tuple[str, ...]] = ("ce_smooth_l1", "ce_giou", "ce_smooth_l1_giou")
    metrics: ClassVar[tuple[str, ...]] = ("acc", "mean_iou", "acc_iou50")
    primary: ClassVar[str] = "acc_iou50"
    summary: ClassVar[tuple[str, ...]] = ("acc_iou50", "mean_iou", "acc")
    error_unit: ClassVar[str] = "1 - accuracy at IoU >= 0.5"
    augmentable: ClassVar[bool] = False  # an offline transform would move the boxes

    def build_metrics(self, full: bool = True) -> torchmetrics.MetricCollection:
        import torchmetrics

        from models.boxes import AccuracyAtIoU, LocalizationAccuracy, MeanIoU

        n = self.num_classes
        metrics: dict[str, torchmetrics.Metric | torchmetrics.MetricCollection] = {"acc": LocalizationAccuracy(n)}
        if full:
            metrics |= {"mean_iou": MeanIoU(n), "acc_iou50": AccuracyAtIoU(n, threshold=0.5)}
        return torchmetrics.MetricCollection(metrics)

    def loss_targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y.float()

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float()  # the metrics read logits and boxes

    def headline_sum(self, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (outputs[:, : self.num_classes].argmax(dim=-1) == y[:, 0].long()).sum()

    def error(self, metrics: dict[str, float]) -> float:
        return 1.0 - metrics["acc_iou50"]

    def class_labels(self, y: np.ndarray) -> np.ndarray:
        return y[:, 0].astype("int64")

    def class_scores(self, outputs: torch.Tensor) -> torch.Tensor:
        from models.boxes import split_outputs

        return split_outputs(outputs, self.num_classes)[0]

    def class_view(self, outputs: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from models.boxes import split_targets

        return self.class_scores(outputs), split_targets(y)[0].long()

    def serve(self, outputs: torch.Tensor) -> dict[str, np.ndarray]:
        """The class columns (:meth:`ClassificationTask.serve`), then the box ``x1``, ``y1``, ``x2``, ``y2`` in
        fractions of the canvas (x right, y down; :mod:`models.boxes`)."""
        from models.boxes import split_outputs

        boxes = split_outputs(outputs.float(), self.num_classes)[1].numpy()
        return super().serve(outputs) | {k: boxes[:, i] for i, k in enumerate(("x1", "y1", "x2", "y2"))}

    def boxes(self, outputs: torch.Tensor, y: torch.Tensor) -> list:
        from models.boxes import split_outputs, split_targets

        return list(zip(split_targets(y)[1].tolist(), split_outputs(outputs, self.num_classes)[1].tolist()))


TASK = Localization
