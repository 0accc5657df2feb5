"""Per-dataset preparation: raw files in, ``{split: (x, y)}`` arrays and ``meta`` out (see :mod:`pipelines.data.prepared`).

Every function here is deterministic for a given config and seed: splits use scikit-learn's
``train_test_split`` with ``random_state=seed``, stratified on the label. An official test split is kept where the
dataset has one (MNIST, Fashion-MNIST, CIFAR-10, IMDB); validation is carved out of train with
``DatasetConfig.val_fraction``; and ``max_train_samples`` then keeps a seeded, stratified subset of what is left of
train. A time series (melbourne_temp) is never shuffled: its splits are consecutive stretches of time, train first,
then val, then test.
Statistics that are fitted (churn's and melbourne_temp's standardisation, CIFAR-10's per-channel standardisation,
IMDB's tokenizer) are fitted on the train split only (after the val carve-out and ``max_train_samples``).

Use :func:`prepare_dataset` (or :data:`PREPARERS`) to dispatch by name. The arrays are:

===============  ==========================  =========  ================================================
dataset          x                           y          preprocessing
===============  ==========================  =========  ================================================
logic_*          float32 (4, 2) of 0/1       int64 0/1  none: the truth table is train, val and test
mnist            float32 (N, 1, 28, 28)      int64 0-9  min-max: pixel / 255, in [0, 1]
fashion_mnist    float32 (N, 1, 28, 28)      int64 0-9  min-max: pixel / 255, in [0, 1] (as mnist)
cifar10          float32 (N, 3, 32, 32)      int64 0-9  per-channel standardisation (train mean/std of
                                                        pixel / 255), see :func:`prepare_cifar10`
churn            float32 (N, 12)             int64 0/1  ids dropped, one-hot Geography, Gender 0/1,
                                                        numeric columns standardised (train mean/std)
imdb             int64 (N, seq_len)          int64 0/1  ``<br />`` removed, WordLevel tokenizer fitted on
                                                        train, keep the last seq_len ids, left-pad with 0
melbourne_temp   float32 (N, window)         float32    x: the previous ``window`` days' minimum temperatures
                                                        standardised (train mean/std); y: the next day's, °C
===============  ==========================  =========  ================================================
"""

from __future__ import annotations

import itertools
import logging
import re
import unicodedata
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from pipelines.config import DatasetConfig
from pipelines.data.catalog import DatasetEntry, get_dataset
from pipelines.data.fetch import MIRROR_ENV, URL_ENV, fetch, mirror_root
from pipelines.data.prepared import CHANNEL_STANDARDIZATION, from_unit_range
from pipelines.data.readers import read_cifar_batch, read_csv, read_idx
from pipelines.errors import DataError, DataFormatError, DataNotFoundError

log = logging.getLogger(__name__)

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]


class Prepared(NamedTuple):
    """What a preparation function returns; unpacks as ``arrays, meta, extra_files`` for :func:`write_prepared`."""

    arrays: Arrays
    meta: dict[str, Any]
    extra_files: dict[str, bytes]


# ------------------------------------------------------------------------------------------------- helpers


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


def _fetch_files(entry: DatasetEntry, mirror: str | Path | None) -> dict[str, Path]:
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


# ------------------------------------------------------------------------------------------- logic gates

#: The truth tables of notes 001 (x1, x2) -> y, rows in the order 00, 01, 10, 11.
TRUTH_TABLES: dict[str, tuple[int, int, int, int]] = {
    "logic_and": (0, 0, 0, 1),
    "logic_or": (0, 1, 1, 1),
    "logic_xor": (0, 1, 1, 0),
}


