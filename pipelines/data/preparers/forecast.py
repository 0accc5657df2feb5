"""Forecasting datasets (the ``forecasting`` task; notes 002, "TYPES OF RNN", many to many): the ``window`` past
values of a series predict its next ``horizon`` values.

==================  ============================  ===========================  =======================================
dataset             series                        x                            y
==================  ============================  ===========================  =======================================
airline_passengers  monthly, 1949-01 to 1960-12,  float32 (N, window):         float32 (N, horizon): the next months,
                    thousands of passengers       log, then standardised       thousands of passengers (unscaled)
melbourne_temp_7d   daily minima, Melbourne       float32 (N, window):         float32 (N, horizon): the next days'
                    1981-1990, °C                 standardised                 minima, °C (unscaled)
==================  ============================  ===========================  =======================================

Splits are by the time of the targets, never shuffled (:func:`split_bounds`, :func:`forecast_samples`): the test
split holds the last ``test_steps`` time steps (else ``ceil(test_fraction * steps)``), val the last
``ceil(val_fraction * rest)`` steps before them, train the earlier ones. A sample belongs to the split that holds
*all* of its ``horizon`` targets; one whose targets straddle a boundary is dropped, so every test target lies after
every val target, and every val target after every train target. A window may look back into the previous split's
values, as a forecast would.

The input transform (``meta.normalization``) is fitted on the train steps alone: airline's seasonality grows with its
level (multiplicative), so its values are logged first (:data:`SERIES`), which makes the seasonal swing additive and
the trend linear; then they are standardised with the train steps' mean and std. The network predicts its targets
in the same transformed space (the task inverts it); targets are stored and every metric is reported in the series'
own units. The series itself, with each sample's first target index (``meta.series``, ``meta.target_index``), is kept
for the baselines, whose seasonal-naive forecast of a target may lie before its window.

Melbourne's file lacks two dates (1984-12-31, 1988-12-31): the series is laid on the full calendar with those days
linearly interpolated between their neighbours (``meta.series.filled``), so every lag is a calendar lag (365 days
is a year); a sample whose *targets* include a filled day is dropped (no metric is computed on an invented value).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from pipelines.config import DatasetConfig
from pipelines.data.catalog import get_dataset
from pipelines.data.preparers.churn import _reject_rows
from pipelines.data.preparers.common import Prepared, base_meta, fetch_files
from pipelines.data.preparers.temperature import TEMPERATURE_COLUMNS, chronological_split, daily_series
from pipelines.data.preparers.timeseries import series_windows
from pipelines.data.readers import read_csv
from pipelines.errors import DataError

AIRLINE_COLUMNS = ("Month", "Passengers")


@dataclass(frozen=True)
class SeriesSpec:
    """How one catalog series is read and scaled.

    Attributes:
        file: the raw file's name in the catalog entry.
        columns: the CSV header (time, value).
        step: ``month`` or ``day``: the time step of the series.
        period: the seasonal period in steps (12 months, 365 days): the lag of the seasonal-naive forecast.
        unit: the unit of the values, in which every metric is reported.
        log: whether the values are logged before standardising (multiplicative seasonality; values must be > 0).
    """

    file: str
    columns: tuple[str, str]
    step: Literal["month", "day"]
    period: int
    unit: str
    log: bool


#: The forecasting datasets of the catalog.
SERIES: dict[str, SeriesSpec] = {
    "airline_passengers": SeriesSpec(
        "airline-passengers.csv", AIRLINE_COLUMNS, "month", 12, "thousands of passengers", log=True
    ),
    "melbourne_temp_7d": SeriesSpec("daily-min-temperatures.csv", TEMPERATURE_COLUMNS, "day", 365, "°C", log=False),
}


def monthly_series(frame: pd.DataFrame, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse a monthly ``Month,Passengers`` table: ``months`` datetime64[M], consecutive, and ``values`` float64.

    Raises:
        DataFormatError: a month that is not ``YYYY-MM``, a month that is not the one after the previous line's,
            or a value that is not a finite number (naming the line).
    """
    time, value = AIRLINE_COLUMNS
    parsed = pd.to_datetime(frame[time], format="%Y-%m", errors="coerce")
    _reject_rows(path, parsed.isna().to_numpy(), frame[time], time, "a month YYYY-MM")
    values = pd.to_numeric(frame[value], errors="coerce").to_numpy(dtype=np.float64)
    _reject_rows(path, ~np.isfinite(values), frame[value], value, "a finite number")
    months = parsed.to_numpy().astype("datetime64[M]")
    gap = np.concatenate([[False], np.diff(months) != np.timedelta64(1, "M")])
    _reject_rows(path, gap, frame[time], time, "the month after the previous line's")
    return months, values


