"""Lightning callbacks shared by every training run."""

from __future__ import annotations

import time

import lightning.pytorch as L


class History(L.Callback):
    """Collects one row of epoch-level metrics per epoch (for ``dvc plots``) and logs ``epoch_time`` in seconds.

    Args:
        process_start: ``time.time()`` when the process started; ``first_step_seconds`` is then the start-up cost
            (imports, data loading, model building) up to the first training batch.
    """

    def __init__(self, process_start: float | None = None) -> None:
        self.rows: list[dict[str, float]] = []
        self.process_start = process_start or time.time()
        self.first_step_seconds: float | None = None
        self._epoch_start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_step_seconds is None:
            self.first_step_seconds = time.time() - self.process_start

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        seconds = time.perf_counter() - self._epoch_start
        pl_module.log("epoch_time", seconds, on_step=False, on_epoch=True)
        row = {"epoch": float(trainer.current_epoch), "epoch_time": seconds}
        for key, value in trainer.callback_metrics.items():
            if key.startswith(("train_", "val_")) and not key.endswith("_step") and value.numel() == 1:
                row[key.removesuffix("_epoch")] = float(value)
        self.rows.append(row)
