"""Gradient-flow diagnostics, learning curves, seed spread and the bootstrap decomposition, on real data.

The claims of notes 000/001 measured: a deep sigmoid net's gradients vanish towards the input and a ReLU net with
He initialisation keeps them flowing; a huge learning rate or a large initial scale makes them explode; a ReLU
net pushed negative loses units. Thresholds are the defaults of ``params.yaml`` (``GradientDiagnosticsConfig``).

The bootstrap decomposition, the bias/variance verdict and the "more data helps" verdict are also checked on small
hand-computed cases whose values are exact in binary floating point (the delta-test noise of a 1-D input, its cap,
a gap exactly at the tolerance), and ``bias_variance`` of ``params.yaml`` is followed into ``evaluate``'s verdict.
"""

from __future__ import annotations

import math

import lightning.pytorch as L
import numpy as np
import pytest
import torch
import yaml

from pipelines.config import DatasetConfig, ExperimentConfig, GradientDiagnosticsConfig
from pipelines.config.loading import DEFAULT_PARAMS_PATH, validate
from pipelines.data.datamodule import TensorBatches
from pipelines.data.prepared import load_prepared, write_prepared
from pipelines.data.preparers.churn import prepare_churn
from pipelines.data.preparers.temperature import prepare_melbourne_temp
from pipelines.data.readers import read_idx
from pipelines.diagnostics.bias_variance import REMEDIES, verdict
from pipelines.diagnostics.refits import (
    bootstrap,
    bootstrap_decomposition,
    learning_curve,
    more_data_verdict,
    seed_spread,
)
from pipelines.stages.evaluate import bias_variance_diagnosis
from pipelines.tasks import get_task
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


# --------------------------------------------------------------------------- verdict boundaries
# Every value below is exact in binary floating point (multiples of 1/16), so "exactly at the tolerance" is exact.

CURVE = [  # val error falls 0.75 -> 0.5 over two doublings (100 -> 400 samples): 0.125 per doubling; final gap 0.25
    {"train_samples": 100, "train_error": 0.25, "val_error": 0.75},
    {"train_samples": 400, "train_error": 0.25, "val_error": 0.5},
]


def test_more_data_verdict_gap_exactly_at_the_tolerance_counts_as_met():
    helps, note = more_data_verdict(CURVE, tolerance=0.25)
    assert helps is False and note.startswith("more data is unlikely to help: the curves have met")
    assert "train/val gap 0.2500 at 400 samples" in note and "falls 0.1250 per doubling" in note
    helps, note = more_data_verdict(CURVE, tolerance=float(np.nextafter(0.25, 0.0)))  # one ulp below
    assert helps is True and note.startswith("more data is likely to help")


def test_more_data_verdict_with_a_non_default_tolerance():
    assert more_data_verdict(CURVE, tolerance=0.125)[0] is True
    assert more_data_verdict(CURVE, tolerance=0.5)[1].startswith("more data is unlikely")
    flat = [dict(CURVE[0], val_error=0.5), CURVE[1]]  # a gap of 0.25 but val error no longer falls: slope 0
    helps, note = more_data_verdict(flat, tolerance=0.125)
    assert helps is False and note.startswith("unclear") and "falls 0.0000 per doubling" in note
    rising = [dict(CURVE[0], val_error=0.375), CURVE[1]]
    assert more_data_verdict(rising, tolerance=0.125)[1].startswith("unclear")
    same_size = [dict(CURVE[0], train_samples=400), CURVE[1]]  # no doubling: the fall is per step
    assert "falls 0.2500 per doubling" in more_data_verdict(same_size, tolerance=0.125)[1]


def test_more_data_verdict_from_a_single_point():
    helps, note = more_data_verdict(CURVE[1:], tolerance=0.125)
    assert helps is False and note.startswith("unclear") and "one point" in note
    assert more_data_verdict(CURVE[1:], tolerance=0.25)[1].startswith("more data is unlikely")


