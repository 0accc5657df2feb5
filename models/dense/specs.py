"""Params models and registry entries of the dense family (torch-free: pydantic and :mod:`models.registry` only)."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from models.registry import Architecture, ArchParams, NoParams, register

_TASKS = frozenset({"binary", "multiclass", "regression"})

register(
    Architecture(
        "perceptron",
        "models.dense.perceptron:Perceptron",
        NoParams,
        "notes 001, Perceptron (AND/OR gates; XOR gate)",
        "Rosenblatt (1958), The perceptron",
        frozenset({"table", "tabular"}),
        frozenset({"binary"}),
    )
)


class MLPParams(ArchParams):
    """``mlp`` (models/dense/mlp.py): the hidden layers' widths."""

    hidden_sizes: list[PositiveInt] = Field(default_factory=lambda: [64, 32], description="units per hidden layer")


register(
    Architecture(
        "mlp",
        "models.dense.mlp:MLP",
        MLPParams,
        "notes 004, Multi layer perceptron; notes 001, Activation Functions",
        "Rumelhart, Hinton, Williams (1986), Learning representations by back-propagating errors",
        frozenset({"table", "tabular", "image", "series"}),
        _TASKS | {"forecasting"},
    )
)
