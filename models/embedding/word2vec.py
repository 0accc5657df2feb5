"""word2vec: CBOW and skip-gram with negative sampling and frequent-word subsampling (notes 002 "EMBEDDINGS":
"WORD2VEC", CBOW and skip-gram; notes 004 "Word Embedding": "Bag of words", "Skip Gram").

Mikolov, Chen, Corrado, Dean (2013), "Efficient estimation of word representations in vector space", and Mikolov,
Sutskever, Chen, Corrado, Dean (2013), "Distributed representations of words and phrases and their
compositionality"; the sampling follows the reference code, ``word2vec.c``, as gensim does:

- **Subsampling.** Each occurrence of word ``w`` with train count ``f(w)`` of ``F`` words is kept with probability
  ``min(1, (sqrt(f / (t F)) + 1) (t F) / f)`` (``t`` = ``sample``, :func:`keep_probabilities`); this is the code's
  formula, not the paper's ``1 - sqrt(t / f)``. The dropped words are removed before the windows are drawn, so a
  kept word's window reaches past them (:func:`subsample`).
- **Windows.** Every word draws its own window ``b`` uniformly from ``1..window`` (:func:`reduced_windows`): near
  words are context more often than far ones.
- **Negative sampling.** ``negatives`` noise words per positive, drawn from the unigram distribution raised to
  ``ns_exponent`` = 3/4 (:class:`NoiseSampler`); a noise word equal to the positive one is not scored.
- **Objective.** Skip-gram scores each (word, context word) pair: ``log s(u_c . v_w) + sum_k log s(-u_k . v_w)``
  with ``v`` the input (word) vectors and ``u`` the output vectors; CBOW scores each word against the mean of its
  context's input vectors (gensim's ``cbow_mean=1``). As in ``word2vec.c``, each context vector then receives the
  whole gradient of that mean, not ``1 / |context|`` of it.
- **Initialisation.** Input vectors ``U(-0.5 / d, 0.5 / d)``, output vectors zero (``word2vec.c``).

The network's ``forward`` is what an embedding model serves: token ids ``(N, T)`` -> their word vectors ``(N, T, d)``
(padding, id :data:`PAD_ID`, is the zero vector). The training objective is :meth:`Word2Vec.objective`; the task
(:mod:`pipelines.tasks.embedding`) turns its scores into the loss and sets the word counts the sampling reads
(:meth:`Word2Vec.use_counts`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.registry import NetworkSpec

#: The padding id: never a word, never sampled, its vector is zero.
PAD_ID = 0


def keep_probabilities(counts: torch.Tensor, sample: float) -> torch.Tensor:
    """word2vec.c's subsampling: the probability ``(V,)`` that an occurrence of each word is kept.

    ``min(1, (sqrt(f / (t F)) + 1) (t F) / f)`` for a word of count ``f`` among ``F = counts.sum()`` words and
    threshold ``t = sample``; every word is kept when ``sample`` is 0. :data:`PAD_ID` is never kept.
    """
    counts = counts.double()
    if sample <= 0:
        keep = torch.ones_like(counts)
    else:
        threshold = sample * counts.sum()
        keep = ((counts / threshold).sqrt() + 1) * threshold / counts.clamp(min=1)
    keep = keep.clamp(max=1.0)
    keep[PAD_ID] = 0.0
    return keep.float()


class NoiseSampler:
    """Draws noise words from the unigram distribution raised to ``exponent`` (3/4 in word2vec), exactly: an inverse
    CDF searched with ``torch.searchsorted`` (word2vec.c's 100M-entry table quantises the same distribution).

    Args:
        counts: ``(V,)`` train counts of the words; :data:`PAD_ID`'s is ignored (never drawn).
        exponent: the power of the counts.

    Raises:
        ValueError: no word has a positive count.
    """

    def __init__(self, counts: torch.Tensor, exponent: float = 0.75) -> None:
        weights = counts.double().clamp(min=0) ** exponent
        weights[PAD_ID] = 0.0
        if weights.sum() <= 0:
            raise ValueError("NoiseSampler: no word has a positive count")
        self.probabilities = (weights / weights.sum()).float()
        cdf = (weights / weights.sum()).cumsum(0)
        cdf[-1] = 1.0
        self.cdf = cdf.float()

    def to(self, device: torch.device | str) -> NoiseSampler:
        """The sampler with its distribution on ``device`` (in place); returns ``self``."""
        self.probabilities, self.cdf = self.probabilities.to(device), self.cdf.to(device)
        return self

    def sample(self, shape: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise word ids (int64) of ``shape``, i.i.d. from :attr:`probabilities`, on the sampler's device."""
        uniform = torch.rand(tuple(shape), generator=generator, device=self.cdf.device)
        ids = torch.searchsorted(self.cdf, uniform.flatten(), right=True).view(tuple(shape))
        return ids.clamp_(max=len(self.cdf) - 1)


def subsample(
    tokens: torch.Tensor, keep: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop each word of ``tokens`` ``(B, T)`` with probability ``1 - keep[word]`` and close the gaps.

    Returns ``(kept (B, T), valid (B, T) bool)``: each row's kept words, in order, at its start, then
    :data:`PAD_ID`; ``valid`` marks the kept positions. Padding is always dropped.
    """
    kept = (tokens != PAD_ID) & (torch.rand(tokens.shape, generator=generator, device=tokens.device) < keep[tokens])
    order = torch.argsort((~kept).to(torch.int8), dim=1, stable=True)
    valid = kept.gather(1, order)
    return tokens.gather(1, order).masked_fill(~valid, PAD_ID), valid


def reduced_windows(shape: Sequence[int], window: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each word's own window ``(B, T)``, uniform on ``1..window`` (word2vec.c's ``b = rand % window``)."""
    return torch.randint(1, window + 1, tuple(shape), generator=generator)


def skipgram_pairs(
    tokens: torch.Tensor, valid: torch.Tensor, windows: torch.Tensor, window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (word, context word) pairs of skip-gram: ``(words (P,), contexts (P,))``.

    Word ``t`` of a row pairs with each valid word ``t ± o`` for ``1 <= o <= windows[t]``; ``tokens``, ``valid`` and
    ``windows`` are ``(B, T)`` (:func:`subsample`, :func:`reduced_windows`).
    """
    words, contexts = [], []
    for o in range(1, window + 1):
        both = valid[:, :-o] & valid[:, o:]
        right = both & (windows[:, :-o] >= o)  # word t, context t + o
        left = both & (windows[:, o:] >= o)  # word t + o, context t
        words += [tokens[:, :-o][right], tokens[:, o:][left]]
        contexts += [tokens[:, o:][right], tokens[:, :-o][left]]
    return torch.cat(words), torch.cat(contexts)


def cbow_contexts(
    vectors: torch.Tensor, valid: torch.Tensor, windows: torch.Tensor, window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """CBOW's context of every word: ``(sums (B, T, d), counts (B, T))``, the sum of the input vectors of the valid
    words ``t ± o`` for ``1 <= o <= windows[t]`` and how many there are. ``vectors`` is ``(B, T, d)``."""
    sums = torch.zeros_like(vectors)
    counts = torch.zeros(valid.shape, dtype=vectors.dtype, device=vectors.device)
    for o in range(1, window + 1):
        both = valid[:, :-o] & valid[:, o:]
        right = (both & (windows[:, :-o] >= o)).to(vectors.dtype)  # word t reads t + o
        left = (both & (windows[:, o:] >= o)).to(vectors.dtype)  # word t + o reads t
        sums = sums + nn.functional.pad(vectors[:, o:] * right[..., None], (0, 0, 0, o))
        sums = sums + nn.functional.pad(vectors[:, :-o] * left[..., None], (0, 0, o, 0))
        counts = counts + nn.functional.pad(right, (0, o)) + nn.functional.pad(left, (o, 0))
    return sums, counts


class Word2Vec(nn.Module):
    """word2vec (module docstring): ``mode`` ``"skipgram"`` or ``"cbow"``, trained by negative sampling.

    Args:
        spec: ``spec.vocab_size`` words (id :data:`PAD_ID` is padding); ``spec.input_shape`` is ``(T,)``, words per
            chunk of text.
        mode, embedding_dim, window, negatives, sample, ns_exponent: :class:`models.embedding.specs.Word2VecParams`.

    Shapes: ``forward`` ``(N, T)`` int64 -> ``(N, T, embedding_dim)``; :meth:`objective` ``(B, T)`` -> scores
    ``(P, 1 + negatives)``.

    Raises:
        ValueError: ``spec.vocab_size`` is missing (word2vec reads token ids).
    """

    def __init__(
        self,
        spec: NetworkSpec,
        mode: str = "skipgram",
        embedding_dim: int = 100,
        window: int = 5,
        negatives: int = 5,
        sample: float = 1e-3,
        ns_exponent: float = 0.75,
    ) -> None:
        super().__init__()
        if not spec.vocab_size:
            raise ValueError("word2vec reads token ids: the dataset gives no vocab_size")
        self.mode, self.window, self.negatives = mode, window, negatives
        self.sample, self.ns_exponent = sample, ns_exponent
        self.input_vectors = nn.Embedding(spec.vocab_size, embedding_dim)
        self.output_vectors = nn.Embedding(spec.vocab_size, embedding_dim)
        with torch.no_grad():
            self.input_vectors.weight.uniform_(-0.5 / embedding_dim, 0.5 / embedding_dim)
            self.input_vectors.weight[PAD_ID] = 0.0
            self.output_vectors.weight.zero_()
        self.keep: torch.Tensor
        self.register_buffer("keep", torch.zeros(spec.vocab_size), persistent=False)
        self.noise: NoiseSampler | None = None

    def use_counts(self, counts: Sequence[int] | torch.Tensor) -> Word2Vec:
        """Set the train counts ``(V,)`` the subsampling and the noise distribution read; returns ``self``.

        Raises:
            ValueError: ``counts`` does not have one entry per word of the vocabulary.
        """
        counts = torch.as_tensor(counts, dtype=torch.float64)
        if counts.shape != (self.input_vectors.num_embeddings,):
            raise ValueError(
                f"word2vec: {tuple(counts.shape)} counts for a vocabulary of {self.input_vectors.num_embeddings} words"
            )
        self.keep = keep_probabilities(counts, self.sample).to(self.keep.device)
        self.noise = NoiseSampler(counts, self.ns_exponent)
        return self

    @property
    def vectors(self) -> torch.Tensor:
        """The word vectors ``(V, d)``: the input embedding, what word2vec publishes."""
        return self.input_vectors.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.input_vectors(tokens) * (tokens != PAD_ID).unsqueeze(-1)

    def objective(self, tokens: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The negative-sampling scores of one batch of text ``(B, T)``: ``(P, 1 + negatives)`` logits, column 0
        the positive (a context word in skip-gram, the word itself in CBOW) and the rest the noise words; a noise
        word equal to its positive scores ``-inf`` (no loss, no gradient). Subsampling, windows and noise are
        drawn from ``generator`` (default: torch's global RNG).

        Raises:
            RuntimeError: the counts were never set (:meth:`use_counts`).
        """
        if self.noise is None:
            raise RuntimeError("word2vec: no word counts; call use_counts (the embedding task does)")
        if self.noise.cdf.device != tokens.device:
            self.noise.to(tokens.device)
        kept, valid = subsample(tokens, self.keep, generator)
        windows = reduced_windows(kept.shape, self.window, generator)
        if self.mode == "skipgram":
            words, positives = skipgram_pairs(kept, valid, windows, self.window)
            hidden = self.input_vectors(words)
        else:
            sums, counts = cbow_contexts(self.input_vectors(kept), valid, windows, self.window)
            scored = valid & (counts > 0)
            total, count = sums[scored], counts[scored].unsqueeze(-1)
            # the forward value is the mean; the backward hands each context vector the mean's whole gradient
            hidden = total - total.detach() + (total / count).detach()
            positives = kept[scored]
        noise = self.noise.sample((len(positives), self.negatives), generator)
        targets = torch.cat([positives.unsqueeze(1), noise], dim=1)
        # a batched dot product; einsum's bmm of (1, d) x (d, K) blocks ran 5x slower on the CPU
        logits = torch.linalg.vecdot(hidden.unsqueeze(1), self.output_vectors(targets))
        clash = torch.zeros_like(targets, dtype=torch.bool)
        clash[:, 1:] = noise == positives.unsqueeze(1)
        return logits.masked_fill(clash, float("-inf"))
