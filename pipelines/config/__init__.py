"""Typed, validated configuration: ``params.yaml`` resolved for the active profile.

``params.yaml`` is the single source of truth for every stage. It is validated with pydantic before anything runs:
an unknown key, a wrong type or an impossible combination (hinge loss on a regression task, flips on digits, an
architecture that cannot read the dataset) is a :class:`ConfigError` naming the key path, e.g.
``params.yaml: experiments.lenet5_mnist.optimizer.lr: Input should be greater than 0 (got -1)``.

Profiles: ``profile:`` names the active profile (``default`` for a laptop CPU, ``full`` for full-scale GPU runs,
``tiny`` for tests). ``profiles.<name>.experiment`` is deep-merged into every experiment and
``profiles.<name>.datasets.<dataset>`` into that dataset; an experiment's own ``profiles.<name>`` block is merged
last, so the most specific setting wins.

This package imports no torch: the data stages validate the whole file at the cost of pydantic alone.

The schema is split by section, each module importing only pydantic and the registries:
:mod:`~pipelines.config.base` (errors, names, error wording), :mod:`~pipelines.config.data` (datasets, augmentation),
:mod:`~pipelines.config.experiment`, :mod:`~pipelines.config.tuning`, :mod:`~pipelines.config.params` (the whole file)
and :mod:`~pipelines.config.loading` (profiles, tuned values, :func:`load_params`). Everything public is importable
from ``pipelines.config``.
"""

from pipelines.config.base import (
    DEFAULT_PARAMS_PATH,
    SPACE_TAGS,
    TUNED_DIR,
    ActivationName,
    ConfigError,
    InitializerName,
    LossName,
    OptimizerName,
    PrunerName,
    RegularizationName,
    SamplerName,
    Strict,
    format_errors,
)
from pipelines.config.data import (
    AugmentConfig,
    DatasetConfig,
)
from pipelines.config.experiment import (
    BiasVarianceConfig,
    BootstrapConfig,
    CheckpointConfig,
    DiagnosticsConfig,
    EarlyStoppingConfig,
    ExperimentConfig,
    GradientDiagnosticsConfig,
    LearningCurveConfig,
    OptimizerConfig,
    PretrainedConfig,
    RegularizationConfig,
    SeedsConfig,
    StudyBudget,
    TrainerConfig,
)
from pipelines.config.loading import load_params, load_tuned, resolve, tuned_path, validate
from pipelines.config.params import (
    Params,
    ProfileConfig,
    TrackingConfig,
)
from pipelines.config.tuning import (
    Space,
    TuneExperimentConfig,
    TuneSettings,
    TuningConfig,
)

__all__ = [
    "ActivationName",
    "AugmentConfig",
    "BiasVarianceConfig",
    "BootstrapConfig",
    "CheckpointConfig",
    "ConfigError",
    "DEFAULT_PARAMS_PATH",
    "DatasetConfig",
    "DiagnosticsConfig",
    "EarlyStoppingConfig",
    "ExperimentConfig",
    "GradientDiagnosticsConfig",
    "InitializerName",
    "LearningCurveConfig",
    "LossName",
    "OptimizerConfig",
    "OptimizerName",
    "Params",
    "PretrainedConfig",
    "ProfileConfig",
    "PrunerName",
    "RegularizationConfig",
    "RegularizationName",
    "SPACE_TAGS",
    "SamplerName",
    "SeedsConfig",
    "Space",
    "Strict",
    "StudyBudget",
    "TUNED_DIR",
    "TrackingConfig",
    "TrainerConfig",
    "TuneExperimentConfig",
    "TuneSettings",
    "TuningConfig",
    "format_errors",
    "load_params",
    "load_tuned",
    "resolve",
    "tuned_path",
    "validate",
]
