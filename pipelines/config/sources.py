"""``datasets.<name>.source``: a dataset read from the user's own files instead of a catalog entry.

One model per file format, told apart by ``format`` (a pydantic discriminated union, :data:`SourceConfig`)::

    datasets:
      my_table:
        source: {format: csv, path: data/raw/table.csv, target: label}
        val_fraction: 0.1
        test_fraction: 0.2

``prepare`` reads the files with the reader of the format (:mod:`pipelines.data.preparers.sources`) and gives
them the splits, preprocessing and ``meta.json`` of the built-in datasets. Paths are relative to the folder of
``params.yaml`` (the repository root), or absolute. Every model names the files it reads (:meth:`SourceBase.files`):
``resolve`` links them into ``data/sources/`` (:meth:`SourceBase.dependencies`), which ``prepare@<name>``
depends on, so editing them reruns that stage.

This module imports pydantic alone; the readers (pandas, PIL, tokenizers) load when ``prepare`` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from pipelines.config.base import Strict
from pipelines.data.catalog import DatasetEntry, Modality

SourceTask = Literal["binary", "multiclass", "regression"]
#: The image file types of ``image_folder`` (by extension, case-insensitive).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".pgm"})
_SHA256 = r"^[0-9a-fA-F]{64}$"


def resolve_path(path: str, root: Path) -> Path:
    """``path`` as given when absolute, else relative to ``root`` (the folder of ``params.yaml``)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else root / p


class SourceBase(Strict):
    """What every format shares: the file or folder, the task, an optional checksum pin."""

    #: ``meta.modality`` of the prepared data, which decides the architectures that read it.
    modality: ClassVar[Modality]

    format: str = Field(description="the file format, which picks the reader")
    path: str = Field(description="file or folder, relative to the repository root (or absolute)")
    task: SourceTask | None = Field(None, description="binary | multiclass | regression; None: inferred from the data")
    sha256: str | dict[str, str] | None = Field(
        None,
        description="pin of the file at `path` (a digest), or of several files ({path relative to `path`: digest}); "
        "a mismatch is an error naming the file",
    )

    @field_validator("sha256")
    @classmethod
    def _digests(cls, value: str | dict[str, str] | None) -> str | dict[str, str] | None:
        import re

        digests = [value] if isinstance(value, str) else list((value or {}).values())
        for digest in digests:
            if not re.match(_SHA256, digest):
                raise ValueError(f"{digest!r} is not a sha256 digest (64 hex digits)")
        return value

    def files(self, root: Path) -> list[Path]:
        """The files ``prepare`` reads, resolved against ``root``: what the stage depends on. A folder stands for
        every file under it."""
        return [resolve_path(self.path, root)]

    def dependencies(self, root: Path) -> tuple[Path, Path | None]:
        """What ``prepare@<name>`` depends on in DVC: the file or folder ``path``, and a second file where the
        format has one (``csv``'s ``test_path``), each resolved against ``root``."""
        return resolve_path(self.path, root), None

    def known_task(self) -> SourceTask | None:
        """The task the format fixes without reading the data (``regression`` for a time series), else ``task``."""
        return self.task

    def entry(self, name: str, root: Path) -> DatasetEntry:
        """The catalog-style entry of dataset ``name`` that experiments validate against (task, modality).

        Raises:
            DataError: the task has to be inferred and the data cannot be read (naming the file).
        """
        task = self.known_task()
        if task is None:
            from pipelines.data.preparers.sources import infer_source_task

            task = infer_source_task(self, root)
        return DatasetEntry(name, task, self.format, self.modality, source=f"user files: {self.path}")


