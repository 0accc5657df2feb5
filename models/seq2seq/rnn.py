"""Recurrent encoder-decoders: ``seq2seq_rnn`` (Sutskever, Vinyals, Le 2014; Cho et al. 2014) and
``seq2seq_attention`` (Bahdanau, Cho, Bengio 2015).

notes 002 "Seq-to-Vector followed by vector-to-seq encoder decoder" ("Translating a sentence from one lang. to
another"): the encoder reads the source into one vector, its final state, and the decoder unrolls the target from
it. Notes 000 "Seq to Seq" ② Attention and notes 003 "Attention Mechanisms": instead of one vector, the decoder
looks back at every encoder state at every step, weighted by additive attention
``e_tj = v^T tanh(W_s s_{t-1} + W_h h_j)``, ``alpha_t = softmax(e_t)`` over the real source tokens,
context ``c_t = sum_j alpha_tj h_j``, fed to the cell with the previous token and to the output layer.

The encoder runs torch's fused cell over the packed real tokens (the left padding of the sources is rolled to the
right first, :func:`right_align`), so its final state is that of the last real word; its outputs are rolled back, so
the attention over them lines up with the source positions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.registry import NetworkSpec
from models.seq2seq.core import PAD_ID, EncoderDecoder, State
from models.sequence.core import make_recurrent


def right_align(tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Left-padded ``(N, S)`` tokens -> the same tokens right-padded, and each row's real length ``(N,)`` (at least
    1, so a row of padding only is one padding token)."""
    seq_len = tokens.shape[1]
    lengths = (tokens != PAD_ID).sum(dim=1).clamp(min=1)
    shift = seq_len - lengths
    index = (torch.arange(seq_len, device=tokens.device).unsqueeze(0) + shift.unsqueeze(1)) % seq_len
    return tokens.gather(1, index), lengths


