"""word2vec and the ``embedding`` task on real IMDB text: the corpus, subsampling, windows, negative sampling, the
objective, and the evaluation against gensim's (notes 002 "EMBEDDINGS", WORD2VEC; Mikolov et al. 2013)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from models.embedding.word2vec import (
    PAD_ID,
    NoiseSampler,
    Word2Vec,
    cbow_contexts,
    keep_probabilities,
    reduced_windows,
    skipgram_pairs,
    subsample,
)
from models.registry import NetworkSpec
from pipelines.config import DatasetConfig
from pipelines.data.preparers import prepare_dataset
from pipelines.tasks import get_task
from pipelines.tasks.embedding import analogy_accuracy, analogy_halves, read_analogies, similarity_spearman


@pytest.fixture(scope="module")
def corpus(mirror):
    """The first 300,000 words of the (shuffled) IMDB train reviews, in rows of 200 words, min_count 3."""
    config = DatasetConfig(
        options={"max_train_words": 300000, "max_eval_words": 20000, "chunk_words": 200, "min_count": 3}
    )
    return prepare_dataset("imdb_corpus", config, 0, mirror=mirror)


@pytest.fixture(scope="module")
def gensim_vectors(corpus):
    """gensim's skip-gram vectors of ``corpus``'s train rows (one thread: the same vectors every time)."""
    from gensim.models import Word2Vec as GensimWord2Vec

    arrays, meta, _ = corpus
    words = meta["vocab"]
    sentences = [[words[i] for i in row if i != PAD_ID] for row in arrays["train"][0].tolist()]
    model = GensimWord2Vec(sentences, vector_size=50, window=5, min_count=1, sg=1, epochs=3, workers=1, seed=0)
    return model.wv


def test_the_corpus_holds_the_train_words_of_the_vocabulary_in_rows(corpus):
    arrays, meta, files = corpus
    x = arrays["train"][0]
    assert x.dtype == np.int64 and x.shape[1] == 200 and meta["input_shape"] == [200]
    stream = x.ravel()
    words = stream[stream != PAD_ID]
    assert len(words) == meta["words"]["train"] and np.all(stream[len(words) :] == PAD_ID)  # padding only at the end
    assert not np.any(words == 1), "an [UNK] in the stream: unknown words are dropped"
    counts = np.array(meta["counts"])
    assert np.array_equal(counts, np.bincount(words, minlength=len(meta["vocab"])))
    assert counts[2:].min() >= 3 and np.all(np.diff(counts[2:]) <= 0)  # min_count kept, most frequent first
    assert meta["vocab"][:2] == ["[PAD]", "[UNK]"] and all(any(c.isalnum() for c in w) for w in meta["vocab"][2:])
    assert meta["words"]["val"] == meta["words"]["test"] == 20000 and "tokenizer.json" in files


def test_subsampling_keeps_frequent_words_at_word2vecs_rate(corpus):
    arrays, meta, _ = corpus
    counts = torch.tensor(meta["counts"], dtype=torch.float64)
    keep = keep_probabilities(counts, 1e-3)
    f, total = counts[2].item(), counts.sum().item()  # "the"
    assert keep[2].item() == pytest.approx((math.sqrt(f / (1e-3 * total)) + 1) * 1e-3 * total / f, rel=1e-6)
    assert keep[2] < 0.3 and keep[-1] == 1.0 and keep[PAD_ID] == 0.0
    x = torch.from_numpy(arrays["train"][0])
    generator = torch.Generator().manual_seed(0)
    kept_the = total_the = 0
    for _ in range(20):
        kept, valid = subsample(x, keep, generator)
        assert torch.all(valid == (kept != PAD_ID)) and torch.all(valid.sum(1) <= (x != PAD_ID).sum(1))
        # the kept words are at each row's start, in order: valid is a prefix
        assert torch.all(valid[:, 1:] <= valid[:, :-1])
        kept_the += int((kept == 2).sum())
        total_the += int((x == 2).sum())
    assert kept_the / total_the == pytest.approx(keep[2].item(), abs=0.01)
    rare = counts < 10
    rare[:2] = False  # padding and [UNK]
    assert int(rare[kept].sum()) == int(rare[x].sum())  # rare words (keep = 1) all stay


def test_negative_sampling_draws_from_the_unigram_distribution_to_the_three_quarters(corpus):
    _, meta, _ = corpus
    counts = torch.tensor(meta["counts"], dtype=torch.float64)
    sampler = NoiseSampler(counts, 0.75)
    draws = sampler.sample((2_000_000,), torch.Generator().manual_seed(0))
    frequency = torch.bincount(draws, minlength=len(counts)).double() / len(draws)
    expected = counts**0.75 / (counts**0.75).sum()
    assert frequency[PAD_ID] == 0 and frequency[1] == 0  # padding and [UNK] (count 0) are never noise
    assert torch.allclose(frequency[2:22], expected[2:22], rtol=0.03)  # the 20 most frequent words
    for low, high in ((22, 100), (100, 1000), (1000, len(counts))):  # and every band of ranks below them
        assert frequency[low:high].sum().item() == pytest.approx(expected[low:high].sum().item(), rel=0.01)
    # flatter than the unigram distribution: the most frequent word is drawn less often than its share
    assert frequency[2] < counts[2] / counts.sum()


def test_skipgram_pairs_lie_within_each_words_own_window():
    tokens = torch.arange(1, 41).view(2, 20)  # distinct ids: a pair's ids are its positions
    valid = torch.ones_like(tokens, dtype=torch.bool)
    valid[1, 15:] = False
    windows = reduced_windows(tokens.shape, 4, torch.Generator().manual_seed(0))
    words, contexts = skipgram_pairs(tokens, valid, windows, 4)
    row, word_pos, context_pos = (words - 1) // 20, (words - 1) % 20, (contexts - 1) % 20
    assert torch.all(row == (contexts - 1) // 20)
    assert torch.all((word_pos - context_pos).abs() <= windows.view(-1)[words - 1])
    assert torch.all(valid.view(-1)[contexts - 1])
    lengths = valid.sum(1)
    expected = sum(
        min(int(windows[r, t]), t) + min(int(windows[r, t]), int(lengths[r]) - 1 - t)
        for r in range(2)
        for t in range(int(lengths[r]))
    )
    assert len(words) == expected and len(set(zip(words.tolist(), contexts.tolist()))) == expected


def test_cbow_reads_the_mean_of_the_window_and_hands_each_context_word_the_whole_gradient(corpus):
    arrays, meta, _ = corpus
    spec = NetworkSpec((200,), 1, vocab_size=meta["vocab_size"])
    net = Word2Vec(spec, mode="cbow", embedding_dim=8, window=2, negatives=3).use_counts(meta["counts"])
    vectors = torch.randn(1, 6, 8)
    valid = torch.ones(1, 6, dtype=torch.bool)
    windows = torch.tensor([[1, 2, 2, 1, 2, 2]])
    sums, counts = cbow_contexts(vectors, valid, windows, 2)
    assert torch.allclose(sums[0, 2], vectors[0, [0, 1, 3, 4]].sum(0)) and counts[0, 2] == 4
    assert torch.allclose(sums[0, 0], vectors[0, 1]) and counts[0, 0] == 1  # window 1 at the start
    # through the objective: a context vector's gradient equals the gradient of the mean it enters (word2vec.c)
    torch.manual_seed(0)
    x = torch.from_numpy(arrays["train"][0][:2])
    with torch.no_grad():
        net.output_vectors.weight.normal_(0, 0.1)
    logits = net.objective(x)
    assert logits.shape[1] == 4 and torch.isfinite(logits[:, 0]).all()
    logits[:, 0].sum().backward()
    grad = net.input_vectors.weight.grad
    assert grad is not None and grad[PAD_ID].abs().sum() == 0 and grad.abs().sum() > 0


def test_the_objective_is_the_binary_cross_entropy_of_positives_and_noise(corpus):
    _, meta, _ = corpus
    task = get_task("embedding")(meta)
    loss = task.loss("bce")
    logits = torch.randn(50, 6)
    labels = torch.zeros(50, 6)
    labels[:, 0] = 1
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / 50
    assert loss(logits, None).item() == pytest.approx(bce.item(), rel=1e-5)
    clashed = logits.clone().requires_grad_(True)
    clash = torch.zeros(50, 6, dtype=torch.bool)
    clash[::2, 2] = True  # a noise word equal to its positive
    masked = clashed.masked_fill(clash, float("-inf"))
    out = loss(masked, None)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(clashed.grad).all() and clashed.grad[clash].abs().sum() == 0
    softplus = torch.nn.functional.softplus
    by_hand = softplus(-logits[:, 0]).sum() + softplus(logits[:, 1:]).sum() - softplus(logits[clash]).sum()
    assert out.item() == pytest.approx(by_hand.item() / 50, rel=1e-5)  # it adds nothing
    with pytest.raises(ValueError, match="unknown embedding loss 'ce'"):
        task.loss("ce")


def test_the_analogy_and_similarity_evaluations_agree_with_gensims(gensim_vectors, corpus):
    from gensim.test.utils import datapath

    _, meta, _ = corpus
    vocab = {w: i for i, w in enumerate(meta["vocab"]) if w not in ("[PAD]", "[UNK]")}
    vectors = np.zeros((len(meta["vocab"]), gensim_vectors.vector_size), dtype=np.float32)
    for word, index in vocab.items():
        vectors[index] = gensim_vectors[word]
    sections = read_analogies(vocab)
    questions = analogy_halves(sections)["all"]
    ours = analogy_accuracy(vectors, questions)
    score, theirs = gensim_vectors.evaluate_word_analogies(datapath("questions-words.txt"))
    total = next(s for s in theirs if s["section"] == "Total accuracy")
    assert len(ours) == len(total["correct"]) + len(total["incorrect"]) > 1000
    assert int(ours.sum()) == len(total["correct"]) > 0 and ours.mean() == pytest.approx(score)
    rho, pairs, _ = similarity_spearman(vectors, vocab)
    (_, _), (gensim_rho, _), oov = gensim_vectors.evaluate_word_pairs(datapath("wordsim353.tsv"))
    assert rho == pytest.approx(gensim_rho, abs=1e-6) and pairs > 100


def test_the_vectors_export_in_the_word2vec_text_format(corpus, tmp_path):
    from gensim.models import KeyedVectors

    _, meta, _ = corpus
    task = get_task("embedding")(meta)
    vectors = np.random.default_rng(0).normal(size=(meta["vocab_size"], 5)).astype(np.float32)
    path = tmp_path / "vectors.txt"
    path.write_text(task.word2vec_text(vectors))
    loaded = KeyedVectors.load_word2vec_format(str(path), binary=False)
    assert len(loaded) == meta["vocab_size"] - 2 and loaded.index_to_key[:3] == meta["vocab"][2:5]
    assert np.allclose(loaded["movie"], vectors[meta["vocab"].index("movie")], atol=1e-6)


def test_word2vec_trains_evaluates_against_gensim_and_serves_raw_text(corpus, tmp_path):
    """One epoch of skip-gram on 300,000 real words as the train stage runs it (module, batches, lr decay), then
    evaluate's word-vector scores with gensim's beside them, the report's table, and a served text's vector."""
    from lightning.pytorch import Trainer

    from pipelines.config import load_params
    from pipelines.data.prepared import load_prepared, write_prepared
    from pipelines.serving.bundle import Bundle
    from pipelines.stages.evaluate import summary_metrics
    from pipelines.tasks.base import Evaluation
    from pipelines.training.inference import split_outputs
    from pipelines.training.trainer import build_module, make_datamodule, seed_everything

    arrays, meta, files = corpus
    folder = write_prepared(tmp_path / "imdb_corpus", arrays, meta, files)
    data = load_prepared(folder)
    exp = load_params(profile="tiny").experiment("word2vec_skipgram_imdb")
    exp = exp.model_copy(update={"model": exp.model | {"embedding_dim": 32}})
    seed_everything(0)
    module = build_module(exp, data.meta)
    trainer = Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, datamodule=make_datamodule(exp, data, 0))
    assert trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(exp.optimizer.lr * 1e-4)
    assert trainer.callback_metrics["val_analogy_accuracy"] >= 0 and trainer.callback_metrics["val_ns_accuracy"] > 0.7

    task = module.task
    splits = split_outputs(module.network, data, task=task)
    results = {s: task.split_metrics(o.outputs, o.x, o.y) for s, o in splits.items()}
    assert results["val"]["ns_loss"] < 3.0 and results["train"]["positives"] > 1000
    again = task.split_metrics(*vars(split_outputs(module.network, data, ("val",), task=task)["val"]).values())
    assert again == results["val"]  # seeded: the same figures every time
    evaluation = Evaluation("word2vec_skipgram_imdb", data, splits, network=module.network)
    task.evaluate(evaluation)
    test = evaluation.test_metrics
    assert {"analogy_accuracy", "wordsim_spearman", "gensim_analogy_accuracy", "gensim_wordsim_spearman"} <= set(test)
    assert test["analogy_questions"] > 1000 and -1 <= test["wordsim_spearman"] <= 1
    assert {"predictions.png", "analogies.png", "pca.png"} <= set(evaluation.figures)
    assert evaluation.tables["vectors.txt"].startswith(f"{meta['vocab_size'] - 2} 32\n")
    assert "bad" in evaluation.report["neighbours"] and len(evaluation.report["neighbours"]["bad"]) == 8
    results["test"] |= test
    results["bias_variance"] = {"train_error": 0.0, "val_error": 0.0, "test_error": 0.0, "verdict": "-"}
    assert summary_metrics(results, task)["primary"] == "test_analogy_accuracy"
    section = type(task).report_section("word2vec_skipgram_imdb", {"report": evaluation.report})
    assert any(line.startswith("| ours |") for line in section) and any(
        line.startswith("| gensim |") for line in section
    )

    bundle = Bundle.from_module(module, data.meta, folder)
    answer = bundle.predict(pd.DataFrame({"text": ["A great movie!", "the the the"]}))
    vocab = meta["vocab"]
    vectors = module.network.vectors.detach()
    expected = vectors[[vocab.index("a"), vocab.index("great"), vocab.index("movie")]].mean(0)
    np.testing.assert_allclose(np.stack(answer["vector"])[0], expected.numpy(), rtol=1e-5, atol=1e-6)
    assert list(answer["words"]) == [3, 3]


def test_tune_runs_two_trials_of_word2vec_with_the_task_metrics(tmp_path, mirror):
    """``deepnotes tune`` on word2vec_cbow_imdb (tiny profile): 2 trials of word2vec's space (window, noise words,
    subsampling, lr, batch), each a nested MLflow run with the embedding metrics, and the best params written."""
    from tests.test_tune import tune_two_trials

    children, tuned = tune_two_trials(tmp_path / "repo", mirror, "imdb_corpus", "word2vec_cbow_imdb")
    for run in children:
        assert {"val_analogy_accuracy", "val_ns_accuracy", "val_loss"} <= set(run.data.metrics)
        assert 0 <= run.data.metrics["val_analogy_accuracy"] <= 1
        assert (
            int(run.data.params["model.window"]) in (2, 5, 8) and 5e-3 <= float(run.data.params["optimizer.lr"]) <= 0.1
        )
    assert {"window", "negatives", "sample"} <= set(tuned["params"]["model"])
