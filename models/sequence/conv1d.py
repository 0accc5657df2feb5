"""``conv1d_text``: strided 1D convolutions over a token sequence (notes 002 "1D CONVOLUTION LAYERS TO PROCESS
SEQUENCES"; Kim 2014).

The notes: LSTMs and GRUs "have a hard time learning long-term patterns in sequences of 100 time steps or more";
"1D convolutional layers can be used to downsample a very long sequence while still retaining important info
(using strides more than 1)": a filter of size 5 with stride 2 turns a sequence of 10 elements into 3.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.factories import make_activation
from models.layers import OutputLayer
from models.registry import NetworkSpec


def conv1d_length(length: int, kernel_size: int, stride: int, layers: int = 1) -> int:
    """Sequence length after ``layers`` unpadded convolutions: ``L' = floor((L - k) / s) + 1`` each
    (notes 001 "Lenet" with P = 0; notes 002: L = 10, k = 5, s = 2 -> 3). Returns <= 0 when the sequence is
    shorter than a filter."""
    for _ in range(layers):
        length = (length - kernel_size) // stride + 1 if length >= kernel_size else 0
    return length


class Conv1dText(nn.Module):
    """Embedding -> [Conv1d(k, stride s) -> (BatchNorm1d) -> activation] per entry of ``channels`` -> global
    max / mean pooling over time -> Dropout -> output.

    - ``nn.Embedding(vocab_size, embedding_dim, padding_idx=0)``; tokens are left-padded with 0.
    - Each convolution is unpadded, so a length ``L`` becomes ``L' = floor((L - k) / s) + 1``
      (:func:`conv1d_length`); ``activation`` is built by :func:`models.factories.make_activation`,
      ``BatchNorm1d`` when ``spec.batch_norm``.
    - Global pooling over the remaining positions ignores those whose receptive field is all padding (the
      padding mask is downsampled with the same k and s, by max pooling); an all-padding row pools to 0.
    - ``Dropout(spec.dropout)`` and :class:`models.layers.OutputLayer` ``channels[-1] -> num_outputs``.

    Shapes: input ``(N, T)`` int64 token ids; after the embedding ``(N, embedding_dim, T)``, after the
    convolutions ``(N, channels[-1], T')`` with ``T' = conv1d_length(T, k, s, len(channels))``; output
    ``(N, num_outputs)``, ``(N,)`` when ``num_outputs == 1``.
    Parameters: ``vocab_size * embedding_dim + sum_l (c_{l-1} * k + 1) * c_l`` (``c_0 = embedding_dim``;
    ``+ 2 * c_l`` per layer with batch norm) ``+ (channels[-1] + 1) * num_outputs``.

    Args:
        spec: ``input_shape == (seq_len,)``, ``vocab_size`` set.
        embedding_dim: size of a token vector (the first convolution's input channels).
        channels: filters of each convolution layer.
        kernel_size: time steps each filter sees (k).
        stride: time steps between filter positions (s).
        pooling: ``max`` or ``mean``.

    Raises:
        ValueError: ``spec.vocab_size`` is None, ``input_shape`` is not ``(seq_len,)``, ``channels`` is empty,
            the sequence is too short for the convolutions (``T' < 1``), or an unknown ``pooling``/activation.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        embedding_dim: int = 64,
        channels: Sequence[int] = (64, 64),
        kernel_size: int = 5,
        stride: int = 2,
        pooling: str = "max",
    ) -> None:
        super().__init__()
        if spec.vocab_size is None:
            raise ValueError("conv1d_text needs spec.vocab_size (token inputs); got None")
        if len(spec.input_shape) != 1:
            raise ValueError(f"conv1d_text needs input_shape (seq_len,) of token ids, got {tuple(spec.input_shape)}")
        if not channels:
            raise ValueError("conv1d_text needs at least one entry in channels")
        out_length = conv1d_length(spec.input_shape[0], kernel_size, stride, len(channels))
        if out_length < 1:
            raise ValueError(
                f"conv1d_text: seq_len {spec.input_shape[0]} is too short for {len(channels)} convolutions of "
                f"kernel {kernel_size}, stride {stride} (L' = floor((L - k) / s) + 1 reaches {out_length})"
            )
        if pooling not in ("max", "mean"):
            raise ValueError(f"conv1d_text pooling must be max or mean, got {pooling!r}")
        self.kernel_size, self.stride, self.pooling = kernel_size, stride, pooling
        self.embedding = nn.Embedding(spec.vocab_size, embedding_dim, padding_idx=0)
        layers: list[nn.Module] = []
        in_channels = embedding_dim
        for out_channels in channels:
            layers.append(nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride))
            if spec.batch_norm:
                layers.append(nn.BatchNorm1d(out_channels))
            layers.append(make_activation(spec.activation))
            in_channels = out_channels
        self.num_convs = len(channels)
        self.convs = nn.Sequential(*layers)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()
        self.output = OutputLayer(in_channels, spec.num_outputs)

    def forward(self, tokens: Tensor) -> Tensor:
        features = self.convs(self.embedding(tokens).transpose(1, 2))  # (N, C, T')
        real = (tokens != 0).unsqueeze(1).to(features.dtype)  # (N, 1, T)
        for _ in range(self.num_convs):  # a position is real if its receptive field holds a real token
            real = F.max_pool1d(real, self.kernel_size, self.stride)
        mask = real > 0  # (N, 1, T')
        count = mask.sum(dim=2)  # (N, 1)
        if self.pooling == "mean":
            pooled = (features * mask).sum(dim=2) / count.clamp(min=1)
        else:
            pooled = features.masked_fill(~mask, float("-inf")).amax(dim=2)
            pooled = torch.where(count > 0, pooled, torch.zeros_like(pooled))
        return self.output(self.dropout(pooled))
