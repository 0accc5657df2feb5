"""``mnist_localization``: an MNIST digit placed at a seeded position on a larger canvas, with its bounding box."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipelines.config import DatasetConfig
from pipelines.data.catalog import get_dataset
from pipelines.data.preparers.common import (
    Prepared,
    base_meta,
)
from pipelines.data.preparers.idx import (
    idx_splits,
    scale_images,
)

log = logging.getLogger(__name__)

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
    return scale_images(canvases), boxes / np.float32(canvas_size)


def prepare_mnist_localization(
    config: DatasetConfig, seed: int, *, mirror: str | Path | None = None, name: str = "mnist_localization"
) -> Prepared:
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
    entry = get_dataset(name)
    arrays = {}
    for offset, (split, (images, labels)) in enumerate(idx_splits(entry, config, seed, mirror).items()):
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
