"""Dataset catalog: every raw file the pipeline reads, with its checksum, provenance, format and task.

Checksums and provenance follow ``shared/data/README.md``. A file is accepted when its own sha256 is one of
``sha256`` (the canonical distribution and, where the mirror holds one, a repacked copy of it) or, for gzip files,
when the sha256 of its decompressed payload equals ``payload_sha256``: a repacked ``.gz`` differs from the canonical
one only in its gzip wrapper, so checking the payload accepts both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Task = Literal["binary", "multiclass", "regression"]
Modality = Literal["table", "image", "tabular", "text"]


@dataclass(frozen=True)
class RawFile:
    """One raw file of a dataset.

    Attributes:
        path: path relative to the data mirror root, e.g. ``mnist/t10k-images-idx3-ubyte.gz``.
        sha256: accepted sha256 digests of the file as stored (canonical first).
        payload_sha256: sha256 of the decompressed content of a ``.gz`` file, or ``None``.
        urls: HTTP(S) URLs that serve exactly this file format (tried in order after the mirror).
    """

    path: str
    sha256: tuple[str, ...]
    payload_sha256: str | None = None
    urls: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset: its files, format, task, and where it comes from."""

    name: str
    task: Task
    format: str
    modality: Modality
    files: tuple[RawFile, ...] = ()
    source: str = ""
    citation: str = ""
    license: str = ""
    classes: tuple[str, ...] = field(default_factory=tuple)
    #: Whether a horizontal flip keeps the label (False for digits and text-like images).
    flip_safe: bool = False


_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")


def _mnist(name: str, *sha: str, payload: str | None = None) -> RawFile:
    return RawFile(f"mnist/{name}", tuple(sha), payload, tuple(base + name for base in _MNIST_URLS))


CATALOG: dict[str, DatasetEntry] = {
    # The truth tables of notes 001 ("Perceptron", "AND GATE", "XOR gate"): generated, no files.
    "logic_and": DatasetEntry("logic_and", "binary", "truth-table", "table", source="notes 001, AND GATE", classes=("0", "1")),
    "logic_or": DatasetEntry("logic_or", "binary", "truth-table", "table", source="notes 001, Perceptron", classes=("0", "1")),
    "logic_xor": DatasetEntry("logic_xor", "binary", "truth-table", "table", source="notes 001, XOR gate", classes=("0", "1")),
    "mnist": DatasetEntry(
        "mnist",
        "multiclass",
        "idx-gz",
        "image",
        files=(
            _mnist(
                "train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",  # canonical
                "71524e2cd1ad2968737f7f2f2ff69cbfc32df8ccddff51593f7cb2d4e0eb5b64",  # repacked mirror copy
                payload="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            ),
            _mnist("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            _mnist("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            _mnist("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        ),
        source="http://yann.lecun.com/exdb/mnist/",
        citation="LeCun, Bottou, Bengio, Haffner (1998), Gradient-based learning applied to document recognition",
        license="commonly cited as CC BY-SA 3.0",
        classes=tuple(str(d) for d in range(10)),
    ),
    "churn": DatasetEntry(
        "churn",
        "binary",
        "csv",
        "tabular",
        files=(
            RawFile(
                "churn/Churn_Modelling.csv",
                ("ee2a5c9d8daf3aed0d91c4d883a84ebb77d271447bebc0f0c80aafb0f288ceab",),
                urls=(
                    "https://raw.githubusercontent.com/Vamc-24/ANN-Classification/"
                    "91efaff80bf4252e8bac8e4edeb650219faadae4/Churn_Modelling.csv",
                ),
            ),
        ),
        source="Churn Modelling (SuperDataScience, Deep Learning A-Z; Kaggle)",
        license="educational/demo data, terms unknown",
        classes=("stayed", "exited"),
    ),
    "imdb": DatasetEntry(
        "imdb",
        "binary",
        "csv-gz",
        "text",
        files=(
            # Repacked from aclImdb_v1 into one CSV; there is no canonical file of this format, so only the
            # mirror (or an HTTP mirror of it, DEEPNOTES_DATA_URL) can serve it.
            RawFile(
                "imdb/imdb_reviews.csv.gz",
                ("02f74586126382eb804a4045a0fabb4529d4b68753438145e707490cd755ed28",),
                payload_sha256="77656e874317642bf634df8fbf3002365904e5cf859d1c5e2646adb9c963fae9",
            ),
        ),
        source="https://ai.stanford.edu/~amaas/data/sentiment/",
        citation="Maas et al. (2011), Learning Word Vectors for Sentiment Analysis, ACL",
        license="no formal license; cite the paper",
        classes=("negative", "positive"),
    ),
    "melbourne_temp": DatasetEntry(
        "melbourne_temp",
        "regression",
        "csv",
        "tabular",  # windows of past days become feature columns: the MLP reads them as a table
        files=(
            RawFile(
                "daily_min_temperatures/daily-min-temperatures.csv",
                ("8b9de63ed6789492bf497625e7f9beb96a63d367b4b0a21754006f749fa5e5da",),
                urls=(
                    "https://raw.githubusercontent.com/jbrownlee/Datasets/"
                    "d20fcb6402ae34e653d4513b00f39257bb37ed7f/daily-min-temperatures.csv",
                ),
            ),
        ),
        source="Daily minimum temperatures in Melbourne, 1981-1990 (°C): Australian Bureau of Meteorology, via the "
               "Time Series Data Library (TSDL); file from GitHub jbrownlee/Datasets",
        license="© Commonwealth of Australia (Bureau of Meteorology); widely redistributed for teaching",
    ),
}


def get_dataset(name: str) -> DatasetEntry:
    """Return the catalog entry for ``name``.

    Raises:
        KeyError: naming the unknown dataset and listing the known ones.
    """
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; the catalog has: {', '.join(sorted(CATALOG))}") from None
