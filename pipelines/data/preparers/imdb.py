"""IMDB reviews: cleaned, tokenised with a WordLevel tokenizer fitted on train, cut to the last ``seq_len`` ids."""

from __future__ import annotations

import itertools
import logging
import re
import unicodedata
from pathlib import Path

import numpy as np

from pipelines.config import DatasetConfig
from pipelines.data.catalog import get_dataset
from pipelines.data.preparers.churn import (
    _check_values,
)
from pipelines.data.preparers.common import (
    Prepared,
    base_meta,
    carve_train_val,
    fetch_files,
    test_indices,
)
from pipelines.data.readers import read_csv
from pipelines.errors import DataError

log = logging.getLogger(__name__)

IMDB_COLUMNS = ("review", "sentiment", "split")
IMDB_LABELS = {"negative": 0, "positive": 1}
PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"
PAD_ID = 0
_BR_TAG = re.compile(r"<br\s*/?>", re.IGNORECASE)


def clean_review(text: str) -> str:
    """Replace the HTML line breaks (``<br />``) the IMDB reviews contain with a space."""
    return _BR_TAG.sub(" ", text)


def normalize_text(text: str) -> str:
    """NFD, lowercase (per character), strip combining marks: exactly the tokenizer's normalizer, in Python.

    ``tokenizers`` tracks character alignments through its normalizers, which makes them the slowest part of
    encoding; doing the same in Python (ASCII text only needs ``lower``) and encoding with a normalizer-free copy is
    several times faster and gives the same ids, since the normalizer is idempotent.
    """
    if text.isascii():
        return text.lower()
    decomposed = "".join(c.lower() for c in unicodedata.normalize("NFD", text))
    return "".join(c for c in decomposed if not unicodedata.category(c).startswith("M"))


