"""The on-disk format of prepared (and augmented) datasets, shared by ``prepare``, ``augment`` and ``train``.

A prepared dataset is a directory ``data/prepared/<dataset>/`` holding, for each split in ``train``, ``val`` and
``test``, ``<split>_x.npy`` and ``<split>_y.npy`` (uncompressed ``.npy``: loaded memory-mapped in milliseconds),
and ``meta.json``:

    dataset, task, modality       catalog values
    input_shape                   shape of one sample, e.g. [1, 28, 28], [13], [200]
    num_classes, classes          for datasets with classes
    splits                        {split: number of samples}
    x_dtype, y_dtype              numpy dtype names
    normalization                 how inputs were scaled (min-max bounds, or per-feature or per-channel mean/std
                                  fitted on train; see :func:`to_unit_range`)
    feature_names                 tabular: column names after encoding; numeric_features: their indices
    vocab_size, seq_len           text: tokenizer vocabulary size and sequence length (tokenizer.json beside)
    seed                          the split seed

An augmented dataset ``data/augmented/<dataset>/`` holds only the *extra* train samples (``train_x.npy``,
``train_y.npy``) and a ``meta.json`` with ``enabled``; when augmentation is off it holds only ``meta.json``,
so nothing is copied.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import REPO_ROOT
from pipelines.io import atomic_dir, atomic_write_json

SPLITS = ("train", "val", "test")
PREPARED_ROOT = REPO_ROOT / "data" / "prepared"
AUGMENTED_ROOT = REPO_ROOT / "data" / "augmented"
#: ``normalization.method`` of images stored standardised per channel (CIFAR-10): ``(pixel / 255 - mean[c]) / std[c]``
#: with ``normalization.mean``/``std`` (one value per channel, on the [0, 1] scale) fitted on the train split.
CHANNEL_STANDARDIZATION = "per-channel standardization"


class PreparedDataError(RuntimeError):
    """A prepared dataset directory is missing or incomplete; the message names the path."""


@dataclass
class PreparedData:
    """Arrays of one prepared dataset. ``x[split]`` has shape ``(N, *meta['input_shape'])``, ``y[split]`` ``(N,)``
    (``(N, 5)`` ``(class, x1, y1, x2, y2)`` for localization)."""

    meta: dict[str, Any]
    x: dict[str, np.ndarray] = field(default_factory=dict)
    y: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.meta["task"]


def _channel_stats(meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(mean, std)``, float32 (1, C, 1, 1), if ``meta`` describes per-channel standardised images; else None."""
    norm = meta.get("normalization") or {}
    if norm.get("method") != CHANNEL_STANDARDIZATION:
        return None
    mean, std = (np.asarray(norm[key], dtype=np.float32).reshape(1, -1, 1, 1) for key in ("mean", "std"))
    return mean, std


