"""``embedding``: word vectors learnt from unlabelled text (notes 002 "EMBEDDINGS": "WORD2VEC", CBOW and skip-gram;
notes 004 "Word Embedding").

Inputs are rows of word ids ``(N, T)`` of a corpus (:mod:`pipelines.data.preparers.corpus`); there are no labels.
The network (``word2vec``, :mod:`models.embedding.word2vec`) scores each batch of text with negative sampling,
``(P, 1 + K)`` logits of one positive and ``K`` noise words (:meth:`~models.embedding.word2vec.Word2Vec.objective`),
and the loss is the negative-sampling objective
(:class:`pipelines.training.embedding.NegativeSamplingLoss`), trained by
:class:`pipelines.training.embedding.EmbeddingModule`.

Metrics:

- per split, of the objective: ``ns_loss`` (nats per positive) and ``ns_accuracy`` (the share of the positive and
  noise words the scores put on the right side of 0; the headline); ``evaluate`` reads the first
  ``task_options.eval_rows`` rows of each split with a seeded generator, so the figures repeat;
- the word vectors themselves, on the sets gensim ships (``gensim.test.utils.datapath``; nothing is downloaded):
  ``analogy_accuracy`` (primary) on Mikolov et al.'s ``questions-words.txt``, 3CosAdd over the in-vocabulary
  questions, as gensim's ``evaluate_word_analogies`` scores them (:func:`analogy_accuracy`), and
  ``wordsim_spearman``, Spearman's rho of cosine similarities against WordSim-353's human ratings over the
  in-vocabulary pairs (:func:`similarity_spearman`). ``val_analogy_accuracy``, logged after each validation epoch
  for checkpointing and tuning, reads the even-numbered questions only: there is no held-out analogy set, so the
  test figure shares half its questions with it, and ``analogy_accuracy_odd`` reports the other half alone.

``evaluate`` trains gensim's ``Word2Vec`` on the same train rows with the same mode, dimensions, window, noise
words, subsampling and epochs, and scores both the same way (``gensim_*`` test metrics, a table in the report with
both training times). It also writes the nearest neighbours of probe words, a 2-D PCA (scikit-learn) of 200
frequent words, the accuracy per analogy section (``analogies.png``), the objective per split (``predictions.png``)
and the vectors in the word2vec text format (``vectors.txt``). Served (:meth:`serve`): raw text in, the mean vector of its words out.
"""

from __future__ import annotations

import json
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, cast

from pydantic import BaseModel, ConfigDict, Field

from pipelines.tasks.base import Evaluation, Task

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    import torchmetrics
    from torch import nn

    from pipelines.data.catalog import DatasetEntry

#: The evaluation sets of gensim's test data.
ANALOGIES, WORD_PAIRS = "questions-words.txt", "wordsim353.tsv"
#: Probe words whose nearest neighbours ``evaluate`` lists (frequent in movie reviews).
PROBES = ("good", "bad", "great", "boring", "funny", "movie", "actor", "music", "horror", "love", "man", "woman")
#: ``gensim_seconds`` and friends in the report table; the ids that are not words.
_SPECIAL = {"[PAD]", "[UNK]"}


class EmbeddingOptions(BaseModel):
    """``task_options`` of an ``embedding`` experiment: the learning-rate schedule, and what ``evaluate`` runs."""

    model_config = ConfigDict(extra="forbid")

    min_lr_ratio: float = Field(
        1e-4, gt=0, le=1, description="the lr decays linearly to lr * min_lr_ratio over training (word2vec.c, gensim)"
    )
    eval_rows: int = Field(200, ge=1, description="rows of each split whose objective evaluate scores")
    neighbours: int = Field(8, ge=1, le=50, description="nearest neighbours listed per probe word")
    projected_words: int = Field(200, ge=10, le=1000, description="frequent words in the PCA plot")
    skip_frequent: int = Field(50, ge=0, description="the most frequent words (mostly function words) left out of it")
    gensim: bool = Field(True, description="train gensim's Word2Vec on the same rows and compare")
    gensim_workers: int = Field(
        1, ge=1, le=64, description="gensim's threads (1: its result repeats exactly; more are faster, not exact)"
    )


