"""Bounding-box arithmetic, the localization loss and its metrics (notes 000 "Image or Object localization":
"localizing the main object in the picture alongside the classification, when the image contains only 1 object").

Conventions shared by everything here:

- A box is ``(x1, y1, x2, y2)`` ("xyxy"): the top-left and bottom-right corners as *fractions of the canvas*
  (x to the right, y down, both in [0, 1]; x1 <= x2, y1 <= y2). The IoU functions themselves are unit-free: any
  consistent unit (pixels, fractions) gives the same ratios.
- Network outputs are ``(N, C + 4)``: C class logits, then the predicted box (see :class:`models.vision.localizer.Localizer`).
- Targets are ``(N, 5)`` = ``[class, x1, y1, x2, y2]``, the class an integer 0..C-1 stored as a float.

Sources: IoU and GIoU follow Rezatofighi et al., "Generalized Intersection over Union: A Metric and a Loss for
Bounding Box Regression" (CVPR 2019), Algorithm 1; the smooth-L1 box loss is Girshick, "Fast R-CNN" (ICCV 2015),
eq. (3) (``beta`` is the switch point between its quadratic and linear parts; Fast R-CNN uses 1 on pixel-scale
offsets, 0.05 suits boxes in fractions of the canvas). No torchvision: pure torch.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

__all__ = [
    "AccuracyAtIoU",
    "LocalizationAccuracy",
    "LocalizationLoss",
    "MeanIoU",
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "split_outputs",
    "split_targets",
]

#: Smallest union / enclosing area used as a denominator: a zero-area pair gives IoU 0, never NaN.
EPS = 1e-9

BoxLoss = Literal["smooth_l1", "giou", "smooth_l1+giou"]
BOX_LOSSES: tuple[str, ...] = ("smooth_l1", "giou", "smooth_l1+giou")


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.ndim != 2 or pred.shape[-1] != 4 or pred.shape != target.shape:
        raise ValueError(
            f"boxes must both be (N, 4) xyxy, got pred {tuple(pred.shape)} and target {tuple(target.shape)}"
        )


def box_area(boxes: Tensor) -> Tensor:
    """Area ``(x2 - x1) * (y2 - y1)`` of ``(N, 4)`` xyxy boxes, ``(N,)``; inverted sides count as 0."""
    return (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)


def _intersection_union(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    wh = (rb - lt).clamp_min(0)  # disjoint or touching boxes: 0, not negative
    inter = wh[:, 0] * wh[:, 1]
    union = box_area(pred) + box_area(target) - inter
    return inter, union


def box_iou(pred: Tensor, target: Tensor) -> Tensor:
    """Paired Intersection over Union: ``IoU_i = |A_i ∩ B_i| / |A_i ∪ B_i|`` (Rezatofighi et al. 2019, Alg. 1).

    Elementwise over the batch (box i against box i), not torchvision's N x M matrix. Example:
    ``[0, 0, 2, 2]`` vs ``[1, 1, 3, 3]``: intersection 1, union 4 + 4 - 1 = 7, IoU 1/7.

    Args:
        pred, target: ``(N, 4)`` xyxy boxes in one unit (here fractions of the canvas).

    Returns:
        ``(N,)`` in [0, 1], same dtype as the inputs. Disjoint or edge-touching boxes give 0; a zero-area box gives
        0 and never NaN (the union is clamped to at least :data:`EPS`). Differentiable.

    Raises:
        ValueError: the inputs are not both ``(N, 4)``.
    """
    _check_pair(pred, target)
    inter, union = _intersection_union(pred, target)
    return inter / union.clamp_min(EPS)


def generalized_box_iou(pred: Tensor, target: Tensor) -> Tensor:
    """Paired Generalized IoU: ``GIoU = IoU - |C \\ (A ∪ B)| / |C|`` with C the smallest box enclosing A and B
    (Rezatofighi et al., "Generalized Intersection over Union", CVPR 2019, Algorithm 1).

    Unlike IoU it still says how far apart disjoint boxes are: ``[0, 0, 1, 1]`` vs ``[2, 0, 3, 1]`` have IoU 0,
    enclosing area 3 and union 2, so GIoU = 0 - (3 - 2)/3 = -1/3. ``1 - GIoU`` is the paper's loss (in [0, 2]).

    Args:
        pred, target: ``(N, 4)`` xyxy boxes in one unit (here fractions of the canvas).

    Returns:
        ``(N,)`` in [-1, 1] (1 for identical boxes), never NaN (denominators clamped to :data:`EPS`).
        Differentiable.

    Raises:
        ValueError: the inputs are not both ``(N, 4)``.
    """
    _check_pair(pred, target)
    inter, union = _intersection_union(pred, target)
    iou = inter / union.clamp_min(EPS)
    lt = torch.minimum(pred[:, :2], target[:, :2])
    rb = torch.maximum(pred[:, 2:], target[:, 2:])
    wh = (rb - lt).clamp_min(0)
    enclosing = wh[:, 0] * wh[:, 1]
    return iou - (enclosing - union) / enclosing.clamp_min(EPS)


def split_outputs(outputs: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Split network outputs ``(N, C + 4)`` into class logits ``(N, C)`` and boxes ``(N, 4)`` (xyxy, fractions).

    Raises:
        ValueError: ``outputs`` is not 2-D or its last dimension is not ``num_classes + 4``.
    """
    if outputs.ndim != 2 or outputs.shape[-1] != num_classes + 4:
        raise ValueError(
            f"localization outputs must be (N, num_classes + 4) = (N, {num_classes + 4}), got {tuple(outputs.shape)}"
        )
    return outputs[:, :num_classes], outputs[:, num_classes:]


