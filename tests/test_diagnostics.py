"""Gradient-flow diagnostics, learning curves, seed spread and the bootstrap decomposition, on real data.

The claims of notes 000/001 measured: a deep sigmoid net's gradients vanish towards the input and a ReLU net with
He initialisation keeps them flowing; a huge learning rate or a large initial scale makes them explode; a ReLU
net pushed negative loses units. Thresholds are the defaults of ``params.yaml`` (``GradientDiagnosticsConfig``).
"""

from __future__ import annotations

import math

import lightning.pytorch as L
import numpy as np
import pytest
import torch

from pipelines.config import DatasetConfig, ExperimentConfig, GradientDiagnosticsConfig
from pipelines.data.datamodule import TensorBatches
from pipelines.data.prepared import load_prepared, write_prepared
from pipelines.data.preparers import prepare_churn, prepare_melbourne_temp
from pipelines.data.readers import read_idx
from pipelines.diagnostics.refits import (
    bootstrap,
    bootstrap_decomposition,
    learning_curve,
    more_data_verdict,
    seed_spread,
)
from pipelines.training.gradient_flow import GradientDiagnostics, dead_fraction, layer_weights
from pipelines.training.module import SupervisedModule

DEFAULTS = GradientDiagnosticsConfig()


@pytest.fixture(scope="module")
def mnist(mirror):
    """4,096 real MNIST test images in [0, 1], ``(N, 1, 28, 28)``, and their labels."""
    x = read_idx(mirror / "mnist" / "t10k-images-idx3-ubyte.gz")[:4096]
    y = read_idx(mirror / "mnist" / "t10k-labels-idx1-ubyte.gz")[:4096]
    return torch.tensor(x, dtype=torch.float32).unsqueeze(1) / 255.0, torch.tensor(y, dtype=torch.long)


def deep_mlp(activation: str, initializer: str, *, optimizer: dict | None = None) -> SupervisedModule:
    """A 10-layer MLP (9 hidden layers of 64 units and the output layer) for MNIST."""
    spec = {
        "input_shape": [1, 28, 28],
        "num_outputs": 10,
        "activation": activation,
        "dropout": 0.0,
        "batch_norm": False,
        "vocab_size": None,
    }
    return SupervisedModule(
        "mlp",
        spec,
        {"hidden_sizes": [64] * 9},
        "multiclass",
        {"num_classes": 10},
        "ce",
        optimizer or {"name": "adam", "lr": 1e-3},
        {"type": "none", "strength": 0.0},
        initializer,
    )


def fit_with_diagnostics(module, data, steps: int = 48, every: int = 4) -> GradientDiagnostics:
    callback = GradientDiagnostics(
        every_n_steps=every,
        vanishing_ratio=DEFAULTS.vanishing_ratio,
        exploding_norm=DEFAULTS.exploding_norm,
        exploding_ratio=DEFAULTS.exploding_ratio,
    )
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, TensorBatches(*data, batch_size=64, shuffle=True, seed=0))
    return callback


def test_deep_sigmoid_net_flags_vanishing_but_relu_with_he_does_not(mnist):
    L.seed_everything(0, verbose=False)
    sigmoid = fit_with_diagnostics(deep_mlp("sigmoid", "xavier_uniform"), mnist).summary()
    L.seed_everything(0, verbose=False)
    relu = fit_with_diagnostics(deep_mlp("relu", "he_uniform"), mnist).summary()
    assert len(layer_weights(deep_mlp("relu", "he_uniform").network)) == 10
    assert sigmoid["flags"] == "vanishing" and sigmoid["vanishing"] == 1
    assert sigmoid["grad_ratio_median"] < 1e-4  # measured about 7e-6: each sigmoid layer scales gradients by <= 1/4
    assert relu["flags"] == "ok"
    assert 0.1 < relu["grad_ratio_median"] < 100  # measured about 2
    assert 0.0 <= sigmoid["saturated_fraction"] <= 1.0 and "dead_relu_fraction" not in sigmoid


@pytest.mark.parametrize("case", ["huge_lr", "large_init"])
def test_huge_learning_rate_or_large_init_flags_exploding(mnist, case):
    L.seed_everything(0, verbose=False)
    if case == "huge_lr":
        module = deep_mlp("relu", "he_uniform", optimizer={"name": "sgd", "lr": 10.0})
    else:
        module = deep_mlp("relu", "he_uniform")
        with torch.no_grad():
            for p in module.network.parameters():
                p.mul_(3.0)  # 3^10 on the way through ten layers
    summary = fit_with_diagnostics(module, mnist, steps=24).summary()
    assert summary["exploding"] == 1 and "exploding" in summary["flags"]
    total = summary["grad_norm_total_max"]
    assert not math.isfinite(total) or total > DEFAULTS.exploding_norm


def test_dead_relu_fraction_is_a_fraction_and_rises_when_pushed_negative(mnist):
    L.seed_everything(0, verbose=False)
    healthy = fit_with_diagnostics(deep_mlp("relu", "he_uniform"), mnist, steps=8)
    L.seed_everything(0, verbose=False)
    pushed = deep_mlp("relu", "he_uniform")
    with torch.no_grad():
        for name, p in pushed.network.named_parameters():
            if name.endswith("bias"):
                p.fill_(-1.0)  # pre-activations shifted negative: units stop firing
    dying = fit_with_diagnostics(pushed, mnist, steps=8)
    for record in healthy.records + dying.records:
        assert all(0.0 <= v <= 1.0 for v in record.dead.values())
    assert len(healthy.records[0].dead) == 9  # one ReLU per hidden layer
    assert dying.summary()["dead_relu_fraction"] > healthy.summary()["dead_relu_fraction"] + 0.2


