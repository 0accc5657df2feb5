"""The torch parts of the ``forecasting`` task (:mod:`pipelines.tasks.forecasting`, which imports this lazily):
the last-value residual around a network, and MASE as a torchmetrics metric."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics.regression import MeanAbsoluteError


class LastValueResidual(nn.Module):
    """Predict relative to the window's last value: ``network(x - x[:, -1:]) + x[:, -1:]``.

    On the forecasting scale (logged airline passengers, standardised), the network then sees the window's shape, not
    its level, and predicts the change from the last observation: a series whose test years lie above every train
    value (airline's trend) is forecast as well as one inside the train range (no extrapolation in the inputs).
    With a zero network it is the persistence forecast. (Hyndman & Athanasopoulos, "Forecasting: Principles and
    Practice", 3rd ed., 2021, §5.2 and §9.1: naive forecasts and differencing for non-stationary series.)

    Shapes: ``x`` ``(N, window)`` -> ``(N, horizon)`` (``(N,)`` when the network answers one value per sample).
    Holds no parameters of its own: its ``state_dict`` is the network's, under ``network.``.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        last = x[:, -1:]
        out = self.network(x - last)
        return out + (last if out.ndim == 2 else last[:, 0])


class MeanAbsoluteScaledError(MeanAbsoluteError):
    """MASE: the mean absolute error divided by ``scale``, the in-sample MAE of the seasonal-naive forecast on the
    train series (Hyndman & Koehler 2006, "Another look at measures of forecast accuracy"). Below 1: better than that
    naive forecast was in-sample. ``scale`` is a constant from ``meta.json`` (``forecast.mase_scale``), in the series'
    units, like the predictions and targets (any shape, compared element-wise)."""

    def __init__(self, scale: float, **kwargs) -> None:
        super().__init__(**kwargs)
        if not scale > 0:
            raise ValueError(f"MASE scale must be positive, got {scale}")
        self.scale = float(scale)

    def compute(self) -> Tensor:
        return super().compute() / self.scale


def mase(preds: Tensor, target: Tensor, scale: float) -> Tensor:
    """The functional form of :class:`MeanAbsoluteScaledError`: ``mean(|preds - target|) / scale``."""
    from torchmetrics.functional import mean_absolute_error

    return mean_absolute_error(preds, target) / torch.as_tensor(scale, dtype=preds.dtype)
