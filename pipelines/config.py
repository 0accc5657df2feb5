"""Typed, validated configuration: ``params.yaml`` resolved for the active profile.

``params.yaml`` is the single source of truth for every stage. It is validated with pydantic before anything runs:
an unknown key, a wrong type or an impossible combination (hinge loss on a regression task, flips on digits, an
architecture that cannot read the dataset) is a :class:`ConfigError` naming the key path, e.g.
``params.yaml: experiments.lenet5_mnist.optimizer.lr: Input should be greater than 0 (got -1)``.

Profiles: ``profile:`` names the active profile (``default`` for a laptop CPU, ``full`` for full-scale GPU runs,
``tiny`` for tests). ``profiles.<name>.experiment`` is deep-merged into every experiment and
``profiles.<name>.datasets.<dataset>`` into that dataset; an experiment's own ``profiles.<name>`` block is merged
last, so the most specific setting wins.

This module imports no torch: the data stages validate the whole file at the cost of pydantic alone.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from models.registry import REGISTRY
from pipelines import REPO_ROOT
from pipelines.data.catalog import CATALOG
from pipelines.mappings import deep_merge
from pipelines.tasks import get_task
from pipelines.tuning.search_space import ParamSpec, SearchSpace

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


# --------------------------------------------------------------------------------------------- datasets


class DatasetConfig(Strict):
    """How ``prepare`` splits and preprocesses one dataset (notes 004, "Min-Max Scaling"; notes 001, standardising)."""

    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of the train split carved out for validation")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share held out for test when there is no official split")
    max_train_samples: PositiveInt | None = Field(
        None, description="seeded subset of the train split (after the val carve-out)"
    )
    vocab_size: PositiveInt = Field(20000, description="text: tokenizer vocabulary size, fitted on train only")
    seq_len: PositiveInt = Field(200, description="text: tokens per sequence after truncation/padding")
    window: PositiveInt = Field(
        14, description="time series: past days per sample (the features); the target is the next day"
    )
    max_train_per_class: PositiveInt | None = Field(
        None, description="keep this many seeded train samples of each class (few-label fine-tuning)"
    )
    max_test_samples: PositiveInt | None = Field(
        None, description="image datasets: seeded stratified subset of the official test split"
    )
    canvas_size: int = Field(64, ge=32, le=256, description="localization: side of the square canvas, pixels")
    min_scale: float = Field(0.6, gt=0, description="localization: smallest digit side, relative to its 28 pixels")
    max_scale: float = Field(1.6, gt=0, description="localization: largest digit side, relative to its 28 pixels")

    @model_validator(mode="after")
    def _scales(self) -> DatasetConfig:
        if self.min_scale > self.max_scale:
            raise ValueError(f"min_scale {self.min_scale} is above max_scale {self.max_scale}")
        if round(28 * self.max_scale) > self.canvas_size:
            raise ValueError(
                f"a digit at max_scale {self.max_scale} ({round(28 * self.max_scale)} px) does not fit "
                f"on the {self.canvas_size}-pixel canvas"
            )
        return self


class AugmentConfig(Strict):
    """Offline augmentation of the train split (notes 004, data augmentation). Off unless ``enabled``.

    Image transforms run through kornia; tabular data only gets Gaussian noise on its numeric features.
    """

    enabled: bool = False
    copies: PositiveInt = Field(1, description="augmented copies made of each selected train sample")
    fraction: float = Field(1.0, gt=0, le=1, description="share of the train split that is augmented")
    hflip: bool = Field(False, description="random horizontal flip (p=0.5); only for flip-safe datasets")
    crop_padding: NonNegativeInt = Field(
        0,
        description="random crop of the original size from the image zero-padded "
        "by this many pixels on each side (0 = off)",
    )
    rotation_degrees: NonNegativeFloat = Field(0.0, le=180)
    zoom: NonNegativeFloat = Field(0.0, lt=1, description="max relative scale change: 0.1 zooms in [0.9, 1.1]")
    brightness: NonNegativeFloat = Field(0.0, le=1, description="max additive brightness shift on [0, 1] pixels")
    noise_std: NonNegativeFloat = Field(0.0, description="std of additive Gaussian noise")


# -------------------------------------------------------------------------------------------- experiments


class OptimizerConfig(Strict):
    """Optimizer (notes 004, "Optimizers"); ``gd`` is full-batch gradient descent."""

    name: OptimizerName = "adam"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = Field(0.0, description="decoupled (adamw) or coupled L2 decay of the optimizer")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd_momentum and nesterov only")
    betas: tuple[float, float] = Field((0.9, 0.999), description="adam and adamw only")
    eps: PositiveFloat = 1e-8

    @model_validator(mode="after")
    def _betas_in_range(self) -> OptimizerConfig:
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must each lie in [0, 1), got {list(self.betas)}")
        return self


class RegularizationConfig(Strict):
    """Penalty added to the data loss (notes 001, "Regularization": lasso, ridge and elastic net).

    ``l1``: strength * sum|w|; ``l2``: strength * sum w^2; ``elastic_net``:
    strength * (l1_ratio * sum|w| + (1 - l1_ratio) / 2 * sum w^2). Biases and norm parameters are not penalised.
    """

    type: RegularizationName = "none"
    strength: NonNegativeFloat = 0.0
    l1_ratio: float = Field(0.5, ge=0, le=1, description="elastic net mixing (alpha in the notes)")


class TrainerConfig(Strict):
    """Lightning ``Trainer`` settings. ``accelerator``/``devices``/``strategy`` make the same run scale to GPUs and DDP."""

    max_epochs: PositiveInt = 10
    accelerator: str = "auto"
    devices: PositiveInt | Literal["auto"] | list[int] = "auto"
    strategy: str = "auto"
    num_nodes: PositiveInt = 1
    precision: str = Field(
        "32-true",
        description="a Lightning precision name (32-true, 16-mixed, bf16-mixed, ...); "
        "Lightning rejects an unknown one when the fit starts",
    )
    limit_train_batches: PositiveFloat | PositiveInt = 1.0
    limit_val_batches: PositiveFloat | PositiveInt = 1.0
    check_val_every_n_epoch: PositiveInt = 1
    gradient_clip_val: PositiveFloat | None = None
    deterministic: bool = True
    log_every_n_steps: PositiveInt = 50
    progress_bar_refresh_rate: PositiveInt = Field(20, description="batches between progress-bar updates")
    num_threads: PositiveInt | None = Field(None, description="torch intra-op threads; None keeps torch's default")


class EarlyStoppingConfig(Strict):
    """Early stopping (notes 001, "Early Stopping Callback": monitor, min_delta, patience)."""

    enabled: bool = True
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    min_delta: NonNegativeFloat = 0.0
    patience: PositiveInt = 3


class CheckpointConfig(Strict):
    """Model checkpointing (notes 001, "Early Stopping and model checkpoint"): the best and the last."""

    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    save_last: bool = True


class BiasVarianceConfig(Strict):
    """Reference for the bias/variance verdict (notes 000, "Overfitting & Underfitting").

    ``reference_error`` is the error one can hope for (human level or Bayes error estimate): classification error
    in [0, 1], or for regression an RMSE in target units. A gap above ``tolerance`` between reference and train
    error is high bias; a gap above ``tolerance`` between train and validation error is high variance.
    """

    reference_error: NonNegativeFloat = 0.0
    tolerance: PositiveFloat = 0.02


class GradientDiagnosticsConfig(Strict):
    """Gradient-flow and activation diagnostics of every training run (:mod:`pipelines.training.gradient_flow`).

    Defaults measured on MNIST with a 10-layer MLP (tests/test_diagnostics.py): sigmoid + Xavier gives a median
    first/last gradient-norm ratio of about 7e-6, ReLU + He about 2; a learning rate of 10 or weights scaled by 3
    push the total gradient norm to inf or 1e5, against about 8 for the healthy net.
    """

    enabled: bool = True
    every_n_steps: PositiveInt = Field(25, description="sampling period in optimizer steps (cost: one sample each)")
    vanishing_ratio: PositiveFloat = Field(
        1e-3, description="median first/last gradient-norm ratio below this: vanishing"
    )
    exploding_norm: PositiveFloat = Field(
        1e3, description="total gradient L2 norm above this (or non-finite): exploding"
    )
    exploding_ratio: PositiveFloat = Field(1e3, description="median first/last ratio above this: exploding")
    saturation_threshold: PositiveFloat = Field(3.0, description="|x| beyond which a sigmoid/tanh input is saturated")


class StudyBudget(Strict):
    """What one extra fit of a diagnostic study may cost: overrides of the experiment's trainer settings."""

    max_epochs: PositiveInt | None = Field(None, description="epochs per fit (default: the experiment's)")
    limit_train_batches: PositiveFloat | PositiveInt | None = None


