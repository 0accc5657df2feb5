"""Raw inputs -> the prepared layout: what a served model applies to a user's raw sample (notes 001, standardising
inputs; one-hot categories; tokenising text), rebuilt from a prepared dataset's ``meta.json`` alone.

A :class:`RawInput` is the inverse view of a preparer: the preparer fitted its statistics on the train split and
recorded them in ``meta.json`` (``normalization``, ``categories``, ``category_codes``, ``tokenizer``); the raw input
reads them back and encodes new samples exactly as the preparer encoded its splits (``tests/test_serving.py``
checks the two agree bit for bit on real rows, images and reviews). Each kind registers itself with
:func:`raw_input`; :func:`raw_input_for` picks the one whose :meth:`RawInput.accepts` takes the meta:

=========  =============================================  ==============================================
kind       raw input (MLflow signature)                   encoding
=========  =============================================  ==============================================
``table``  one named column per raw column: numbers       standardised with the train mean/std, one-hot
           (``double``), categories (``string``)          (train categories; unseen: all zeros), or
                                                          mapped to codes (churn's Gender)
``image``  a tensor ``(-1, C, H, W)`` of 0-255 pixels     min-max (pixel / 255), or per-channel
                                                          standardisation (CIFAR-10)
``text``   a ``text`` column of strings                   the dataset's cleaning, then its own
                                                          ``tokenizer.json`` (padding and truncation)
``chars``  a ``text`` column of strings                   the last T characters as ids of ``meta.vocab``
                                                          (left-padded with newlines; unseen: an error)
``series`` one number column per past step             logged (if the dataset is), standardised with
           (``t-<window>`` ... ``t-1``, ``double``)       the train steps' mean/std
=========  =============================================  ==============================================

A kind defined elsewhere (beside the preparer of a new kind of data) is named by the prepared dataset itself:
``meta["raw_input"]`` is its ``"module:Class"``, and that string is its :attr:`RawInput.kind`, so nothing here
changes when a kind is added.

Everything a raw input needs is plain data: its :attr:`RawInput.spec` (JSON) and the files it names
(:attr:`RawInput.files`, e.g. ``tokenizer.json``), so a served model bundles no pickle.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from mlflow.types import Schema

#: kind -> raw input class; each registers itself with :func:`raw_input` where it is defined.
RAW_INPUTS: dict[str, type[RawInput]] = {}
#: The column that holds a text model's raw strings.
TEXT_COLUMN = "text"
#: ``meta.json`` ``cleaning`` steps a text dataset applied before tokenising, and what they do.
TEXT_CLEANING: dict[str, Callable[[str], str]] = {}


class RawInputError(ValueError):
    """A raw sample cannot be encoded: a missing column, a value of the wrong kind, an image of the wrong shape. The
    message names the column or shape and what was expected."""


def raw_input(kind: str) -> Callable[[type[RawInput]], type[RawInput]]:
    """Register a :class:`RawInput` subclass under ``kind`` (a decorator, used where the class is defined)."""

    def register(cls: type[RawInput]) -> type[RawInput]:
        cls.kind = kind
        RAW_INPUTS[kind] = cls
        return cls

    return register


def one_hot(labels: np.ndarray, categories: list[str]) -> np.ndarray:
    """``(N, len(categories))`` float64 indicator columns of ``labels`` (compared as strings; a label outside
    ``categories`` is all zeros). Shared by the ``csv`` preparer and the served table input."""
    return (np.asarray(labels).astype(str)[:, None] == np.array(categories, dtype=str)[None, :]).astype(np.float64)


class RawInput:
    """Encodes raw samples into a prepared dataset's layout ``(N, *meta['input_shape'])``.

    Attributes:
        kind: the registry name (``table``, ``image``, ``text``).
        spec: the plain-data description it is rebuilt from (JSON-able; see each kind).
        files: ``{name: path}`` of the files it reads besides ``spec`` (bundled with a served model).
    """

    kind: ClassVar[str]

    def __init__(self, spec: dict[str, Any], files: dict[str, Path] | None = None) -> None:
        self.spec = spec
        self.files = files or {}

    @classmethod
    def accepts(cls, meta: dict[str, Any]) -> bool:
        """Whether a prepared dataset described by ``meta`` has raw inputs of this kind."""
        raise NotImplementedError

    @classmethod
    def from_meta(cls, meta: dict[str, Any], folder: Path) -> RawInput:
        """The raw input of the prepared dataset in ``folder`` described by ``meta``."""
        raise NotImplementedError

    def schema(self) -> Schema:
        """The MLflow input schema of a raw request."""
        raise NotImplementedError

    def encode(self, raw: Any) -> np.ndarray:
        """Raw samples (a DataFrame for tables and text, an array for images) -> ``(N, *input_shape)`` as prepared.

        Raises:
            RawInputError: naming the column, value or shape, and what was expected.
        """
        raise NotImplementedError

    def example(self, x: np.ndarray) -> Any:
        """A raw sample that encodes to (about) the prepared samples ``x`` (``(N, *input_shape)``): the model's
        ``input_example``."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """``{"kind", "spec", "files": [names]}``: what :func:`load_raw_input` rebuilds it from."""
        return {"kind": self.kind, "spec": self.spec, "files": sorted(self.files)}


def raw_input_for(meta: dict[str, Any], folder: Path) -> RawInput:
    """The raw input of the prepared dataset in ``folder`` (``meta`` is its ``meta.json``).

    Raises:
        RawInputError: no registered kind accepts the dataset (naming it and the kinds).
    """
    if "raw_input" in meta:
        return _kind(meta["raw_input"]).from_meta(meta, folder)
    for cls in RAW_INPUTS.values():
        if cls.accepts(meta):
            return cls.from_meta(meta, folder)
    raise RawInputError(
        f"dataset {meta.get('dataset')!r} (modality {meta.get('modality')!r}, input_shape {meta.get('input_shape')}): "
        f"no raw input kind accepts it; known kinds: {', '.join(RAW_INPUTS)}"
    )


def load_raw_input(description: dict[str, Any], folder: Path) -> RawInput:
    """Rebuild a raw input from :meth:`RawInput.to_json` with its files in ``folder``.

    Raises:
        RawInputError: an unknown kind, or a named file missing from ``folder``.
    """
    kind = str(description.get("kind"))
    cls = _kind(kind)
    files = {name: folder / name for name in description.get("files", [])}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise RawInputError(f"raw input {kind}: missing file(s) {', '.join(missing)}")
    return cls(description["spec"], files)


def _kind(kind: str) -> type[RawInput]:
    """The raw input class of ``kind``: a name of :data:`RAW_INPUTS`, or ``"module:Class"`` of one defined elsewhere.

    Raises:
        RawInputError: an unknown name, or a ``module:Class`` that does not import.
    """
    if ":" in kind:
        import importlib

        module, _, name = kind.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise RawInputError(f"raw input kind {kind!r} does not import: {exc}") from None
    if kind not in RAW_INPUTS:
        raise RawInputError(f"raw input kind {kind!r} is unknown; expected one of {', '.join(RAW_INPUTS)}")
    return RAW_INPUTS[kind]


def _frame(raw: Any, columns: list[str]) -> pd.DataFrame:
    """``raw`` as a DataFrame holding ``columns`` (a dict or list of records is accepted too).

    Raises:
        RawInputError: a column is missing (naming it and the columns given).
    """
    import pandas as pd

    frame = raw if isinstance(raw, pd.DataFrame) else pd.DataFrame(raw)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise RawInputError(
            f"raw input: no column {', '.join(map(repr, missing))}; expected {', '.join(columns)}, "
            f"got {', '.join(map(str, frame.columns))}"
        )
    return frame


# --------------------------------------------------------------------------------------------------- tables


@raw_input("table")
class TableInput(RawInput):
    """Named raw columns -> the prepared feature vector.

    ``spec["columns"]`` lists the raw columns in feature order, each ``{"name", "encoding", ...}``:

    - ``standard``: a number, ``(value - mean) / std`` (``mean``, ``std`` fitted on train);
    - ``identity``: a number kept as it is (0/1 flags, logic inputs);
    - ``one_hot``: a category, one indicator per train category (``categories``), named ``<column>_<category>``;
    - ``codes``: a category mapped to a number (``codes``: churn's Gender, Female 0, Male 1).
    """

    @classmethod
    def accepts(cls, meta: dict[str, Any]) -> bool:
        return len(meta.get("input_shape", ())) == 1 and "feature_names" in meta

    @classmethod
    def from_meta(cls, meta: dict[str, Any], folder: Path) -> RawInput:
        """Read the columns back from ``feature_names``, ``normalization.features`` (standardised ones),
        ``categories`` (one-hot ones, ``{column: [category, ...]}``) and ``category_codes``."""
        stats = (meta.get("normalization") or {}).get("features", {})
        categories: dict[str, list[str]] = meta.get("categories", {})
        codes: dict[str, dict[str, float]] = meta.get("category_codes", {})
        one_hot_of = {f"{column}_{cat}": column for column, cats in categories.items() for cat in cats}
        columns: list[dict[str, Any]] = []
        for feature in meta["feature_names"]:
            if feature in one_hot_of:
                column = one_hot_of[feature]
                if not columns or columns[-1]["name"] != column:
                    columns.append({"name": column, "encoding": "one_hot", "categories": categories[column]})
            elif feature in codes:
                columns.append({"name": feature, "encoding": "codes", "codes": codes[feature]})
            elif feature in stats:
                columns.append({"name": feature, "encoding": "standard", **stats[feature]})
            else:
                columns.append({"name": feature, "encoding": "identity"})
        return cls({"columns": columns})

    @property
    def columns(self) -> list[dict[str, Any]]:
        return self.spec["columns"]

    def schema(self) -> Schema:
        from mlflow.types import ColSpec, Schema

        return Schema(
            [ColSpec("string" if c["encoding"] in ("one_hot", "codes") else "double", c["name"]) for c in self.columns]
        )

    def encode(self, raw: Any) -> np.ndarray:
        """A DataFrame with the raw columns -> float32 ``(N, features)``, computed in float64 as the preparers do."""
        import pandas as pd

        frame = _frame(raw, [c["name"] for c in self.columns])
        blocks = []
        for column in self.columns:
            values = frame[column["name"]]
            encoding = column["encoding"]
            if encoding == "one_hot":
                blocks.append(one_hot(values.to_numpy(), column["categories"]))
                continue
            if encoding == "codes":
                unknown = sorted(set(values.astype(str)) - set(column["codes"]))
                if unknown:
                    raise RawInputError(
                        f"raw input: column {column['name']!r} has {unknown[0]!r}; expected one of "
                        f"{', '.join(column['codes'])}"
                    )
                blocks.append(values.astype(str).map(column["codes"]).to_numpy(dtype=np.float64)[:, None])
                continue
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
            if np.isnan(numbers).any():
                bad = values[np.isnan(numbers)].iloc[0]
                raise RawInputError(f"raw input: column {column['name']!r} has {bad!r}; expected a number")
            if encoding == "standard":
                numbers = (numbers - column["mean"]) / column["std"]
            blocks.append(numbers[:, None])
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def example(self, x: np.ndarray) -> pd.DataFrame:
        """Prepared rows back to raw rows (the inverse of :meth:`encode`; numbers to the 7 significant digits that
        float32 features carry, so 584.999997 reads 585)."""
        import pandas as pd

        out: dict[str, Any] = {}
        col = 0
        x = np.asarray(x, dtype=np.float64)
        for column in self.columns:
            encoding = column["encoding"]
            if encoding == "one_hot":
                width = len(column["categories"])
                block = x[:, col : col + width]
                out[column["name"]] = [column["categories"][int(i)] for i in block.argmax(axis=1)]
                col += width
                continue
            values = x[:, col]
            col += 1
            if encoding == "codes":
                names = {float(v): k for k, v in column["codes"].items()}
                out[column["name"]] = [names[float(round(v))] for v in values]
            else:
                raw = values * column["std"] + column["mean"] if encoding == "standard" else values
                out[column["name"]] = [float(f"{v:.7g}") for v in raw]
        return pd.DataFrame(out)


# --------------------------------------------------------------------------------------------------- images


@raw_input("image")
class ImageInput(RawInput):
    """0-255 pixels ``(N, C, H, W)`` -> the prepared images.

    ``spec``: ``shape`` ``[C, H, W]``; ``method`` ``min-max`` (``min``, ``max``: ``(pixel - min) / (max - min)``) or
    ``per-channel standardization`` (``mean``, ``std`` per channel on the [0, 1] scale: ``(pixel / 255 - mean) /
    std``), as in ``meta.normalization``.
    """

    @classmethod
    def accepts(cls, meta: dict[str, Any]) -> bool:
        return len(meta.get("input_shape", ())) == 3

    @classmethod
    def from_meta(cls, meta: dict[str, Any], folder: Path) -> RawInput:
        norm = meta.get("normalization") or {}
        spec: dict[str, Any] = {"shape": list(meta["input_shape"]), "method": norm.get("method", "min-max")}
        if spec["method"] == "min-max":
            spec |= {"min": norm.get("min", 0), "max": norm.get("max", 255)}
        else:
            spec |= {"mean": norm["mean"], "std": norm["std"]}
        return cls(spec)

    def schema(self) -> Schema:
        from mlflow.types import Schema, TensorSpec

        return Schema([TensorSpec(np.dtype(np.float32), (-1, *self.spec["shape"]))])

    def encode(self, raw: Any) -> np.ndarray:
        """0-255 pixels ``(N, C, H, W)`` (any numeric dtype) -> float32 as prepared.

        Raises:
            RawInputError: another shape, or pixels outside 0-255.
        """
        pixels = np.asarray(raw, dtype=np.float32)
        shape = tuple(self.spec["shape"])
        if pixels.ndim != 4 or pixels.shape[1:] != shape:
            raise RawInputError(
                f"raw input: images of shape {pixels.shape}; expected (N, {', '.join(map(str, shape))})"
            )
        if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
            raise RawInputError(f"raw input: pixels in [{pixels.min()}, {pixels.max()}]; expected 0-255")
        if self.spec["method"] == "min-max":
            low, high = np.float32(self.spec["min"]), np.float32(self.spec["max"])
            return (pixels - low) / (high - low)
        mean, std = (np.asarray(self.spec[k], dtype=np.float32).reshape(1, -1, 1, 1) for k in ("mean", "std"))
        return ((pixels / np.float32(255) - mean) / std).astype(np.float32)

    def example(self, x: np.ndarray) -> np.ndarray:
        """Prepared images back to 0-255 pixels (rounded to whole values), float32 ``(N, C, H, W)``."""
        x = np.asarray(x, dtype=np.float32)
        if self.spec["method"] == "min-max":
            pixels = x * (self.spec["max"] - self.spec["min"]) + self.spec["min"]
        else:
            mean, std = (np.asarray(self.spec[k], dtype=np.float32).reshape(1, -1, 1, 1) for k in ("mean", "std"))
            pixels = (x * std + mean) * 255
        return np.clip(np.round(pixels), 0, 255).astype(np.float32)


# ----------------------------------------------------------------------------------------------------- text


def _strip_html_breaks(text: str) -> str:
    from pipelines.data.preparers.imdb import clean_review

    return clean_review(text)


TEXT_CLEANING["html_line_breaks"] = _strip_html_breaks


@raw_input("text")
class TextInput(RawInput):
    """Strings in a ``text`` column -> token ids ``(N, seq_len)`` with the dataset's own ``tokenizer.json``.

    ``spec``: ``cleaning`` (the names of :data:`TEXT_CLEANING` steps the preparer applied, in order). The tokenizer
    file pads and truncates itself (``meta.padding``, ``meta.truncating``); encoding is the preparers'
    :func:`~pipelines.data.preparers.imdb.encode_texts`.
    """

    @classmethod
    def accepts(cls, meta: dict[str, Any]) -> bool:
        return "tokenizer" in meta

    @classmethod
    def from_meta(cls, meta: dict[str, Any], folder: Path) -> RawInput:
        return cls({"cleaning": list(meta.get("cleaning", []))}, {"tokenizer.json": folder / meta["tokenizer"]})

    def _tokenizer(self):
        from tokenizers import Tokenizer

        if not hasattr(self, "_loaded"):
            self._loaded = Tokenizer.from_file(str(self.files["tokenizer.json"]))
        return self._loaded

    def schema(self) -> Schema:
        from mlflow.types import ColSpec, Schema

        return Schema([ColSpec("string", TEXT_COLUMN)])

    def encode(self, raw: Any) -> np.ndarray:
        from pipelines.data.preparers.imdb import encode_texts

        frame = _frame(raw, [TEXT_COLUMN])
        texts = [str(text) for text in frame[TEXT_COLUMN].tolist()]
        for step in self.spec["cleaning"]:
            texts = [TEXT_CLEANING[step](text) for text in texts]
        return encode_texts(self._tokenizer(), texts)

    def example(self, x: np.ndarray) -> pd.DataFrame:
        """Token ids back to text (special tokens skipped: unknown words are left out)."""
        import pandas as pd

        tokenizer = self._tokenizer()
        return pd.DataFrame({TEXT_COLUMN: [tokenizer.decode(row.tolist(), skip_special_tokens=True) for row in x]})


# ------------------------------------------------------------------------------------------------ characters


@raw_input("chars")
class CharsInput(RawInput):
    """Strings in a ``text`` column -> symbol ids ``(N, T)`` of a character corpus (a language model's context).

    ``spec``: ``vocab`` (the characters in id order, ``meta.vocab``), ``length`` (``T``, the prepared chunk length)
    and ``pad`` (the character a shorter text is left-padded with: a newline, which separates speeches in the corpus,
    so the model reads a short text as if it began a speech). A longer text keeps its last ``T`` characters.
    """

    @classmethod
    def accepts(cls, meta: dict[str, Any]) -> bool:
        return "vocab" in meta and len(meta.get("input_shape", ())) == 1

    @classmethod
    def from_meta(cls, meta: dict[str, Any], folder: Path) -> RawInput:
        vocab = list(meta["vocab"])
        return cls({"vocab": vocab, "length": int(meta["input_shape"][0]), "pad": "\n" if "\n" in vocab else vocab[0]})

    def schema(self) -> Schema:
        from mlflow.types import ColSpec, Schema

        return Schema([ColSpec("string", TEXT_COLUMN)])

    def encode(self, raw: Any) -> np.ndarray:
        """A DataFrame with a ``text`` column -> int64 ``(N, T)``.

        Raises:
            RawInputError: a text is empty, or holds a character outside the vocabulary (naming it and the row).
        """
        from pipelines.data.preparers.chars import encode_chars

        frame = _frame(raw, [TEXT_COLUMN])
        length, pad, vocab = self.spec["length"], self.spec["pad"], self.spec["vocab"]
        rows = []
        for row, text in enumerate(str(t) for t in frame[TEXT_COLUMN].tolist()):
            if not text:
                raise RawInputError(f"raw input: column {TEXT_COLUMN!r} row {row} is empty; expected some text")
            try:
                rows.append(encode_chars(text[-length:].rjust(length, pad), vocab))
            except ValueError as exc:
                raise RawInputError(f"raw input: column {TEXT_COLUMN!r} row {row}: {exc}") from None
        return np.stack(rows) if rows else np.empty((0, length), dtype=np.int64)

    def example(self, x: np.ndarray) -> pd.DataFrame:
        """Symbol ids back to text."""
        import pandas as pd

        from pipelines.data.preparers.chars import decode_chars

        return pd.DataFrame({TEXT_COLUMN: [decode_chars(row, self.spec["vocab"]) for row in np.asarray(x)]})


# --------------------------------------------------------------------------------------------------- series


@raw_input("series")
class SeriesInput(RawInput):
    """A window of raw past values (named columns ``t-<window>`` ... ``t-1``, oldest first, in the series' units)
    -> the forecasting scale of :func:`~pipelines.data.preparers.forecast.encode_series`.

    ``spec``: ``names`` (``meta.input_names``), ``log``, ``mean``, ``std`` (``meta.normalization``, fitted on train).
    """

    @classmethod
    def accepts(cls, meta: dict[str, Any]) -> bool:
        return meta.get("modality") == "series" and "input_names" in meta

    @classmethod
    def from_meta(cls, meta: dict[str, Any], folder: Path) -> RawInput:
        norm = meta["normalization"]
        return cls(
            {"names": list(meta["input_names"]), "log": bool(norm["log"]), "mean": norm["mean"], "std": norm["std"]}
        )

    def schema(self) -> Schema:
        from mlflow.types import ColSpec, Schema

        return Schema([ColSpec("double", name) for name in self.spec["names"]])

    def encode(self, raw: Any) -> np.ndarray:
        """A DataFrame of raw windows -> float32 ``(N, window)``, computed in float64 as the preparer does.

        Raises:
            RawInputError: a missing column, a value that is not a finite number, or (logged series) not positive.
        """
        import pandas as pd

        from pipelines.data.preparers.forecast import encode_series

        names = self.spec["names"]
        frame = _frame(raw, names)
        values = np.stack([pd.to_numeric(frame[n], errors="coerce").to_numpy(dtype=np.float64) for n in names], 1)
        bad = ~np.isfinite(values) | ((values <= 0) if self.spec["log"] else False)
        if bad.any():
            row, col = (int(i[0]) for i in np.nonzero(bad))
            expected = "a positive number (the series is logged)" if self.spec["log"] else "a finite number"
            raise RawInputError(
                f"raw input: column {names[col]!r} has {frame[names[col]].iloc[row]!r}; expected {expected}"
            )
        return encode_series(values, self.spec["log"], self.spec["mean"], self.spec["std"]).astype(np.float32)

    def example(self, x: np.ndarray) -> pd.DataFrame:
        """Prepared windows back to raw values (7 significant digits, as float32 carries)."""
        import pandas as pd

        scaled = np.asarray(x, dtype=np.float64) * self.spec["std"] + self.spec["mean"]
        values = np.exp(scaled) if self.spec["log"] else scaled
        return pd.DataFrame({n: [float(f"{v:.7g}") for v in values[:, k]] for k, n in enumerate(self.spec["names"])})
