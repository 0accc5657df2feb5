"""Gradient-flow and activation diagnostics for every training run (notes 000/001: vanishing and exploding
gradients, dying ReLUs, saturating sigmoid/tanh; notes 001 "Weight Initialization").

:class:`GradientDiagnostics` is a Lightning callback. Every ``every_n_steps`` optimizer steps it records, before
the optimizer step (and before any gradient clipping):

- per-layer gradient L2 norms, from :func:`lightning.pytorch.utilities.grad_norm`, and the total norm;
- per-layer mean and max absolute gradient (the bars of the grad-flow plot) and weight L2 norms;
- the ratio of the first layer's gradient norm to the last layer's (``grad_ratio_first_last``);
- the fraction of dead ReLU units (zero for every sample of the batch) and of saturated sigmoid/tanh inputs
  (``|x| > saturation_threshold``), captured by forward hooks that exist only during sampled steps, so the other
  steps pay nothing;
- when the trainer clips gradients (``trainer.gradient_clip_val``, notes 002's fix for exploding gradients), the
  total norm AFTER clipping as well (``grad_norm_total_clipped``). Lightning 2.6 calls ``on_before_optimizer_step``
  and then clips (``Precision._after_closure``); the optimizer steps on the clipped ``p.grad``, and the next
  ``zero_grad`` runs inside the next step's closure, so at ``on_train_batch_end`` ``p.grad`` still holds the
  clipped gradients of the step just taken.

A *layer* is a weight tensor with two or more dimensions (linear and convolution weights, embeddings, recurrent
weight matrices), named after its parameter (``hidden.0.0`` for ``hidden.0.0.weight``), in definition order:
the first layer is the input side, the last the output layer. Biases and normalisation scales are left out, as
in the usual grad-flow plot.

At the end of fit, :meth:`GradientDiagnostics.summary` gives the flags (thresholds from ``params.yaml``,
:class:`pipelines.config.DiagnosticsConfig`):

- **vanishing**: the median first/last ratio is below ``vanishing_ratio`` (the input side barely learns);
- **exploding**: a non-finite gradient, a total norm above ``exploding_norm``, or a median first/last ratio above
  ``exploding_ratio`` (gradients grow on the way back).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import grad_norm
from torch import nn

#: Activation modules whose units can die (zero output and zero gradient for every input).
DEAD_UNIT_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
#: Activation modules that saturate for large |x| (gradient close to 0).
SATURATING_TYPES: tuple[type[nn.Module], ...] = (nn.Sigmoid, nn.Tanh)


def layer_weights(network: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The network's layers as ``(name, weight)`` pairs, input side first: every trainable parameter with two or
    more dimensions, named without its ``.weight`` suffix (``hidden.0.0``) or by its full name (``lstm.weight_ih_l0``)."""
    return [
        (name.removesuffix(".weight"), p) for name, p in network.named_parameters() if p.requires_grad and p.dim() >= 2
    ]


def dead_fraction(output: torch.Tensor) -> torch.Tensor:
    """Per-unit deadness of a ReLU output ``(N, units, *positions)``: the fraction of units whose output is 0 for
    every sample (and every position of a feature map). A 1-D output ``(N,)`` is one unit. Returns a 0-d tensor."""
    alive = output.detach() > 0
    if alive.dim() == 1:
        alive = alive.unsqueeze(1)
    alive_units = alive.transpose(0, 1).reshape(alive.shape[1], -1).any(dim=1)
    return 1.0 - alive_units.float().mean()


def saturated_fraction(inputs: torch.Tensor, threshold: float) -> torch.Tensor:
    """Fraction of the elements of a sigmoid/tanh input with ``|x| > threshold`` (0-d tensor). At ``|x| = 3``
    sigmoid' is 0.045 (of its 0.25 peak) and tanh' is 0.0099 (of 1)."""
    return (inputs.detach().abs() > threshold).float().mean()


@dataclass
class GradientRecord:
    """One sampled step. Norms are L2; ``grad_mean``/``grad_max`` are over absolute gradient entries."""

    step: int
    grad_norm: dict[str, float]
    grad_mean: dict[str, float]
    grad_max: dict[str, float]
    weight_norm: dict[str, float]
    total_norm: float
    ratio: float
    dead: dict[str, float] = field(default_factory=dict)
    saturated: dict[str, float] = field(default_factory=dict)
    #: total L2 norm after gradient clipping; None when the trainer does not clip (and in older checkpoints).
    total_norm_clipped: float | None = None


