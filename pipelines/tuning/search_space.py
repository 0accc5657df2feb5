"""Hyperparameter search spaces: declared in ``params.yaml``, validated before any trial, sampled by Optuna.

A space maps a dotted path into an experiment (``optimizer.lr``, ``dropout``, ``regularization.type``,
``optimizer.betas.0``) to a distribution::

    optimizer.lr:            {type: float, low: 1.0e-4, high: 1.0e-1, log: true}
    optimizer.name:          {type: categorical, choices: [sgd, sgd_momentum, nesterov, adam]}
    optimizer.momentum:      {type: float, low: 0.5, high: 0.99, when: {optimizer.name: [sgd_momentum, nesterov]}}
    batch_size:              {type: categorical, choices: [32, 64, 128]}

``when`` makes a parameter conditional: it is sampled only when each named categorical parameter (declared earlier
in the space) took one of the listed values; otherwise the experiment keeps its own value. The Optuna parameter
name is the path itself, so trials, MLflow params and ``params/tuned/<experiment>.yaml`` all use the same names.

Validation (:func:`validate_space`) applies every bound and every choice to the experiment, together with a
representative value of each other active parameter, and validates the result with the experiment schema: an
unknown initializer, a dropout of 1.0 or a path that does not exist is a :class:`~pipelines.config.ConfigError`
naming ``tuning...space.<path>`` before any trial starts. Which knobs the notes discuss: notes 004 "Optimizers",
notes 001 "Weight Initialization", "Regularization", "Activation Functions" and dropout.

This module imports no torch and no optuna at module level.
"""

from __future__ import annotations

import copy
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from pipelines.mappings import deep_merge

Scalar = bool | int | float | str | None


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid")

    when: dict[str, list[Scalar]] = Field(
        default_factory=dict, description="sample only if these categorical params took one of these values"
    )


class FloatParam(_Param):
    """A float in ``[low, high]``; ``log`` samples uniformly in log space (learning rates, penalty strengths)."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("step cannot be combined with log: true")
        return self

    def candidates(self) -> list[Any]:
        return [self.low, self.high]

    def representative(self) -> Any:
        return math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2

    def suggest(self, trial, name: str) -> Any:
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)


class IntParam(_Param):
    """An integer in ``[low, high]`` (both inclusive), optionally on a log scale or with a ``step``."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, gt=0)

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("step cannot be combined with log: true")
        return self

    def candidates(self) -> list[Any]:
        return [self.low, self.high]

    def representative(self) -> Any:
        return self.low

    def suggest(self, trial, name: str) -> Any:
        return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step)


class CategoricalParam(_Param):
    """One of ``choices`` (strings, numbers, booleans): optimizer, initializer, activation, batch size."""

    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> CategoricalParam:
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError(f"choices must be unique, got {self.choices}")
        return self

    def candidates(self) -> list[Any]:
        return list(self.choices)

    def representative(self) -> Any:
        return self.choices[0]

    def suggest(self, trial, name: str) -> Any:
        return trial.suggest_categorical(name, self.choices)


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
_PARAM_ADAPTER: TypeAdapter = TypeAdapter(ParamSpec)


def _check_range(low: float, high: float, log: bool) -> None:
    if not low < high:
        raise ValueError(f"low must be below high, got low={low} high={high}")
    if log and low <= 0:
        raise ValueError(f"log: true needs low > 0, got low={low}")


