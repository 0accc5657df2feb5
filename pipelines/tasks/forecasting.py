"""``forecasting``: a window of past values -> the next ``horizon`` values (notes 002, "TYPES OF RNN": many to many).

Data (:mod:`pipelines.data.preparers.forecast`): x ``(N, window)`` on the network's scale (``meta.normalization``:
optionally logged, then standardised with the train steps' mean and std), y ``(N, horizon)`` in the series' units.
The network predicts on the same scale and relative to its window's last value (:meth:`Forecasting.wrap_network`);
the loss compares on that scale, and every metric is computed in the series' units (thousands of passengers, °C).

Metrics, overall and per horizon step (``rmse_step1`` ...): MSE, RMSE, MAE (torchmetrics) and MASE, the MAE scaled
by the in-sample seasonal-naive MAE of the train series (``meta.forecast.mase_scale``; lag 12 monthly, 365 daily,
1 when the train series is too short; Hyndman & Koehler 2006). Primary: RMSE, lower first.

``evaluate`` puts three baselines beside the model, on the same test windows and in the same units
(``test_<metric>_<baseline>``): ``persistence`` (the last observed value, repeated), ``seasonal_naive`` (the value one
period before each target, read from the whole series in ``meta.series``: it may lie before the window) and
``linear_ar`` (scikit-learn Ridge on the same window, fitted on the train split, on the network's scale).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pipelines.tasks.base import Evaluation
from pipelines.tasks.regression import Regression

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    import torchmetrics
    from torch import nn

#: The baselines of :meth:`Forecasting.evaluate`, in the order they are reported.
BASELINES = ("persistence", "seasonal_naive", "linear_ar")
#: Ridge's penalty of the linear autoregression baseline (on standardised inputs).
RIDGE_ALPHA = 1.0


class Forecasting(Regression):
    """Multi-step forecasts of a series, ranked by test RMSE in the series' units (lower first)."""

    name: ClassVar[str] = "forecasting"
    description: ClassVar[str] = "the next horizon values of a series from its past window"
    metrics: ClassVar[tuple[str, ...]] = ("mse", "rmse", "mae", "mase")
    headline: ClassVar[str] = "mse"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"mse", "rmse", "mae", "mase"})
    summary: ClassVar[tuple[str, ...]] = ("rmse", "mae", "mase")
    error_unit: ClassVar[str] = "RMSE (the series' units)"
    augmentable: ClassVar[bool] = False  # noise on a window breaks its relation to the next values
    squared_error: ClassVar[bool] = False  # the bootstrap decomposes one value per sample, not a horizon

    def __init__(self, meta: dict[str, Any], options: dict[str, Any] | None = None) -> None:
        super().__init__(meta, options)
        norm = meta.get("normalization") or {}
        forecast = meta.get("forecast") or {}
        missing = [k for k in ("log", "mean", "std") if k not in norm] + [
            k for k in ("mase_scale", "period") if k not in forecast
        ]
        if missing:
            raise KeyError(
                f"dataset {meta.get('dataset')!r}: meta.json lacks {', '.join(missing)} (normalization.log/mean/std, "
                "forecast.mase_scale/period); prepare it with pipelines/data/preparers/forecast.py"
            )
        self.log_scale, self.mean, self.std = bool(norm["log"]), float(norm["mean"]), float(norm["std"])
        self.scale, self.period = float(forecast["mase_scale"]), int(forecast["period"])

    # ------------------------------------------------------------------------------------------ scales

    def encode(self, values: torch.Tensor) -> torch.Tensor:
        """Values in the series' units -> the network's scale (``meta.normalization``), any shape."""
        import torch

        values = values.float()
        return ((torch.log(values) if self.log_scale else values) - self.mean) / self.std

    def decode(self, scaled: torch.Tensor) -> torch.Tensor:
        """The network's scale -> the series' units (the inverse of :meth:`encode`)."""
        import torch

        values = scaled.float() * self.std + self.mean
        return torch.exp(values) if self.log_scale else values

    def wrap_network(self, network: nn.Module) -> nn.Module:
        """The architecture's network predicting relative to the window's last value
        (:class:`~pipelines.training.forecast.LastValueResidual`)."""
        from pipelines.training.forecast import LastValueResidual

        return LastValueResidual(network)

    def loss_targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The targets on the network's scale (the loss is not weighted by the series' level)."""
        return self.encode(y)

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Outputs ``(N, horizon)`` -> forecasts in the series' units."""
        return self.decode(outputs)

    # ------------------------------------------------------------------------------------------ metrics

    def build_metrics(self, full: bool = True) -> torchmetrics.MetricCollection:
        import torchmetrics
        from torchmetrics import regression as R

        from pipelines.training.forecast import MeanAbsoluteScaledError

        metrics: dict[str, torchmetrics.Metric | torchmetrics.MetricCollection] = {"mse": R.MeanSquaredError()}
        if full:
            metrics |= {
                "rmse": R.MeanSquaredError(squared=False),
                "mae": R.MeanAbsoluteError(),
                "mase": MeanAbsoluteScaledError(self.scale),
            }
        return torchmetrics.MetricCollection(metrics)

    def headline_sum(self, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch's squared error in the series' units, averaged over the horizon and summed over samples."""
        errors = (self.decode(outputs) - y.float()) ** 2
        return errors.reshape(len(errors), -1).mean(dim=1).sum()

    def errors(self, forecasts: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """MSE, RMSE, MAE, MASE of ``forecasts`` against ``y`` (both ``(N, horizon)``, the series' units), overall
        and per step (``<metric>_step<k>``, k from 1): the same figures for the model and each baseline."""
        from torchmetrics.functional import mean_absolute_error, mean_squared_error

        forecasts, y = forecasts.float().reshape(len(y), -1), y.float().reshape(len(y), -1)
        values: dict[str, float] = {}
        pairs = {"": (forecasts, y)} | {f"_step{k + 1}": (forecasts[:, k], y[:, k]) for k in range(y.shape[1])}
        for suffix, (p, t) in pairs.items():
            mse, mae = float(mean_squared_error(p, t)), float(mean_absolute_error(p, t))
            values |= {f"mse{suffix}": mse, f"rmse{suffix}": mse**0.5, f"mae{suffix}": mae}
            values[f"mase{suffix}"] = mae / self.scale
        return values

    def split_metrics(self, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return self.errors(self.predictions(outputs), y)

    # ------------------------------------------------------------------------------------------ serving

    def serve(self, outputs: torch.Tensor) -> dict[str, np.ndarray]:
        """``value_1`` ... ``value_<horizon>``: the forecasts in the series' units."""
        return super().serve(self.decode(outputs).reshape(len(outputs), -1))

    # ------------------------------------------------------------------------------------------ evaluate

    def baselines(self, evaluation: Evaluation) -> dict[str, torch.Tensor]:
        """The baselines' test forecasts ``(N, horizon)`` in the series' units, on the test windows (module
        docstring). The seasonal-naive value of target step ``t + k`` is ``series[t + k - period]``.

        Raises:
            ValueError: the test targets are not the series' values at ``meta.target_index`` (data and meta do not
                belong together), or a target lies within one period of the series' start.
        """
        import numpy as np
        import torch
        from sklearn.linear_model import Ridge

        meta = evaluation.data.meta
        test, train = evaluation.splits["test"], evaluation.splits["train"]
        series = np.asarray(meta["series"]["values"], dtype=np.float64)
        y = test.y.double().reshape(len(test.y), -1).numpy()
        horizon = y.shape[1]
        first = np.asarray(meta["target_index"]["test"][: len(y)], dtype=np.int64)
        steps = first[:, None] + np.arange(horizon)[None, :]
        if len(first) != len(y) or not np.allclose(series[steps], y, rtol=1e-5, atol=1e-4):
            raise ValueError(
                f"dataset {meta.get('dataset')!r}: the test targets are not the series' values at "
                "meta.json's target_index; rerun its prepare stage"
            )
        if (steps - self.period).min() < 0:
            raise ValueError(f"a test target lies within one period ({self.period} steps) of the series' start")
        ridge = Ridge(alpha=RIDGE_ALPHA).fit(train.x.double().numpy(), self.encode(train.y).double().numpy())
        linear = self.decode(torch.as_tensor(ridge.predict(test.x.double().numpy())).reshape(len(y), -1))
        return {
            "persistence": torch.as_tensor(np.repeat(series[first - 1][:, None], horizon, axis=1)),
            "seasonal_naive": torch.as_tensor(series[steps - self.period]),
            "linear_ar": linear,
        }

    def evaluate(self, evaluation: Evaluation) -> None:
        """The baselines' test metrics (``<metric>_<baseline>``), a per-step table of every forecaster
        (``horizon_metrics.csv``), and ``predictions.png``: the test series with the model's and the seasonal-naive
        forecasts, issued every ``horizon`` steps so that they tile it; its points are ``forecast.csv``
        (:attr:`Evaluation.plot_data`, for ``dvc plots``)."""
        import numpy as np

        from pipelines import plots

        meta = evaluation.data.meta
        test = evaluation.splits["test"]
        y = test.y.float().reshape(len(test.y), -1)
        forecasts = {"model": self.predictions(test.outputs).reshape(len(y), -1)} | self.baselines(evaluation)
        errors = {name: self.errors(f, y) for name, f in forecasts.items()}
        for name in BASELINES:
            evaluation.test_metrics |= {f"{m}_{name}": errors[name][m] for m in self.metrics}
        horizon = y.shape[1]
        header = "step," + ",".join(f"{name}_{m}" for name in forecasts for m in ("rmse", "mae", "mase"))
        rows = [
            f"{k + 1},"
            + ",".join(f"{errors[name][f'{m}_step{k + 1}']:.6g}" for name in forecasts for m in ("rmse", "mae", "mase"))
            for k in range(horizon)
        ]
        evaluation.tables["horizon_metrics.csv"] = "\n".join([header, *rows]) + "\n"
        evaluation.details["forecast"] = {
            "unit": meta.get("unit", ""),
            "baselines": {
                "persistence": "the last observed value, repeated over the horizon",
                "seasonal_naive": f"the value {self.period} steps before each target",
                "linear_ar": f"scikit-learn Ridge(alpha={RIDGE_ALPHA}) on the same window, fitted on the train split",
            },
            "mase": (meta.get("forecast") or {}).get("mase_note", ""),
            "test": {name: {m: errors[name][m] for m in self.metrics} for name in forecasts},
        }

        # Forecasts issued every `horizon` steps tile the test stretch (each target once).
        first = np.asarray(meta["target_index"]["test"][: len(y)], dtype=np.int64)
        chosen, covered = [], -1
        for row, start in enumerate(first):
            if start > covered:
                chosen.append(row)
                covered = start + horizon - 1
        step = meta["series"]["step"]
        origin = np.datetime64(meta["series"]["start"], "M" if step == "month" else "D")
        t = (first[chosen, None] + np.arange(horizon)[None, :]).reshape(-1)
        times = origin + t
        actual = y[chosen].reshape(-1).numpy()
        model = forecasts["model"][chosen].reshape(-1).numpy()
        naive = forecasts["seasonal_naive"][chosen].reshape(-1).numpy()
        evaluation.plot_data["forecast.csv"] = "t,time,actual,model,seasonal_naive\n" + "".join(
            f"{i},{when},{a:.6g},{m:.6g},{s:.6g}\n" for i, when, a, m, s in zip(t, times, actual, model, naive)
        )
        fig, ax = plots.plt.subplots(figsize=(9, 4))
        when = times.astype("datetime64[D]")
        ax.plot(when, actual, color="black", linewidth=1.2, label="actual (test)")
        ax.plot(when, model, color="tab:blue", linewidth=1, label=f"model (every {horizon} steps)")
        ax.plot(when, naive, color="tab:orange", linewidth=1, linestyle="--", label="seasonal naive")
        rmse = {name: errors[name]["rmse"] for name in ("model", "seasonal_naive")}
        ax.set(
            xlabel="time",
            ylabel=meta.get("unit", "value"),
            title=f"Test forecasts: RMSE model {rmse['model']:.3g}, seasonal naive {rmse['seasonal_naive']:.3g}",
        )
        ax.legend(loc="upper left", fontsize=8)
        fig.autofmt_xdate()
        fig.tight_layout()
        evaluation.figures["predictions.png"] = fig


TASK = Forecasting
