"""Training an encoder-decoder (the ``seq2seq`` task, :mod:`pipelines.tasks.seq2seq`): teacher forcing, the token
loss and metrics, and a validation BLEU per epoch.

Teacher forcing (Williams & Zipser 1989; Sutskever et al. 2014): the decoder reads the true previous target tokens
``y[:, :-1]`` and is scored against ``y[:, 1:]``, so one forward pass trains every step. Padding is neither scored nor
counted. At inference the decoder reads its own outputs (:func:`models.seq2seq.core.greedy_decode`), so the
validation BLEU, computed after each validation epoch on greedy translations of the first
``task_options.val_bleu_samples`` validation pairs, measures what training does not: decoding without the true prefix.
Its references are the target ids, so a word outside the vocabulary is unknown there; it is written as
:data:`~pipelines.tasks.seq2seq.UNMATCHED`, which no translation contains (the test BLEU reads the true references).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
import torchmetrics
from torch import nn

from models.seq2seq.core import PAD_ID, greedy_decode
from pipelines.tasks.seq2seq import UNMATCHED
from pipelines.training.module import SupervisedModule

if TYPE_CHECKING:  # pragma: no cover
    from models.seq2seq.core import EncoderDecoder
    from pipelines.tasks.seq2seq import Seq2Seq, Seq2SeqOptions


class TokenCrossEntropy(nn.Module):
    """The mean cross-entropy in nats over the real (non-padding) target tokens: logits ``(N, T, V)``, targets
    ``(N, T)`` int64 -> a scalar."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1).long(), ignore_index=PAD_ID
        )


class TokenAccuracy(torchmetrics.Metric):
    """The share of real target tokens whose most likely prediction is right (teacher-forced). Logits ``(N, T, V)``
    or predicted ids ``(N, T)``, targets ``(N, T)``; padding targets are skipped."""

    higher_is_better = True
    full_state_update = False
    correct: torch.Tensor
    total: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        ids = preds.argmax(dim=-1) if preds.ndim == target.ndim + 1 else preds
        real = target != PAD_ID
        self.correct += ((ids == target) & real).sum()
        self.total += real.sum()

    def compute(self) -> torch.Tensor:
        return self.correct / self.total.clamp(min=1)


def token_metrics(full: bool = True) -> torchmetrics.MetricCollection:
    """``token_accuracy`` (and ``perplexity``, torchmetrics' over the real tokens, when ``full``)."""
    from torchmetrics.text import Perplexity

    metrics: dict[str, torchmetrics.Metric] = {"token_accuracy": TokenAccuracy()}
    if full:
        metrics["perplexity"] = Perplexity(ignore_index=PAD_ID)
    return torchmetrics.MetricCollection(metrics)  # type: ignore[arg-type]


class Seq2SeqModule(SupervisedModule):
    """:class:`~pipelines.training.module.SupervisedModule` with teacher forcing, and the validation BLEU.

    Everything else is the supervised module's (loss + penalty, the once-per-epoch train statistics, metrics,
    optimizer, checkpoints). The task's settings (:class:`pipelines.tasks.seq2seq.Seq2SeqOptions`) set how many
    validation pairs the per-epoch BLEU decodes.

    Shapes: batches ``(x (N, S), y (N, T))``; :meth:`step_outputs` gives logits ``(N, T - 1, V)``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hypotheses: list[str] = []
        self._references: list[str] = []

    def step_outputs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.network(x, y[:, :-1])

    def validation_step(self, batch, batch_idx):
        loss = super().validation_step(batch, batch_idx)
        wanted = cast("Seq2SeqOptions", self.task.settings).val_bleu_samples - len(self._hypotheses)
        if wanted > 0:
            x, y = batch
            network, task = cast("EncoderDecoder", self.network), cast("Seq2Seq", self.task)
            decoded = greedy_decode(network, x[:wanted], network.max_decode_len).tokens
            self._hypotheses += task.texts(decoded)
            self._references += task.texts(y[:wanted, 1:], unknown=UNMATCHED)
        return loss

    def on_validation_epoch_end(self) -> None:
        if self._hypotheses:
            bleu = cast("Seq2Seq", self.task).corpus_scores(self._hypotheses, self._references)["bleu"]
            self.log("val_bleu", bleu, on_step=False, on_epoch=True, prog_bar=True)
        self._hypotheses, self._references = [], []
