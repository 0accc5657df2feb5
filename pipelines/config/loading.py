"""Reading ``params.yaml``: the active profile merged in (:func:`resolve`), the tuned values of ``use_tuned``
experiments, validation with errors that name the key path (:func:`validate`) and :func:`load_params`."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    TypeAdapter,
    ValidationError,
)

from pipelines import REPO_ROOT
from pipelines.config.base import (
    DEFAULT_PARAMS_PATH,
    TUNED_DIR,
    ConfigError,
    format_errors,
)
from pipelines.config.experiment import dataset_context
from pipelines.config.params import Params
from pipelines.config.sources import SourceConfig
from pipelines.data.catalog import DatasetEntry
from pipelines.errors import DataError
from pipelines.mappings import deep_merge

# --------------------------------------------------------------------------------------------- resolution


def resolve(raw: dict[str, Any], profile: str | None = None, base_dir: Path | None = None) -> dict[str, Any]:
    """Apply the active profile to a raw ``params.yaml`` mapping; returns the mapping :class:`Params` validates.

    An experiment with ``use_tuned: true`` then gets the ``params`` of ``<base_dir>/params/tuned/<name>.yaml``
    (written by ``deepnotes tune``) merged in last: the tuned values win over the profile's.

    Raises:
        ConfigError: the profile is unknown, a profile block is not a mapping, or a tuned file is missing/empty.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"params.yaml: expected a mapping at the top level, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    profile = profile or os.environ.get("DEEPNOTES_PROFILE") or raw.get("profile", "default")
    if not isinstance(profile, str):
        raise ConfigError(f"params.yaml: profile: expected the name of a profile, got {profile!r}")
    profiles = raw.get("profiles") or {"default": {}}
    if not isinstance(profiles, dict):
        raise ConfigError(f"params.yaml: profiles: expected a mapping of profile name to settings, got {profiles!r}")
    known = ", ".join(sorted(map(str, profiles)))
    if profile not in profiles:
        raise ConfigError(f"params.yaml: profile: unknown profile {profile!r}; defined profiles: {known}")
    raw["profile"] = profile
    active = profiles.get(profile) or {}
    where = f"profiles.{profile}"
    if not isinstance(active, dict):
        raise ConfigError(f"params.yaml: {where}: expected a mapping, got {type(active).__name__}")
    datasets = raw.get("datasets")
    for ds_name, ds_override in _mapping(active.get("datasets"), f"{where}.datasets").items():
        override = _mapping(ds_override, f"{where}.datasets.{ds_name}")
        # a dataset that is not a mapping is left as it is: validation names datasets.<name>
        if isinstance(datasets, dict) and ds_name in datasets and isinstance(datasets[ds_name] or {}, dict):
            datasets[ds_name] = deep_merge(datasets[ds_name] or {}, override)
    every = _mapping(active.get("experiment"), f"{where}.experiment")
    for section in ("experiments", "transfer"):
        experiments = raw.get(section) or {}
        if not isinstance(experiments, dict):
            raise ConfigError(f"params.yaml: {section}: expected a mapping of experiment name to settings")
        for name, exp in experiments.items():
            if not isinstance(exp, dict):
                raise ConfigError(f"params.yaml: {section}.{name}: expected a mapping, got {type(exp).__name__}")
            own_profiles = _mapping(exp.pop("profiles", None), f"{section}.{name}.profiles")
            unknown = set(own_profiles) - set(profiles)
            if unknown:
                raise ConfigError(
                    f"params.yaml: {section}.{name}.profiles: unknown profile(s) {sorted(map(str, unknown))}; "
                    f"defined profiles: {known}"
                )
            merged = deep_merge(exp, every)
            merged = deep_merge(merged, _mapping(own_profiles.get(profile), f"{section}.{name}.profiles.{profile}"))
            if merged.get("use_tuned") is True:
                merged = deep_merge(merged, load_tuned(name, base_dir or REPO_ROOT)["params"])
            experiments[name] = merged
    return raw


