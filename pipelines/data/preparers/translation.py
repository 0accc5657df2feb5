"""English-to-French pairs (Tatoeba, ``fra-eng.zip``): normalised, filtered by length, split by English sentence, and
tokenised per side with ``tokenizers`` fitted on the train split only.

Arrays: x int64 ``(N, seq_len)``, the English token ids, left-padded with ``[PAD]`` = 0 exactly like the IMDB reviews
(the same WordLevel tokenizer, :func:`~pipelines.data.preparers.imdb.build_tokenizer`, saved as ``tokenizer.json``,
so a served model reads raw English through the text raw input); y int64 ``(N, seq_len)``, the French token ids as
``[BOS] w1 ... wn [EOS]`` right-padded with ``[PAD]``: ``y[:, :-1]`` is the decoder's teacher-forced input and
``y[:, 1:]`` its target. Special target ids: :data:`PAD_ID` 0, :data:`UNK_ID` 1, :data:`BOS_ID` 2, :data:`EOS_ID` 3.

- **Normalisation**: English as the IMDB tokenizer does it (NFD, lower case, accents stripped); French NFKC (the narrow
  no-break spaces before ``! ? :`` become spaces), curly apostrophes straightened, lower case, accents kept. Both
  sides are then split into runs of word characters and runs of punctuation (``tokenizers``' ``Whitespace``), so the
  punctuation is split off.
- **Filter**: a pair is kept when each side has at most ``options.max_words`` words (tokens with a letter or digit)
  and fits ``seq_len`` tokens (the French with its ``[BOS]`` and ``[EOS]``): nothing is truncated.
- **Split**: Tatoeba gives many English sentences several translations. The split groups pairs by their normalised
  English sentence (scikit-learn's ``GroupShuffleSplit``, seeded): ``test_fraction`` of the sentences are test, then
  ``val_fraction`` of the rest are val, so no test or val source sentence is ever seen in training. Then
  ``max_train_samples`` and ``max_test_samples`` keep seeded subsets of the pairs.
- **Files**: ``tokenizer.json`` (English), ``target_tokenizer.json`` (French), and ``sentences.json``: the val and
  test pairs as normalised, space-joined tokens, the references of BLEU (no ``[UNK]`` in them).
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from pipelines.config import DatasetConfig
from pipelines.data.catalog import get_dataset
from pipelines.data.datasets.translation import TranslationOptions
from pipelines.data.preparers.common import Prepared, base_meta, fetch_files, subsample_indices
from pipelines.data.preparers.imdb import build_tokenizer, encode_texts, normalize_text, tokenized_meta
from pipelines.errors import DataError, DataFormatError

log = logging.getLogger(__name__)

PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
#: The file inside ``fra-eng.zip`` that holds the pairs, one ``English<TAB>French`` per line.
PAIRS_MEMBER = "fra.txt"


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """The ``(english, french)`` pairs of ``fra.txt`` inside the zip ``path``, read without unpacking, in file order.

    Raises:
        DataFormatError: the zip has no ``fra.txt``, it is not UTF-8, or a line does not have exactly 2 tab-separated
            fields (naming the line).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            raw = archive.read(PAIRS_MEMBER)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise DataFormatError(f"{path}: expected a zip holding {PAIRS_MEMBER} ({exc})") from None
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}:{PAIRS_MEMBER}: not UTF-8 ({exc})") from None
    pairs = []
    for number, line in enumerate(lines, 1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataFormatError(
                f"{path}:{PAIRS_MEMBER} line {number}: expected 2 tab-separated fields (English, French), "
                f"found {len(fields)}"
            )
        pairs.append((fields[0], fields[1]))
    return pairs


def _french_normalizer():
    from tokenizers import normalizers

    return normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.Replace("\u2019", "'"),
            normalizers.Replace("\u2018", "'"),
            normalizers.Replace("\u200b", ""),
            normalizers.Lowercase(),
        ]
    )


def split_tokens(texts: list[str], *, french: bool) -> list[list[str]]:
    """Each text normalised (module docstring) and split into word and punctuation tokens."""
    from tokenizers import pre_tokenizers

    split = pre_tokenizers.Whitespace().pre_tokenize_str
    if french:
        normalize = _french_normalizer().normalize_str
        return [[token for token, _ in split(normalize(text))] for text in texts]
    return [[token for token, _ in split(normalize_text(text))] for text in texts]


def count_words(tokens: list[str]) -> int:
    """The tokens that hold a letter or digit (punctuation is not a word)."""
    return sum(any(c.isalnum() for c in token) for token in tokens)