def fill_calendar(days: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A daily series on its full calendar: ``(all_days, values, filled)`` where missing days get the linear
    interpolation of their neighbours and ``filled`` (int64) lists their indices."""
    all_days = np.arange(days[0], days[-1] + np.timedelta64(1, "D"))
    position = (days - days[0]).astype(np.int64)
    full = np.interp(np.arange(len(all_days)), position, values)
    filled = np.setdiff1d(np.arange(len(all_days)), position)
    return all_days, full, filled


def split_bounds(n_steps: int, config: DatasetConfig) -> tuple[int, int]:
    """``(val_start, test_start)``: the first time step of val and of test among ``n_steps`` steps.

    Test is the last ``config.test_steps`` steps, else ``ceil(test_fraction * n_steps)`` of them; val is
    ``ceil(val_fraction * rest)`` steps before it (:func:`chronological_split`'s rule, on time steps).
    """
    if config.test_steps is None:
        index = chronological_split(n_steps, config.model_copy(update={"max_train_samples": None}))
        return int(index["val"][0]) if len(index["val"]) else int(index["test"][0]), int(index["test"][0])
    test_start = n_steps - config.test_steps
    return test_start - int(np.ceil(config.val_fraction * test_start)), test_start


def forecast_samples(
    n_steps: int, window: int, horizon: int, val_start: int, test_start: int, excluded: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The first target index of each sample, by split: ``{split: (M,) int64}``, increasing.

    Sample ``t`` reads steps ``t - window .. t - 1`` and predicts ``t .. t + horizon - 1``; it is train when all its
    targets are before ``val_start``, val when they lie in ``[val_start, test_start)``, test when they are at or
    after ``test_start``; samples straddling a boundary, or with a target in ``excluded`` (indices), are dropped.
    """
    first = np.arange(window, n_steps - horizon + 1)
    last = first + horizon - 1
    keep = np.ones(len(first), dtype=bool)
    if excluded is not None and len(excluded):
        hit = np.zeros(n_steps, dtype=np.int64)
        hit[excluded] = 1
        covered = np.concatenate([[0], np.cumsum(hit)])  # covered[b] - covered[a]: excluded steps in [a, b)
        keep = covered[last + 1] - covered[first] == 0
    return {
        "train": first[keep & (last < val_start)],
        "val": first[keep & (first >= val_start) & (last < test_start)],
        "test": first[keep & (first >= test_start)],
    }


def encode_series(values: np.ndarray, log: bool, mean: float, std: float) -> np.ndarray:
    """Values in the series' units -> the network's scale: ``(log(v) - mean) / std`` (``log`` False: ``(v - mean)
    / std``), in float64. Shared by the preparer and the served raw input (:mod:`pipelines.data.encoding`)."""
    values = np.asarray(values, dtype=np.float64)
    return ((np.log(values) if log else values) - mean) / std


def seasonal_naive_scale(train: np.ndarray, period: int) -> tuple[float, int]:
    """MASE's scale: the in-sample mean absolute error of the seasonal-naive forecast ``v[t - period]`` on the train
    values (Hyndman & Koehler 2006, "Another look at measures of forecast accuracy"). Returns ``(scale, lag)``;
    with ``period + 1`` train values or fewer the lag is 1 (the naive forecast), and ``lag`` says so.

    Raises:
        DataError: fewer than 2 train values, or a scale of 0 (a constant train series).
    """
    lag = period if len(train) > period else 1
    if len(train) <= lag:
        raise DataError(f"{len(train)} train value(s): too few for a naive forecast's error (MASE's scale)")
    scale = float(np.mean(np.abs(train[lag:] - train[:-lag])))
    if scale == 0:
        raise DataError("the train series is constant: MASE's scale (its naive forecast's error) is 0")
    return scale, lag


def _read_series(name: str, spec: SeriesSpec, mirror: str | Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(times, values, filled)`` of a catalog series: ``datetime64[M]`` or ``[D]`` times, float64 values in its
    units, and the indices of days the file lacks (interpolated; :func:`fill_calendar`)."""
    entry = get_dataset(name)
    path = fetch_files(entry, mirror)[spec.file]
    frame = read_csv(path, spec.columns)
    if spec.step == "month":
        months, values = monthly_series(frame, path)
        return months, values, np.empty(0, dtype=np.int64)
    days, values = daily_series(frame, path)
    return fill_calendar(days, values)


def prepare_forecast(
    config: DatasetConfig, seed: int, *, mirror: str | Path | None = None, name: str = "airline_passengers"
) -> Prepared:
    """A catalog series (:data:`SERIES`) as windowed forecasts: x float32 (N, window) on the network's scale,
    y float32 (N, horizon) in the series' units (module docstring). ``seed`` is only recorded: nothing is random.

    Raises:
        DataNotFoundError, DataIntegrityError: from :func:`~pipelines.data.fetch.fetch`.
        DataFormatError: the CSV is malformed, a time or value does not parse, or times are out of order.
        DataError: a non-positive value in a logged series, or a series too short for ``window``, ``horizon`` and
            the split (naming the split left empty).
    """
    spec = SERIES[name]
    times, values, filled = _read_series(name, spec, mirror)
    window, horizon = config.window, config.horizon
    if spec.log and values.min() <= 0:
        raise DataError(f"dataset {name!r}: a value {values.min()} <= 0 cannot be logged")
    val_start, test_start = split_bounds(len(values), config)
    if not 0 < val_start < test_start < len(values):
        raise DataError(
            f"dataset {name!r}: {len(values)} steps split at val {val_start}, test {test_start}: a split is empty; "
            "use other split fractions or test_steps"
        )
    first = forecast_samples(len(values), window, horizon, val_start, test_start, filled)
    if config.max_train_samples is not None:
        first["train"] = first["train"][-config.max_train_samples :]  # the latest ones, just before val
    empty = [split for split, idx in first.items() if len(idx) == 0]
    if empty:
        raise DataError(
            f"dataset {name!r}: {len(values)} steps with window {window} and horizon {horizon} leave no sample for "
            f"{', '.join(empty)}; use a smaller window or horizon, or other split fractions"
        )
    train_values = values[:val_start]  # every value a train sample reads or predicts
    scaled_train = np.log(train_values) if spec.log else train_values
    mean, std = float(scaled_train.mean()), float(scaled_train.std())
    std = std if std > 0 else 1.0
    scaled = encode_series(values, spec.log, mean, std)
    x_all, y_all = series_windows(scaled, window, horizon)  # row k: inputs before step k + window
    _, y_units = series_windows(values, window, horizon)
    arrays = {
        split: (x_all[idx - window].astype(np.float32), y_units[idx - window].astype(np.float32))
        for split, idx in first.items()
    }
    scale, lag = seasonal_naive_scale(train_values, spec.period)
    stamp = [str(t) for t in times]
    entry = get_dataset(name)
    meta: dict[str, Any] = base_meta(entry, seed)
    meta.update(
        input_shape=[window],
        window=window,
        horizon=horizon,
        input_names=[f"t-{lag_}" for lag_ in range(window, 0, -1)],
        target=f"the {horizon} value(s) after the window, {spec.unit} (unscaled)",
        unit=spec.unit,
        split_method="by the time of the targets (not shuffled): a sample is in the split that holds all its "
        "targets; samples straddling a boundary are dropped",
        split_steps={"val_start": val_start, "test_start": test_start, "steps": len(values)},
        split_times={split: [stamp[int(idx[0])], stamp[int(idx[-1]) + horizon - 1]] for split, idx in first.items()},
        normalization={
            "method": "log-standard" if spec.log else "standard",
            "log": spec.log,
            "mean": mean,
            "std": std,
            "fitted_on": f"train steps {stamp[0]} to {stamp[val_start - 1]}",
        },
        forecast={
            "horizon": horizon,
            "period": spec.period,
            "step": spec.step,
            "unit": spec.unit,
            "mase_scale": scale,
            "mase_lag": lag,
            "mase_note": f"in-sample MAE of the lag-{lag} naive forecast on the train steps"
            + ("" if lag == spec.period else f" (fewer than {spec.period + 1} train steps: lag 1, not {spec.period})"),
        },
        series={
            "start": stamp[0],
            "step": spec.step,
            "values": [float(v) for v in values],
            "filled": [int(i) for i in filled],
            "filled_times": [stamp[int(i)] for i in filled],
        },
        target_index={split: [int(i) for i in idx] for split, idx in first.items()},
    )
    return Prepared(arrays, meta, {})
