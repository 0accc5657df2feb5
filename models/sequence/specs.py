"""Params models and registry entries of the sequence family (torch-free: pydantic and :mod:`models.registry` only).

notes 000 "Recurrent Neural Network (RNN)", notes 002 "RNN", "TYPES OF RNN", "LSTM", "GRU VS LSTM",
"1D CONVOLUTION", notes 004 "RNN", "LSTM". The notes' kinds of RNN map to architectures as follows:

- many-to-one (a review -> its sentiment) and many-to-many of a fixed horizon (a window -> the next values):
  ``rnn`` (models/sequence/recurrent.py), and ``conv1d_text`` (models/sequence/conv1d.py) for text;
- one-to-many (a seed -> a generated sequence): ``char_rnn`` (models/sequence/language_model.py), a character-level
  language model that emits a distribution over the next symbol at every step.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from models.registry import Architecture, ArchParams, register

#: The recurrent cells of the notes: ``rnn`` is Elman's cell with tanh, ``lstm`` and ``gru`` the gated ones.
Cell = Literal["rnn", "lstm", "gru"]


class RNNParams(ArchParams):
    """``rnn`` (models/sequence/recurrent.py): cell, sizes and how the sequence is summarised."""

    cell: Cell = Field("lstm", description="rnn (Elman, tanh), lstm or gru")
    embedding_dim: PositiveInt = Field(64, description="token vector size (token inputs only)")
    hidden_size: PositiveInt = Field(64, description="state size per layer and direction")
    num_layers: PositiveInt = Field(1, description="stacked recurrent layers (dropout between them)")
    bidirectional: bool = False
    pooling: Literal["last", "mean", "max"] = Field(
        "last", description="sequence summary: the final state, or the mean or max of the outputs over time"
    )


register(
    Architecture(
        "rnn",
        "models.sequence.recurrent:RNN",
        RNNParams,
        "notes 002, RNN, TYPES OF RNN, LSTM, GRU VS LSTM; notes 000, BiLSTM; notes 004, LSTM",
        "Elman (1990), Finding structure in time; Hochreiter & Schmidhuber (1997), Long short-term memory; "
        "Cho et al. (2014), Learning phrase representations using RNN encoder-decoder (GRU)",
        frozenset({"text", "series"}),
        frozenset({"binary", "multiclass", "regression", "forecasting"}),
        "models.sequence.recurrent:describe_rnn",
    )
)


class Conv1dTextParams(ArchParams):
    """``conv1d_text`` (models/sequence/conv1d.py): embedding, then strided 1D convolutions over time."""

    embedding_dim: PositiveInt = Field(64, description="token vector size")
    channels: list[PositiveInt] = Field(default_factory=lambda: [64, 64], description="filters of each conv layer")
    kernel_size: PositiveInt = Field(5, description="time steps each filter sees")
    stride: PositiveInt = Field(2, description="time steps between filter positions (downsampling)")
    pooling: Literal["max", "mean"] = Field("max", description="global pooling over the remaining time steps")


register(
    Architecture(
        "conv1d_text",
        "models.sequence.conv1d:Conv1dText",
        Conv1dTextParams,
        "notes 002, 1D CONVOLUTION",
        "Kim (2014), Convolutional neural networks for sentence classification",
        frozenset({"text"}),
        frozenset({"binary", "multiclass", "regression"}),
    )
)


class CharRNNParams(ArchParams):
    """``char_rnn`` (models/sequence/language_model.py): a recurrent language model over characters."""

    cell: Cell = Field("lstm", description="rnn (Elman, tanh), lstm or gru")
    embedding_dim: PositiveInt = Field(64, description="symbol vector size")
    hidden_size: PositiveInt = Field(256, description="state size per layer")
    num_layers: PositiveInt = Field(2, description="stacked recurrent layers (dropout between them)")


register(
    Architecture(
        "char_rnn",
        "models.sequence.language_model:CharRNN",
        CharRNNParams,
        "notes 002, TYPES OF RNN (one to many), BACK-PROPAGATION THRU TIME",
        "Karpathy (2015), The unreasonable effectiveness of recurrent neural networks (char-rnn); "
        "Graves (2013), Generating sequences with recurrent neural networks",
        frozenset({"chars"}),
        frozenset({"language_model"}),
        "models.sequence.language_model:describe_char_rnn",
    )
)
