"""models.factories: activations, initialisers, optimizers, the weight penalty and the losses.

Expected values are hand-computed; the loss checks reuse the worked numbers of notes 001 "Loss Functions".
"""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from torch import nn

from models.factories import (
    ACTIVATIONS,
    INITIALIZERS,
    LOSSES,
    initialize,
    make_activation,
    make_loss,
    make_optimizer,
    penalised_parameters,
    regularization_penalty,
)
from pipelines.config import OptimizerConfig, RegularizationConfig

# ------------------------------------------------------------------------------------------- activations

X = torch.tensor([-1.0, 0.0, 2.0])
E = math.e


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("sigmoid", [1 / (1 + E), 0.5, 1 / (1 + E**-2)]),
        ("tanh", [math.tanh(-1), 0.0, math.tanh(2)]),
        ("relu", [0.0, 0.0, 2.0]),
        ("leaky_relu", [-0.01, 0.0, 2.0]),
        ("elu", [1 / E - 1, 0.0, 2.0]),
        ("prelu", [-0.25, 0.0, 2.0]),
    ],
)
def test_activation_values(name, expected):
    torch.testing.assert_close(make_activation(name)(X), torch.tensor(expected), rtol=1e-6, atol=1e-7)


def test_activation_names_match_config_and_prelu_is_per_layer():
    from typing import get_args

    from pipelines.config import ActivationName

    assert set(ACTIVATIONS) == set(get_args(ActivationName))
    a, b = make_activation("prelu"), make_activation("prelu")
    assert a is not b and a.weight is not b.weight  # one learnable slope per layer


def test_unknown_activation_names_value_and_allowed():
    with pytest.raises(ValueError, match=r"'swish'.*relu"):
        make_activation("swish")


# ------------------------------------------------------------------------------------------ initialisers


def _big_linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(1024, 512)  # fan_in 1024, fan_out 512: 524,288 weights


def test_he_normal_std_is_sqrt_2_over_fan_in():
    layer = initialize(_big_linear(), "he_normal")
    assert layer.weight.std().item() == pytest.approx(math.sqrt(2 / 1024), rel=0.05)
    assert layer.weight.mean().item() == pytest.approx(0.0, abs=1e-3)


def test_he_uniform_bound():
    w = initialize(_big_linear(), "he_uniform").weight
    bound = math.sqrt(6 / 1024)
    assert w.abs().max().item() <= bound
    assert w.abs().max().item() > 0.99 * bound


def test_xavier_uniform_bound_and_xavier_normal_std():
    w = initialize(_big_linear(), "xavier_uniform").weight
    bound = math.sqrt(6 / (1024 + 512))
    assert w.abs().max().item() <= bound
    assert w.abs().max().item() > 0.99 * bound
    w = initialize(_big_linear(), "xavier_normal").weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (1024 + 512)), rel=0.05)


def test_uniform_is_keras_random_uniform():
    w = initialize(_big_linear(), "uniform").weight
    assert w.abs().max().item() <= 0.05
    assert w.min().item() < -0.049 and w.max().item() > 0.049


def test_conv_fan_in_counts_the_kernel():
    torch.manual_seed(0)
    conv = initialize(nn.Conv2d(64, 128, 3), "he_normal")  # fan_in = 64 * 3 * 3
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)


@pytest.mark.parametrize("name", sorted(INITIALIZERS))
def test_biases_are_zero_and_embeddings_and_norms_untouched(name):
    torch.manual_seed(0)
    net = nn.ModuleDict(
        {
            "emb": nn.Embedding(10, 4),
            "lstm": nn.LSTM(4, 3, batch_first=True),
            "conv": nn.Conv1d(4, 5, 3),
            "bn": nn.BatchNorm1d(5),
            "fc": nn.Linear(5, 2),
        }
    )
    with torch.no_grad():
        net["bn"].weight.fill_(3.0)
    emb_before = net["emb"].weight.detach().clone()
    assert initialize(net, name) is net
    for param_name, param in net.named_parameters():
        if param_name.startswith(("lstm.bias", "conv.bias", "fc.bias")):
            assert torch.all(param == 0), param_name
    torch.testing.assert_close(net["emb"].weight, emb_before)
    assert torch.all(net["bn"].weight == 3.0) and torch.all(net["bn"].bias == 0.0)
    recurrent = [net["lstm"].weight_ih_l0, net["lstm"].weight_hh_l0]
    if name == "zeros":
        assert all(torch.all(w == 0) for w in recurrent)
        assert torch.all(net["fc"].weight == 0) and torch.all(net["conv"].weight == 0)
    else:
        assert all(w.abs().sum() > 0 for w in recurrent)


