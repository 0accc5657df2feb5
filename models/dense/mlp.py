"""The multi-layer perceptron (notes 004 "Multi layer perceptron"; notes 001 "Activation Functions")."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from models.layers import OutputLayer, dense_block, flat_size
from models.registry import NetworkSpec


class MLP(nn.Module):
    """Fully connected network: flatten, then hidden dense blocks, then a linear output layer.

    Rumelhart, Hinton & Williams, "Learning representations by back-propagating errors" (1986); notes 004
    "Multi layer perceptron" (a network with hidden layers; a hidden layer is what lets it solve XOR, notes 001).

    Each hidden size h adds Linear -> (BatchNorm1d if ``spec.batch_norm``) -> ``spec.activation`` ->
    (Dropout(``spec.dropout``) if > 0). The output layer is linear with ``spec.num_outputs`` units, so the same
    network serves binary (1 logit), multiclass (C logits) and regression (1 value) heads; the loss decides.

    Shapes: input ``(N, *spec.input_shape)`` (tables ``(N, features)``, images ``(N, C, H, W)``, flattened);
    output ``(N, num_outputs)``, or ``(N,)`` when ``num_outputs == 1``.
    Parameters: sum over layers of (fan_in + 1) * fan_out, plus 2 * h per hidden layer with batch norm.

    Args:
        spec: data shape and shared knobs.
        hidden_sizes: units per hidden layer, input side first; empty gives a linear model.

    Raises:
        ValueError: unknown activation name.
    """

    def __init__(self, spec: NetworkSpec, hidden_sizes: Sequence[int] = (64, 32)) -> None:
        super().__init__()
        widths = [flat_size(spec.input_shape), *hidden_sizes]
        self.flatten = nn.Flatten()
        self.hidden = nn.Sequential(
            *(
                dense_block(fan_in, fan_out, spec.activation, spec.batch_norm, spec.dropout)
                for fan_in, fan_out in zip(widths[:-1], widths[1:])
            )
        )
        self.output = OutputLayer(widths[-1], spec.num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.hidden(self.flatten(x)))
