"""VGG adapted to small images (notes 001 "VGG net architecture"; notes 003 "common architectures (e.g., VGG,
ResNet)"; Simonyan & Zisserman 2015).

The paper was written for 224x224 ImageNet crops; here the network takes 32x32 (CIFAR-10) and 28x28 (MNIST) images.
Its structure is kept (the paper's configurations A, B, D and E of 3x3 convolutions between 2x2 poolings), its
input-size-specific part is not (the 7x7x512 -> 4096 classifier). The shape arithmetic of the adaptation is in the
docstring of :class:`VGG`; :mod:`models.shapes` reproduces it (``summarize``).
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from models.layers import OutputLayer, conv_block, dense_block, image_shape, output_shape
from models.registry import NetworkSpec
from models.shapes import conv_output_size
from models.vision.convnets import _ConvClassifier

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

    def __init__(
        self, spec: NetworkSpec, depth: Literal[11, 13, 16, 19] = 11, width_divisor: int = 1, hidden_size: int = 512
    ) -> None:
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
                        f"{h}x{w} map; VGG needs H, W >= {VGG_MIN_SIZE}"
                    )
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
