"""Pure readers of the raw file formats. Every failure is a :class:`~pipelines.errors.DataFormatError` naming the file.

Compression is detected from the gzip magic bytes, not the extension, so ``.gz`` and plain files both work.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from pipelines.errors import DataFormatError

#: IDX element types (third byte of the magic number): code -> (big-endian numpy dtype, name).
IDX_DTYPES: dict[int, str] = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
#: Magic numbers of the MNIST-family files: 2049 = unsigned bytes, 1 dimension (labels); 2051 = 3 dimensions (images).
IDX_LABELS_MAGIC = 2049
IDX_IMAGES_MAGIC = 2051
#: CIFAR-10 binary version: one record per image, 1 label byte then 1,024 R, 1,024 G and 1,024 B bytes (32x32 planes).
CIFAR_IMAGE_SHAPE = (3, 32, 32)
CIFAR_RECORD_BYTES = 1 + 3 * 32 * 32
CIFAR10_NUM_CLASSES = 10
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def read_bytes(path: str | Path) -> bytes:
    """Return the content of ``path``, decompressed when it is gzip.

    Raises:
        DataFormatError: the file is missing, or its gzip stream is truncated or corrupt.
    """
    path = Path(path)
    try:
        if _is_gzip(path):
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: file not found") from None
    except _GZIP_ERRORS as exc:
        raise DataFormatError(f"{path}: gzip stream is truncated or corrupt ({exc})") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    The header is a big-endian magic number ``0x0000TTDD`` (``TT`` the element type, ``DD`` the number of
    dimensions; 2049 for MNIST labels, 2051 for MNIST images) followed by ``DD`` big-endian uint32 sizes.

    Returns:
        an array of the header's shape in native byte order, e.g. ``uint8 (60000, 28, 28)`` for MNIST train images
        or ``uint8 (10000,)`` for the test labels.

    Raises:
        DataFormatError: naming the file and what was wrong: an unknown magic number, a header cut short, or a
            payload whose length does not match the header (``truncated: header says 60000x28x28 = 47040000
            bytes, found 123``).
    """
    path = Path(path)
    data = read_bytes(path)
    if len(data) < 4:
        raise DataFormatError(f"{path}: not an IDX file: {len(data)} bytes, too short for the 4-byte magic number")
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in IDX_DTYPES or ndim == 0:
        raise DataFormatError(
            f"{path}: not an IDX file: magic number {magic} (0x{magic:08x}); expected 0x0000TTDD with a known "
            f"element type TT, e.g. {IDX_LABELS_MAGIC} (labels) or {IDX_IMAGES_MAGIC} (images)"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataFormatError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header_len} bytes, found {len(data)}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = int(np.prod(dims)) * dtype.itemsize
    found = len(data) - header_len
    if found != expected:
        what = "truncated" if found < expected else "trailing data"
        raise DataFormatError(
            f"{path}: {what}: header says {'x'.join(map(str, dims))} = {expected} bytes, found {found}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims).astype(dtype.newbyteorder("="))


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a CIFAR-10 binary-version batch (``data_batch_N.bin``, ``test_batch.bin``), gzip-compressed or not.

    The file is a sequence of 3,073-byte records: a label byte (0-9) and 3,072 pixel bytes, the R, G and B planes of a
    32x32 image, each in row-major order (10,000 records per canonical batch).

    Returns:
        ``images`` uint8 (N, 3, 32, 32) (channels R, G, B) and ``labels`` int64 (N,).

    Raises:
        DataFormatError: naming the file and what was wrong: an empty file or a length that is not a whole number
            of records (``truncated or malformed CIFAR-10 batch: 308300 bytes is not a whole number of 3073-byte
            records ...``), a label byte above 9, or a truncated or corrupt gzip stream.
    """
    path = Path(path)
    data = read_bytes(path)
    records, rest = divmod(len(data), CIFAR_RECORD_BYTES)
    if records == 0 or rest:
        raise DataFormatError(
            f"{path}: truncated or malformed CIFAR-10 batch: {len(data)} bytes is not a whole number of "
            f"{CIFAR_RECORD_BYTES}-byte records (1 label byte + {CIFAR_RECORD_BYTES - 1} pixel bytes): "
            f"{records} records and {rest} bytes left over"
        )
    table = np.frombuffer(data, dtype=np.uint8).reshape(records, CIFAR_RECORD_BYTES)
    labels = table[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels >= CIFAR10_NUM_CLASSES)
    if bad.size:
        raise DataFormatError(
            f"{path}: record {int(bad[0])} (byte {int(bad[0]) * CIFAR_RECORD_BYTES}): label byte "
            f"is {int(labels[bad[0]])}; expected 0-{CIFAR10_NUM_CLASSES - 1}"
        )
    return np.ascontiguousarray(table[:, 1:]).reshape(records, *CIFAR_IMAGE_SHAPE), labels


def _open_text(path: Path) -> IO[str]:
    raw = gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def _find_bad_row(path: Path, columns: Sequence[str]) -> str | None:
    """Scan ``path`` with the csv module; describe the first row with a wrong field count or an empty field."""
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        next(reader, None)  # header, checked separately
        for row in reader:
            if len(row) != len(columns):
                return f"line {reader.line_num}: expected {len(columns)} fields ({','.join(columns)}), found {len(row)}"
            empty = [name for name, value in zip(columns, row) if value == ""]
            if empty:
                return f"line {reader.line_num}: empty value in column(s) {', '.join(empty)}"
    return None


def read_csv(path: str | Path, expected_columns: Sequence[str], **kwargs) -> pd.DataFrame:
    """Read a UTF-8 CSV file (or gzip CSV) with a header row, strictly.

    Every row must have exactly ``len(expected_columns)`` fields and no field may be empty. The header must equal
    ``expected_columns`` (same names, same order).

    Args:
        path: the file, e.g. ``churn/Churn_Modelling.csv`` or ``imdb/imdb_reviews.csv.gz``.
        expected_columns: the header, in order.
        **kwargs: passed to :func:`pandas.read_csv` (e.g. ``dtype``).

    Returns:
        the rows; row ``i`` of the frame is line ``i + 2`` of the file when no field spans lines.

    Raises:
        DataFormatError: naming the file and what was wrong: a different header, a row with the wrong number of
            fields or an empty field (with its line number), invalid UTF-8, or a truncated/corrupt gzip stream.
    """
    path = Path(path)
    expected_columns = list(expected_columns)
    try:
        frame = pd.read_csv(
            path, compression="gzip" if _is_gzip(path) else None, encoding="utf-8", on_bad_lines="error", **kwargs
        )
        bad = None
    except FileNotFoundError:
        raise DataFormatError(f"{path}: file not found") from None
    except _GZIP_ERRORS as exc:
        raise DataFormatError(f"{path}: gzip stream is truncated or corrupt ({exc})") from None
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not valid UTF-8 ({exc})") from None
    except pd.errors.EmptyDataError:
        raise DataFormatError(f"{path}: empty file; expected a header {','.join(expected_columns)}") from None
    except pd.errors.ParserError as exc:
        frame, bad = None, str(exc).strip()
    if frame is not None and list(frame.columns) != expected_columns:
        raise DataFormatError(
            f"{path}: header is {','.join(map(str, frame.columns))}; expected {','.join(expected_columns)}"
        )
    if frame is None or frame.isna().to_numpy().any():
        # Rows with too few fields or empty fields read as missing values: find the line with the csv module.
        bad = _find_bad_row(path, expected_columns) or bad or "missing values"
        raise DataFormatError(f"{path}: malformed CSV: {bad}")
    return frame
