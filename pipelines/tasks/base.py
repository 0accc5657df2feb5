"""The task interface (:class:`Task`) and what ``evaluate`` hands a task (:class:`Evaluation`).

Torch-free at import: class attributes describe a task to the config validator; the methods that compute import
torch, torchmetrics and matplotlib when called.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    import torchmetrics
    from matplotlib.figure import Figure
    from pydantic import BaseModel
    from torch import nn

    from pipelines.data.catalog import DatasetEntry
    from pipelines.data.prepared import PreparedData


class TaskModule(Protocol):
    """What the pipeline asks of a task's LightningModule class (:attr:`Task.module`): built from an experiment,
    reloaded from its checkpoint, holding the task and the network it trains."""

    task: Task
    network: nn.Module

    @classmethod
    def from_experiment(cls, exp: Any, meta: dict[str, Any]) -> TaskModule: ...

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: Any,
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> TaskModule: ...


@dataclass
class Outputs:
    """One split's network outputs with the inputs and labels they came from (CPU tensors, test order)."""

    outputs: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor


@dataclass
class Evaluation:
    """What ``evaluate`` gives a task's :meth:`Task.evaluate`, and what the task adds to it.

    Attributes:
        name: the experiment.
        data: the prepared (un-augmented) dataset.
        splits: ``{split: Outputs}`` for ``train``, ``val`` and ``test``.
        figures: ``{file name: Figure}``: logged to MLflow under ``plots/`` and written as PNG to
            ``plots/evaluate/<experiment>/`` for ``dvc plots`` (the task's own evaluation plots).
        tables: ``{file name: CSV text}``: logged to MLflow under ``evaluation/`` (e.g. ROC curve points).
        plot_data: ``{file name: CSV text}``: the points of a figure, written beside the figures in
            ``plots/evaluate/<experiment>/`` for ``dvc plots`` (e.g. a forecast against the actual series).
        test_metrics: extra test metrics (e.g. ``average_precision``), merged into the test split's metrics.
        details: extra JSON-able results logged to MLflow's ``evaluation/metrics.json`` (e.g. the confusion matrix).
        network: the trained network (eval mode, CPU), for a task that runs it again (a language model's samples);
            ``None`` where the caller has none.
        report: JSON-able results written to ``metrics/evaluate/<experiment>.json`` under ``report``, which the
            report stage hands back to :meth:`Task.report_section` (a language model's samples).
    """

    name: str
    data: PreparedData
    splits: dict[str, Outputs]
    figures: dict[str, Figure] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    plot_data: dict[str, str] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    network: nn.Module | None = None
    report: dict[str, Any] = field(default_factory=dict)


