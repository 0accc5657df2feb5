"""MNIST and Fashion-MNIST from their IDX files: the official test split kept, validation carved from train,
pixels scaled to [0, 1]."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipelines.config import DatasetConfig
from pipelines.config.sources import IdxSource
from pipelines.data.catalog import DatasetEntry, get_dataset
from pipelines.data.preparers.common import (
    Prepared,
    base_meta,
    carve_train_val,
    fetch_files,
    test_indices,
)
from pipelines.data.preparers.sources import check_class_counts, source_meta, source_reader
from pipelines.data.readers import read_idx
from pipelines.errors import DataFormatError

log = logging.getLogger(__name__)


def read_idx_pair(
    images_path: Path, labels_path: Path, *, side: int | None = 28, num_classes: int | None = 10
) -> tuple[np.ndarray, np.ndarray]:
    """A pair of MNIST-format IDX files: uint8 images (N, S, S) and int64 labels.

    Args:
        side: the image side the files must have (MNIST's 28), or ``None`` for any square size.
        num_classes: labels must lie in ``0 .. num_classes - 1`` (MNIST's 10), or ``None`` for any non-negative
            integer.

    Raises:
        DataFormatError: naming the file: images that are not square (or not ``side`` pixels), counts of images and
            labels that disagree, or a label out of range.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1] != images.shape[2] or (side is not None and images.shape[1] != side):
        size = f"{side}, {side}" if side is not None else "S, S"
        raise DataFormatError(f"{images_path}: expected images of shape (N, {size}), found {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataFormatError(
            f"{labels_path}: expected {len(images)} labels (one per image in {images_path.name}), "
            f"found shape {labels.shape}"
        )
    if labels.size and num_classes is not None and labels.max() >= num_classes:
        raise DataFormatError(
            f"{labels_path}: labels must be class indices 0-{num_classes - 1}, found {int(labels.max())}"
        )
    if labels.size and (labels.dtype.kind == "f" or labels.min() < 0):
        raise DataFormatError(f"{labels_path}: labels must be non-negative integers, found {labels.min()}")
    return images, labels.astype(np.int64)


def scale_images(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W) in [0, 1]: pixel / 255 (min-max with the fixed
    bounds 0 and 255); a single channel axis is added to (N, H, W)."""
    out = images.astype(np.float32)
    if out.ndim == 3:
        out = out[:, None]
    out /= np.float32(255)
    return out


def idx_splits(
    entry: DatasetEntry, config: DatasetConfig, seed: int, mirror: str | Path | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The uint8 images (N, 28, 28) and int64 labels of each split of an MNIST-format dataset (the four IDX files
    ``{train,t10k}-{images,labels}``): val carved from the official train split, then ``max_train_per_class`` and
    ``max_train_samples``; the official test split, or ``max_test_samples`` of it."""
    files = fetch_files(entry, mirror)
    train_images, train_labels = read_idx_pair(files["train-images-idx3-ubyte.gz"], files["train-labels-idx1-ubyte.gz"])
    test_images, test_labels = read_idx_pair(files["t10k-images-idx3-ubyte.gz"], files["t10k-labels-idx1-ubyte.gz"])
    train, val = carve_train_val(train_labels, config, seed)
    test = test_indices(test_labels, config, seed)
    return {
        "train": (train_images[train], train_labels[train]),
        "val": (train_images[val], train_labels[val]),
        "test": (test_images[test], test_labels[test]),
    }


def prepare_idx_images(name: str, config: DatasetConfig, seed: int, mirror: str | Path | None) -> Prepared:
    """An MNIST-format dataset ``name`` (see :func:`idx_splits`); see :func:`prepare_mnist`."""
    entry = get_dataset(name)
    arrays = {
        split: (scale_images(images), labels)
        for split, (images, labels) in idx_splits(entry, config, seed, mirror).items()
    }
    meta = base_meta(entry, seed)
    meta.update(input_shape=[1, 28, 28], normalization={"method": "min-max", "min": 0, "max": 255})
    return Prepared(arrays, meta, {})


def prepare_mnist(
    config: DatasetConfig, seed: int, *, mirror: str | Path | None = None, name: str = "mnist"
) -> Prepared:
    """MNIST from its four IDX files: x float32 (N, 1, 28, 28) in [0, 1], y int64 digits.

    The official 10,000 test images are the test split; ``val_fraction`` of the 60,000 train images (stratified)
    is the validation split; ``max_train_samples`` subsamples the rest.

    Raises:
        DataNotFoundError, DataIntegrityError: from :func:`~pipelines.data.fetch.fetch`.
        DataFormatError: an IDX file is malformed or images and labels disagree.
    """
    return prepare_idx_images(name, config, seed, mirror)


def prepare_fashion_mnist(
    config: DatasetConfig, seed: int, *, mirror: str | Path | None = None, name: str = "fashion_mnist"
) -> Prepared:
    """Fashion-MNIST (Xiao, Rasul, Vollgraf 2017), MNIST's drop-in replacement, prepared exactly like
    :func:`prepare_mnist`: x float32 (N, 1, 28, 28) in [0, 1], y int64 0-9 in the order of ``meta['classes']``
    (T-shirt/top, Trouser, ..., Ankle boot). Official 10,000 test images kept; val carved from the 60,000 train
    images.

    Raises:
        DataNotFoundError, DataIntegrityError: from :func:`~pipelines.data.fetch.fetch`.
        DataFormatError: an IDX file is malformed or images and labels disagree.
    """
    return prepare_idx_images(name, config, seed, mirror)


@source_reader("idx")
def prepare_idx(name: str, source: IdxSource, config: DatasetConfig, seed: int, root: Path) -> Prepared:
    """The user's four MNIST-format files: x float32 (N, 1, S, S) in [0, 1] (min-max: pixel / 255), y int64 class
    indices ``0 .. max label``. The test files are the test split; val is carved from train as for MNIST.

    Raises:
        DataFormatError: a file is not IDX, images and labels disagree in count, train and test images differ in
            size, or labels are not non-negative integers (naming the file).
        DataError: a class with fewer than 2 train samples (one for train, one for val).
    """
    train_images, train_labels, test_images, test_labels = source.files(root)
    x_train, y_train = read_idx_pair(train_images, train_labels, side=None, num_classes=None)
    x_test, y_test = read_idx_pair(test_images, test_labels, side=None, num_classes=None)
    if x_test.shape[1:] != x_train.shape[1:]:
        raise DataFormatError(
            f"{test_images}: images are {x_test.shape[1]}x{x_test.shape[2]} pixels, but the train images in "
            f"{train_images.name} are {x_train.shape[1]}x{x_train.shape[2]}"
        )
    classes = [str(k) for k in range(int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1)]
    check_class_counts(y_train, classes[: int(y_train.max(initial=0)) + 1], 2, str(train_labels))
    train, val = carve_train_val(y_train, config, seed)
    test = test_indices(y_test, config, seed)
    arrays = {
        "train": (scale_images(x_train[train]), y_train[train]),
        "val": (scale_images(x_train[val]), y_train[val]),
        "test": (scale_images(x_test[test]), y_test[test]),
    }
    meta = source_meta(name, source, source.known_task(), seed, root)
    meta.update(
        classes=classes,
        num_classes=len(classes),
        input_shape=[1, *x_train.shape[1:]],
        normalization={"method": "min-max", "min": 0, "max": 255},
    )
    return Prepared(arrays, meta, {})