def test_unknown_initializer():
    with pytest.raises(ValueError, match=r"'orthogonal'.*he_normal"):
        initialize(nn.Linear(2, 2), "orthogonal")


# -------------------------------------------------------------------------------------------- optimizers


def _params():
    return nn.Linear(3, 1).parameters()


@pytest.mark.parametrize(
    ("name", "cls", "expected"),
    [
        ("gd", torch.optim.SGD, {"momentum": 0.0, "nesterov": False}),
        ("sgd", torch.optim.SGD, {"momentum": 0.0, "nesterov": False}),
        ("sgd_momentum", torch.optim.SGD, {"momentum": 0.8, "nesterov": False}),
        ("nesterov", torch.optim.SGD, {"momentum": 0.8, "nesterov": True}),
        ("adagrad", torch.optim.Adagrad, {"eps": 1e-7}),
        ("adadelta", torch.optim.Adadelta, {"eps": 1e-7}),
        ("rmsprop", torch.optim.RMSprop, {"momentum": 0, "alpha": 0.99, "eps": 1e-7}),
        ("adam", torch.optim.Adam, {"betas": (0.8, 0.99), "eps": 1e-7}),
        ("adamw", torch.optim.AdamW, {"betas": (0.8, 0.99), "eps": 1e-7}),
    ],
)
def test_optimizer_class_and_settings(name, cls, expected):
    cfg = OptimizerConfig(name=name, lr=0.05, weight_decay=0.01, momentum=0.8, betas=(0.8, 0.99), eps=1e-7)
    opt = make_optimizer(_params(), cfg)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.05 and group["weight_decay"] == 0.01
    for key, value in expected.items():
        assert group[key] == value, key


def test_gd_step_is_w_minus_lr_grad():
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = make_optimizer([w], OptimizerConfig(name="gd", lr=0.1))
    (w**2).sum().backward()  # grad 2w
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([0.8, -1.6]))


def test_unknown_optimizer():
    with pytest.raises(ValueError, match=r"'lbfgs'.*adamw"):
        make_optimizer(_params(), OptimizerConfig.model_construct(name="lbfgs", lr=0.1))


# ---------------------------------------------------------------------------------------- regularisation


def _hand_set_net() -> nn.Sequential:
    """Weights |w| sum 11, w^2 sum 30.5; biases, batch norm and embedding must not count."""
    net = nn.Sequential(nn.Embedding(3, 2), nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.fill_(100.0)
        net[1].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, -4.0]]))
        net[1].bias.fill_(10.0)
        net[2].weight.fill_(5.0)
        net[2].bias.fill_(5.0)
        net[3].weight.copy_(torch.tensor([[0.5, -0.5]]))
        net[3].bias.fill_(7.0)
    return net


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("l1", 0.1 * 11),
        ("l2", 0.1 * 30.5),
        ("elastic_net", 0.1 * (0.3 * 11 + (1 - 0.3) / 2 * 30.5)),  # 1.3975
        ("none", 0.0),
    ],
)
def test_penalty_values(kind, expected):
    net = _hand_set_net()
    cfg = RegularizationConfig(type=kind, strength=0.1, l1_ratio=0.3)
    penalty = regularization_penalty(net, cfg)
    assert penalty.shape == ()
    assert penalty.item() == pytest.approx(expected, rel=1e-6)
    # the precomputed list gives the same value
    assert regularization_penalty(penalised_parameters(net), cfg).item() == pytest.approx(expected, rel=1e-6)


def test_penalised_parameters_are_weight_matrices_only():
    net = _hand_set_net()
    assert [p.shape for p in penalised_parameters(net)] == [(2, 2), (1, 2)]


def test_l2_penalty_gradient_is_2_strength_w():
    net = _hand_set_net()
    regularization_penalty(net, RegularizationConfig(type="l2", strength=0.1)).backward()
    torch.testing.assert_close(net[1].weight.grad, 0.2 * net[1].weight.detach())
    assert net[1].bias.grad is None


def test_unknown_penalty():
    with pytest.raises(ValueError, match=r"'dropout'.*elastic_net"):
        regularization_penalty(_hand_set_net(), RegularizationConfig.model_construct(type="dropout", strength=1.0))


# ------------------------------------------------------------------------------------------------ losses


def test_mse_notes_example():
    # notes 001: y = 90, 100, 110; y_hat = 70, 120, 100 -> (400 + 400 + 100) / 3 = 300
    loss = make_loss("mse")(torch.tensor([70.0, 120.0, 100.0]), torch.tensor([90, 100, 110]))
    assert loss.item() == pytest.approx(300.0)


