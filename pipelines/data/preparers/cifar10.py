"""CIFAR-10 (and its class subsets ``cifar10_0to4``, ``cifar10_5to9``) from the python batches, standardised per
channel with the train split's statistics."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipelines.config import DatasetConfig
from pipelines.data.catalog import get_dataset
from pipelines.data.fetch import MIRROR_ENV, URL_ENV, mirror_root
from pipelines.data.prepared import CHANNEL_STANDARDIZATION, from_unit_range
from pipelines.data.preparers.common import (
    Prepared,
    base_meta,
    carve_train_val,
    fetch_files,
    keep_classes,
    test_indices,
)
from pipelines.data.preparers.idx import (
    scale_images,
)
from pipelines.data.readers import read_cifar_batch
from pipelines.errors import DataNotFoundError

log = logging.getLogger(__name__)

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
    files = fetch_files(entry, mirror)
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
        "train": (from_unit_range(scale_images(train_images[train]), meta), train_labels[train]),
        "val": (from_unit_range(scale_images(train_images[val]), meta), train_labels[val]),
        "test": (from_unit_range(scale_images(test_images), meta), test_labels),
    }
    return Prepared(arrays, meta, {})