class GradientDiagnostics(L.Callback):
    """Sample gradient-flow and activation statistics every ``every_n_steps`` steps, log them, and flag problems.

    Logged through the trainer's logger at the global step (only on global rank 0):
    ``grad_norm/<layer>``, ``weight_norm/<layer>``, ``grad_norm_total``, ``grad_ratio_first_last``,
    ``dead_relu_fraction`` (and ``dead_relu/<layer>``), ``saturated_fraction`` (and ``saturated/<layer>``); the
    last two only when the network has such activation modules; ``grad_norm_total_clipped`` (the total norm after
    clipping, logged at the same step) only when the trainer clips gradients.

    Args:
        every_n_steps: sampling period in optimizer steps (step 0 is always sampled).
        vanishing_ratio: median first/last gradient-norm ratio below which gradients vanish.
        exploding_norm: total gradient norm above which gradients explode.
        exploding_ratio: median first/last ratio above which gradients explode.
        saturation_threshold: ``|x|`` beyond which a sigmoid/tanh input counts as saturated.
        max_records: most records kept for the plots (older ones are thinned, never the first).

    Raises:
        ValueError: a non-positive period or threshold.
    """

    def __init__(
        self,
        every_n_steps: int = 25,
        vanishing_ratio: float = 1e-3,
        exploding_norm: float = 1e3,
        exploding_ratio: float = 1e3,
        saturation_threshold: float = 3.0,
        max_records: int = 400,
    ) -> None:
        for name, value in (
            ("every_n_steps", every_n_steps),
            ("vanishing_ratio", vanishing_ratio),
            ("exploding_norm", exploding_norm),
            ("exploding_ratio", exploding_ratio),
            ("saturation_threshold", saturation_threshold),
            ("max_records", max_records),
        ):
            if not value > 0:
                raise ValueError(f"GradientDiagnostics: {name} must be > 0, got {value}")
        self.every_n_steps = int(every_n_steps)
        self.vanishing_ratio = vanishing_ratio
        self.exploding_norm = exploding_norm
        self.exploding_ratio = exploding_ratio
        self.saturation_threshold = saturation_threshold
        self.max_records = max_records
        self.records: list[GradientRecord] = []
        self.non_finite_steps = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._dead: dict[str, torch.Tensor] = {}
        self._saturated: dict[str, torch.Tensor] = {}
        self._unclipped: GradientRecord | None = None  # sampled this step, clipped norm still to read

    # -------------------------------------------------------------------------------------------- sampling
    def _sampled(self, trainer: L.Trainer) -> bool:
        return trainer.global_step % self.every_n_steps == 0

    @staticmethod
    def _network(pl_module: L.LightningModule) -> nn.Module:
        return getattr(pl_module, "network", pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self._sampled(trainer):
            return
        self._dead, self._saturated = {}, {}
        for name, module in self._network(pl_module).named_modules():
            if isinstance(module, DEAD_UNIT_TYPES):
                self._handles.append(module.register_forward_hook(self._dead_hook(name)))
            elif isinstance(module, SATURATING_TYPES):
                self._handles.append(module.register_forward_hook(self._saturation_hook(name)))

    def _dead_hook(self, name: str):
        def hook(module, inputs, output):
            self._dead[name] = dead_fraction(output)

        return hook

    def _saturation_hook(self, name: str):
        def hook(module, inputs, output):
            self._saturated[name] = saturated_fraction(inputs[0], self.saturation_threshold)

        return hook

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._remove_hooks()  # the forward pass is over: nothing more to capture this step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self._sampled(trainer):
            return
        self._remove_hooks()
        layers = layer_weights(self._network(pl_module))
        norms = grad_norm(self._network(pl_module), norm_type=2)
        total = float(norms.pop("grad_2.0_norm_total", torch.tensor(0.0)))
        grads = {name: p.grad.detach() for name, p in layers if p.grad is not None}
        if not grads:
            return
        grad_norms = {
            name: float(
                norms[
                    f"grad_2.0_norm/{name}.weight"
                    if f"grad_2.0_norm/{name}.weight" in norms
                    else f"grad_2.0_norm/{name}"
                ]
            )
            for name in grads
        }
        stats = torch.stack([torch.stack([g.abs().mean(), g.abs().max()]) for g in grads.values()]).cpu().tolist()
        first, last = grad_norms[next(iter(grad_norms))], grad_norms[next(reversed(grad_norms))]
        ratio = first / last if last > 0 else (math.inf if first > 0 else 1.0)
        if not math.isfinite(total):
            self.non_finite_steps += 1
        record = GradientRecord(
            step=trainer.global_step,
            grad_norm=grad_norms,
            grad_mean={n: s[0] for n, s in zip(grads, stats)},
            grad_max={n: s[1] for n, s in zip(grads, stats)},
            weight_norm={name: float(p.detach().norm()) for name, p in layers},
            total_norm=total,
            ratio=ratio,
            dead={k: float(v) for k, v in self._dead.items()},
            saturated={k: float(v) for k, v in self._saturated.items()},
        )
        self._keep(record)
        if trainer.gradient_clip_val:  # Lightning clips right after this hook: read the result at batch end
            self._unclipped = record
        if trainer.logger is not None and trainer.is_global_zero:
            trainer.logger.log_metrics(_finite(step_metrics(record)), step=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        record, self._unclipped = self._unclipped, None
        if record is None:
            return
        grads = [p.grad.detach() for p in self._network(pl_module).parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) if grads else 0.0
        record.total_norm_clipped = float(norm)
        if trainer.logger is not None and trainer.is_global_zero:
            metrics = {"grad_norm_total_clipped": record.total_norm_clipped}
            trainer.logger.log_metrics(_finite(metrics), step=record.step)

    def _keep(self, record: GradientRecord) -> None:
        self.records.append(record)
        if len(self.records) > self.max_records:  # thin the middle: keep the first and every other record
            self.records = self.records[:1] + self.records[1::2]

    def on_train_end(self, trainer, pl_module) -> None:
        self._remove_hooks()

    def state_dict(self) -> dict[str, Any]:
        """The records so far: a run resumed from a checkpoint keeps its whole gradient history."""
        return {"records": [asdict(r) for r in self.records], "non_finite_steps": self.non_finite_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = [GradientRecord(**r) for r in state_dict["records"]]
        self.non_finite_steps = int(state_dict["non_finite_steps"])

    # -------------------------------------------------------------------------------------------- summary
    def summary(self) -> dict[str, Any]:
        """The verdicts and the numbers behind them (all plain floats/ints/strings; empty before any record).

        Keys: ``vanishing`` and ``exploding`` (0 or 1), ``flags`` (``vanishing``, ``exploding``, both joined with
        ``+``, or ``ok``), ``grad_ratio_median``, ``grad_norm_total_max`` (before clipping), ``non_finite_steps``,
        ``samples``, ``dead_relu_fraction`` and ``saturated_fraction`` (mean over the last sampled step's layers,
        when present); with gradient clipping, ``grad_norm_clipped_max`` (the largest total norm after clipping)
        and ``clipped_fraction`` (the share of sampled steps whose norm clipping reduced by more than 1e-6
        relatively). The flags judge the gradients before clipping: clipping hides an explosion, it does not
        undo it.
        """
        if not self.records:
            return {}
        ratios = [r.ratio for r in self.records if math.isfinite(r.ratio)]
        ratio = statistics.median(ratios) if ratios else math.inf
        totals = [r.total_norm for r in self.records]
        max_total = max(totals) if all(math.isfinite(t) for t in totals) else math.inf
        vanishing = ratio < self.vanishing_ratio
        exploding = self.non_finite_steps > 0 or max_total > self.exploding_norm or ratio > self.exploding_ratio
        flags = "+".join(name for name, on in (("vanishing", vanishing), ("exploding", exploding)) if on) or "ok"
        out: dict[str, Any] = {
            "vanishing": int(vanishing),
            "exploding": int(exploding),
            "flags": flags,
            "grad_ratio_median": ratio,
            "grad_norm_total_max": max_total,
            "non_finite_steps": self.non_finite_steps,
            "samples": len(self.records),
        }
        clipped = [(r.total_norm, r.total_norm_clipped) for r in self.records if r.total_norm_clipped is not None]
        if clipped:
            out["grad_norm_clipped_max"] = max(after for _, after in clipped)
            out["clipped_fraction"] = sum(after < before * (1 - 1e-6) for before, after in clipped) / len(clipped)
        last = self.records[-1]
        if last.dead:
            out["dead_relu_fraction"] = statistics.fmean(last.dead.values())
        if last.saturated:
            out["saturated_fraction"] = statistics.fmean(last.saturated.values())
        return out

    def layer_rows(self) -> list[dict[str, Any]]:
        """One row per sampled step and layer (for ``plots/grad_flow/<experiment>.csv``): ``step``, ``layer``,
        ``order`` (0 = input side), ``grad_norm``, ``grad_mean``, ``grad_max``, ``weight_norm``."""
        return [
            {
                "step": r.step,
                "layer": name,
                "order": i,
                "grad_norm": r.grad_norm[name],
                "grad_mean": r.grad_mean[name],
                "grad_max": r.grad_max[name],
                "weight_norm": r.weight_norm[name],
            }
            for r in self.records
            for i, name in enumerate(r.grad_norm)
        ]


def step_metrics(record: GradientRecord) -> dict[str, float]:
    """The logged metrics of one sampled step (see :class:`GradientDiagnostics`)."""
    metrics = {f"grad_norm/{k}": v for k, v in record.grad_norm.items()}
    metrics |= {f"weight_norm/{k}": v for k, v in record.weight_norm.items()}
    metrics |= {"grad_norm_total": record.total_norm, "grad_ratio_first_last": record.ratio}
    if record.dead:
        metrics |= {f"dead_relu/{k}": v for k, v in record.dead.items()}
        metrics["dead_relu_fraction"] = statistics.fmean(record.dead.values())
    if record.saturated:
        metrics |= {f"saturated/{k}": v for k, v in record.saturated.items()}
        metrics["saturated_fraction"] = statistics.fmean(record.saturated.values())
    return metrics


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """MLflow stores NaN but rejects nothing; infinities are clipped to the float range so charts still draw."""
    return {k: (v if math.isfinite(v) or math.isnan(v) else math.copysign(1e300, v)) for k, v in metrics.items()}