class Seq2SeqRNN(EncoderDecoder):
    """``seq2seq_rnn``: a recurrent encoder to its final state, which starts a recurrent decoder (module docstring).

    A bidirectional encoder's final states (forward and backward) are joined per layer by a ``tanh`` bridge into the
    decoder's state size. Dropout (``spec.dropout``) is applied to the embeddings, between stacked layers and before
    the output layer.

    Shapes: as :class:`~models.seq2seq.core.EncoderDecoder`.

    Raises:
        ValueError: unknown ``cell``, or no ``vocab_size``.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        cell: str = "gru",
        embedding_dim: int = 128,
        hidden_size: int = 256,
        num_layers: int = 1,
        bidirectional: bool = False,
    ) -> None:
        super().__init__(spec)
        self.cell, self.num_layers, self.hidden_size = cell, num_layers, hidden_size
        self.directions = 2 if bidirectional else 1
        self.dropout = nn.Dropout(spec.dropout)
        self.source_embedding = nn.Embedding(self.source_vocab_size, embedding_dim, padding_idx=PAD_ID)
        self.encoder = make_recurrent(cell, embedding_dim, hidden_size, num_layers, bidirectional, spec.dropout)
        self.bridge = nn.Linear(self.directions * hidden_size, hidden_size) if bidirectional else None
        self.target_embedding = nn.Embedding(self.target_vocab_size, embedding_dim, padding_idx=PAD_ID)
        self.decoder = make_recurrent(
            cell, embedding_dim + self.fed_context_size, hidden_size, num_layers, dropout=spec.dropout
        )
        self.output = nn.Linear(hidden_size + self.context_size, self.target_vocab_size)

    @property
    def context_size(self) -> int:
        """The size of the attention context the output layer reads beside the state (none here)."""
        return 0

    @property
    def fed_context_size(self) -> int:
        """The size of the context the decoder cell reads beside the previous token (none here)."""
        return 0

    def _bridge(self, final: Tensor) -> Tensor:
        """``(num_layers * directions, N, H)`` -> the decoder's ``(N, num_layers, H)``."""
        n = final.shape[1]
        per_layer = final.reshape(self.num_layers, self.directions, n, self.hidden_size)
        if self.bridge is not None:
            joined = per_layer.permute(2, 0, 1, 3).reshape(n, self.num_layers, -1)
            return torch.tanh(self.bridge(joined))
        return per_layer[:, 0].transpose(0, 1)

    def encode(self, src: Tensor) -> State:
        tokens, lengths = right_align(src)
        packed = pack_padded_sequence(
            self.dropout(self.source_embedding(tokens)), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        outputs, final = self.encoder(packed)
        memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src.shape[1])
        # back to the sources' left-padded layout: memory position j is source position j (attention maps line up)
        seq_len = src.shape[1]
        shift = seq_len - lengths
        back = (torch.arange(seq_len, device=src.device).unsqueeze(0) - shift.unsqueeze(1)) % seq_len
        memory = memory.gather(1, back.unsqueeze(-1).expand(-1, -1, memory.shape[-1]))
        state: State = {"memory": memory, "memory_mask": torch.arange(seq_len, device=src.device) >= shift[:, None]}
        if isinstance(final, tuple):
            state["h"], state["c"] = self._bridge(final[0]), self._bridge(final[1])
        else:
            state["h"] = self._bridge(final)
        return state

    def _cell_state(self, state: State):
        h = state["h"].transpose(0, 1).contiguous()
        return (h, state["c"].transpose(0, 1).contiguous()) if "c" in state else h

    def _with_cell_state(self, state: State, new) -> State:
        out = dict(state)
        if isinstance(new, tuple):
            out["h"], out["c"] = new[0].transpose(0, 1), new[1].transpose(0, 1)
        else:
            out["h"] = new.transpose(0, 1)
        return out

    def step(self, state: State, token: Tensor) -> tuple[Tensor, State, Tensor | None]:
        embedded = self.dropout(self.target_embedding(token)).unsqueeze(1)
        output, new = self.decoder(embedded, self._cell_state(state))
        return self.output(self.dropout(output[:, 0])), self._with_cell_state(state, new), None

    def teacher_forced(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """The whole target through the fused decoder cell at once (the same logits as stepping)."""
        state = self.encode(src)
        outputs, _ = self.decoder(self.dropout(self.target_embedding(tgt_in)), self._cell_state(state))
        return self.output(self.dropout(outputs))


class Seq2SeqAttention(Seq2SeqRNN):
    """``seq2seq_attention``: :class:`Seq2SeqRNN` whose decoder attends over every encoder state with additive
    scoring (Bahdanau et al. 2015; module docstring). Padding gets no weight.

    Where the context goes (``input_feeding``):

    - ``True``, Bahdanau et al.'s decoder: the query is the top layer's previous state ``s_{t-1}``, and the context
      enters the cell with the previous token and the output layer with the new state. Each step needs the last
      one's state, so training steps through the target one token at a time.
    - ``False`` (the default), Luong, Pham, Manning (2015)'s placement of the same additive score: the query is the
      new state ``s_t`` and the context enters the output layer only. The cell then runs over the whole target in
      torch's fused kernel and the attention of every step is one batched product: several times faster on a CPU.

    Shapes: as :class:`~models.seq2seq.core.EncoderDecoder`; ``step`` also returns the weights ``(N, S)``.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        cell: str = "gru",
        embedding_dim: int = 128,
        hidden_size: int = 256,
        num_layers: int = 1,
        bidirectional: bool = True,
        attention_size: int = 128,
        input_feeding: bool = False,
    ) -> None:
        self._context = (2 if bidirectional else 1) * hidden_size
        self.input_feeding = input_feeding
        super().__init__(spec, cell, embedding_dim, hidden_size, num_layers, bidirectional)
        self.key = nn.Linear(self._context, attention_size, bias=False)
        self.query = nn.Linear(hidden_size, attention_size)
        self.score = nn.Linear(attention_size, 1, bias=False)

    @property
    def context_size(self) -> int:
        return self._context

    @property
    def fed_context_size(self) -> int:
        return self._context if self.input_feeding else 0

    def encode(self, src: Tensor) -> State:
        state = super().encode(src)
        state["keys"] = self.key(state["memory"])  # W_h h_j, once per source
        return state

    def attend(self, state: State, query: Tensor) -> tuple[Tensor, Tensor]:
        """Additive attention of ``query`` ``(N, T, H)`` over the memory: ``(context (N, T, C), weights (N, T, S))``,
        ``e_tj = v^T tanh(W_h h_j + W_s q_t)``, softmax over the real source tokens."""
        energy = self.score(torch.tanh(state["keys"].unsqueeze(1) + self.query(query).unsqueeze(2))).squeeze(-1)
        weights = energy.masked_fill(~state["memory_mask"].unsqueeze(1), float("-inf")).softmax(dim=-1)
        return torch.bmm(weights, state["memory"]), weights

    def step(self, state: State, token: Tensor) -> tuple[Tensor, State, Tensor | None]:
        embedded = self.dropout(self.target_embedding(token)).unsqueeze(1)
        if self.input_feeding:
            context, weights = self.attend(state, state["h"][:, -1:])
            output, new = self.decoder(torch.cat([embedded, context], dim=-1), self._cell_state(state))
        else:
            output, new = self.decoder(embedded, self._cell_state(state))
            context, weights = self.attend(state, output)
        logits = self.output(self.dropout(torch.cat([output, context], dim=-1)))[:, 0]
        return logits, self._with_cell_state(state, new), weights[:, 0]

    def teacher_forced(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """With ``input_feeding`` step by step (each step's query is the state the last one left); without, the
        whole target through the fused cell, then every step's attention at once (the same logits as stepping)."""
        if self.input_feeding:
            return EncoderDecoder.teacher_forced(self, src, tgt_in)
        state = self.encode(src)
        outputs, _ = self.decoder(self.dropout(self.target_embedding(tgt_in)), self._cell_state(state))
        context, _ = self.attend(state, outputs)
        return self.output(self.dropout(torch.cat([outputs, context], dim=-1)))
