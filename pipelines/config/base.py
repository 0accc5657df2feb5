"""What every part of the params schema shares: :class:`ConfigError`, the strict pydantic base, the names of
activations, initializers, optimizers, losses and regularizers, and how a validation error is worded."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
)

from pipelines import REPO_ROOT

ActivationName = Literal["sigmoid", "tanh", "relu", "leaky_relu", "elu", "prelu"]
InitializerName = Literal["zeros", "uniform", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal"]
SamplerName = Literal["tpe", "random", "cmaes", "gp"]
PrunerName = Literal["median", "hyperband", "successive_halving", "none"]
OptimizerName = Literal["gd", "sgd", "sgd_momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw"]
LossName = Literal[
    "bce", "ce", "mse", "mae", "huber", "pseudo_huber", "hinge", "ce_smooth_l1", "ce_giou", "ce_smooth_l1_giou"
]
RegularizationName = Literal["none", "l1", "l2", "elastic_net"]

DEFAULT_PARAMS_PATH = REPO_ROOT / "params.yaml"
#: Where ``deepnotes tune`` writes an experiment's best params (relative to the params file's folder).
TUNED_DIR = Path("params") / "tuned"


class ConfigError(ValueError):
    """A bad ``params.yaml``: the message names the file, the key path, what was wrong and what was expected."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


#: The tags of the search-space union, which pydantic puts in error locations.
SPACE_TAGS = frozenset({"float", "int", "categorical"})


def format_errors(exc: ValidationError, prefix: str = "", source: str = "") -> str:
    """One line per error of ``exc``: ``<source><key path>: <message> (got <value>)``; ``prefix`` starts each path."""
    lines = []
    for err in exc.errors():
        # search-space entries are a union tagged by `type`: pydantic puts the tag in the location; drop it
        path = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "" and p not in SPACE_TAGS)
        msg = err["msg"].removeprefix("Value error, ")
        got = "" if err["type"] in ("value_error", "missing") else f" (got {err.get('input')!r})"
        for line in msg.splitlines() or [""]:
            # a validator's message about a key below it ("model.depth: ...") joins the key path:
            # "experiments.lenet5_mnist.model.depth: ..." rather than "experiments.lenet5_mnist: model.depth: ..."
            sub = _SUB_PATH.match(line) if path and err["type"] == "value_error" else None
            where, text = (f"{path}.{sub.group(1)}", sub.group(2)) if sub else (path, line)
            lines.append(f"{source}{where}: {text}{got}" if where else f"{source}{text}{got}")
    return "\n".join(lines)


#: The start of a validator message that names a key below the model it validates (``model.depth: ...``).
_SUB_PATH = re.compile(r"^([A-Za-z_]\w*(?:\.\w+)*): (.*)$", re.S)


def validate_options(model: type[BaseModel] | None, raw: dict[str, Any], key: str) -> dict[str, Any]:
    """``raw`` checked against ``model`` (a dataset's or a task's own settings) and returned with every default
    filled in, so the resolved stage files record what actually runs; ``{}`` when ``model`` is ``None``.

    Raises:
        ValueError: ``raw`` has keys but there is no model, or it fails ``model`` (each error under ``key``).
    """
    if model is None:
        if raw:
            raise ValueError(f"{key}: takes no options; got {', '.join(sorted(raw))}")
        return {}
    try:
        return model.model_validate(raw).model_dump(mode="json")
    except ValidationError as exc:
        raise ValueError(format_errors(exc, prefix=key)) from None