class LearningCurveConfig(StudyBudget):
    """Learning curve over training-set size (notes 000 "Overfitting & Underfitting": more data is the first remedy
    for variance). One fit per fraction of the train split (a seeded, stratified subset for classification)."""

    enabled: bool = False
    fractions: list[float] = Field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])

    @model_validator(mode="after")
    def _fractions(self) -> LearningCurveConfig:
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"fractions must be a non-empty list of numbers in (0, 1], got {self.fractions}")
        if len(set(self.fractions)) != len(self.fractions):
            raise ValueError(f"fractions has duplicates: {self.fractions}")
        return self


class SeedsConfig(StudyBudget):
    """Variance across seeds: the same experiment trained with ``count`` seeds gives the spread of test error."""

    enabled: bool = False
    count: int = Field(3, ge=2, le=100)


class BootstrapConfig(StudyBudget):
    """Bias-variance decomposition of a regression model's squared error by bootstrap (in the spirit of
    ``mlxtend.evaluate.bias_variance_decomp``): ``rounds`` fits on bootstrap resamples of the train split."""

    enabled: bool = False
    rounds: int = Field(5, ge=2, le=200)


class DiagnosticsConfig(Strict):
    """Diagnostics: gradient flow (on by default, cheap) and the opt-in studies run by the ``diagnose`` stage."""

    gradients: GradientDiagnosticsConfig = Field(default_factory=GradientDiagnosticsConfig)
    learning_curve: LearningCurveConfig = Field(default_factory=LearningCurveConfig)
    seeds: SeedsConfig = Field(default_factory=SeedsConfig)
    bootstrap: BootstrapConfig = Field(default_factory=BootstrapConfig)

    @property
    def studies(self) -> list[str]:
        """Names of the enabled studies, in run order."""
        return [n for n in ("learning_curve", "seeds", "bootstrap") if getattr(self, n).enabled]


