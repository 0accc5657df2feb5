"""Datasets declared in ``params.yaml`` with a ``source:`` block (:mod:`pipelines.config.sources`): the user's own
files, read by the reader of their format and given the splits, preprocessing and ``meta.json`` of the built-in
datasets.

====================  ===========================  ================  ==========================================
format                x                            y                 preprocessing
====================  ===========================  ================  ==========================================
``csv``               float32 (N, features)        int64 class or    numeric columns standardised (train
                                                   float32 value     mean/std), categorical ones one-hot
``idx``               float32 (N, 1, S, S)         int64 class       min-max: pixel / 255
``image_folder``      float32 (N, C, H, W)         int64 class       resized to ``image_size``; pixel / 255
``text_csv``          int64 (N, seq_len)           int64 class       tokenised like IMDB (fitted on train)
``timeseries_csv``    float32 (N, window)          float32 (N,) or   windows standardised (train mean/std);
                                                   (N, horizon)      targets unscaled
====================  ===========================  ================  ==========================================

Classes are the target's distinct values in sorted order (numbers numerically), or the class folders in natural
order (``s2`` before ``s10``); ``meta.classes`` lists them, so class ``k`` is ``meta.classes[k]``. A binary
target's positive class is the second one.

Splits follow the built-in datasets (:mod:`pipelines.data.preparers.common`): a given test split is kept (``idx``'s
test files, ``csv``'s ``test_path``, ``image_folder``'s ``test/``), else ``test_fraction`` is held out, seeded and
stratified; ``val_fraction`` of the rest is val; ``max_train_per_class`` and ``max_train_samples`` then subsample
train. A time series is split by time, never shuffled.

Every problem with the files is a :class:`~pipelines.errors.DataError` raised before anything is written, in one
line naming the file and the row, column or key.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import DatasetConfig
from pipelines.config.sources import SourceBase, SourceTask, resolve_path
from pipelines.data.preparers.common import Prepared, carve_train_val, split_indices
from pipelines.errors import DataError, DataFormatError, DataIntegrityError, DataNotFoundError

log = logging.getLogger(__name__)

#: A target with at most this many distinct integer values is read as classes when ``task`` is not given.
MAX_INFERRED_CLASSES = 20

#: format -> reader ``(name, source, config, seed, root) -> Prepared``; each format's module registers its own.
SourceReader = Callable[[str, Any, DatasetConfig, int, Path], Prepared]
SOURCE_READERS: dict[str, SourceReader] = {}


def source_reader(fmt: str) -> Callable[[SourceReader], SourceReader]:
    """Register the reader of source format ``fmt`` (a decorator, used where the reader is defined)."""

    def register(reader: SourceReader) -> SourceReader:
        SOURCE_READERS[fmt] = reader
        return reader

    return register


def _load_readers() -> None:
    # The readers register themselves on import.
    from pipelines.data.preparers import idx, image_folder, table, text_table, timeseries  # noqa: F401


def prepare_source(name: str, config: DatasetConfig, seed: int, root: Path) -> Prepared:
    """Read dataset ``name`` from the files of ``config.source`` (paths relative to ``root``).

    Raises:
        DataNotFoundError: a file or folder of the source does not exist.
        DataIntegrityError: a file does not match its ``sha256`` pin.
        DataFormatError: a file cannot be read as its format says (naming the file and the row, column or key).
        DataError: the data cannot be split as configured (e.g. a class with too few samples).
    """
    source = config.source
    if source is None:
        raise DataError(f"datasets.{name}: no source: block")
    _load_readers()
    check_files(source, root)
    return SOURCE_READERS[source.format](name, source, config, seed, root)


def check_files(source: SourceBase, root: Path) -> None:
    """Every file of ``source`` exists, and each pinned one has its ``sha256``.

    Raises:
        DataNotFoundError: naming the missing file or folder.
        DataIntegrityError: naming the file whose digest differs, with both digests.
    """
    for path in source.files(root):
        if not path.exists():
            raise DataNotFoundError(f"{path}: no such file or folder (source.path is relative to {root})")
    pins = source.sha256
    if pins is None:
        return
    base = resolve_path(source.path, root)
    for rel, digest in ({"": pins} if isinstance(pins, str) else pins).items():
        path = base / rel if rel else base
        if path.is_dir():
            raise DataError(f"{path}: source.sha256 pins a folder; pin its files: {{relative path: digest}}")
        if not path.is_file():
            raise DataNotFoundError(f"{path}: pinned in source.sha256 but no such file")
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != digest.lower():
            raise DataIntegrityError(f"{path}: sha256 is {actual}, but source.sha256 pins {digest.lower()}")


def source_meta(name: str, source: SourceBase, task: str, seed: int, root: Path) -> dict[str, Any]:
    """The ``meta.json`` fields every user dataset has (those of :func:`~.common.base_meta`)."""
    return {
        "dataset": name,
        "task": task,
        "modality": source.modality,
        "format": source.format,
        "source": f"user files ({source.format}): {source.path}",
        "citation": "",
        "license": "",
        "raw_files": [str(path) for path in source.files(root)],
        "seed": seed,
    }


def natural_key(text: str) -> list[Any]:
    """Sort key that orders the digit runs of ``text`` by value: ``s2`` before ``s10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def infer_task(values: np.ndarray) -> SourceTask:
    """The task a target column implies: text or booleans are classes (binary when two); integers with at most
    :data:`MAX_INFERRED_CLASSES` distinct values are classes too; any other numbers are a regression target."""
    distinct = np.unique(values.astype(str)) if values.dtype == object else np.unique(values)
    if values.dtype.kind in "iub" or values.dtype == object:
        if values.dtype == object or len(distinct) <= MAX_INFERRED_CLASSES:
            return "binary" if len(distinct) == 2 else "multiclass"
        return "regression"
    integral = bool(np.all(np.isfinite(distinct)) and np.all(distinct == np.round(distinct)))
    if integral and len(distinct) <= MAX_INFERRED_CLASSES:
        return "binary" if len(distinct) == 2 else "multiclass"
    return "regression"


