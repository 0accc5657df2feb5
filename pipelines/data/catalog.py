"""Dataset catalog: every raw file the pipeline reads, with its checksum, provenance, format and task.

Checksums and provenance follow ``shared/data/README.md``. A file is accepted when its own sha256 is one of
``sha256`` (the canonical distribution and, where the mirror holds one, a repacked copy of it) or, for gzip files,
when the sha256 of its decompressed payload equals ``payload_sha256``: a repacked ``.gz`` differs from the canonical
one only in its gzip wrapper, so checking the payload accepts both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: How a dataset's samples are stored, which decides the architectures that can read it.
Modality = Literal["table", "image", "tabular", "text", "series", "chars"]


@dataclass(frozen=True)
class RawFile:
    """One raw file of a dataset.

    Attributes:
        path: path relative to the data mirror root, e.g. ``mnist/t10k-images-idx3-ubyte.gz``.
        sha256: accepted sha256 digests of the file as stored (canonical first); empty when only the payload is
            pinned (a gzip file known by its decompressed content alone).
        payload_sha256: sha256 of the decompressed content of a ``.gz`` file, or ``None``.
        urls: HTTP(S) URLs that serve exactly this file format (tried in order after the mirror).
        required: False for a file the dataset can be prepared without (CIFAR-10's train batches: those found are
            used). A missing optional file is skipped; one that is found but fails verification is still an error.
    """

    path: str
    sha256: tuple[str, ...]
    payload_sha256: str | None = None
    urls: tuple[str, ...] = ()
    required: bool = True

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset: its files, format, task, and where it comes from."""

    name: str
    #: the task its labels are for (a module of :mod:`pipelines.tasks`); an experiment may choose another one
    task: str
    format: str
    modality: Modality
    files: tuple[RawFile, ...] = ()
    source: str = ""
    citation: str = ""
    license: str = ""
    classes: tuple[str, ...] = field(default_factory=tuple)
    #: Whether a horizontal flip keeps the label (False for digits and text-like images).
    flip_safe: bool = False
    #: A dataset derived from another: ``base`` names the catalog entry whose files it reads, and ``class_subset``
    #: the base classes it keeps (relabelled 0..k-1 in this order), e.g. CIFAR-10's classes 5-9 for transfer learning.
    base: str | None = None
    class_subset: tuple[int, ...] | None = None
    #: A dataset that is a folder of many files (att_faces): its folder in the mirror is pinned by one digest, the
    #: sha256 of the ``sha256sum`` listing of its files (``shared/data/README.md``).
    folder_sha256: str | None = None


_MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_MNIST_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/b2617bb6d3ffa2e429640350f613e3291e10b141/"
    "data/fashion/",
)


def _raw(
    folder: str, bases: tuple[str, ...], name: str, *sha: str, payload: str | None = None, required: bool = True
) -> RawFile:
    """``<folder>/<name>`` with the accepted sha256s, and one URL per base URL (``base + name``)."""
    return RawFile(f"{folder}/{name}", tuple(sha), payload, tuple(base + name for base in bases), required)


def _mnist(name: str, *sha: str, payload: str | None = None) -> RawFile:
    return _raw("mnist", _MNIST_URLS, name, *sha, payload=payload)


def _fashion_mnist(name: str, *sha: str, payload: str | None = None) -> RawFile:
    return _raw("fashion_mnist", _FASHION_MNIST_URLS, name, *sha, payload=payload)


#: sha256 of the decompressed CIFAR-10 binary batches: the mirror's payloads, equal to the list published for the
#: files of ``cifar-10-binary.tar.gz`` (GitHub ankane/torchvision-ruby, lib/torchvision/datasets/cifar10.rb, commit
#: 9bf22501fd5c3d782244bbc8409a95d9dadb3808), which also gives batches 4 and 5.
_CIFAR10_PAYLOADS = {
    "data_batch_1.bin": "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    "data_batch_2.bin": "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    "data_batch_3.bin": "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    "data_batch_4.bin": "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    "data_batch_5.bin": "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    "test_batch.bin": "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
}
#: sha256 of the mirror's gzip files (each batch gzipped on its own, level 9, no name, mtime 0). Batches 4 and 5 are
#: not in the mirror, so only their payload is pinned.
_CIFAR10_GZ = {
    "data_batch_1.bin": "f27c826404183bf6fd3823fb45744b4f7fd83201dfa6253c32e8d2f8e60e8f1b",
    "data_batch_2.bin": "203422e12acce31f5c14e9eaf82d43c4f17b0c7c5db6b2d08e1e6d927aaffc5d",
    "data_batch_3.bin": "cc4339a09c7d4d196c71bc92812cf7ff9c74b82a2673ab4aae4a4ef02212e65f",
    "test_batch.bin": "27ae0e1ce42c156c20a7e87f67dc90a50876ca6a755a60c608fc646a4ec4b937",
}


