"""Params models and registry entries of the encoder-decoder family (torch-free: pydantic and
:mod:`models.registry` only).

notes 000 "Seq to Seq" (① Encoder-Decoder (BLEU Score) ② Attention ③ Transformer), notes 002 "Seq-to-Vector
followed by vector-to-seq encoder decoder", notes 003 "Attention Mechanisms", notes 004 "Transformers". Every
network reads a source and writes a target of token ids (:mod:`models.seq2seq.core`):

- ``seq2seq_rnn`` (models/seq2seq/rnn.py): the source into one vector, unrolled into the target;
- ``seq2seq_attention`` (models/seq2seq/rnn.py): the same with Bahdanau's additive attention over the encoder states;
- ``transformer_seq2seq`` (models/seq2seq/transformer.py): the encoder-decoder Transformer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from models.registry import Architecture, ArchParams, register

_TASKS = frozenset({"seq2seq"})
_MODALITIES = frozenset({"text_pair"})


class Seq2SeqRNNParams(ArchParams):
    """``seq2seq_rnn``: the recurrent encoder's and decoder's sizes."""

    cell: Literal["gru", "lstm"] = Field("gru", description="the recurrent cell of the encoder and the decoder")
    embedding_dim: PositiveInt = Field(128, description="token vector size, each side")
    hidden_size: PositiveInt = Field(256, description="state size per layer (and direction, in the encoder)")
    num_layers: PositiveInt = Field(1, description="stacked recurrent layers, each side")
    bidirectional: bool = Field(False, description="a bidirectional encoder (a tanh bridge joins its final states)")


class Seq2SeqAttentionParams(Seq2SeqRNNParams):
    """``seq2seq_attention``: :class:`Seq2SeqRNNParams` and the additive attention's size."""

    bidirectional: bool = Field(True, description="a bidirectional encoder, as in Bahdanau et al. (2015)")
    attention_size: PositiveInt = Field(128, description="hidden size of the additive attention's scoring layer")
    input_feeding: bool = Field(
        False,
        description="Bahdanau's decoder (the context enters the cell; steps one token at a time) instead of "
        "Luong's placement (the context enters the output layer; the cell runs fused)",
    )


class TransformerSeq2SeqParams(ArchParams):
    """``transformer_seq2seq``: the encoder's and decoder's sizes (the same both sides)."""

    embedding_dim: PositiveInt = Field(128, description="d_model: token vector and residual stream size")
    num_heads: PositiveInt = Field(4, description="attention heads per block")
    num_layers: PositiveInt = Field(2, description="encoder blocks, and as many decoder blocks")
    dim_feedforward: PositiveInt = Field(256, description="hidden size of each block's feed-forward")

    @model_validator(mode="after")
    def _heads_divide_the_width(self) -> TransformerSeq2SeqParams:
        if self.embedding_dim % self.num_heads:
            raise ValueError(
                f"model.num_heads ({self.num_heads}) must divide model.embedding_dim ({self.embedding_dim})"
            )
        return self


register(
    Architecture(
        "seq2seq_rnn",
        "models.seq2seq.rnn:Seq2SeqRNN",
        Seq2SeqRNNParams,
        "notes 002, Seq-to-Vector followed by vector-to-seq encoder decoder; notes 000, Seq to Seq (Encoder-Decoder)",
        "Sutskever, Vinyals, Le (2014), Sequence to sequence learning with neural networks; Cho et al. (2014)",
        _MODALITIES,
        _TASKS,
    )
)
register(
    Architecture(
        "seq2seq_attention",
        "models.seq2seq.rnn:Seq2SeqAttention",
        Seq2SeqAttentionParams,
        "notes 003, Attention Mechanisms; notes 000, Seq to Seq (Attention)",
        "Bahdanau, Cho, Bengio (2015), Neural machine translation by jointly learning to align and translate",
        _MODALITIES,
        _TASKS,
    )
)
register(
    Architecture(
        "transformer_seq2seq",
        "models.seq2seq.transformer:TransformerSeq2Seq",
        TransformerSeq2SeqParams,
        "notes 004, Transformers; notes 000, Seq to Seq (Transformer)",
        "Vaswani et al. (2017), Attention is all you need",
        _MODALITIES,
        _TASKS,
    )
)
