"""Convolutional networks: the notes' Keras CNN (notes 002) and LeNet-5 (notes 001 "Lenet")."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from models.layers import OutputLayer, conv_block, dense_block, image_shape, output_shape
from models.registry import NetworkSpec

_POOLING: dict[str, type[nn.Module]] = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


class _ConvClassifier(nn.Module):
    """``features`` (convolutions ending in ``nn.Flatten``) followed by ``classifier`` (dense layers and output).

    The first dense layer's width is inferred from ``spec.input_shape`` by :func:`models.layers.output_shape`, so
    subclasses only describe their layers.
    """

    features: nn.Sequential
    classifier: nn.Sequential

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class KerasConvNet(_ConvClassifier):
    """The CNN of the notes' Keras example (notes 002, "CONVNET CODE (KERAS)", "Total params: 93,322").

    Keras "Convolutional Neural Network" tutorial (TensorFlow docs). Layers, with ``act = spec.activation``:
    Conv2d(C, 32, 3) act, MaxPool 2, Conv2d(32, 64, 3) act, MaxPool 2, Conv2d(64, 64, 3) act, Flatten,
    Linear(-> 64) act, (Dropout if ``spec.dropout``), Linear(64 -> num_outputs). With ``spec.batch_norm`` a
    BatchNorm2d follows every convolution and a BatchNorm1d the hidden dense layer (before the activation).

    Shapes: input ``(N, C, H, W)``; output ``(N, num_outputs)`` logits (``(N,)`` for one output).
    For 1x28x28: 26x26x32, 13x13x32, 11x11x64, 5x5x64, 3x3x64 -> 576 features; parameters
    320 + 18,496 + 36,928 + 36,928 + 650 = 93,322 with 10 classes (the notes' summary).
    For 3x32x32 (CIFAR-10): 4x4x64 -> 1,024 features; 122,570 parameters with 10 classes.

    Args:
        spec: ``input_shape`` must be ``(channels, height, width)`` with H, W >= 18 (three 3x3 convolutions and
            two 2x2 poolings must leave at least a 1x1 map).

    Raises:
        ValueError: a non-image ``input_shape``, one too small, or an unknown activation.
    """

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        in_channels = image_shape(spec.input_shape, "keras_convnet")[0]
        act, bn = spec.activation, spec.batch_norm
        self.features = nn.Sequential(
            conv_block(in_channels, 32, 3, act, bn),
            nn.MaxPool2d(2),
            conv_block(32, 64, 3, act, bn),
            nn.MaxPool2d(2),
            conv_block(64, 64, 3, act, bn),
            nn.Flatten(),
        )
        (features,) = output_shape(self.features, spec.input_shape, "keras_convnet")
        self.classifier = nn.Sequential(
            dense_block(features, 64, act, bn, spec.dropout),
            OutputLayer(64, spec.num_outputs),
        )


class LeNet5(_ConvClassifier):
    """LeNet-5 adapted to 28x28 digits (notes 001 "Lenet").

    LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document recognition" (1998). The paper
    pads 28x28 MNIST digits into 32x32 inputs; here C1 pads by 2 instead, which gives the same feature-map sizes:

    - C1: Conv2d(C, 6, 5, padding=2) act          28x28 -> 28x28x6
    - S2: pool 2                                  -> 14x14x6
    - C3: Conv2d(6, 16, 5) act                    -> 10x10x16 (fully connected to S2, not the paper's sparse table)
    - S4: pool 2                                  -> 5x5x16
    - C5: Linear(16*5*5 -> 120) act               (the paper's 5x5 convolution on a 5x5 map is this dense layer)
    - F6: Linear(120 -> 84) act
    - output: Linear(84 -> num_outputs)           (the paper's RBF output units are replaced by logits)

    ``act = spec.activation`` (the paper used a scaled tanh); ``pooling="avg"`` is the paper's subsampling
    (without its trainable coefficient), ``"max"`` the modern variant. ``spec.batch_norm`` adds BatchNorm after C1,
    C3, C5 and F6; ``spec.dropout`` adds Dropout after C5 and F6.

    Shapes: input ``(N, C, H, W)``; output ``(N, num_outputs)`` logits (``(N,)`` for one output).
    Parameters for 1x28x28 and 10 classes: 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706.
    Other sizes work too (3x32x32: S4 is 6x6x16, 576 features into C5).

    Args:
        spec: ``input_shape`` must be ``(channels, height, width)`` with H, W >= 12.
        pooling: ``"avg"`` or ``"max"``.

    Raises:
        ValueError: unknown ``pooling``, a non-image or too small ``input_shape``, or an unknown activation.
    """

    def __init__(self, spec: NetworkSpec, pooling: Literal["avg", "max"] = "avg") -> None:
        super().__init__()
        if pooling not in _POOLING:
            raise ValueError(f"unknown pooling {pooling!r}; allowed: {', '.join(_POOLING)}")
        in_channels = image_shape(spec.input_shape, "lenet5")[0]
        act, bn, pool = spec.activation, spec.batch_norm, _POOLING[pooling]
        self.features = nn.Sequential(
            conv_block(in_channels, 6, 5, act, bn, padding=2),  # C1
            pool(2),  # S2
            conv_block(6, 16, 5, act, bn),  # C3
            pool(2),  # S4
            nn.Flatten(),
        )
        (features,) = output_shape(self.features, spec.input_shape, "lenet5")
        self.classifier = nn.Sequential(
            dense_block(features, 120, act, bn, spec.dropout),  # C5
            dense_block(120, 84, act, bn, spec.dropout),  # F6
            OutputLayer(84, spec.num_outputs),
        )