def prepare_logic(name: str, config: DatasetConfig, seed: int) -> Prepared:
    """A logic gate's truth table: x float32 (4, 2) of 0/1, y int64 (4,). Train, val and test are all four rows,
    as in the notes, which train and evaluate on the table itself. ``config`` is accepted for a uniform interface."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array(TRUTH_TABLES[name], dtype=np.int64)
    meta = base_meta(get_dataset(name), seed)
    meta.update(input_shape=[2], feature_names=["x1", "x2"], normalization={"method": "none"})
    arrays = {split: (x.copy(), y.copy()) for split in ("train", "val", "test")}
    return Prepared(arrays, meta, {})


# ------------------------------------------------------------------------------------ mnist, fashion_mnist


def _read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An MNIST-format pair of IDX files: uint8 images (N, 28, 28) and int64 labels 0-9."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataFormatError(f"{images_path}: expected images of shape (N, 28, 28), found {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataFormatError(
            f"{labels_path}: expected {len(images)} labels (one per image in {images_path.name}), "
            f"found shape {labels.shape}"
        )
    if labels.size and labels.max() > 9:
        raise DataFormatError(f"{labels_path}: labels must be class indices 0-9, found {int(labels.max())}")
    return images, labels.astype(np.int64)


def _scale_images(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W) in [0, 1]: pixel / 255 (min-max with the fixed
    bounds 0 and 255); a single channel axis is added to (N, H, W)."""
    out = images.astype(np.float32)
    if out.ndim == 3:
        out = out[:, None]
    out /= np.float32(255)
    return out


