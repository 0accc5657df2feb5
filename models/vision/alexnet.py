"""AlexNet adapted to small images (notes 001 "Alexnet"; Krizhevsky, Sutskever & Hinton 2012).

The paper was written for 227x227 ImageNet crops; here the network takes 32x32 (CIFAR-10) and 28x28 (MNIST) images.
Its structure is kept (5 convolutions, 3 max poolings, 3 dense layers), its input-size-specific parts are not (the
11x11 stride-4 first layer). The shape arithmetic of the adaptation is in the docstring of :class:`AlexNet`;
:mod:`models.shapes` reproduces it (``summarize``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from models.layers import OutputLayer, conv_block, dense_block, image_shape, output_shape
from models.registry import NetworkSpec
from models.vision.convnets import _ConvClassifier

#: The paper's AlexNet widths (Krizhevsky et al. 2012, Fig. 2, both GPUs together): 5 convolutions, 2 hidden dense.
ALEXNET_PAPER_CHANNELS: tuple[int, ...] = (96, 256, 384, 384, 256)
ALEXNET_PAPER_HIDDEN = 4096


class AlexNet(_ConvClassifier):
    """AlexNet (Krizhevsky, Sutskever & Hinton, "ImageNet classification with deep convolutional neural networks",
    NIPS 2012) adapted to 32x32 and 28x28 images (notes 001 "Alexnet").

    The notes' arithmetic is for a 227x227x3 input: conv1 96 11x11 stride 4 gives (227 - 11)/4 + 1 = 55 (55x55x96,
    (11*11*3 + 1)*96 = 34,944 parameters), 3x3 stride-2 pooling 27, conv2 256 5x5 'same' 27x27x256, pooling 13,
    conv3/conv4/conv5 3x3 'same' 13x13x384/384/256 (conv3: (3*3*256 + 1)*384 = 885,120), pooling 6, then
    6*6*256 = 9,216 -> 4096 -> 4096 -> 1000: 62,378,344 parameters. On a 32x32 image the first layer alone would
    leave (32 - 11)/4 + 1 = 6.25 -> 6 pixels and the first pooling 2: nothing for the four other convolutions. So:

    - conv1 is 3x3, stride 1, 'same' padding (P = 1) instead of 11x11 stride 4;
    - every convolution is 'same'-padded (P = (F - 1)/2) and only the three poolings shrink the map; they are
      2x2 stride 2 (32 -> 16 -> 8 -> 4) instead of the paper's overlapping 3x3 stride 2, whose (W - 3)/2 + 1 is
      not a whole number on 32, 16 or 8;
    - the widths are ``channels`` (default a quarter of the paper's: 24, 64, 96, 96, 64) and ``hidden_size``
      (default 1024 = 4096/4); ``channels=[96, 256, 384, 384, 256], hidden_size=4096`` gives the paper's widths;
    - local response normalisation (paper section 3.3, after conv1 and conv2) is optional, off by default
      (``spec.batch_norm`` is the modern replacement); there is no two-GPU split.

    Layers (``act = spec.activation``; shapes channels first for 3x32x32 and the default widths, parameters with
    3 input channels and 10 classes):

    - conv1 Conv2d(C, 24, 3, P=1) act [LRN]    32x32x24    (3*3*3 + 1)*24  =       672
    - pool1 MaxPool 2x2 / 2                   16x16x24
    - conv2 Conv2d(24, 64, 5, P=2) act [LRN]  16x16x64    (5*5*24 + 1)*64 =    38,464
    - pool2 MaxPool 2x2 / 2                    8x8x64
    - conv3 Conv2d(64, 96, 3, P=1) act         8x8x96     (3*3*64 + 1)*96 =    55,392
    - conv4 Conv2d(96, 96, 3, P=1) act         8x8x96     (3*3*96 + 1)*96 =    83,040
    - conv5 Conv2d(96, 64, 3, P=1) act         8x8x64     (3*3*96 + 1)*64 =    55,360
    - pool3 MaxPool 2x2 / 2, Flatten           4x4x64 = 1,024 features
    - fc6 Linear(1024 -> 1024) act [Dropout]                 (1024 + 1)*1024 = 1,049,600
    - fc7 Linear(1024 -> 1024) act [Dropout]                 (1024 + 1)*1024 = 1,049,600
    - fc8 OutputLayer(1024 -> 10)                            (1024 + 1)*10   =    10,250

    Total for 3x32x32 and 10 classes: 2,342,378 parameters. For 1x28x28: 28 -> 14 -> 7 -> 3 (the last pooling
    rounds (7 - 2)/2 + 1 = 3.5 down), 3x3x64 = 576 features; conv1 has (3*3*1 + 1)*24 = 240 and fc6
    (576 + 1)*1024 = 590,848 parameters: 1,883,194 in all. With the paper's widths: 37,318,538 (3x32x32).

    ``spec.batch_norm`` adds a BatchNorm2d after every convolution and a BatchNorm1d after fc6 and fc7 (before the
    activation), 2 parameters per channel or unit (+ 2*(24 + 64 + 96 + 96 + 64) + 2*(1024 + 1024) = 4,784);
    ``spec.dropout`` adds Dropout after fc6 and fc7 (the paper used 0.5 there).

    Shapes: input ``(N, C, H, W)``; output ``(N, num_outputs)`` logits (``(N,)`` for one output).

    Args:
        spec: ``input_shape`` must be ``(channels, height, width)`` with H, W >= 8 (three 2x2 poolings must leave
            at least a 1x1 map).
        channels: the five convolutions' widths.
        hidden_size: units of fc6 and fc7.
        local_response_norm: add the paper's ``LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2)`` after the
            activations of conv1 and conv2.

    Raises:
        ValueError: ``channels`` not five positive widths, a non-image or too small ``input_shape`` (naming
            ``alexnet``), or an unknown activation.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        channels: Sequence[int] = (24, 64, 96, 96, 64),
        hidden_size: int = 1024,
        local_response_norm: bool = False,
    ) -> None:
        super().__init__()
        in_channels, height, width = image_shape(spec.input_shape, "alexnet")
        channels = tuple(int(c) for c in channels)
        if len(channels) != 5 or min(channels) < 1:
            raise ValueError(f"alexnet needs 5 positive convolution widths, got channels={list(channels)}")
        if hidden_size < 1:
            raise ValueError(f"alexnet needs hidden_size >= 1, got {hidden_size}")
        if min(height, width) < 8:
            raise ValueError(
                f"alexnet: input_shape {spec.input_shape} is too small: its three 2x2 poolings need "
                f"H, W >= 8 (8 -> 4 -> 2 -> 1)"
            )
        act, bn = spec.activation, spec.batch_norm
        c1, c2, c3, c4, c5 = channels

        def lrn() -> list[nn.Module]:
            return [nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)] if local_response_norm else []

        self.features = nn.Sequential(
            conv_block(in_channels, c1, 3, act, bn, padding=1),  # conv1
            *lrn(),
            nn.MaxPool2d(2),  # pool1
            conv_block(c1, c2, 5, act, bn, padding=2),  # conv2
            *lrn(),
            nn.MaxPool2d(2),  # pool2
            conv_block(c2, c3, 3, act, bn, padding=1),  # conv3
            conv_block(c3, c4, 3, act, bn, padding=1),  # conv4
            conv_block(c4, c5, 3, act, bn, padding=1),  # conv5
            nn.MaxPool2d(2),  # pool3
            nn.Flatten(),
        )
        (features,) = output_shape(self.features, spec.input_shape, "alexnet")
        self.classifier = nn.Sequential(
            dense_block(features, hidden_size, act, bn, spec.dropout),  # fc6
            dense_block(hidden_size, hidden_size, act, bn, spec.dropout),  # fc7
            OutputLayer(hidden_size, spec.num_outputs),  # fc8
        )
