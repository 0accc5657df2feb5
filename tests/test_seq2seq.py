"""The encoder-decoder family and the seq2seq task: teacher forcing equals stepping, padding changes nothing, beam
search finds what greedy decoding misses, attention is a distribution over the real tokens, and training on real
Tatoeba pairs learns."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.registry import NetworkSpec, build_network
from models.seq2seq.core import BOS_ID, EOS_ID, PAD_ID, EncoderDecoder, beam_search, greedy_decode
from pipelines.tasks.seq2seq import UNMATCHED, Seq2Seq

SPEC = NetworkSpec(input_shape=(9,), num_outputs=23, vocab_size=19)
SMALL = {
    "seq2seq_rnn": {"embedding_dim": 8, "hidden_size": 12, "num_layers": 2, "cell": "lstm", "bidirectional": True},
    "seq2seq_attention": {"embedding_dim": 8, "hidden_size": 12, "attention_size": 10},
    "bahdanau": {"embedding_dim": 8, "hidden_size": 12, "attention_size": 10, "input_feeding": True},
    "transformer_seq2seq": {"embedding_dim": 16, "num_heads": 2, "num_layers": 2, "dim_feedforward": 24},
}


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded sources (N, 9) of 2-9 real tokens and right-padded targets [BOS] ... [EOS] (N, 9)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.zeros(5, 9, dtype=torch.long)
    tgt = torch.zeros(5, 9, dtype=torch.long)
    for row, (n, m) in enumerate([(2, 3), (9, 7), (5, 1), (4, 4), (7, 2)]):
        src[row, 9 - n :] = torch.randint(2, 19, (n,), generator=g)
        tgt[row, : m + 2] = torch.cat(
            [torch.tensor([BOS_ID]), torch.randint(4, 23, (m,), generator=g), torch.tensor([EOS_ID])]
        )
    return src, tgt


def _architecture(name: str) -> str:
    return "seq2seq_attention" if name == "bahdanau" else name


@pytest.fixture(params=sorted(SMALL))
def network(request) -> EncoderDecoder:
    torch.manual_seed(0)
    net = build_network(_architecture(request.param), SPEC, SMALL[request.param]).eval()
    net.test_name = request.param
    return net


def test_teacher_forcing_gives_the_logits_of_stepping_through_the_target(network):
    src, tgt = _batch()
    with torch.no_grad():
        whole = network(src, tgt[:, :-1])
        stepped = EncoderDecoder.teacher_forced(network, src, tgt[:, :-1])
    assert whole.shape == (5, 8, 23)
    torch.testing.assert_close(whole, stepped, atol=1e-5, rtol=1e-4)


def test_more_left_padding_changes_nothing(network):
    src, tgt = _batch()
    wider = NetworkSpec(input_shape=(13,), num_outputs=23, vocab_size=19)
    torch.manual_seed(0)
    name = network.test_name
    same = build_network(_architecture(name), wider, SMALL[name]).eval()
    same.load_state_dict(network.state_dict())
    padded = torch.cat([torch.zeros(5, 4, dtype=torch.long), src], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(network(src, tgt[:, :-1]), same(padded, tgt[:, :-1]), atol=1e-5, rtol=1e-4)


def test_greedy_decoding_is_beam_search_of_one_beam_and_stops_at_eos(network):
    src, _ = _batch(1)
    with torch.no_grad():
        greedy = greedy_decode(network, src, 8).tokens
        beam = beam_search(network, src, beam_size=1, max_len=8)
        served = network(src)
    assert torch.equal(greedy, beam) and torch.equal(served, greedy[:, : network.max_decode_len])
    for row in greedy.tolist():
        if EOS_ID in row:
            assert all(t == PAD_ID for t in row[row.index(EOS_ID) + 1 :])


class GardenPath(EncoderDecoder):
    """A fixed next-token distribution that fools greedy decoding: after [BOS], token 4 (p 0.6) or 5 (p 0.4);
    after 4 every one of tokens 6-15 at p 0.1; after 5, [EOS] at p 0.9."""

    def encode(self, src):
        return {"last": torch.full((src.shape[0],), BOS_ID)}

    def step(self, state, token):
        probs = torch.full((len(token), 16), 1e-6)
        for row, t in enumerate(token.tolist()):
            if t == BOS_ID:
                probs[row, 4], probs[row, 5] = 0.6, 0.4
            elif t == 4:
                probs[row, 6:16] = 0.1
            else:
                probs[row, EOS_ID] = 0.9
        return probs.log(), state, None


def test_beam_search_finds_the_likelier_translation_that_greedy_decoding_misses():
    toy = GardenPath(NetworkSpec(input_shape=(4,), num_outputs=16, vocab_size=4))
    src = torch.ones(2, 4, dtype=torch.long)
    greedy = greedy_decode(toy, src, 3).tokens
    assert greedy[0, 0] == 4  # 0.6 then 0.1: p = 0.06
    beam = beam_search(toy, src, beam_size=2, max_len=3, length_penalty=0.0)
    assert beam[0].tolist() == [5, EOS_ID, PAD_ID] == beam[1].tolist()  # 0.4 then 0.9: p = 0.36
    with pytest.raises(ValueError, match="beam_size must be at least 1"):
        beam_search(toy, src, beam_size=0, max_len=3)


@pytest.mark.parametrize("name", ["seq2seq_attention", "bahdanau"])
def test_additive_attention_is_a_distribution_over_the_real_source_tokens(name: str):
    torch.manual_seed(0)
    network = build_network("seq2seq_attention", SPEC, SMALL[name]).eval()
    src, _ = _batch()
    with torch.no_grad():
        decoded = greedy_decode(network, src, 6)
    weights = decoded.attention
    assert weights is not None and weights.shape == (5, 6, 9)
    first = weights[:, 0]  # every row decodes its first step
    torch.testing.assert_close(first.sum(-1), torch.ones(5))
    assert (first[src == PAD_ID] == 0).all() and (first[src != PAD_ID] > 0).all()


def test_the_task_scores_text_against_every_reference_and_reads_its_summary_outputs():
    vocab = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "le", "chat", "dort", "."]
    task = Seq2Seq({"target_vocab": vocab, "source_vocab": vocab, "dataset": "translation", "sentences": "s.json"})
    assert task.num_outputs == 8 and task.settings.beam_size == 4
    assert task.texts(torch.tensor([[4, 5, 6, 7, 3, 4, 0], [4, 1, 3, 0, 0, 0, 0]])) == ["le chat dort .", "le [UNK]"]
    assert task.texts(torch.tensor([[4, 1, 3]]), unknown=UNMATCHED) == [f"le {UNMATCHED}"]
    assert (
        task.corpus_scores(["le [UNK]"], [f"le {UNMATCHED}"])["bleu"]
        < task.corpus_scores(["le [UNK]"], ["le [UNK]"])["bleu"]
    )
    perfect = task.corpus_scores(["le chat dort ."], [["un chien .", "le chat dort ."]])
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)
    assert task.corpus_scores(["le chat dort ."], ["un chien ."])["bleu"] < 20  # only "." in common
    torch.manual_seed(0)
    src, tgt = _batch()
    tgt = tgt.clamp(max=7)
    network = build_network("seq2seq_rnn", NetworkSpec((9,), 8, vocab_size=19), SMALL["seq2seq_rnn"]).eval()
    with torch.no_grad():
        logits = network(src, tgt[:, :-1])
    full = task.split_metrics(logits, src, tgt)
    summary = task.split_metrics(task.compute_outputs(network, src, tgt), src, tgt)
    assert full == pytest.approx(summary, rel=1e-5)
    assert 0 <= full["token_accuracy"] <= 1 and full["perplexity"] > 1


def test_training_on_real_pairs_learns(mirror: Path):
    """A few hundred steps of seq2seq_attention on 2,000 real pairs: the teacher-forced loss falls well below that
    of guessing the train split's token frequencies."""
    from pipelines.config import DatasetConfig
    from pipelines.data.preparers import prepare_dataset
    from pipelines.training.seq2seq import TokenCrossEntropy

    config = DatasetConfig(seq_len=10, vocab_size=600, max_train_samples=2000, options={"max_words": 4})
    arrays, meta, _ = prepare_dataset("translation", config, seed=0, mirror=mirror)
    x, y = (torch.as_tensor(a) for a in arrays["train"])
    torch.manual_seed(0)
    spec = NetworkSpec((10,), meta["target_vocab_size"], vocab_size=meta["vocab_size"])
    network = build_network("seq2seq_attention", spec, {"embedding_dim": 32, "hidden_size": 48, "attention_size": 32})
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    loss_fn = TokenCrossEntropy()
    target = y[:, 1:]
    counts = torch.bincount(target[target != PAD_ID], minlength=spec.num_outputs).float()
    unigram = float(-(counts / counts.sum() * (counts / counts.sum()).clamp(min=1e-12).log()).sum())
    for _ in range(4):
        for start in range(0, len(x), 64):
            loss = loss_fn(network(x[start : start + 64], y[start : start + 64, :-1]), target[start : start + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    network.eval()
    with torch.no_grad():
        final = float(loss_fn(network(x, y[:, :-1]), target))
    assert final < 0.7 * unigram, (final, unigram)


def test_no_decoder_position_reads_a_later_target_token(network):
    """Changing the target from position 4 on leaves the logits of positions 0-3 as they were (a leak through the
    causal mask, or a recurrence run backwards, would change them)."""
    src, tgt = _batch()
    changed = tgt.clone()
    changed[:, 4:] = (changed[:, 4:] + 5) % 23
    with torch.no_grad():
        before, after = network(src, tgt[:, :-1]), network(src, changed[:, :-1])
    torch.testing.assert_close(before[:, :4], after[:, :4])
    assert not torch.allclose(before[:, 4:], after[:, 4:])  # the control: the later positions do read it


def test_a_heatmap_is_target_by_source():
    vocab = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", *(f"w{k}" for k in range(19))]
    task = Seq2Seq({"target_vocab": vocab, "source_vocab": vocab[:19], "dataset": "translation", "sentences": "-"})
    torch.manual_seed(0)
    network = build_network("seq2seq_attention", NetworkSpec((9,), 23, vocab_size=19), SMALL["seq2seq_attention"])
    src, _ = _batch()
    with torch.no_grad():
        decoded = greedy_decode(network.eval(), src[:2], 8)
    for row, figure in enumerate(task.attention_figures(src[:2], decoded)):
        tokens = decoded.tokens[row].tolist()
        shown = tokens.index(EOS_ID) + 1 if EOS_ID in tokens else len(tokens)
        image = figure.axes[0].images[0].get_array()
        assert image.shape == (shown, int((src[row] != PAD_ID).sum())), row
        assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == task.source_texts(src[row : row + 1])[0]


def test_tune_runs_two_trials_of_a_translation_with_the_task_metrics(tmp_path: Path, mirror: Path):
    """``deepnotes tune`` on seq2seq_attention_translation (tiny profile): 2 trials of its architecture's space, each
    a nested MLflow run with the seq2seq metrics, and the best params written."""
    from tests.test_tune import tune_two_trials

    children, tuned = tune_two_trials(tmp_path / "repo", mirror, "translation", "seq2seq_attention_translation")
    for run in children:
        assert {"val_bleu", "val_token_accuracy", "val_perplexity", "val_loss"} <= set(run.data.metrics)
        assert 0 <= run.data.metrics["val_bleu"] <= 100 and run.data.params["model.cell"] in ("gru", "lstm")
    assert {"cell", "hidden_size", "attention_size"} <= set(tuned["params"]["model"])