def test_verdict_gap_exactly_at_the_tolerance_is_small():
    at = verdict(0.25, 0.5, 0.5, reference_error=0.0, tolerance=0.25)  # bias 0.25, variance 0.25
    assert (at.avoidable_bias, at.variance, at.verdict, at.remedies) == (0.25, 0.25, "good", ())
    above = float(np.nextafter(0.25, 1.0))  # one ulp above the tolerance
    assert verdict(above, 0.5, 0.5, tolerance=0.25).verdict == "high_bias"  # variance now just below 0.25
    assert verdict(0.25, 0.5 + 2**-52, 0.5, tolerance=0.25).verdict == "high_variance"
    # The default tolerance 0.02 is not exact in binary, but a gap computed as 0.02 - 0.0 is the same double.
    assert verdict(0.02, 0.04, 0.04).verdict == "good"


def test_verdict_with_a_non_default_tolerance():
    train, val, test, reference = 0.375, 0.5, 0.5625, 0.25  # bias 0.125, variance 0.125, test gap 0.0625
    default = verdict(train, val, test, reference)
    assert default.tolerance == 0.02 and default.verdict == "high_bias_and_variance"
    assert default.remedies == REMEDIES["high_bias"] + REMEDIES["high_variance"]
    assert default.test_gap == 0.0625
    assert verdict(train, val, test, reference, tolerance=0.125).verdict == "good"
    assert verdict(train, val, test, reference, tolerance=0.0625).verdict == "high_bias_and_variance"
    assert verdict(0.25, 0.25, 0.25, 0.25, tolerance=0.0).verdict == "good"  # no gap at all is not above 0


def test_reference_error_moves_the_bias_verdict():
    assert verdict(0.375, 0.375, 0.375, reference_error=0.0, tolerance=0.25).verdict == "high_bias"
    moved = verdict(0.375, 0.375, 0.375, reference_error=0.125, tolerance=0.25)
    assert (moved.avoidable_bias, moved.reference_error, moved.verdict) == (0.25, 0.125, "good")
    with pytest.raises(ValueError, match="reference_error must be non-negative"):
        verdict(0.25, 0.25, 0.25, reference_error=-0.125)


@pytest.mark.parametrize("profile", ["default", "tiny", "full"])
def test_reference_error_from_params_reaches_the_evaluate_verdict(profile):
    """``bias_variance`` of ``params.yaml``, through validation and the profile, decides ``evaluate``'s verdict."""
    raw = yaml.safe_load(DEFAULT_PARAMS_PATH.read_text())
    task = get_task("binary")({})
    results = {"train": {"acc": 0.625}, "val": {"acc": 0.375}, "test": {"acc": 0.5}}  # errors 0.375, 0.625, 0.5

    def diagnosis_with(bias_variance):
        raw["experiments"]["mlp_churn"]["bias_variance"] = bias_variance
        return bias_variance_diagnosis(validate(raw, profile).experiment("mlp_churn"), task, results)

    good = diagnosis_with({"reference_error": 0.125, "tolerance": 0.25})  # bias 0.25 and variance 0.25: at tolerance
    assert (good.reference_error, good.tolerance, good.avoidable_bias, good.verdict) == (0.125, 0.25, 0.25, "good")
    assert diagnosis_with({"reference_error": 0.0, "tolerance": 0.25}).verdict == "high_bias"
    assert diagnosis_with({"reference_error": 0.125, "tolerance": 0.125}).verdict == "high_bias_and_variance"
    assert diagnosis_with({"reference_error": 0.125}).tolerance == 0.02  # the default tolerance


def test_the_params_file_bias_variance_reaches_the_evaluate_verdict():
    """The shipped values of a regression experiment (RMSE in degrees C) reach the verdict unchanged."""
    exp = validate(yaml.safe_load(DEFAULT_PARAMS_PATH.read_text())).experiment("mlp_melbourne")
    task = get_task(exp.task)({})
    results = {"train": {"rmse": 3.0}, "val": {"rmse": 3.0625}, "test": {"rmse": 3.125}}
    diagnosis = bias_variance_diagnosis(exp, task, results)
    assert (diagnosis.reference_error, diagnosis.tolerance) == (
        exp.bias_variance.reference_error,
        exp.bias_variance.tolerance,
    )
    assert diagnosis.train_error == 3.0 and diagnosis.variance == 0.0625
    expected = verdict(3.0, 3.0625, 3.125, exp.bias_variance.reference_error, exp.bias_variance.tolerance)
    assert diagnosis == expected


