"""The supervised LightningModule: one network, one loss, a task's metrics (every task with a single optimizer
step per batch).

An architecture only defines its network (:mod:`models.registry`) and a task its targets, loss choices and metrics
(:mod:`pipelines.tasks`); this module owns the rest, the same for all of them: the training/validation/test step,
the regularisation penalty added to the data loss and logged apart from it (notes 001, "Regularization"), weight
initialisation (notes 001, "Weight Initialization") and the optimizer (notes 004, "Optimizers").

Logged names (``<split>`` is ``train``, ``val`` or ``test``): ``<split>_loss`` (data loss + penalty on train, data
loss elsewhere), ``train_data_loss``, ``train_penalty``, and ``<split>_<metric>`` with the task's
:attr:`~pipelines.tasks.base.Task.metrics`. On ``train`` only the task's cheap headline metric
(``train_acc``, ``train_mse``): it and the losses are summed in a running tensor and logged once per epoch, because
a per-step ``self.log`` or torchmetrics update costs as much as a small network's backward pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import lightning.pytorch as L
import torch
import torchmetrics
from torch import nn

from models.factories import initialize, make_optimizer, penalised_parameters, regularization_penalty
from models.registry import NetworkSpec, build_network

#: The keys of a prepared dataset's ``meta.json`` a task reads; kept in checkpoints (``task_meta``).
TASK_META_KEYS = (
    "dataset",
    "modality",
    "input_shape",
    "num_classes",
    "classes",
    "normalization",
    "vocab_size",
    "vocab",
    "horizon",
    "forecast",
)


def network_spec(exp, meta: dict[str, Any]) -> NetworkSpec:
    """The :class:`NetworkSpec` of experiment ``exp`` (a ``pipelines.config.ExperimentConfig``) on a prepared
    dataset described by ``meta``: the input shape, the task's head width and the shared knobs."""
    from pipelines.tasks import get_task

    return NetworkSpec(
        input_shape=tuple(meta["input_shape"]),
        num_outputs=get_task(exp.task)(meta).num_outputs,
        activation=exp.activation,
        dropout=exp.dropout,
        batch_norm=exp.batch_norm,
        vocab_size=meta.get("vocab_size"),
    )