def split_targets(y: Tensor) -> tuple[Tensor, Tensor]:
    """Split targets ``(N, 5)`` = ``[class, x1, y1, x2, y2]`` into labels ``(N,)`` int64 (rounded) and boxes
    ``(N, 4)`` (xyxy, fractions of the canvas, the dtype of ``y``).

    Raises:
        ValueError: ``y`` is not ``(N, 5)``.
    """
    if y.ndim != 2 or y.shape[-1] != 5:
        raise ValueError(f"localization targets must be (N, 5) = [class, x1, y1, x2, y2], got {tuple(y.shape)}")
    return y[:, 0].round().long(), y[:, 1:]


def _split(outputs: Tensor, y: Tensor, num_classes: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    logits, pred_boxes = split_outputs(outputs, num_classes)
    labels, true_boxes = split_targets(y)
    if outputs.shape[0] != y.shape[0]:
        raise ValueError(f"outputs ({outputs.shape[0]} rows) and targets ({y.shape[0]} rows) differ in batch size")
    return logits, pred_boxes, labels, true_boxes.to(pred_boxes.dtype)


class LocalizationLoss(nn.Module):
    """Classification + box regression loss for single-object localization (notes 000 "Image or Object
    localization").

    ``loss = CE(logits, class) + box_weight * box_term``, means over the batch, where ``box_term`` is

    - ``"smooth_l1"``: smooth-L1 (Girshick 2015, Fast R-CNN, eq. 3) with switch point ``beta``, averaged over the
      4 coordinates and the batch (``F.smooth_l1_loss``): 0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta, with d
      in fractions of the canvas;
    - ``"giou"``: mean ``1 - GIoU`` (Rezatofighi et al. 2019), in [0, 2], scale-invariant;
    - ``"smooth_l1+giou"`` (default): the sum of both.

    Shapes: ``outputs`` ``(N, C + 4)`` (C logits, then x1, y1, x2, y2 in [0, 1]); ``y`` ``(N, 5)`` =
    ``[class, x1, y1, x2, y2]``. Returns a 0-dim tensor. Labels outside 0..C-1 make ``F.cross_entropy`` raise.

    Args:
        num_classes: C (>= 1).
        box_loss: which box term.
        box_weight: weight of the box term (>= 0).
        beta: smooth-L1 switch point (>= 0; 0 is plain L1), in fractions of the canvas.

    Raises:
        ValueError: at construction, an unknown ``box_loss``, ``num_classes < 1``, a negative ``box_weight`` or
        ``beta``; at call time, ``outputs`` not ``(N, num_classes + 4)``, ``y`` not ``(N, 5)`` or different N.
    """

    def __init__(
        self, num_classes: int, box_loss: BoxLoss = "smooth_l1+giou", box_weight: float = 1.0, beta: float = 0.05
    ) -> None:
        super().__init__()
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"unknown box_loss {box_loss!r}; allowed: {', '.join(BOX_LOSSES)}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if box_weight < 0:
            raise ValueError(f"box_weight must be >= 0, got {box_weight}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.num_classes = int(num_classes)
        self.box_loss = box_loss
        self.box_weight = float(box_weight)
        self.beta = float(beta)

    def forward(self, outputs: Tensor, y: Tensor) -> Tensor:
        logits, pred_boxes, labels, true_boxes = _split(outputs, y, self.num_classes)
        loss = F.cross_entropy(logits, labels)
        box = outputs.new_zeros(())
        if "smooth_l1" in self.box_loss:
            box = box + F.smooth_l1_loss(pred_boxes, true_boxes, beta=self.beta)
        if "giou" in self.box_loss:
            box = box + (1.0 - generalized_box_iou(pred_boxes, true_boxes)).mean()
        return loss + self.box_weight * box

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, box_loss={self.box_loss!r}, box_weight={self.box_weight}, "
            f"beta={self.beta}"
        )


class _LocalizationMetric(Metric):
    """A ratio ``value / total`` of two summed states (so DDP reduces them exactly); ``update(outputs, y)`` with
    ``outputs`` ``(N, C + 4)`` and ``y`` ``(N, 5)`` (ValueError on other shapes). ``compute`` before any update is
    0/0 = NaN (torchmetrics also warns)."""

    higher_is_better = True
    full_state_update = False
    is_differentiable = False

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.add_state("value", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _per_sample(self, logits: Tensor, pred_boxes: Tensor, labels: Tensor, true_boxes: Tensor) -> Tensor:
        raise NotImplementedError

    value: Tensor  # metric states (add_state), summed over samples and processes
    total: Tensor

    def update(self, outputs: Tensor, y: Tensor) -> None:
        logits, pred_boxes, labels, true_boxes = _split(outputs.detach(), y.detach(), self.num_classes)
        per_sample = self._per_sample(logits, pred_boxes, labels, true_boxes)
        self.value += per_sample.to(self.value.dtype).sum()
        self.total += per_sample.shape[0]

    def compute(self) -> Tensor:
        return self.value / self.total


class LocalizationAccuracy(_LocalizationMetric):
    """Fraction of samples whose arg-max class is the label (the classification half of notes 000's
    localization task), ignoring the box. ``update(outputs (N, C + 4), y (N, 5))``; ``compute()`` -> 0-dim in [0, 1].

    Raises:
        ValueError: ``num_classes < 1``; in ``update``, ``outputs`` not ``(N, num_classes + 4)`` or ``y`` not ``(N, 5)``.
    """

    def _per_sample(self, logits, pred_boxes, labels, true_boxes):
        return logits.argmax(dim=1) == labels


class MeanIoU(_LocalizationMetric):
    """Mean paired IoU (:func:`box_iou`) of the predicted and the true box, whatever the class (Rezatofighi et al.
    2019; notes 000 "Image or Object localization"). Boxes in fractions of the canvas; IoU is unit-free.
    ``update(outputs (N, C + 4), y (N, 5))``; ``compute()`` -> 0-dim in [0, 1].

    Raises:
        ValueError: ``num_classes < 1``; in ``update``, ``outputs`` not ``(N, num_classes + 4)`` or ``y`` not ``(N, 5)``.
    """

    def _per_sample(self, logits, pred_boxes, labels, true_boxes):
        return box_iou(pred_boxes, true_boxes)


class AccuracyAtIoU(_LocalizationMetric):
    """Fraction of samples localized correctly: the right class AND ``IoU >= threshold`` (the PASCAL VOC criterion
    at 0.5; notes 000 "Image or Object localization": class and box must both be right).
    ``update(outputs (N, C + 4), y (N, 5))``; ``compute()`` -> 0-dim in [0, 1].

    Args:
        num_classes: C.
        threshold: the IoU a box needs, in [0, 1].

    Raises:
        ValueError: ``num_classes < 1`` or ``threshold`` outside [0, 1]; in ``update``, ``outputs`` not
        ``(N, num_classes + 4)`` or ``y`` not ``(N, 5)``.
    """

    def __init__(self, num_classes: int, threshold: float = 0.5, **kwargs) -> None:
        super().__init__(num_classes, **kwargs)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"IoU threshold must be in [0, 1], got {threshold}")
        self.threshold = float(threshold)

    def _per_sample(self, logits, pred_boxes, labels, true_boxes):
        return (logits.argmax(dim=1) == labels) & (box_iou(pred_boxes, true_boxes) >= self.threshold)
