"""The one Lightning module every architecture trains with.

An architecture only defines its network (see :mod:`models.registry`); this module owns everything else, the same
for all of them: the training/validation/test step, the loss (notes 001, "Loss Functions"), the regularisation
penalty added to the data loss and logged apart from it (notes 001, "Regularization"), the torchmetrics metric set,
weight initialisation (notes 001, "Weight Initialization") and the optimizer (notes 004, "Optimizers").

Logged names (``<split>`` is ``train``, ``val`` or ``test``): ``<split>_loss`` (data loss + penalty on train, data
loss elsewhere), ``train_data_loss``, ``train_penalty``, and ``<split>_<metric>`` with the metrics of
:data:`pipelines.config.METRICS_BY_TASK` (``acc``, ``precision``, ``recall``, ``f1``, ``roc_auc`` for
classification; ``mse``, ``rmse``, ``mae``, ``r2`` for regression). On ``train`` only the cheap headline metric
(``acc`` or ``mse``): it and the losses are summed in a running tensor and logged once per epoch, because a
per-step ``self.log`` or torchmetrics update costs as much as a small network's backward pass.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import torch
import torchmetrics
from torch import nn

from models.factories import initialize, make_loss, make_optimizer, penalised_parameters, regularization_penalty
from models.registry import NetworkSpec, build_network


def build_metrics(task: str, num_classes: int | None, full: bool = True) -> torchmetrics.MetricCollection:
    """The metric set of a task, as a ``MetricCollection`` keyed by short names.

    Inputs to ``update``: classification takes probabilities (``(N,)`` for binary, ``(N, C)`` for multiclass) and
    int targets ``(N,)``; regression takes predictions and float targets ``(N,)``; localization takes the network's
    outputs ``(N, C + 4)`` (logits, then a box) and targets ``(N, 5)`` (class, box) and reports ``acc``,
    ``mean_iou`` and ``acc_iou50`` (right class and IoU >= 0.5; :mod:`models.boxes`).
    ``full=False`` keeps only the headline metric (``acc`` or ``mse``).

    Raises:
        ValueError: unknown task, or a multiclass or localization task without ``num_classes``.
    """
    from torchmetrics import classification as C
    from torchmetrics import regression as R

    if task == "binary":
        metrics = {"acc": C.BinaryAccuracy()}
        if full:
            metrics |= {"precision": C.BinaryPrecision(), "recall": C.BinaryRecall(),
                        "f1": C.BinaryF1Score(), "roc_auc": C.BinaryAUROC()}
    elif task == "multiclass":
        if not num_classes:
            raise ValueError("a multiclass task needs num_classes")
        metrics = {"acc": C.MulticlassAccuracy(num_classes, average="micro")}
        if full:
            metrics |= {"precision": C.MulticlassPrecision(num_classes, average="macro"),
                        "recall": C.MulticlassRecall(num_classes, average="macro"),
                        "f1": C.MulticlassF1Score(num_classes, average="macro"),
                        "roc_auc": C.MulticlassAUROC(num_classes, average="macro")}
    elif task == "localization":
        from models.boxes import AccuracyAtIoU, LocalizationAccuracy, MeanIoU

        if not num_classes:
            raise ValueError("a localization task needs num_classes")
        metrics = {"acc": LocalizationAccuracy(num_classes)}
        if full:
            metrics |= {"mean_iou": MeanIoU(num_classes), "acc_iou50": AccuracyAtIoU(num_classes, threshold=0.5)}
    elif task == "regression":
        metrics = {"mse": R.MeanSquaredError()}
        if full:
            metrics |= {"rmse": R.MeanSquaredError(squared=False), "mae": R.MeanAbsoluteError(), "r2": R.R2Score()}
    else:
        raise ValueError(f"unknown task {task!r}; expected binary, multiclass, regression or localization")
    return torchmetrics.MetricCollection(metrics)


def scores_to_predictions(outputs: torch.Tensor, task: str) -> torch.Tensor:
    """Map network outputs to what metrics take: sigmoid probabilities ``(N,)`` for binary (a score > 0 is the
    positive class, for bce and hinge alike), softmax probabilities ``(N, C)`` for multiclass, values for regression,
    and the outputs unchanged for localization (its metrics read logits and boxes).
    """
    if task == "binary":
        return torch.sigmoid(outputs.float())
    if task == "multiclass":
        return torch.softmax(outputs.float(), dim=-1)
    return outputs.float()


class DeepNotesModule(L.LightningModule):
    """Shared Lightning module: builds the network from the registry and trains it.

    Args:
        architecture: registry name, e.g. ``"lenet5"``.
        spec: :class:`NetworkSpec` fields as a dict (kept as a dict so checkpoints hold only plain data).
        model_params: the experiment's ``model:`` block.
        task: ``binary``, ``multiclass``, ``regression`` or ``localization``.
        num_classes: classes of a multiclass or localization task, else ``None``.
        loss: loss name (notes 001; ``ce_smooth_l1``, ``ce_giou``, ``ce_smooth_l1_giou`` for localization, see
            :class:`models.boxes.LocalizationLoss`), ``huber_delta`` its delta.
        optimizer, regularization: ``OptimizerConfig`` / ``RegularizationConfig`` as dicts.
        initializer: weight initializer name, applied once at construction (seeded by the caller).

    Shapes: ``forward`` maps ``(N, *spec['input_shape'])`` to ``(N,)``, ``(N, C)`` or, for localization,
    ``(N, C + 4)``. Batches are ``(x, y)``; y is ``(N,)``, or ``(N, 5)`` ``(class, x1, y1, x2, y2)`` for localization.

    Only parameters that require gradients are optimised, so a frozen backbone
    (:class:`pipelines.callbacks.FreezeBackbone`) stays out of the optimizer until it is unfrozen.
    """

    def __init__(self, architecture: str, spec: dict[str, Any], model_params: dict[str, Any], task: str,
                 num_classes: int | None, loss: str, optimizer: dict[str, Any], regularization: dict[str, Any],
                 initializer: str, huber_delta: float = 1.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        spec = dict(spec, input_shape=tuple(spec["input_shape"]))
        self.network: nn.Module = initialize(build_network(architecture, NetworkSpec(**spec), model_params), initializer)
        self.task = task
        self.num_classes = num_classes
        self.loss_fn = make_loss(loss, huber_delta=huber_delta, num_classes=num_classes)
        self._reg_cfg = _as_config("RegularizationConfig", regularization)
        self._penalised = penalised_parameters(self.network)  # collected once, not on every step
        self._opt_cfg = _as_config("OptimizerConfig", optimizer)
        # Training statistics are summed in one small tensor and logged once per epoch: a per-step self.log or
        # torchmetrics update costs 0.2-0.6 ms, as much as a LeNet step's backward pass (benchmarks/RESULTS.md).
        self.register_buffer("_train_sums", torch.zeros(5), persistent=False)
        self.val_metrics = build_metrics(task, num_classes).clone(prefix="val_")
        self.test_metrics = build_metrics(task, num_classes).clone(prefix="test_")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def _targets(self, y: torch.Tensor) -> torch.Tensor:
        return y.float() if self.task in ("binary", "regression", "localization") else y

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], split: str,
                   metrics: torchmetrics.MetricCollection) -> torch.Tensor:
        x, y = batch
        outputs = self(x)
        data_loss = self.loss_fn(outputs, self._targets(y))
        metrics.update(scores_to_predictions(outputs.detach(), self.task), y)
        self.log_dict(metrics, on_step=False, on_epoch=True)
        self.log(f"{split}_loss", data_loss, on_step=False, on_epoch=True, prog_bar=split == "val")
        return data_loss

    def _headline_sum(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Correct predictions (classification) or squared errors (regression) in a batch, summed."""
        if self.task == "binary":
            return ((outputs > 0).long() == y).sum()
        if self.task == "multiclass":
            return (outputs.argmax(dim=-1) == y).sum()
        if self.task == "localization":
            return (outputs[:, : self.num_classes].argmax(dim=-1) == y[:, 0].long()).sum()
        return ((outputs.float() - y.float()) ** 2).sum()

    def _is_last_train_batch(self, batch_idx: int) -> bool:
        trainer = self._trainer
        if trainer is None:  # used outside a Trainer: every step is an epoch
            return True
        total = trainer.num_training_batches
        return trainer.is_last_batch if total == float("inf") else batch_idx + 1 >= total

    def training_step(self, batch, batch_idx):
        x, y = batch
        outputs = self(x)
        data_loss = self.loss_fn(outputs, self._targets(y))
        penalty = regularization_penalty(self._penalised, self._reg_cfg)
        loss = data_loss + penalty
        n = float(len(y))
        with torch.no_grad():
            self._train_sums += torch.stack([loss.detach() * n, data_loss.detach() * n, penalty.detach() * n,
                                             self._headline_sum(outputs.detach(), y).float(),
                                             torch.tensor(n, device=loss.device)])
        if self._is_last_train_batch(batch_idx):
            loss_sum, data_sum, penalty_sum, headline, count = self._train_sums / self._train_sums[4]
            headline_name = "train_mse" if self.task == "regression" else "train_acc"
            self.log_dict({"train_loss": loss_sum, "train_data_loss": data_sum, "train_penalty": penalty_sum,
                           headline_name: headline}, on_step=False, on_epoch=True, sync_dist=True, prog_bar=False)
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


def _as_config(name: str, value: dict[str, Any]):
    from pipelines import config

    return getattr(config, name).model_validate(value)