def build_tokenizer(texts: list[str], vocab_size: int, seq_len: int):
    """Fit a word-level ``tokenizers`` tokenizer on ``texts`` (the train split only; raw, cleaned reviews).

    Normalizer: NFD, lowercase, strip accents. Pre-tokenizer: ``Whitespace`` (runs of word characters, runs of
    punctuation). Vocabulary: the ``vocab_size`` most frequent tokens, special tokens ``[PAD]`` (id 0) and
    ``[UNK]`` (id 1) included. The returned tokenizer pads and truncates to ``seq_len`` on the left (Keras
    ``pad_sequences`` defaults ``padding='pre'``, ``truncating='pre'``: the last ``seq_len`` tokens are kept) and
    serialises with those settings, so ``tokenizer.json`` alone reproduces the encoding.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, special_tokens=[PAD_TOKEN, UNK_TOKEN], show_progress=False
    )
    tokenizer.train_from_iterator((normalize_text(text) for text in texts), trainer=trainer, length=len(texts))
    if tokenizer.token_to_id(PAD_TOKEN) != PAD_ID:
        raise DataError(f"tokenizer: {PAD_TOKEN} got id {tokenizer.token_to_id(PAD_TOKEN)}, expected {PAD_ID}")
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()]
    )
    tokenizer.enable_truncation(max_length=seq_len, direction="left")
    tokenizer.enable_padding(direction="left", pad_id=PAD_ID, pad_token=PAD_TOKEN, length=seq_len)
    return tokenizer


def _tail_words(text: str, n: int) -> str:
    """The part of ``text`` after its ``n``-th last ASCII space (``text`` itself when it has fewer spaces)."""
    parts = text.rsplit(" ", n)
    return text if len(parts) <= n else text[len(parts[0]) + 1 :]


def encode_texts(tokenizer, texts: list[str]) -> np.ndarray:
    """Encode raw texts with a fixed-length tokenizer from :func:`build_tokenizer`: int64 (len(texts), seq_len).

    Gives the same ids as ``tokenizer.encode_batch(texts)``, faster:

    - normalisation runs in Python (:func:`normalize_text`) and a normalizer-free copy of the tokenizer encodes;
    - only the tail of a long text is encoded. A space always ends a token (the pre-tokenizer never puts whitespace
      in a token), so the tokens after a space do not depend on what comes before it; the text after its
      ``seq_len``-th last space therefore ends with the same tokens as the whole text. If that tail yields fewer than
      ``seq_len`` tokens (runs of spaces), the whole text is encoded instead.
    """
    from tokenizers import Tokenizer

    seq_len = tokenizer.truncation["max_length"]
    fast = Tokenizer.from_str(tokenizer.to_str())
    fast.normalizer = None

    def encode(batch: list[str]) -> np.ndarray:
        ids = itertools.chain.from_iterable(enc.ids for enc in fast.encode_batch(batch))
        return np.fromiter(ids, dtype=np.int64, count=len(batch) * seq_len).reshape(len(batch), seq_len)

    normalized = [normalize_text(text) for text in texts]
    tails = [_tail_words(text, seq_len) for text in normalized]
    out = encode(tails)
    cut = np.fromiter((tail is not text for tail, text in zip(tails, normalized)), dtype=bool, count=len(texts))
    redo = np.flatnonzero(cut & (out[:, 0] == PAD_ID))
    if len(redo):
        out[redo] = encode([normalized[i] for i in redo])
    return out


def tokenized_meta(tokenizer, seq_len: int, cleaning: str = "", steps: tuple[str, ...] = ()) -> dict:
    """The ``meta.json`` fields of texts encoded by :func:`build_tokenizer`'s ``tokenizer`` (IMDB and ``text_csv``
    sources alike); ``cleaning`` describes what was removed before tokenising, ``steps`` names those cleaning steps
    (:data:`pipelines.data.encoding.TEXT_CLEANING`), so a served model cleans raw text the same way."""
    return {
        "cleaning": list(steps),
        "input_shape": [seq_len],
        "vocab_size": tokenizer.get_vocab_size(),
        "seq_len": seq_len,
        "pad_id": PAD_ID,
        "unk_id": tokenizer.token_to_id(UNK_TOKEN),
        "padding": "pre",
        "truncating": "pre",
        "tokenizer": "tokenizer.json",
        "normalization": {
            "method": "tokenizer",
            "text": f"{cleaning}NFD, lowercase, strip accents; whitespace/punctuation split; word-level vocab "
            "fitted on train",
        },
    }


def prepare_imdb(config: DatasetConfig, seed: int, *, mirror: str | Path | None = None, name: str = "imdb") -> Prepared:
    """IMDB reviews: x int64 (N, seq_len) token ids, y int64 (0 negative, 1 positive).

    The official 25,000/25,000 train/test split is kept; ``val_fraction`` of train (stratified) is validation;
    ``max_train_samples`` subsamples the rest and ``max_test_samples`` (seeded, stratified) the test reviews. The
    tokenizer (``tokenizer.json``, saved beside the arrays) is fitted on the final train split only, with
    ``vocab_size`` tokens at most (``meta.vocab_size`` is the actual size). Sequences keep their last ``seq_len`` tokens and are left-padded with ``[PAD]`` = 0.

    Raises:
        DataNotFoundError, DataIntegrityError: from :func:`~pipelines.data.fetch.fetch`.
        DataFormatError: the CSV is malformed or a sentiment/split value is unknown (naming the line).
    """
    entry = get_dataset(name)
    path = fetch_files(entry, mirror)["imdb_reviews.csv.gz"]
    frame = read_csv(path, IMDB_COLUMNS)
    _check_values(path, frame["sentiment"], IMDB_LABELS, "sentiment")
    _check_values(path, frame["split"], ("train", "test"), "split")
    texts = np.array([clean_review(text) for text in frame["review"].tolist()], dtype=object)
    labels = frame["sentiment"].map(IMDB_LABELS).to_numpy(dtype=np.int64)
    is_train = (frame["split"] == "train").to_numpy()
    official = {"train": np.flatnonzero(is_train), "test": np.flatnonzero(~is_train)}
    train, val = carve_train_val(labels[official["train"]], config, seed)
    test = official["test"][test_indices(labels[official["test"]], config, seed)]
    index = {"train": official["train"][train], "val": official["train"][val], "test": test}

    tokenizer = build_tokenizer(texts[index["train"]].tolist(), config.vocab_size, config.seq_len)
    arrays = {split: (encode_texts(tokenizer, texts[idx].tolist()), labels[idx]) for split, idx in index.items()}
    meta = base_meta(entry, seed)
    meta.update(tokenized_meta(tokenizer, config.seq_len, "<br /> removed; ", ("html_line_breaks",)))
    return Prepared(arrays, meta, {"tokenizer.json": tokenizer.to_str().encode("utf-8")})