def to_unit_range(x: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Images as stored (``(N, C, H, W)``, described by ``meta``) -> float32 pixels in [0, 1].

    Undoes a per-channel standardisation (``x * std + mean``); other images (min-max scaled) are returned as they are.
    The inverse of :func:`from_unit_range`, up to float32 rounding.
    """
    stats = _channel_stats(meta)
    if stats is None:
        return x
    mean, std = stats
    out = np.multiply(x, std, dtype=np.float32)
    out += mean
    return out


def from_unit_range(x: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Float32 pixels in [0, 1] ``(N, C, H, W)`` -> the stored scale that ``meta`` describes.

    Applies a per-channel standardisation (``(x - mean) / std`` with ``meta['normalization']``'s train statistics);
    other images are returned as they are. ``prepare`` writes standardised images with it and ``augment``
    transforms [0, 1] pixels between :func:`to_unit_range` and this, so both use the same statistics.
    """
    stats = _channel_stats(meta)
    if stats is None:
        return x
    mean, std = stats
    out = np.subtract(x, mean, dtype=np.float32)
    out /= std
    return out


def write_prepared(
    out_dir: str | Path,
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    meta: dict[str, Any],
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Atomically write ``arrays`` (``{split: (x, y)}``) and ``meta`` to ``out_dir``.

    ``meta`` is completed with ``splits``, ``x_dtype`` and ``y_dtype``. ``extra_files`` (name to bytes), e.g. a
    tokenizer, are written beside. Either the whole directory appears or, on error, nothing changes.
    """
    out_dir = Path(out_dir)
    meta = dict(meta)
    meta["splits"] = {split: int(len(x)) for split, (x, _) in arrays.items()}
    if arrays:
        first_x, first_y = next(iter(arrays.values()))
        meta.setdefault("input_shape", list(first_x.shape[1:]))
        meta["x_dtype"], meta["y_dtype"] = str(first_x.dtype), str(first_y.dtype)
    with atomic_dir(out_dir) as tmp:
        for split, (x, y) in arrays.items():
            if len(x) != len(y):
                raise ValueError(f"{out_dir}: split {split!r} has {len(x)} inputs but {len(y)} targets")
            np.save(tmp / f"{split}_x.npy", np.ascontiguousarray(x))
            np.save(tmp / f"{split}_y.npy", np.ascontiguousarray(y))
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        atomic_write_json(tmp / "meta.json", meta)
    return out_dir


def rerun_hint(directory: str | Path) -> str:
    """The command that rewrites ``directory``: ``dvc repro -f prepare@<name>`` for ``data/prepared/<name>``,
    ``augment@<name>`` for ``data/augmented/<name>``."""
    directory = Path(directory)
    stage = {"prepared": "prepare", "augmented": "augment"}.get(directory.parent.name)
    return f"rerun `dvc repro -f {stage}@{directory.name}`" if stage else f"rerun the stage that writes {directory}"


def read_meta(directory: str | Path) -> dict[str, Any]:
    """``meta.json`` of a prepared (or augmented) dataset directory.

    Raises:
        PreparedDataError: the file is missing or not valid JSON, naming it and the stage to rerun.
    """
    path = Path(directory) / "meta.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PreparedDataError(f"{path}: missing; run the stage that writes {Path(directory).name} first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PreparedDataError(f"{path}: not valid JSON ({exc}); {rerun_hint(directory)}") from None


def load_prepared(directory: str | Path, splits: tuple[str, ...] = SPLITS, mmap: bool = True) -> PreparedData:
    """Load a prepared (or augmented) dataset directory.

    Raises:
        PreparedDataError: ``meta.json`` or a split's arrays are missing or corrupt (truncated, not ``.npy``),
            naming the file and the stage to rerun.
    """
    directory = Path(directory)
    data = PreparedData(read_meta(directory))
    for split in splits:
        if split not in data.meta.get("splits", {}):
            continue
        for kind, store in (("x", data.x), ("y", data.y)):
            path = directory / f"{split}_{kind}.npy"
            try:
                store[split] = np.load(path, mmap_mode="r" if mmap else None)
            except FileNotFoundError:
                raise PreparedDataError(f"{path}: missing from the prepared dataset") from None
            except (ValueError, EOFError, OSError) as exc:  # truncated or not an .npy file
                raise PreparedDataError(f"{path}: unreadable ({exc}); {rerun_hint(directory)}") from None
    return data


def load_training_data(
    dataset: str, prepared_root: Path = PREPARED_ROOT, augmented_root: Path = AUGMENTED_ROOT
) -> PreparedData:
    """Load ``dataset``'s prepared splits with any augmented train samples appended to ``train``."""
    data = load_prepared(prepared_root / dataset)
    aug_dir = augmented_root / dataset
    if (aug_dir / "meta.json").exists():
        aug = load_prepared(aug_dir, splits=("train",))
        if aug.meta.get("enabled") and "train" in aug.x:
            data.x["train"] = np.concatenate([data.x["train"], aug.x["train"]])
            data.y["train"] = np.concatenate([data.y["train"], aug.y["train"]])
            data.meta = {**data.meta, "augmented_train_samples": int(len(aug.x["train"]))}
    return data