def infer_source_task(source: SourceBase, root: Path) -> SourceTask:
    """The task of a source whose ``task`` is not given: its format's, or the one its target column implies.

    Raises:
        DataError: the file or its target column cannot be read.
    """
    known = source.known_task()
    if known is not None:
        return known
    from pipelines.data.preparers.table import read_table

    path = resolve_path(source.path, root)
    target = source.target  # type: ignore[attr-defined]
    frame = read_table(path, [target], usecols=[target])
    return infer_task(frame[target].to_numpy())


def encode_classes(values: np.ndarray, path: Path, column: str, task: str) -> tuple[np.ndarray, list[str]]:
    """Class labels -> ``(y int64 (N,), classes)``: class ``k`` is ``classes[k]``, the distinct values in sorted
    order (numbers numerically).

    Raises:
        DataFormatError: a binary task whose target has other than two distinct values.
    """
    distinct, y = np.unique(values.astype(str) if values.dtype == object else values, return_inverse=True)
    from pipelines.tasks import get_task

    classes = [str(v.item() if hasattr(v, "item") else v) for v in distinct]
    needed = get_task(task).exact_classes
    if needed is not None and len(classes) != needed:
        raise DataFormatError(
            f"{path}: column {column}: a {task} task needs {needed} distinct values, found {len(classes)} "
            f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})"
        )
    return y.astype(np.int64), classes


def check_class_counts(y: np.ndarray, classes: list[str], parts: int, where: str) -> None:
    """Every class of ``y`` has at least ``parts`` samples: one for each split it is divided into.

    Raises:
        DataError: naming ``where`` (the file or folder), the class and its count.
    """
    counts = np.bincount(y, minlength=len(classes))
    for k in np.flatnonzero(counts < parts):
        raise DataError(
            f"{where}: class {classes[k]!r} has {counts[k]} sample(s); splitting it into "
            f"{'train, val and test' if parts == 3 else 'train and val'} needs at least {parts}"
        )


def random_splits(y: np.ndarray, config: DatasetConfig, seed: int, *, test: bool = True) -> dict[str, np.ndarray]:
    """Indices of the train, val and (with ``test``) test splits of ``range(len(y))``: ``test_fraction`` held
    out, then ``val_fraction`` of the rest, then the train subsets (:func:`~.common.carve_train_val`). Seeded, and
    stratified on ``y`` where every class fits in each part (so never on a continuous regression target)."""
    if test:
        rest, held = split_indices(y, config.test_fraction, seed)
    else:
        rest = np.arange(len(y))
    train, val = carve_train_val(y[rest], config, seed)
    index = {"train": rest[train], "val": rest[val]}
    return index | {"test": held} if test else index
