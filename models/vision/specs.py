"""Params models and registry entries of the vision family (torch-free: pydantic and :mod:`models.registry` only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from models.registry import Architecture, ArchParams, NoParams, register

_CLASSIFICATION = frozenset({"binary", "multiclass"})

register(
    Architecture(
        "keras_convnet",
        "models.vision.convnets:KerasConvNet",
        NoParams,
        "notes 002, Keras CNN model summary (Total params: 93,322)",
        "Keras 'Convolutional Neural Network' tutorial (TensorFlow docs)",
        frozenset({"image"}),
        _CLASSIFICATION,
    )
)


class LeNet5Params(ArchParams):
    """``lenet5`` (models/vision/convnets.py): the subsampling layers' pooling."""

    pooling: Literal["avg", "max"] = Field("avg", description="LeCun's subsampling is average pooling")


register(
    Architecture(
        "lenet5",
        "models.vision.convnets:LeNet5",
        LeNet5Params,
        "notes 001, LeNet",
        "LeCun, Bottou, Bengio, Haffner (1998), Gradient-based learning applied to document recognition",
        frozenset({"image"}),
        _CLASSIFICATION,
    )
)


class ResNetParams(ArchParams):
    """``resnet`` and ``plain_cnn`` (models/vision/resnet.py): the same params build the net with or without
    shortcuts."""

    depth: Literal[18, 20, 32, 44, 56] = Field(
        20, description="20/32/44/56: He et al.'s CIFAR nets (6n+2 layers, 16/32/64 channels); 18: ResNet-18 layout"
    )
    width: PositiveInt | None = Field(None, description="base channels; None: 16 (CIFAR depths) or 64 (depth 18)")
    bottleneck: bool = Field(False, description="1x1 reduce -> 3x3 -> 1x1 expand blocks instead of two 3x3")
    bottleneck_ratio: PositiveInt = Field(4, description="channel reduction of the bottleneck's 1x1 convolution")


register(
    Architecture(
        "resnet",
        "models.vision.resnet:ResNet",
        ResNetParams,
        "notes 001, Resnet architecture (Residual Connection; Code understanding); "
        "notes 002, Purpose of skip connections; Purpose of 1x1 convolution",
        "He, Zhang, Ren, Sun (2016), Deep residual learning for image recognition",
        frozenset({"image"}),
        _CLASSIFICATION,
        "models.vision.resnet:describe_resnet",
    )
)
register(
    Architecture(
        "plain_cnn",
        "models.vision.resnet:PlainCNN",
        ResNetParams,
        "notes 002, Purpose of skip connections (the degradation problem); notes 001, Resnet architecture",
        "He, Zhang, Ren, Sun (2016), Deep residual learning for image recognition (plain networks, Fig. 1)",
        frozenset({"image"}),
        _CLASSIFICATION,
        "models.vision.resnet:describe_plain_cnn",
    )
)


class AlexNetParams(ArchParams):
    """``alexnet`` (models/vision/alexnet.py): widths of the 32x32 adaptation; the defaults are a quarter of the
    paper's."""

    channels: list[PositiveInt] = Field(
        default_factory=lambda: [24, 64, 96, 96, 64],
        min_length=5,
        max_length=5,
        description="widths of conv1..conv5 (paper: 96, 256, 384, 384, 256)",
    )
    hidden_size: PositiveInt = Field(1024, description="units of fc6 and fc7 (paper: 4096)")
    local_response_norm: bool = Field(False, description="the paper's LRN after conv1 and conv2")


register(
    Architecture(
        "alexnet",
        "models.vision.alexnet:AlexNet",
        AlexNetParams,
        "notes 001, Alexnet (output size (W - f + 2P)/s + 1; learnable parameters (f x f x d + 1) x n)",
        "Krizhevsky, Sutskever, Hinton (2012), ImageNet classification with deep convolutional neural networks",
        frozenset({"image"}),
        _CLASSIFICATION,
    )
)


class VGGParams(ArchParams):
    """``vgg`` (models/vision/vgg.py): the paper's configuration by depth; batch norm comes from ``batch_norm``."""

    depth: Literal[11, 13, 16, 19] = Field(
        11, description="Simonyan & Zisserman Table 1: 11 = A, 13 = B, 16 = D, 19 = E"
    )
    width_divisor: int = Field(1, ge=1, le=64, description="divides every convolution width (1: the paper's 64..512)")
    hidden_size: PositiveInt = Field(512, description="units of the two hidden dense layers (paper: 4096)")


register(
    Architecture(
        "vgg",
        "models.vision.vgg:VGG",
        VGGParams,
        "notes 001, VGG net architecture; notes 003, common architectures (e.g., VGG, ResNet)",
        "Simonyan & Zisserman (2015), Very deep convolutional networks for large-scale image recognition",
        frozenset({"image"}),
        _CLASSIFICATION,
    )
)


class LocalizerParams(ArchParams):
    """``localizer`` (models/vision/localizer.py): the convolutional trunk's widths and the shared dense layer."""

    channels: list[PositiveInt] = Field(
        default_factory=lambda: [16, 32, 64, 64],
        min_length=1,
        description="one conv 3x3 + 2x2 max-pool block per width",
    )
    hidden_size: PositiveInt = Field(128, description="units of the dense layer both heads read")


register(
    Architecture(
        "localizer",
        "models.vision.localizer:Localizer",
        LocalizerParams,
        "notes 000, Image or Object localization (class plus bounding box of the one object)",
        "Sermanet et al. (2014), OverFeat: integrated recognition, localization and detection using "
        "convolutional networks",
        frozenset({"image"}),
        frozenset({"localization"}),
    )
)
