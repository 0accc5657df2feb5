"""The logic-gate truth tables (``logic_and``, ``logic_or``, ``logic_xor``): the perceptron's data (notes 000)."""

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

log = logging.getLogger(__name__)

#: The truth tables of notes 001 (x1, x2) -> y, rows in the order 00, 01, 10, 11.
TRUTH_TABLES: dict[str, tuple[int, int, int, int]] = {
    "logic_and": (0, 0, 0, 1),
    "logic_or": (0, 1, 1, 1),
    "logic_xor": (0, 1, 1, 0),
}


def prepare_logic(config: DatasetConfig, seed: int, *, name: str, mirror: str | Path | None = None) -> Prepared:
    """A logic gate's truth table: x float32 (4, 2) of 0/1, y int64 (4,). Train, val and test are all four rows,
    as in the notes, which train and evaluate on the table itself. ``config`` and ``mirror`` are accepted for the uniform
    interface of preparers (there are no files)."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array(TRUTH_TABLES[name], dtype=np.int64)
    meta = base_meta(get_dataset(name), seed)
    meta.update(input_shape=[2], feature_names=["x1", "x2"], normalization={"method": "none"})
    arrays = {split: (x.copy(), y.copy()) for split in ("train", "val", "test")}
    return Prepared(arrays, meta, {})
