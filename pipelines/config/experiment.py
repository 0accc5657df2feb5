"""One experiment of ``params.yaml`` (``experiments:`` and ``transfer:``): architecture and ``model:`` block, loss,
optimizer, regularization, trainer, early stopping, checkpointing, the bias/variance reference, the gradient
diagnostics, the opt-in diagnostics and a pretrained backbone."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from models.registry import REGISTRY
from pipelines.config.base import (
    ActivationName,
    InitializerName,
    LossName,
    OptimizerName,
    RegularizationName,
    Strict,
    format_errors,
    validate_options,
)
from pipelines.data.catalog import CATALOG, DatasetEntry
from pipelines.tasks import get_task

#: The validation-context key of the datasets declared by a ``source:`` block (``{name: DatasetEntry}``); see
#: :func:`dataset_context`.
DATASETS_CONTEXT = "datasets"


def dataset_context(entries: dict[str, DatasetEntry]) -> dict[str, Any]:
    """The pydantic validation context that lets an experiment read a dataset declared in ``params.yaml``
    (see :meth:`Params.validation_context <pipelines.config.params.Params.validation_context>`)."""
    return {DATASETS_CONTEXT: entries}


def dataset_entry(name: str, context: dict[str, Any] | None) -> DatasetEntry:
    """The entry of dataset ``name``: a user dataset of the validation context, else the catalog's.

    Raises:
        ValueError: neither knows ``name`` (listing the known names).
    """
    declared: dict[str, DatasetEntry] = (context or {}).get(DATASETS_CONTEXT) or {}
    entry = declared.get(name) or CATALOG.get(name)
    if entry is None:
        known = ", ".join(sorted(set(CATALOG) | set(declared)))
        raise ValueError(
            f"dataset {name!r} is not in the catalog and has no datasets.{name}.source block; known: {known}"
        )
    return entry


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
    gradient_clip_algorithm: Literal["norm", "value"] = Field(
        "norm", description="with gradient_clip_val: rescale the total L2 norm (norm) or clamp each entry (value)"
    )
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
    notes: str = Field(
        "",
        description="the notes section of the experiment's technique, e.g. 'notes 001, Transfer learning' (the "
        "runs' notes tag); empty: its architecture's (models.registry)",
    )
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
    task_options: dict[str, Any] = Field(
        default_factory=dict,
        description="the task's own settings (a translation's beam size), checked against its options model "
        "(Task.options) and stored with every default filled in",
    )

    @property
    def train_batch_size(self) -> int | None:
        """The training batch size: ``batch_size``, or ``None`` (the whole train split) for full-batch gradient
        descent (optimizer ``gd``)."""
        return None if self.optimizer.name == "gd" else self.batch_size

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> ExperimentConfig:
        entry = dataset_entry(self.dataset, info.context)
        if self.architecture not in REGISTRY:
            raise ValueError(
                f"architecture {self.architecture!r} is not registered; known: {', '.join(sorted(REGISTRY))}"
            )
        arch = REGISTRY[self.architecture]
        if not self.task:
            self.task = entry.task
        if not self.notes:
            self.notes = arch.notes
        try:
            task = get_task(self.task)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        self.task_options = validate_options(task.options, self.task_options, "task_options")
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
            raise ValueError(format_errors(exc, prefix="model")) from None
        return self