class PretrainedConfig(Strict):
    """Start the network's backbone from saved weights (notes 001, "Transfer learning": a small dataset fits the
    last few layers of a model trained on a large one).

    ``path`` is a weights file relative to the repository root, loaded with ``torch.load(weights_only=True)`` (no
    code runs on load): a plain ``state_dict`` (``torch.save(network.state_dict(), ...)``, e.g. the
    ``checkpoints/<experiment>/network.pt`` every train stage writes, or converted ImageNet weights) or a Lightning
    checkpoint. The backbone is the network's ``features``; its head (``classifier``) starts fresh. Only experiments
    under ``transfer:`` take it, so that the file is a DVC dependency of their stage.
    """

    path: str = Field(description="weights file, relative to the repository root")
    prefix: str | None = Field(
        None,
        description="key prefix of the backbone in the file; None: detect "
        "'network.features.' (Lightning checkpoint) or 'features.'",
    )
    freeze_backbone: bool = Field(True, description="train the head only (the backbone's weights stay fixed)")
    unfreeze_at_epoch: NonNegativeInt | None = Field(
        None, description="with freeze_backbone: the epoch from which the backbone trains too (None: never)"
    )
    backbone_lr_ratio: PositiveFloat = Field(
        0.1, le=1, description="the backbone's learning rate once unfrozen, relative to optimizer.lr"
    )


