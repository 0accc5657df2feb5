"""``char_rnn``: a character-level recurrent language model (notes 002 "TYPES OF RNN" (one-to-many: a seed -> a
generated sequence) and "BACK-PROPAGATION THRU TIME"; Karpathy's char-rnn).

The cells' equations and the parameter formula live in :mod:`models.sequence.core`.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from models.registry import NetworkSpec
from models.sequence.core import State, describe_recurrent, make_recurrent
from models.sequence.specs import CharRNNParams


class CharRNN(nn.Module):
    """Embedding -> stacked rnn | lstm | gru -> Dropout -> Linear to the vocabulary, at every time step.

    - ``nn.Embedding(vocab_size, embedding_dim)`` (no padding index: every symbol id is a real character).
    - The recurrent core (:func:`models.sequence.core.make_recurrent`, unidirectional: a language model reads only
      the past), ``num_layers`` stacked with ``Dropout(spec.dropout)`` between layers.
    - ``Dropout(spec.dropout)`` and ``Linear(hidden_size -> vocab_size)``: logits of the next symbol at each step.

    :meth:`forward` starts from a zero state (so generic code calling ``network(x)`` works);
    :meth:`step` takes and returns the state, for truncated back-propagation through time (carry the state from one
    chunk to the next, detached with :func:`models.sequence.core.detach_state`) and for sampling one symbol at a time.

    Shapes: tokens ``(N, T)`` int64 in ``[0, vocab_size)``; logits ``(N, T, vocab_size)``; state
    ``(num_layers, N, hidden_size)``, or a pair ``(h, c)`` of those for LSTM.
    Parameters: ``vocab_size * embedding_dim`` + :func:`models.sequence.core.recurrent_parameter_count`
    + ``(hidden_size + 1) * vocab_size``.

    Args:
        spec: ``input_shape == (seq_len,)``; ``vocab_size`` set and equal to ``num_outputs``.
        cell: ``rnn``, ``lstm`` or ``gru``.
        embedding_dim: size of a symbol vector.
        hidden_size: state size per layer.
        num_layers: stacked recurrent layers.

    Raises:
        ValueError: ``spec.vocab_size`` is None or differs from ``spec.num_outputs``, ``input_shape`` is not
            ``(seq_len,)``, or an unknown ``cell``.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        cell: str = "lstm",
        embedding_dim: int = 64,
        hidden_size: int = 256,
        num_layers: int = 2,
    ) -> None:
        super().__init__()
        if spec.vocab_size is None or spec.vocab_size != spec.num_outputs:
            raise ValueError(
                f"char_rnn needs spec.vocab_size == spec.num_outputs (the vocabulary size), got "
                f"vocab_size={spec.vocab_size}, num_outputs={spec.num_outputs}"
            )
        if len(spec.input_shape) != 1:
            raise ValueError(f"char_rnn needs input_shape (seq_len,) of symbol ids, got {tuple(spec.input_shape)}")
        self.vocab_size = spec.vocab_size
        self.embedding = nn.Embedding(spec.vocab_size, embedding_dim)
        self.recurrent = make_recurrent(cell, embedding_dim, hidden_size, num_layers, False, spec.dropout)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.output = nn.Linear(hidden_size, spec.vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits ``(N, T, vocab_size)`` of the next symbol after each of ``tokens`` ``(N, T)``, from a zero state."""
        return self.step(tokens)[0]

    def step(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Run ``tokens`` ``(N, T)`` from ``state`` (None: zeros); return the logits ``(N, T, vocab_size)`` and the
        state after the last step (``(num_layers, N, hidden_size)``, a pair for LSTM). Running a sequence in two
        halves, the second from the first's state, gives the same logits as running it whole."""
        outputs, state = self.recurrent(self.embedding(tokens), state)  # (N, T, H)
        return self.output(self.dropout(outputs)), state


def describe_char_rnn(spec: NetworkSpec, params: dict[str, Any]) -> dict[str, float | int]:
    """Registry ``describe_target`` of ``char_rnn``: :func:`models.sequence.core.describe_recurrent` of the
    validated ``model:`` block."""
    p = CharRNNParams.model_validate(params)
    return describe_recurrent(spec, p.cell, p.embedding_dim, p.hidden_size, p.num_layers)
