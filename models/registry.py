"""The architecture registry: one place that maps an architecture name to its network builder.

This module is deliberately free of torch imports: the config loader validates every experiment's ``model:``
block against the architecture's pydantic params model before any heavy library is imported, and the builder
is imported only when a network is actually built (:func:`build_network`).

To add an architecture: write its ``nn.Module`` (its ``__init__`` takes a :class:`NetworkSpec` and the params
model's fields as keyword arguments), declare a params model here, and add one :class:`Architecture` entry to
:data:`REGISTRY`. Nothing else in the pipeline changes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

Modality = Literal["table", "image", "tabular", "text"]
Task = Literal["binary", "multiclass", "regression", "localization"]


class ArchParams(BaseModel):
    """Base of every architecture's params model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class NoParams(ArchParams):
    """Architectures whose shape is fixed by the notes take no params."""


class MLPParams(ArchParams):
    hidden_sizes: list[PositiveInt] = Field(default_factory=lambda: [64, 32], description="units per hidden layer")


class LeNet5Params(ArchParams):
    pooling: Literal["avg", "max"] = Field("avg", description="LeCun's subsampling is average pooling")


class LSTMParams(ArchParams):
    embedding_dim: PositiveInt = 64
    hidden_size: PositiveInt = 64
    num_layers: PositiveInt = 1
    bidirectional: bool = False


class ResNetParams(ArchParams):
    """``resnet`` and ``plain_cnn`` (models/resnet.py): the same params build the net with or without shortcuts."""

    depth: Literal[18, 20, 32, 44, 56] = Field(
        20, description="20/32/44/56: He et al.'s CIFAR nets (6n+2 layers, 16/32/64 channels); 18: ResNet-18 layout")
    width: PositiveInt | None = Field(None, description="base channels; None: 16 (CIFAR depths) or 64 (depth 18)")
    bottleneck: bool = Field(False, description="1x1 reduce -> 3x3 -> 1x1 expand blocks instead of two 3x3")
    bottleneck_ratio: PositiveInt = Field(4, description="channel reduction of the bottleneck's 1x1 convolution")


class AlexNetParams(ArchParams):
    """``alexnet`` (models/vision.py): widths of the 32x32 adaptation; the defaults are a quarter of the paper's."""

    channels: list[PositiveInt] = Field(
        default_factory=lambda: [24, 64, 96, 96, 64], min_length=5, max_length=5,
        description="widths of conv1..conv5 (paper: 96, 256, 384, 384, 256)")
    hidden_size: PositiveInt = Field(1024, description="units of fc6 and fc7 (paper: 4096)")
    local_response_norm: bool = Field(False, description="the paper's LRN after conv1 and conv2")


class LocalizerParams(ArchParams):
    """``localizer`` (models/localizer.py): the convolutional trunk's widths and the shared dense layer."""

    channels: list[PositiveInt] = Field(default_factory=lambda: [16, 32, 64, 64], min_length=1,
                                        description="one conv 3x3 + 2x2 max-pool block per width")
    hidden_size: PositiveInt = Field(128, description="units of the dense layer both heads read")


class VGGParams(ArchParams):
    """``vgg`` (models/vision.py): the paper's configuration by depth; batch norm comes from ``batch_norm``."""

    depth: Literal[11, 13, 16, 19] = Field(
        11, description="Simonyan & Zisserman Table 1: 11 = A, 13 = B, 16 = D, 19 = E")
    width_divisor: int = Field(1, ge=1, le=64, description="divides every convolution width (1: the paper's 64..512)")
    hidden_size: PositiveInt = Field(512, description="units of the two hidden dense layers (paper: 4096)")


@dataclass(frozen=True)
class NetworkSpec:
    """What a network needs to know about its data and the experiment's shared knobs.

    Attributes:
        input_shape: shape of one sample, without the batch dimension: ``(features,)`` for tables,
            ``(channels, height, width)`` for images, ``(seq_len,)`` of token ids for text.
        num_outputs: 1 for binary and regression heads (a logit or a value), C for C-class heads (logits); for
            localization C, the classes (the network adds its 4 box coordinates).
        activation: hidden activation name (see ``models.factories.make_activation``).
        dropout: dropout rate in [0, 1) applied before each hidden dense layer's output.
        batch_norm: whether hidden layers get batch normalisation.
        vocab_size: vocabulary size for token inputs (text), else ``None``.
    """

    input_shape: tuple[int, ...]
    num_outputs: int
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False
    vocab_size: int | None = None


@dataclass(frozen=True)
class Architecture:
    """A registry entry.

    Attributes:
        name: the architecture name used in ``params.yaml``.
        target: ``"module:Class"`` of the ``nn.Module``; imported lazily.
        params: pydantic model of the ``model:`` block.
        notes: the notes section the architecture follows.
        reference: the paper, where there is one.
        modalities: data modalities it accepts.
        tasks: tasks it supports.
        describe_target: optional ``"module:function"`` giving facts to track (see :meth:`describe`).
    """

    name: str
    target: str
    params: type[ArchParams]
    notes: str
    reference: str
    modalities: frozenset[str]
    tasks: frozenset[str]
    describe_target: str | None = None

    def load(self) -> type[nn.Module]:
        return _import(self.target)

    def describe(self, spec: NetworkSpec, params: dict) -> dict[str, float | int]:
        """Architecture-specific facts worth tracking, e.g. the parameter saving of ResNet's 1x1 bottleneck:
        ``describe_target`` (``"module:function"`` of ``(spec, params) -> dict``) called lazily, else ``{}``."""
        return _import(self.describe_target)(spec, params) if self.describe_target else {}


