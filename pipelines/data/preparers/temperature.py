"""Melbourne daily minimum temperatures: sliding windows of past days, split by time, standardised on train."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import DatasetConfig
from pipelines.data.catalog import get_dataset
from pipelines.data.preparers.churn import (
    _reject_rows,
    standardize,
)
from pipelines.data.preparers.common import (
    Prepared,
    base_meta,
    fetch_files,
)
from pipelines.data.readers import read_csv
from pipelines.errors import DataError

log = logging.getLogger(__name__)

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


def prepare_melbourne_temp(
    config: DatasetConfig, seed: int, *, mirror: str | Path | None = None, name: str = "melbourne_temp"
) -> Prepared:
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
    entry = get_dataset(name)
    path = fetch_files(entry, mirror)["daily-min-temperatures.csv"]
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
