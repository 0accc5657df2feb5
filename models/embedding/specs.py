"""Params models and registry entries of the word-embedding family (torch-free: pydantic and :mod:`models.registry`
only).

notes 002 "EMBEDDINGS" ("WORD2VEC": CBOW and skip-gram), notes 004 "Word Embedding" ("Bag of words", "Skip Gram"):

- ``word2vec`` (models/embedding/word2vec.py): Mikolov et al.'s word2vec, CBOW or skip-gram, trained with negative
  sampling and frequent-word subsampling.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from models.registry import Architecture, ArchParams, register


class Word2VecParams(ArchParams):
    """``word2vec``: the objective and its sampling (word2vec.c's and gensim's defaults)."""

    mode: Literal["cbow", "skipgram"] = Field(
        "skipgram",
        description="cbow: the mean of the context predicts the word; skipgram: the word predicts each context word",
    )
    embedding_dim: PositiveInt = Field(100, description="word vector size (word2vec.c's -size)")
    window: int = Field(
        5, ge=1, le=20, description="the largest context window on each side; each word draws its own from 1..window"
    )
    negatives: int = Field(
        5, ge=1, le=30, description="noise words per positive, drawn from the unigram distribution^0.75"
    )
    sample: float = Field(
        1e-3, ge=0, le=1, description="frequent-word subsampling threshold t (0: off); word2vec.c's -sample"
    )
    ns_exponent: float = Field(0.75, ge=0, le=1, description="the noise distribution is the unigram one raised to this")


register(
    Architecture(
        "word2vec",
        "models.embedding.word2vec:Word2Vec",
        Word2VecParams,
        "notes 002, EMBEDDINGS (WORD2VEC: CBOW, skip-gram); notes 004, Word Embedding (Bag of words, Skip Gram)",
        "Mikolov et al. (2013), Efficient estimation of word representations in vector space; Mikolov et al. "
        "(2013), Distributed representations of words and phrases and their compositionality",
        frozenset({"words"}),
        frozenset({"embedding"}),
    )
)