def _idx_splits(
    entry: DatasetEntry, config: DatasetConfig, seed: int, mirror: str | Path | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The uint8 images (N, 28, 28) and int64 labels of each split of an MNIST-format dataset (the four IDX files
    ``{train,t10k}-{images,labels}``): val carved from the official train split, then ``max_train_per_class`` and
    ``max_train_samples``; the official test split, or ``max_test_samples`` of it."""
    files = _fetch_files(entry, mirror)
    train_images, train_labels = _read_idx_pair(
        files["train-images-idx3-ubyte.gz"], files["train-labels-idx1-ubyte.gz"]
    )
    test_images, test_labels = _read_idx_pair(files["t10k-images-idx3-ubyte.gz"], files["t10k-labels-idx1-ubyte.gz"])
    train, val = carve_train_val(train_labels, config, seed)
    test = test_indices(test_labels, config, seed)
    return {
        "train": (train_images[train], train_labels[train]),
        "val": (train_images[val], train_labels[val]),
        "test": (test_images[test], test_labels[test]),
    }


def _prepare_idx_images(name: str, config: DatasetConfig, seed: int, mirror: str | Path | None) -> Prepared:
    """An MNIST-format dataset ``name`` (see :func:`_idx_splits`); see :func:`prepare_mnist`."""
    entry = get_dataset(name)
    arrays = {
        split: (_scale_images(images), labels)
        for split, (images, labels) in _idx_splits(entry, config, seed, mirror).items()
    }
    meta = base_meta(entry, seed)
    meta.update(input_shape=[1, 28, 28], normalization={"method": "min-max", "min": 0, "max": 255})
    return Prepared(arrays, meta, {})


def prepare_mnist(config: DatasetConfig, seed: int, *, mirror: str | Path | None = None) -> Prepared:
    """MNIST from its four IDX files: x float32 (N, 1, 28, 28) in [0, 1], y int64 digits.

    The official 10,000 test images are the test split; ``val_fraction`` of the 60,000 train images (stratified)
    is the validation split; ``max_train_samples`` subsamples the rest.

    Raises:
        DataNotFoundError, DataIntegrityError: from :func:`~pipelines.data.fetch.fetch`.
        DataFormatError: an IDX file is malformed or images and labels disagree.
    """
    return _prepare_idx_images("mnist", config, seed, mirror)


def prepare_fashion_mnist(config: DatasetConfig, seed: int, *, mirror: str | Path | None = None) -> Prepared:
    """Fashion-MNIST (Xiao, Rasul, Vollgraf 2017), MNIST's drop-in replacement, prepared exactly like
    :func:`prepare_mnist`: x float32 (N, 1, 28, 28) in [0, 1], y int64 0-9 in the order of ``meta['classes']``
    (T-shirt/top, Trouser, ..., Ankle boot). Official 10,000 test images kept; val carved from the 60,000 train
    images.

    Raises:
        DataNotFoundError, DataIntegrityError: from :func:`~pipelines.data.fetch.fetch`.
        DataFormatError: an IDX file is malformed or images and labels disagree.
    """
    return _prepare_idx_images("fashion_mnist", config, seed, mirror)


# -------------------------------------------------------------------------------------- mnist_localization

#: Pixels of a resized digit at or above this (of 255) count as the digit when its bounding box is measured.
BOX_INK_THRESHOLD = 26


def place_digits(
    digits: np.ndarray, canvas_size: int, min_scale: float, max_scale: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Paste each digit at a seeded random scale and position on an empty canvas (notes 000, "Image or Object
    localization": one object per image, to be classified and located).

    Args:
        digits: uint8 (N, 28, 28) images.
        canvas_size: side S of the square canvas, pixels.
        min_scale, max_scale: the digit's side is drawn uniformly from ``round(28 * min_scale)`` to
            ``round(28 * max_scale)`` pixels (bilinear resize, aspect kept).
        seed: seeds the sizes and positions (numpy ``default_rng``).

    Returns:
        ``(canvases, boxes)``: float32 (N, 1, S, S) in [0, 1], and float32 (N, 4) boxes ``(x1, y1, x2, y2)`` as
        fractions of S (x to the right, y down), the tight box of the digit's pixels >= :data:`BOX_INK_THRESHOLD`.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    n = len(digits)
    sizes = rng.integers(round(28 * min_scale), round(28 * max_scale) + 1, size=n)
    x0 = (rng.random(n) * (canvas_size - sizes + 1)).astype(np.int64)
    y0 = (rng.random(n) * (canvas_size - sizes + 1)).astype(np.int64)
    canvases = np.zeros((n, 1, canvas_size, canvas_size), dtype=np.uint8)
    boxes = np.zeros((n, 4), dtype=np.float32)
    for i in range(n):
        size = int(sizes[i])
        digit = np.asarray(Image.fromarray(digits[i]).resize((size, size), Image.Resampling.BILINEAR))
        canvases[i, 0, y0[i] : y0[i] + size, x0[i] : x0[i] + size] = digit
        rows, cols = np.nonzero(digit >= BOX_INK_THRESHOLD)
        if len(rows):
            boxes[i] = (x0[i] + cols.min(), y0[i] + rows.min(), x0[i] + cols.max() + 1, y0[i] + rows.max() + 1)
        else:  # a blank digit: its whole square
            boxes[i] = (x0[i], y0[i], x0[i] + size, y0[i] + size)
    return _scale_images(canvases), boxes / np.float32(canvas_size)


def prepare_mnist_localization(config: DatasetConfig, seed: int, *, mirror: str | Path | None = None) -> Prepared:
    """Single-object localization from real MNIST digits: x float32 (N, 1, S, S) in [0, 1] (S = ``canvas_size``,
    64 by default), y float32 (N, 5) ``(class, x1, y1, x2, y2)`` with the box in fractions of the canvas
    (:func:`place_digits`).

    The digits come from MNIST's official splits: val is ``val_fraction`` of the train images (stratified),
    ``max_train_samples`` subsamples the rest and ``max_test_samples`` the 10,000 test images. Each split gets its
    own seeded placements.

    Raises:
        DataNotFoundError, DataIntegrityError: from :func:`~pipelines.data.fetch.fetch`.
        DataFormatError: an IDX file is malformed or images and labels disagree.
    """
    entry = get_dataset("mnist_localization")
    arrays = {}
    for offset, (split, (images, labels)) in enumerate(_idx_splits(entry, config, seed, mirror).items()):
        canvases, boxes = place_digits(images, config.canvas_size, config.min_scale, config.max_scale, seed + offset)
        arrays[split] = (canvases, np.concatenate([labels[:, None].astype(np.float32), boxes], axis=1))
    meta = base_meta(entry, seed)
    meta.update(
        input_shape=[1, config.canvas_size, config.canvas_size],
        normalization={"method": "min-max", "min": 0, "max": 255},
        target_columns=["class", "x1", "y1", "x2", "y2"],
        box_format="xyxy, fractions of the canvas side (x right, y down)",
        digit_size_pixels=[round(28 * config.min_scale), round(28 * config.max_scale)],
    )
    return Prepared(arrays, meta, {})


# ----------------------------------------------------------------------------------------------- cifar10

#: The train batches of the CIFAR-10 binary version, ``data_batch_<k>.bin``; any that are found are used.
CIFAR10_TRAIN_BATCHES = range(1, 6)


def channel_statistics(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation (ddof 0) of uint8 images (N, C, H, W), on the [0, 1] scale.

    Exact and light on memory: computed from each channel's histogram of the 256 pixel values, not from a float
    copy of the images. A constant channel gets std 1 (as in :func:`standardize`).
    """
    levels = np.arange(256, dtype=np.float64) / 255
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = np.bincount(images[:, channel].ravel(), minlength=256)
        mean = float(counts @ levels / counts.sum())
        std = float(np.sqrt(counts @ (levels - mean) ** 2 / counts.sum()))
        means.append(mean)
        stds.append(std if std > 0 else 1.0)
    return means, stds


def prepare_cifar10(
    config: DatasetConfig, seed: int, *, mirror: str | Path | None = None, name: str = "cifar10"
) -> Prepared:
    """CIFAR-10, binary version: x float32 (N, 3, 32, 32) (R, G, B) standardised per channel, y int64 0-9 in the order
    of ``meta['classes']`` (airplane, automobile, ..., truck).

    Splits: the train images are those of whichever train batches ``data_batch_1`` ... ``data_batch_5`` are found,
    in batch order (the shared mirror holds 1-3: 30,000 of the 50,000); ``meta['train_batches']`` (e.g. ``[1, 2, 3]``)
    and ``meta['train_images_available']`` record what was read. The official 10,000-image ``test_batch`` is the test
    split; ``val_fraction`` of the train images (stratified) is val; ``max_train_per_class`` and
    ``max_train_samples`` subsample the rest, ``max_test_samples`` the test split.

    ``name`` may be a derived catalog entry (``cifar10_0to4``, ``cifar10_5to9``): only its ``class_subset`` of the
    base classes is kept, relabelled 0..k-1, before anything is split or fitted.

    Normalisation: ``x = (pixel / 255 - mean[c]) / std[c]``, with the per-channel mean and std of the final train
    split only (after the val carve-out and ``max_train_samples``; :func:`channel_statistics`), applied unchanged to
    val and test and recorded in ``meta['normalization']`` (method
    :data:`~pipelines.data.prepared.CHANNEL_STANDARDIZATION`, ``mean`` and ``std`` on the [0, 1] scale). The stored arrays
    are what the models read. The ``augment`` stage works on [0, 1] pixels: it maps the stored train images back with
    :func:`~pipelines.data.prepared.to_unit_range`, transforms and clamps them, and standardises the result with
    :func:`~pipelines.data.prepared.from_unit_range` and the same train statistics, which is also what writes x here.

    Raises:
        DataNotFoundError: the test batch, or every train batch, is missing.
        DataIntegrityError: a batch fails its checksum (from :func:`~pipelines.data.fetch.fetch`).
        DataFormatError: a batch is truncated or malformed (:func:`~pipelines.data.readers.read_cifar_batch`).
    """
    entry = get_dataset(name)
    files = _fetch_files(entry, mirror)
    batches = [k for k in CIFAR10_TRAIN_BATCHES if f"data_batch_{k}.bin.gz" in files]
    if not batches:
        root = mirror_root(mirror)
        raise DataNotFoundError(
            f"dataset {name!r}: none of the train batches cifar10/data_batch_{{1..5}}.bin.gz was found (mirror "
            f"{root if root is not None else f'unset (${MIRROR_ENV})'}, the download cache, ${URL_ENV}); at least "
            f"one is required"
        )
    parts = [read_cifar_batch(files[f"data_batch_{k}.bin.gz"]) for k in batches]
    train_images, train_labels = keep_classes(
        np.concatenate([images for images, _ in parts]),
        np.concatenate([labels for _, labels in parts]),
        entry.class_subset,
    )
    del parts
    test_images, test_labels = keep_classes(*read_cifar_batch(files["test_batch.bin.gz"]), entry.class_subset)
    test = test_indices(test_labels, config, seed)
    test_images, test_labels = test_images[test], test_labels[test]
    train, val = carve_train_val(train_labels, config, seed)
    mean, std = channel_statistics(train_images[train])
    meta = base_meta(entry, seed)
    meta.update(
        input_shape=[3, 32, 32],
        raw_files=[raw.path for raw in entry.files if raw.name in files],  # those read, not all five batches
        train_batches=batches,
        train_images_available=int(len(train_labels)),  # of the kept classes
        **({"base": entry.base, "base_classes": list(entry.class_subset)} if entry.class_subset else {}),
        normalization={
            "method": CHANNEL_STANDARDIZATION,
            "fitted_on": "train",
            "scale": "pixel / 255",
            "channels": ["R", "G", "B"],
            "mean": mean,
            "std": std,
        },
    )
    arrays = {
        "train": (from_unit_range(_scale_images(train_images[train]), meta), train_labels[train]),
        "val": (from_unit_range(_scale_images(train_images[val]), meta), train_labels[val]),
        "test": (from_unit_range(_scale_images(test_images), meta), test_labels),
    }
    return Prepared(arrays, meta, {})


# ------------------------------------------------------------------------------------------------- churn

CHURN_COLUMNS = (
    "RowNumber",
    "CustomerId",
    "Surname",
    "CreditScore",
    "Geography",
    "Gender",
    "Age",
    "Tenure",
    "Balance",
    "NumOfProducts",
    "HasCrCard",
    "IsActiveMember",
    "EstimatedSalary",
    "Exited",
)
CHURN_DROPPED = ("RowNumber", "CustomerId", "Surname")  # identifiers: no signal, only leakage
CHURN_GEOGRAPHIES = ("France", "Germany", "Spain")
CHURN_GENDERS = {"Female": 0, "Male": 1}
#: Continuous and count features: standardised with train statistics (and the only ones augmentation perturbs).
CHURN_NUMERIC = ("CreditScore", "Age", "Tenure", "Balance", "NumOfProducts", "EstimatedSalary")
CHURN_TARGET = "Exited"


def _reject_rows(path: Path, bad: np.ndarray, column: Any, name: str, expected: str) -> None:
    """Raise a :class:`DataFormatError` naming the line of the first row flagged in ``bad``, if any."""
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"{path}: line {row + 2}: {name} is {column.iloc[row]!r}; expected {expected}")