def _cifar10(name: str, *, required: bool) -> RawFile:
    # The canonical distribution is one tarball (cifar-10-binary.tar.gz), not per-file downloads: no URLs here, so
    # only the mirror or $DEEPNOTES_DATA_URL can serve the batches.
    sha = (_CIFAR10_GZ[name],) if name in _CIFAR10_GZ else ()
    return _raw("cifar10", (), f"{name}.gz", *sha, payload=_CIFAR10_PAYLOADS[name], required=required)


CATALOG: dict[str, DatasetEntry] = {
    # The truth tables of notes 001 ("Perceptron", "AND GATE", "XOR gate"): generated, no files.
    "logic_and": DatasetEntry(
        "logic_and", "binary", "truth-table", "table", source="notes 001, AND GATE", classes=("0", "1")
    ),
    "logic_or": DatasetEntry(
        "logic_or", "binary", "truth-table", "table", source="notes 001, Perceptron", classes=("0", "1")
    ),
    "logic_xor": DatasetEntry(
        "logic_xor", "binary", "truth-table", "table", source="notes 001, XOR gate", classes=("0", "1")
    ),
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
    "fashion_mnist": DatasetEntry(
        "fashion_mnist",
        "multiclass",
        "idx-gz",
        "image",
        files=(
            _fashion_mnist(
                "train-images-idx3-ubyte.gz",
                "a26751d72d89606ffbfdd4dd5d16911f01e93a7ff4783c95da7307a073d79fa7",  # repacked mirror copy
                payload="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            ),
            _fashion_mnist(
                "train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
            ),
            _fashion_mnist(
                "t10k-images-idx3-ubyte.gz",
                "78cb45a589ec14266eab4ac0cb2e9e10a4c076ae2d337fe86383d761bff83f32",  # repacked mirror copy
                payload="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            ),
            _fashion_mnist(
                "t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
            ),
        ),
        source="https://github.com/zalandoresearch/fashion-mnist",
        citation="Xiao, Rasul, Vollgraf (2017), Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine "
        "Learning Algorithms, arXiv:1708.07747",
        license="MIT (Copyright 2017 Zalando SE)",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        flip_safe=True,  # clothes mirrored left-right are the same kind of clothes
    ),
    "cifar10": DatasetEntry(
        "cifar10",
        "multiclass",
        "cifar-bin-gz",
        "image",
        files=(
            # Train batches are optional: whichever are found are used (the mirror holds 1-3 of 5).
            *(_cifar10(f"data_batch_{k}.bin", required=False) for k in range(1, 6)),
            _cifar10("test_batch.bin", required=True),
        ),
        source="https://www.cs.toronto.edu/~kriz/cifar.html (binary version)",
        citation="Krizhevsky (2009), Learning Multiple Layers of Features from Tiny Images, technical report, "
        "University of Toronto",
        license="no formal license; cite the report",
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        flip_safe=True,
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


def _cifar10_subset(name: str, classes: tuple[int, ...], role: str) -> DatasetEntry:
    base = CATALOG["cifar10"]
    return DatasetEntry(
        name,
        "multiclass",
        base.format,
        base.modality,
        files=base.files,
        source=f"{base.source}; classes {', '.join(base.classes[c] for c in classes)} only ({role})",
        citation=base.citation,
        license=base.license,
        classes=tuple(base.classes[c] for c in classes),
        flip_safe=True,
        base="cifar10",
        class_subset=classes,
    )


CATALOG |= {
    # Transfer learning (notes 001, "Transfer learning"): pretrain on one half of CIFAR-10's classes, fine-tune
    # on the other half with few labels (datasets.<name>.max_train_per_class).
    "cifar10_0to4": _cifar10_subset("cifar10_0to4", (0, 1, 2, 3, 4), "the source task of transfer learning"),
    "cifar10_5to9": _cifar10_subset("cifar10_5to9", (5, 6, 7, 8, 9), "the target task of transfer learning"),
    # Single-object localization (notes 000, "Image or Object localization"): each real MNIST digit pasted at a
    # seeded random position and scale on a blank canvas; the target is the digit's class and bounding box.
    "mnist_localization": DatasetEntry(
        "mnist_localization",
        "localization",
        "idx-gz-canvas",
        "image",
        files=CATALOG["mnist"].files,
        source="MNIST digits (http://yann.lecun.com/exdb/mnist/) pasted on a 64x64 canvas by the prepare stage",
        citation=CATALOG["mnist"].citation,
        license=CATALOG["mnist"].license,
        classes=CATALOG["mnist"].classes,
        base="mnist",
    ),
}

CATALOG["att_faces"] = DatasetEntry(
    # The AT&T faces for the Siamese network (notes 001, "Siamese Network (Facial tracking system)"); read by the image_folder reader.
    "att_faces",
    "multiclass",
    "image_folder",
    "image",
    source="The Database of Faces (formerly The ORL Database of Faces), AT&T Laboratories Cambridge / Olivetti "
    "Research Laboratory, 1992-1994: 40 subjects x 10 grey images, 92x112",
    citation="Samaria, Harter (1994), Parameterisation of a stochastic model for human face identification, "
    "2nd IEEE Workshop on Applications of Computer Vision",
    license="free for research use with credit to the Olivetti Research Laboratory",
    classes=tuple(f"s{k}" for k in range(1, 41)),
    folder_sha256="de45a65f9c353ff9364f6d79a2c5a3e0f98e9a4751e1a3133a77b444864f1ebf",
)


CATALOG["tiny_shakespeare"] = DatasetEntry(
    # The one-to-many RNN of notes 002 ("TYPES OF RNN"): a character-level language model (char-rnn, nanoGPT's
    # shakespeare_char); read by pipelines/data/preparers/chars.py.
    "tiny_shakespeare",
    "language_model",
    "txt",
    "chars",
    files=(
        RawFile(
            "tiny_shakespeare/input.txt",
            ("86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",),
            urls=(
                "https://raw.githubusercontent.com/karpathy/char-rnn/"
                "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/input.txt",
            ),
        ),
    ),
    source="Tiny Shakespeare: works of William Shakespeare concatenated by Andrej Karpathy for char-rnn (GitHub "
    "karpathy/char-rnn, data/tinyshakespeare/input.txt); 1,115,394 ASCII characters, 65 distinct",
    citation="Karpathy (2015), The Unreasonable Effectiveness of Recurrent Neural Networks",
    license="public domain text (Shakespeare); the char-rnn repository is MIT-licensed",
)


CATALOG |= {
    # Forecasting (notes 002, "TYPES OF RNN", many to many): past values -> the next `horizon` values
    # (pipelines/data/preparers/forecast.py).
    "airline_passengers": DatasetEntry(
        "airline_passengers",
        "forecasting",
        "csv",
        "series",
        files=(
            RawFile(
                "airline_passengers/airline-passengers.csv",
                ("8cb51be753a718d9be5d76d7e238cc224792754676adc21faa59e954b0201621",),
                urls=(
                    "https://raw.githubusercontent.com/jbrownlee/Datasets/"
                    "d20fcb6402ae34e653d4513b00f39257bb37ed7f/airline-passengers.csv",
                ),
            ),
        ),
        source="International airline passengers, monthly totals Jan 1949 - Dec 1960 (thousands): Box & Jenkins "
        "Series G, via Hyndman's Time Series Data Library (TSDL); file from GitHub jbrownlee/Datasets",
        citation="Box, Jenkins (1976), Time Series Analysis: Forecasting and Control, Series G",
        license="classic textbook series, commonly treated as freely usable (R's datasets::AirPassengers)",
    ),
    "melbourne_temp_7d": DatasetEntry(
        "melbourne_temp_7d",
        "forecasting",
        "csv",
        "series",
        files=CATALOG["melbourne_temp"].files,
        source=CATALOG["melbourne_temp"].source + "; the next 7 days from past days",
        license=CATALOG["melbourne_temp"].license,
        base="melbourne_temp",
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
