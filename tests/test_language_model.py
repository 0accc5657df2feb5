"""The ``language_model`` task on real Tiny Shakespeare (notes 002, "TYPES OF RNN" one-to-many, "BACK-PROPAGATION
THRU TIME"): the prepared chunks and the stream batches are the text itself, in order; truncated back-propagation
through time carries the state across chunks and cuts the gradient; bits per character is the loss over ln 2; the
sampler is seeded; the served model reads raw text."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.config import DatasetConfig, load_params
from pipelines.data.encoding import CharsInput, RawInputError, raw_input_for
from pipelines.data.prepared import PreparedData
from pipelines.data.preparers import prepare_dataset
from pipelines.data.preparers.chars import decode_chars, encode_chars
from pipelines.data.streams import StreamDataModule, stream_order

EXPERIMENT = "char_lstm_shakespeare"


@pytest.fixture(scope="module")
def params():
    return load_params(profile="tiny")


@pytest.fixture(scope="module")
def text(mirror) -> str:
    return (mirror / "tiny_shakespeare" / "input.txt").read_text()


@pytest.fixture(scope="module")
def prepared(params, mirror):
    return prepare_dataset("tiny_shakespeare", params.dataset("tiny_shakespeare"), 0, mirror=mirror)


@pytest.fixture(scope="module")
def data(prepared) -> PreparedData:
    arrays, meta, _ = prepared
    return PreparedData(meta, {s: x for s, (x, _) in arrays.items()}, {s: y for s, (_, y) in arrays.items()})


def _module(params, meta, dropout: float = 0.0):
    from pipelines.training.trainer import build_module, seed_everything

    exp = params.experiment(EXPERIMENT).model_copy(update={"dropout": dropout})
    seed_everything(0)
    return build_module(exp, meta), exp


def test_prepared_splits_are_the_text_in_order(prepared, text):
    arrays, meta, _ = prepared
    vocab = meta["vocab"]
    assert vocab == sorted(set(text)) and meta["vocab_size"] == len(vocab) == 65
    steps = meta["tbptt_steps"]
    assert meta["input_shape"] == [steps]
    (train_start, train_end), (val_start, val_end), (test_start, test_end) = (
        meta["split_chars"][s] for s in ("train", "val", "test")
    )
    assert train_start == 0 and val_end == test_start and test_end == len(text)
    assert val_end - val_start == test_end - test_start == math.ceil(0.05 * len(text))
    for split, (x, y) in arrays.items():
        start = meta["split_chars"][split][0]
        assert x.dtype == y.dtype == np.int64 and x.shape == y.shape and x.shape[1] == steps
        assert decode_chars(x.ravel(), vocab) == text[start : start + x.size]  # the chunks are the text, in order
        assert decode_chars(y.ravel(), vocab) == text[start + 1 : start + 1 + y.size]  # shifted by one character


def test_stream_batches_continue_each_row_on_the_real_text(data, text):
    dm = StreamDataModule(data, batch_size=8, seed=0)
    batches = list(dm.train_dataloader())
    vocab, steps = data.meta["vocab"], data.meta["tbptt_steps"]
    per_stream = len(data.x["train"]) // 8
    assert len(batches) == per_stream and all(x.shape == (8, steps) for x, _ in batches)
    for (x, y), (x_next, _) in zip(batches, batches[1:]):
        assert torch.equal(x[:, 1:], y[:, :-1])  # the targets are the inputs shifted by one character
        assert torch.equal(x_next[:, 0], y[:, -1])  # row b of batch k+1 starts with row b of batch k's next char
    for b in (0, 3, 7):  # each row, read across the batches, is one stretch of the text
        stream = decode_chars(torch.cat([x[b] for x, _ in batches]).tolist(), vocab)
        start = b * per_stream * steps
        assert stream == text[start : start + per_stream * steps]
    # evaluation keeps every chunk (the last stream shorter), each once
    order = stream_order(11, 4, drop_last=False)
    assert sorted(torch.cat(order).tolist()) == list(range(11))
    assert [index.tolist() for index in order] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    with pytest.raises(ValueError, match="fewer than batch_size 100000 parallel streams"):
        StreamDataModule(data, batch_size=100_000, seed=0)


def test_tbptt_carries_the_state_and_stops_the_gradient_at_the_chunk(params, data):
    module, _ = _module(params, data.meta)
    module.train()
    batches = iter(StreamDataModule(data, batch_size=4, seed=0).train_dataloader())
    (x0, _), (x1, y1) = next(batches), next(batches)
    embedded: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        if output.requires_grad:  # the steps that build a graph, in order
            output.retain_grad()
            embedded.append(output)

    hook = module.network.embedding.register_forward_hook(keep)
    module.on_train_epoch_start()
    assert module.carried_state() is None
    logits0 = module(x0)
    h, c = module.carried_state()
    assert not h.requires_grad and h.grad_fn is None and c.grad_fn is None  # carried, detached
    assert h.abs().sum() > 0
    with torch.no_grad():  # the state is the one chunk 0 ended in
        _, (h_ref, _) = module.network.step(x0)
    torch.testing.assert_close(h, h_ref)
    logits1 = module(x1)
    loss = module.loss_fn(logits1, y1)
    loss.backward()
    assert embedded[1].grad is not None and embedded[1].grad.abs().sum() > 0
    assert embedded[0].grad is None  # chunk 0's inputs get no gradient from chunk 1's loss
    # the carried state is used: chunk 1 from zeros gives other logits
    with torch.no_grad():
        assert not torch.allclose(logits1, module.network(x1))
    hook.remove()
    # control: without the detach, the gradient does reach chunk 0
    embedded.clear()
    hook = module.network.embedding.register_forward_hook(keep)
    _, state = module.network.step(x0)
    logits, _ = module.network.step(x1, state)
    module.loss_fn(logits, y1).backward()
    assert embedded[0].grad is not None and embedded[0].grad.abs().sum() > 0
    hook.remove()
    module.on_train_epoch_start()
    assert module.carried_state() is None and logits0.shape == (4, data.meta["tbptt_steps"], 65)


def test_bits_per_char_is_the_loss_over_ln2_and_evaluate_reads_the_stream_alike(params, data, tmp_path):
    from pipelines.tasks import get_task
    from pipelines.training.inference import split_outputs
    from pipelines.training.trainer import make_datamodule, make_trainer

    module, exp = _module(params, data.meta)
    exp = exp.model_copy(update={"trainer": exp.trainer.model_copy(update={"max_epochs": 1, "limit_train_batches": 5})})
    exp = exp.model_copy(update={"trainer": exp.trainer.model_copy(update={"limit_val_batches": 1.0})})
    trainer = make_trainer(
        exp,
        logger=False,
        callbacks=[],
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, datamodule=make_datamodule(exp, data, 0))
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert logged["val_bits_per_char"] == pytest.approx(logged["val_loss"] / math.log(2), rel=1e-5)
    assert logged["val_perplexity"] == pytest.approx(math.exp(logged["val_loss"]), rel=1e-5)
    assert logged["train_bits_per_char"] == pytest.approx(logged["train_data_loss"] / math.log(2), rel=1e-5)
    task = get_task("language_model")(data.meta)
    # evaluate's outputs (per-character nats along streams, state carried) give what validation logged
    summary = split_outputs(module.network, data, ("val",), task=task)["val"]
    assert summary.outputs.shape == summary.y.shape
    metrics = task.split_metrics(summary.outputs, summary.x, summary.y)
    assert metrics["bits_per_char"] == pytest.approx(logged["val_bits_per_char"], rel=1e-4)
    # on logits (each chunk from a zero state) the metric is the cross-entropy over ln 2
    raw = split_outputs(module.network, data, ("val",))["val"]
    nats = torch.nn.functional.cross_entropy(raw.outputs.reshape(-1, 65), raw.y.reshape(-1)).item()
    assert task.split_metrics(raw.outputs, raw.x, raw.y)["bits_per_char"] == pytest.approx(nats / math.log(2))


def test_samples_are_seeded_and_reproducible(params, data):
    from pipelines.training.language_model import sample

    module, _ = _module(params, data.meta, dropout=0.2)
    vocab = data.meta["vocab"]
    first = sample(module.network, vocab, "ROMEO:\n", 500, 0.5, seed=0)
    assert len(first) == 500 and set(first) <= set(vocab)
    assert sample(module.network, vocab, "ROMEO:\n", 500, 0.5, seed=0) == first  # eval mode: dropout off
    assert sample(module.network, vocab, "ROMEO:\n", 500, 0.5, seed=1) != first
    assert sample(module.network, vocab, "ROMEO:\n", 500, 1.0, seed=0) != first
    with pytest.raises(ValueError, match="temperature must be positive"):
        sample(module.network, vocab, "ROMEO:\n", 5, 0.0)
    with pytest.raises(ValueError, match="'é' .* not in the vocabulary of 65 symbols"):
        sample(module.network, vocab, "é", 5)


def test_evaluate_adds_samples_and_the_report_shows_them(params, data):
    from pipelines.tasks import get_task
    from pipelines.tasks.base import Evaluation
    from pipelines.training.inference import split_outputs

    module, _ = _module(params, data.meta)
    task = get_task("language_model")(data.meta)
    small = PreparedData(data.meta, {s: x[:64] for s, x in data.x.items()}, {s: y[:64] for s, y in data.y.items()})
    evaluation = Evaluation(EXPERIMENT, small, split_outputs(module.network, small, task=task), network=module.network)
    task.evaluate(evaluation)
    assert "predictions.png" in evaluation.figures
    samples = evaluation.report["samples"]
    assert [s["temperature"] for s in samples] == [0.5, 1.0] and all(len(s["text"]) == 500 for s in samples)
    assert samples[0]["text"] in evaluation.tables["samples.txt"]
    section = "\n".join(get_task("language_model").report_section(EXPERIMENT, {"report": evaluation.report}))
    assert "Temperature 0.5" in section and samples[1]["text"] in section
    assert get_task("language_model").report_section(EXPERIMENT, {}) == []


def test_raw_text_is_served_the_next_character(params, data, tmp_path):
    from pipelines.serving.bundle import Bundle

    raw = raw_input_for(data.meta, Path("unused"))
    assert isinstance(raw, CharsInput)
    x = np.asarray(data.x["test"][:3])
    example = raw.example(x)
    np.testing.assert_array_equal(raw.encode(example), x)  # prepared chunks -> raw text -> the same ids
    short = raw.encode(pd.DataFrame({"text": ["ROMEO:"]}))
    assert decode_chars(short[0], data.meta["vocab"]).endswith("\nROMEO:") and short.shape == (1, x.shape[1])
    with pytest.raises(RawInputError, match=r"row 1: character 'é'.*not in the vocabulary"):
        raw.encode(pd.DataFrame({"text": ["fine", "café"]}))
    module, _ = _module(params, data.meta)
    bundle = Bundle.read(Bundle.from_module(module, data.meta, tmp_path).write(tmp_path / "bundle"))
    answer = bundle.predict(pd.DataFrame({"text": ["First Citizen:\nBefore we proceed any further, hear me speak"]}))
    assert list(answer.columns) == ["next_char", "probability", "alternatives"]
    assert answer["next_char"][0] in data.meta["vocab"] and 0 < answer["probability"][0] <= 1


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="max_train_chars 40 leaves no training chunk of tbptt_steps 50"):
        DatasetConfig(max_train_chars=40, tbptt_steps=50)
    with pytest.raises(ValueError, match="tbptt_steps"):
        DatasetConfig(tbptt_steps=1)
    with pytest.raises(ValueError, match=r"character '\\t' \(position 2\) is not in the vocabulary of 2 symbols"):
        encode_chars("ab\t", ["a", "b"])


def test_tune_runs_two_trials_ranked_by_bits_per_char(tmp_path, mirror):
    """``deepnotes tune`` on the language model (tiny profile): 2 trials of the char_rnn space (cell, width, depth,
    streams), each a nested MLflow run with the task's metrics, and the best params written."""
    import subprocess
    import sys

    import mlflow
    import yaml

    from tests.conftest import tiny_code_copy

    root = tmp_path / "repo"
    env = tiny_code_copy(root, mirror)
    for args in (
        ("pipelines.stages.prepare", "tiny_shakespeare"),
        ("pipelines.stages.augment", "tiny_shakespeare"),
        ("pipelines.stages.tune", EXPERIMENT, "--n-trials", "2", "--study-name", "lm"),
    ):
        done = subprocess.run([sys.executable, "-m", *args], cwd=root, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{args} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("deepnotes-tune/lm")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and all(r.data.tags["state"] == "COMPLETE" for r in children)
    for run in children:
        metrics = run.data.metrics
        assert metrics["val_bits_per_char"] == pytest.approx(metrics["val_loss"] / math.log(2), rel=1e-5)
        assert "val_perplexity" in metrics and run.data.params["model.cell"] in ("rnn", "lstm", "gru")
    tuned = yaml.safe_load((root / "params" / "tuned" / f"{EXPERIMENT}.yaml").read_text())
    best = min(r.data.metrics["val_bits_per_char"] for r in children)
    assert tuned["value"] == pytest.approx(best)
    assert {"cell", "hidden_size", "num_layers"} <= set(tuned["params"]["model"])
