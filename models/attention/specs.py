"""Params models and registry entries of the attention family (torch-free: pydantic and :mod:`models.registry` only).

notes 000 "Seq to Seq" (① Encoder-Decoder ② Attention ③ Transformer ④ BERT), notes 003 "Attention Mechanisms",
notes 004 "Transformers" (self-attention: every position attends to every other one, in parallel, no recurrence).
The blocks every Transformer of the family shares live in :mod:`models.attention.blocks`:

- ``transformer_encoder`` (models/attention/encoder.py): token embedding plus sinusoidal positions, N encoder
  blocks, pooling over the real tokens and a head; a many-to-one text classifier (Vaswani et al. 2017's encoder).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from models.registry import Architecture, ArchParams, register


class TransformerEncoderParams(ArchParams):
    """``transformer_encoder`` (models/attention/encoder.py): the encoder stack's sizes and the pooling."""

    embedding_dim: PositiveInt = Field(64, description="d_model: token vector and residual stream size")
    num_heads: PositiveInt = Field(4, description="attention heads per block; each sees embedding_dim / num_heads")
    num_layers: PositiveInt = Field(1, description="stacked encoder blocks")
    dim_feedforward: PositiveInt = Field(128, description="hidden size of each block's position-wise feed-forward")
    pooling: Literal["mean", "max"] = Field("mean", description="summary of the outputs over the real tokens")

    @model_validator(mode="after")
    def _heads_divide_the_width(self) -> TransformerEncoderParams:
        if self.embedding_dim % self.num_heads:
            raise ValueError(
                f"model.num_heads ({self.num_heads}) must divide model.embedding_dim ({self.embedding_dim}): "
                f"each head attends in embedding_dim / num_heads dimensions"
            )
        return self


register(
    Architecture(
        "transformer_encoder",
        "models.attention.encoder:TransformerEncoderClassifier",
        TransformerEncoderParams,
        "notes 004, Transformers (self-attention); notes 003, Attention Mechanisms; notes 000, Seq to Seq (Transformer)",
        "Vaswani et al. (2017), Attention is all you need",
        frozenset({"text"}),
        frozenset({"binary", "multiclass", "regression"}),
    )
)