class CsvSource(SourceBase):
    """A table: one row per sample, a ``target`` column, numeric and categorical feature columns.

    Numeric features are standardised with the train split's mean and std; categorical ones (text columns, or
    those listed in ``categorical``) are one-hot encoded with the train split's categories. ``drop`` lists
    identifier-like columns to leave out. ``test_path`` keeps a given test table (same columns) as the test split.
    """

    modality: ClassVar[Modality] = "tabular"
    format: Literal["csv"]
    target: str = Field(description="the target column")
    categorical: list[str] = Field(default_factory=list, description="columns one-hot encoded even if numeric")
    drop: list[str] = Field(default_factory=list, description="columns left out (identifiers)")
    test_path: str | None = Field(None, description="a given test table with the same columns")

    @model_validator(mode="after")
    def _columns(self) -> CsvSource:
        for key in ("categorical", "drop"):
            if self.target in getattr(self, key):
                raise ValueError(f"{key}: lists the target column {self.target!r}")
        both = set(self.categorical) & set(self.drop)
        if both:
            raise ValueError(f"categorical and drop both list {sorted(both)}")
        return self

    def files(self, root: Path) -> list[Path]:
        return [resolve_path(p, root) for p in (self.path, self.test_path) if p is not None]

    def dependencies(self, root: Path) -> tuple[Path, Path | None]:
        return resolve_path(self.path, root), None if self.test_path is None else resolve_path(self.test_path, root)


class IdxSource(SourceBase):
    """The four MNIST-format IDX files (each gzip or raw) in the folder ``path``: square images of any size and
    their integer labels. The official test files are the test split; val is carved from train."""

    modality: ClassVar[Modality] = "image"
    format: Literal["idx"]
    path: str = Field(description="the folder of the four files, relative to the repository root (or absolute)")
    train_images: str = Field(description="file name (in `path`) of the train images, e.g. train-images-idx3-ubyte.gz")
    train_labels: str = Field(description="file name of the train labels")
    test_images: str = Field(description="file name of the test images")
    test_labels: str = Field(description="file name of the test labels")

    def files(self, root: Path) -> list[Path]:
        folder = resolve_path(self.path, root)
        return [folder / getattr(self, key) for key in ("train_images", "train_labels", "test_images", "test_labels")]

    def known_task(self) -> SourceTask:
        return self.task or "multiclass"


class ImageFolderSource(SourceBase):
    """A folder with one subfolder per class of PNG, JPEG or PGM images (torchvision's ``ImageFolder`` layout);
    with ``split_by: folder``, ``train/``, ``val/`` and ``test/`` folders of that layout. Classes are the subfolder
    names in sorted order."""

    modality: ClassVar[Modality] = "image"
    format: Literal["image_folder"]
    image_size: tuple[PositiveInt, PositiveInt] | None = Field(
        None, description="[H, W] every image is resized to (bilinear); None: all images must have one size"
    )
    channels: Literal[1, 3] | None = Field(None, description="1 (grayscale) or 3 (RGB); None: 1 if all are grayscale")
    split_by: Literal["random", "folder"] = Field(
        "random", description="random: a seeded stratified split; folder: the train/, val/ and test/ subfolders"
    )

    def known_task(self) -> SourceTask:
        return self.task or "multiclass"


class TextCsvSource(SourceBase):
    """A table of texts and labels, tokenised like IMDB (a word-level ``tokenizers`` vocabulary fitted on the train
    split, ``vocab_size`` and ``seq_len`` of the dataset)."""

    modality: ClassVar[Modality] = "text"
    format: Literal["text_csv"]
    text: str = Field("text", description="the text column")
    target: str = Field("target", description="the target column")


class TimeseriesCsvSource(SourceBase):
    """One series as a table of ``time`` and ``value`` columns, in increasing time. The ``window`` values before a
    step predict the ``horizon`` values from it; samples are split by time (train, then val, then test) and never
    shuffled."""

    modality: ClassVar[Modality] = "tabular"
    format: Literal["timeseries_csv"]
    time: str = Field("time", description="the time column (anything pandas parses as a date or time)")
    value: str = Field("value", description="the value column")
    horizon: PositiveInt = Field(1, description="values predicted per sample, from the step after the window")
    task: Literal["regression"] | None = Field(None, description="a forecast is a regression (the only choice)")

    def known_task(self) -> SourceTask:
        return "regression"


#: ``datasets.<name>.source``: one of the formats, chosen by its ``format`` key.
SourceConfig = Annotated[
    CsvSource | IdxSource | ImageFolderSource | TextCsvSource | TimeseriesCsvSource,
    Field(discriminator="format"),
]
#: The formats a source may have.
SOURCE_FORMATS = ("csv", "idx", "image_folder", "text_csv", "timeseries_csv")
