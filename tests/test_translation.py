"""The translation dataset (Tatoeba fra-eng): read from the zip, filtered, split by English sentence, tokenised on
train only; on the real file of the mirror."""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import DatasetConfig
from pipelines.data.preparers import prepare_dataset
from pipelines.data.preparers.translation import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    count_words,
    read_pairs,
    split_tokens,
)
from pipelines.errors import DataFormatError
from pipelines.tasks.seq2seq import Seq2Seq

SEQ_LEN = 16
MAX_WORDS = 6


@pytest.fixture(scope="module")
def translation(mirror: Path):
    config = DatasetConfig(seq_len=SEQ_LEN, vocab_size=4000, max_test_samples=3000, options={"max_words": MAX_WORDS})
    prepared = prepare_dataset("translation", config, seed=0, mirror=mirror)
    return prepared, config


def test_no_test_or_val_source_sentence_is_ever_in_train(translation, mirror: Path):
    (arrays, meta, extra), _ = translation
    sentences = json.loads(extra["sentences.json"])
    pairs = read_pairs(mirror / "translation" / "fra-eng.zip")
    english = Counter(" ".join(t) for t in split_tokens([en for en, _ in pairs], french=False))
    assert max(english.values()) > 10  # the control: Tatoeba repeats English sentences, so a pair split would leak

    def known(x: np.ndarray) -> set[tuple[int, ...]]:  # rows without [UNK] are exactly their sentences' tokens
        return {tuple(row) for row in x[~(x == UNK_ID).any(axis=1)].tolist()}

    train_sources = known(arrays["train"][0])
    for split in ("val", "test"):
        assert len(known(arrays[split][0])) > 100
        assert not train_sources & known(arrays[split][0]), split
        assert len(sentences[split]["source"]) == len(arrays[split][0])
    assert not set(sentences["val"]["source"]) & set(sentences["test"]["source"])
    # every translation of a test sentence is in test (the cap keeps a subset of the test pairs, never moves them)
    assert meta["source_sentences"]["test"] < len(arrays["test"][0]) <= 3000


def test_targets_are_bos_tokens_eos_then_padding_and_sources_are_left_padded(translation):
    (arrays, meta, _), _ = translation
    for x, y in arrays.values():
        assert x.dtype == y.dtype == np.int64 and x.shape[1] == y.shape[1] == SEQ_LEN
        assert (y[:, 0] == BOS_ID).all()
        eos = (y == EOS_ID).argmax(axis=1)
        assert ((y == EOS_ID).sum(axis=1) == 1).all()
        after = np.arange(SEQ_LEN)[None, :] > eos[:, None]
        assert (y[after] == PAD_ID).all() and (y[~after] != PAD_ID).all()
        real = x != PAD_ID
        assert real.any(axis=1).all() and (np.diff(real.astype(int), axis=1) >= 0).all()  # pads first, then words
    assert meta["target_ids"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3}
    assert meta["target_vocab"][:4] == ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    assert len(meta["target_vocab"]) == meta["target_vocab_size"] <= 4000


def test_every_kept_pair_fits_the_word_limit_and_the_references_hold_no_unknown_token(translation):
    (arrays, _, extra), _ = translation
    sentences = json.loads(extra["sentences.json"])
    for split in ("val", "test"):
        for source, target in zip(sentences[split]["source"], sentences[split]["target"]):
            assert 0 < count_words(source.split()) <= MAX_WORDS and 0 < count_words(target.split()) <= MAX_WORDS
        assert "[UNK]" not in " ".join(sentences[split]["target"])
    references = sentences["test"]["target"]
    scores = Seq2Seq.corpus_scores(references, references)  # the references against themselves
    assert scores["bleu"] == pytest.approx(100.0) and scores["chrf"] == pytest.approx(100.0)
    assert "aujourd ' hui" in " ".join(sentences["test"]["target"] + sentences["val"]["target"])  # punctuation split


def test_the_target_vocabulary_is_fitted_on_train_only(translation):
    (arrays, meta, extra), _ = translation
    vocab = meta["target_vocab"]
    train_ids = set(np.unique(arrays["train"][1]).tolist())
    assert train_ids == set(range(len(vocab))) - ({UNK_ID} - train_ids)  # every vocabulary entry is a train token
    sentences = json.loads(extra["sentences.json"])
    unseen = {t for s in sentences["test"]["target"] for t in s.split()} - set(vocab)
    assert unseen  # test words that train never had ...
    assert (arrays["test"][1] == UNK_ID).any()  # ... are [UNK] there


def test_a_served_english_sentence_encodes_like_its_prepared_source(translation, mirror: Path, tmp_path: Path):
    from pipelines.data.encoding import raw_input_for

    (arrays, meta, extra), _ = translation
    (tmp_path / "tokenizer.json").write_bytes(extra["tokenizer.json"])
    sentences = json.loads(extra["sentences.json"])
    raw = raw_input_for(meta, tmp_path)
    encoded = raw.encode({"text": sentences["test"]["source"][:50]})
    assert (encoded == arrays["test"][0][:50]).all()


def test_the_same_seed_gives_the_same_split_and_another_seed_another(translation, mirror: Path):
    (arrays, _, _), config = translation
    again = prepare_dataset("translation", config, seed=0, mirror=mirror).arrays
    other = prepare_dataset("translation", config, seed=1, mirror=mirror).arrays
    assert all((arrays[s][0] == again[s][0]).all() and (arrays[s][1] == again[s][1]).all() for s in arrays)
    assert arrays["test"][0].shape != other["test"][0].shape or (arrays["test"][0] != other["test"][0]).any()


def test_a_malformed_line_is_named(tmp_path: Path):
    path = tmp_path / "fra-eng.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("fra.txt", "Go.\tVa !\nRun!\tCours !\textra\n")
    with pytest.raises(DataFormatError, match=r"fra\.txt line 2: expected 2 tab-separated fields .* found 3"):
        read_pairs(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("other.txt", "")
    with pytest.raises(DataFormatError, match="expected a zip holding fra.txt"):
        read_pairs(path)


def test_translation_options_are_checked():
    import yaml

    from pipelines.config import DEFAULT_PARAMS_PATH, ConfigError, validate

    raw = yaml.safe_load(DEFAULT_PARAMS_PATH.read_text())
    raw["profile"] = "full"  # the default profile sets its own max_words over the base value
    raw["datasets"]["translation"] = {"options": {"max_words": 0}}
    with pytest.raises(ConfigError, match=r"datasets\.translation\.options\.max_words: Input should be greater"):
        validate(raw)
    raw["datasets"]["translation"] = {"options": {}}
    assert validate(raw).datasets["translation"].options == {"max_words": 10}