class Task:
    """Base of every task. Subclasses set the class attributes and implement the abstract methods.

    Class attributes (read by config validation, the registry of models, the report and tuning; no torch):
        name: the registry name, equal to the module name.
        losses: the loss names that fit the task (notes 001, "Loss Functions").
        metrics: the metric names logged per split as ``<split>_<metric>`` (what callbacks may monitor).
        headline: the cheap metric also tracked on the train split each epoch (``plots/metric``).
        primary: the metric that ranks models (registry champion, leaderboard); ``higher_is_better`` its direction.
        lower_is_better: the metrics (of ``metrics``) that are errors: tuning minimises them by default.
        summary: the test metrics shown in ``dvc metrics show`` and the report, primary first.
        error_unit: what "error" means in the bias/variance verdict (e.g. ``classification error``).
        augmentable: whether offline augmentation keeps the targets valid.
        squared_error: whether the bootstrap bias-variance decomposition (of squared error) applies.
        module: ``"module:Class"`` of the LightningModule that trains the task (default: the shared supervised one).
        datamodule: ``"module:Class"`` of the LightningDataModule that batches its data, built as
            ``Class(data, batch_size=..., seed=...)`` (default: shuffled mini-batches of samples).
        meta_keys: the ``meta.json`` keys the task reads besides the shared ones
            (:data:`pipelines.training.module.TASK_META_KEYS`), saved in the checkpoint with them.
        options: the pydantic model of the task's own settings, ``task_options`` in an experiment (a
            translation's beam size); ``None``: the task takes none. Read them with :meth:`parse_options`.

    An instance is bound to one prepared dataset's ``meta`` (``meta.json``: classes, input shape, normalisation)
    and the experiment's ``task_options`` (:attr:`settings`).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    losses: ClassVar[tuple[str, ...]]
    metrics: ClassVar[tuple[str, ...]]
    headline: ClassVar[str]
    primary: ClassVar[str]
    higher_is_better: ClassVar[bool]
    lower_is_better: ClassVar[frozenset[str]] = frozenset()
    summary: ClassVar[tuple[str, ...]]
    error_unit: ClassVar[str]
    augmentable: ClassVar[bool] = True
    squared_error: ClassVar[bool] = False
    #: Its targets are class indices (a user dataset's target column is then read as classes, not values).
    reads_classes: ClassVar[bool] = False
    #: The number of classes its labels must have, when fixed (binary: 2); ``None``: any.
    exact_classes: ClassVar[int | None] = None
    module: ClassVar[str] = "pipelines.training.module:SupervisedModule"
    datamodule: ClassVar[str] = "pipelines.data.datamodule:ArrayDataModule"
    meta_keys: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[type[BaseModel] | None] = None

    # ------------------------------------------------------------------------------------- config (no torch)

    @classmethod
    def parse_options(cls, raw: dict[str, Any]) -> BaseModel | None:
        """An experiment's ``task_options`` as the task's :attr:`options` model (``None`` when it has none).

        Raises:
            pydantic.ValidationError: an option is unknown or out of range (the config loader has checked this).
        """
        return cls.options.model_validate(raw) if cls.options is not None else None

    @classmethod
    def dataset_problem(cls, entry: DatasetEntry) -> str | None:
        """Why the task cannot learn from dataset ``entry``, or ``None`` when it can. By default a supervised task
        needs the dataset's labels to be of its kind (the catalog's ``task``)."""
        if entry.task != cls.name:
            return f"dataset {entry.name!r} is labelled for a {entry.task} task, not {cls.name}"
        return None

    @classmethod
    def monitors(cls) -> frozenset[str]:
        """What early stopping, checkpointing and tuning may monitor: ``val_loss`` and ``val_<metric>``."""
        return frozenset({"val_loss"} | {f"val_{m}" for m in cls.metrics})

    @classmethod
    def mode(cls, monitor: str) -> str:
        """``"min"`` or ``"max"``: the direction in which ``monitor`` (``<split>_<metric>``) improves."""
        metric = monitor.split("_", 1)[1] if "_" in monitor else monitor
        return "min" if metric == "loss" or metric in cls.lower_is_better else "max"

    @classmethod
    def primary_metric(cls) -> tuple[str, bool]:
        """``("test_<primary>", higher_is_better)``: what ranks the task's models."""
        return f"test_{cls.primary}", cls.higher_is_better

    @classmethod
    def module_class(cls) -> type[TaskModule]:
        """The LightningModule class that trains (and reloads) this task's experiments."""
        module_name, _, attr = cls.module.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    @classmethod
    def datamodule_class(cls) -> type:
        """The LightningDataModule class that feeds this task's experiments (:attr:`datamodule`)."""
        module_name, _, attr = cls.datamodule.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    @classmethod
    def report_section(cls, experiment: str, evaluation: dict[str, Any]) -> list[str]:
        """Markdown lines the report adds for ``experiment`` from its ``metrics/evaluate/<experiment>.json``
        (``evaluation``; its ``report`` entry is :attr:`Evaluation.report`); default none."""
        return []

    # ------------------------------------------------------------------------------------------ run time

    def __init__(self, meta: dict[str, Any], options: dict[str, Any] | None = None) -> None:
        self.meta = meta
        #: The experiment's ``task_options`` as the :attr:`options` model (``None`` for a task without options).
        self.settings = self.parse_options(options or {})

    @property
    def num_classes(self) -> int | None:
        """Classes of a classification task, else ``None``."""
        return None

    @property
    def num_outputs(self) -> int:
        """``NetworkSpec.num_outputs``: the head's width (1: one logit or value)."""
        return 1

    def wrap_network(self, network: nn.Module) -> nn.Module:
        """The network the task trains, evaluates and serves, built around the architecture's ``network`` (default:
        ``network`` itself). Applied wherever a network is built (the training module, the served bundle), so its
        ``state_dict`` is the wrapped one's. A forecast predicts relative to its window's last value
        (:mod:`pipelines.tasks.forecasting`)."""
        return network

    def loss(self, name: str, huber_delta: float = 1.0) -> nn.Module:
        """The loss module ``name`` (one of :attr:`losses`), called as ``loss(outputs, loss_targets(x, y))``."""
        from models.factories import make_loss

        return make_loss(name, huber_delta=huber_delta, num_classes=self.num_classes)

    def loss_targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the loss compares the outputs with (default: the labels as floats)."""
        return y.float()

    def metric_targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the metrics compare the predictions with (default: the labels)."""
        return y

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Network outputs -> what the metrics take (default: the outputs as floats)."""
        return outputs.float()

    def build_metrics(self, full: bool = True) -> torchmetrics.MetricCollection:
        """The metric set, keyed by short name (:attr:`metrics`; only :attr:`headline` when ``full`` is False)."""
        raise NotImplementedError

    def headline_sum(self, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch's headline metric summed over samples (divided by the sample count it is the headline):
        the running train statistic, far cheaper than a torchmetrics update per step."""
        raise NotImplementedError

    def compute_outputs(self, network: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One split's outputs as :meth:`split_metrics` and :meth:`evaluate` read them, for inputs ``x`` and labels
        ``y`` (default: the network's outputs, :func:`pipelines.training.inference.predict`). A task whose raw
        outputs are too large to keep for a whole split returns a summary of them here."""
        from pipelines.training.inference import predict

        return predict(network, x)

    def split_metrics(self, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """The full metric set of one split: ``{metric: value}``."""
        metrics = self.build_metrics()
        return {k: float(v) for k, v in metrics(self.predictions(outputs), self.metric_targets(x, y)).items()}

    def error(self, metrics: dict[str, float]) -> float:
        """The error of one split's metrics for the bias/variance verdict (unit: :attr:`error_unit`).

        (Not stored under the key ``error``: ``dvc metrics`` reads that key as a failure to load the file.)
        """
        raise NotImplementedError

    def class_labels(self, y: np.ndarray) -> np.ndarray | None:
        """The class of each sample, to stratify subsets by (learning curves), or ``None`` (no classes)."""
        return None

    def evaluate(self, evaluation: Evaluation) -> None:
        """Add the task's own figures, tables and metrics to ``evaluation`` (always a ``predictions.png``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ serving

    def serve(self, outputs: torch.Tensor) -> dict[str, np.ndarray]:
        """Network outputs ``(N, ...)`` -> what a served model answers, one column per name, each ``(N,)`` (or
        ``(N, k)`` for an array per sample): a label with its class probabilities, a value, a box. The columns of
        the MLflow pyfunc's predictions (:mod:`pipelines.serving`)."""
        raise NotImplementedError
