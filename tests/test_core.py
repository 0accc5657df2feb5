"""The shared training core: batching, the Lightning module's step, bias/variance verdicts, evaluation metrics."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from pipelines.data.datamodule import TensorBatches
from pipelines.diagnostics.bias_variance import REMEDIES
from pipelines.diagnostics.bias_variance import verdict as bias_variance_verdict
from pipelines.tasks import get_task
from pipelines.training.module import SupervisedModule


def _mnist_test_slice(mirror, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    with gzip.open(mirror / "mnist" / "t10k-images-idx3-ubyte.gz") as fh:
        images = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    with gzip.open(mirror / "mnist" / "t10k-labels-idx1-ubyte.gz") as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8)[:n]
    return torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64))


# ------------------------------------------------------------------------------------------------ batching


def test_batches_cover_every_sample_once_per_epoch():
    x, y = torch.arange(103).float().unsqueeze(1), torch.arange(103)
    batches = TensorBatches(x, y, batch_size=10, shuffle=True, seed=7)
    assert len(batches) == 11
    first = torch.cat([b[1] for b in batches])
    second = torch.cat([b[1] for b in batches])
    assert sorted(first.tolist()) == list(range(103)) == sorted(second.tolist())
    assert not torch.equal(first, second)  # reshuffled every epoch
    again = TensorBatches(x, y, batch_size=10, shuffle=True, seed=7)
    assert torch.equal(torch.cat([b[1] for b in again]), first)  # seeded


def test_batches_shard_across_ranks_like_distributed_sampler():
    x, y = torch.zeros(10, 1), torch.arange(10)
    shards = [
        torch.cat([b[1] for b in TensorBatches(x, y, 2, shuffle=True, seed=1, rank=r, world_size=3)]) for r in range(3)
    ]
    assert {len(s) for s in shards} == {4}  # ceil(10 / 3), padded by wrapping
    assert set(torch.cat(shards).tolist()) == set(range(10))
    assert len(TensorBatches(x, y, 2, rank=0, world_size=3)) == 2


def test_batches_reject_mismatched_inputs():
    with pytest.raises(ValueError, match="x has 3 samples but y has 2"):
        TensorBatches(torch.zeros(3), torch.zeros(2), 1)


# -------------------------------------------------------------------------------------------- the module


def _module(regularization: dict) -> SupervisedModule:
    spec = {
        "input_shape": [1, 28, 28],
        "num_outputs": 10,
        "activation": "relu",
        "dropout": 0.0,
        "batch_norm": False,
        "vocab_size": None,
    }
    return SupervisedModule(
        "lenet5",
        spec,
        {"pooling": "max"},
        "multiclass",
        {"num_classes": 10},
        "ce",
        {"name": "adam", "lr": 1e-3},
        regularization,
        "he_uniform",
    )


def test_training_loss_is_data_loss_plus_penalty_on_real_mnist(mirror):
    torch.manual_seed(0)
    x, y = _mnist_test_slice(mirror, 64)
    module = _module({"type": "l2", "strength": 1e-3})
    logged = {}
    module.log_dict = lambda values, **kw: logged.update({k: float(v) for k, v in values.items()})
    loss = module.training_step((x, y), 0)
    weights = [p for p in module.network.parameters() if p.ndim > 1]
    expected_penalty = 1e-3 * sum(float((w**2).sum()) for w in weights)
    assert logged["train_penalty"] == pytest.approx(expected_penalty, rel=1e-5)
    assert float(loss) == pytest.approx(logged["train_data_loss"] + expected_penalty, rel=1e-5)
    assert logged["train_data_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(module(x), y)), rel=1e-5)
    assert logged["train_acc"] == pytest.approx(float((module(x).argmax(-1) == y).float().mean()))


def test_module_learns_real_digits_in_a_few_steps(mirror):
    torch.manual_seed(0)
    x, y = _mnist_test_slice(mirror, 2000)
    module = _module({"type": "none"})
    module.log = module.log_dict = lambda *a, **kw: None
    optimizer = module.configure_optimizers()
    for _epoch in range(3):
        for i in range(0, 1500, 100):
            optimizer.zero_grad()
            module.training_step((x[i : i + 100], y[i : i + 100]), i).backward()
            optimizer.step()
    module.eval()
    task = get_task("multiclass")({"num_classes": 10, "input_shape": [1, 28, 28]})
    metrics = task.split_metrics(module(x[1500:]).detach(), x[1500:], y[1500:])
    assert metrics["acc"] > 0.85 and task.error(metrics) == pytest.approx(1 - metrics["acc"])
    assert 0.5 < metrics["roc_auc"] <= 1.0


def test_regression_metrics_include_adjusted_r2():
    targets = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    outputs = targets + torch.tensor([0.1, -0.1, 0.2, -0.2, 0.1, -0.1])
    task = get_task("regression")({"input_shape": [2]})
    m = task.split_metrics(outputs, torch.zeros(6, 2), targets)
    r2 = 1 - float(((outputs - targets) ** 2).sum() / ((targets - targets.mean()) ** 2).sum())
    assert m["r2"] == pytest.approx(r2, rel=1e-5)
    assert m["adjusted_r2"] == pytest.approx(1 - (1 - r2) * 5 / 3, rel=1e-5)
    assert task.error(m) == m["rmse"] == pytest.approx(float(((outputs - targets) ** 2).mean().sqrt()), rel=1e-5)


def test_metric_sets_per_task():
    assert set(get_task("binary")({}).build_metrics()) == {"acc", "precision", "recall", "f1", "roc_auc"}
    assert set(get_task("regression")({}).build_metrics(full=False)) == {"mse"}
    with pytest.raises(ValueError, match="needs num_classes"):
        get_task("multiclass")({}).build_metrics()


# ----------------------------------------------------------------------------------------- bias/variance


@pytest.mark.parametrize(
    ("train", "val", "verdict"),
    [
        (0.01, 0.015, "good"),
        (0.20, 0.21, "high_bias"),
        (0.01, 0.10, "high_variance"),
        (0.20, 0.35, "high_bias_and_variance"),
    ],
)
def test_verdicts(train, val, verdict):
    d = bias_variance_verdict(train, val, val + 0.01, reference_error=0.0, tolerance=0.02)
    assert d.verdict == verdict
    assert d.avoidable_bias == pytest.approx(train) and d.variance == pytest.approx(val - train)
    if verdict == "high_variance":
        assert d.remedies == REMEDIES["high_variance"] and "dropout" in d.remedies
    if verdict == "good":
        assert d.remedies == ()


def test_reference_error_moves_the_bias_verdict():
    assert bias_variance_verdict(0.12, 0.13, 0.13, reference_error=0.0).verdict == "high_bias"
    assert bias_variance_verdict(0.12, 0.13, 0.13, reference_error=0.11).verdict == "good"
    with pytest.raises(ValueError, match="train_error must be non-negative"):
        bias_variance_verdict(-0.1, 0.1, 0.1)
