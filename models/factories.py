"""Factories shared by every architecture and by the Lightning module: activations, weight initialisation,
optimizers, the weight penalty and the losses.

Every name accepted here is one of the literals declared in :mod:`pipelines.config` (``ActivationName``,
``InitializerName``, ``OptimizerName``, ``LossName``, ``RegularizationName``); config validation catches a bad
name early, and these functions raise :class:`ValueError` naming the value and the allowed list for callers that
bypass the config.

Notes sections: activations follow notes 001 "Activation Functions" and notes 000 "Activation Function";
initialisers notes 001 "Weight Initialization" (Xavier, He) and notes 000 "Weight Initialization Technique";
optimizers notes 000/001/004 "Optimizers"; the penalty notes 001 "Regularization" (lasso, ridge, elastic net);
losses notes 001 "Loss Functions".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # pragma: no cover
    from models.boxes import BoxLoss
    from pipelines.config import OptimizerConfig, RegularizationConfig

__all__ = [
    "ACTIVATIONS",
    "INITIALIZERS",
    "LOSSES",
    "OPTIMIZERS",
    "REGULARIZATIONS",
    "HingeLoss",
    "PseudoHuberLoss",
    "initialize",
    "make_activation",
    "make_loss",
    "make_optimizer",
    "penalised_parameters",
    "regularization_penalty",
]


def _unknown(kind: str, value: object, allowed: Iterable[str]) -> ValueError:
    return ValueError(f"unknown {kind} {value!r}; allowed: {', '.join(allowed)}")


# ------------------------------------------------------------------------------------------- activations

#: Activation name -> constructor. Each call builds a fresh module (PReLU has a learnable slope per layer).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(negative_slope=0.01),
    "elu": lambda: nn.ELU(alpha=1.0),
    "prelu": lambda: nn.PReLU(num_parameters=1, init=0.25),
}


def make_activation(name: str) -> nn.Module:
    """Build the hidden-layer activation ``name`` (notes 001 "Activation Functions"; notes 000 "Activation Function").

    ``sigmoid`` 1/(1+e^-x); ``tanh``; ``relu`` max(0, x); ``leaky_relu`` max(0.01x, x) (the notes' "PReLU with
    alpha = 0.01 becomes Leaky ReLU"); ``elu`` x if x > 0 else (e^x - 1) (alpha 1); ``prelu`` x if x > 0 else a*x
    with one learnable a per layer, initialised at 0.25. Softmax is not a hidden activation: it lives in the
    cross-entropy loss.

    Args:
        name: one of :data:`ACTIVATIONS`.

    Returns:
        A new elementwise ``nn.Module`` (any shape in, same shape out).

    Raises:
        ValueError: unknown ``name`` (the message lists the allowed names).
    """
    try:
        factory = ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise _unknown("activation", name, ACTIVATIONS) from None
    return factory()


# ------------------------------------------------------------------------------------------ initialisers

_UNIFORM_LIMIT = 0.05  # Keras RandomUniform(minval=-0.05, maxval=0.05)

#: Initialiser name -> in-place function on one weight tensor.
INITIALIZERS: dict[str, Callable[[Tensor], Tensor]] = {
    "zeros": nn.init.zeros_,
    "uniform": lambda w: nn.init.uniform_(w, -_UNIFORM_LIMIT, _UNIFORM_LIMIT),
    "xavier_uniform": nn.init.xavier_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "he_uniform": lambda w: nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu"),
    "he_normal": lambda w: nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu"),
}

_INITIALISED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.RNNBase)


def initialize(module: nn.Module, name: str) -> nn.Module:
    """Initialise, in place, the weights of every dense, convolutional and recurrent layer in ``module``.

    Notes 001 "Weight Initialization" and notes 000 "Weight Initialization Technique":

    - ``zeros``: all weights 0 (the notes' warning: a hidden layer stays symmetrical; fine for a perceptron).
    - ``uniform``: U(-0.05, 0.05), like Keras ``RandomUniform``.
    - ``xavier_uniform``: U(-b, b), b = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010, "normalized").
    - ``xavier_normal``: N(0, sigma^2), sigma = sqrt(2 / (fan_in + fan_out)).
    - ``he_uniform``: U(-b, b), b = sqrt(6 / fan_in) (He et al. 2015, for ReLU).
    - ``he_normal``: N(0, sigma^2), sigma = sqrt(2 / fan_in) (notes 001 "He initialization").

    Covered: ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` weights and every ``weight_*`` matrix of ``nn.LSTM`` /
    ``nn.GRU`` / ``nn.RNN`` (``weight_ih_l*``, ``weight_hh_l*``, fan-in from the matrix's second dimension). All
    their biases are set to zero. Embeddings, normalisation layers and PReLU slopes keep their own initialisation.

    Args:
        module: any module; its sub-modules are visited recursively (``module`` itself included).
        name: one of :data:`INITIALIZERS`.

    Returns:
        ``module`` (initialised in place), for chaining.

    Raises:
        ValueError: unknown ``name`` (the message lists the allowed names).
    """
    try:
        init_ = INITIALIZERS[name]
    except (KeyError, TypeError):
        raise _unknown("initializer", name, INITIALIZERS) from None
    with torch.no_grad():
        for layer in module.modules():
            if not isinstance(layer, _INITIALISED_LAYERS):
                continue
            for param_name, param in layer.named_parameters(recurse=False):
                if param_name.startswith("weight"):
                    init_(param)
                elif param_name.startswith("bias"):
                    nn.init.zeros_(param)
    return module


# -------------------------------------------------------------------------------------------- optimizers

OPTIMIZERS: tuple[str, ...] = (
    "gd",
    "sgd",
    "sgd_momentum",
    "nesterov",
    "adagrad",
    "adadelta",
    "rmsprop",
    "adam",
    "adamw",
)


def make_optimizer(params: Iterable[Tensor] | Iterable[dict], cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Build the optimizer ``cfg.name`` over ``params`` (notes 000/001/004 "Optimizers").

    - ``gd``: plain gradient descent, ``torch.optim.SGD`` without momentum. "Full batch" is a property of the
      data, not of the update rule: the caller must feed the whole training set as one batch (batch size = number
      of samples) for this to be the notes' batch gradient descent.
    - ``sgd``: the same update on mini-batches (the data loader's ``batch_size`` decides how "stochastic").
    - ``sgd_momentum``: SGD with ``momentum=cfg.momentum`` (notes 001 "Momentum"; torch's form
      v = beta v + g, which is the notes' exponentially weighted average up to a rescaling of ``lr`` by 1-beta).
    - ``nesterov``: SGD with ``momentum=cfg.momentum`` and ``nesterov=True``.
    - ``adagrad``: per-parameter learning rate lr / sqrt(sum g^2 + eps) (notes 004 "Adagrad").
    - ``adadelta``: ``lr`` is used as given (torch's default is 1.0; pass ``lr: 1.0`` for the textbook method).
    - ``rmsprop``: torch's smoothing ``alpha=0.99`` and *no* momentum: ``cfg.momentum`` is used by the SGD variants
      only, so the default 0.9 does not silently turn RMSprop into momentum-RMSprop.
    - ``adam`` / ``adamw``: ``betas=cfg.betas``, ``eps=cfg.eps``; AdamW's ``weight_decay`` is decoupled.

    ``cfg.weight_decay`` is passed to every optimizer (coupled L2 decay, except for ``adamw``); ``cfg.eps`` to every
    adaptive one.

    Args:
        params: model parameters or parameter-group dicts, as for any ``torch.optim`` optimizer.
        cfg: a :class:`pipelines.config.OptimizerConfig` (anything with its fields works).

    Returns:
        The optimizer.

    Raises:
        ValueError: unknown ``cfg.name`` (the message lists the allowed names).
    """
    name, lr, wd, eps = cfg.name, cfg.lr, cfg.weight_decay, cfg.eps
    if name in ("gd", "sgd"):
        return torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=wd)
    if name in ("sgd_momentum", "nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=name == "nesterov", weight_decay=wd)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, eps=eps, weight_decay=wd)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, eps=eps, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, eps=eps, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.betas[0], cfg.betas[1]), eps=eps, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(cfg.betas[0], cfg.betas[1]), eps=eps, weight_decay=wd)
    raise _unknown("optimizer", name, OPTIMIZERS)


# ---------------------------------------------------------------------------------------- regularisation

REGULARIZATIONS: tuple[str, ...] = ("none", "l1", "l2", "elastic_net")


def penalised_parameters(module: nn.Module) -> list[Tensor]:
    """The weight tensors a penalty applies to: every parameter with ``ndim > 1`` outside ``nn.Embedding``.

    That is the weight matrices of dense, convolutional and recurrent layers. Biases, normalisation scales/shifts
    and PReLU slopes (all 1-D) are not penalised, as in Keras' ``kernel_regularizer``; embedding tables are
    excluded too (a lookup table is not a layer's weights, and penalising it would shrink every rare token's
    vector towards zero).

    Collect the list once (e.g. in the Lightning module's ``setup``) and pass it to
    :func:`regularization_penalty` on every step: the tensors are the live parameters, so the list stays valid.

    Args:
        module: the network.

    Returns:
        The weight tensors, each once (shared parameters are deduplicated), in ``module.modules()`` order.
    """
    seen: set[int] = set()
    weights: list[Tensor] = []
    for layer in module.modules():
        if isinstance(layer, nn.Embedding):
            continue
        for param in layer.parameters(recurse=False):
            if param.ndim > 1 and id(param) not in seen:
                seen.add(id(param))
                weights.append(param)
    return weights


def regularization_penalty(module: nn.Module | Sequence[Tensor], cfg: RegularizationConfig) -> Tensor:
    """The weight penalty to add to the data loss (notes 001 "Regularization").

    With W the tensors of :func:`penalised_parameters` and s = ``cfg.strength``:

    - ``l1`` (lasso): s * sum|w|
    - ``l2`` (ridge): s * sum w^2
    - ``elastic_net``: s * (r * sum|w| + (1 - r) / 2 * sum w^2), r = ``cfg.l1_ratio`` (the notes' alpha)
    - ``none``: 0

    Args:
        module: the network, or the list :func:`penalised_parameters` returned for it (cheaper: no module walk).
        cfg: a :class:`pipelines.config.RegularizationConfig` (``type``, ``strength``, ``l1_ratio``).

    Returns:
        A 0-dim tensor on the weights' device and dtype, differentiable w.r.t. the weights (a constant 0 for
        ``none``, zero strength or a network without weights).

    Raises:
        ValueError: unknown ``cfg.type`` (the message lists the allowed names).
    """
    kind, strength = cfg.type, float(cfg.strength)
    if kind not in REGULARIZATIONS:
        raise _unknown("regularization", kind, REGULARIZATIONS)
    if not isinstance(module, nn.Module):
        module = list(module)
    if kind == "none" or strength == 0.0:  # no module walk: only the zero's device and dtype are needed
        ref = next(module.parameters(), None) if isinstance(module, nn.Module) else next(iter(module), None)
        return torch.zeros((), device=None if ref is None else ref.device, dtype=None if ref is None else ref.dtype)
    weights = penalised_parameters(module) if isinstance(module, nn.Module) else module
    if not weights:
        return torch.zeros(())

    def l1() -> Tensor:
        return torch.stack([w.abs().sum() for w in weights]).sum()

    def l2() -> Tensor:
        return torch.stack([w.pow(2).sum() for w in weights]).sum()

    if kind == "l1":
        return strength * l1()
    if kind == "l2":
        return strength * l2()
    ratio = float(cfg.l1_ratio)
    return strength * (ratio * l1() + (1.0 - ratio) / 2.0 * l2())


# ------------------------------------------------------------------------------------------------ losses

LOSSES: tuple[str, ...] = (
    "bce",
    "ce",
    "mse",
    "mae",
    "huber",
    "pseudo_huber",
    "hinge",
    "ce_smooth_l1",
    "ce_giou",
    "ce_smooth_l1_giou",
)
#: Localization losses -> the box term of :class:`models.boxes.LocalizationLoss` (added to cross-entropy).
LOCALIZATION_BOX_LOSSES: dict[str, BoxLoss] = {
    "ce_smooth_l1": "smooth_l1",
    "ce_giou": "giou",
    "ce_smooth_l1_giou": "smooth_l1+giou",
}


def _align(outputs: Tensor, targets: Tensor) -> Tensor:
    """``targets`` as ``outputs``' dtype and shape; (N, 1) vs (N,) is reshaped, anything else is an error."""
    if targets.shape != outputs.shape:
        if targets.numel() != outputs.numel():
            raise ValueError(
                f"outputs of shape {tuple(outputs.shape)} and targets of shape {tuple(targets.shape)} do not pair up"
            )
        targets = targets.reshape(outputs.shape)
    return targets.to(outputs.dtype)


class _AlignedTargets:
    """Mixin for torch's elementwise losses: targets are cast to the outputs' dtype and shape first (:func:`_align`)."""

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return super().forward(outputs, _align(outputs, targets))  # type: ignore[misc]


class _BCEWithLogits(_AlignedTargets, nn.BCEWithLogitsLoss):
    """``nn.BCEWithLogitsLoss`` on logits (N,) and {0, 1} targets (N,) of any dtype."""


class _MSE(_AlignedTargets, nn.MSELoss):
    """``nn.MSELoss`` that never broadcasts (N,) against (N, 1)."""


class _MAE(_AlignedTargets, nn.L1Loss):
    """``nn.L1Loss`` that never broadcasts (N,) against (N, 1)."""


class _Huber(_AlignedTargets, nn.HuberLoss):
    """``nn.HuberLoss`` (notes 001 "Huber loss") that never broadcasts (N,) against (N, 1)."""


class _CrossEntropy(nn.CrossEntropyLoss):
    """``nn.CrossEntropyLoss`` on logits (N, C) and integer class targets (N,), cast to int64."""

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return super().forward(outputs, targets.reshape(-1).long())


class PseudoHuberLoss(nn.Module):
    """Mean of delta^2 * (sqrt(1 + (r / delta)^2) - 1), r = outputs - targets (notes 001 "Pseudo Huber loss").

    A smooth Huber loss: quadratic (r^2 / 2) near 0, linear (delta |r|) for large residuals, differentiable
    everywhere. Shapes: outputs (N,) or (N, k), targets of the same shape (or the same number of elements).
    """

    def __init__(self, delta: float = 1.0) -> None:
        super().__init__()
        if not delta > 0:
            raise ValueError(f"pseudo_huber delta must be > 0, got {delta}")
        self.delta = float(delta)

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        r = (outputs - _align(outputs, targets)) / self.delta
        return (self.delta**2 * (torch.sqrt(1.0 + r * r) - 1.0)).mean()


class HingeLoss(nn.Module):
    """Binary hinge loss: mean max(0, 1 - y * score) with y in {-1, +1} (notes 001 "Hinge loss").

    Targets may be given as {0, 1} (mapped to {-1, +1}) or already as {-1, +1}: any target > 0 is the positive
    class. ``score`` is the raw output (no sigmoid); the predicted class is positive when score > 0.
    Shapes: outputs (N,), targets (N,) (or (N, 1)).
    """

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        targets = _align(outputs, targets)
        y = torch.where(targets > 0, 1.0, -1.0).to(outputs.dtype)
        return torch.clamp(1.0 - y * outputs, min=0.0).mean()


def make_loss(name: str, huber_delta: float = 1.0, num_classes: int | None = None) -> nn.Module:
    """Build the loss ``name``: a module mapping ``(outputs, targets)`` to a scalar mean (notes 001 "Loss Functions").

    Classification (outputs are raw scores/logits; no sigmoid or softmax in the network):

    - ``bce``: binary cross-entropy with logits (``nn.BCEWithLogitsLoss``); outputs (N,), targets {0, 1} (N,), cast
      to float. A positive prediction is logit > 0 (probability > 0.5).
    - ``ce``: categorical cross-entropy (the notes' "sparse categorical": integer labels); outputs (N, C) logits,
      targets (N,) class indices, cast to int64.
    - ``hinge``: :class:`HingeLoss`; outputs (N,) scores, targets {0, 1} (or {-1, +1}); positive when score > 0.

    Regression (outputs (N,) or (N, k), targets the same shape; (N, 1) vs (N,) is reshaped, never broadcast):

    - ``mse``: mean (y - y_hat)^2; ``mae``: mean |y - y_hat|;
    - ``huber``: 0.5 r^2 if |r| <= delta else delta (|r| - delta / 2) (``nn.HuberLoss``);
    - ``pseudo_huber``: :class:`PseudoHuberLoss`.

    Localization (notes 000; outputs (N, C + 4) logits and box, targets (N, 5) class and box): cross-entropy plus
    smooth-L1 on the box corners (``ce_smooth_l1``), 1 - GIoU (``ce_giou``) or both (``ce_smooth_l1_giou``); see
    :class:`models.boxes.LocalizationLoss`.

    Args:
        name: one of :data:`LOSSES`.
        huber_delta: delta of ``huber`` and ``pseudo_huber`` (> 0); ignored by the others.
        num_classes: C of a localization loss (required there); ignored by the others.

    Returns:
        The loss module.

    Raises:
        ValueError: unknown ``name`` (the message lists the allowed names), or ``huber_delta <= 0``. At call time,
        outputs and targets with different numbers of elements (regression and binary losses).
    """
    if name in ("huber", "pseudo_huber") and not huber_delta > 0:
        raise ValueError(f"huber_delta must be > 0, got {huber_delta}")
    if name == "bce":
        return _BCEWithLogits()
    if name == "ce":
        return _CrossEntropy()
    if name == "mse":
        return _MSE()
    if name == "mae":
        return _MAE()
    if name == "huber":
        return _Huber(delta=float(huber_delta))
    if name == "pseudo_huber":
        return PseudoHuberLoss(huber_delta)
    if name == "hinge":
        return HingeLoss()
    if name in LOCALIZATION_BOX_LOSSES:
        from models.boxes import LocalizationLoss

        if not num_classes:
            raise ValueError(f"loss {name!r} needs num_classes (the class logits precede the box)")
        return LocalizationLoss(num_classes, box_loss=LOCALIZATION_BOX_LOSSES[name])
    raise _unknown("loss", name, LOSSES)