def test_dead_fraction_counts_units_over_batch_and_positions():
    out = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]], [[[0.0, 0.0]], [[0.0, 0.0]]]])  # (N=2, C=2, 1, 2)
    assert float(dead_fraction(out)) == 0.5  # channel 0 fires once; channel 1 never
    assert float(dead_fraction(torch.tensor([0.0, 2.0]))) == 0.0  # a 1-D output is one unit


def test_step_metrics_are_logged_every_n_steps(mnist):
    L.seed_everything(0, verbose=False)
    callback = fit_with_diagnostics(deep_mlp("relu", "he_uniform"), mnist, steps=20, every=5)
    assert [r.step for r in callback.records] == [0, 5, 10, 15]
    rows = callback.layer_rows()
    assert len(rows) == 4 * 10 and {r["order"] for r in rows} == set(range(10))


# ------------------------------------------------------------------------------------------- studies


@pytest.fixture(scope="module")
def churn(mirror, tmp_path_factory):
    """A real churn slice (1,500 train rows) as a prepared dataset."""
    prepared = prepare_churn(DatasetConfig(max_train_samples=1500), 0, mirror=mirror)
    path = write_prepared(tmp_path_factory.mktemp("churn") / "churn", *prepared)
    return load_prepared(path, mmap=False)


def churn_experiment(**diagnostics) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "architecture": "mlp",
            "dataset": "churn",
            "model": {"hidden_sizes": [16]},
            "loss": "bce",
            "initializer": "he_uniform",
            "optimizer": {"name": "adam", "lr": 0.01},
            "batch_size": 128,
            "trainer": {"max_epochs": 3},
            "early_stopping": {"enabled": False},
            "diagnostics": diagnostics,
        }
    )


def test_learning_curve_has_one_point_per_fraction(churn):
    exp = churn_experiment(learning_curve={"enabled": True, "fractions": [0.5, 0.1, 1.0, 0.25], "max_epochs": 2})
    rows = learning_curve(exp, churn, seed=0)
    assert [r["fraction"] for r in rows] == [0.1, 0.25, 0.5, 1.0]
    assert [r["train_samples"] for r in rows] == [150, 375, 750, 1500]
    assert all(0.0 <= r["train_error"] <= 1.0 and 0.0 <= r["val_error"] <= 1.0 for r in rows)
    helps, note = more_data_verdict(rows, tolerance=0.02)
    assert isinstance(helps, bool) and "samples" in note


def test_more_data_verdict():
    falling = [
        {"train_samples": 100, "train_error": 0.05, "val_error": 0.30},
        {"train_samples": 200, "train_error": 0.08, "val_error": 0.22},
    ]
    assert more_data_verdict(falling, 0.02)[0] is True
    flat = [dict(falling[0], val_error=0.22), falling[1]]
    assert more_data_verdict(flat, 0.02)[0] is False
    assert more_data_verdict(flat, 0.02)[1].startswith("unclear")
    met = [{"train_samples": 100, "train_error": 0.20, "val_error": 0.21}] * 2
    assert more_data_verdict(met, 0.02)[1].startswith("more data is unlikely")


def test_seed_spread_gives_one_fit_per_seed_and_differs(churn):
    rows = seed_spread(churn_experiment(seeds={"enabled": True, "count": 2, "max_epochs": 1}), churn, seed=7)
    assert [r["seed"] for r in rows] == [7, 8]
    assert rows[0]["val_error"] != rows[1]["val_error"] or rows[0]["train_error"] != rows[1]["train_error"]


def test_bootstrap_decomposition_adds_up_on_real_temperatures(mirror, tmp_path):
    prepared = prepare_melbourne_temp(DatasetConfig(val_fraction=0.125, test_fraction=0.2), 0, mirror=mirror)
    data = load_prepared(write_prepared(tmp_path / "melbourne_temp", *prepared), mmap=False)
    exp = ExperimentConfig.model_validate(
        {
            "architecture": "mlp",
            "dataset": "melbourne_temp",
            "model": {"hidden_sizes": [8]},
            "loss": "mse",
            "optimizer": {"name": "adam", "lr": 0.01},
            "trainer": {"max_epochs": 2},
            "early_stopping": {"enabled": False},
            "diagnostics": {"bootstrap": {"enabled": True, "rounds": 3}},
        }
    )
    result = bootstrap(exp, data, seed=0)
    assert result["rounds"] == 3
    parts = result["bias_squared"] + result["variance"] + result["noise"]
    assert parts == pytest.approx(result["expected_loss"], rel=1e-9)
    assert min(result["bias_squared"], result["variance"], result["noise"]) >= 0.0
    assert result["noise"] <= result["noise_delta_test"] + 1e-12


def test_bootstrap_decomposition_errors():
    with pytest.raises(ValueError, match="rounds >= 2"):
        bootstrap_decomposition(np.zeros((1, 3)), np.zeros(3), np.zeros((3, 1)))


def test_bootstrap_needs_a_regression_task():
    with pytest.raises(ValueError, match="needs a regression task"):
        churn_experiment(bootstrap={"enabled": True})