def _mapping(value: Any, where: str) -> dict[str, Any]:
    """``value`` when it is a mapping, ``{}`` when empty (``null``); else :class:`ConfigError` naming ``where``."""
    if value is None or value == {}:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"params.yaml: {where}: expected a mapping, got {value!r}")
    return value


def _read_yaml(path: Path, missing: str) -> Any:
    """Parse a YAML file. Raises :class:`ConfigError` ``<path>: <missing>`` or ``<path>: not valid YAML: ...``."""
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {missing}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def tuned_path(name: str, base_dir: Path | None = None) -> Path:
    """``<base_dir>/params/tuned/<name>.yaml``: an experiment's best params, written by ``deepnotes tune``."""
    return (base_dir or REPO_ROOT) / TUNED_DIR / f"{name}.yaml"


def load_tuned(name: str, base_dir: Path | None = None) -> dict[str, Any]:
    """Read an experiment's tuned-params file; returns its mapping (``params`` holds the nested overrides).

    Raises:
        ConfigError: the file is missing, not YAML, or holds no ``params`` (no search has finished a trial yet).
    """
    path = tuned_path(name, base_dir)
    hint = f"run `deepnotes tune {name}` first, or set experiments.{name}.use_tuned: false"
    data = _read_yaml(path, missing=f"experiments.{name}.use_tuned is true but the file does not exist; {hint}")
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict) or not data["params"]:
        raise ConfigError(f"{path}: experiments.{name}.use_tuned is true but the file holds no tuned params; {hint}")
    return data


def source_entries(resolved: dict[str, Any], root: Path, source: str = "params.yaml") -> dict[str, DatasetEntry]:
    """The entries of the datasets that a resolved params mapping declares with a ``source:`` block, the task of
    each given or inferred from its files (``root``: the folder paths are relative to).

    A block that does not validate is left out: :class:`Params` validation reports it with its key path.

    Raises:
        ConfigError: a task to infer from files that cannot be read (naming the dataset and the file).
    """
    datasets = resolved.get("datasets")
    entries: dict[str, DatasetEntry] = {}
    for name, dataset in datasets.items() if isinstance(datasets, dict) else ():
        if not isinstance(dataset, dict) or not isinstance(dataset.get("source"), dict):
            continue
        try:
            config = TypeAdapter(SourceConfig).validate_python(dataset["source"])
        except ValidationError:
            continue
        try:
            entries[str(name)] = config.entry(str(name), root)
        except DataError as exc:
            raise ConfigError(f"{source}: datasets.{name}.source: {exc}") from None
    return entries


def validate(
    raw: dict[str, Any], profile: str | None = None, source: str = "params.yaml", base_dir: Path | None = None
) -> Params:
    """Resolve and validate a raw mapping. Raises :class:`ConfigError` with every problem's key path.

    ``base_dir`` is the folder of the params file (where ``params/tuned/`` lives, and the root of relative
    ``source:`` paths); default the repo root.
    """
    resolved = resolve(raw, profile, base_dir)
    context = dataset_context(source_entries(resolved, base_dir or REPO_ROOT, source))
    try:
        return Params.model_validate(resolved, context=context)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, source=f"{source}: ")) from None


def load_params(path: str | Path | None = None, profile: str | None = None) -> Params:
    """Load, resolve and validate ``params.yaml``.

    Args:
        path: the params file; default ``<repo>/params.yaml``.
        profile: override the file's ``profile:`` (else ``DEEPNOTES_PROFILE``, else the file's value).

    Raises:
        ConfigError: the file is missing, is not YAML, or fails validation (the message names the key path).
    """
    path = Path(path) if path else DEFAULT_PARAMS_PATH
    raw = _read_yaml(path, missing="params file not found")
    return validate(raw, profile, source=path.name, base_dir=path.resolve().parent)