class SupervisedModule(L.LightningModule):
    """One network trained by gradient descent on a task's loss; the shared module of every supervised task.

    Args:
        architecture: registry name, e.g. ``"lenet5"``.
        spec: :class:`NetworkSpec` fields as a dict (kept as a dict so checkpoints hold only plain data).
        model_params: the experiment's ``model:`` block.
        task: registry name of the task (:func:`pipelines.tasks.get_task`), e.g. ``"multiclass"``.
        task_meta: what the task reads of the prepared dataset's ``meta.json`` (classes, input shape,
            normalisation), saved in the checkpoint so the module reloads without the data.
        loss: a loss name of the task (:attr:`~pipelines.tasks.base.Task.losses`), ``huber_delta`` its delta.
        optimizer, regularization: ``OptimizerConfig`` / ``RegularizationConfig`` as dicts.
        initializer: weight initializer name, applied once at construction (seeded by the caller).
        task_options: the experiment's ``task_options`` (the task's :attr:`~pipelines.tasks.base.Task.settings`).

    Shapes: ``forward`` maps ``(N, *spec['input_shape'])`` to the network's outputs (``(N,)``, ``(N, C)``,
    ``(N, C + 4)`` or the input's shape, as the task needs). Batches are ``(x, y)``; the task turns them into the
    loss's and the metrics' targets.

    Only parameters that require gradients are optimised, so a frozen backbone
    (:class:`pipelines.training.callbacks.FreezeBackbone`) stays out of the optimizer until it is unfrozen.
    """

    def __init__(
        self,
        architecture: str,
        spec: dict[str, Any],
        model_params: dict[str, Any],
        task: str,
        task_meta: dict[str, Any],
        loss: str,
        optimizer: dict[str, Any],
        regularization: dict[str, Any],
        initializer: str,
        huber_delta: float = 1.0,
        task_options: dict[str, Any] | None = None,
    ) -> None:
        from pipelines.config import OptimizerConfig, RegularizationConfig
        from pipelines.tasks import get_task

        super().__init__()
        self.save_hyperparameters()
        spec = dict(spec, input_shape=tuple(spec["input_shape"]))
        self.task = get_task(task)(task_meta, task_options)
        self.network: nn.Module = self.task.wrap_network(
            initialize(build_network(architecture, NetworkSpec(**spec), model_params), initializer)
        )
        self.loss_fn = self.task.loss(loss, huber_delta=huber_delta)
        self._reg_cfg = RegularizationConfig.model_validate(regularization)
        self._penalised = penalised_parameters(self.network)  # collected once, not on every step
        self._opt_cfg = OptimizerConfig.model_validate(optimizer)
        # Training statistics are summed in one small tensor and logged once per epoch: a per-step self.log or
        # torchmetrics update costs 0.2-0.6 ms, as much as a LeNet step's backward pass (benchmarks/RESULTS.md).
        self.register_buffer("_train_sums", torch.zeros(5), persistent=False)
        self.val_metrics = self.task.build_metrics().clone(prefix="val_")
        self.test_metrics = self.task.build_metrics().clone(prefix="test_")

    @classmethod
    def from_experiment(cls, exp, meta: dict[str, Any]) -> SupervisedModule:
        """The module of experiment ``exp`` (a ``pipelines.config.ExperimentConfig``) on a prepared dataset's
        ``meta``; the network is initialised with the current (seeded) RNG."""
        from pipelines.tasks import get_task as task_class

        return cls(
            architecture=exp.architecture,
            spec=dataclasses.asdict(network_spec(exp, meta)),
            model_params=exp.model,
            task=exp.task,
            task_meta={k: meta[k] for k in TASK_META_KEYS + task_class(exp.task).meta_keys if k in meta},
            loss=exp.loss,
            optimizer=exp.optimizer.model_dump(mode="json"),
            regularization=exp.regularization.model_dump(mode="json"),
            initializer=exp.initializer,
            huber_delta=exp.huber_delta,
            task_options=exp.task_options,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def step_outputs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The outputs the loss and metrics of a train, validation or test batch read: ``self(x)``. A task whose
        network also reads the targets overrides it (a decoder's teacher forcing reads ``y``'s previous tokens)."""
        return self(x)

    def _eval_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], split: str, metrics: torchmetrics.MetricCollection
    ) -> torch.Tensor:
        x, y = batch
        outputs = self.step_outputs(x, y)
        data_loss = self.loss_fn(outputs, self.task.loss_targets(x, y))
        metrics.update(self.task.predictions(outputs.detach()), self.task.metric_targets(x, y))
        self.log_dict(metrics, on_step=False, on_epoch=True)
        self.log(f"{split}_loss", data_loss, on_step=False, on_epoch=True, prog_bar=split == "val")
        return data_loss

    def _is_last_train_batch(self, batch_idx: int) -> bool:
        trainer = self._trainer
        if trainer is None:  # used outside a Trainer: every step is an epoch
            return True
        total = trainer.num_training_batches
        return trainer.is_last_batch if total == float("inf") else batch_idx + 1 >= total

    def training_step(self, batch, batch_idx):
        x, y = batch
        outputs = self.step_outputs(x, y)
        data_loss = self.loss_fn(outputs, self.task.loss_targets(x, y))
        penalty = regularization_penalty(self._penalised, self._reg_cfg)
        loss = data_loss + penalty
        n = float(len(y))
        with torch.no_grad():
            self._train_sums += torch.stack(
                [
                    loss.detach() * n,
                    data_loss.detach() * n,
                    penalty.detach() * n,
                    self.task.headline_sum(outputs.detach(), x, y).float(),
                    torch.tensor(n, device=loss.device),
                ]
            )
        if self._is_last_train_batch(batch_idx):
            loss_sum, data_sum, penalty_sum, headline, count = self._train_sums / self._train_sums[4]
            self.log_dict(
                {
                    "train_loss": loss_sum,
                    "train_data_loss": data_sum,
                    "train_penalty": penalty_sum,
                    f"train_{self.task.headline}": headline,
                },
                on_step=False,
                on_epoch=True,
                sync_dist=True,
                prog_bar=False,
            )
            self._train_sums.zero_()
        return loss

    def validation_step(self, batch, batch_idx):
        return self._eval_step(batch, "val", self.val_metrics)

    def test_step(self, batch, batch_idx):
        return self._eval_step(batch, "test", self.test_metrics)

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x)

    def configure_optimizers(self):
        return make_optimizer([p for p in self.parameters() if p.requires_grad], self._opt_cfg)