def read_analogies(vocab: dict[str, int]) -> list[tuple[str, list[tuple[int, int, int, int]]]]:
    """Mikolov et al.'s analogy questions ``a : b :: c : d`` (gensim's ``questions-words.txt``), lower-cased, by
    section: ``[(section, [(a, b, c, d) ids])]``, in file order, keeping the questions whose four words are all in
    ``vocab`` (word -> id), as gensim's ``evaluate_word_analogies`` does. Each question carries its line number's
    parity in file order through :func:`analogy_halves`."""
    from gensim.test.utils import datapath

    sections: list[tuple[str, list[tuple[int, int, int, int]]]] = []
    with open(datapath(ANALOGIES), encoding="utf-8") as file:
        for line in file:
            if line.startswith(":"):
                sections.append((line[1:].strip(), []))
                continue
            words = line.lower().split()
            if sections and len(words) == 4 and all(w in vocab for w in words):
                sections[-1][1].append(cast("tuple[int, int, int, int]", tuple(vocab[w] for w in words)))
    return sections


def analogy_accuracy(vectors: np.ndarray, questions: np.ndarray, batch: int = 1024) -> np.ndarray:
    """3CosAdd (Mikolov et al. 2013, gensim's ``most_similar(positive=[b, c], negative=[a])``): for each question
    ``(a, b, c, d)`` of ``questions`` ``(Q, 4)`` ids, whether the word nearest by cosine to ``b - a + c`` (of unit
    vectors), other than ``a``, ``b`` and ``c``, is ``d``. ``vectors`` ``(V, d)``; rows of zeros (padding) are never
    answers. Returns bool ``(Q,)``."""
    import numpy as np

    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors, dtype=np.float32), where=norms > 0)
    right = np.zeros(len(questions), dtype=bool)
    for start in range(0, len(questions), batch):
        q = questions[start : start + batch]
        query = unit[q[:, 1]] - unit[q[:, 0]] + unit[q[:, 2]]
        scores = query @ unit.T
        scores[:, norms[:, 0] == 0] = -np.inf
        rows = np.arange(len(q))[:, None]
        scores[rows, q[:, :3]] = -np.inf
        right[start : start + batch] = scores.argmax(axis=1) == q[:, 3]
    return right


def similarity_spearman(vectors: np.ndarray, vocab: dict[str, int]) -> tuple[float, int, int]:
    """Spearman's rho between the cosine similarities of ``vectors`` and WordSim-353's human ratings (gensim's
    ``wordsim353.tsv``), over the pairs with both words in ``vocab``, as gensim's ``evaluate_word_pairs`` computes it.
    Returns ``(rho, pairs scored, pairs skipped)``; rho is NaN with fewer than 3 pairs."""
    import numpy as np
    from gensim.test.utils import datapath
    from scipy.stats import spearmanr

    ours, human, skipped = [], [], 0
    with open(datapath(WORD_PAIRS), encoding="utf-8") as file:
        for line in file:
            if line.startswith("#") or not line.strip():
                continue
            a, b, rating = line.lower().split("\t")[:3]
            if a not in vocab or b not in vocab:
                skipped += 1
                continue
            u, v = vectors[vocab[a]], vectors[vocab[b]]
            ours.append(float(u @ v / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-12)))
            human.append(float(rating))
    rho = float(spearmanr(ours, human).statistic) if len(ours) >= 3 else float("nan")
    return rho, len(ours), skipped


def analogy_halves(sections: list[tuple[str, list[tuple[int, int, int, int]]]]) -> dict[str, np.ndarray]:
    """The in-vocabulary questions ``(Q, 4)`` as ``all``, ``even`` (0th, 2nd, ... in file order: validation) and
    ``odd``."""
    import numpy as np

    rows = [q for _, questions in sections for q in questions]
    every = np.array(rows, dtype=np.int64).reshape(-1, 4)
    return {"all": every, "even": every[0::2], "odd": every[1::2]}


