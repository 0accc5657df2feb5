"""DVC stage ``augment``: extra, augmented train samples -> ``data/augmented/<dataset>/`` (notes 004, augmentation).

    python -m pipelines.augment <dataset> [--params params.yaml] [--profile NAME]
                                          [--prepared data/prepared] [--out data/augmented]

Configured by ``augment.<dataset>`` in ``params.yaml`` (:class:`~pipelines.config.AugmentConfig`):

- disabled: only ``meta.json`` = ``{"enabled": false, "dataset": ...}`` is written; nothing is copied;
- enabled: a seeded ``fraction`` of the prepared train split is drawn and ``copies`` augmented copies of it are
  written as ``train_x.npy``/``train_y.npy`` (only the extra samples; labels are those of the originals).
  Images go through kornia (horizontal flip, random crop after zero padding, affine rotation/zoom, additive
  brightness, Gaussian noise, then a clamp to [0, 1]) in batches under a fixed torch seed; tabular data gets
  Gaussian noise on its numeric (standardised) features only (``meta['numeric_features']``).

Images are transformed as [0, 1] pixels. Prepared images stored standardised per channel (CIFAR-10; see
:func:`pipelines.datasets.prepare_cifar10`) are mapped back to [0, 1] with the train statistics in the prepared
``meta.json`` (:func:`~pipelines.prepared.to_unit_range`), transformed and clamped, and standardised again with the
same statistics (:func:`~pipelines.prepared.from_unit_range`), so the extra samples are on the scale of the prepared
train split and no statistic is refitted here. Min-max images (MNIST, Fashion-MNIST) are already [0, 1] pixels.

torch and kornia are imported only when image augmentation runs. Errors: like ``prepare``, one line
``error: ...`` on stderr and exit status 2; the output directory is replaced atomically.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import AugmentConfig, load_params
from pipelines.errors import DataError
from pipelines.io import atomic_dir, atomic_write_json
from pipelines.prepare import run_stage
from pipelines.prepared import (
    AUGMENTED_ROOT,
    PREPARED_ROOT,
    from_unit_range,
    load_prepared,
    to_unit_range,
    write_prepared,
)

log = logging.getLogger("pipelines.augment")

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
            batch = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size], dtype=np.float32))
            out[start:start + batch_size] = pipeline(batch).clamp_(0.0, 1.0).numpy()
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


def augment_arrays(x: np.ndarray, y: np.ndarray, meta: dict[str, Any], config: AugmentConfig,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
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


def augment(dataset: str, *, params_path: str | Path | None = None, profile: str | None = None,
            prepared_root: str | Path = PREPARED_ROOT, out_root: str | Path = AUGMENTED_ROOT) -> Path:
    """Write ``<out_root>/<dataset>`` from ``<prepared_root>/<dataset>`` as ``augment.<dataset>`` configures.

    Raises:
        ConfigError: ``params.yaml`` is invalid.
        PreparedDataError: augmentation is enabled but the prepared dataset is missing.
        DataError: the dataset's modality cannot be augmented.
    """
    params = load_params(params_path, profile)
    params.dataset(dataset)  # an unknown dataset is a ConfigError, not a silently disabled augmentation
    config = params.augmentation(dataset)
    out_dir = Path(out_root) / dataset
    if not config.enabled:
        with atomic_dir(out_dir) as tmp:
            atomic_write_json(tmp / "meta.json", {"enabled": False, "dataset": dataset})
        log.info("augmentation of %s is disabled: wrote %s", dataset, out_dir / "meta.json")
        return out_dir

    start = time.perf_counter()
    source = load_prepared(Path(prepared_root) / dataset, splits=("train",))
    x, y = source.x["train"], source.y["train"]
    x_aug, y_aug = augment_arrays(x, y, source.meta, config, params.seed)
    meta = {
        "enabled": True,
        "dataset": dataset,
        "task": source.meta.get("task"),
        "modality": source.meta.get("modality"),
        "normalization": source.meta.get("normalization"),  # the extra samples are on the prepared train scale
        "seed": params.seed,
        "source_train_samples": int(len(x)),
        "selected_samples": int(len(x_aug) // config.copies),
        "copies": config.copies,
        "augmented_samples": int(len(x_aug)),
        "config": config.model_dump(),
    }
    write_prepared(out_dir, {"train": (x_aug, y_aug)}, meta)
    log.info("augmented %s in %.1f s: %d extra train samples from %d -> %s", dataset,
             time.perf_counter() - start, len(x_aug), len(x), out_dir)
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0, or 2 on a data or configuration error)."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.augment", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="a dataset under datasets: in params.yaml, e.g. mnist")
    parser.add_argument("--params", type=Path, default=None, help="params file (default: <repo>/params.yaml)")
    parser.add_argument("--profile", default=None, help="override the params file's profile")
    parser.add_argument("--prepared", type=Path, default=PREPARED_ROOT,
                        help="prepared data root (default: data/prepared)")
    parser.add_argument("--out", type=Path, default=AUGMENTED_ROOT, help="output root (default: data/augmented)")
    args = parser.parse_args(argv)
    return run_stage(augment, dataset=args.dataset, params_path=args.params, profile=args.profile,
                     prepared_root=args.prepared, out_root=args.out)


if __name__ == "__main__":
    sys.exit(main())
