"""``transformer_encoder``: a Transformer encoder classifier for text (notes 004 "Transformers"; Vaswani et al.
2017's encoder; keras-io's "Text classification with Transformer" is the one-block version of it)."""

from __future__ import annotations

from torch import Tensor, nn

from models.attention.blocks import TransformerBackbone
from models.layers import OutputLayer
from models.pooling import POOLINGS, pool_over_time
from models.registry import NetworkSpec


class TransformerEncoderClassifier(nn.Module):
    """Token embedding + positions -> ``num_layers`` encoder blocks -> pooling over the real tokens -> Dropout ->
    output. ``features`` is the :class:`models.attention.blocks.TransformerBackbone` (the embedding and the blocks,
    what transfer learning copies), ``classifier`` the ``Dropout -> output`` head after the pooling.

    - :class:`models.attention.blocks.TokenEmbedding`: ``sqrt(d)``-scaled token vectors plus sinusoidal positions
      counted from the first real token (left padding does not shift them), dropout ``spec.dropout``.
    - :func:`models.attention.blocks.make_encoder`: pre-norm blocks of ``num_heads``-head self-attention and a
      ``dim_feedforward`` feed-forward with ``spec.activation``; padding is masked out of every attention
      (:func:`models.attention.blocks.padding_mask`), so no real token's output depends on the padding.
    - :func:`models.pooling.pool_over_time` (``mean`` or ``max``) over the real tokens, ``Dropout(spec.dropout)``
      and :class:`models.layers.OutputLayer` ``d -> num_outputs``.

    Shapes: input ``(N, T)`` int64 token ids, left-padded with 0, ``T <= seq_len``; output ``(N, num_outputs)``,
    ``(N,)`` when ``num_outputs == 1``.
    Parameters: ``vocab_size * d`` + per block ``4 * (d * d + d)`` (Q, K, V and output projections)
    ``+ 2 * d * f + f + d`` (feed-forward) ``+ 4 * d`` (two layer norms), ``+ 2 * d`` (final norm)
    ``+ (d + 1) * num_outputs``, with ``d = embedding_dim``, ``f = dim_feedforward``.

    Args:
        spec: ``input_shape == (seq_len,)``, ``vocab_size`` set. ``batch_norm`` does not apply (layer norm).
        embedding_dim: d, the token vector and residual stream size (even: sin/cos position pairs).
        num_heads: attention heads; must divide ``embedding_dim``.
        num_layers: encoder blocks.
        dim_feedforward: f, the feed-forward's hidden size.
        pooling: ``mean`` or ``max``.

    Raises:
        ValueError: ``spec.vocab_size`` is None, ``input_shape`` is not ``(seq_len,)``, ``embedding_dim`` is odd or
            not divisible by ``num_heads``, or an unknown ``pooling`` or activation.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        embedding_dim: int = 64,
        num_heads: int = 4,
        num_layers: int = 1,
        dim_feedforward: int = 128,
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        if spec.vocab_size is None:
            raise ValueError("transformer_encoder needs spec.vocab_size (token inputs); got None")
        if len(spec.input_shape) != 1:
            raise ValueError(
                f"transformer_encoder needs input_shape (seq_len,) of token ids, got {tuple(spec.input_shape)}"
            )
        if embedding_dim % num_heads:
            raise ValueError(f"transformer_encoder: num_heads {num_heads} must divide embedding_dim {embedding_dim}")
        if pooling not in POOLINGS:
            raise ValueError(f"transformer_encoder pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.pooling = pooling
        self.features = TransformerBackbone(
            spec.vocab_size,
            spec.input_shape[0],
            embedding_dim,
            num_heads,
            num_layers,
            dim_feedforward,
            spec.dropout,
            spec.activation,
        )
        self.classifier = nn.Sequential(
            nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity(),
            OutputLayer(embedding_dim, spec.num_outputs),
        )

    def forward(self, tokens: Tensor) -> Tensor:
        outputs = self.features(tokens)  # (N, T, d)
        return self.classifier(pool_over_time(outputs, tokens != 0, self.pooling))
