"""``rnn``: one configurable many-to-one recurrent network (notes 002 "RNN", "TYPES OF RNN", "LSTM", "GRU VS LSTM";
notes 004 "LSTM"; notes 000 "BiLSTM", "GRU, BiGRU").

The cells' equations and the parameter formula live in :mod:`models.sequence.core`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from models.layers import OutputLayer
from models.registry import NetworkSpec
from models.sequence.core import describe_recurrent, make_recurrent
from models.sequence.specs import RNNParams


class RNN(nn.Module):
    """(Embedding) -> stacked, optionally bidirectional rnn | lstm | gru -> sequence summary -> Dropout -> output.

    Sequence-to-vector (notes 002 "TYPES OF RNN", many-to-one: a review -> its sentiment) and, with
    ``num_outputs = horizon``, an encoder whose summary state emits the next ``horizon`` values of a series.

    - Token inputs (``spec.vocab_size`` set): ``(N, T)`` int64 ids in ``[0, vocab_size)``, LEFT-padded with 0
      (the text preparer's layout), embedded by ``nn.Embedding(vocab_size, embedding_dim, padding_idx=0)`` (the
      padding vector stays 0). Series inputs (``spec.vocab_size`` None): a real-valued window ``(N, T)`` (one
      feature per step, read as ``(N, T, 1)``) or ``(N, T, F)``; ``embedding_dim`` is unused and every step is real.
    - The recurrent core (:func:`models.sequence.core.make_recurrent`): ``cell`` ``rnn`` (Elman,
      ``h_t = tanh(W_h h_{t-1} + W_x x_t + b)``), ``lstm`` or ``gru``; ``num_layers`` stacked with
      ``Dropout(spec.dropout)`` between layers; ``bidirectional`` adds a right-to-left pass (BiLSTM / BiGRU).
      Whole sequences run in torch's fused kernel, no Python loop over time.
    - Summary ``(N, hidden_size * num_directions)`` of the top layer's outputs ``(N, T, H * D)``:
      ``last``: the forward direction's state after the last step (real text, since padding is on the left) and,
      when bidirectional, the backward direction's state at the first non-padding token (it has then read exactly
      the real text, right to left; for series, at step 0). ``mean`` / ``max``: the mean / max of the outputs over
      the real (non-padding) steps only; an all-padding row summarises to 0.
    - ``Dropout(spec.dropout)`` and :class:`models.layers.OutputLayer` ``(H * D) -> num_outputs``.

    Shapes: input ``(N, T)`` (tokens or a univariate series) or ``(N, T, F)`` (series); output
    ``(N, num_outputs)``, ``(N,)`` when ``num_outputs == 1``.
    Parameters: ``vocab_size * embedding_dim`` (tokens only) + :func:`models.sequence.core.recurrent_parameter_count`
    + ``(H * D + 1) * num_outputs``.

    Args:
        spec: ``input_shape`` ``(T,)`` for tokens, ``(T,)`` or ``(T, F)`` for series. ``activation`` and
            ``batch_norm`` do not apply (the cells use tanh and sigmoid gates).
        cell: ``rnn``, ``lstm`` or ``gru``.
        embedding_dim: size of a token vector (tokens only).
        hidden_size: state size per layer and direction (H).
        num_layers: stacked recurrent layers.
        bidirectional: add the right-to-left direction (D = 2).
        pooling: ``last``, ``mean`` or ``max`` (see above).

    Raises:
        ValueError: ``input_shape`` of the wrong rank for the input kind, an unknown ``cell`` or ``pooling``.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        cell: str = "lstm",
        embedding_dim: int = 64,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        pooling: str = "last",
    ) -> None:
        super().__init__()
        shape = tuple(spec.input_shape)
        if spec.vocab_size is not None:
            if len(shape) != 1:
                raise ValueError(f"rnn on tokens needs input_shape (seq_len,), got {shape}")
            self.embedding: nn.Embedding | None = nn.Embedding(spec.vocab_size, embedding_dim, padding_idx=0)
            input_size = embedding_dim
        else:
            if len(shape) not in (1, 2):
                raise ValueError(f"rnn on a series needs input_shape (window,) or (window, features), got {shape}")
            self.embedding = None
            input_size = shape[1] if len(shape) == 2 else 1
        if pooling not in ("last", "mean", "max"):
            raise ValueError(f"rnn pooling must be last, mean or max, got {pooling!r}")
        self.hidden_size = hidden_size
        self.bidirectional = bidirectional
        self.pooling = pooling
        self.recurrent = make_recurrent(cell, input_size, hidden_size, num_layers, bidirectional, spec.dropout)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.output = OutputLayer(hidden_size * (2 if bidirectional else 1), spec.num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        if self.embedding is not None:
            real = x != 0  # (N, T): False on the left padding
            inputs = self.embedding(x)
        else:
            real = None  # a series window: every step is real
            inputs = x.unsqueeze(-1) if x.dim() == 2 else x
        outputs, _ = self.recurrent(inputs)  # (N, T, H * D)
        return self.output(self.dropout(self.summarise(outputs, real)))

    def summarise(self, outputs: Tensor, real: Tensor | None) -> Tensor:
        """The sequence summary ``(N, H * D)`` of the top layer's outputs ``(N, T, H * D)``; ``real`` ``(N, T)``
        marks the non-padding steps (None: all are real)."""
        h = self.hidden_size
        if self.pooling == "last":
            summary = outputs[:, -1, :h]  # forward direction after the last (real) step
            if self.bidirectional:
                rows = torch.arange(outputs.shape[0], device=outputs.device)
                first = real.int().argmax(dim=1) if real is not None else torch.zeros_like(rows)
                summary = torch.cat([summary, outputs[rows, first, h:]], dim=1)
            return summary
        if real is None:
            return outputs.mean(dim=1) if self.pooling == "mean" else outputs.amax(dim=1)
        mask = real.unsqueeze(-1)  # (N, T, 1)
        count = mask.sum(dim=1)  # (N, 1) real steps per row
        if self.pooling == "mean":
            return (outputs * mask).sum(dim=1) / count.clamp(min=1)
        pooled = outputs.masked_fill(~mask, float("-inf")).amax(dim=1)
        return torch.where(count > 0, pooled, torch.zeros_like(pooled))


def describe_rnn(spec: NetworkSpec, params: dict[str, Any]) -> dict[str, float | int]:
    """Registry ``describe_target`` of ``rnn``: :func:`models.sequence.core.describe_recurrent` of the validated
    ``model:`` block (``recurrent_params``, ``recurrent_gates``, ``embedding_params``)."""
    p = RNNParams.model_validate(params)
    return describe_recurrent(spec, p.cell, p.embedding_dim, p.hidden_size, p.num_layers, p.bidirectional)
