"""``source: {format: csv}``: the user's own table (notes 001, standardising inputs; one-hot categories).

One row per sample: a ``target`` column and feature columns. A column is categorical when it holds text (and
fewer than nine in ten of its values read as numbers), or when ``categorical`` lists it; categories are one-hot
encoded with the train split's categories in sorted order (a category unseen in train encodes as all zeros).
Every other column is numeric and is standardised with the train split's mean and std (``meta.normalization``),
as churn's are. ``drop`` leaves identifier columns out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.config import DatasetConfig
from pipelines.config.sources import CsvSource, resolve_path
from pipelines.data.encoding import one_hot
from pipelines.data.preparers.churn import standardize
from pipelines.data.preparers.common import Prepared
from pipelines.data.preparers.sources import (
    check_class_counts,
    encode_classes,
    infer_task,
    random_splits,
    source_meta,
    source_reader,
)
from pipelines.data.readers import _is_gzip
from pipelines.errors import DataFormatError

#: A text column is read as numeric (and a non-number in it is an error) when at least this share parses as numbers.
NUMERIC_SHARE = 0.9


def read_table(path: Path, required: Sequence[str], **kwargs: Any) -> pd.DataFrame:
    """Read a UTF-8 CSV (or gzip CSV) with a header row, with the columns ``required`` present and no empty value.

    Raises:
        DataNotFoundError: no such file.
        DataFormatError: naming the file and the problem: a missing column (listing the ones found), an empty
            value (with its line and column), a row with too many fields, invalid UTF-8, an empty file.
    """
    from pipelines.errors import DataNotFoundError

    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such file")
    try:
        header = pd.read_csv(path, nrows=0, compression="gzip" if _is_gzip(path) else None, encoding="utf-8")
        missing = [c for c in required if c not in header.columns]
        if missing:
            raise DataFormatError(
                f"{path}: no column {', '.join(map(repr, missing))}; the header has {', '.join(map(str, header.columns))}"
            )
        # only an empty field is missing: "NA" or "n/a" is a value (and an error in a numeric column)
        frame = pd.read_csv(
            path,
            compression="gzip" if _is_gzip(path) else None,
            encoding="utf-8",
            on_bad_lines="error",
            keep_default_na=False,
            na_values=[""],
            **kwargs,
        )
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not valid UTF-8 ({exc})") from None
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"{path}: empty file; expected a header row") from None
    except pd.errors.ParserError as exc:
        raise DataFormatError(f"{path}: malformed CSV: {str(exc).strip()}") from None
    empty = frame.isna().to_numpy()
    if empty.any():
        row, col = np.argwhere(empty)[0]
        raise DataFormatError(f"{path}: line {row + 2}, column {frame.columns[col]}: empty value")
    if frame.empty:
        raise DataFormatError(f"{path}: no rows after the header")
    return frame


def numeric_column(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray | None:
    """The column as float64 when it is numeric, ``None`` when it is categorical (text).

    Raises:
        DataFormatError: a mostly numeric column with a value that is not a number (naming its line and column).
    """
    values = frame[column]
    if values.dtype == bool:
        return values.to_numpy(dtype=np.float64)
    if values.dtype.kind in "iuf":
        return values.to_numpy(dtype=np.float64)
    parsed = pd.to_numeric(values, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.mean() > 1 - NUMERIC_SHARE:
        return None
    row = int(np.flatnonzero(bad)[0])
    raise DataFormatError(f"{path}: line {row + 2}, column {column}: {values.iloc[row]!r} is not a number")


def _target(frame: pd.DataFrame, source: CsvSource, path: Path, task: str) -> tuple[np.ndarray, list[str] | None]:
    from pipelines.tasks import get_task

    values = frame[source.target].to_numpy()
    if not get_task(task).reads_classes:
        numbers = numeric_column(frame, source.target, path)
        if numbers is None:
            raise DataFormatError(f"{path}: column {source.target}: a regression target must be numeric")
        return numbers.astype(np.float32), None
    y, classes = encode_classes(values, path, source.target, task)
    return y, classes


def feature_kinds(frame: pd.DataFrame, source: CsvSource, path: Path) -> dict[str, bool]:
    """``{feature column: is numeric}`` of a whole table, in column order (before any split, so that an error names
    the line of the file).

    Raises:
        DataFormatError: a mostly numeric column with a value that is not a number.
    """
    columns = [c for c in frame.columns if c != source.target and c not in source.drop]
    if not columns:
        raise DataFormatError(f"{path}: no feature columns besides the target {source.target!r}")
    return {c: c not in source.categorical and numeric_column(frame, c, path) is not None for c in columns}


def check_numeric(frame: pd.DataFrame, kinds: dict[str, bool], path: Path) -> None:
    """The numeric columns of ``kinds`` are numeric in ``frame`` too (a given test table).

    Raises:
        DataFormatError: naming the file, line and column of the first value that is not a number.
    """
    for column, numeric in kinds.items():
        if numeric and numeric_column(frame, column, path) is None:
            raise DataFormatError(f"{path}: column {column}: expected numbers, as in the train table")


def encode_features(
    frames: dict[str, pd.DataFrame], kinds: dict[str, bool]
) -> tuple[dict[str, np.ndarray], list[str], list[int], dict[str, list[str]]]:
    """Encode the feature columns of every split with the train split's categories (numeric ones unscaled).

    Returns ``x`` per split (float64), the feature names, the indices of the numeric features, and the categories
    of each one-hot column.
    """
    train = frames["train"]
    names: list[str] = []
    numeric: list[int] = []
    categories: dict[str, list[str]] = {}
    blocks: dict[str, list[np.ndarray]] = {split: [] for split in frames}
    for column, is_numeric in kinds.items():
        if is_numeric:
            numeric.append(len(names))
            names.append(column)
            for split, frame in frames.items():
                blocks[split].append(pd.to_numeric(frame[column]).to_numpy(dtype=np.float64)[:, None])
            continue
        cats = sorted(map(str, train[column].unique()))
        categories[column] = cats
        names += [f"{column}_{cat}" for cat in cats]
        for split, frame in frames.items():
            blocks[split].append(one_hot(frame[column].to_numpy(), cats))
    return {split: np.concatenate(b, axis=1) for split, b in blocks.items()}, names, numeric, categories


@source_reader("csv")
def prepare_csv(name: str, source: CsvSource, config: DatasetConfig, seed: int, root: Path) -> Prepared:
    """A user table: x float32 (N, features), y int64 classes (or float32 values for regression).

    Raises:
        DataFormatError, DataError: see :func:`~pipelines.data.preparers.sources.prepare_source`.
    """
    path = resolve_path(source.path, root)
    required = [source.target, *source.categorical, *source.drop]
    frame = read_table(path, required)
    kinds = feature_kinds(frame, source, path)
    task = source.task or infer_task(frame[source.target].to_numpy())
    given_test = source.test_path is not None
    if given_test:
        test_path = resolve_path(source.test_path, root)  # type: ignore[arg-type]
        test = read_table(test_path, list(frame.columns))
        if list(test.columns) != list(frame.columns):
            raise DataFormatError(
                f"{test_path}: header is {','.join(test.columns)}; expected the columns of {path.name}: "
                f"{','.join(frame.columns)}"
            )
        check_numeric(test, kinds, test_path)
        both = pd.concat([frame, test], ignore_index=True)
    else:
        both = frame
    y_all, classes = _target(both, source, path, task)
    y, y_test = y_all[: len(frame)], y_all[len(frame) :]
    if classes is not None:
        check_class_counts(y, classes, 2 if given_test else 3, f"{path}: column {source.target}")
    index = random_splits(y if classes is not None else np.zeros(len(y)), config, seed, test=not given_test)
    frames = {split: frame.iloc[idx].reset_index(drop=True) for split, idx in index.items()}
    ys = {split: y[idx] for split, idx in index.items()}
    if given_test:
        frames["test"], ys["test"] = test, y_test
    x, names, numeric, categories = encode_features(frames, kinds)
    stats = standardize(x, numeric, names)
    arrays = {split: (x[split].astype(np.float32), ys[split]) for split in ("train", "val", "test")}
    meta = source_meta(name, source, task, seed, root)
    if classes is not None:
        meta.update(classes=classes, num_classes=len(classes))
    meta.update(
        input_shape=[len(names)],
        target=source.target,
        feature_names=names,
        numeric_features=numeric,
        categories=categories,
        dropped_columns=list(source.drop),
        normalization={"method": "standard", "fitted_on": "train", "features": stats},
    )
    return Prepared(arrays, meta, {})
