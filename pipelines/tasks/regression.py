"""``regression``: one real value per sample (notes 001, "Loss Functions": MSE, MAE, Huber and pseudo-Huber).

Outputs and targets ``(N,)`` in target units (``(N, horizon)`` for a multi-step forecast). Metrics: MSE, RMSE, MAE, R² (torchmetrics), and at evaluation the
adjusted R² ``1 - (1 - R²)(n - 1)/(n - p - 1)`` with ``p`` the number of input features. Error: RMSE.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from pipelines.tasks.base import Evaluation, Task

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    import torchmetrics


class Regression(Task):
    """Regression of one value, ranked by test RMSE (lower first)."""

    name: ClassVar[str] = "regression"
    description: ClassVar[str] = "one real value per sample"
    losses: ClassVar[tuple[str, ...]] = ("mse", "mae", "huber", "pseudo_huber")
    metrics: ClassVar[tuple[str, ...]] = ("mse", "rmse", "mae", "r2")
    headline: ClassVar[str] = "mse"
    primary: ClassVar[str] = "rmse"
    higher_is_better: ClassVar[bool] = False
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"mse", "rmse", "mae"})
    summary: ClassVar[tuple[str, ...]] = ("rmse", "mae", "r2")
    error_unit: ClassVar[str] = "RMSE"
    squared_error: ClassVar[bool] = True

    @property
    def num_outputs(self) -> int:
        """One value per sample, or ``meta['horizon']`` of them (a time-series forecast of several steps)."""
        return int(self.meta.get("horizon", 1))

    def build_metrics(self, full: bool = True) -> torchmetrics.MetricCollection:
        import torchmetrics
        from torchmetrics import regression as R

        metrics: dict[str, torchmetrics.Metric | torchmetrics.MetricCollection] = {"mse": R.MeanSquaredError()}
        if full:
            metrics |= {"rmse": R.MeanSquaredError(squared=False), "mae": R.MeanAbsoluteError(), "r2": R.R2Score()}
        return torchmetrics.MetricCollection(metrics)

    def headline_sum(self, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((outputs.float() - y.float()) ** 2).sum()

    def split_metrics(self, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        values = super().split_metrics(outputs, x, y)
        n, p = len(y), math.prod(self.meta["input_shape"])
        values["adjusted_r2"] = 1 - (1 - values["r2"]) * (n - 1) / (n - p - 1) if n - p - 1 > 0 else float("nan")
        return values

    def error(self, metrics: dict[str, float]) -> float:
        return metrics["rmse"]

    def serve(self, outputs: torch.Tensor) -> dict[str, np.ndarray]:
        """``value`` (in the target's unit: targets are not scaled), or ``value_1`` ... ``value_<horizon>``."""
        values = outputs.float().reshape(len(outputs), -1).numpy()
        if values.shape[1] == 1:
            return {"value": values[:, 0]}
        return {f"value_{step + 1}": values[:, step] for step in range(values.shape[1])}

    def evaluate(self, evaluation: Evaluation) -> None:
        """Test predictions against actual values, with the identity line."""
        from pipelines import plots

        test = evaluation.splits["test"]
        y, p = test.y.numpy(), test.outputs.numpy()
        fig, ax = plots.plt.subplots(figsize=(5, 5))
        ax.scatter(y, p, s=6, alpha=0.5)
        low, high = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
        ax.set(xlabel="actual", ylabel="predicted", title="Test predictions against actual values")
        fig.tight_layout()
        evaluation.figures["predictions.png"] = fig


TASK = Regression
