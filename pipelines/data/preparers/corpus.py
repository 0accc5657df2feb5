"""Word corpora for word embeddings (``imdb_corpus``): the review texts as streams of word ids, cut into rows.

The reviews are split as the IMDB classifier's are (:mod:`pipelines.data.preparers.imdb`): ``val_fraction`` of the
official train reviews is validation, the official test reviews are test, never used to fit anything. Each review is
cleaned (``<br />`` removed) and normalised (NFD, lowercase, accents stripped) as there, then split into tokens by
``tokenizers``' ``Whitespace`` pre-tokenizer (runs of word characters, runs of punctuation). A **word** is a token
with a letter or a digit; punctuation is dropped, as in the text8 corpus word2vec is usually trained on.

The vocabulary holds the words seen at least ``min_count`` times in the train text (word2vec's ``-min-count``),
most frequent first (ties alphabetical), after the ids :data:`PAD_ID` (``[PAD]``) and ``[UNK]`` (never in the
streams: a word outside the vocabulary is dropped, as word2vec drops it). ``meta.counts`` holds each id's train
count, which the subsampling and the noise distribution of negative sampling read
(:mod:`models.embedding.word2vec`).

Each split's words, reviews one after another in a seeded order, are cut into rows of ``chunk_words`` words, the
last one right-padded with ``[PAD]``: ``x`` is int64 ``(rows, chunk_words)``; there are no labels, and ``y`` is a
zero per row. A context window never crosses a row; it may cross from one review into the next, as it crosses
sentences in text8.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from pipelines.config import DatasetConfig
from pipelines.data.catalog import get_dataset
from pipelines.data.encoding import TEXT_COLUMN, RawInput, RawInputError, _frame
from pipelines.data.preparers.common import Prepared, base_meta, carve_train_val, fetch_files, test_indices
from pipelines.data.preparers.imdb import IMDB_COLUMNS, IMDB_LABELS, clean_review, normalize_text
from pipelines.data.readers import read_csv
from pipelines.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from mlflow.types import Schema

PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
TOKENIZER_FILE = "tokenizer.json"


def is_word(token: str) -> bool:
    """Whether ``token`` is a word: it holds a letter or a digit (punctuation runs are not words)."""
    return any(c.isalnum() for c in token)


def count_words(texts: list[str], max_words: int | None = None) -> tuple[dict[str, int], int]:
    """Word counts of normalised ``texts`` (``Whitespace`` pre-tokenizer, :func:`is_word`), reading whole texts in
    order until ``max_words`` words are read (then the last text is cut there). Returns ``(counts, texts read)``."""
    from collections import Counter

    from tokenizers import pre_tokenizers

    split = pre_tokenizers.Whitespace().pre_tokenize_str
    counts: Counter[str] = Counter()
    total = 0
    for read, text in enumerate(texts, start=1):
        words = [token for token, _ in split(text) if is_word(token)]
        if max_words is not None and total + len(words) >= max_words:
            counts.update(words[: max_words - total])
            return dict(counts), read
        counts.update(words)
        total += len(words)
    return dict(counts), len(texts)


def build_vocabulary(counts: dict[str, int], min_count: int) -> list[str]:
    """``[PAD]``, ``[UNK]``, then the words of count ``>= min_count``, most frequent first (ties alphabetical).

    Raises:
        DataError: no word is that frequent (naming ``min_count`` and the most frequent count).
    """
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if not words:
        raise DataError(
            f"no word of the train text is seen min_count={min_count} times (the most frequent: "
            f"{max(counts.values(), default=0)}); lower datasets.<name>.options.min_count or use more text"
        )
    return [PAD_TOKEN, UNK_TOKEN, *words]


def word_tokenizer(vocab: list[str]):
    """A ``tokenizers`` word-level tokenizer of ``vocab`` (ids in list order) with the ``Whitespace`` pre-tokenizer;
    punctuation and unknown words encode as ``[UNK]``. It reads normalised text (:func:`normalize_text`)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token=UNK_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def encode_words(tokenizer, texts: list[str], max_words: int | None = None) -> np.ndarray:
    """The word ids of normalised ``texts``, one after another, ``[UNK]`` dropped: int64 ``(words,)``, at most
    ``max_words``."""
    import itertools

    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in tokenizer.encode_batch(texts)), dtype=np.int64)
    ids = ids[ids != UNK_ID]
    return ids[:max_words] if max_words is not None else ids


