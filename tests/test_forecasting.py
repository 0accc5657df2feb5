"""The ``forecasting`` task on the real series (airline passengers, Melbourne temperatures): the split by target time
never leaks and scales on train alone; the baselines equal hand-read values of the CSV; MASE's formula on a hand
example; a one-step fit of the GRU and the MLP, served from raw past values; two tuning trials in the tiny profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.config import DatasetConfig, load_params
from pipelines.data.prepared import PreparedData
from pipelines.data.preparers import prepare_dataset
from pipelines.data.preparers.forecast import forecast_samples, seasonal_naive_scale
from pipelines.tasks.base import Evaluation, Outputs
from pipelines.tasks.forecasting import Forecasting

AIRLINE = DatasetConfig(window=24, horizon=12, test_steps=24, val_fraction=0.2)
MELBOURNE = DatasetConfig(window=28, horizon=7, val_fraction=0.125, test_fraction=0.2)


def _airline_csv(mirror: Path) -> pd.Series:
    frame = pd.read_csv(mirror / "airline_passengers" / "airline-passengers.csv")
    return pd.Series(frame["Passengers"].to_numpy(dtype=float), index=frame["Month"])


def _data(prepared) -> PreparedData:
    arrays, meta, _ = prepared
    return PreparedData(meta, {s: x for s, (x, _) in arrays.items()}, {s: y for s, (_, y) in arrays.items()})


@pytest.mark.parametrize("name, config", [("airline_passengers", AIRLINE), ("melbourne_temp_7d", MELBOURNE)])
def test_the_split_never_leaks_and_scales_on_train_only(name, config, mirror):
    arrays, meta, _ = prepare_dataset(name, config, 42, mirror=mirror)
    horizon, window = meta["horizon"], meta["window"]
    index = {split: np.asarray(idx) for split, idx in meta["target_index"].items()}
    last = {split: idx.max() + horizon - 1 for split, idx in index.items()}
    assert last["train"] < index["val"].min() and last["val"] < index["test"].min()  # targets strictly ordered
    series = np.asarray(meta["series"]["values"])
    for split, (x, y) in arrays.items():  # y is the series itself, in its units, at the recorded indices
        steps = index[split][:, None] + np.arange(horizon)
        np.testing.assert_allclose(y, series[steps], rtol=1e-6)
        assert x.shape == (len(y), window) and y.shape == (len(y), horizon)
    # the scaling statistics are those of the steps before val: every value a train sample reads or predicts
    val_start = meta["split_steps"]["val_start"]
    assert last["train"] < val_start <= index["val"].min()
    train = series[:val_start]
    norm = meta["normalization"]
    scaled = np.log(train) if norm["log"] else train
    assert norm["mean"] == pytest.approx(scaled.mean()) and norm["std"] == pytest.approx(scaled.std())
    assert not set(meta["series"]["filled"]) & set((index["test"][:, None] + np.arange(horizon)).ravel())


def test_airline_test_is_the_last_24_months_and_baselines_match_the_csv(mirror):
    passengers = _airline_csv(mirror)
    data = _data(prepare_dataset("airline_passengers", AIRLINE, 42, mirror=mirror))
    assert data.meta["split_times"]["test"] == ["1959-01", "1960-12"]
    task = Forecasting(data.meta)
    splits = {
        s: Outputs(torch.zeros(len(data.y[s]), 12), torch.as_tensor(data.x[s]), torch.as_tensor(data.y[s]))
        for s in data.x
    }
    base = task.baselines(Evaluation("t", data, splits))
    # the first test window forecasts 1959-01 .. 1959-12 from the 24 months to 1958-12
    assert base["seasonal_naive"][0, 0] == passengers["1958-01"] == 340
    assert base["seasonal_naive"][0, 11] == passengers["1958-12"]
    assert (base["persistence"][0] == passengers["1958-12"]).all()
    row = data.meta["target_index"]["test"].index(passengers.index.get_loc("1960-01"))
    assert base["seasonal_naive"][row, 0] == passengers["1959-01"] == 360
    # the network's output 0 on the relative scale is the persistence forecast (LastValueResidual)
    network = task.wrap_network(torch.nn.Linear(24, 12))
    torch.nn.init.zeros_(network.network.weight), torch.nn.init.zeros_(network.network.bias)
    with torch.no_grad():
        np.testing.assert_allclose(task.decode(network(splits["test"].x)), base["persistence"], rtol=1e-5)
    # MASE's scale: the in-sample lag-12 MAE of the train months 1949-01 .. 1956-12
    months = passengers[:"1956-12"].to_numpy()
    assert data.meta["forecast"]["mase_scale"] == pytest.approx(np.abs(months[12:] - months[:-12]).mean())


def test_mase_on_a_hand_example():
    # lag 2 on 1, 2, 4, 7, 11: |4-1|, |7-2|, |11-4| = 3, 5, 7 -> scale 5
    assert seasonal_naive_scale(np.array([1.0, 2, 4, 7, 11]), period=2) == (5.0, 2)
    # 3 values cannot hold a lag-12 pair: the naive (lag 1) forecast, |2-1|, |4-2| -> 1.5
    assert seasonal_naive_scale(np.array([1.0, 2, 4]), period=12) == (1.5, 1)
    meta = {"normalization": {"log": False, "mean": 0.0, "std": 1.0}, "forecast": {"mase_scale": 5.0, "period": 2}}
    task = Forecasting(meta)
    preds, target = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[2.0, 2.0], [3.0, 8.0]])
    errors = task.errors(preds, target)  # |errors| 1, 0, 0, 4: MAE 1.25, MASE 0.25; step 2: MAE 2, MASE 0.4
    assert errors["mase"] == pytest.approx(0.25) and errors["mase_step2"] == pytest.approx(0.4)
    assert errors["rmse"] == pytest.approx(np.sqrt(17 / 4)) and errors["mae_step1"] == pytest.approx(0.5)
    metric = task.build_metrics()["mase"]
    metric.update(preds, target)
    assert float(metric.compute()) == pytest.approx(0.25)


@pytest.mark.parametrize("experiment", ["gru_airline", "mlp_melbourne_7d"])
def test_one_step_fit_and_a_served_raw_window(experiment, mirror, tmp_path):
    from pipelines.data.encoding import SeriesInput, raw_input_for
    from pipelines.serving.bundle import Bundle
    from pipelines.training.inference import predict
    from pipelines.training.trainer import build_module, make_datamodule, make_trainer, seed_everything

    params = load_params(profile="tiny")
    exp = params.experiment(experiment)
    arrays, meta, _ = prepare_dataset(exp.dataset, params.dataset(exp.dataset), 42, mirror=mirror)
    data = _data((arrays, meta, None))
    data.x["train"], data.y["train"] = data.x["train"][-128:], data.y["train"][-128:]  # a real slice
    seed_everything(0)
    module = build_module(exp, meta)
    before = {k: v.clone() for k, v in module.network.state_dict().items()}
    exp = exp.model_copy(update={"trainer": exp.trainer.model_copy(update={"max_epochs": 1, "limit_train_batches": 1})})
    trainer = make_trainer(exp, logger=False, callbacks=[], default_root_dir=tmp_path, enable_checkpointing=False)
    trainer.fit(module, datamodule=make_datamodule(exp, data, 0))
    assert any(not torch.equal(before[k], v) for k, v in module.network.state_dict().items())
    assert {"val_rmse", "val_mase", "val_mae"} <= set(trainer.callback_metrics)
    # served: raw past values in the series' units encode exactly as prepared, and the answer is in units
    raw = raw_input_for(meta, tmp_path)
    assert isinstance(raw, SeriesInput)
    series = np.asarray(meta["series"]["values"])
    first = np.asarray(meta["target_index"]["test"][:5])
    window = meta["window"]
    frame = pd.DataFrame(series[first[:, None] + np.arange(-window, 0)], columns=meta["input_names"])
    np.testing.assert_array_equal(raw.encode(frame), arrays["test"][0][:5])
    bundle = Bundle.read(Bundle.from_module(module, meta, tmp_path).write(tmp_path / "bundle"))
    answer = bundle.predict(frame)
    assert list(answer.columns) == [f"value_{k}" for k in range(1, meta["horizon"] + 1)]
    expected = module.task.serve(predict(module.network, torch.as_tensor(arrays["test"][0][:5])))
    np.testing.assert_allclose(answer["value_1"], expected["value_1"], rtol=1e-5)
    with pytest.raises(Exception, match="t-1"):
        raw.encode(frame.drop(columns="t-1"))


def test_forecast_samples_drop_straddling_windows():
    # 10 steps, window 2, horizon 2, val from 6, test from 8: train targets end before 6, nothing straddles
    split = forecast_samples(10, 2, 2, 6, 8)
    assert split["train"].tolist() == [2, 3, 4] and split["val"].tolist() == [6] and split["test"].tolist() == [8]
    assert forecast_samples(10, 2, 2, 6, 8, excluded=np.array([9]))["test"].tolist() == []


def test_two_tiny_trials_log_forecasting_metrics(mirror, tmp_path):
    """``deepnotes tune`` on a forecasting experiment: 2 trials of gru_airline (tiny profile), nested MLflow runs
    with the task's validation metrics."""
    from tests.conftest import tiny_code_copy
    from tests.test_tune import _mlflow_runs, _run

    root = tmp_path / "repo"
    env = tiny_code_copy(root, mirror, n_startup_trials=2, n_warmup_steps=0)
    _run(root, "pipelines.stages.prepare", "airline_passengers", env=env)
    _run(root, "pipelines.stages.augment", "airline_passengers", env=env)
    _run(root, "pipelines.stages.tune", "gru_airline", "--n-trials", "2", "--study-name", "fc", env=env)
    runs, _ = _mlflow_runs(root, "fc")
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    for child in children:
        assert {"val_rmse", "val_mase", "val_mae"} <= set(child.data.metrics), child.data.metrics
        assert np.isfinite(child.data.metrics["val_rmse"])
    assert (root / "params" / "tuned" / "gru_airline.yaml").is_file()
