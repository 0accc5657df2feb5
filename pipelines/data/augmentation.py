"""Offline augmentation of a prepared train split (notes 004, data augmentation): the library behind the
``augment`` stage (:mod:`pipelines.stages.augment`).

Images go through kornia (horizontal flip, random crop after zero padding, affine rotation/zoom, additive
brightness, Gaussian noise, then a clamp to [0, 1]) in batches under a fixed torch seed; tabular data gets Gaussian
noise on its numeric (standardised) features only (``meta['numeric_features']``).

Images are transformed as [0, 1] pixels. Prepared images stored standardised per channel (CIFAR-10; see
:func:`pipelines.data.preparers.prepare_cifar10`) are mapped back to [0, 1] with the train statistics in the
prepared ``meta.json`` (:func:`~pipelines.data.prepared.to_unit_range`), transformed and clamped, and standardised
again with the same statistics (:func:`~pipelines.data.prepared.from_unit_range`), so the extra samples are on the
scale of the prepared train split and no statistic is refitted here. Min-max images (MNIST, Fashion-MNIST) are
already [0, 1] pixels. torch and kornia are imported only when image augmentation runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines.config import AugmentConfig
from pipelines.data.prepared import from_unit_range, to_unit_range
from pipelines.errors import DataError

#: Images per kornia batch: bounds memory (4096 x 1 x 28 x 28 float32 is 12 MiB per intermediate).
BATCH_SIZE = 4096


def select_samples(n: int, config: AugmentConfig, seed: int) -> np.ndarray:
    """Indices of the train samples to augment: a seeded ``fraction`` of ``range(n)`` (at least one), sorted,
    repeated ``copies`` times."""
    rng = np.random.default_rng(seed)
    k = min(n, max(1, round(config.fraction * n)))
    chosen = np.sort(rng.choice(n, size=k, replace=False))
    return np.tile(chosen, config.copies)


def augment_images(x: np.ndarray, config: AugmentConfig, seed: int, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Augment images ``x`` float32 (N, C, H, W) in [0, 1] with kornia; returns a new float32 array in [0, 1].

    Transforms, each drawn per image: horizontal flip (p=0.5) if ``hflip``; with ``crop_padding`` p > 0, a random
    (H, W) crop of the image zero-padded by p pixels on each side (a shift of up to p pixels, black fill); an affine
    rotation within +-``rotation_degrees`` and scale in [1 - zoom, 1 + zoom]; an additive brightness shift in
    +-``brightness``; Gaussian noise of std ``noise_std``. Deterministic for a given ``seed`` and ``batch_size``
    (torch's RNG is seeded inside a forked RNG state, so the caller's state is untouched).
    """
    import kornia.augmentation as K
    import torch

    transforms: list[Any] = []
    if config.hflip:
        transforms.append(K.RandomHorizontalFlip(p=0.5))
    if config.crop_padding:
        transforms.append(K.RandomCrop(tuple(x.shape[-2:]), padding=config.crop_padding, p=1.0))
    if config.rotation_degrees or config.zoom:
        scale = (1 - config.zoom, 1 + config.zoom)
        transforms.append(K.RandomAffine(degrees=config.rotation_degrees, scale=scale, p=1.0))
    if config.brightness:
        transforms.append(K.RandomBrightness(brightness=(1 - config.brightness, 1 + config.brightness), p=1.0))
    if config.noise_std:
        transforms.append(K.RandomGaussianNoise(mean=0.0, std=config.noise_std, p=1.0))
    pipeline = torch.nn.Sequential(*transforms)
    out = np.empty_like(x, dtype=np.float32)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32))
            out[start : start + batch_size] = pipeline(batch).clamp_(0.0, 1.0).numpy()
    return out


def augment_tabular(x: np.ndarray, numeric_features: Sequence[int], noise_std: float, seed: int) -> np.ndarray:
    """Add Gaussian noise of std ``noise_std`` to the ``numeric_features`` columns of ``x`` (N, F); other columns
    (one-hot and binary features) are copied unchanged. Returns a new array of ``x``'s dtype."""
    rng = np.random.default_rng(seed)
    out = np.array(x, copy=True)
    columns = list(numeric_features)
    if columns and noise_std:
        out[:, columns] += rng.normal(0.0, noise_std, size=(len(out), len(columns))).astype(out.dtype)
    return out


def augment_arrays(
    x: np.ndarray, y: np.ndarray, meta: dict[str, Any], config: AugmentConfig, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The extra train samples for a prepared train split ``(x, y)`` described by ``meta``.

    Returns:
        ``(x_aug, y_aug)`` with ``round(fraction * N) * copies`` samples and the originals' labels.

    Raises:
        DataError: the modality cannot be augmented offline (text, truth tables), or tabular data has no
            ``numeric_features`` in its meta.
    """
    index = select_samples(len(x), config, seed)
    modality = meta.get("modality")
    if modality == "image":  # transformed as [0, 1] pixels, then put back on the prepared scale
        x_aug = from_unit_range(augment_images(to_unit_range(np.asarray(x[index]), meta), config, seed), meta)
    elif modality == "tabular":
        if "numeric_features" not in meta:
            raise DataError(f"{meta.get('dataset')}: prepared meta.json has no numeric_features to add noise to")
        x_aug = augment_tabular(np.asarray(x[index]), meta["numeric_features"], config.noise_std, seed)
    else:
        raise DataError(f"{meta.get('dataset')}: offline augmentation of {modality} data is not supported")
    return x_aug, np.asarray(y[index])
