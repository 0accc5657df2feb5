"""The Transformer's building blocks, written once for every network of the attention family.

Vaswani et al. (2017), "Attention is all you need"; notes 004 "Transformers": self-attention
``softmax(Q K^T / sqrt(d_k)) V`` in ``num_heads`` heads, a position-wise feed-forward network, residual connections
and layer normalisation around both, and positions added to the token vectors (attention itself is blind to order).
The attention and feed-forward sublayers are torch's (``nn.TransformerEncoderLayer``: fused kernels, checked by
torch's own tests); what is ours is the positions, the masks and how text's left padding meets them.

Token layout: ``(N, T)`` int64 ids, LEFT-padded with id 0 (the text preparers' layout, Keras' ``padding='pre'``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from models.factories import make_activation


def real_positions(real: Tensor) -> Tensor:
    """The position of each token counted from the first real one: ``(N, T)`` bool -> ``(N, T)`` int64.

    Left padding must not shift the positions: a review's first word is at position 0 however much padding comes
    before it, so the same text gets the same encoding at every padded length. Padding steps get position 0 (they
    are masked out of attention anyway).
    """
    return (real.long().cumsum(dim=1) - 1).clamp(min=0)


def padding_mask(tokens: Tensor, pad_id: int = 0) -> Tensor:
    """The key padding mask of torch's attention: ``(N, T)`` bool, True where the key is padding (not attended to).

    A row of padding only would mask every key and make the softmax NaN; such a row keeps its last position
    attendable, so the network returns a finite output for it.
    """
    mask = tokens == pad_id
    empty = mask.all(dim=1)
    if empty.any():
        mask = mask.clone()
        mask[empty, -1] = False
    return mask


class SinusoidalPositions(nn.Module):
    """The fixed sinusoidal position encodings of Vaswani et al. (2017), section 3.5.

    ``PE[p, 2i] = sin(p / 10000^(2i / d))``, ``PE[p, 2i + 1] = cos(p / 10000^(2i / d))``: each dimension pair is a
    sinusoid of its own wavelength (2 pi to 10000 * 2 pi), so a fixed offset is a linear map of the encoding.
    No parameters; the table is a non-persistent buffer (rebuilt, not stored in checkpoints).

    Shapes: ``positions`` ``(N, T)`` int64 in ``[0, max_len)`` -> ``(N, T, dim)``.

    Raises:
        ValueError: ``dim`` is odd.
    """

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"sinusoidal positions pair sin and cos dimensions: dim must be even, got {dim}")
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)  # (max_len, 1)
        frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (dim/2,)
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency)
        self.table: Tensor
        self.register_buffer("table", table, persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        return self.table[positions]


class TokenEmbedding(nn.Module):
    """Token vectors scaled by ``sqrt(dim)`` plus sinusoidal positions counted from the first real token, then
    dropout (Vaswani et al. 2017, sections 3.4 and 5.4).

    ``nn.Embedding(vocab_size, dim, padding_idx=0)``; the scaling keeps the token vectors and the positions (entries
    in [-1, 1]) of a similar size. Shapes: ``tokens`` ``(N, T)`` int64 with ``T <= max_len`` -> ``(N, T, dim)``.
    """

    def __init__(self, vocab_size: int, dim: int, max_len: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.scale = math.sqrt(dim)
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.positions = SinusoidalPositions(dim, max_len)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, tokens: Tensor) -> Tensor:
        positions = real_positions(tokens != 0)
        return self.dropout(self.embedding(tokens) * self.scale + self.positions(positions))


def make_encoder(
    dim: int, num_heads: int, num_layers: int, dim_feedforward: int, dropout: float = 0.0, activation: str = "relu"
) -> nn.TransformerEncoder:
    """``num_layers`` Transformer encoder blocks (``batch_first``), pre-norm, with a final ``LayerNorm``.

    Each block: ``x + SelfAttention(LayerNorm(x))`` then ``x + FeedForward(LayerNorm(x))``, the feed-forward being
    ``Linear(dim, dim_feedforward) -> activation -> Dropout -> Linear(dim_feedforward, dim)``. Pre-norm (Xiong et al.
    2020) trains without the learning-rate warm-up the original post-norm block needs. The activation is built by
    :func:`models.factories.make_activation` (ReLU in the paper). Nested tensors are off: outputs at padded steps
    stay dense (and are pooled away by the caller).

    Call it as ``encoder(x, src_key_padding_mask=padding_mask(tokens))``: ``x`` ``(N, T, dim)`` -> ``(N, T, dim)``.

    Raises:
        ValueError: ``num_heads`` does not divide ``dim`` (torch's check), or an unknown activation.
    """
    layer = nn.TransformerEncoderLayer(
        dim,
        num_heads,
        dim_feedforward,
        dropout=dropout,
        activation=make_activation(activation),
        batch_first=True,
        norm_first=True,
    )
    return nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False)


class TransformerBackbone(nn.Module):
    """Tokens to one contextual vector per token: :class:`TokenEmbedding` then :func:`make_encoder`'s blocks, with
    the padding masked out of every attention (:func:`padding_mask`).

    The ``features`` module of the attention family's text networks: what transfer learning copies
    (:mod:`models.transfer`) from one of them to another, e.g. from a masked-language-model pretraining to a
    classifier, whatever their heads.

    Shapes: ``tokens`` ``(N, T)`` int64, left-padded with 0, ``T <= max_len`` -> ``(N, T, dim)``.

    Raises:
        ValueError: as :class:`SinusoidalPositions` and :func:`make_encoder`.
    """

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        dim: int,
        num_heads: int,
        num_layers: int,
        dim_feedforward: int,
        dropout: float = 0.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.embed = TokenEmbedding(vocab_size, dim, max_len, dropout)
        self.encoder = make_encoder(dim, num_heads, num_layers, dim_feedforward, dropout, activation)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.encoder(self.embed(tokens), src_key_padding_mask=padding_mask(tokens))