class ExperimentConfig(Strict):
    """One experiment: an architecture, a dataset and its hyperparameters. Fully resolved for the active profile."""

    architecture: str
    dataset: str
    task: str = Field(
        "",
        description="what the experiment learns (pipelines/tasks/<task>.py); empty: the "
        "dataset's own task. E.g. reconstruction of MNIST instead of its classes",
    )
    description: str = ""
    model: dict[str, Any] = Field(
        default_factory=dict, description="architecture-specific params (see models.registry)"
    )
    activation: ActivationName = "relu"
    initializer: InitializerName = "xavier_uniform"
    dropout: float = Field(0.0, ge=0, lt=1)
    batch_norm: bool = False
    loss: LossName = "ce"
    huber_delta: PositiveFloat = Field(1.0, description="delta of huber and pseudo_huber losses")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    regularization: RegularizationConfig = Field(default_factory=RegularizationConfig)
    batch_size: PositiveInt = 64
    seed: int | None = Field(None, description="defaults to the top-level seed")
    use_tuned: bool = Field(False, description="merge the best params of params/tuned/<experiment>.yaml")
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    bias_variance: BiasVarianceConfig = Field(default_factory=BiasVarianceConfig)
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    pretrained: PretrainedConfig | None = Field(None, description="transfer learning: start from saved weights")

    @property
    def train_batch_size(self) -> int | None:
        """The training batch size: ``batch_size``, or ``None`` (the whole train split) for full-batch gradient
        descent (optimizer ``gd``)."""
        return None if self.optimizer.name == "gd" else self.batch_size

    @property
    def notes(self) -> str:
        return REGISTRY[self.architecture].notes

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if self.dataset not in CATALOG:
            raise ValueError(f"dataset {self.dataset!r} is not in the catalog; known: {', '.join(sorted(CATALOG))}")
        if self.architecture not in REGISTRY:
            raise ValueError(
                f"architecture {self.architecture!r} is not registered; known: {', '.join(sorted(REGISTRY))}"
            )
        arch, entry = REGISTRY[self.architecture], CATALOG[self.dataset]
        if not self.task:
            self.task = entry.task
        try:
            task = get_task(self.task)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        problem = task.dataset_problem(entry)
        if problem:
            raise ValueError(f"task: {problem}")
        if not arch.supports(self.task):
            raise ValueError(
                f"architecture {arch.name!r} does not support {self.task} tasks (dataset {entry.name!r}); "
                f"it supports {', '.join(sorted(arch.tasks))}"
            )
        if entry.modality not in arch.modalities:
            raise ValueError(
                f"architecture {arch.name!r} cannot read {entry.modality} data (dataset {entry.name!r}); "
                f"it reads {', '.join(sorted(arch.modalities))}"
            )
        if self.loss not in task.losses:
            raise ValueError(
                f"loss {self.loss!r} does not fit the {self.task} task of dataset {entry.name!r}; "
                f"use one of {', '.join(sorted(task.losses))}"
            )
        for key, monitor in (
            ("early_stopping.monitor", self.early_stopping.monitor),
            ("checkpoint.monitor", self.checkpoint.monitor),
        ):
            if monitor not in task.monitors():
                raise ValueError(
                    f"{key} {monitor!r} is not logged for a {self.task} task; use one of {sorted(task.monitors())}"
                )
        if self.diagnostics.bootstrap.enabled and not task.squared_error:
            raise ValueError(
                f"diagnostics.bootstrap: the bias-variance bootstrap decomposes the squared error of "
                f"one value per sample and needs a regression task; the {self.task} task of dataset "
                f"{entry.name!r} has none"
            )
        if self.pretrained and self.pretrained.unfreeze_at_epoch is not None and not self.pretrained.freeze_backbone:
            raise ValueError(
                "pretrained.unfreeze_at_epoch needs pretrained.freeze_backbone: true (nothing to unfreeze)"
            )
        if self.regularization.type != "none" and self.regularization.strength == 0:
            raise ValueError(f"regularization.type is {self.regularization.type!r} but regularization.strength is 0")
        try:
            arch.params.model_validate(self.model)
        except ValidationError as exc:
            raise ValueError(_format_errors(exc, prefix="model")) from None
        return self


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


# ----------------------------------------------------------------------------------------------- top level


class TrackingConfig(Strict):
    """MLflow tracking. ``MLFLOW_TRACKING_URI`` in the environment overrides ``tracking_uri`` (team servers)."""

    experiment_name: str = "deepnotes"
    tracking_uri: str | None = Field(None, description="default: sqlite:///<repo>/mlflow/mlflow.db")
    artifact_location: str | None = Field(None, description="default: <repo>/mlflow/artifacts")
    log_model: bool = True
    system_metrics: bool = Field(
        True, description="MLflow system metrics (CPU, memory, disk, network, GPU) of training"
    )
    system_metrics_interval: PositiveFloat = Field(2.0, description="seconds between system-metric samples")


