"""The sequence family (models/sequence/): rnn, char_rnn and conv1d_text, and gradient clipping on a real RNN.

Parameter counts are checked against the notes' formula per layer and direction, gates * (h * (h + x) + h)
(notes 002 "RNN": one weight matrix on the input, one on the state, one bias; LSTM 4 gates, GRU 3, Elman 1), plus
the second bias vector PyTorch keeps (gates * h more). Data-dependent checks read real IMDB reviews and real
Shakespeare from the data mirror.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from torch import nn

from models.registry import REGISTRY, NetworkSpec, build_network
from models.sequence.conv1d import conv1d_length
from models.sequence.core import GATES, detach_state, make_recurrent, recurrent_parameter_count
from pipelines.data.datamodule import TensorBatches
from pipelines.training.gradient_flow import GradientDiagnostics, GradientRecord
from pipelines.training.module import SupervisedModule


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def notes_count(gates: int, x: int, h: int) -> int:
    """One layer and direction as the notes count it: W_x (h x x), W_h (h x h) and one bias b (h), per gate."""
    return gates * (h * x + h * h + h)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------- counts


def test_the_formula_matches_hand_counts_and_the_notes():
    # one layer, x = h = 64: the notes' count plus PyTorch's b_hh, for each cell
    assert recurrent_parameter_count("lstm", 64, 64) == 4 * (64 * 64 + 64 * 64 + 64) + 4 * 64 == 33_280
    assert recurrent_parameter_count("gru", 64, 64) == 3 * (64 * 128 + 2 * 64) == 24_960
    assert recurrent_parameter_count("rnn", 64, 64) == 64 * 128 + 2 * 64 == 8_320
    # GRU VS LSTM (notes 002): 3 blocks against 4, whatever the sizes
    assert (
        recurrent_parameter_count("gru", 50, 30, 2, True) * 4 == recurrent_parameter_count("lstm", 50, 30, 2, True) * 3
    )
    with pytest.raises(ValueError, match="unknown recurrent cell 'transformer'"):
        recurrent_parameter_count("transformer", 4, 4)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize(("num_layers", "bidirectional"), [(1, False), (2, False), (1, True), (3, True)])
def test_rnn_counts_for_every_cell_stacked_and_bidirectional(cell, num_layers, bidirectional):
    vocab, emb, h, outputs = 500, 12, 10, 3
    spec = NetworkSpec((20,), outputs, dropout=0.2, vocab_size=vocab)
    params = {"cell": cell, "embedding_dim": emb, "hidden_size": h, "num_layers": num_layers}
    net = build_network("rnn", spec, {**params, "bidirectional": bidirectional})
    d = 2 if bidirectional else 1
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    by_hand = sum(
        d * (notes_count(gates, emb if layer == 0 else h * d, h) + gates * h)  # + PyTorch's second bias
        for layer in range(num_layers)
    )
    assert n_params(net.recurrent) == recurrent_parameter_count(cell, emb, h, num_layers, bidirectional) == by_hand
    assert n_params(net) == vocab * emb + by_hand + (h * d + 1) * outputs
    assert net.recurrent.dropout == (0.2 if num_layers > 1 else 0.0)  # between stacked layers only
    described = REGISTRY["rnn"].describe(spec, {**params, "bidirectional": bidirectional})
    assert described == {"recurrent_params": by_hand, "recurrent_gates": gates, "embedding_params": vocab * emb}


def test_make_recurrent_builds_the_named_cell():
    assert isinstance(make_recurrent("rnn", 3, 4), nn.RNN) and make_recurrent("rnn", 3, 4).nonlinearity == "tanh"
    assert isinstance(make_recurrent("lstm", 3, 4), nn.LSTM) and isinstance(make_recurrent("gru", 3, 4), nn.GRU)
    assert set(GATES) == {"rnn", "lstm", "gru"}
    with pytest.raises(ValueError, match="'elman'"):
        make_recurrent("elman", 3, 4)


# ------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_on_real_reviews_gives_one_output_per_review(imdb, imdb_reviews, cell, pooling, bidirectional):
    meta = imdb[1]
    x = imdb_reviews(16)
    assert (x[:, 0] == 0).any() and (x[:, -1] != 0).all()  # left-padded: the last step is real text
    for outputs, shape in ((1, (16,)), (3, (16, 3))):
        spec = NetworkSpec(tuple(meta["input_shape"]), outputs, vocab_size=meta["vocab_size"])
        net = build_network("rnn", spec, {"cell": cell, "pooling": pooling, "bidirectional": bidirectional})
        out = net(x)
        assert out.shape == shape and torch.isfinite(out).all()


@pytest.mark.parametrize("features", [None, 3])
def test_rnn_reads_a_real_valued_window(mirror, features):
    """Series inputs (vocab_size None): (N, T) is one feature per step, (N, T, F) several; horizon outputs."""
    import pandas as pd

    temps = pd.read_csv(next((mirror / "daily_min_temperatures").glob("*.csv*")))
    series = torch.tensor(temps.iloc[:, 1].to_numpy(dtype=np.float32)[:200])
    windows = series.unfold(0, 14, 1)[:32]  # (32, 14)
    x = windows if features is None else windows.unsqueeze(-1).expand(-1, -1, features).contiguous()
    shape = (14,) if features is None else (14, features)
    net = build_network("rnn", NetworkSpec(shape, 7), {"cell": "gru", "hidden_size": 16, "embedding_dim": 999})
    assert net.embedding is None and net.recurrent.input_size == (features or 1)
    assert net(x).shape == (32, 7)
    assert REGISTRY["rnn"].describe(NetworkSpec(shape, 7), {"cell": "gru", "hidden_size": 16}) == {
        "recurrent_params": recurrent_parameter_count("gru", features or 1, 16),
        "recurrent_gates": 3,
    }
    with pytest.raises(ValueError, match=r"input_shape \(window,\) or \(window, features\)"):
        build_network("rnn", NetworkSpec((14, 2, 2), 7))
    with pytest.raises(ValueError, match=r"input_shape \(seq_len,\)"):
        build_network("rnn", NetworkSpec((14, 2), 1, vocab_size=100))


# ------------------------------------------------------------------------------------------- padding


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_pooling_ignores_padding_positions(imdb, imdb_reviews, pooling):
    meta = imdb[1]
    x = imdb_reviews(32)
    real = x != 0
    assert (~real).any(dim=1).sum() == 16  # half the reviews are shorter than 200 tokens
    spec = NetworkSpec((200,), 1, vocab_size=meta["vocab_size"])
    net = build_network("rnn", spec, {"cell": "lstm", "hidden_size": 6, "pooling": pooling}).eval()
    outputs, _ = net.recurrent(net.embedding(x))
    summary = net.summarise(outputs, real)
    # the same summary whatever the outputs at the padding positions hold
    poisoned = outputs.masked_fill(~real.unsqueeze(-1), 1e6 if pooling == "max" else -1e6)
    torch.testing.assert_close(net.summarise(poisoned, real), summary)
    for i in range(len(x)):  # and it is the mean / max over the real steps, review by review
        steps = outputs[i, real[i]]
        expected = steps.mean(dim=0) if pooling == "mean" else steps.amax(dim=0)
        torch.testing.assert_close(summary[i], expected)
    empty = net.summarise(outputs[:1], torch.zeros_like(real[:1]))  # an all-padding row summarises to 0
    assert torch.equal(empty, torch.zeros_like(empty))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_the_backward_direction_reads_only_real_text(imdb, cell):
    arrays, meta = imdb
    x = torch.from_numpy(arrays["train"][0])
    review = x[(x != 0).all(dim=1)][0][-12:]  # the last 12 tokens of a real review
    spec = NetworkSpec((200,), 1, vocab_size=meta["vocab_size"])
    net = build_network("rnn", spec, {"cell": cell, "hidden_size": 5, "bidirectional": True}).eval()
    alone = net.recurrent(net.embedding(review[None]))[0][0, 0, 5:]  # backward state after reading the review
    for pad in (3, 188):
        padded = torch.cat([torch.zeros(pad, dtype=torch.long), review])[None]
        outputs, _ = net.recurrent(net.embedding(padded))
        torch.testing.assert_close(outputs[0, pad, 5:], alone)  # at the first real token: the padding is unseen
        summary = net.summarise(outputs, padded != 0)
        torch.testing.assert_close(summary[0, 5:], alone)
        torch.testing.assert_close(summary[0, :5], outputs[0, -1, :5])  # forward: after the last token


# ------------------------------------------------------------------------------------------- conv1d


def test_conv1d_length_is_the_notes_formula():
    assert conv1d_length(10, 5, 2) == 3  # notes 002: 1..10 with a filter of 5 and stride 2 -> 3 elements
    assert conv1d_length(128, 5, 2, layers=2) == 29  # 128 -> 62 -> 29
    assert conv1d_length(4, 5, 2) == 0


def test_conv1d_text_downsamples_ten_tokens_to_three(imdb):
    arrays, meta = imdb
    x = torch.from_numpy(arrays["train"][0][:8, -10:])
    vocab, emb = meta["vocab_size"], 6
    spec = NetworkSpec((10,), 1, vocab_size=vocab, activation="relu", batch_norm=True)
    net = build_network("conv1d_text", spec, {"embedding_dim": emb, "channels": [4], "kernel_size": 5, "stride": 2})
    features = net.convs(net.embedding(x).transpose(1, 2))
    assert features.shape == (8, 4, 3)
    assert net(x).shape == (8,)
    assert n_params(net) == vocab * emb + (emb * 5 + 1) * 4 + 2 * 4 + (4 + 1) * 1  # embedding, conv, BN, output
    with pytest.raises(ValueError, match=r"seq_len 8 is too short .* reaches 0"):
        build_network("conv1d_text", NetworkSpec((8,), 1, vocab_size=vocab))


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_conv1d_pooling_skips_windows_of_padding_only(pooling):
    spec = NetworkSpec((10,), 2, vocab_size=30)
    params = {"embedding_dim": 3, "channels": [4], "kernel_size": 5, "stride": 2, "pooling": pooling}
    net = build_network("conv1d_text", spec, params).eval()
    tokens = torch.tensor([[0, 0, 0, 0, 0, 0, 7, 3, 9, 4]])  # window 0 covers positions 0-4: padding only
    features = net.convs(net.embedding(tokens).transpose(1, 2))[0]  # (4, 3)
    kept = features[:, 1:]
    pooled = kept.amax(dim=1) if pooling == "max" else kept.mean(dim=1)
    torch.testing.assert_close(net(tokens)[0], net.output(pooled))


# ------------------------------------------------------------------------------------------- char_rnn


@pytest.fixture(scope="module")
def shakespeare(mirror: Path) -> torch.Tensor:
    """The first 2,000 characters of tiny Shakespeare as symbol ids (N = 4 rows of 500)."""
    path = next(p for p in (mirror / "tiny_shakespeare").iterdir() if p.suffix in (".txt", ".gz"))
    text = (gzip.open(path, "rt") if path.suffix == ".gz" else path.open()).read()[:2000]
    vocab = sorted(set(text))
    return torch.tensor([vocab.index(c) for c in text]).reshape(4, 500)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_char_rnn_step_carries_the_state(shakespeare, cell):
    vocab = int(shakespeare.max()) + 1
    spec = NetworkSpec((500,), vocab, dropout=0.3, vocab_size=vocab)
    net = build_network("char_rnn", spec, {"cell": cell, "embedding_dim": 8, "hidden_size": 16, "num_layers": 2})
    net.eval()
    whole = net(shakespeare)
    assert whole.shape == (4, 500, vocab)
    first, state = net.step(shakespeare[:, :230])
    state = detach_state(state)
    second, state = net.step(shakespeare[:, 230:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole)
    h = state[0] if cell == "lstm" else state
    assert isinstance(state, tuple) == (cell == "lstm") and h.shape == (2, 4, 16)
    # a fresh state is not the carried one: the second half alone gives other logits
    assert not torch.allclose(net.step(shakespeare[:, 230:])[0], second)
    expected = vocab * 8 + recurrent_parameter_count(cell, 8, 16, 2) + (16 + 1) * vocab
    assert n_params(net) == expected


def test_char_rnn_needs_the_vocabulary_as_its_outputs():
    with pytest.raises(ValueError, match="vocab_size == spec.num_outputs"):
        build_network("char_rnn", NetworkSpec((50,), 2, vocab_size=65))
    with pytest.raises(ValueError, match="vocab_size == spec.num_outputs"):
        build_network("char_rnn", NetworkSpec((50,), 65))


# ------------------------------------------------------------------------------------------- clipping


def _fit_one_step(imdb, clip: float | None) -> GradientDiagnostics:
    arrays, meta = imdb
    x, y = (torch.from_numpy(a) for a in arrays["train"])
    module = SupervisedModule(
        "rnn",
        {"input_shape": meta["input_shape"], "num_outputs": 1, "dropout": 0.0, "vocab_size": meta["vocab_size"]},
        {"cell": "rnn", "embedding_dim": 16, "hidden_size": 16},
        "binary",
        {"classes": meta["classes"], "num_classes": 2, "input_shape": meta["input_shape"]},
        "bce",
        {"name": "sgd", "lr": 0.1},
        {"type": "none", "strength": 0.0},
        "xavier_uniform",
    )
    callback = GradientDiagnostics(every_n_steps=1)
    trainer = L.Trainer(
        max_steps=1,
        gradient_clip_val=clip,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, TensorBatches(x, y, batch_size=64, shuffle=True, seed=0))
    return callback


def test_gradient_norm_is_recorded_before_and_after_clipping(imdb):
    L.seed_everything(0, verbose=False)
    clip = 1e-3  # well below the norm of a first step on real reviews, so this step is clipped
    callback = _fit_one_step(imdb, clip)
    (record,) = callback.records
    before, after = record.total_norm, record.total_norm_clipped
    assert after is not None and math.isfinite(before)
    assert after <= clip + 1e-6 <= before
    assert after == pytest.approx(clip, rel=1e-3)  # norm clipping rescales to the clip value exactly
    summary = callback.summary()
    assert summary["grad_norm_total_max"] == before
    assert summary["grad_norm_clipped_max"] == after and summary["clipped_fraction"] == 1.0

    L.seed_everything(0, verbose=False)
    unclipped = _fit_one_step(imdb, None)
    assert unclipped.records[0].total_norm == pytest.approx(before, rel=1e-5)  # same step, same gradient
    assert unclipped.records[0].total_norm_clipped is None
    assert "grad_norm_clipped_max" not in unclipped.summary()


def test_old_gradient_records_still_load():
    """Callback state written before clipped norms were recorded (no ``total_norm_clipped``) loads."""
    old = {"step": 0, "grad_norm": {"a": 1.0}, "grad_mean": {"a": 0.1}, "grad_max": {"a": 0.5}}
    old |= {"weight_norm": {"a": 2.0}, "total_norm": 1.0, "ratio": 1.0, "dead": {}, "saturated": {}}
    callback = GradientDiagnostics()
    callback.load_state_dict({"records": [old], "non_finite_steps": 0})
    assert callback.records == [GradientRecord(**old)] and callback.records[0].total_norm_clipped is None
    assert "clipped_fraction" not in callback.summary()


def test_epoch_seconds_count_the_training_batches_of_each_epoch(imdb):
    """``History.train_epoch_seconds``: one entry per trained epoch, its clock stopped when the epoch's validation
    starts (Lightning 2 validates inside the epoch, before ``on_train_epoch_end``): validation is not counted."""
    from pipelines.training.callbacks import History

    arrays, meta = imdb
    module = SupervisedModule(
        "conv1d_text",
        {"input_shape": meta["input_shape"], "num_outputs": 1, "vocab_size": meta["vocab_size"]},
        {"embedding_dim": 8, "channels": [8]},
        "binary",
        {"classes": meta["classes"], "num_classes": 2, "input_shape": meta["input_shape"]},
        "bce",
        {"name": "adam", "lr": 1e-3},
        {"type": "none", "strength": 0.0},
        "xavier_uniform",
    )
    history, stops = History(), []

    class Order(L.Callback):
        def on_validation_start(self, trainer, pl_module):
            stops.append(len(history.train_epoch_seconds))

    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[history, Order()],
        num_sanity_val_steps=0,
    )
    (x, y), (xv, yv) = ((torch.from_numpy(a) for a in arrays[s]) for s in ("train", "val"))
    trainer.fit(module, TensorBatches(x, y, batch_size=32, shuffle=True, seed=0), TensorBatches(xv, yv, batch_size=32))
    assert len(history.train_epoch_seconds) == 2 and all(s > 0 for s in history.train_epoch_seconds)
    assert stops == [1, 2]  # each epoch's clock had stopped when its validation began
