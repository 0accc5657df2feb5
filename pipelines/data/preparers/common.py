"""What every preparer shares: the :class:`Prepared` result, the dataset's base metadata, seeded (stratified)
splits, subsets and class filters, and fetching a dataset's raw files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from pipelines.config import DatasetConfig
from pipelines.data.catalog import DatasetEntry
from pipelines.data.fetch import fetch
from pipelines.errors import DataNotFoundError

log = logging.getLogger(__name__)

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


class Prepared(NamedTuple):
    """What a preparation function returns; unpacks as ``arrays, meta, extra_files`` for :func:`write_prepared`."""

    arrays: Arrays
    meta: dict[str, Any]
    extra_files: dict[str, bytes]


def base_meta(entry: DatasetEntry, seed: int) -> dict[str, Any]:
    """The ``meta.json`` fields every dataset has: catalog values, classes, provenance and the split seed."""
    meta: dict[str, Any] = {
        "dataset": entry.name,
        "task": entry.task,
        "modality": entry.modality,
        "format": entry.format,
        "source": entry.source,
        "citation": entry.citation,
        "license": entry.license,
        "raw_files": [raw.path for raw in entry.files],
        "seed": seed,
    }
    if entry.classes:
        meta["classes"] = list(entry.classes)
        meta["num_classes"] = len(entry.classes)
    return meta


def _can_stratify(y: np.ndarray, n_first: int, n_second: int) -> bool:
    """Whether both parts of a split are large enough to hold every class (sklearn's requirement)."""
    n_classes = len(np.unique(y))
    return n_classes > 1 and min(n_first, n_second) >= n_classes


def _split(y: np.ndarray, n_held: int, seed: int, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    if stratify and _can_stratify(y, len(y) - n_held, n_held):
        try:
            return tuple(train_test_split(index, test_size=n_held, random_state=seed, stratify=y))
        except ValueError as exc:  # e.g. a class with a single member
            log.warning("cannot stratify (%s); splitting without stratification", exc)
    return tuple(train_test_split(index, test_size=n_held, random_state=seed))


def split_indices(y: np.ndarray, fraction: float, seed: int, *, stratify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(len(y))`` into ``(keep, held_out)`` with ``ceil(fraction * len(y))`` held out.

    Seeded, and stratified on ``y`` unless ``stratify`` is False or a part would be too small to hold every class.
    Both index arrays come back shuffled (sklearn's ``train_test_split`` order).
    """
    return _split(y, int(np.ceil(fraction * len(y))), seed, stratify)


def subsample_indices(y: np.ndarray, n: int | None, seed: int, *, stratify: bool = True) -> np.ndarray:
    """Indices of a seeded (stratified) subset of ``n`` samples of ``y``.

    All indices, in order, when ``n`` is None or at least ``len(y)``.
    """
    if n is None or n >= len(y):
        return np.arange(len(y))
    keep, _ = _split(y, len(y) - n, seed, stratify)
    return keep


def per_class_indices(y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Indices of ``n`` seeded samples of every class of ``y`` (all of a class that has fewer), in index order.

    All indices when ``n`` is None.
    """
    if n is None:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(y == c))[:n] for c in np.unique(y)]
    return np.sort(np.concatenate(picked))


def carve_train_val(y_train: np.ndarray, config: DatasetConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)`` into an official train split: ``val_fraction`` held out, then
    ``max_train_per_class`` samples of each class, then ``max_train_samples``."""
    train, val = split_indices(y_train, config.val_fraction, seed)
    train = train[per_class_indices(y_train[train], config.max_train_per_class, seed)]
    train = train[subsample_indices(y_train[train], config.max_train_samples, seed)]
    return train, val


def test_indices(y_test: np.ndarray, config: DatasetConfig, seed: int) -> np.ndarray:
    """Indices into an official test split: all of it, or a seeded stratified ``max_test_samples`` of it."""
    return np.sort(subsample_indices(y_test, config.max_test_samples, seed))


def keep_classes(
    images: np.ndarray, labels: np.ndarray, subset: tuple[int, ...] | None
) -> tuple[np.ndarray, np.ndarray]:
    """The samples whose label is in ``subset``, relabelled by position in it (``subset[k]`` becomes ``k``);
    everything when ``subset`` is None."""
    if subset is None:
        return images, labels
    mask = np.isin(labels, subset)
    relabel = np.full(int(labels.max(initial=0)) + 1, -1, dtype=np.int64)
    relabel[list(subset)] = np.arange(len(subset))
    return images[mask], relabel[labels[mask]]


def fetch_files(entry: DatasetEntry, mirror: str | Path | None) -> dict[str, Path]:
    """Fetch and verify every raw file of ``entry``; returns ``{file name: local path}``.

    An optional file (``required=False``) that is nowhere to be found is left out (logged); one that is found but
    fails verification is an error like any other.
    """
    files = {}
    for raw in entry.files:
        try:
            files[raw.name] = fetch(raw, mirror=mirror)
        except DataNotFoundError as exc:
            if raw.required:
                raise
            log.info("%s: optional file %s not found, prepared without it", entry.name, raw.path)
            log.debug("%s", exc)
    return files
