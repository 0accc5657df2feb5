"""Character corpora for a language model (tiny_shakespeare): one text, split into contiguous stretches and cut
into chunks of ``tbptt_steps`` characters with their next-character targets.

The layout follows char-rnn and nanoGPT's ``shakespeare_char``: the vocabulary is the sorted set of the corpus's
characters (ids 0..V-1 in that order, recorded in ``meta.vocab``), and the text is never shuffled. The first
``1 - val_fraction - test_fraction`` of the text is train, the next ``val_fraction`` val and the last
``test_fraction`` test (shares of the whole text: 0.05 and 0.05 give nanoGPT's 90/10 split, its last 10% halved
into val then test). Each stretch ``s`` becomes ``n = (len(s) - 1) // T`` chunks of ``T = tbptt_steps``::

    x[i] = s[i*T : (i+1)*T]            y[i] = s[i*T + 1 : (i+1)*T + 1]

so chunk ``i + 1`` continues chunk ``i`` and ``x.ravel()`` is the stretch itself (up to its last ``< T + 1``
characters). How chunks are batched for truncated back-propagation through time (parallel streams, state carried
across batches) is the training's concern: :mod:`pipelines.data.streams`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipelines.config import DatasetConfig
from pipelines.data.catalog import get_dataset
from pipelines.data.preparers.common import Prepared, base_meta, fetch_files
from pipelines.errors import DataError, DataFormatError


def read_text(path: Path) -> str:
    """The corpus at ``path`` as text (UTF-8).

    Raises:
        DataFormatError: the file is not UTF-8 text, or is empty (naming it).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text ({exc})") from None
    if not text:
        raise DataFormatError(f"{path}: empty; expected a text corpus")
    return text


def build_vocab(text: str) -> list[str]:
    """The sorted distinct characters of ``text``: symbol ``k`` is ``vocab[k]``."""
    return sorted(set(text))


def encode_chars(text: str, vocab: list[str]) -> np.ndarray:
    """``text`` -> int64 symbol ids ``(len(text),)`` in ``vocab``'s order.

    Raises:
        ValueError: a character of ``text`` is not in ``vocab`` (naming it, its position and the vocabulary size):
            an unseen symbol is an error, never silently mapped to another one.
    """
    index = {c: k for k, c in enumerate(vocab)}
    try:
        return np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))
    except KeyError as exc:
        char = exc.args[0]
        raise ValueError(
            f"character {char!r} (position {text.index(char)}) is not in the vocabulary of {len(vocab)} symbols"
        ) from None


def decode_chars(ids, vocab: list[str]) -> str:
    """Symbol ids (any iterable of ints) -> text."""
    return "".join(vocab[int(k)] for k in ids)


def chunk(ids: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``, each int64 ``(n, steps)`` with ``n = (len(ids) - 1) // steps``: consecutive chunks of ``ids`` and
    their targets, the same chunks shifted by one character (``y[i, t]`` is the character after ``x[i, t]``)."""
    n = (len(ids) - 1) // steps
    return ids[: n * steps].reshape(n, steps), ids[1 : n * steps + 1].reshape(n, steps)


def stretches(length: int, config: DatasetConfig) -> dict[str, tuple[int, int]]:
    """``{split: (start, end)}`` character offsets of train, val and test in a text of ``length`` characters: test
    the last ``ceil(test_fraction * length)``, val the ``ceil(val_fraction * length)`` before it, train the rest
    from the start (with ``max_train_chars``, only its first that many).

    Raises:
        DataError: a split would be too short for one chunk of ``tbptt_steps`` characters and its target.
    """
    n_test = math.ceil(config.test_fraction * length)
    n_val = math.ceil(config.val_fraction * length)
    n_train = length - n_val - n_test
    spans = {
        "train": (0, min(n_train, config.max_train_chars or n_train)),
        "val": (n_train, n_train + n_val),
        "test": (n_train + n_val, length),
    }
    short = [f"{s} ({b - a} characters)" for s, (a, b) in spans.items() if b - a < config.tbptt_steps + 1]
    if short:
        raise DataError(
            f"a text of {length} characters leaves {', '.join(short)} shorter than one chunk of tbptt_steps "
            f"{config.tbptt_steps} characters plus its target; use shorter chunks or other split fractions"
        )
    return spans


def prepare_chars(name: str, config: DatasetConfig, seed: int, *, mirror: str | Path | None = None) -> Prepared:
    """A character corpus of the catalog (one ``.txt`` file) as next-character chunks: x and y int64
    ``(n, tbptt_steps)`` per split (module docstring). ``seed`` is only recorded: nothing here is random.

    ``meta`` adds ``vocab`` (the characters, id order), ``vocab_size``, ``tbptt_steps`` (= ``seq_len``, the
    ``input_shape``), ``split_chars`` (each split's ``[start, end)`` character offsets in the file) and
    ``chars`` (characters per split, as chunked).

    Raises:
        DataNotFoundError, DataIntegrityError: from :func:`~pipelines.data.fetch.fetch`.
        DataFormatError: the file is not UTF-8 text or is empty.
        DataError: a split too short for one chunk (:func:`stretches`).
    """
    entry = get_dataset(name)
    (path,) = fetch_files(entry, mirror).values()
    text = read_text(path)
    vocab = build_vocab(text)
    ids = encode_chars(text, vocab)
    spans = stretches(len(ids), config)
    arrays = {split: chunk(ids[a:b], config.tbptt_steps) for split, (a, b) in spans.items()}
    meta = base_meta(entry, seed)
    meta.update(
        input_shape=[config.tbptt_steps],
        seq_len=config.tbptt_steps,
        tbptt_steps=config.tbptt_steps,
        vocab=vocab,
        vocab_size=len(vocab),
        split_chars={split: [a, b] for split, (a, b) in spans.items()},
        chars={split: int(x.size) for split, (x, _) in arrays.items()},
        split_method="contiguous: train first, then val, then test (never shuffled)",
        target="the next character of each input character",
    )
    return Prepared(arrays, meta, {})


def prepare_tiny_shakespeare(
    config: DatasetConfig, seed: int, *, mirror: str | Path | None = None, name: str = "tiny_shakespeare"
) -> Prepared:
    """Tiny Shakespeare (char-rnn's ``tinyshakespeare/input.txt``); see :func:`prepare_chars`."""
    return prepare_chars(name, config, seed, mirror=mirror)
