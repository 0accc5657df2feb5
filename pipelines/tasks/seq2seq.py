"""``seq2seq``: a source sequence to a target sequence, translation here (notes 000 "Seq to Seq": ① Encoder-Decoder
(BLEU Score) ② Attention ③ Transformer; notes 002 "Translating a sentence from one lang. to another").

Inputs ``(N, S)`` and targets ``(N, T)`` int64 token ids (:mod:`pipelines.data.preparers.translation`); the network
(:mod:`models.seq2seq`) gives next-token logits ``(N, T - 1, V)`` under teacher forcing
(:class:`pipelines.training.seq2seq.Seq2SeqModule`), and decodes greedily or by beam search.

Metrics:

- per split, teacher-forced: ``token_accuracy`` (the headline) and ``perplexity`` ``exp(H)`` of the mean
  cross-entropy ``H`` over the real target tokens; the error of the bias/variance verdict is ``1 - token_accuracy``;
- per validation epoch, ``val_bleu`` of greedy translations against the target ids, where an unknown word is
  :data:`UNMATCHED` (it matches nothing, not even an ``[UNK]`` in the translation);
- on the test pairs (``evaluate``), the field's standard: corpus BLEU (primary) and chrF with ``sacrebleu`` (Post
  2018), of beam-search (``bleu``, ``chrf``) and greedy (``bleu_greedy``, ``chrf_greedy``) translations against the
  true references (``sentences.json``, no ``[UNK]``). Each distinct English sentence is translated once and scored
  against every one of its references (Tatoeba gives many sentences several translations).

``evaluate`` also writes the attention of the first test sentences as heatmaps (source by target, for a network
that returns its attention weights), and a table of test translations with their references (``translations.csv``,
and in the report). Served (:meth:`serve`): raw English in, the greedy French translation out.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, ClassVar, cast

from pydantic import BaseModel, ConfigDict, Field

from pipelines.tasks.base import Evaluation, Task

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    import torchmetrics
    from torch import nn

    from models.seq2seq.core import EncoderDecoder
    from pipelines.data.catalog import DatasetEntry

#: The target ids that are not words (padding, [BOS], [EOS]); [UNK] stays in a translation.
_SPECIAL = {"[PAD]", "[BOS]", "[EOS]"}
#: How an unknown word of a reference made from target ids is written: no translation contains it.
UNMATCHED = "\u2047"


class Seq2SeqOptions(BaseModel):
    """``task_options`` of a ``seq2seq`` experiment: decoding and what ``evaluate`` shows."""

    model_config = ConfigDict(extra="forbid")

    beam_size: int = Field(4, ge=1, le=32, description="beams of the test translations (1: greedy)")
    length_penalty: float = Field(
        1.0, ge=0, le=2, description="beam search ranks finished beams by log p / length ** length_penalty"
    )
    val_bleu_samples: int = Field(500, ge=0, description="validation pairs decoded for the per-epoch val_bleu")
    heatmaps: int = Field(6, ge=0, le=20, description="test sentences whose attention is drawn")
    table_rows: int = Field(20, ge=0, le=200, description="test translations listed with their references")


class Seq2Seq(Task):
    """Sequence to sequence, ranked by test BLEU of beam-search translations (higher first)."""

    name: ClassVar[str] = "seq2seq"
    description: ClassVar[str] = "a source token sequence to a target one (translation)"
    losses: ClassVar[tuple[str, ...]] = ("ce",)
    metrics: ClassVar[tuple[str, ...]] = ("token_accuracy", "perplexity")
    headline: ClassVar[str] = "token_accuracy"
    primary: ClassVar[str] = "bleu"
    higher_is_better: ClassVar[bool] = True
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"perplexity"})
    summary: ClassVar[tuple[str, ...]] = ("bleu", "chrf", "bleu_greedy", "token_accuracy", "perplexity")
    error_unit: ClassVar[str] = "token error rate (teacher-forced)"
    augmentable: ClassVar[bool] = False
    module: ClassVar[str] = "pipelines.training.seq2seq:Seq2SeqModule"
    meta_keys: ClassVar[tuple[str, ...]] = ("dataset", "source_vocab", "target_vocab", "sentences")
    options: ClassVar[type[BaseModel] | None] = Seq2SeqOptions

    @classmethod
    def monitors(cls) -> frozenset[str]:
        """The teacher-forced metrics, and ``val_bleu``: greedy decoding, logged after each validation epoch."""
        return super().monitors() | {"val_bleu"}

    @classmethod
    def dataset_problem(cls, entry: DatasetEntry) -> str | None:
        if entry.modality != "text_pair":
            return f"dataset {entry.name!r} holds {entry.modality} data; a seq2seq task reads source-target pairs"
        return None

    @property
    def num_outputs(self) -> int:
        """One logit per target token."""
        return len(self.meta["target_vocab"])

    def loss(self, name: str, huber_delta: float = 1.0) -> nn.Module:
        """``ce``: the mean cross-entropy over the real target tokens (:class:`~pipelines.training.seq2seq.
        TokenCrossEntropy`)."""
        if name not in self.losses:
            raise ValueError(f"unknown seq2seq loss {name!r}; use one of {', '.join(self.losses)}")
        from pipelines.training.seq2seq import TokenCrossEntropy

        return TokenCrossEntropy()

    def loss_targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The next tokens ``y[:, 1:]`` that the teacher-forced logits predict."""
        return y[:, 1:].long()

    def metric_targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y[:, 1:].long()

    def build_metrics(self, full: bool = True) -> torchmetrics.MetricCollection:
        from pipelines.training.seq2seq import token_metrics

        return token_metrics(full)

    def headline_sum(self, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each pair's share of right next tokens, summed."""
        target = y[:, 1:]
        real = target != 0
        right = (outputs.argmax(dim=-1) == target) & real
        return (right.sum(dim=1) / real.sum(dim=1).clamp(min=1)).sum()

    # ------------------------------------------------------------------------------- outputs and metrics

    def compute_outputs(self, network: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Teacher-forced, per target token ``(N, T - 1, 2)``: the log-probability of the true token, and the most
        likely token's id (the ``(N, T - 1, V)`` logits of a whole split would not fit in memory)."""
        import torch

        rows = []
        with torch.no_grad():
            for start in range(0, len(x), 512):
                logits = network(x[start : start + 512], y[start : start + 512, :-1]).float()
                target = y[start : start + 512, 1:].long()
                logp = logits.log_softmax(dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
                rows.append(torch.stack([logp, logits.argmax(dim=-1).float()], dim=-1))
        return torch.cat(rows)

    def split_metrics(self, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """``token_accuracy``, ``perplexity`` and ``nats`` over the real target tokens, from logits ``(N, T - 1, V)``
        or :meth:`compute_outputs`' summary."""
        target = y[:, 1:].long()
        real = target != 0
        if outputs.shape[-1] == 2 and self.num_outputs != 2:
            logp, ids = outputs[..., 0], outputs[..., 1].long()
        else:
            logits = outputs.float()
            logp = logits.log_softmax(dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
            ids = logits.argmax(dim=-1)
        count = real.sum().clamp(min=1)
        nats = float(-(logp * real).sum() / count)
        accuracy = float(((ids == target) & real).sum() / count)
        return {"token_accuracy": accuracy, "perplexity": math.exp(nats), "nats": nats}

    def error(self, metrics: dict[str, float]) -> float:
        return 1.0 - metrics["token_accuracy"]

    # ------------------------------------------------------------------------------- text and BLEU

    def texts(self, tokens: torch.Tensor, unknown: str = "[UNK]") -> list[str]:
        """Target ids ``(N, L)`` -> space-joined tokens, up to the first ``[EOS]`` (specials dropped, ``[UNK]``
        written as ``unknown``): the normalised form of the references."""
        vocab = list(self.meta["target_vocab"])
        vocab[1] = unknown
        out = []
        for row in tokens.long().tolist():
            words = []
            for token in row:
                word = vocab[token]
                if word == "[EOS]":
                    break
                if word not in _SPECIAL:
                    words.append(word)
            out.append(" ".join(words))
        return out

    def source_texts(self, x: torch.Tensor) -> list[list[str]]:
        """Source ids ``(N, S)`` -> their tokens, padding dropped (the rows and columns of a heatmap)."""
        vocab = self.meta["source_vocab"]
        return [[vocab[t] for t in row if t != 0] for row in x.long().tolist()]

    @staticmethod
    def corpus_scores(hypotheses: list[str], references: list[str] | list[list[str]]) -> dict[str, float]:
        """Corpus ``bleu`` and ``chrf`` (sacrebleu, 0-100) of ``hypotheses`` against one reference each, or a list
        of references each (any number per hypothesis)."""
        import sacrebleu

        refs = [[r] if isinstance(r, str) else list(r) for r in references]
        width = max((len(r) for r in refs), default=1)
        streams = [[r[k] if k < len(r) else None for r in refs] for k in range(width)]
        return {
            "bleu": sacrebleu.corpus_bleu(hypotheses, streams, force=True).score,  # type: ignore[arg-type]
            "chrf": sacrebleu.corpus_chrf(hypotheses, streams).score,  # type: ignore[arg-type]
        }

    # ------------------------------------------------------------------------------- evaluation

    def _references(self) -> dict[str, Any]:
        """The test pairs of ``sentences.json`` (normalised sources and their true references)."""
        from pipelines.data.prepared import PREPARED_ROOT

        path = PREPARED_ROOT / str(self.meta["dataset"]) / str(self.meta["sentences"])
        return json.loads(path.read_text())["test"]

    def evaluate(self, evaluation: Evaluation) -> None:
        """Test BLEU and chrF of beam and greedy translations of each distinct source, against all its references;
        the attention heatmaps; the table of translations; ``predictions.png`` (token accuracy by position)."""
        evaluation.figures["predictions.png"] = self.prediction_figure(evaluation)
        if evaluation.network is None:
            return
        import numpy as np
        import torch

        from models.seq2seq.core import beam_search, greedy_decode

        network, settings = cast("EncoderDecoder", evaluation.network), cast(Seq2SeqOptions, self.settings)
        test = evaluation.splits["test"]
        sentences = self._references()
        _, first, inverse = np.unique(test.x.numpy(), axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        references: list[list[str]] = [[] for _ in first]
        for row, group in enumerate(inverse):
            references[group].append(sentences["target"][row])
        sources = test.x[torch.as_tensor(first)]
        max_len = network.max_decode_len
        with torch.no_grad():
            greedy = torch.cat(
                [greedy_decode(network, sources[i : i + 512], max_len).tokens for i in range(0, len(sources), 512)]
            )
            beam = torch.cat(
                [
                    beam_search(network, sources[i : i + 256], settings.beam_size, max_len, settings.length_penalty)
                    for i in range(0, len(sources), 256)
                ]
            )
        greedy_texts, beam_texts = self.texts(greedy), self.texts(beam)
        scores = self.corpus_scores(beam_texts, references)
        greedy_scores = self.corpus_scores(greedy_texts, references)
        evaluation.test_metrics |= {
            "bleu": scores["bleu"],
            "chrf": scores["chrf"],
            "bleu_greedy": greedy_scores["bleu"],
            "chrf_greedy": greedy_scores["chrf"],
            "test_sources": float(len(sources)),
        }
        order = np.argsort(first)  # the table and heatmaps follow the test file's order
        rows = [
            {
                "source": sentences["source"][first[k]],
                "references": " | ".join(references[k]),
                "beam": beam_texts[k],
                "greedy": greedy_texts[k],
            }
            for k in order[: settings.table_rows]
        ]
        evaluation.tables["translations.csv"] = _csv(rows)
        evaluation.report["translations"] = rows
        evaluation.details["decoding"] = {"beam_size": settings.beam_size, "length_penalty": settings.length_penalty}
        if settings.heatmaps:
            picked = torch.as_tensor(first[order[: settings.heatmaps]])
            with torch.no_grad():
                decoded = greedy_decode(network, test.x[picked], max_len)
            if decoded.attention is not None:
                for k, figure in enumerate(self.attention_figures(test.x[picked], decoded)):
                    evaluation.figures[f"attention_{k + 1}.png"] = figure

    def attention_figures(self, x: torch.Tensor, decoded) -> list:
        """One heatmap per sentence: the attention weight of each output token (rows) on each source token
        (columns), up to the output's ``[EOS]``."""
        from pipelines import plots

        figures = []
        sources = self.source_texts(x)
        vocab = self.meta["target_vocab"]
        for row, source in enumerate(sources):
            tokens = decoded.tokens[row].tolist()
            length = tokens.index(3) + 1 if 3 in tokens else len(tokens)
            outputs = [vocab[t] for t in tokens[:length]]
            start = x.shape[1] - len(source)  # the sources are left-padded: the real tokens are the last ones
            weights = decoded.attention[row, :length, start:].numpy()
            fig, ax = plots.plt.subplots(figsize=(1 + 0.5 * len(source), 1 + 0.4 * len(outputs)))
            ax.imshow(weights, cmap="viridis", vmin=0, vmax=1, aspect="auto")
            ax.set_xticks(range(len(source)), source, rotation=60, ha="right")
            ax.set_yticks(range(len(outputs)), outputs)
            ax.set(xlabel="source (English)", ylabel="output (French)", title="attention weights")
            fig.tight_layout()
            figures.append(fig)
        return figures

    def prediction_figure(self, evaluation: Evaluation):
        """Teacher-forced test token accuracy by target position (later tokens depend on a longer prefix)."""
        import numpy as np

        from pipelines import plots

        test = evaluation.splits["test"]
        target = test.y[:, 1:].numpy()
        ids = test.outputs[..., 1].numpy() if test.outputs.shape[-1] == 2 else test.outputs.argmax(-1).numpy()
        real = target != 0
        right = (ids == target) & real
        counts = real.sum(axis=0)
        shown = counts > 0
        fig, ax = plots.plt.subplots(figsize=(6, 4))
        ax.plot(np.flatnonzero(shown) + 1, right.sum(axis=0)[shown] / counts[shown], marker="o")
        ax.set(xlabel="target position", ylabel="token accuracy", ylim=(0, 1), title="Test: teacher-forced")
        fig.tight_layout()
        return fig

    @classmethod
    def report_section(cls, experiment: str, evaluation: dict[str, Any]) -> list[str]:
        """The table of test translations (``report.translations``) as Markdown."""
        rows = (evaluation.get("report") or {}).get("translations") or []
        if not rows:
            return []
        lines = [
            f"### `{experiment}`: test translations",
            "",
            "| English | references | beam | greedy |",
            "|---|---|---|---|",
        ]
        lines += [f"| {r['source']} | {r['references']} | {r['beam']} | {r['greedy']} |" for r in rows]
        return lines + [""]

    # ------------------------------------------------------------------------------- serving

    def serve(self, outputs: torch.Tensor) -> dict[str, np.ndarray]:
        """Greedy target ids ``(N, L)`` (the network's ``forward(src)``) -> ``translation``, one string each."""
        import numpy as np

        return {"translation": np.array(self.texts(outputs.round().long()), dtype=object)}


def _csv(rows: list[dict[str, str]]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["source"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


TASK = Seq2Seq
