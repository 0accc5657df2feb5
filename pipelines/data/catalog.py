"""Dataset catalog: every raw file the pipeline reads, with its checksum, provenance, format, task and preparer.

A dataset registers itself where it is declared: one module per dataset (or per family of datasets that share
files, such as CIFAR-10 and its class subsets) under :mod:`pipelines.data.datasets`, each calling :func:`register`.
Importing this module imports every one of them (:func:`_discover`), so :data:`CATALOG` is complete as soon as
``pipelines.data.catalog`` is imported. Each entry names its preparer by ``"module:function"``, imported only when
the dataset is prepared. So adding a dataset is one new module in ``pipelines/data/datasets/`` (and its preparer's):
no shared file changes, and the ``resolve`` stage, which records each stage's entry as data rather than every
dataset's code, reruns nothing else.

Checksums and provenance follow ``shared/data/README.md``. A file is accepted when its own sha256 is one of
``sha256`` (the canonical distribution and, where the mirror holds one, a repacked copy of it) or, for gzip files,
when the sha256 of its decompressed payload equals ``payload_sha256``: a repacked ``.gz`` differs from the canonical
one only in its gzip wrapper, so checking the payload accepts both.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from pydantic import BaseModel

    from pipelines.data.preparers.common import Prepared

#: How a dataset's samples are stored, which decides the architectures that can read it.
#: ``text_pair``: a source and a target token sequence per sample (translation).
Modality = Literal["table", "image", "tabular", "text", "series", "chars", "text_pair"]


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
    """A dataset: its files, format, task, preparer, and where it comes from.

    ``preparer`` is ``"module:function"``; the function is called as ``function(config, seed, *, name, mirror)``
    (:func:`pipelines.data.preparers.prepare_dataset`), so one preparer serves several entries (a base dataset and
    its subsets) by their ``name``. ``options`` is the pydantic model of the dataset's own settings, validated
    from ``datasets.<name>.options`` in ``params.yaml``; ``None``: the dataset takes none.
    """

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
    preparer: str = ""
    options: type[BaseModel] | None = None

    def load_preparer(self) -> Callable[..., Prepared]:
        """Import and return the preparation function named by :attr:`preparer`.

        Raises:
            LookupError: the entry names no preparer (a dataset read only through a ``source:`` block).
        """
        if not self.preparer:
            raise LookupError(f"dataset {self.name!r} names no preparer")
        module, _, function = self.preparer.partition(":")
        return getattr(importlib.import_module(module), function)

    def record(self) -> dict[str, Any]:
        """The entry as plain JSON-able data (the options model as its JSON schema), for the ``resolve`` stage: a
        stage that reads this dataset depends on what its entry says, not on the code of every dataset module."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "files":
                value = [{k.name: getattr(raw, k.name) for k in fields(raw)} for raw in value]
            elif f.name == "options":
                value = value.model_json_schema() if value is not None else None
            out[f.name] = value
        return out


def raw_file(
    folder: str, bases: tuple[str, ...], name: str, *sha: str, payload: str | None = None, required: bool = True
) -> RawFile:
    """``<folder>/<name>`` with the accepted sha256s, and one URL per base URL (``base + name``)."""
    return RawFile(f"{folder}/{name}", tuple(sha), payload, tuple(base + name for base in bases), required)


#: Dataset name -> entry, filled by :func:`register` as :func:`_discover` imports the dataset modules.
CATALOG: dict[str, DatasetEntry] = {}
#: Dataset name -> the module that registered it (a newcomer's one hop from a name to its declaration).
MODULES: dict[str, str] = {}


def register(*entries: DatasetEntry) -> tuple[DatasetEntry, ...]:
    """Add ``entries`` to :data:`CATALOG`; call it in the dataset's module, beside its declaration.

    Raises:
        ValueError: a name is registered twice, or an entry names no preparer.
    """
    caller = sys._getframe(1).f_globals.get("__name__", "?")
    for entry in entries:
        if entry.name in CATALOG and CATALOG[entry.name] != entry:
            raise ValueError(f"dataset {entry.name!r} is registered twice ({MODULES[entry.name]} and {caller})")
        if not entry.preparer:
            raise ValueError(f"dataset {entry.name!r} ({caller}): set preparer='module:function'")
        CATALOG[entry.name] = entry
        MODULES[entry.name] = caller
    return entries


def get_dataset(name: str) -> DatasetEntry:
    """Return the catalog entry for ``name``.

    Raises:
        KeyError: naming the unknown dataset and listing the known ones.
    """
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; the catalog has: {', '.join(sorted(CATALOG))}") from None


def _discover() -> tuple[str, ...]:
    """Import every module of :mod:`pipelines.data.datasets`; returns their names.

    The dataset modules import :func:`register` from this module, so this runs last, once everything they need is
    defined (as :func:`models.registry._discover_families` does for the architectures).
    """
    from pipelines.data import datasets

    names = []
    for info in pkgutil.iter_modules(datasets.__path__):
        importlib.import_module(f"{datasets.__name__}.{info.name}")
        names.append(info.name)
    return tuple(names)


#: The modules of :mod:`pipelines.data.datasets`, in name order.
DATASET_MODULES: tuple[str, ...] = _discover()