def nearest(vectors: np.ndarray, word: int, k: int) -> list[tuple[int, float]]:
    """The ``k`` ids nearest to ``word`` by cosine, itself and zero rows left out: ``[(id, cosine)]``."""
    import numpy as np

    norms = np.linalg.norm(vectors, axis=1)
    cos = vectors @ vectors[word] / np.maximum(norms * norms[word], 1e-12)
    cos[norms == 0] = -np.inf
    cos[word] = -np.inf
    top = np.argsort(-cos, kind="stable")[:k]
    return [(int(i), float(cos[i])) for i in top]


class Embedding(Task):
    """Word embeddings from a corpus, ranked by analogy accuracy (higher first)."""

    name: ClassVar[str] = "embedding"
    description: ClassVar[str] = "word vectors from unlabelled text (word2vec)"
    losses: ClassVar[tuple[str, ...]] = ("bce",)
    metrics: ClassVar[tuple[str, ...]] = ("ns_accuracy",)
    headline: ClassVar[str] = "ns_accuracy"
    primary: ClassVar[str] = "analogy_accuracy"
    higher_is_better: ClassVar[bool] = True
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"ns_loss"})
    summary: ClassVar[tuple[str, ...]] = (
        "analogy_accuracy",
        "wordsim_spearman",
        "gensim_analogy_accuracy",
        "gensim_wordsim_spearman",
        "ns_loss",
    )
    error_unit: ClassVar[str] = "negative-sampling loss (nats per positive)"
    augmentable: ClassVar[bool] = False
    module: ClassVar[str] = "pipelines.training.embedding:EmbeddingModule"
    meta_keys: ClassVar[tuple[str, ...]] = ("counts", "chunk_words")
    options: ClassVar[type[BaseModel] | None] = EmbeddingOptions

    @classmethod
    def monitors(cls) -> frozenset[str]:
        """The objective's metrics, and ``val_analogy_accuracy``, logged after each validation epoch."""
        return super().monitors() | {"val_analogy_accuracy"}

    @classmethod
    def dataset_problem(cls, entry: DatasetEntry) -> str | None:
        if entry.modality != "words":
            return f"dataset {entry.name!r} holds {entry.modality} data; an embedding task reads a word corpus"
        return None

    @cached_property
    def vocab(self) -> dict[str, int]:
        """Word -> id of the corpus's vocabulary (``meta['vocab']``), the special ids left out."""
        return {w: i for i, w in enumerate(self.meta["vocab"]) if w not in _SPECIAL}

    @cached_property
    def analogy_sections(self) -> list[tuple[str, list[tuple[int, int, int, int]]]]:
        """The in-vocabulary analogy questions by section (:func:`read_analogies`), read once per task."""
        return read_analogies(self.vocab)

    @cached_property
    def analogy_questions(self) -> dict[str, np.ndarray]:
        """:attr:`analogy_sections` as ``all``, ``even`` and ``odd`` arrays ``(Q, 4)`` (:func:`analogy_halves`)."""
        return analogy_halves(self.analogy_sections)

    @property
    def num_outputs(self) -> int:
        return 1

    def wrap_network(self, network: nn.Module) -> nn.Module:
        """The network with the corpus's train counts set (``meta['counts']``): subsampling and noise read them."""
        return network.use_counts(self.meta["counts"])  # type: ignore[operator]

    def loss(self, name: str, huber_delta: float = 1.0) -> nn.Module:
        """``bce``: negative sampling's objective is the binary cross-entropy of the logits of the positive (target 1)
        and of the noise words (target 0), summed per positive (:class:`pipelines.training.embedding.
        NegativeSamplingLoss`)."""
        if name not in self.losses:
            raise ValueError(f"unknown embedding loss {name!r}; use one of {', '.join(self.losses)}")
        from pipelines.training.embedding import NegativeSamplingLoss

        return NegativeSamplingLoss()

    def build_metrics(self, full: bool = True) -> torchmetrics.MetricCollection:
        from pipelines.training.embedding import objective_metrics

        return objective_metrics()

    def headline_sum(self, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch's ``ns_accuracy`` times its rows (what the supervised module divides by the rows)."""
        from pipelines.training.embedding import right_sides

        right, scored = right_sides(outputs)
        return right / scored.clamp(min=1) * len(y)

    # ------------------------------------------------------------------------------- outputs and metrics

    def compute_outputs(self, network: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per row of the first ``eval_rows``: ``(rows, 3)`` summed loss in nats, right-side scores and scored
        logits, with the positives' count, of the objective drawn from a generator seeded by the dataset's seed."""
        from pipelines.training.embedding import objective_sums

        rows = cast("EmbeddingOptions", self.settings).eval_rows
        return objective_sums(network, x[:rows], seed=int(self.meta.get("seed", 0)))

    def split_metrics(self, outputs: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """``ns_loss`` (nats per positive) and ``ns_accuracy`` of :meth:`compute_outputs`' sums."""
        loss, right, scored, positives = outputs.double().sum(dim=0).tolist()
        return {"ns_loss": loss / max(positives, 1), "ns_accuracy": right / max(scored, 1), "positives": positives}

    def error(self, metrics: dict[str, float]) -> float:
        return metrics["ns_loss"]

    # ------------------------------------------------------------------------------------------ evaluation

    def vector_scores(self, vectors: np.ndarray) -> dict[str, Any]:
        """The analogy and similarity scores of ``vectors`` ``(V, d)`` (ids of :attr:`vocab`): ``analogy_accuracy``
        (all), ``analogy_accuracy_odd``, ``val_analogy_accuracy`` (even), per-section accuracies,
        ``wordsim_spearman`` and the counts of questions and pairs scored."""
        right = analogy_accuracy(vectors, self.analogy_questions["all"])
        rho, pairs, skipped = similarity_spearman(vectors, self.vocab)
        per_section, start = {}, 0
        for section, questions in self.analogy_sections:
            if questions:
                per_section[section] = float(right[start : start + len(questions)].mean())
            start += len(questions)
        return {
            "analogy_accuracy": float(right.mean()) if len(right) else 0.0,
            "analogy_accuracy_odd": float(right[1::2].mean()) if len(right) > 1 else 0.0,
            "val_analogy_accuracy": float(right[0::2].mean()) if len(right) else 0.0,
            "analogy_questions": len(right),
            "wordsim_spearman": rho,
            "wordsim_pairs": pairs,
            "wordsim_skipped": skipped,
            "sections": per_section,
        }

    def evaluate(self, evaluation: Evaluation) -> None:
        """``predictions.png``, and with ``evaluation.network`` the word-vector scores, gensim's on the same rows,
        neighbours, the PCA plot, the analogy sections and the vectors (module docstring)."""

        evaluation.figures["predictions.png"] = self.objective_figure(evaluation)
        network = evaluation.network
        if network is None:
            return
        options = cast("EmbeddingOptions", self.settings)
        vectors = network.vectors.detach().cpu().numpy()  # type: ignore[operator]
        ours = self.vector_scores(vectors)
        trained = _train_summary(evaluation.name)
        scores = {"ours": ours | {"seconds": trained.get("fit_seconds"), "threads": _threads()}}
        if options.gensim:
            scores["gensim"] = self.gensim_scores(evaluation, network, int(trained.get("epochs") or 1))
        for who, s in scores.items():
            prefix = "" if who == "ours" else "gensim_"
            evaluation.test_metrics |= {
                f"{prefix}{k}": float(s[k])
                for k in ("analogy_accuracy", "analogy_accuracy_odd", "wordsim_spearman")
                if k in s
            }
        if "gensim" in scores:
            evaluation.test_metrics["gensim_seconds"] = float(scores["gensim"]["seconds"])
        evaluation.test_metrics["analogy_questions"] = float(ours["analogy_questions"])
        evaluation.details["word_vectors"] = scores
        table = self.neighbour_table(vectors, options.neighbours)
        evaluation.tables["neighbours.csv"] = "word,neighbours\n" + "".join(
            f'{w},"{" ".join(n)}"\n' for w, n in table.items()
        )
        evaluation.tables["vectors.txt"] = self.word2vec_text(vectors)
        evaluation.figures["analogies.png"] = self.section_figure(scores)
        evaluation.figures["pca.png"] = self.pca_figure(vectors, options.projected_words, options.skip_frequent)
        evaluation.report["word_vectors"] = {
            who: {k: v for k, v in s.items() if k != "sections"} for who, s in scores.items()
        }
        evaluation.report["neighbours"] = table

    def gensim_scores(self, evaluation: Evaluation, network: nn.Module, epochs: int) -> dict[str, Any]:
        """gensim's ``Word2Vec`` trained on the train rows with the network's settings and ``epochs``, scored by
        :meth:`vector_scores`, with its training ``seconds`` and ``threads``. Its learning rate is gensim's own
        default (0.025, decaying to 0.0001)."""
        import numpy as np
        from gensim.models import Word2Vec as GensimWord2Vec

        words = self.meta["vocab"]
        rows = np.asarray(evaluation.data.x["train"])
        sentences = [[words[i] for i in row if i != 0] for row in rows.tolist()]
        options = cast("EmbeddingOptions", self.settings)
        net: Any = network
        start = time.perf_counter()
        model = GensimWord2Vec(
            sentences,
            vector_size=int(net.vectors.shape[1]),
            window=net.window,
            negative=net.negatives,
            sample=net.sample,
            ns_exponent=net.ns_exponent,
            sg=int(net.mode == "skipgram"),
            cbow_mean=1,
            hs=0,
            min_count=1,
            epochs=epochs,
            workers=options.gensim_workers,
            seed=int(self.meta.get("seed", 0)),
        )
        seconds = time.perf_counter() - start
        vectors = np.zeros((len(words), model.vector_size), dtype=np.float32)
        for word, index in self.vocab.items():
            if word in model.wv.key_to_index:
                vectors[index] = model.wv[word]
        return self.vector_scores(vectors) | {"seconds": seconds, "threads": options.gensim_workers, "epochs": epochs}

    def neighbour_table(self, vectors: np.ndarray, k: int) -> dict[str, list[str]]:
        """The ``k`` nearest neighbours of each :data:`PROBES` word in the vocabulary."""
        vocab, words = self.vocab, self.meta["vocab"]
        return {w: [words[i] for i, _ in nearest(vectors, vocab[w], k)] for w in PROBES if w in vocab}

    def word2vec_text(self, vectors: np.ndarray) -> str:
        """The vectors in the word2vec text format (a ``count dim`` line, then ``word v1 ... vd`` per word, most
        frequent first), which gensim's ``KeyedVectors.load_word2vec_format`` reads."""
        words = [w for w in self.meta["vocab"] if w not in _SPECIAL]
        vocab = self.vocab
        lines = [f"{len(words)} {vectors.shape[1]}"]
        lines += [w + " " + " ".join(f"{v:.6f}" for v in vectors[vocab[w]].tolist()) for w in words]
        return "\n".join(lines) + "\n"

    def objective_figure(self, evaluation: Evaluation):
        """``ns_loss`` and ``ns_accuracy`` of the objective on each split (:meth:`compute_outputs`' rows)."""
        from pipelines import plots

        splits = list(evaluation.splits)
        metrics = {s: self.split_metrics(o.outputs, o.x, o.y) for s, o in evaluation.splits.items()}
        fig, axes = plots.plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, key, label in zip(axes, ("ns_loss", "ns_accuracy"), ("nats per positive", "share on the right side")):
            ax.bar(splits, [metrics[s][key] for s in splits], color="tab:blue")
            ax.set(title=f"Negative sampling: {key}", ylabel=label)
        fig.tight_layout()
        return fig

    def section_figure(self, scores: dict[str, dict[str, Any]]):
        """Analogy accuracy per section of ``questions-words.txt``, ours beside gensim's."""
        import numpy as np

        from pipelines import plots

        sections = list(scores["ours"]["sections"])
        fig, ax = plots.plt.subplots(figsize=(11, 4))
        width = 0.8 / len(scores)
        for k, (who, s) in enumerate(scores.items()):
            values = [s["sections"].get(name, 0.0) for name in sections]
            ax.bar(np.arange(len(sections)) + k * width, values, width, label=f"{who} ({s['analogy_accuracy']:.3f})")
        ax.set_xticks(np.arange(len(sections)) + width * (len(scores) - 1) / 2, sections, rotation=45, ha="right")
        ax.set(ylabel="accuracy (in-vocabulary questions)", title="Word analogies by section (3CosAdd)")
        ax.legend()
        fig.tight_layout()
        return fig

    def pca_figure(self, vectors: np.ndarray, count: int, skip: int):
        """A 2-D PCA (scikit-learn) of the unit vectors of ``count`` frequent words, after the ``skip`` most
        frequent, each point labelled."""
        import numpy as np
        from sklearn.decomposition import PCA

        from pipelines import plots

        words = [w for w in self.meta["vocab"] if w not in _SPECIAL][skip : skip + count]
        ids = [self.vocab[w] for w in words]
        chosen = vectors[ids]
        unit = chosen / np.maximum(np.linalg.norm(chosen, axis=1, keepdims=True), 1e-12)
        points = PCA(n_components=2, random_state=0).fit_transform(unit)
        fig, ax = plots.plt.subplots(figsize=(10, 9))
        ax.scatter(points[:, 0], points[:, 1], s=4, color="grey")
        for (px, py), word in zip(points, words):
            ax.annotate(word, (px, py), fontsize=6)
        ax.set(
            title=f"PCA of the vectors of words {skip + 1}-{skip + len(words)} by frequency",
            xlabel="component 1",
            ylabel="component 2",
        )
        fig.tight_layout()
        return fig

    @classmethod
    def report_section(cls, experiment: str, evaluation: dict[str, Any]) -> list[str]:
        """Ours against gensim (``report.word_vectors``) and the probe words' neighbours, as Markdown."""
        report = evaluation.get("report") or {}
        scores = report.get("word_vectors") or {}
        if not scores:
            return []
        lines = [
            f"### `{experiment}`: word vectors against gensim's Word2Vec on the same rows",
            "",
            "| implementation | analogy accuracy | analogy (odd half) | WordSim-353 rho | train time (s) | threads |",
            "|---|---|---|---|---|---|",
        ]
        for who, s in scores.items():
            seconds = s.get("seconds")
            lines.append(
                f"| {who} | {s['analogy_accuracy']:.4f} | {s['analogy_accuracy_odd']:.4f} | "
                f"{s['wordsim_spearman']:.4f} | {'-' if seconds is None else f'{seconds:.1f}'} | {s['threads']} |"
            )
        ours = scores.get("ours", {})
        lines += [
            "",
            f"{ours.get('analogy_questions', 0)} in-vocabulary analogy questions, {ours.get('wordsim_pairs', 0)} "
            f"WordSim-353 pairs ({ours.get('wordsim_skipped', 0)} skipped: a word outside the vocabulary).",
            "",
        ]
        neighbours = report.get("neighbours") or {}
        if neighbours:
            lines += ["| word | nearest neighbours (cosine) |", "|---|---|"]
            lines += [f"| {w} | {', '.join(n)} |" for w, n in neighbours.items()]
            lines.append("")
        return lines

    # ------------------------------------------------------------------------------------------ serving

    def serve(self, outputs: torch.Tensor) -> dict[str, np.ndarray]:
        """Word vectors ``(N, T, d)`` of the served texts (padding is zero) -> ``vector``, the mean vector of each
        text's words ``(N, d)``, and ``words``, how many were read."""
        words = (outputs.abs().sum(dim=-1) > 0).sum(dim=1)
        mean = outputs.sum(dim=1) / words.clamp(min=1).unsqueeze(-1)
        return {"vector": mean.float().numpy(), "words": words.numpy()}


def _train_summary(name: str) -> dict[str, Any]:
    """``metrics/train/<name>.json`` (written by ``train@<name>``, the stage evaluate follows), or ``{}``."""
    from pipelines.paths import METRICS_ROOT

    try:
        return json.loads((METRICS_ROOT / "train" / f"{name}.json").read_text())
    except (OSError, ValueError):
        return {}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


TASK = Embedding