def test_seed_spread_gives_one_fit_per_seed_and_differs(churn):
    rows = seed_spread(churn_experiment(seeds={"enabled": True, "count": 2, "max_epochs": 1}), churn, seed=7)
    assert [r["seed"] for r in rows] == [7, 8]
    assert rows[0]["val_error"] != rows[1]["val_error"] or rows[0]["train_error"] != rows[1]["train_error"]


def test_seed_spread_trains_on_train_data_and_measures_on_data(churn, monkeypatch):
    """The diagnose stage passes the augmented train split as ``train_data``: the fits train on it, the errors are
    measured on the prepared splits."""
    from pipelines.diagnostics import refits

    trained_on: list[tuple[object, int]] = []
    monkeypatch.setattr(refits, "fit", lambda exp, data, seed: trained_on.append((data, seed)) or object())
    monkeypatch.setattr(
        refits, "_errors", lambda task, network, data, splits: {f"{s}_error": float(data is churn) for s in splits}
    )
    augmented = object()
    exp = churn_experiment(seeds={"enabled": True, "count": 3})
    rows = seed_spread(exp, churn, seed=5, train_data=augmented)
    assert trained_on == [(augmented, 5), (augmented, 6), (augmented, 7)]
    assert [r["test_error"] for r in rows] == [1.0, 1.0, 1.0]  # measured on `churn`, not on what it trained on


def brute_force_delta_test(inputs: np.ndarray, targets: np.ndarray) -> float:
    """The delta test by its definition, without scikit-learn: each sample's nearest *other* sample by squared
    Euclidean distance over the flattened inputs, half the mean squared difference of their targets."""
    flat = inputs.reshape(len(targets), -1).astype(float)
    distances = ((flat[:, None, :] - flat[None, :, :]) ** 2).sum(axis=-1)
    np.fill_diagonal(distances, np.inf)
    return float(0.5 * ((targets - targets[distances.argmin(axis=1)]) ** 2).mean())


def test_bootstrap_on_real_temperatures(mirror, tmp_path):
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
    # The delta test on the real test windows, recomputed from its definition.
    x_test, y_test = np.asarray(data.x["test"]), np.asarray(data.y["test"], dtype=float)
    assert result["noise_delta_test"] == pytest.approx(brute_force_delta_test(x_test, y_test), rel=1e-12)
    # Three resamples with three seeds give three different networks: the spread is not zero.
    assert result["variance"] > 0.0
    assert result["noise"] == min(result["noise_delta_test"], result["bias_squared"] + result["noise"])
    assert result["expected_loss"] > result["variance"]


# Four 1-D test inputs without ties: nearest other neighbours 0 -> 1, 1 -> 0, 3 -> 1, 7 -> 3; squared target
# differences 1, 1, 4, 16; the delta test is half their mean: 0.5 * 22 / 4 = 2.75 (exact in binary).
X_1D = np.array([0.0, 1.0, 3.0, 7.0])
Y_1D = np.array([1.0, 2.0, 4.0, 8.0])
DELTA_1D = 2.75


def test_constant_predictions_have_zero_variance_and_the_hand_computed_delta_noise():
    predictions = np.full((3, 4), 5.0)  # every round predicts 5 everywhere
    result = bootstrap_decomposition(predictions, Y_1D, X_1D)
    assert result["variance"] == 0.0
    assert result["noise_delta_test"] == DELTA_1D
    main_loss = (16 + 9 + 1 + 9) / 4  # (5 - y)² = 16, 9, 1, 9
    assert result["expected_loss"] == main_loss == 8.75
    assert result["noise"] == DELTA_1D  # below the cap: not capped
    assert result["bias_squared"] == main_loss - DELTA_1D == 6.0
    assert result["rounds"] == 3


