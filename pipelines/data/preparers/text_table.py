"""``source: {format: text_csv}``: the user's texts and labels, tokenised exactly like IMDB (a word-level
``tokenizers`` vocabulary of at most ``vocab_size`` tokens fitted on the train split; the last ``seq_len`` ids of
each text, left-padded with ``[PAD]`` = 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.config import DatasetConfig
from pipelines.config.sources import TextCsvSource, resolve_path
from pipelines.data.preparers.common import Prepared
from pipelines.data.preparers.imdb import build_tokenizer, encode_texts, tokenized_meta
from pipelines.data.preparers.sources import (
    check_class_counts,
    encode_classes,
    infer_task,
    random_splits,
    source_meta,
    source_reader,
)
from pipelines.data.preparers.table import read_table
from pipelines.errors import DataFormatError
from pipelines.tasks import get_task


@source_reader("text_csv")
def prepare_text_csv(name: str, source: TextCsvSource, config: DatasetConfig, seed: int, root: Path) -> Prepared:
    """A user text table: x int64 (N, seq_len) token ids, y int64 class indices in ``meta.classes`` order.

    Raises:
        DataFormatError: a missing text or target column, an empty value, or a regression target.
        DataError: a class with fewer than 3 samples (one each for train, val and test).
    """
    path = resolve_path(source.path, root)
    frame = read_table(path, [source.text, source.target], dtype={source.text: str})
    task = source.task or infer_task(frame[source.target].to_numpy())
    if not get_task(task).reads_classes:
        raise DataFormatError(f"{path}: column {source.target}: text_csv reads class labels, not a regression target")
    y, classes = encode_classes(frame[source.target].to_numpy(), path, source.target, task)
    check_class_counts(y, classes, 3, f"{path}: column {source.target}")
    texts = np.array(frame[source.text].tolist(), dtype=object)
    index = random_splits(y, config, seed)
    tokenizer = build_tokenizer(texts[index["train"]].tolist(), config.vocab_size, config.seq_len)
    arrays = {split: (encode_texts(tokenizer, texts[idx].tolist()), y[idx]) for split, idx in index.items()}
    meta = source_meta(name, source, task, seed, root)
    meta.update(
        classes=classes,
        num_classes=len(classes),
    )
    meta.update(tokenized_meta(tokenizer, config.seq_len))
    return Prepared(arrays, meta, {"tokenizer.json": tokenizer.to_str().encode("utf-8")})