class SearchSpace:
    """An ordered, validated mapping of experiment paths to distributions.

    Args:
        params: ``{path: ParamSpec}`` in declaration order (a parent of a ``when`` comes before its children).

    Raises:
        ValueError: a ``when`` names a parameter that is not an earlier categorical, or values it cannot take.
    """

    def __init__(self, params: dict[str, FloatParam | IntParam | CategoricalParam]) -> None:
        seen: dict[str, Any] = {}
        unreachable: set[str] = set()
        for path, spec in params.items():
            for parent, values in spec.when.items():
                if parent not in params or list(params).index(parent) >= list(params).index(path):
                    raise ValueError(f"{path}.when: {parent!r} must be a parameter declared earlier in the space")
                if not isinstance(params[parent], CategoricalParam):
                    raise ValueError(f"{path}.when: {parent!r} must be a categorical parameter")
                if not values:
                    raise ValueError(f"{path}.when.{parent}: list at least one value")
                # an override that narrows the parent's choices can leave a child with nothing to switch it on
                choices = params[parent].choices  # type: ignore[union-attr]  # checked categorical above
                if parent in unreachable or not any(v in choices for v in values):
                    unreachable.add(path)
            if path not in unreachable:
                seen[path] = spec
        self.params = seen
        #: parameters whose ``when`` no remaining choice of their parent satisfies (never sampled)
        self.unreachable = sorted(unreachable)
        self.conditions = [
            (path, parent, value)
            for path, spec in params.items()
            for parent, values in spec.when.items()
            for value in values
        ]

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> SearchSpace:
        """Parse ``{path: {type: ..., ...}}``; entries set to ``None`` (removed by an override) are skipped.

        Raises:
            ValueError: naming the path of a malformed entry.
        """
        parsed = {}
        for path, entry in raw.items():
            if entry is None:
                continue
            try:
                parsed[path] = _PARAM_ADAPTER.validate_python(entry)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc'][1:])) or 'type'}: {e['msg'].removeprefix('Value error, ')}"
                    for e in exc.errors()
                )
                raise ValueError(f"{path}: {problems}") from None
        return cls(parsed)

    def __len__(self) -> int:
        return len(self.params)

    def active(self, path: str, values: dict[str, Any]) -> bool:
        """Whether ``path`` is sampled given the values chosen so far."""
        return all(values.get(parent) in allowed for parent, allowed in self.params[path].when.items())

    def suggest(self, trial) -> dict[str, Any]:
        """Sample every active parameter from an Optuna ``trial``; returns ``{path: value}`` in declaration order."""
        values: dict[str, Any] = {}
        for path, spec in self.params.items():
            if self.active(path, values):
                values[path] = spec.suggest(trial, path)
        return values

    def representative(self) -> dict[str, Any]:
        """One valid assignment: the first choice or a mid/low value of every parameter active under it."""
        values: dict[str, Any] = {}
        for path, spec in self.params.items():
            if self.active(path, values):
                values[path] = spec.representative()
        return values

    def assignments_to_check(self) -> list[tuple[str, Any, dict[str, Any]]]:
        """``(path, value, assignment)`` for every bound and choice of every parameter, each set on top of a
        representative assignment in which its ``when`` parents take values that make it active, so a validator
        sees every value in a context where it is really sampled."""
        checks = []
        for path, spec in self.params.items():
            pinned: dict[str, Any] = {}
            pending = dict(spec.when)
            while pending:  # the parents (recursively) that make `path` active
                parent, allowed = pending.popitem()
                pinned.setdefault(parent, allowed[0])
                pending.update({k: v for k, v in self.params[parent].when.items() if k not in pinned})
            for value in spec.candidates():
                values: dict[str, Any] = {}
                for other, other_spec in self.params.items():
                    if self.active(other, values):
                        values[other] = value if other == path else pinned.get(other, other_spec.representative())
                checks.append((path, value, values))
        return checks


def set_path(mapping: dict[str, Any], path: str, value: Any, base: dict[str, Any] | None = None) -> None:
    """Set dotted ``path`` in a nested ``mapping`` (in place), creating dicts on the way.

    A numeric component indexes a list (``optimizer.betas.0``); the list is copied from ``base`` (the experiment's
    own values) when ``mapping`` does not hold it yet.

    Raises:
        ValueError: a component walks into something that is not a mapping or list, or an index is out of range.
    """
    parts = path.split(".")
    node, base_node = mapping, base or {}
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        base_node = base_node.get(part, {}) if isinstance(base_node, dict) else {}
        if nxt.isdigit():
            current = node.get(part)
            if not isinstance(current, list):
                if not isinstance(base_node, (list, tuple)):
                    raise ValueError(f"{'.'.join(parts[: i + 1])} is not a list, cannot index it with {nxt}")
                node[part] = list(base_node)
            items = node[part]
            index = int(nxt)
            if index >= len(items):
                raise ValueError(f"{path}: index {index} out of range for a list of {len(items)}")
            if i + 2 == len(parts):
                items[index] = value
                return
            raise ValueError(f"{path}: only the last component may index a list")
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"{'.'.join(parts[: i + 1])} is not a mapping, cannot set {path}")
        node = child
    node[parts[-1]] = value


def overrides_from(values: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Nested overrides for an experiment from flat ``{path: value}`` (lists filled from ``base``)."""
    out: dict[str, Any] = {}
    for path, value in values.items():
        set_path(out, path, value, base)
    return out


def apply(experiment: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of the raw ``experiment`` mapping with flat ``{path: value}`` assignments applied."""

    return deep_merge(copy.deepcopy(experiment), overrides_from(values, experiment))
