"""The perceptron (Rosenblatt 1958; notes 001 "Perceptron": AND/OR gates, XOR gate)."""

from __future__ import annotations

from torch import Tensor, nn

from models.layers import OutputLayer, flat_size
from models.registry import NetworkSpec


class Perceptron(nn.Module):
    """A single neuron: score = w . x + b on the flattened input; predicted class 1 when score > 0.

    Rosenblatt, "The perceptron: a probabilistic model for information storage and organization in the brain"
    (1958); notes 001 "Perceptron". There is no hidden layer and no activation inside the network: the notes' step
    function is the ``score > 0`` decision taken by the loss (hinge) and the metrics, so the model stays
    differentiable. A single line cannot separate XOR (notes 001 "XOR gate"): at most 3 of its 4 rows are right.

    Shapes: input ``(N, *spec.input_shape)`` (flattened to ``(N, prod(input_shape))``); output ``(N,)`` scores.
    Parameters: ``prod(input_shape) + 1`` (3 for a two-input gate).

    Args:
        spec: data shape; ``spec.num_outputs`` must be 1. Activation, dropout and batch norm do not apply.

    Raises:
        ValueError: ``spec.num_outputs != 1`` (a perceptron is a binary classifier).
    """

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        if spec.num_outputs != 1:
            raise ValueError(f"a perceptron has one output (binary tasks), got num_outputs={spec.num_outputs}")
        self.flatten = nn.Flatten()
        self.linear = OutputLayer(flat_size(spec.input_shape), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.flatten(x))
