"""Classic ImageNet convnets adapted to small images: AlexNet (notes 001 "Alexnet") and VGG (notes 001 "VGG net
architecture"; notes 003 "common architectures (e.g., VGG, ResNet)").

Both papers were written for 224x224 (AlexNet: 227x227) ImageNet crops; here they take 32x32 (CIFAR-10) and 28x28
(MNIST) images. Their structure is kept (AlexNet: 5 convolutions, 3 max poolings, 3 dense layers; VGG: the
paper's configurations A, B, D and E of 3x3 convolutions between 2x2 poolings), their input-size-specific parts
are not (AlexNet's 11x11 stride-4 first layer, the 7x7x512 -> 4096 classifier of VGG). The shape arithmetic of
each adaptation is in its docstring; :mod:`models.shapes` reproduces it (``summarize``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import nn

from models.convnets import _ConvClassifier
from models.layers import OutputLayer, conv_block, dense_block, image_shape, output_shape
from models.registry import NetworkSpec
from models.shapes import conv_output_size

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

    def __init__(self, spec: NetworkSpec, channels: Sequence[int] = (24, 64, 96, 96, 64), hidden_size: int = 1024,
                 local_response_norm: bool = False) -> None:
        super().__init__()
        in_channels, height, width = image_shape(spec.input_shape, "alexnet")
        channels = tuple(int(c) for c in channels)
        if len(channels) != 5 or min(channels) < 1:
            raise ValueError(f"alexnet needs 5 positive convolution widths, got channels={list(channels)}")
        if hidden_size < 1:
            raise ValueError(f"alexnet needs hidden_size >= 1, got {hidden_size}")
        if min(height, width) < 8:
            raise ValueError(f"alexnet: input_shape {spec.input_shape} is too small: its three 2x2 poolings need "
                             f"H, W >= 8 (8 -> 4 -> 2 -> 1)")
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


#: Simonyan & Zisserman (2015), Table 1: the convolution widths of configurations A (11 weight layers), B (13),
#: D (16) and E (19), all 3x3 'same' convolutions; "M" is a 2x2 stride-2 max pooling. Each depth counts the
#: convolutions plus the 3 dense layers.
VGG_CONFIGS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}

#: The smallest height and width VGG takes: five 2x2 poolings that round up must each see at least a 2x2 map,
#: so ceil(H / 16) >= 2 (17 -> 9 -> 5 -> 3 -> 2 -> 1).
VGG_MIN_SIZE = 17


def vgg_channels(depth: int, width_divisor: int = 1) -> list[int | str]:
    """The configuration of VGG-``depth`` with every width divided by ``width_divisor`` (rounded down, at least 1).

    Raises:
        ValueError: a depth not in :data:`VGG_CONFIGS` or a divisor below 1.
    """
    if depth not in VGG_CONFIGS:
        raise ValueError(f"unknown vgg depth {depth!r}; allowed: {', '.join(map(str, VGG_CONFIGS))}")
    if width_divisor < 1:
        raise ValueError(f"vgg width_divisor must be >= 1, got {width_divisor}")
    return [v if v == "M" else max(1, int(v) // width_divisor) for v in VGG_CONFIGS[depth]]


class VGG(_ConvClassifier):
    """VGG (Simonyan & Zisserman, "Very deep convolutional networks for large-scale image recognition", ICLR 2015)
    for 32x32 and 28x28 images (notes 001 "VGG net architecture"; notes 003 "common architectures (e.g., VGG,
    ResNet)").

    ``depth`` picks the paper's configuration (Table 1): 11 = A, 13 = B, 16 = D, 19 = E (:data:`VGG_CONFIGS`). Each
    convolution is Conv2d(3x3, P = 1) -> [BatchNorm2d] -> act, so only the five 2x2 stride-2 poolings change the map
    size ((W - 3 + 2)/1 + 1 = W; notes 001 "Lenet"). ``spec.batch_norm`` gives the BN variants (VGG-11-BN is depth
    11 with ``batch_norm: true``; Ioffe & Szegedy 2015, not in the paper). ``width_divisor`` divides every
    convolution width (1: the paper's 64 .. 512; 2 or 4 for CPU runs: 4 needs about 1/16 of the multiply-adds).

    Input sizes: five poolings take 32 to 16, 8, 4, 2, 1. On 28x28 the paper's rounding-down pooling would give
    28 -> 14 -> 7 -> 3 -> 1 -> 0 and fail; here every pooling rounds up (``ceil_mode=True``, Keras'
    ``MaxPooling2D(padding='same')``: the last window of an odd map covers its last row and column alone), so
    28 -> 14 -> 7 -> 4 -> 2 -> 1. Both end on a 1x1 map and give the same classifier; the rounding changes
    nothing on 32x32. A pooling is never applied to a 1x1 map: H and W must be at least 17
    (:data:`VGG_MIN_SIZE`); bigger inputs work too (64x64 ends on 2x2, flattened).

    Classifier (CIFAR-style, the paper's 4096-4096-1000 is sized for 7x7x512 features): Flatten of the final map
    (512/``width_divisor`` features on 1x1) -> Linear(hidden_size) act [Dropout] -> Linear(hidden_size) act
    [Dropout] -> OutputLayer(num_outputs). ``spec.batch_norm`` also adds a BatchNorm1d to the two hidden dense
    layers (like every architecture here; torchvision's vgg11_bn has none there); ``spec.dropout`` is the paper's
    dropout (0.5) of the first two dense layers.

    Parameter counts (10 classes, hidden_size 512; conv (3*3*D + 1)*N, dense (fan_in + 1)*fan_out, BN 2 per unit):

    ============  ==========  ==========  ===========  ===========
    depth         3x32x32     1x28x28     3x32x32 BN   1x28x28 BN
    ============  ==========  ==========  ===========  ===========
    11            9,750,922   9,749,770   9,758,474    9,757,322
    13            9,935,434   9,934,282   9,943,370    9,942,218
    16            15,245,130  15,243,978  15,255,626   15,254,474
    19            20,554,826  20,553,674  20,567,882   20,566,730
    ============  ==========  ==========  ===========  ===========

    VGG-11 for 3x32x32: convolutions 1,792 + 73,856 + 295,168 + 590,080 + 1,180,160 + 3 x 2,359,808 = 9,220,480,
    dense 262,656 + 262,656 + 5,130. With ``width_divisor=4`` (16 .. 128 channels) and 3x32x32: VGG-11 has
    910,954 parameters (914,378 with BN), VGG-16 1,254,618 (1,258,778); the dense layers are then most of them.

    Shapes: input ``(N, C, H, W)``; output ``(N, num_outputs)`` logits (``(N,)`` for one output).

    Args:
        spec: ``input_shape`` must be ``(channels, height, width)`` with H, W >= 17.
        depth: 11, 13, 16 or 19.
        width_divisor: divides every convolution width (rounded down, at least 1).
        hidden_size: units of the two hidden dense layers.

    Raises:
        ValueError: an unknown depth, a divisor or hidden size below 1, a non-image or too small ``input_shape``
            (naming ``vgg`` and the pooling that would see a 1x1 map), or an unknown activation.
    """

    def __init__(self, spec: NetworkSpec, depth: Literal[11, 13, 16, 19] = 11, width_divisor: int = 1,
                 hidden_size: int = 512) -> None:
        super().__init__()
        name = f"vgg (depth {depth})"
        in_channels, height, width = image_shape(spec.input_shape, "vgg")
        config = vgg_channels(depth, width_divisor)
        if hidden_size < 1:
            raise ValueError(f"vgg needs hidden_size >= 1, got {hidden_size}")
        act, bn = spec.activation, spec.batch_norm
        layers: list[nn.Module] = []
        h, w, pool = height, width, 0
        for v in config:
            if v == "M":
                pool += 1
                if min(h, w) < 2:
                    raise ValueError(
                        f"{name}: input_shape {spec.input_shape} is too small: pooling {pool} of 5 would see a "
                        f"{h}x{w} map; VGG needs H, W >= {VGG_MIN_SIZE}")
                h, w = (conv_output_size(d, 2, s=2, rounding="ceil") for d in (h, w))
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                layers.append(conv_block(in_channels, int(v), 3, act, bn, padding=1))
                in_channels = int(v)
        self.features = nn.Sequential(*layers, nn.Flatten())
        (features,) = output_shape(self.features, spec.input_shape, name)
        self.classifier = nn.Sequential(
            dense_block(features, hidden_size, act, bn, spec.dropout),
            dense_block(hidden_size, hidden_size, act, bn, spec.dropout),
            OutputLayer(hidden_size, spec.num_outputs),
        )
