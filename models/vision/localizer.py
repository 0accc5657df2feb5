"""Single-object localization: one network that classifies the main object of an image and regresses its bounding
box (notes 000 "Image or Object localization": "localizing the main object in the picture alongside the
classification, when the image contains only 1 object").

The loss and the metrics that go with it are in :mod:`models.boxes`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.layers import conv_block, dense_block, image_shape
from models.registry import NetworkSpec
from models.shapes import conv_output_size

__all__ = ["Localizer", "centre_size_to_corners"]


def centre_size_to_corners(cxcywh: Tensor) -> Tensor:
    """``(N, 4)`` centre/size boxes ``(cx, cy, w, h)`` in [0, 1] to corners ``(x1, y1, x2, y2)`` clamped to [0, 1].

    ``x1 = cx - w/2``, ``x2 = cx + w/2`` (same for y), then clamped to the canvas, so ``0 <= x1 <= x2 <= 1`` and
    ``0 <= y1 <= y2 <= 1`` whatever the input (clamping keeps the order: both corners move toward the canvas).
    """
    centre, size = cxcywh[:, :2], cxcywh[:, 2:]
    return torch.cat([centre - size / 2, centre + size / 2], dim=1).clamp(0.0, 1.0)


class Localizer(nn.Module):
    """A small CNN with a shared convolutional trunk, a classification head and a box-regression head (notes 000
    "Image or Object localization": class + bounding box of the one object in the image).

    The formulation is the one of Andrew Ng's CS230 / deeplearning.ai course ("Object localization"): the network's
    output vector holds the class and the box (bx, by, bh, bw: centre, height and width as fractions of the image);
    there is always exactly one object here, so the course's "is there an object" p_c is dropped. As in Fast R-CNN
    (Girshick 2015), the two tasks share the features and have one linear head each.

    Layers (``act = spec.activation``; shapes channels first for 1x64x64, default widths, 10 classes; parameters
    ``(F*F*D + 1)*N`` for a convolution and ``(fan_in + 1)*fan_out`` for a dense layer, notes 001 "Alexnet"):

    - ``features``: for each width, Conv2d(3x3, P = 1) [BatchNorm2d] act, MaxPool 2x2/2, then Flatten
        conv 1->16   64x64x16 -> pool 32x32x16   (3*3*1 + 1)*16  =     160
        conv 16->32  32x32x32 -> pool 16x16x32   (3*3*16 + 1)*32 =   4,640
        conv 32->64  16x16x64 -> pool 8x8x64     (3*3*32 + 1)*64 =  18,496
        conv 64->64  8x8x64   -> pool 4x4x64     (3*3*64 + 1)*64 =  36,928
        Flatten 4*4*64 = 1,024 features
    - ``hidden``: Linear(1024 -> 128) [BatchNorm1d] act [Dropout(spec.dropout)]  (1024 + 1)*128 = 131,200
    - ``classifier``: Linear(128 -> C) class logits                              (128 + 1)*10   =   1,290
    - ``box_head``: Linear(128 -> 4), sigmoid as (cx, cy, w, h), converted to clamped corners (x1, y1, x2, y2)
      by :func:`centre_size_to_corners`                                         (128 + 1)*4    =     516

    Total 193,230 parameters (1x64x64, 10 classes); ``spec.batch_norm`` adds 2 per channel and hidden unit,
    2*(16 + 32 + 64 + 64) + 2*128 = 608, for 193,838. H and W do not change the count as long as they end on the
    same 4x4 map; other sizes change only the hidden layer's fan-in (``channels[-1] * H' * W'``).

    Shapes: input ``(N, C_in, H, W)`` in [0, 1]; output ``(N, num_outputs + 4)``: ``num_outputs`` class logits, then
    the box ``(x1, y1, x2, y2)`` as fractions of the canvas with ``0 <= x1 <= x2 <= 1`` and ``0 <= y1 <= y2 <= 1``
    (the layout :class:`models.boxes.LocalizationLoss` and the metrics of :mod:`models.boxes` expect).

    Args:
        spec: ``input_shape`` is ``(channels, height, width)``, with H and W at least ``2**len(channels)`` (each
            pooling halves the map, rounding down; sizes divisible by ``2**len(channels)`` lose no pixel);
            ``num_outputs`` is the number of classes C; ``activation``, ``dropout`` and ``batch_norm`` as usual.
        channels: widths of the convolution blocks (one 2x2 pooling each).
        hidden_size: units of the shared dense layer.

    Raises:
        ValueError: a non-image or too small ``input_shape``, empty or non-positive ``channels``, ``hidden_size`` or
            ``num_outputs`` below 1, or an unknown activation.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        channels: list[int] = [16, 32, 64, 64],  # noqa: B006 (never mutated)
        hidden_size: int = 128,
    ) -> None:
        super().__init__()
        in_channels, height, width = image_shape(spec.input_shape, "localizer")
        widths: Sequence[int] = tuple(int(c) for c in channels)
        if not widths or min(widths) < 1:
            raise ValueError(f"localizer needs at least one positive convolution width, got channels={list(channels)}")
        if hidden_size < 1:
            raise ValueError(f"localizer needs hidden_size >= 1, got {hidden_size}")
        if spec.num_outputs < 1:
            raise ValueError(f"localizer needs num_outputs (classes) >= 1, got {spec.num_outputs}")
        act, bn = spec.activation, spec.batch_norm
        layers: list[nn.Module] = []
        h, w = height, width
        for i, c in enumerate(widths, start=1):
            if min(h, w) < 2:
                raise ValueError(
                    f"localizer: input_shape {tuple(spec.input_shape)} is too small: pooling {i} of "
                    f"{len(widths)} would see a {h}x{w} map; H, W must be >= {2 ** len(widths)}"
                )
            layers += [conv_block(in_channels, c, 3, act, bn, padding=1), nn.MaxPool2d(2)]
            h, w = (conv_output_size(d, 2, s=2, rounding="floor") for d in (h, w))  # (W - 2)/2 + 1
            in_channels = c
        self.num_classes = int(spec.num_outputs)
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.hidden = dense_block(in_channels * h * w, hidden_size, act, bn, spec.dropout)
        self.classifier = nn.Linear(hidden_size, self.num_classes)
        self.box_head = nn.Linear(hidden_size, 4)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C_in, H, W)`` -> ``(N, C + 4)``: C logits, then (x1, y1, x2, y2) in [0, 1]."""
        z = self.hidden(self.features(x))
        boxes = centre_size_to_corners(torch.sigmoid(self.box_head(z)))
        return torch.cat([self.classifier(z), boxes], dim=1)
