"""Training word embeddings (the ``embedding`` task, :mod:`pipelines.tasks.embedding`): the negative-sampling loss
and its metrics, word2vec's learning-rate schedule, and the analogy accuracy of each validation epoch.

word2vec.c and gensim update the vectors by plain SGD after every (word, context) pair, with a learning rate that
decays linearly from ``alpha`` to ``alpha * 1e-4`` over training. :class:`EmbeddingModule` keeps both: the loss it
minimises is the objective **summed** over the batch's positives (the logged losses are per positive), so ``lr`` is
word2vec's per-pair ``alpha`` (0.025), and a ``LambdaLR`` decays it per step to ``lr * task_options.min_lr_ratio``.
The pairs of one batch are updated together, not one after another: with ``lr`` 0.025, batches of a few thousand
words train as word2vec does, while batches of ten thousand and more diverged (the summed steps of frequent words
grow with the batch) in ``benchmarks/ATTENTION.md``'s measurements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
import torchmetrics
from torch import nn

from pipelines.training.module import SupervisedModule

if TYPE_CHECKING:  # pragma: no cover
    from models.embedding.word2vec import Word2Vec
    from pipelines.tasks.embedding import Embedding, EmbeddingOptions


class NegativeSamplingLoss(nn.Module):
    """The negative-sampling objective (Mikolov et al. 2013) in nats per positive: logits ``(P, 1 + K)``, column 0
    the positive -> ``mean_p -(log s(l_p0) + sum_k log s(-l_pk))``. A ``-inf`` noise logit (a noise word equal to
    its positive) adds nothing. The targets are not read: the scores carry them."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        return per_positive(logits).mean()


def per_positive(logits: torch.Tensor) -> torch.Tensor:
    """The objective of each positive ``(P,)`` in nats, from logits ``(P, 1 + K)`` (:class:`NegativeSamplingLoss`)."""
    logsig = nn.functional.logsigmoid
    return -(logsig(logits[:, 0].float()) + logsig(-logits[:, 1:].float()).sum(dim=1))


def right_sides(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(right, scored)``: how many of the finite logits ``(P, 1 + K)`` are on the right side of 0 (the positive
    above, the noise words below), and how many there are."""
    finite = torch.isfinite(logits)
    right = torch.cat([logits[:, :1] > 0, logits[:, 1:] < 0], dim=1) & finite
    return right.sum().float(), finite.sum().float()


class ObjectiveAccuracy(torchmetrics.Metric):
    """``ns_accuracy``: the share of scored words the negative-sampling logits ``(P, 1 + K)`` put on the right side
    of 0 (:func:`right_sides`); the targets are ignored."""

    higher_is_better = True
    full_state_update = False
    right: torch.Tensor
    scored: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("right", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("scored", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor | None = None) -> None:
        right, scored = right_sides(preds)
        self.right += right
        self.scored += scored

    def compute(self) -> torch.Tensor:
        return self.right / self.scored.clamp(min=1)


def objective_metrics() -> torchmetrics.MetricCollection:
    """The per-split metrics of the objective: ``ns_accuracy``."""
    return torchmetrics.MetricCollection({"ns_accuracy": ObjectiveAccuracy()})


def objective_sums(network: nn.Module, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Per row of ``x`` ``(N, T)``: ``(N, 4)`` float64 of the summed loss in nats, right-side scores, scored logits
    and positives of ``network.objective``, drawn from a generator seeded by ``seed`` (the same figures every time),
    in eval mode without gradients."""
    generator = torch.Generator().manual_seed(seed)
    net = cast("Word2Vec", network)
    net.eval()
    out = torch.zeros(len(x), 4, dtype=torch.float64)
    with torch.inference_mode():
        for row in range(len(x)):
            logits = net.objective(x[row : row + 1], generator)
            right, scored = right_sides(logits)
            out[row] = torch.tensor([float(per_positive(logits).sum()), float(right), float(scored), len(logits)])
    return out


class EmbeddingModule(SupervisedModule):
    """:class:`~pipelines.training.module.SupervisedModule` for word2vec: the summed objective, the linear decay of
    ``lr``, and ``val_analogy_accuracy`` (module docstring).

    Shapes: batches ``(x (B, T) word ids, y (B,) zeros)``; :meth:`step_outputs` gives the negative-sampling logits
    ``(P, 1 + K)`` of the batch's ``P`` positives.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._positives = 1

    def step_outputs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = cast("Word2Vec", self.network).objective(x)
        self._positives = len(logits)
        return logits

    def training_step(self, batch, batch_idx):
        # the mean per positive is logged; its sum over the batch is what word2vec's per-pair SGD descends
        return super().training_step(batch, batch_idx) * self._positives

    def configure_optimizers(self):
        optimizer = super().configure_optimizers()
        floor = cast("EmbeddingOptions", self.task.settings).min_lr_ratio
        trainer = self._trainer
        steps = max(int(trainer.estimated_stepping_batches), 1) if trainer is not None else 1

        def decay(step: int) -> float:
            return max(floor, 1.0 - step / steps)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_validation_epoch_end(self) -> None:
        if self._trainer is not None and self._trainer.sanity_checking:
            return
        from pipelines.tasks.embedding import analogy_accuracy

        vectors = cast("Word2Vec", self.network).vectors.detach().float().cpu().numpy()
        right = analogy_accuracy(vectors, cast("Embedding", self.task).analogy_questions["even"])
        value = float(right.mean()) if len(right) else 0.0
        self.log("val_analogy_accuracy", value, on_step=False, on_epoch=True, prog_bar=True)