def _check_values(path: Path, column: Any, allowed: Any, name: str) -> None:
    _reject_rows(path, (~column.isin(list(allowed))).to_numpy(), column, name, f"one of {', '.join(map(str, allowed))}")


def churn_features(frame, path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Encode the churn table: drop identifiers, one-hot Geography, Gender to 0/1.

    Returns:
        ``x`` float64 (N, 12) unscaled, ``y`` int64 (N,) from ``Exited``, and the feature names in column order.

    Raises:
        DataFormatError: an unknown Geography or Gender, or a target that is not 0/1 (naming the line).
    """
    _check_values(path, frame["Geography"], CHURN_GEOGRAPHIES, "Geography")
    _check_values(path, frame["Gender"], CHURN_GENDERS, "Gender")
    _check_values(path, frame[CHURN_TARGET], (0, 1), CHURN_TARGET)
    columns: dict[str, np.ndarray] = {}
    for name in CHURN_COLUMNS:
        if name in CHURN_DROPPED or name == CHURN_TARGET:
            continue
        if name == "Geography":
            for country in CHURN_GEOGRAPHIES:
                columns[f"Geography_{country}"] = (frame[name] == country).to_numpy(dtype=np.float64)
        elif name == "Gender":
            columns[name] = frame[name].map(CHURN_GENDERS).to_numpy(dtype=np.float64)
        else:
            try:
                columns[name] = frame[name].to_numpy(dtype=np.float64)
            except (TypeError, ValueError):
                raise DataFormatError(f"{path}: column {name} is not numeric") from None
    x = np.stack(list(columns.values()), axis=1)
    return x, frame[CHURN_TARGET].to_numpy(dtype=np.int64), list(columns)


def standardize(x: dict[str, np.ndarray], columns: list[int], names: list[str]) -> dict[str, dict[str, float]]:
    """Standardise ``columns`` of every split in ``x`` in place with the mean/std (ddof 0) of ``x['train']``.

    Returns ``{feature name: {"mean": m, "std": s}}``. A constant column keeps std 1 (it becomes all zeros).
    """
    stats = {}
    train = x["train"]
    for col in columns:
        mean, std = float(train[:, col].mean()), float(train[:, col].std())
        std = std if std > 0 else 1.0
        for values in x.values():
            values[:, col] = (values[:, col] - mean) / std
        stats[names[col]] = {"mean": mean, "std": std}
    return stats


def prepare_churn(config: DatasetConfig, seed: int, *, mirror: str | Path | None = None) -> Prepared:
    """Bank churn: x float32 (N, 12), y int64 ``Exited``.

    Features, in order: CreditScore, Geography_France, Geography_Germany, Geography_Spain, Gender (Female 0,
    Male 1), Age, Tenure, Balance, NumOfProducts, HasCrCard, IsActiveMember, EstimatedSalary. The numeric ones
    (:data:`CHURN_NUMERIC`) are standardised with the train split's mean and std (``meta.normalization``).
    Splits, stratified on ``Exited``: ``test_fraction`` of all rows is test, ``val_fraction`` of the rest is val.

    Raises:
        DataNotFoundError, DataIntegrityError: from :func:`~pipelines.data.fetch.fetch`.
        DataFormatError: the CSV is malformed (naming the line) or holds an unexpected category.
    """
    entry = get_dataset("churn")
    path = _fetch_files(entry, mirror)["Churn_Modelling.csv"]
    x, y, names = churn_features(read_csv(path, CHURN_COLUMNS), path)
    rest, test = split_indices(y, config.test_fraction, seed)
    train, val = carve_train_val(y[rest], config, seed)
    index = {"train": rest[train], "val": rest[val], "test": test}
    xs = {split: x[idx] for split, idx in index.items()}
    numeric = [names.index(name) for name in CHURN_NUMERIC]
    stats = standardize(xs, numeric, names)
    arrays = {split: (xs[split].astype(np.float32), y[idx]) for split, idx in index.items()}
    meta = base_meta(entry, seed)
    meta.update(
        input_shape=[len(names)],
        feature_names=names,
        numeric_features=numeric,
        dropped_columns=list(CHURN_DROPPED),
        normalization={"method": "standard", "fitted_on": "train", "features": stats},
    )
    return Prepared(arrays, meta, {})


# -------------------------------------------------------------------------------------------------- imdb

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


def prepare_imdb(config: DatasetConfig, seed: int, *, mirror: str | Path | None = None) -> Prepared:
    """IMDB reviews: x int64 (N, seq_len) token ids, y int64 (0 negative, 1 positive).

    The official 25,000/25,000 train/test split is kept; ``val_fraction`` of train (stratified) is validation;
    ``max_train_samples`` subsamples the rest. The tokenizer (``tokenizer.json``, saved beside the arrays) is
    fitted on the final train split only, with ``vocab_size`` tokens at most (``meta.vocab_size`` is the actual
    size). Sequences keep their last ``seq_len`` tokens and are left-padded with ``[PAD]`` = 0.

    Raises:
        DataNotFoundError, DataIntegrityError: from :func:`~pipelines.data.fetch.fetch`.
        DataFormatError: the CSV is malformed or a sentiment/split value is unknown (naming the line).
    """
    entry = get_dataset("imdb")
    path = _fetch_files(entry, mirror)["imdb_reviews.csv.gz"]
    frame = read_csv(path, IMDB_COLUMNS)
    _check_values(path, frame["sentiment"], IMDB_LABELS, "sentiment")
    _check_values(path, frame["split"], ("train", "test"), "split")
    texts = np.array([clean_review(text) for text in frame["review"].tolist()], dtype=object)
    labels = frame["sentiment"].map(IMDB_LABELS).to_numpy(dtype=np.int64)
    is_train = (frame["split"] == "train").to_numpy()
    official = {"train": np.flatnonzero(is_train), "test": np.flatnonzero(~is_train)}
    train, val = carve_train_val(labels[official["train"]], config, seed)
    index = {"train": official["train"][train], "val": official["train"][val], "test": official["test"]}

    tokenizer = build_tokenizer(texts[index["train"]].tolist(), config.vocab_size, config.seq_len)
    arrays = {split: (encode_texts(tokenizer, texts[idx].tolist()), labels[idx]) for split, idx in index.items()}
    meta = base_meta(entry, seed)
    meta.update(
        input_shape=[config.seq_len],
        vocab_size=tokenizer.get_vocab_size(),
        seq_len=config.seq_len,
        pad_id=PAD_ID,
        unk_id=tokenizer.token_to_id(UNK_TOKEN),
        padding="pre",
        truncating="pre",
        tokenizer="tokenizer.json",
        normalization={
            "method": "tokenizer",
            "text": "<br /> removed; NFD, lowercase, strip accents; "
            "whitespace/punctuation split; word-level vocab fitted on train",
        },
    )
    return Prepared(arrays, meta, {"tokenizer.json": tokenizer.to_str().encode("utf-8")})


# ---------------------------------------------------------------------------------------- melbourne_temp

TEMPERATURE_COLUMNS = ("Date", "Temp")


def daily_series(frame, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse a daily ``Date,Temp`` table: ``days`` datetime64[D], strictly increasing, and ``values`` float64.

    Raises:
        DataFormatError: a date that is not ``YYYY-MM-DD``, a date not after the one before it, or a value that is
            not a finite number (naming the line).
    """
    dates = pd.to_datetime(frame["Date"], format="%Y-%m-%d", errors="coerce")
    _reject_rows(path, dates.isna().to_numpy(), frame["Date"], "Date", "a date YYYY-MM-DD")
    values = pd.to_numeric(frame["Temp"], errors="coerce").to_numpy(dtype=np.float64)
    _reject_rows(path, ~np.isfinite(values), frame["Temp"], "Temp", "a finite number")
    days = dates.to_numpy().astype("datetime64[D]")
    not_after = np.concatenate([[False], np.diff(days) <= np.timedelta64(0, "D")])
    _reject_rows(path, not_after, frame["Date"], "Date", "a date after the previous line's")
    return days, values


def sliding_windows(values: np.ndarray, days: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Supervised samples of a daily series: the ``window`` values before day ``t`` predict the value of day ``t``.

    Only samples whose ``window + 1`` days are consecutive calendar days are kept: a window across a missing date
    would mix lags (its "previous day" would be two days back), so it is dropped.

    Returns:
        ``x`` (M, window), ``y`` (M,) and ``target`` (M,), the increasing indices of the targets in the series:
        ``x[k] == values[target[k] - window:target[k]]`` and ``y[k] == values[target[k]]``.
    """
    if len(values) <= window:
        return np.empty((0, window)), np.empty(0), np.empty(0, dtype=np.int64)
    rows = np.lib.stride_tricks.sliding_window_view(values, window + 1)
    span = days[window:] - days[:-window]  # calendar days from a window's first day to its target
    keep = np.flatnonzero(span == np.timedelta64(window, "D"))
    return rows[keep, :window].copy(), rows[keep, window].copy(), keep + window


def chronological_split(n: int, config: DatasetConfig) -> dict[str, np.ndarray]:
    """Indices of ``n`` time-ordered samples, never shuffled: the last ``ceil(test_fraction * n)`` are test, the
    last ``ceil(val_fraction * rest)`` of the rest are val, the earlier ones train (with ``max_train_samples``, only
    the latest of them, the stretch just before val)."""
    n_test = int(np.ceil(config.test_fraction * n))
    n_val = int(np.ceil(config.val_fraction * (n - n_test)))
    n_train = n - n_test - n_val
    first = 0 if config.max_train_samples is None else max(0, n_train - config.max_train_samples)
    return {"train": np.arange(first, n_train), "val": np.arange(n_train, n - n_test), "test": np.arange(n - n_test, n)}


def prepare_melbourne_temp(config: DatasetConfig, seed: int, *, mirror: str | Path | None = None) -> Prepared:
    """Melbourne daily minimum temperatures 1981-1990 as a windowed regression: x float32 (N, window), y float32 °C.

    Sample ``k`` is the ``window`` daily minima before a target day (columns ``t-window`` ... ``t-1``, oldest first)
    and the target is that day's minimum in °C, unscaled, so errors (RMSE, MAE) read in °C. Windows across a missing
    date are dropped (:func:`sliding_windows`; the file lacks 1984-12-31 and 1988-12-31). Samples are split by the
    date of their target, chronologically (:func:`chronological_split`): train is the earliest stretch, then val,
    then test. A train sample's window and target all lie before the first val target (no later day reaches the
    training data); a val or test window may look back into the previous split's days, as a forecast would. The
    features are standardised with the train split's mean and std (``meta.normalization``). ``seed`` is only
    recorded: nothing here is random.

    Raises:
        DataNotFoundError, DataIntegrityError: from :func:`~pipelines.data.fetch.fetch`.
        DataFormatError: the CSV is malformed, a date or temperature does not parse, or dates are out of order.
        DataError: the series is too short for ``window`` and the split fractions.
    """
    entry = get_dataset("melbourne_temp")
    path = _fetch_files(entry, mirror)["daily-min-temperatures.csv"]
    days, values = daily_series(read_csv(path, TEMPERATURE_COLUMNS), path)
    window = config.window
    x, y, target = sliding_windows(values, days, window)
    index = chronological_split(len(y), config)
    empty = [split for split, idx in index.items() if len(idx) == 0]
    if empty:
        raise DataError(
            f"dataset 'melbourne_temp': {len(y)} windows of {window} days leave no sample for "
            f"{', '.join(empty)}; use a smaller window or other split fractions"
        )
    names = [f"t-{lag}" for lag in range(window, 0, -1)]
    xs = {split: x[idx] for split, idx in index.items()}
    stats = standardize(xs, list(range(window)), names)
    arrays = {split: (xs[split].astype(np.float32), y[idx].astype(np.float32)) for split, idx in index.items()}
    all_days = np.arange(days[0], days[-1] + np.timedelta64(1, "D"))
    meta = base_meta(entry, seed)
    meta.update(
        input_shape=[window],
        window=window,
        feature_names=names,
        numeric_features=list(range(window)),
        target="minimum temperature of the day after the window, °C (unscaled)",
        split_method="chronological by target date (not shuffled)",
        split_dates={split: [str(days[target[idx[0]]]), str(days[target[idx[-1]]])] for split, idx in index.items()},
        missing_dates=[str(day) for day in np.setdiff1d(all_days, days)],
        dropped_windows=int(len(values) - window - len(y)),
        normalization={"method": "standard", "fitted_on": "train", "features": stats},
    )
    return Prepared(arrays, meta, {})


# ---------------------------------------------------------------------------------------------- dispatch


def _logic(name: str) -> Callable[..., Prepared]:
    def prepare(config: DatasetConfig, seed: int, *, mirror: str | Path | None = None) -> Prepared:
        return prepare_logic(name, config, seed)

    prepare.__name__ = prepare.__qualname__ = f"prepare_{name}"
    prepare.__doc__ = f"The {name.removeprefix('logic_').upper()} truth table; see :func:`prepare_logic`."
    return prepare


#: Dataset name -> preparation function ``(config, seed, *, mirror=None) -> Prepared``.
PREPARERS: dict[str, Callable[..., Prepared]] = {
    **{name: _logic(name) for name in TRUTH_TABLES},
    "mnist": prepare_mnist,
    "fashion_mnist": prepare_fashion_mnist,
    "cifar10": prepare_cifar10,
    "cifar10_0to4": partial(prepare_cifar10, name="cifar10_0to4"),
    "cifar10_5to9": partial(prepare_cifar10, name="cifar10_5to9"),
    "mnist_localization": prepare_mnist_localization,
    "churn": prepare_churn,
    "imdb": prepare_imdb,
    "melbourne_temp": prepare_melbourne_temp,
}


def prepare_dataset(name: str, config: DatasetConfig, seed: int, *, mirror: str | Path | None = None) -> Prepared:
    """Prepare dataset ``name`` (see :data:`PREPARERS`); ``mirror`` overrides ``$DEEPNOTES_DATA_MIRROR``.

    Raises:
        DataError: no preparation is defined for ``name``, or a raw file is missing, corrupt or malformed.
    """
    try:
        preparer = PREPARERS[name]
    except KeyError:
        raise DataError(f"dataset {name!r}: no preparation defined; known: {', '.join(sorted(PREPARERS))}") from None
    return preparer(config, seed, mirror=mirror)