def _import(target: str):
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


_ALL_TASKS = frozenset({"binary", "multiclass", "regression"})

REGISTRY: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "perceptron",
            "models.perceptron:Perceptron",
            NoParams,
            "notes 001, Perceptron (AND/OR gates; XOR gate)",
            "Rosenblatt (1958), The perceptron",
            frozenset({"table", "tabular"}),
            frozenset({"binary"}),
        ),
        Architecture(
            "mlp",
            "models.mlp:MLP",
            MLPParams,
            "notes 004, Multi layer perceptron; notes 001, Activation Functions",
            "Rumelhart, Hinton, Williams (1986), Learning representations by back-propagating errors",
            frozenset({"table", "tabular", "image"}),
            _ALL_TASKS,
        ),
        Architecture(
            "keras_convnet",
            "models.convnets:KerasConvNet",
            NoParams,
            "notes 002, Keras CNN model summary (Total params: 93,322)",
            "Keras 'Convolutional Neural Network' tutorial (TensorFlow docs)",
            frozenset({"image"}),
            frozenset({"binary", "multiclass"}),
        ),
        Architecture(
            "lenet5",
            "models.convnets:LeNet5",
            LeNet5Params,
            "notes 001, LeNet",
            "LeCun, Bottou, Bengio, Haffner (1998), Gradient-based learning applied to document recognition",
            frozenset({"image"}),
            frozenset({"binary", "multiclass"}),
        ),
        Architecture(
            "lstm_classifier",
            "models.recurrent:LSTMClassifier",
            LSTMParams,
            "notes 004, LSTM (long-term and short-term memory)",
            "Hochreiter & Schmidhuber (1997), Long short-term memory",
            frozenset({"text"}),
            _ALL_TASKS,
        ),
        Architecture(
            "resnet",
            "models.resnet:ResNet",
            ResNetParams,
            "notes 001, Resnet architecture (Residual Connection; Code understanding); "
            "notes 002, Purpose of skip connections; Purpose of 1x1 convolution",
            "He, Zhang, Ren, Sun (2016), Deep residual learning for image recognition",
            frozenset({"image"}),
            frozenset({"binary", "multiclass"}),
            "models.resnet:describe_resnet",
        ),
        Architecture(
            "plain_cnn",
            "models.resnet:PlainCNN",
            ResNetParams,
            "notes 002, Purpose of skip connections (the degradation problem); notes 001, Resnet architecture",
            "He, Zhang, Ren, Sun (2016), Deep residual learning for image recognition (plain networks, Fig. 1)",
            frozenset({"image"}),
            frozenset({"binary", "multiclass"}),
            "models.resnet:describe_plain_cnn",
        ),
        Architecture(
            "alexnet",
            "models.vision:AlexNet",
            AlexNetParams,
            "notes 001, Alexnet (output size (W - f + 2P)/s + 1; learnable parameters (f x f x d + 1) x n)",
            "Krizhevsky, Sutskever, Hinton (2012), ImageNet classification with deep convolutional neural networks",
            frozenset({"image"}),
            frozenset({"binary", "multiclass"}),
        ),
        Architecture(
            "vgg",
            "models.vision:VGG",
            VGGParams,
            "notes 001, VGG net architecture; notes 003, common architectures (e.g., VGG, ResNet)",
            "Simonyan & Zisserman (2015), Very deep convolutional networks for large-scale image recognition",
            frozenset({"image"}),
            frozenset({"binary", "multiclass"}),
        ),
        Architecture(
            "localizer",
            "models.localizer:Localizer",
            LocalizerParams,
            "notes 000, Image or Object localization (class plus bounding box of the one object)",
            "Sermanet et al. (2014), OverFeat: integrated recognition, localization and detection using "
            "convolutional networks",
            frozenset({"image"}),
            frozenset({"localization"}),
        ),
    )
}


def get_architecture(name: str) -> Architecture:
    """Return the registry entry for ``name``.

    Raises:
        KeyError: naming the unknown architecture and listing the registered ones.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; registered: {', '.join(sorted(REGISTRY))}") from None


def build_network(name: str, spec: NetworkSpec, params: dict | ArchParams | None = None) -> nn.Module:
    """Build the network of architecture ``name``.

    Args:
        name: registry name.
        spec: data shape and shared knobs.
        params: the experiment's ``model:`` block (validated here if it is a plain dict).

    Returns:
        An ``nn.Module`` mapping a batch ``(N, *spec.input_shape)`` to outputs ``(N, spec.num_outputs)``
        (``(N,)`` for single-output heads).

    Raises:
        KeyError: unknown architecture. pydantic.ValidationError: bad params.
    """
    arch = get_architecture(name)
    if not isinstance(params, ArchParams):
        params = arch.params.model_validate(params or {})
    return arch.load()(spec, **params.model_dump())
