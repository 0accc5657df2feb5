"""The ``tuning:`` section of ``params.yaml``: the search settings, the default space, per-architecture and
per-experiment spaces, and each experiment's trial budget."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from models.registry import REGISTRY
from pipelines.config.base import (
    PrunerName,
    SamplerName,
    Strict,
)
from pipelines.tuning.search_space import ParamSpec

# ------------------------------------------------------------------------------------------------- tuning

Space = dict[str, ParamSpec | None]


class TuneExperimentConfig(Strict):
    """Per-experiment search settings under ``tuning.experiments.<experiment>``; unset fields use ``tuning``'s.

    ``metric``/``direction`` default to the experiment's ``checkpoint.monitor``/``mode``, so a trial's value is
    what ``train`` reports as its best checkpoint score. ``trial`` is merged into the experiment for every trial
    (a smaller budget: fewer epochs, fewer batches); leave it empty and ``dvc repro train@<experiment>`` with
    ``use_tuned: true`` reproduces the winning trial's value exactly.
    """

    metric: str | None = None
    direction: Literal["minimize", "maximize"] | None = None
    n_trials: PositiveInt | None = None
    timeout: PositiveFloat | None = None
    sampler: SamplerName | None = None
    pruner: PrunerName | None = None
    trial: dict[str, Any] = Field(default_factory=dict, description="experiment overrides for every trial")
    space: Space = Field(default_factory=dict, description="per-path overrides of the architecture's space")


class TuneSettings(Strict):
    """An experiment's search settings with every field filled (:meth:`Params.tune_settings`)."""

    metric: str
    direction: Literal["minimize", "maximize"]
    n_trials: PositiveInt
    timeout: PositiveFloat | None
    sampler: SamplerName
    pruner: PrunerName
    trial: dict[str, Any] = Field(default_factory=dict)
    space: Space = Field(default_factory=dict)


class TuningConfig(Strict):
    """Optuna searches (``deepnotes tune <experiment>``): defaults, storage, and the search spaces.

    The space of an experiment is ``space`` (the default for every architecture), overridden per path by
    ``architectures.<architecture>`` and then by ``experiments.<experiment>.space``; ``null`` removes a path.
    """

    storage: str | None = Field(
        None,
        description="Optuna storage URL or journal file; default "
        "<repo>/studies/deepnotes.journal (DEEPNOTES_OPTUNA_STORAGE overrides)",
    )
    n_trials: PositiveInt = Field(20, description="target total of trials in the study")
    timeout: PositiveFloat | None = Field(None, description="seconds per session in which new trials may start")
    workers: PositiveInt = 1
    sampler: SamplerName = "tpe"
    pruner: PrunerName = "median"
    n_startup_trials: NonNegativeInt = Field(5, description="trials before TPE/GP model the space and median prunes")
    n_warmup_steps: NonNegativeInt = Field(1, description="epochs a trial runs before the median pruner may stop it")
    min_resource: PositiveInt = Field(1, description="successive halving/Hyperband: epochs of the first rung")
    reduction_factor: int = Field(3, ge=2, description="successive halving/Hyperband: 1/eta promoted per rung")
    heartbeat_interval: PositiveInt = Field(30, description="seconds between a running trial's heartbeats")
    grace_period: PositiveInt | None = Field(
        None, description="seconds without heartbeat before a trial is failed (default 2 x heartbeat_interval)"
    )
    max_retry: NonNegativeInt = Field(1, description="re-runs of a trial whose worker died (same params)")
    space: Space = Field(default_factory=dict)
    architectures: dict[str, Space] = Field(default_factory=dict)
    experiments: dict[str, TuneExperimentConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_architectures(self) -> TuningConfig:
        for name in self.architectures:
            if name not in REGISTRY:
                raise ValueError(
                    f"architectures.{name}: not a registered architecture; known: {', '.join(sorted(REGISTRY))}"
                )
        return self
