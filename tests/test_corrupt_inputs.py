"""Corrupt inputs of the torch stages (issue 12, section 3): a truncated prepared array, a garbled ``meta.json`` and a
truncated checkpoint each give one error naming the file and the stage to rerun, never a traceback.

The prepared data is the real AND truth table (``prepare_dataset("logic_and")``) written with ``write_prepared``;
the checkpoint is a real ``best.ckpt`` of a perceptron, cut in half.
"""

from __future__ import annotations

import json

import pytest

from pipelines.config import ConfigError, load_params
from pipelines.data.prepared import PreparedDataError, load_prepared, write_prepared
from pipelines.data.preparers import prepare_dataset


@pytest.fixture
def prepared(tmp_path, mirror):
    params = load_params()
    arrays, meta, extra = prepare_dataset("logic_and", params.datasets["logic_and"], params.seed, mirror=mirror)
    return write_prepared(tmp_path / "data" / "prepared" / "logic_and", arrays, meta, extra)


def test_a_truncated_array_names_the_file_and_the_stage(prepared):
    array = prepared / "train_x.npy"
    array.write_bytes(array.read_bytes()[:40])
    with pytest.raises(PreparedDataError) as info:
        load_prepared(prepared)
    message = str(info.value)
    assert message.startswith(f"{array}: unreadable")
    assert message.endswith("rerun `dvc repro -f prepare@logic_and`")


def test_a_garbled_meta_json_names_the_file_and_the_stage(prepared):
    (prepared / "meta.json").write_text('{"splits": {"train": 4')
    with pytest.raises(PreparedDataError, match=r"meta.json: not valid JSON .*prepare@logic_and"):
        load_prepared(prepared)


def test_a_truncated_checkpoint_is_one_error_line_naming_train(tmp_path, monkeypatch, capsys):
    import torch

    from pipelines.stages import evaluate
    from pipelines.training import inference
    from pipelines.training.trainer import build_module

    params = load_params()
    exp = params.experiment("perceptron_and")
    module = build_module(exp, {"task": "binary", "input_shape": [2], "num_classes": 2})
    ckpt_dir = tmp_path / "checkpoints" / "perceptron_and"
    ckpt_dir.mkdir(parents=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {}}, ckpt_dir / "best.ckpt")
    (ckpt_dir / "checkpoint.json").write_text(json.dumps({"best_checkpoint": "best.ckpt"}))
    ckpt = ckpt_dir / "best.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    monkeypatch.setattr(inference, "CHECKPOINT_ROOT", tmp_path / "checkpoints")

    with pytest.raises(ConfigError, match=r"best.ckpt: not a readable checkpoint of perceptron_and .*train@"):
        inference.load_module("perceptron_and", exp)
    assert evaluate.main(["perceptron_and"]) == 2  # the stage: one line, exit 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"error: {ckpt}: not a readable checkpoint"), err
