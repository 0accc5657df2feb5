"""``language_model``: the next character at every step (notes 002, "TYPES OF RNN": one-to-many, a seed -> a
generated sequence; "BACK-PROPAGATION THRU TIME"; Karpathy's char-rnn).

Inputs and targets are int64 chunks ``(N, T)`` of character ids, the targets the inputs shifted by one character
(:mod:`pipelines.data.preparers.chars`); the network's outputs are logits ``(N, T, V)`` over the dataset's
``vocab``. Training carries the recurrent state from one chunk to the next along ``B`` parallel streams of the text
and cuts the gradient between chunks: truncated back-propagation through time
(:class:`pipelines.training.language_model.LanguageModule` over :class:`pipelines.data.streams.StreamDataModule`).

Metrics, all from the mean cross-entropy ``H`` of the next character in nats: ``bits_per_char`` ``H / ln 2``
(primary, lower is better) and ``perplexity`` ``exp(H)``; ``<split>_loss`` is ``H`` itself. The error of the
bias/variance verdict is bits per character.

A split's outputs for ``evaluate`` (:meth:`LanguageModel.compute_outputs`) are not the ``(N, T, V)`` logits
(260 MB for the million characters of the train split) but each character's cross-entropy in nats ``(N, T)``,
computed along parallel streams with the state carried, as in training; :meth:`split_metrics` and
:meth:`evaluate` read either form. ``evaluate`` adds ``predictions.png`` (bits per character by position in the
chunk, and for the most frequent characters) and 500-character samples from a seed text at temperatures 0.5 and
1.0, seeded (the same seed gives the same text), logged as ``evaluation/samples.txt`` and shown in the report.

Served (:meth:`serve`): raw text in (the last ``T`` characters are read), the most likely next character out with
its probability and the runners-up.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from pipelines.tasks.base import Evaluation, Task

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    import torchmetrics
    from torch import nn

    from pipelines.data.catalog import DatasetEntry

#: The samples ``evaluate`` draws: their seed text, length in characters, temperatures and RNG seed.
SAMPLE_SEED_TEXT = "ROMEO:\n"
SAMPLE_LENGTH = 500
SAMPLE_TEMPERATURES = (0.5, 1.0)
SAMPLE_SEED = 0
#: Runners-up shown by :meth:`LanguageModel.serve` after the most likely next character.
SERVE_ALTERNATIVES = 4


class LanguageModel(Task):
    """A character-level language model, ranked by test bits per character (lower first)."""

    name: ClassVar[str] = "language_model"
    description: ClassVar[str] = "the next character at every step of a text"
    losses: ClassVar[tuple[str, ...]] = ("ce",)
    metrics: ClassVar[tuple[str, ...]] = ("bits_per_char", "perplexity")
    headline: ClassVar[str] = "bits_per_char"
    primary: ClassVar[str] = "bits_per_char"
    higher_is_better: ClassVar[bool] = False
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"bits_per_char", "perplexity"})
    summary: ClassVar[tuple[str, ...]] = ("bits_per_char", "perplexity")
    error_unit: ClassVar[str] = "bits per character"
    augmentable: ClassVar[bool] = False
    module: ClassVar[str] = "pipelines.training.language_model:LanguageModule"
    datamodule: ClassVar[str] = "pipelines.data.streams:StreamDataModule"

    @classmethod
    def dataset_problem(cls, entry: DatasetEntry) -> str | None:
        if entry.modality != "chars":
            return f"dataset {entry.name!r} holds {entry.modality} data; a language model reads characters"
        return None

    @property
    def vocab(self) -> list[str]:
        """The characters, symbol id order (``meta['vocab']``)."""
        return list(self.meta["vocab"])

    @property
    def num_outputs(self) -> int:
        """One logit per symbol of the vocabulary."""
        return int(self.meta["vocab_size"])

    def loss(self, name: str, huber_delta: float = 1.0) -> nn.Module:
        """``ce``: the mean cross-entropy of the next character over every step,
        :class:`pipelines.training.language_model.SequenceCrossEntropy`."""
        if name not in self.losses:
            raise ValueError(f"unknown language_model loss {name!r}; use one of {', '.join(self.losses)}")
        from pipelines.training.language_model import SequenceCrossEntropy

        return SequenceCrossEntropy()

    def loss_targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y.long()

    def build_metrics(self, full: bool = True) -> torchmetrics.MetricCollection:
        """``bits_per_char`` and ``perplexity`` (torchmetrics' ``Perplexity`` over the logits ``(N, T, V)`` and
        targets ``(N, T)``; one shared state)."""
        from pipelines.training.language_model import character_metrics

        return character_metrics(full)

    def nats(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each character's cross-entropy in nats ``(N, T)``: from logits ``(N, T, V)``, or ``outputs`` itself when
        it already is that (:meth:`compute_outputs`)."""
        import torch.nn.functional as F

        if outputs.ndim == y.ndim:
            return outputs.float()
        return F.cross_entropy(outputs.float().transpose(1, -1), y.long(), reduction="none").transpose(1, -1)

    def headline_sum(self, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.nats(outputs, y).flatten(1).mean(dim=1).sum() / math.log(2)

    def compute_outputs(self, network: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each character's cross-entropy in nats ``(N, T)``, in chunk order, with the state carried along parallel
        streams (:func:`pipelines.training.language_model.stream_nats`)."""
        from pipelines.training.language_model import stream_nats

        return stream_nats(network, x, y)

    def split_metrics(self, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """``bits_per_char``, ``perplexity`` and ``nats`` (the mean cross-entropy) of one split; ``outputs`` are
        logits ``(N, T, V)`` or the per-character nats ``(N, T)``."""
        nats = float(self.nats(outputs, y).double().mean())
        return {"bits_per_char": nats / math.log(2), "perplexity": math.exp(nats), "nats": nats}

    def error(self, metrics: dict[str, float]) -> float:
        return metrics["bits_per_char"]

    # ------------------------------------------------------------------------------------------ evaluation

    def evaluate(self, evaluation: Evaluation) -> None:
        """``predictions.png`` and, when ``evaluation.network`` is given, the seeded samples (``samples.txt`` and the
        report's ``samples``)."""
        evaluation.figures["predictions.png"] = self.prediction_figure(evaluation)
        if evaluation.network is None:
            return
        from pipelines.training.language_model import sample

        samples = [
            {
                "temperature": t,
                "seed_text": SAMPLE_SEED_TEXT,
                "seed": SAMPLE_SEED,
                "text": sample(evaluation.network, self.vocab, SAMPLE_SEED_TEXT, SAMPLE_LENGTH, t, SAMPLE_SEED),
            }
            for t in SAMPLE_TEMPERATURES
        ]
        evaluation.tables["samples.txt"] = "".join(
            f"--- temperature {s['temperature']}, seed {s['seed']}, from {s['seed_text']!r} ---\n"
            f"{s['seed_text']}{s['text']}\n\n"
            for s in samples
        )
        evaluation.report["samples"] = samples

    def prediction_figure(self, evaluation: Evaluation, characters: int = 20):
        """Test bits per character by position in the chunk (flat when the carried state serves every position)
        and for the ``characters`` most frequent target characters."""
        import numpy as np

        from pipelines import plots

        test = evaluation.splits["test"]
        bits = (self.nats(test.outputs, test.y) / math.log(2)).numpy()
        targets = test.y.numpy()
        fig, (left, right) = plots.plt.subplots(1, 2, figsize=(11, 4))
        left.plot(np.arange(bits.shape[1]), bits.mean(axis=0), linewidth=1)
        left.axhline(bits.mean(), color="grey", linestyle="--", linewidth=1, label=f"mean {bits.mean():.3f}")
        left.set(xlabel="position in the chunk", ylabel="bits per character", title="Test: by position")
        left.legend()
        counts = np.bincount(targets.ravel(), minlength=self.num_outputs)
        top = np.argsort(-counts, kind="stable")[:characters]
        means = [bits[targets == k].mean() for k in top]
        right.bar(range(len(top)), means)
        right.set_xticks(range(len(top)), ["space" if self.vocab[k] == " " else repr(self.vocab[k])[1:-1] for k in top])
        right.set(ylabel="bits per character", title=f"Test: the {len(top)} most frequent next characters")
        fig.tight_layout()
        return fig

    @classmethod
    def report_section(cls, experiment: str, evaluation: dict[str, Any]) -> list[str]:
        """The samples of ``evaluate`` (``metrics/evaluate/<experiment>.json``'s ``report.samples``) as Markdown."""
        samples = (evaluation.get("report") or {}).get("samples") or []
        if not samples:
            return []
        lines = [f"### `{experiment}`: samples", ""]
        for s in samples:
            lines += [
                f"Temperature {s['temperature']}, seed {s['seed']}, from {s['seed_text']!r}:",
                "",
                "```text",
                s["seed_text"] + s["text"],
                "```",
                "",
            ]
        return lines

    # ------------------------------------------------------------------------------------------ serving

    def serve(self, outputs: torch.Tensor) -> dict[str, np.ndarray]:
        """Logits ``(N, T, V)`` of the served context -> after its last character: ``next_char`` (the most likely
        one), its ``probability``, and ``alternatives``, the next :data:`SERVE_ALTERNATIVES` as text
        (``'e' 0.12, ' ' 0.08, ...``)."""
        import numpy as np

        probs = outputs[:, -1].float().softmax(dim=-1)
        top = probs.topk(SERVE_ALTERNATIVES + 1, dim=-1)
        vocab = self.vocab
        chars = [[vocab[k] for k in row] for row in top.indices.tolist()]
        values = top.values.tolist()
        return {
            "next_char": np.array([row[0] for row in chars], dtype=object),
            "probability": top.values[:, 0].numpy(),
            "alternatives": np.array(
                [", ".join(f"{c!r} {p:.3f}" for c, p in zip(row[1:], vs[1:])) for row, vs in zip(chars, values)],
                dtype=object,
            ),
        }


TASK = LanguageModel
