"""``transformer_seq2seq``: the encoder-decoder Transformer of Vaswani et al. (2017), small (notes 000 "Seq to Seq"
③ Transformer; notes 004 "Transformers").

The encoder is the attention family's (:mod:`models.attention.blocks`: token embedding with sinusoidal positions
counted from the first real token, pre-norm blocks, the source padding masked out of every attention). The decoder
stacks torch's pre-norm ``nn.TransformerDecoderLayer``: masked self-attention (the causal mask: position t sees
positions <= t only), attention over the encoder's outputs (the source padding masked), and the feed-forward, each
with its residual and layer norm. Decoding recomputes the decoder over the prefix at every step (no key/value
cache: the targets are a few tokens long).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.attention.blocks import TokenEmbedding, make_encoder, padding_mask
from models.factories import make_activation
from models.registry import NetworkSpec
from models.seq2seq.core import EncoderDecoder, State


def causal_mask(length: int, device: torch.device | None = None) -> Tensor:
    """``(length, length)`` float: 0 on and below the diagonal, ``-inf`` above (a position never sees a later one)."""
    return nn.Transformer.generate_square_subsequent_mask(length, device=device)


class TransformerSeq2Seq(EncoderDecoder):
    """Source tokens ``(N, S)`` (left-padded) and target tokens ``(N, T)`` -> next-token logits ``(N, T, V)``
    (module docstring); ``forward(src)`` decodes greedily.

    Raises:
        ValueError: ``num_heads`` does not divide ``embedding_dim``, an odd ``embedding_dim``, or no ``vocab_size``.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        embedding_dim: int = 128,
        num_heads: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 256,
    ) -> None:
        super().__init__(spec)
        max_len = spec.input_shape[0]
        self.source_embedding = TokenEmbedding(self.source_vocab_size, embedding_dim, max_len, spec.dropout)
        self.target_embedding = TokenEmbedding(self.target_vocab_size, embedding_dim, max_len, spec.dropout)
        self.encoder = make_encoder(
            embedding_dim, num_heads, num_layers, dim_feedforward, spec.dropout, spec.activation
        )
        layer = nn.TransformerDecoderLayer(
            embedding_dim,
            num_heads,
            dim_feedforward,
            dropout=spec.dropout,
            activation=make_activation(spec.activation),
            batch_first=True,
            norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, num_layers, norm=nn.LayerNorm(embedding_dim))
        self.output = nn.Linear(embedding_dim, self.target_vocab_size)

    def encode(self, src: Tensor) -> State:
        mask = padding_mask(src)
        memory = self.encoder(self.source_embedding(src), src_key_padding_mask=mask)
        return {"memory": memory, "memory_mask": mask, "prefix": src.new_zeros((src.shape[0], 0))}

    def _decode(self, state: State, prefix: Tensor) -> Tensor:
        return self.decoder(
            self.target_embedding(prefix),
            state["memory"],
            tgt_mask=causal_mask(prefix.shape[1], prefix.device),
            tgt_is_causal=True,
            memory_key_padding_mask=state["memory_mask"],
        )

    def step(self, state: State, token: Tensor) -> tuple[Tensor, State, Tensor | None]:
        prefix = torch.cat([state["prefix"], token.unsqueeze(1)], dim=1)
        logits = self.output(self._decode(state, prefix)[:, -1])
        return logits, dict(state, prefix=prefix), None

    def teacher_forced(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """The whole target at once under the causal mask (the same logits as stepping)."""
        return self.output(self._decode(self.encode(src), tgt_in))