def test_mae_notes_example():
    # notes 001: y = 20, 50, 70; y_hat = 25, 72, 90 -> (5 + 22 + 20) / 3 = 47/3
    loss = make_loss("mae")(torch.tensor([25.0, 72.0, 90.0]), torch.tensor([20.0, 50.0, 70.0]))
    assert loss.item() == pytest.approx(47 / 3)


def test_huber_notes_example_and_small_residuals():
    # residuals 5, 22, 20 with delta 10: 0.5 * 25 = 12.5; 10 * 22 - 50 = 170; 10 * 20 - 50 = 150
    loss = make_loss("huber", huber_delta=10.0)(torch.tensor([25.0, 72.0, 90.0]), torch.tensor([20.0, 50.0, 70.0]))
    assert loss.item() == pytest.approx((12.5 + 170 + 150) / 3)
    # delta 1: residuals 0.5, 2, -3 -> 0.125, 1.5, 2.5
    loss = make_loss("huber")(torch.tensor([0.5, 2.0, -3.0]), torch.zeros(3))
    assert loss.item() == pytest.approx((0.125 + 1.5 + 2.5) / 3)


def test_pseudo_huber():
    # delta^2 * (sqrt(1 + (r / delta)^2) - 1)
    loss = make_loss("pseudo_huber")(torch.tensor([0.0, 1.0, -3.0]), torch.zeros(3))
    assert loss.item() == pytest.approx((0 + (math.sqrt(2) - 1) + (math.sqrt(10) - 1)) / 3, rel=1e-6)
    loss = make_loss("pseudo_huber", huber_delta=2.0)(torch.tensor([2.0]), torch.tensor([0.0]))
    assert loss.item() == pytest.approx(4 * (math.sqrt(2) - 1), rel=1e-6)


@pytest.mark.parametrize("targets", [[1, 0, 1, 0], [1, -1, 1, -1]])
def test_hinge(targets):
    # y = +1, -1, +1, -1; 1 - y * s = -1, 0.5, 0.7, 1.2 -> max(0, .) mean = 2.4 / 4
    scores = torch.tensor([2.0, -0.5, 0.3, 0.2])
    assert make_loss("hinge")(scores, torch.tensor(targets)).item() == pytest.approx(0.6)


def test_bce_on_logits_matches_notes_rows():
    # notes 001 rows (y, y_hat): (1, 0.7) and (0, 0.1): -ln 0.7 and -ln 0.9 (the notes write them in log10: 0.15, 0.04)
    p = torch.tensor([0.7, 0.1])
    loss = make_loss("bce")(torch.log(p / (1 - p)), torch.tensor([1, 0]))
    assert loss.item() == pytest.approx((-math.log(0.7) - math.log(0.9)) / 2, rel=1e-5)
    assert -math.log10(0.7) == pytest.approx(0.15, abs=0.01) and -math.log10(0.9) == pytest.approx(0.04, abs=0.01)


def test_ce_on_logits_with_integer_targets():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    loss = make_loss("ce")(logits, torch.tensor([0, 2], dtype=torch.int32))
    assert loss.item() == pytest.approx((-math.log(0.7) - math.log(0.8)) / 2, rel=1e-5)


def test_regression_targets_are_reshaped_not_broadcast():
    outputs = torch.tensor([1.0, 2.0, 3.0])
    assert make_loss("mse")(outputs, torch.tensor([[1.0], [2.0], [4.0]])).item() == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="do not pair up"):
        make_loss("mse")(outputs, torch.zeros(2))


@pytest.mark.parametrize("name", LOSSES)
def test_losses_are_picklable_scalars(name):
    loss_fn = pickle.loads(pickle.dumps(make_loss(name, num_classes=3)))  # e.g. a logged model holding its loss
    outputs = torch.randn(4, 3) if name == "ce" else torch.randn(4)
    targets = torch.tensor([0, 2, 1, 0]) if name == "ce" else torch.tensor([0, 1, 1, 0])
    if name.startswith("ce_"):  # localization: 3 logits and a box; targets (class, x1, y1, x2, y2)
        outputs = torch.cat([torch.randn(4, 3), torch.tensor([[0.1, 0.1, 0.5, 0.5]]).repeat(4, 1)], dim=1)
        targets = torch.tensor(
            [[0, 0.2, 0.2, 0.6, 0.6], [2, 0.0, 0.0, 0.3, 0.4], [1, 0.5, 0.5, 0.9, 0.9], [0, 0.1, 0.1, 0.5, 0.5]]
        )
    value = loss_fn(outputs, targets)
    assert value.shape == () and torch.isfinite(value)


def test_loss_errors():
    with pytest.raises(ValueError, match=r"'cosine'.*hinge"):
        make_loss("cosine")
    with pytest.raises(ValueError, match="delta"):
        make_loss("huber", huber_delta=0.0)
