"""The bank-churn table: identifiers dropped, categories encoded, numeric columns standardised on train."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.config import DatasetConfig
from pipelines.data.catalog import get_dataset
from pipelines.data.preparers.common import (
    Prepared,
    base_meta,
    carve_train_val,
    fetch_files,
    split_indices,
)
from pipelines.data.readers import read_csv
from pipelines.errors import DataFormatError

log = logging.getLogger(__name__)

CHURN_COLUMNS = (
    "RowNumber",
    "CustomerId",
    "Surname",
    "CreditScore",
    "Geography",
    "Gender",
    "Age",
    "Tenure",
    "Balance",
    "NumOfProducts",
    "HasCrCard",
    "IsActiveMember",
    "EstimatedSalary",
    "Exited",
)
CHURN_DROPPED = ("RowNumber", "CustomerId", "Surname")  # identifiers: no signal, only leakage
CHURN_GEOGRAPHIES = ("France", "Germany", "Spain")
CHURN_GENDERS = {"Female": 0, "Male": 1}
#: Continuous and count features: standardised with train statistics (and the only ones augmentation perturbs).
CHURN_NUMERIC = ("CreditScore", "Age", "Tenure", "Balance", "NumOfProducts", "EstimatedSalary")
CHURN_TARGET = "Exited"


def _reject_rows(path: Path, bad: np.ndarray, column: Any, name: str, expected: str) -> None:
    """Raise a :class:`DataFormatError` naming the line of the first row flagged in ``bad``, if any."""
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"{path}: line {row + 2}: {name} is {column.iloc[row]!r}; expected {expected}")


def _check_values(path: Path, column: Any, allowed: Any, name: str) -> None:
    _reject_rows(path, (~column.isin(list(allowed))).to_numpy(), column, name, f"one of {', '.join(map(str, allowed))}")


def churn_features(frame, path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Encode the churn table: drop identifiers, one-hot Geography, Gender to 0/1.

    Returns:
        ``x`` float64 (N, 12) unscaled, ``y`` int64 (N,) from ``Exited``, and the feature names in column order.

    Raises:
        DataFormatError: an unknown Geography or Gender, or a target that is not 0/1 (naming the line).
    """
    _check_values(path, frame["Geography"], CHURN_GEOGRAPHIES, "Geography")
    _check_values(path, frame["Gender"], CHURN_GENDERS, "Gender")
    _check_values(path, frame[CHURN_TARGET], (0, 1), CHURN_TARGET)
    columns: dict[str, np.ndarray] = {}
    for name in CHURN_COLUMNS:
        if name in CHURN_DROPPED or name == CHURN_TARGET:
            continue
        if name == "Geography":
            for country in CHURN_GEOGRAPHIES:
                columns[f"Geography_{country}"] = (frame[name] == country).to_numpy(dtype=np.float64)
        elif name == "Gender":
            columns[name] = frame[name].map(CHURN_GENDERS).to_numpy(dtype=np.float64)
        else:
            try:
                columns[name] = frame[name].to_numpy(dtype=np.float64)
            except (TypeError, ValueError):
                raise DataFormatError(f"{path}: column {name} is not numeric") from None
    x = np.stack(list(columns.values()), axis=1)
    return x, frame[CHURN_TARGET].to_numpy(dtype=np.int64), list(columns)


def standardize(x: dict[str, np.ndarray], columns: list[int], names: list[str]) -> dict[str, dict[str, float]]:
    """Standardise ``columns`` of every split in ``x`` in place with the mean/std (ddof 0) of ``x['train']``.

    Returns ``{feature name: {"mean": m, "std": s}}``. A constant column keeps std 1 (it becomes all zeros).
    """
    stats = {}
    train = x["train"]
    for col in columns:
        mean, std = float(train[:, col].mean()), float(train[:, col].std())
        std = std if std > 0 else 1.0
        for values in x.values():
            values[:, col] = (values[:, col] - mean) / std
        stats[names[col]] = {"mean": mean, "std": std}
    return stats


def prepare_churn(
    config: DatasetConfig, seed: int, *, mirror: str | Path | None = None, name: str = "churn"
) -> Prepared:
    """Bank churn: x float32 (N, 12), y int64 ``Exited``.

    Features, in order: CreditScore, Geography_France, Geography_Germany, Geography_Spain, Gender (Female 0,
    Male 1), Age, Tenure, Balance, NumOfProducts, HasCrCard, IsActiveMember, EstimatedSalary. The numeric ones
    (:data:`CHURN_NUMERIC`) are standardised with the train split's mean and std (``meta.normalization``).
    Splits, stratified on ``Exited``: ``test_fraction`` of all rows is test, ``val_fraction`` of the rest is val.

    Raises:
        DataNotFoundError, DataIntegrityError: from :func:`~pipelines.data.fetch.fetch`.
        DataFormatError: the CSV is malformed (naming the line) or holds an unexpected category.
    """
    entry = get_dataset(name)
    path = fetch_files(entry, mirror)["Churn_Modelling.csv"]
    x, y, names = churn_features(read_csv(path, CHURN_COLUMNS), path)
    rest, test = split_indices(y, config.test_fraction, seed)
    train, val = carve_train_val(y[rest], config, seed)
    index = {"train": rest[train], "val": rest[val], "test": test}
    xs = {split: x[idx] for split, idx in index.items()}
    numeric = [names.index(name) for name in CHURN_NUMERIC]
    stats = standardize(xs, numeric, names)
    arrays = {split: (xs[split].astype(np.float32), y[idx]) for split, idx in index.items()}
    meta = base_meta(entry, seed)
    meta.update(
        input_shape=[len(names)],
        feature_names=names,
        numeric_features=numeric,
        dropped_columns=list(CHURN_DROPPED),
        categories={"Geography": list(CHURN_GEOGRAPHIES)},  # one-hot, and Gender as codes: how raw rows encode
        category_codes={"Gender": CHURN_GENDERS},
        normalization={"method": "standard", "fitted_on": "train", "features": stats},
    )
    return Prepared(arrays, meta, {})
