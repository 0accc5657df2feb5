"""Small building blocks shared by the architectures: the output layer, dense and convolutional blocks, and the
shape inference that sizes a classifier from ``NetworkSpec.input_shape``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.factories import make_activation


class OutputLayer(nn.Linear):
    """The final dense layer: ``(N, in_features)`` to ``(N, out_features)``, or ``(N,)`` when ``out_features == 1``.

    Single-output heads (a binary logit or a regression value) are squeezed so that outputs and targets are both
    ``(N,)``, the contract of :func:`models.registry.build_network` and :func:`models.factories.make_loss`.
    No activation: sigmoid/softmax live in the losses and metrics.
    """

    def forward(self, x: Tensor) -> Tensor:
        out = super().forward(x)
        return out.squeeze(-1) if self.out_features == 1 else out


def dense_block(
    in_features: int, out_features: int, activation: str, batch_norm: bool = False, dropout: float = 0.0
) -> nn.Sequential:
    """Linear -> (BatchNorm1d if ``batch_norm``) -> activation -> (Dropout if ``dropout > 0``).

    Shapes: ``(N, in_features)`` to ``(N, out_features)``. The activation is built by
    :func:`models.factories.make_activation` (ValueError for an unknown name).
    """
    layers: list[nn.Module] = [nn.Linear(in_features, out_features)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(out_features))
    layers.append(make_activation(activation))
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def conv_block(
    in_channels: int, out_channels: int, kernel_size: int, activation: str, batch_norm: bool = False, padding: int = 0
) -> nn.Sequential:
    """Conv2d(stride 1) -> (BatchNorm2d if ``batch_norm``) -> activation.

    Shapes: ``(N, in_channels, H, W)`` to ``(N, out_channels, H + 2 * padding - kernel_size + 1, ...)`` (notes 001
    "Lenet": H' = (H + 2P - k) / s + 1).
    """
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(make_activation(activation))
    return nn.Sequential(*layers)


def flat_size(input_shape: Sequence[int]) -> int:
    """Number of features of one sample of shape ``input_shape`` once flattened (e.g. (1, 28, 28) -> 784)."""
    return math.prod(input_shape)


def image_shape(input_shape: Sequence[int], architecture: str) -> tuple[int, int, int]:
    """Check that ``input_shape`` is ``(channels, height, width)`` and return it as a tuple.

    Raises:
        ValueError: any other rank, naming ``architecture``.
    """
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{architecture} needs input_shape (channels, height, width), got {shape}")
    return shape[0], shape[1], shape[2]


def output_shape(module: nn.Module, input_shape: Sequence[int], architecture: str) -> tuple[int, ...]:
    """Per-sample output shape of ``module`` on inputs of per-sample shape ``input_shape``.

    Found by one forward pass of a single zero sample under ``torch.no_grad`` in eval mode (so batch-norm running
    statistics are left untouched); the module's training mode is restored afterwards.

    Raises:
        ValueError: the input is too small for the module (a feature map shrank below 1x1), naming ``architecture``.
    """
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *input_shape))
    except RuntimeError as exc:
        raise ValueError(
            f"{architecture}: input_shape {tuple(input_shape)} is too small for this network ({exc})"
        ) from None
    finally:
        module.train(was_training)
    return tuple(out.shape[1:])