def rows_of(ids: np.ndarray, chunk_words: int) -> np.ndarray:
    """``ids`` cut into rows of ``chunk_words``, the last right-padded with :data:`PAD_ID`: int64
    ``(ceil(len / chunk_words), chunk_words)``."""
    rows = -(-len(ids) // chunk_words)
    out = np.full(rows * chunk_words, PAD_ID, dtype=np.int64)
    out[: len(ids)] = ids
    return out.reshape(rows, chunk_words)


def head(texts: list[str], index: np.ndarray, max_words: int | None) -> np.ndarray:
    """The first entries of ``index`` whose ``texts`` hold ``max_words`` words for sure: twice as many
    whitespace-separated pieces (a piece holds at most a few words, and most hold one); all of them when
    ``max_words`` is ``None``. Only these are cleaned and encoded."""
    if max_words is None:
        return index
    pieces = np.cumsum([len(texts[i].split()) for i in index])
    return index[: int(np.searchsorted(pieces, 2 * max_words)) + 1]


def prepare_imdb_corpus(
    config: DatasetConfig, seed: int, *, mirror: str | Path | None = None, name: str = "imdb_corpus"
) -> Prepared:
    """The IMDB review texts as a word corpus (module docstring): x int64 ``(rows, chunk_words)`` word ids per split,
    y int64 zeros ``(rows,)``. Options: :class:`pipelines.data.datasets.imdb.CorpusOptions`.

    ``meta`` adds ``vocab`` (the words, id order), ``vocab_size``, ``counts`` (train count per id), ``words`` (per
    split), ``reviews`` (per split), ``min_count``, ``chunk_words`` (the ``input_shape``) and the raw input of a
    served model (:class:`WordsInput`, with ``tokenizer.json``).

    Raises:
        DataNotFoundError, DataIntegrityError: from :func:`~pipelines.data.fetch.fetch`.
        DataFormatError: the CSV is malformed or a sentiment/split value is unknown (naming the line).
        DataError: no word reaches ``min_count``, or a split holds no word.
    """
    from pipelines.data.datasets.imdb import CorpusOptions
    from pipelines.data.preparers.churn import _check_values

    entry = get_dataset(name)
    options = CorpusOptions.model_validate(config.options)
    path = fetch_files(entry, mirror)["imdb_reviews.csv.gz"]
    frame = read_csv(path, IMDB_COLUMNS)
    _check_values(path, frame["sentiment"], IMDB_LABELS, "sentiment")
    _check_values(path, frame["split"], ("train", "test"), "split")
    labels = frame["sentiment"].map(IMDB_LABELS).to_numpy(dtype=np.int64)
    is_train = (frame["split"] == "train").to_numpy()
    official = {"train": np.flatnonzero(is_train), "test": np.flatnonzero(~is_train)}
    train, val = carve_train_val(labels[official["train"]], config, seed)
    test = official["test"][test_indices(labels[official["test"]], config, seed)]
    test = test[np.random.default_rng(seed).permutation(len(test))]  # a seeded order: max_eval_words reads a sample
    index = {"train": official["train"][train], "val": official["train"][val], "test": test}
    limits = {"train": options.max_train_words, "val": options.max_eval_words, "test": options.max_eval_words}
    reviews = frame["review"].tolist()
    texts = {
        split: [normalize_text(clean_review(reviews[i])) for i in head(reviews, idx, limits[split])]
        for split, idx in index.items()
    }
    counts, read = count_words(texts["train"], options.max_train_words)
    texts["train"] = texts["train"][:read]
    vocab = build_vocabulary(counts, options.min_count)
    tokenizer = word_tokenizer(vocab)
    # the train stream is exactly the counted words (a prefix of the read text) that are in the vocabulary
    limits["train"] = sum(counts[w] for w in vocab[2:])
    streams = {split: encode_words(tokenizer, texts[split], limits[split]) for split in index}
    empty = [split for split, ids in streams.items() if not len(ids)]
    if empty:
        raise DataError(f"{name}: the {', '.join(empty)} split(s) hold no word of the vocabulary; use more reviews")
    arrays = {
        split: (rows_of(ids, options.chunk_words), np.zeros(-(-len(ids) // options.chunk_words), dtype=np.int64))
        for split, ids in streams.items()
    }
    train_counts = np.bincount(streams["train"], minlength=len(vocab))
    meta = base_meta(entry, seed)
    meta.update(
        input_shape=[options.chunk_words],
        chunk_words=options.chunk_words,
        vocab=vocab,
        vocab_size=len(vocab),
        counts=train_counts.tolist(),
        min_count=options.min_count,
        pad_id=PAD_ID,
        words={split: int(len(ids)) for split, ids in streams.items()},
        reviews={"train": read, "val": len(texts["val"]), "test": len(texts["test"])},
        tokenizer=TOKENIZER_FILE,
        raw_input=WordsInput.kind,
        cleaning=["html_line_breaks"],
        normalization={
            "method": "tokenizer",
            "text": "<br /> removed; NFD, lowercase, strip accents; whitespace/punctuation split; punctuation and "
            f"words seen fewer than {options.min_count} times in the train text dropped",
        },
        split_method="reviews: val_fraction of the official train reviews, the official test reviews; each split's "
        "words in a seeded review order, cut into rows",
        target="none: the text itself (word2vec's negative-sampling objective)",
    )
    return Prepared(arrays, meta, {TOKENIZER_FILE: tokenizer.to_str().encode("utf-8")})


class WordsInput(RawInput):
    """Strings in a ``text`` column -> word ids ``(N, chunk_words)``: cleaned and normalised as the corpus was, its
    words in order (unknown words and punctuation dropped), the first ``chunk_words`` of them, right-padded with
    :data:`PAD_ID`. A served embedding model answers each text's vector (:meth:`pipelines.tasks.embedding.
    Embedding.serve`).

    ``spec``: ``chunk_words``; ``files``: ``tokenizer.json`` (the corpus's vocabulary).
    """

    #: named by the prepared dataset (``meta["raw_input"]``), not registered by name
    kind: ClassVar[str] = f"{__name__}:WordsInput"

    @classmethod
    def accepts(cls, meta: dict[str, Any]) -> bool:
        return meta.get("raw_input") == cls.kind

    @classmethod
    def from_meta(cls, meta: dict[str, Any], folder: Path) -> RawInput:
        return cls({"chunk_words": int(meta["chunk_words"])}, {TOKENIZER_FILE: folder / meta["tokenizer"]})

    def _tokenizer(self):
        from tokenizers import Tokenizer

        if "_loaded_tokenizer" not in self.__dict__:
            self.__dict__["_loaded_tokenizer"] = Tokenizer.from_file(str(self.files[TOKENIZER_FILE]))
        return self.__dict__["_loaded_tokenizer"]

    def schema(self) -> Schema:
        from mlflow.types import ColSpec, Schema

        return Schema([ColSpec("string", TEXT_COLUMN)])

    def encode(self, raw: Any) -> np.ndarray:
        """A DataFrame with a ``text`` column -> int64 ``(N, chunk_words)``.

        Raises:
            RawInputError: the column is missing, or a text holds no word of the vocabulary (naming the row).
        """
        frame = _frame(raw, [TEXT_COLUMN])
        length, tokenizer = self.spec["chunk_words"], self._tokenizer()
        rows = []
        for row, text in enumerate(str(t) for t in frame[TEXT_COLUMN].tolist()):
            ids = encode_words(tokenizer, [normalize_text(clean_review(text))], length)
            if not len(ids):
                raise RawInputError(
                    f"raw input: column {TEXT_COLUMN!r} row {row} holds no word of the vocabulary: {text[:60]!r}"
                )
            rows.append(rows_of(ids, length)[0])
        return np.stack(rows) if rows else np.empty((0, length), dtype=np.int64)

    def example(self, x: np.ndarray) -> pd.DataFrame:
        """Word ids back to text (the first 20 words of each row)."""
        import pandas as pd

        vocab = self._tokenizer().get_vocab()
        words = {i: w for w, i in vocab.items()}
        return pd.DataFrame(
            {TEXT_COLUMN: [" ".join(words[int(i)] for i in row[:20] if int(i) != PAD_ID) for row in np.asarray(x)]}
        )
