"""What every encoder-decoder shares: the step interface, teacher forcing, and decoding (greedy and beam search).

Layout (the translation preparer's, :mod:`pipelines.data.preparers.translation`): sources ``(N, S)`` int64 token ids
LEFT-padded with :data:`PAD_ID`; targets ``(N, T)`` as ``[BOS] w1 ... wn [EOS]`` right-padded with :data:`PAD_ID`.
Training feeds the decoder the target's previous tokens ``y[:, :-1]`` (teacher forcing, Williams & Zipser 1989) and
scores its logits against ``y[:, 1:]``; at inference the decoder reads its own previous output.

A network of the family implements two methods, and everything else is here:

- ``encode(src) -> state``: a dict of tensors, each with the batch on dim 0 (so beam search can reorder it);
- ``step(state, token) -> (logits, state, attention)``: the previous token ``(N,)`` -> next-token logits ``(N, V)``,
  the new state, and the attention weights over the source ``(N, S)`` (``None`` for a network without them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.registry import NetworkSpec

#: The target's special ids, as the translation preparer writes them.
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

State = dict[str, Tensor]


def reorder(state: State, index: Tensor) -> State:
    """``state`` with its batch rows picked by ``index`` ``(M,)`` int64 (a beam's parents, or a batch repeated)."""
    return {key: value.index_select(0, index) for key, value in state.items()}


@dataclass
class Decoded:
    """Decoded targets: ``tokens`` ``(N, max_len)`` int64, each row ending with :data:`EOS_ID` then
    :data:`PAD_ID` (or cut at ``max_len``); ``attention`` ``(N, max_len, S)`` over the source, or ``None``."""

    tokens: Tensor
    attention: Tensor | None = None


class EncoderDecoder(nn.Module):
    """Base of the family's networks: teacher-forced training and greedy decoding from ``encode`` and ``step``.

    ``spec.vocab_size`` is the source vocabulary, ``spec.num_outputs`` the target's; ``spec.input_shape`` is
    ``(S,)``, and decoding stops after ``S - 1`` tokens (the targets have the sources' length, their ``[BOS]``
    included).

    ``forward(src, tgt_in)``: ``(N, S)`` and ``(N, T)`` -> teacher-forced logits ``(N, T, V)``; ``forward(src)``:
    greedy decoding, ``(N, S - 1)`` token ids (what a served model returns).
    """

    def __init__(self, spec: NetworkSpec) -> None:
        super().__init__()
        if spec.vocab_size is None:
            raise ValueError("an encoder-decoder reads token ids: the dataset must give a vocab_size")
        self.source_vocab_size = spec.vocab_size
        self.target_vocab_size = spec.num_outputs
        self.max_decode_len = spec.input_shape[0] - 1

    def encode(self, src: Tensor) -> State:
        raise NotImplementedError

    def step(self, state: State, token: Tensor) -> tuple[Tensor, State, Tensor | None]:
        raise NotImplementedError

    def teacher_forced(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Logits ``(N, T, V)`` of each next token given the true previous ones: ``step`` over ``tgt_in``'s
        columns. A network that can run the whole target at once overrides it (same result, checked by the tests)."""
        state = self.encode(src)
        logits = []
        for t in range(tgt_in.shape[1]):
            out, state, _ = self.step(state, tgt_in[:, t])
            logits.append(out)
        return torch.stack(logits, dim=1)

    def forward(self, src: Tensor, tgt_in: Tensor | None = None) -> Tensor:
        if tgt_in is None:
            return greedy_decode(self, src, self.max_decode_len).tokens
        return self.teacher_forced(src, tgt_in)


def greedy_decode(network: EncoderDecoder, src: Tensor, max_len: int) -> Decoded:
    """The most likely next token at every step, from ``[BOS]`` until ``[EOS]`` or ``max_len`` tokens.

    Shapes: ``src`` ``(N, S)`` -> :class:`Decoded` with ``tokens`` ``(N, max_len)``.
    """
    state = network.encode(src)
    n = src.shape[0]
    token = torch.full((n,), BOS_ID, dtype=torch.long, device=src.device)
    done = torch.zeros(n, dtype=torch.bool, device=src.device)
    tokens = torch.full((n, max_len), PAD_ID, dtype=torch.long, device=src.device)
    weights: list[Tensor] = []
    for t in range(max_len):
        logits, state, attention = network.step(state, token)
        token = torch.where(done, PAD_ID, logits.argmax(dim=-1))
        tokens[:, t] = token
        if attention is not None:
            weights.append(attention)
        done |= token == EOS_ID
        if bool(done.all()):
            break
    attention = None
    if weights:
        attention = torch.zeros(n, max_len, src.shape[1], device=src.device)
        attention[:, : len(weights)] = torch.stack(weights, dim=1)
    return Decoded(tokens, attention)


def beam_search(
    network: EncoderDecoder, src: Tensor, beam_size: int, max_len: int, length_penalty: float = 1.0
) -> Tensor:
    """Beam search: the ``beam_size`` best partial targets by summed log-probability at every step; a finished
    beam (it emitted ``[EOS]``) keeps its score. The winner maximises ``log p / length ** length_penalty`` (length
    counts ``[EOS]``; 0 ranks by the raw sum, which favours short outputs; 1 by the mean log-probability).

    ``beam_size`` 1 is greedy decoding. Shapes: ``src`` ``(N, S)`` -> ``(N, max_len)`` int64 tokens, each row ending
    with ``[EOS]`` then ``[PAD]`` (or cut at ``max_len``).

    Raises:
        ValueError: ``beam_size`` below 1.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    n, device = src.shape[0], src.device
    rows = n * beam_size
    state = reorder(network.encode(src), torch.arange(n, device=device).repeat_interleave(beam_size))
    scores = torch.full((n, beam_size), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live beam at the start: the others would duplicate it
    tokens = torch.full((rows, 0), PAD_ID, dtype=torch.long, device=device)
    last = torch.full((rows,), BOS_ID, dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    lengths = torch.zeros(rows, device=device)
    for _ in range(max_len):
        logits, state, _ = network.step(state, last)
        logp = logits.float().log_softmax(dim=-1)
        vocab = logp.shape[-1]
        logp[finished] = float("-inf")
        logp[finished, PAD_ID] = 0.0  # a finished beam continues with padding, at no cost
        candidates = (scores.reshape(rows, 1) + logp).reshape(n, beam_size * vocab)
        scores, best = candidates.topk(beam_size, dim=1)
        parent = (torch.arange(n, device=device).unsqueeze(1) * beam_size + best // vocab).reshape(rows)
        last = (best % vocab).reshape(rows)
        state = reorder(state, parent)
        tokens = torch.cat([tokens[parent], last.unsqueeze(1)], dim=1)
        lengths = lengths[parent] + (~finished[parent]).float()
        finished = finished[parent] | (last == EOS_ID)
        if bool(finished.all()):
            break
    final = scores.reshape(rows) / lengths.clamp(min=1.0) ** length_penalty
    winner = torch.arange(n, device=device) * beam_size + final.reshape(n, beam_size).argmax(dim=1)
    out = torch.full((n, max_len), PAD_ID, dtype=torch.long, device=device)
    out[:, : tokens.shape[1]] = tokens[winner]
    return out
