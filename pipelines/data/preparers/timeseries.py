"""``source: {format: timeseries_csv}``: one series of ``time`` and ``value`` columns as a windowed forecast
(notes 001 on sequences; the layout of melbourne_temp). The ``window`` values before step ``t`` predict the values
of steps ``t`` .. ``t + horizon - 1``. Samples are split by time, never shuffled (:func:`chronological_split`);
the window features are standardised with the train split's mean and std, and targets stay in the series' units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import DatasetConfig
from pipelines.config.sources import TimeseriesCsvSource, resolve_path
from pipelines.data.preparers.churn import _reject_rows, standardize
from pipelines.data.preparers.common import Prepared
from pipelines.data.preparers.sources import source_meta, source_reader
from pipelines.data.preparers.table import read_table
from pipelines.data.preparers.temperature import chronological_split
from pipelines.errors import DataError


def series_windows(values: np.ndarray, window: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Samples of a series: ``x[k] = values[k : k + window]`` and ``y[k] = values[k + window : k + window +
    horizon]``; returns ``x`` (M, window) and ``y`` (M, horizon) with ``M = len(values) - window - horizon + 1``."""
    rows = np.lib.stride_tricks.sliding_window_view(values, window + horizon)
    return rows[:, :window].copy(), rows[:, window:].copy()


@source_reader("timeseries_csv")
def prepare_timeseries_csv(
    name: str, source: TimeseriesCsvSource, config: DatasetConfig, seed: int, root: Path
) -> Prepared:
    """A user time series: x float32 (N, window) standardised, y float32 (N,) (``horizon`` 1) or (N, horizon),
    in the series' units.

    Raises:
        DataFormatError: a missing column, an empty value, a time that does not parse or is not after the one
            before it, or a value that is not a finite number (naming the line).
        DataError: the series is too short for ``window``, ``horizon`` and the split fractions.
    """
    path = resolve_path(source.path, root)
    frame = read_table(path, [source.time, source.value])
    times = pd.to_datetime(frame[source.time], errors="coerce", format="mixed")
    _reject_rows(path, times.isna().to_numpy(), frame[source.time], source.time, "a date or time")
    not_after = np.concatenate([[False], np.diff(times.to_numpy()) <= np.timedelta64(0)])
    _reject_rows(path, not_after, frame[source.time], source.time, "a time after the previous line's")
    values = pd.to_numeric(frame[source.value], errors="coerce").to_numpy(dtype=np.float64)
    _reject_rows(path, ~np.isfinite(values), frame[source.value], source.value, "a finite number")
    window, horizon = config.window, source.horizon
    if len(values) < window + horizon:
        raise DataError(f"{path}: {len(values)} rows are fewer than window {window} + horizon {horizon}")
    x, y = series_windows(values, window, horizon)
    index = chronological_split(len(y), config)
    empty = [split for split, idx in index.items() if len(idx) == 0]
    if empty:
        raise DataError(
            f"{path}: {len(y)} windows of {window} steps leave no sample for {', '.join(empty)}; "
            "use a smaller window or other split fractions"
        )
    names = [f"t-{lag}" for lag in range(window, 0, -1)]
    xs = {split: x[idx] for split, idx in index.items()}
    stats = standardize(xs, list(range(window)), names)
    y = y[:, 0] if horizon == 1 else y
    arrays = {split: (xs[split].astype(np.float32), y[idx].astype(np.float32)) for split, idx in index.items()}
    target_time = times.iloc[window:].reset_index(drop=True)
    meta = source_meta(name, source, "regression", seed, root)
    meta.update(
        input_shape=[window],
        window=window,
        horizon=horizon,
        feature_names=names,
        numeric_features=list(range(window)),
        target=f"{source.value} of the {horizon} step(s) after the window (unscaled)",
        split_method="chronological (not shuffled)",
        split_times={
            split: [str(target_time[int(idx[0])]), str(target_time[int(idx[-1])])] for split, idx in index.items()
        },
        normalization={"method": "standard", "fitted_on": "train", "features": stats},
    )
    return Prepared(arrays, meta, {})
