"""Recurrent text classifier (notes 004 "LSTM"; notes 002 "LSTM", "GRU"; notes 000 "BiLSTM")."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.layers import OutputLayer
from models.registry import NetworkSpec


class LSTMClassifier(nn.Module):
    """Embedding -> (Bi)LSTM -> final hidden state -> Dropout -> linear output.

    Hochreiter & Schmidhuber, "Long short-term memory" (1997); notes 004 "LSTM" (cell state = long-term memory,
    hidden state = short-term memory; "the final output is the updated short-term memory"), notes 000 "BiLSTM".

    - ``nn.Embedding(spec.vocab_size, embedding_dim, padding_idx=0)``: token id 0 is padding (its vector stays 0).
    - ``nn.LSTM(embedding_dim, hidden_size, num_layers, batch_first=True, bidirectional)``, with
      ``dropout=spec.dropout`` between stacked layers when ``num_layers > 1``. The whole sequence runs in torch's
      fused kernel (no Python loop over time steps).
    - Sequence summary: sequences are left-padded with 0, so the last time step is real text. The forward
      direction's summary is its hidden state at the last step; when bidirectional, the backward direction's is its
      hidden state at the first non-padding token (it has then read exactly the real text, right to left).
      Both are concatenated: ``(N, hidden_size * num_directions)``.
    - ``Dropout(spec.dropout)`` and ``Linear(hidden_size * num_directions -> num_outputs)``.

    Shapes: input ``(N, seq_len)`` int64 token ids in ``[0, vocab_size)``; output ``(N, num_outputs)`` (``(N,)`` for
    one output: a binary logit or a regression value).
    Parameters: vocab_size * embedding_dim
    + sum over layers l and directions of 4 * hidden_size * (in_l + hidden_size + 2), in_0 = embedding_dim,
    in_l = hidden_size * num_directions for l > 0, + (hidden_size * num_directions + 1) * num_outputs.

    Args:
        spec: ``input_shape == (seq_len,)``; ``vocab_size`` required. ``activation`` and ``batch_norm`` do not
            apply (the LSTM's gates use sigmoid and tanh).
        embedding_dim: size of a token vector.
        hidden_size: LSTM state size per direction.
        num_layers: stacked LSTM layers.
        bidirectional: add a right-to-left LSTM (BiLSTM).

    Raises:
        ValueError: ``spec.vocab_size`` is None, or ``spec.input_shape`` is not ``(seq_len,)``.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        embedding_dim: int = 64,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        if spec.vocab_size is None:
            raise ValueError("LSTMClassifier needs spec.vocab_size (token inputs); got None")
        if len(spec.input_shape) != 1:
            raise ValueError(f"LSTMClassifier needs input_shape (seq_len,) of token ids, got {tuple(spec.input_shape)}")
        self.hidden_size = hidden_size
        self.bidirectional = bidirectional
        self.embedding = nn.Embedding(spec.vocab_size, embedding_dim, padding_idx=0)
        self.lstm = nn.LSTM(
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=spec.dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.output = OutputLayer(hidden_size * (2 if bidirectional else 1), spec.num_outputs)

    def forward(self, tokens: Tensor) -> Tensor:
        outputs, _ = self.lstm(self.embedding(tokens))  # (N, T, H * num_directions)
        summary = outputs[:, -1, : self.hidden_size]  # forward direction after the last (real) token
        if self.bidirectional:
            first_token = (tokens != 0).int().argmax(dim=1)  # first non-padding position (0 if none)
            rows = torch.arange(tokens.shape[0], device=tokens.device)
            summary = torch.cat([summary, outputs[rows, first_token, self.hidden_size :]], dim=1)
        return self.output(self.dropout(summary))