def test_delta_test_on_multi_dimensional_inputs_flattens_them():
    inputs = np.array([[0.0, 0.0], [0.0, 1.0], [5.0, 5.0], [5.0, 7.0]]).reshape(4, 1, 2)  # (N, C, W)
    targets = np.array([1.0, 3.0, 0.0, 4.0])  # pairs 0 <-> 1 and 2 <-> 3: differences 4, 4, 16, 16
    result = bootstrap_decomposition(np.zeros((2, 4)), targets, inputs)
    assert result["noise_delta_test"] == 0.5 * (4 + 4 + 16 + 16) / 4 == 5.0


def test_delta_test_pairs_duplicate_inputs_with_each_other():
    # Two repeated inputs with different targets: the noise the delta test exists to measure. Each sample's nearest
    # other sample is its duplicate (distance 0), target difference 2: 0.5 * 4 = 2. Asking scikit-learn for two
    # neighbours of each point (itself first) returned the sample as its own second neighbour here, and 1.0.
    inputs, targets = np.array([0.0, 0.0, 1.0, 1.0]), np.array([0.0, 2.0, 0.0, 2.0])
    assert bootstrap_decomposition(np.ones((2, 4)), targets, inputs)["noise_delta_test"] == 2.0
    # 32 pairs of duplicates, far apart (no ties with a third sample): pair k has targets 0 and k % 2, so half the
    # pairs differ by 1 and the delta test is 0.5 * (16 * 1) / 32 = 0.25.
    pairs = np.repeat(10.0 * np.arange(32), 2)
    ys = np.stack([np.zeros(32), np.arange(32) % 2], axis=1).reshape(-1)
    result = bootstrap_decomposition(np.zeros((2, 64)), ys, pairs)
    assert result["noise_delta_test"] == brute_force_delta_test(pairs, ys) == 0.25


@pytest.mark.parametrize(
    ("offset", "noise", "bias_squared"),
    [
        ([0.0, 0.0, 0.0, 0.0], 0.0, 0.0),  # mean prediction = targets: capped at 0
        ([1.0, 1.0, 1.0, 1.0], 1.0, 0.0),  # mean squared error of the mean prediction 1 < 2.75: capped at 1
        ([3.0, 1.0, -1.0, 0.0], DELTA_1D, 0.0),  # (9 + 1 + 1 + 0) / 4 = 2.75: the cap equals the estimate
        ([3.0, 3.0, 3.0, 3.0], DELTA_1D, 9.0 - DELTA_1D),  # 9 > 2.75: not capped
    ],
)
def test_noise_is_capped_at_the_error_of_the_mean_prediction(offset, noise, bias_squared):
    main = Y_1D + np.array(offset)
    predictions = np.stack([main - 0.5, main + 0.5])  # mean prediction `main`, variance 0.25
    result = bootstrap_decomposition(predictions, Y_1D, X_1D)
    main_loss = float(np.mean(np.square(offset)))
    assert result["noise_delta_test"] == DELTA_1D  # the uncapped estimate, whatever the predictions
    assert result["noise"] == min(DELTA_1D, main_loss) == noise
    assert result["bias_squared"] == bias_squared
    assert result["variance"] == 0.25
    assert result["expected_loss"] == main_loss + 0.25


def test_bootstrap_decomposition_errors():
    with pytest.raises(ValueError, match="rounds >= 2"):
        bootstrap_decomposition(np.zeros((1, 3)), np.zeros(3), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="rounds >= 2"):
        bootstrap_decomposition(np.zeros((2, 4)), np.zeros(3), np.zeros((3, 1)))  # 4 predictions, 3 targets
    with pytest.raises(ValueError, match="one row per target"):
        bootstrap_decomposition(np.zeros((2, 3)), np.zeros(3), np.zeros(6))  # would reshape into (3, 2) silently


def test_bootstrap_needs_a_regression_task():
    with pytest.raises(ValueError, match="needs a regression task"):
        churn_experiment(bootstrap={"enabled": True})
