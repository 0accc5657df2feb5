"""Residual networks and their plain twins (notes 001 "Resnet architecture", "Residual Connection (skip
connection)", "Code understanding"; notes 002 "PURPOSE OF SKIP CONNECTIONS (RESIDUAL NETWORKS)", "RESIDUAL
LEARNING" and "PURPOSE OF 1X1 CONVOLUTION").

He, Zhang, Ren & Sun, "Deep residual learning for image recognition" (CVPR 2016). A residual block computes
``act(F(x) + shortcut(x))``: its layers learn the residual F(x) = h(x) - x (notes 002 "RESIDUAL LEARNING"), so a
block whose weights are zero is the identity (up to the activation) and stacking more blocks cannot, in principle,
make a network worse. A *plain* network (``residual=False``, registry name ``plain_cnn``) is the same stack
without any shortcut; training both at the same depth measures the degradation problem (He et al. Fig. 1 and
Table 2: the deeper plain net has the higher *training* error; notes 002: "in practice, this was not the case").

- :class:`ResidualBlock`: the notes' block (conv 3x3 'same', BN, act, conv 3x3, BN, add, act), with a 1x1
  projection shortcut when it downsamples.
- :class:`BottleneckBlock`: 1x1 reduce, 3x3, 1x1 expand (He et al. section 4.1 "Deeper Bottleneck
  Architectures"; notes 002 "PURPOSE OF 1X1 CONVOLUTION": a 1x1 convolution is channel-wise pooling).
- :class:`ResNet` (``resnet``) and :class:`PlainCNN` (``plain_cnn``): one implementation, two registry names.
- :func:`parameter_reduction`: the parameter counts with and without the bottleneck, from the architecture
  params alone (for the train stage to log).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal

import torch
from torch import Tensor, nn

from models.factories import make_activation
from models.layers import OutputLayer, image_shape
from models.registry import ArchParams, NetworkSpec
from models.vision.convnets import _ConvClassifier
from models.vision.specs import ResNetParams

#: depth -> (blocks per stage, default base width). 20/32/44/56 are He et al.'s CIFAR-10 nets (section 4.2:
#: 6n + 2 weighted layers, n = 3, 5, 7, 9, stages of 16/32/64 channels); 18 is the ImageNet ResNet-18 layout
#: (Table 1: 4 stages of 2 basic blocks, 64/128/256/512 channels) with a small-image stem.
LAYOUTS: dict[int, tuple[tuple[int, ...], int]] = {
    18: ((2, 2, 2, 2), 64),
    20: ((3, 3, 3), 16),
    32: ((5, 5, 5), 16),
    44: ((7, 7, 7), 16),
    56: ((9, 9, 9), 16),
}


def resnet_layout(depth: int, width: int | None = None) -> list[tuple[int, int, int]]:
    """The stages of a ResNet of ``depth``: one ``(channels, blocks, stride of the first block)`` per stage.

    Channels double and the feature map halves from one stage to the next (the first stage keeps the stem's
    resolution): ``width * 2**i`` channels in stage ``i``, ``width`` defaulting to 16 (CIFAR depths) or 64 (18).

    Raises:
        ValueError: a depth not in :data:`LAYOUTS`, or a width below 1.
    """
    if depth not in LAYOUTS:
        raise ValueError(f"unknown resnet depth {depth!r}; allowed: {', '.join(map(str, LAYOUTS))}")
    blocks, default_width = LAYOUTS[depth]
    width = default_width if width is None else int(width)
    if width < 1:
        raise ValueError(f"resnet width must be >= 1, got {width}")
    return [(width * 2**i, n, 1 if i == 0 else 2) for i, n in enumerate(blocks)]


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> list[nn.Module]:
    """Conv2d ('same' padding for odd kernels, no bias: the BN's shift replaces it) -> BatchNorm2d."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]


class _Block(nn.Module):
    """``act(branch(x) + shortcut(x))``, or ``act(branch(x))`` without a shortcut.

    ``branch`` is the residual function F of He et al. eq. (1), ending in a BatchNorm2d. With ``residual`` the
    shortcut is the identity (``nn.Identity``) when the block keeps the shape, else the projection of He et al.
    eq. (2), option B: Conv2d 1x1 with the block's stride -> BatchNorm2d. Without ``residual`` there is no
    ``shortcut`` module at all (``self.shortcut is None``): the plain network.
    """

    def __init__(
        self, branch: nn.Sequential, in_channels: int, out_channels: int, stride: int, activation: str, residual: bool
    ) -> None:
        super().__init__()
        self.branch = branch
        self.residual = residual
        self.shortcut: nn.Module | None = None
        if residual:
            if stride != 1 or in_channels != out_channels:  # downsampling: the projection shortcut
                self.shortcut = nn.Sequential(*_conv_bn(in_channels, out_channels, 1, stride))
            else:
                self.shortcut = nn.Identity()
        self.act = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        out = self.branch(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.act(out)


class ResidualBlock(_Block):
    """The notes' residual block (notes 001 "Code understanding"; He et al. 2016 Fig. 2, the "basic block").

    As the notes write it, with ``act`` the experiment's activation:

    - y = Conv2D(out, 3x3, stride s, padding 'same')(x); y = BN(y); y = act(y)
    - y = Conv2D(out, 3x3, stride 1, padding 'same')(y); y = BN(y)
    - y = Add(y, shortcut(x)); y = act(y)

    ``shortcut`` is the identity when the block keeps the shape ("downsample = False" in the notes) and a
    projection, Conv2D(out, 1x1, stride s) -> BN, when it downsamples (stride 2 and/or a channel change: the
    notes' 224x224x16 -> 112x112x32, "factor of 4 of size reduction"). Convolutions have no bias (each is followed
    by BN, whose shift does the bias's job; the notes' Keras code keeps the default bias).

    Args:
        in_channels, out_channels: channels of x and of the block's output.
        activation: name for :func:`models.factories.make_activation` (one new module per use).
        stride: 1, or 2 to halve the height and width (the first 3x3 convolution and the projection stride).
        residual: ``False`` drops the shortcut entirely (the plain block of He et al.'s plain nets).

    Shapes: ``(N, in_channels, H, W)`` -> ``(N, out_channels, ceil(H / stride), ceil(W / stride))``.
    Parameters: ``9 * in * out + 9 * out * out + 4 * out`` (two convolutions and two BNs), plus
    ``in * out + 2 * out`` for a projection.
    """

    def __init__(
        self, in_channels: int, out_channels: int, activation: str, stride: int = 1, residual: bool = True
    ) -> None:
        branch = nn.Sequential(
            *_conv_bn(in_channels, out_channels, 3, stride),
            make_activation(activation),
            *_conv_bn(out_channels, out_channels, 3),
        )
        super().__init__(branch, in_channels, out_channels, stride, activation, residual)


class BottleneckBlock(_Block):
    """The 1x1 bottleneck block (He et al. 2016 section 4.1 and Fig. 5 right; notes 002 "PURPOSE OF 1X1
    CONVOLUTION": a 1x1 convolution is "channel-wise pooling", a dimensionality reduction of the depth).

    - y = Conv2D(mid, 1x1)(x); y = BN(y); y = act(y)             1x1 reduce, mid = max(1, out // ratio)
    - y = Conv2D(mid, 3x3, stride s, 'same')(y); y = BN(y); y = act(y)
    - y = Conv2D(out, 1x1)(y); y = BN(y)                         1x1 expand
    - y = Add(y, shortcut(x)); y = act(y)                        shortcut as in :class:`ResidualBlock`

    The block keeps the output width of the basic block it replaces, so the 3x3 convolution runs on ``ratio``
    times fewer channels: about ``ratio**2`` times fewer weights there, which is the reduction
    :func:`parameter_reduction` reports. (He et al.'s ResNet-50 instead keeps the 3x3 width and expands the output
    to 4x; the stride sits on the 3x3 convolution, as in torchvision's "ResNet v1.5", not on the first 1x1.)

    Shapes: as :class:`ResidualBlock`. Parameters: ``in * mid + 9 * mid * mid + mid * out + 4 * mid + 2 * out``,
    plus ``in * out + 2 * out`` for a projection.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        activation: str,
        stride: int = 1,
        residual: bool = True,
        ratio: int = 4,
    ) -> None:
        if ratio < 1:
            raise ValueError(f"bottleneck_ratio must be >= 1, got {ratio}")
        mid = max(1, out_channels // ratio)
        branch = nn.Sequential(
            *_conv_bn(in_channels, mid, 1),
            make_activation(activation),
            *_conv_bn(mid, mid, 3, stride),
            make_activation(activation),
            *_conv_bn(mid, out_channels, 1),
        )
        super().__init__(branch, in_channels, out_channels, stride, activation, residual)


class ResNet(_ConvClassifier):
    """ResNet for small images (notes 001 "Resnet architecture"; notes 002 "PURPOSE OF SKIP CONNECTIONS").

    He, Zhang, Ren & Sun, "Deep residual learning for image recognition" (2016). Layers, ``act = spec.activation``:

    - stem: Conv2d(C, w, 3x3, stride 1, 'same') -> BN -> act (no 7x7 stride-2 stem and no max-pool: on 28x28 or
      32x32 inputs those would leave a 7x7 / 8x8 map before the first block);
    - stages of :class:`ResidualBlock` (or :class:`BottleneckBlock` with ``bottleneck``), from
      :func:`resnet_layout`: the first block of every stage after the first has stride 2 and doubles the channels
      (a projection shortcut), the others keep the shape (identity shortcuts);
    - global average pooling -> Flatten -> (Dropout if ``spec.dropout``) -> Linear(channels -> num_outputs).

    Depths: 20, 32, 44, 56 are He et al.'s CIFAR-10 nets (section 4.2): 3 stages of n = 3, 5, 7, 9 blocks with
    w, 2w, 4w channels (w = 16), 6n + 2 weighted layers; the paper's shortcuts there are option A (zero-padding,
    parameter-free), these are option B (projections when the shape changes), 2,752 more parameters at w = 16.
    18 is the ImageNet ResNet-18 layout (Table 1: 4 stages of 2 basic blocks, 64/128/256/512 channels) with the
    small-image stem above. ``width`` overrides w (e.g. 16 for ResNet-18 on a CPU). With ``bottleneck`` each basic
    block becomes a 1x1-3x3-1x1 bottleneck of the same output width (3 weighted layers per block instead of 2).

    ``spec.batch_norm`` is ignored: BatchNorm is part of the notes' block and is always on. ``initialize`` (the
    experiment's initializer) re-initialises the convolution and linear weights; BN keeps gamma 1, beta 0.

    Shapes: input ``(N, C, H, W)`` with any H, W >= 1 (stride-2 'same' convolutions round up: 28 -> 14 -> 7 -> 4);
    output ``(N, num_outputs)`` logits (``(N,)`` for one output). Parameters with 10 classes (1x28x28 has
    ``9 * 2 * w`` fewer than 3x32x32: only the stem sees the input channels; H and W do not matter):

    ============================  ===========  ===========
    network                        1x28x28      3x32x32
    ============================  ===========  ===========
    resnet-20                        272,186      272,474
    resnet-32                        466,618      466,906
    resnet-44                        661,050      661,338
    resnet-56                        855,482      855,770
    resnet-18 (w = 64)            11,172,810   11,173,962
    resnet-18 (w = 16)               701,178      701,466
    resnet-20, bottleneck 4           21,082       21,370
    plain_cnn-20                     269,434      269,722
    ============================  ===========  ===========

    He et al. Table 6 gives ResNet-20 0.27M parameters with option A shortcuts: 269,722 on 3x32x32, the count of
    plain_cnn-20 (option A adds no parameters). ResNet-18 on 3x32x32 has the 11,173,962 of the usual CIFAR
    ResNet-18 (torchvision's ImageNet one, 7x7 stem and 1,000 classes, has 11,689,512).

    Args:
        spec: ``input_shape`` must be ``(channels, height, width)``.
        depth: 18, 20, 32, 44 or 56.
        width: base channels w; ``None`` for the layout's default (16, or 64 for depth 18).
        bottleneck: use :class:`BottleneckBlock` instead of :class:`ResidualBlock`.
        bottleneck_ratio: channel reduction of the bottleneck's first 1x1 convolution.
        residual: ``False`` builds the plain network (no shortcuts); see :class:`PlainCNN`.

    Raises:
        ValueError: a non-image ``input_shape``, an unknown depth or activation, a width or ratio below 1.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        depth: Literal[18, 20, 32, 44, 56] = 20,
        width: int | None = None,
        bottleneck: bool = False,
        bottleneck_ratio: int = 4,
        residual: bool = True,
    ) -> None:
        super().__init__()
        in_channels = image_shape(spec.input_shape, "plain_cnn" if not residual else "resnet")[0]
        if bottleneck_ratio < 1:
            raise ValueError(f"bottleneck_ratio must be >= 1, got {bottleneck_ratio}")
        layout = resnet_layout(depth, width)
        act = spec.activation
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["stem"] = nn.Sequential(*_conv_bn(in_channels, layout[0][0], 3), make_activation(act))
        channels = layout[0][0]
        for i, (out_channels, blocks, stride) in enumerate(layout, start=1):
            stage: list[nn.Module] = []
            for b in range(blocks):
                s = stride if b == 0 else 1
                if bottleneck:
                    stage.append(BottleneckBlock(channels, out_channels, act, s, residual, bottleneck_ratio))
                else:
                    stage.append(ResidualBlock(channels, out_channels, act, s, residual))
                channels = out_channels
            layers[f"stage{i}"] = nn.Sequential(*stage)
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten()
        self.features = nn.Sequential(layers)
        head: list[nn.Module] = [nn.Dropout(spec.dropout)] if spec.dropout > 0 else []
        self.classifier = nn.Sequential(*head, OutputLayer(channels, spec.num_outputs))


class PlainCNN(ResNet):
    """The plain counterpart of :class:`ResNet` (He et al. 2016, section 4.1 "Plain Networks", Fig. 1, Table 2).

    Exactly :class:`ResNet` with ``residual=False``: the same stem, stages, 3x3 convolutions, BN, pooling and head,
    but no shortcut at all (no identity, no projection: a downsampling block is only its stride-2 3x3
    convolution). Train both at the same depth to see the degradation problem (notes 001 "Resnet architecture":
    the remaining layers should learn an identity map; notes 002: plain deeper nets do not manage it).

    Parameters with 10 classes: those of the same :class:`ResNet` minus its projections (``(in + 2) * out`` each):
    plain_cnn-20 has 269,434 (1x28x28) and 269,722 (3x32x32). Shapes, args and errors as :class:`ResNet`.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        depth: Literal[18, 20, 32, 44, 56] = 20,
        width: int | None = None,
        bottleneck: bool = False,
        bottleneck_ratio: int = 4,
    ) -> None:
        super().__init__(spec, depth, width, bottleneck, bottleneck_ratio, residual=False)


def parameter_reduction(
    spec: NetworkSpec, params: dict[str, Any] | ArchParams | None = None, residual: bool = True
) -> dict[str, float | int]:
    """Parameter counts of the network of ``params`` with basic blocks and with 1x1 bottlenecks (notes 002
    "PURPOSE OF 1X1 CONVOLUTION"; He et al. section 4.1), for the train stage to log.

    Both networks are built on torch's ``meta`` device: no memory is allocated and nothing is initialised, so the
    call is cheap even for ResNet-18 at width 64. ``params["bottleneck"]`` itself is ignored: both variants are
    counted.

    Args:
        spec: the experiment's :class:`NetworkSpec`.
        params: the ``model:`` block of ``resnet`` or ``plain_cnn`` (``depth``, ``width``, ``bottleneck_ratio``).
        residual: ``False`` counts the plain networks (no projections).

    Returns:
        ``{"params_basic": int, "params_bottleneck": int, "ratio": params_bottleneck / params_basic,
        "bottleneck_ratio": the channel reduction used}``; ``ratio < 1`` is the saving.

    Raises:
        ValueError / pydantic.ValidationError: bad params, as when building the network.
    """
    if not isinstance(params, ArchParams):
        params = ResNetParams.model_validate(params or {})
    kwargs = params.model_dump()
    counts = {}
    with torch.device("meta"):
        for bottleneck in (False, True):
            net = ResNet(spec, **{**kwargs, "bottleneck": bottleneck}, residual=residual)
            counts[bottleneck] = sum(p.numel() for p in net.parameters())
    return {
        "params_basic": counts[False],
        "params_bottleneck": counts[True],
        "ratio": counts[True] / counts[False],
        "bottleneck_ratio": kwargs["bottleneck_ratio"],
    }


def describe_resnet(spec: NetworkSpec, params: dict[str, Any]) -> dict[str, float | int]:
    """What the train stage logs for a ``resnet`` run: :func:`parameter_reduction` under ``bottleneck.*`` (the
    1x1-convolution saving, notes 002), whichever block the run uses."""
    return {f"bottleneck.{k}": v for k, v in parameter_reduction(spec, params).items()}


def describe_plain_cnn(spec: NetworkSpec, params: dict[str, Any]) -> dict[str, float | int]:
    """:func:`describe_resnet` for ``plain_cnn`` (no shortcuts)."""
    return {f"bottleneck.{k}": v for k, v in parameter_reduction(spec, params, residual=False).items()}
