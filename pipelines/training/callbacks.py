"""Lightning callbacks shared by every training run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import BaseFinetuning, ModelCheckpoint
from torch.nn.modules.batchnorm import _BatchNorm


class History(L.Callback):
    """Collects one row of epoch-level metrics per epoch (for ``dvc plots``) and logs ``epoch_time`` in seconds to
    the logger only (a time in the rows would make every retraining a new ``plots/history`` file for DVC).

    ``train_epoch_seconds`` holds, for each epoch this process trained, the seconds from the epoch's start to its
    validation (or to its end when it does not validate): the training batches (data loading, forward, backward,
    optimizer step, the per-step callbacks), not validation; not in the checkpoint state either.

    Args:
        process_start: ``time.time()`` when the process started; ``first_step_seconds`` is then the start-up cost
            (imports, data loading, model building) up to the first training batch.
    """

    def __init__(self, process_start: float | None = None) -> None:
        self.rows: list[dict[str, float]] = []
        self.process_start = process_start or time.time()
        self.first_step_seconds: float | None = None
        self._epoch_start = 0.0
        self.train_epoch_seconds: list[float] = []
        self._train_clock: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_step_seconds is None:
            self.first_step_seconds = time.time() - self.process_start

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = self._train_clock = time.perf_counter()

    def _stop_train_clock(self) -> None:
        if self._train_clock is not None:
            self.train_epoch_seconds.append(time.perf_counter() - self._train_clock)
            self._train_clock = None

    def on_validation_start(self, trainer, pl_module) -> None:
        self._stop_train_clock()  # Lightning 2 validates inside the epoch, before on_train_epoch_end

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop_train_clock()
        seconds = time.perf_counter() - self._epoch_start
        pl_module.log("epoch_time", seconds, on_step=False, on_epoch=True)
        row = {"epoch": float(trainer.current_epoch)}  # no wall time: the rows are a DVC output, hashed
        for key, value in trainer.callback_metrics.items():
            if key.startswith(("train_", "val_")) and not key.endswith("_step") and value.numel() == 1:
                row[key.removesuffix("_epoch")] = float(value)
        self.rows.append(row)

    def state_dict(self) -> dict[str, Any]:
        """The rows so far: a run resumed from a checkpoint continues its history (:mod:`.resume`). No time: the
        state is in every checkpoint, which DVC hashes (a retrain with the same params gives the same bytes)."""
        return {"rows": [dict(row) for row in self.rows]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(row) for row in state_dict["rows"]]


class FreezeBackbone(BaseFinetuning):
    """Train the head on a frozen backbone, optionally unfreezing the backbone later (notes 001, "Transfer
    learning"), with Lightning's ``BaseFinetuning``.

    Frozen means: the backbone's parameters do not require gradients (their ``.grad`` stays ``None``), are not in
    the optimizer, and its batch-norm layers run in eval mode on their pretrained running statistics, so the
    features the head sees in training are those it sees in evaluation. From epoch ``unfreeze_at_epoch`` the
    backbone trains too, as a new optimizer param group with ``lr * backbone_lr_ratio``.

    Args:
        unfreeze_at_epoch: the epoch (0-based) from which the backbone trains; ``None`` keeps it frozen.
        backbone_lr_ratio: the backbone's learning rate relative to the head's (first param group) once unfrozen.

    The backbone is :func:`models.transfer.backbone_of` the module's ``network``.
    """

    def __init__(self, unfreeze_at_epoch: int | None = None, backbone_lr_ratio: float = 0.1) -> None:
        super().__init__()
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.backbone_lr_ratio = backbone_lr_ratio
        self.frozen = False

    @staticmethod
    def _backbone(pl_module):
        from models.transfer import backbone_of

        return backbone_of(pl_module.network)

    def freeze_before_training(self, pl_module) -> None:
        self.freeze(self._backbone(pl_module), train_bn=False)
        self.frozen = True

    def finetune_function(self, pl_module, epoch: int, optimizer) -> None:
        if self.frozen and self.unfreeze_at_epoch is not None and epoch >= self.unfreeze_at_epoch:
            backbone = self._backbone(pl_module)
            lr = optimizer.param_groups[0]["lr"] * self.backbone_lr_ratio
            self.unfreeze_and_add_param_group(backbone, optimizer, lr=lr, train_bn=True)
            backbone.train()
            self.frozen = False

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)  # calls finetune_function
        if self.frozen:  # Lightning puts the whole module in train mode; frozen batch norm stays in eval mode
            for module in self._backbone(pl_module).modules():
                if isinstance(module, _BatchNorm):
                    module.eval()


class PortableModelCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose saved state names files relative to its ``dirpath``.

    The stock callback stores absolute paths (``dirpath``, ``best_model_path``, ...) inside every checkpoint, so the
    same training in another folder (a DVC experiment's temporary copy, a second clone) writes different bytes and
    DVC reruns everything downstream. Here they are file names, read back relative to this callback's ``dirpath``
    when a run resumes (:mod:`pipelines.training.resume`), so the best model so far and its score carry over.
    """

    _PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        for key in self._PATH_KEYS:
            if state.get(key):
                state[key] = Path(state[key]).name
        state["best_k_models"] = {Path(k).name: v for k, v in (state.get("best_k_models") or {}).items()}
        state["dirpath"] = None
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        if state.get("dirpath") is None and self.dirpath:
            folder = Path(self.dirpath)
            for key in self._PATH_KEYS:
                if state.get(key):
                    state[key] = str(folder / state[key])
            state["best_k_models"] = {str(folder / k): v for k, v in (state.get("best_k_models") or {}).items()}
            state["dirpath"] = self.dirpath
        super().load_state_dict(state)