def build_target_tokenizer(train: list[list[str]], vocab_size: int):
    """A WordLevel tokenizer of the French train tokens: the ``vocab_size`` most frequent, specials ``[PAD]`` 0,
    ``[UNK]`` 1, ``[BOS]`` 2, ``[EOS]`` 3 first. Its normalizer and pre-tokenizer are those of :func:`split_tokens`,
    so the saved ``target_tokenizer.json`` reads raw French the same way.

    Raises:
        DataError: the special tokens did not get their fixed ids.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, special_tokens=[PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN], show_progress=False
    )
    tokenizer.train_from_iterator((" ".join(tokens) for tokens in train), trainer=trainer, length=len(train))
    specials = [tokenizer.token_to_id(t) for t in (PAD_TOKEN, UNK_TOKEN, BOS_TOKEN, EOS_TOKEN)]
    if specials != [PAD_ID, UNK_ID, BOS_ID, EOS_ID]:
        raise DataError(f"target tokenizer: special tokens got ids {specials}, expected [0, 1, 2, 3]")
    tokenizer.normalizer = _french_normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def encode_targets(vocab: dict[str, int], sentences: list[list[str]], length: int) -> np.ndarray:
    """int64 ``(len(sentences), length)``: ``[BOS] ids [EOS]`` right-padded with ``[PAD]``; unseen tokens ``[UNK]``.

    Raises:
        DataError: a sentence does not fit ``length`` with its ``[BOS]`` and ``[EOS]``.
    """
    out = np.full((len(sentences), length), PAD_ID, dtype=np.int64)
    for row, tokens in enumerate(sentences):
        if len(tokens) + 2 > length:
            raise DataError(f"target sentence {row} has {len(tokens)} tokens; {length} ids hold {length - 2}")
        out[row, : len(tokens) + 2] = [BOS_ID, *(vocab.get(t, UNK_ID) for t in tokens), EOS_ID]
    return out


def group_split(groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)`` sorted indices of ``groups``, ``fraction`` of the distinct groups held out, seeded: no group
    has samples on both sides."""
    from sklearn.model_selection import GroupShuffleSplit

    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    kept, held = next(splitter.split(np.zeros(len(groups)), groups=groups))
    return np.sort(kept), np.sort(held)


def prepare_translation(
    config: DatasetConfig, seed: int, *, mirror: str | Path | None = None, name: str = "translation"
) -> Prepared:
    """English-French pairs as token ids, split by English sentence (module docstring).

    Raises:
        DataNotFoundError, DataIntegrityError: from :func:`~pipelines.data.fetch.fetch`.
        DataFormatError: ``fra.txt`` is missing or malformed (naming the line).
        DataError: no pair passes the filter, or a split is left empty.
    """
    entry = get_dataset(name)
    options = TranslationOptions.model_validate(config.options)
    path = fetch_files(entry, mirror)["fra-eng.zip"]
    pairs = read_pairs(path)
    english = split_tokens([en for en, _ in pairs], french=False)
    french = split_tokens([fr for _, fr in pairs], french=True)
    keep = [
        i
        for i, (en, fr) in enumerate(zip(english, french))
        if 0 < count_words(en) <= options.max_words
        and 0 < count_words(fr) <= options.max_words
        and len(en) <= config.seq_len
        and len(fr) + 2 <= config.seq_len
    ]
    if not keep:
        raise DataError(f"dataset {name!r}: no pair has at most {options.max_words} words and {config.seq_len} tokens")
    sources = [" ".join(english[i]) for i in keep]
    targets = [french[i] for i in keep]
    raw_english = [pairs[i][0] for i in keep]
    _, groups = np.unique(np.array(sources, dtype=object), return_inverse=True)

    rest, test = group_split(groups, config.test_fraction, seed)
    train_part, val_part = group_split(groups[rest], config.val_fraction, seed)
    train, val = rest[train_part], rest[val_part]
    train = np.sort(train[subsample_indices(np.zeros(len(train)), config.max_train_samples, seed, stratify=False)])
    test = np.sort(test[subsample_indices(np.zeros(len(test)), config.max_test_samples, seed, stratify=False)])
    index = {"train": train, "val": val, "test": test}
    empty = [split for split, idx in index.items() if len(idx) == 0]
    if empty:
        raise DataError(f"dataset {name!r}: {len(keep)} pairs leave the {', '.join(empty)} split empty")

    source_tokenizer = build_tokenizer([raw_english[i] for i in train], config.vocab_size, config.seq_len)
    target_tokenizer = build_target_tokenizer([targets[i] for i in train], config.vocab_size)
    target_vocab = target_tokenizer.get_vocab()
    arrays = {
        split: (
            encode_texts(source_tokenizer, [raw_english[i] for i in idx]),
            encode_targets(target_vocab, [targets[i] for i in idx], config.seq_len),
        )
        for split, idx in index.items()
    }
    sentences = {
        split: {"source": [sources[i] for i in index[split]], "target": [" ".join(targets[i]) for i in index[split]]}
        for split in ("val", "test")
    }
    meta = base_meta(entry, seed)
    meta.update(tokenized_meta(source_tokenizer, config.seq_len))
    meta["normalization"] = {
        "method": "tokenizer",
        "text": "English: NFD, lowercase, strip accents; French: NFKC, straight apostrophes, lowercase; both split "
        "into word and punctuation tokens; word-level vocabularies fitted on train",
    }
    meta.update(
        source_vocab=[token for token, _ in sorted(source_tokenizer.get_vocab().items(), key=lambda kv: kv[1])],
        target_vocab=[token for token, _ in sorted(target_vocab.items(), key=lambda kv: kv[1])],
        target_vocab_size=target_tokenizer.get_vocab_size(),
        target_len=config.seq_len,
        target_tokenizer="target_tokenizer.json",
        target_ids={"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID},
        sentences="sentences.json",
        max_words=options.max_words,
        pairs_read=len(pairs),
        pairs_kept=len(keep),
        source_sentences={split: int(len(np.unique(groups[idx]))) for split, idx in index.items()},
    )
    log.info(
        "%s: %d of %d pairs kept; train/val/test %s pairs",
        name,
        len(keep),
        len(pairs),
        "/".join(str(len(idx)) for idx in index.values()),
    )
    return Prepared(
        arrays,
        meta,
        {
            "tokenizer.json": source_tokenizer.to_str().encode("utf-8"),
            "target_tokenizer.json": target_tokenizer.to_str().encode("utf-8"),
            "sentences.json": json.dumps(sentences, ensure_ascii=False).encode("utf-8"),
        },
    )