class ProfileConfig(Strict):
    experiment: dict[str, Any] = Field(default_factory=dict, description="merged into every experiment")
    datasets: dict[str, dict[str, Any]] = Field(default_factory=dict, description="merged into the named datasets")


class Params(Strict):
    """The whole ``params.yaml``, resolved for the active profile."""

    seed: int = 42
    profile: str = "default"
    profiles: dict[str, ProfileConfig] = Field(default_factory=lambda: {"default": ProfileConfig()})
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    datasets: dict[str, DatasetConfig] = Field(default_factory=dict)
    augment: dict[str, AugmentConfig] = Field(default_factory=dict)
    experiments: dict[str, ExperimentConfig] = Field(default_factory=dict)
    #: Experiments that start from saved weights (``pretrained:``). DVC's foreach has no optional keys, so they have
    #: their own stage group (``finetune@<name>``), which depends on the weights file.
    transfer: dict[str, ExperimentConfig] = Field(default_factory=dict)
    tuning: TuningConfig = Field(default_factory=TuningConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> Params:
        for name in self.datasets:
            if name not in CATALOG:
                raise ValueError(f"datasets.{name}: not in the catalog; known: {', '.join(sorted(CATALOG))}")
        for name, aug in self.augment.items():
            if name not in self.datasets:
                raise ValueError(f"augment.{name}: no such entry under datasets")
            modality = CATALOG[name].modality
            if aug.hflip and not CATALOG[name].flip_safe:
                raise ValueError(f"augment.{name}.hflip: a flip changes the label of {name} samples (not label-safe)")
            if modality != "image" and (
                aug.hflip or aug.crop_padding or aug.rotation_degrees or aug.zoom or aug.brightness
            ):
                raise ValueError(f"augment.{name}: {modality} data only takes noise_std, not image transforms")
            if modality in ("text", "table") and aug.enabled:
                raise ValueError(f"augment.{name}: offline augmentation of {modality} data is not supported")
        for section, experiments in (("experiments", self.experiments), ("transfer", self.transfer)):
            for name, exp in experiments.items():
                if exp.dataset not in self.datasets:
                    raise ValueError(f"{section}.{name}.dataset: {exp.dataset!r} has no entry under datasets")
                if self.augmentation(exp.dataset).enabled and not get_task(exp.task).augmentable:
                    raise ValueError(
                        f"augment.{exp.dataset}: offline augmentation would change the targets of the "
                        f"{exp.task} task of {section}.{name}; it is not supported"
                    )
                if (exp.pretrained is None) != (section == "experiments"):
                    raise ValueError(
                        f"experiments.{name}.pretrained: an experiment that starts from saved weights belongs under "
                        f"transfer:, whose stages depend on the weights file"
                        if section == "experiments"
                        else f"transfer.{name}.pretrained: missing; transfer experiments start from saved weights"
                    )
        clash = set(self.experiments) & set(self.transfer)
        if clash:
            raise ValueError(f"transfer: {sorted(clash)} also named under experiments; names must be unique")
        for name in self.tuning.experiments:
            if name not in self.all_experiments:
                raise ValueError(f"tuning.experiments.{name}: no such experiment under experiments or transfer")
        return self

    @property
    def all_experiments(self) -> dict[str, ExperimentConfig]:
        """``experiments`` and ``transfer`` together, in file order."""
        return self.experiments | self.transfer

    def experiment(self, name: str) -> ExperimentConfig:
        """Return experiment ``name`` (from ``experiments`` or ``transfer``). Raises :class:`ConfigError` listing the
        known experiments."""
        try:
            return self.all_experiments[name]
        except KeyError:
            raise ConfigError(
                f"params.yaml: experiments.{name}: no such experiment; known: {', '.join(sorted(self.all_experiments))}"
            ) from None

    def dataset(self, name: str) -> DatasetConfig:
        """Return dataset config ``name``. Raises :class:`ConfigError` listing the known datasets."""
        try:
            return self.datasets[name]
        except KeyError:
            raise ConfigError(
                f"params.yaml: datasets.{name}: no such dataset; known: {', '.join(sorted(self.datasets))}"
            ) from None

    def augmentation(self, name: str) -> AugmentConfig:
        return self.augment.get(name, AugmentConfig())

    def experiment_seed(self, name: str) -> int:
        exp = self.experiment(name)
        return self.seed if exp.seed is None else exp.seed

    def tune_settings(self, name: str) -> TuneSettings:
        """The search settings of experiment ``name`` with every unset field filled from ``tuning``.

        Raises:
            ConfigError: ``metric`` is not a validation metric the experiment logs.
        """
        exp = self.experiment(name)
        own = self.tuning.experiments.get(name, TuneExperimentConfig())
        metric = own.metric or exp.checkpoint.monitor
        mode = exp.checkpoint.mode if own.metric is None else get_task(exp.task).mode(metric)
        default_direction: Literal["minimize", "maximize"] = "maximize" if mode == "max" else "minimize"
        allowed = get_task(exp.task).monitors()
        if metric not in allowed:
            raise ConfigError(
                f"params.yaml: tuning.experiments.{name}.metric: {metric!r} is not logged for a "
                f"{exp.task} task; use one of {sorted(allowed)}"
            )
        return TuneSettings(
            metric=metric,
            direction=own.direction or default_direction,
            n_trials=own.n_trials or self.tuning.n_trials,
            timeout=own.timeout or self.tuning.timeout,
            sampler=own.sampler or self.tuning.sampler,
            pruner=own.pruner or self.tuning.pruner,
            trial=own.trial,
            space=own.space,
        )

    def search_space(self, name: str) -> SearchSpace:
        """The validated search space of experiment ``name`` (default, then architecture, then experiment).

        Every bound and choice is applied to the experiment and validated with the experiment schema, so a bad
        range, an unknown choice or a path the experiment does not have fails here, before any trial starts.

        Raises:
            ConfigError: naming ``tuning...space.<path>``, the value and what was expected; or an empty space.
        """
        exp = self.experiment(name)
        raw: dict[str, Any] = dict(self.tuning.space)
        raw.update(self.tuning.architectures.get(exp.architecture, {}))
        raw.update(self.tuning.experiments.get(name, TuneExperimentConfig()).space)
        where = f"params.yaml: tuning (space of experiment {name!r}, architecture {exp.architecture!r})"
        try:
            space = SearchSpace({path: spec for path, spec in raw.items() if spec is not None})
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not len(space):
            raise ConfigError(
                f"{where}: the search space is empty; declare tuning.space or tuning.experiments.{name}.space"
            )
        base = self.trial_experiment(name)
        from pipelines.tuning.search_space import apply

        for path, parent, value in space.conditions:  # every `when` value must be a value the parent can take
            try:
                ExperimentConfig.model_validate(apply(base, {parent: value}))
            except ValidationError as exc:  # only errors about the parent field itself (not cross-field rules)
                own = [e for e in exc.errors() if ".".join(map(str, e["loc"])) == parent]
                if own:
                    raise ConfigError(
                        f"{where}: {path}.when.{parent}: {value!r} is not a value of {parent}: {own[0]['msg']}"
                    ) from None
        for path in space.params:
            unknown = _unknown_path(base, path)
            if unknown:
                raise ConfigError(f"{where}: {path}: the experiment has no setting {unknown!r}")
        for path, value, values in space.assignments_to_check():
            try:
                ExperimentConfig.model_validate(apply(base, values))
            except ValidationError as exc:
                # name the sampled path the error is about (it may be another path than the one being varied)
                locs = [".".join(str(p) for p in err["loc"] if p not in _SPACE_TAGS) for err in exc.errors()]
                texts = [f"{loc}: {err['msg']}" for loc, err in zip(locs, exc.errors())]
                culprit = next(
                    (
                        p
                        for p in values
                        for loc, text in zip(locs, texts)
                        if (loc and (loc.startswith(p) or p.startswith(loc))) or f"{p}:" in text
                    ),
                    path,
                )
                raise ConfigError(
                    f"{where}: {culprit}: value {values[culprit]!r} is not valid for this experiment"
                    f"{'' if culprit == path else f' (with {path}={value!r})'}: "
                    f"{_format_errors(exc)}"
                ) from None
            except ValueError as exc:
                raise ConfigError(f"{where}: {path}: {exc}") from None
        return space

    def trial_experiment(self, name: str) -> dict[str, Any]:
        """The experiment as a plain mapping with ``tuning.experiments.<name>.trial`` merged in (what a trial
        trains before its sampled params are applied).

        Raises:
            ConfigError: the merged ``trial`` overrides do not validate.
        """
        exp = self.experiment(name).model_dump(mode="json")
        overrides = self.tuning.experiments.get(name, TuneExperimentConfig()).trial
        merged = deep_merge(exp, overrides)
        try:
            ExperimentConfig.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(
                _format_errors(exc, prefix=f"tuning.experiments.{name}.trial", source="params.yaml: ")
            ) from None
        return merged


def _unknown_path(experiment: dict[str, Any], path: str) -> str | None:
    """The first component of dotted ``path`` that the (fully dumped) experiment mapping lacks, else ``None``.
    Free-form mappings (``model``, whose keys each architecture validates) accept any key below them."""
    node: Any = experiment
    parts = path.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, list) and part.isdigit():
            node = node[int(part)] if int(part) < len(node) else None
            continue
        if not isinstance(node, dict) or part not in node:
            if i >= 1 and parts[0] == "model":
                return None
            return ".".join(parts[: i + 1])
        node = node[part]
    return None


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
    profiles = raw.get("profiles") or {"default": {}}
    if not isinstance(profiles, dict) or profile not in profiles:
        known = ", ".join(sorted(profiles)) if isinstance(profiles, dict) else "none"
        raise ConfigError(f"params.yaml: profile: unknown profile {profile!r}; defined profiles: {known}")
    raw["profile"] = profile
    active = profiles.get(profile) or {}
    if not isinstance(active, dict):
        raise ConfigError(f"params.yaml: profiles.{profile}: expected a mapping, got {type(active).__name__}")
    for ds_name, ds_override in (active.get("datasets") or {}).items():
        if ds_name in (raw.get("datasets") or {}):
            raw["datasets"][ds_name] = deep_merge(raw["datasets"][ds_name] or {}, ds_override or {})
    for section in ("experiments", "transfer"):
        experiments = raw.get(section) or {}
        if not isinstance(experiments, dict):
            raise ConfigError(f"params.yaml: {section}: expected a mapping of experiment name to settings")
        for name, exp in experiments.items():
            if not isinstance(exp, dict):
                raise ConfigError(f"params.yaml: {section}.{name}: expected a mapping, got {type(exp).__name__}")
            own_profiles = exp.pop("profiles", None) or {}
            unknown = set(own_profiles) - set(profiles)
            if unknown:
                raise ConfigError(
                    f"params.yaml: {section}.{name}.profiles: unknown profile(s) {sorted(unknown)}; "
                    f"defined profiles: {', '.join(sorted(profiles))}"
                )
            merged = deep_merge(exp, active.get("experiment") or {})
            merged = deep_merge(merged, own_profiles.get(profile) or {})
            if merged.get("use_tuned") is True:
                merged = deep_merge(merged, load_tuned(name, base_dir or REPO_ROOT)["params"])
            experiments[name] = merged
    return raw


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


_SPACE_TAGS = frozenset({"float", "int", "categorical"})


def _format_errors(exc: ValidationError, prefix: str = "", source: str = "") -> str:
    lines = []
    for err in exc.errors():
        # search-space entries are a union tagged by `type`: pydantic puts the tag in the location; drop it
        path = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "" and p not in _SPACE_TAGS)
        msg = err["msg"].removeprefix("Value error, ")
        got = "" if err["type"] in ("value_error", "missing") else f" (got {err.get('input')!r})"
        lines.append(f"{source}{path}: {msg}{got}" if path else f"{source}{msg}{got}")
    return "\n".join(lines)


def validate(
    raw: dict[str, Any], profile: str | None = None, source: str = "params.yaml", base_dir: Path | None = None
) -> Params:
    """Resolve and validate a raw mapping. Raises :class:`ConfigError` with every problem's key path.

    ``base_dir`` is the folder of the params file (where ``params/tuned/`` lives); default the repo root.
    """
    resolved = resolve(raw, profile, base_dir)
    try:
        return Params.model_validate(resolved)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source=f"{source}: ")) from None


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
