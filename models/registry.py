"""The architecture registry: maps an architecture name to its params model and its network builder.

This module is deliberately free of torch imports: the config loader validates every experiment's ``model:``
block against the architecture's pydantic params model before any heavy library is imported, and the builder
is imported only when a network is actually built (:func:`build_network`).

Architectures are grouped by family, one package each under ``models/`` (``dense``, ``vision``, ``sequence``,
``generative``). A family's ``specs.py`` is torch-free too (pydantic and this module only): it declares each
architecture's params model and registers it right beside it with :func:`register`. Importing this module imports
every ``models/<family>/specs.py`` (see :func:`_discover_families`), so :data:`REGISTRY` is complete as soon as
``models.registry`` is imported.

To add an architecture: write its ``nn.Module`` in its family's package (its ``__init__`` takes a
:class:`NetworkSpec` and the params model's fields as keyword arguments), then declare its params model and one
``register(Architecture(...))`` line in that family's ``specs.py``. Nothing else changes; a new family is a new
package ``models/<family>/`` with a ``specs.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

#: The repository root (``models/`` is one of its folders); :meth:`Architecture.module_path` is relative to it.
REPO_ROOT = Path(__file__).resolve().parents[1]


class ArchParams(BaseModel):
    """Base of every architecture's params model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class NoParams(ArchParams):
    """Architectures whose shape is fixed by the notes take no params."""


@dataclass(frozen=True)
class NetworkSpec:
    """What a network needs to know about its data and the experiment's shared knobs.

    Attributes:
        input_shape: shape of one sample, without the batch dimension: ``(features,)`` for tables,
            ``(channels, height, width)`` for images, ``(seq_len,)`` of token ids for text.
        num_outputs: 1 for binary and regression heads (a logit or a value), C for C-class heads (logits); for
            localization C, the classes (the network adds its 4 box coordinates).
        activation: hidden activation name (see ``models.factories.make_activation``).
        dropout: dropout rate in [0, 1) applied before each hidden dense layer's output.
        batch_norm: whether hidden layers get batch normalisation.
        vocab_size: vocabulary size for token inputs (text), else ``None``.
    """

    input_shape: tuple[int, ...]
    num_outputs: int
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False
    vocab_size: int | None = None


@dataclass(frozen=True)
class Architecture:
    """A registry entry.

    Attributes:
        name: the architecture name used in ``params.yaml``.
        target: ``"module:Class"`` of the ``nn.Module``; imported lazily.
        params: pydantic model of the ``model:`` block.
        notes: the notes section the architecture follows.
        reference: the paper, where there is one.
        modalities: data modalities it accepts (e.g. ``"image"``, ``"table"``, ``"text"``).
        tasks: tasks it supports (e.g. ``"multiclass"``); the pipeline checks the names against its task registry.
        describe_target: optional ``"module:function"`` giving facts to track (see :meth:`describe`).
        family: the family package under ``models/`` (e.g. ``"vision"``); set by :func:`register` from the name of
            the ``models.<family>.specs`` module that registers the entry.
    """

    name: str
    target: str
    params: type[ArchParams]
    notes: str
    reference: str
    modalities: frozenset[str]
    tasks: frozenset[str]
    describe_target: str | None = None
    family: str | None = None

    def supports(self, task: str) -> bool:
        """Whether the architecture can be trained for ``task`` (a name of ``pipelines.tasks``)."""
        return task in self.tasks

    def load(self) -> type[nn.Module]:
        return _import(self.target)

    def describe(self, spec: NetworkSpec, params: dict) -> dict[str, float | int]:
        """Architecture-specific facts worth tracking, e.g. the parameter saving of ResNet's 1x1 bottleneck:
        ``describe_target`` (``"module:function"`` of ``(spec, params) -> dict``) called lazily, else ``{}``."""
        return _import(self.describe_target)(spec, params) if self.describe_target else {}

    def module_path(self) -> str:
        """The repo-relative path of the target's module file, e.g. ``"models/vision/resnet.py"``.

        Found with :func:`importlib.util.find_spec`, which imports the parent packages (torch-free, empty
        ``__init__.py`` files) but not the module itself, so torch is not imported.

        Raises:
            ModuleNotFoundError: the target's module does not exist.
            ValueError: the module lives outside the repository.
        """
        module_name = self.target.partition(":")[0]
        spec = importlib.util.find_spec(module_name)
        if spec is None or not spec.origin:
            raise ModuleNotFoundError(f"architecture {self.name!r}: no module {module_name!r}", name=module_name)
        return Path(spec.origin).resolve().relative_to(REPO_ROOT).as_posix()


