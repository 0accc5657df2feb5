"""Params models and registry entries of the sequence family (torch-free: pydantic and :mod:`models.registry` only)."""

from __future__ import annotations

from pydantic import PositiveInt

from models.registry import Architecture, ArchParams, register

_TASKS = frozenset({"binary", "multiclass", "regression"})


class LSTMParams(ArchParams):
    """``lstm_classifier`` (models/sequence/recurrent.py): embedding and (Bi)LSTM sizes."""

    embedding_dim: PositiveInt = 64
    hidden_size: PositiveInt = 64
    num_layers: PositiveInt = 1
    bidirectional: bool = False


register(
    Architecture(
        "lstm_classifier",
        "models.sequence.recurrent:LSTMClassifier",
        LSTMParams,
        "notes 004, LSTM (long-term and short-term memory)",
        "Hochreiter & Schmidhuber (1997), Long short-term memory",
        frozenset({"text"}),
        _TASKS,
    )
)