def _import(target: str):
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


#: Every registered architecture by name; filled by :func:`register` (complete once this module is imported).
REGISTRY: dict[str, Architecture] = {}

_SPECS_MODULE = re.compile(r"^models\.(?P<family>[A-Za-z_][A-Za-z0-9_]*)\.specs$")


def register(arch: Architecture) -> Architecture:
    """Add ``arch`` to :data:`REGISTRY` and return it (with its ``family`` set).

    Called once per architecture from its family's ``models/<family>/specs.py``, right beside its params model.
    ``family`` is taken from the calling module's name (``models.vision.specs`` -> ``"vision"``) unless the entry
    already names one.

    Raises:
        ValueError: an architecture of the same name is already registered (naming it and its family), or the
            family cannot be derived (``register`` called from outside a ``models.<family>.specs`` module on an
            entry without ``family``).
    """
    family = arch.family
    if family is None:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        match = _SPECS_MODULE.match(caller)
        if match is None:
            raise ValueError(
                f"register({arch.name!r}) called from {caller!r}: call it from a models.<family>.specs "
                f"module or give the Architecture a family"
            )
        family = match["family"]
    if arch.name in REGISTRY:
        raise ValueError(
            f"architecture {arch.name!r} is already registered (family "
            f"{REGISTRY[arch.name].family!r}); names must be unique"
        )
    arch = replace(arch, family=family)
    REGISTRY[arch.name] = arch
    return arch


def get_architecture(name: str) -> Architecture:
    """Return the registry entry for ``name``.

    Raises:
        KeyError: naming the unknown architecture and listing the registered ones.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; registered: {', '.join(sorted(REGISTRY))}") from None


def build_network(name: str, spec: NetworkSpec, params: dict | ArchParams | None = None) -> nn.Module:
    """Build the network of architecture ``name``.

    Args:
        name: registry name.
        spec: data shape and shared knobs.
        params: the experiment's ``model:`` block (validated here if it is a plain dict).

    Returns:
        An ``nn.Module`` mapping a batch ``(N, *spec.input_shape)`` to outputs ``(N, spec.num_outputs)``
        (``(N,)`` for single-output heads); the architecture's docstring says where it differs (``localizer``:
        ``(N, num_outputs + 4)``; ``autoencoder``: ``(N, *spec.input_shape)``).

    Raises:
        KeyError: unknown architecture. pydantic.ValidationError: bad params.
    """
    arch = get_architecture(name)
    if not isinstance(params, ArchParams):
        params = arch.params.model_validate(params or {})
    return arch.load()(spec, **params.model_dump())


def _discover_families() -> tuple[str, ...]:
    """Import ``models.<pkg>.specs`` for every package under ``models/`` that has one; returns the family names.

    The specs modules import :class:`Architecture` and :func:`register` from this module, so this runs last, once
    everything they need is defined. (When a specs module is imported first, its own import of this module runs
    the discovery, which finds that specs module already in ``sys.modules`` and lets it finish registering.)
    """
    import models

    families = []
    for info in pkgutil.iter_modules(models.__path__):
        if info.ispkg and importlib.util.find_spec(f"models.{info.name}.specs") is not None:
            importlib.import_module(f"models.{info.name}.specs")
            families.append(info.name)
    return tuple(families)


#: The family packages under ``models/`` whose ``specs.py`` registered architectures, in name order.
FAMILIES: tuple[str, ...] = _discover_families()
