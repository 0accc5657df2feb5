"""Tasks as plug-ins (:mod:`pipelines.tasks`): every registered task builds, trains and evaluates on a real data slice;
nothing outside the task modules branches on a task name; the autoencoder of the ``reconstruction`` task learns."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.config import load_params
from pipelines.data.prepared import PreparedData
from pipelines.data.preparers import prepare_dataset
from pipelines.tasks import get_task, task_names
from pipelines.tasks.base import Evaluation, Task

REPO_ROOT = Path(__file__).resolve().parent.parent
#: A branch on a task's name: ``task == ...``, ``task.name in (...)``, ``== "regression"`` and the like.
BRANCH = re.compile(
    r"(\btask(\.name|_name)?\s*(==|!=|\bin\s*[(\[{]|\bnot\s+in\b))"
    r"|((==|!=)\s*[\"'](" + "|".join(task_names()) + r")[\"'])"
    r"|([\"'](" + "|".join(task_names()) + r")[\"']\s*(==|!=|in\b))"
)


@pytest.fixture(scope="module")
def params():
    return load_params(profile="tiny")


def _experiment_of(params, task: str) -> str:
    """The first experiment of ``params.yaml`` that trains ``task`` (every task must have one)."""
    names = [name for name, exp in params.all_experiments.items() if exp.task == task]
    assert names, f"no experiment in params.yaml trains the {task} task"
    return names[0]


def _slice(prepared, n: int = 256) -> PreparedData:
    arrays, meta, _ = prepared
    return PreparedData(
        meta,
        {s: np.asarray(x[:n]) for s, (x, _) in arrays.items()},
        {s: np.asarray(y[:n]) for s, (_, y) in arrays.items()},
    )


def _one_step(exp):
    """``exp`` with a trainer of one epoch of one train batch and one val batch."""
    limits = {"max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 1}
    return exp.model_copy(update={"trainer": exp.trainer.model_copy(update=limits)})


def _fit(module, exp, data, tmp_path):
    """Fit ``module`` as the train stage would (its Trainer and batches), without logger or checkpoints."""
    from pipelines.training.trainer import make_datamodule, make_trainer

    trainer = make_trainer(
        exp,
        logger=False,
        callbacks=[],
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, datamodule=make_datamodule(exp, data, 0))
    return trainer


def test_no_task_branches_outside_the_task_modules():
    offenders = []
    for folder in ("pipelines", "models"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if "tasks" in path.relative_to(REPO_ROOT).parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if BRANCH.search(line):
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not offenders, "a task's logic belongs in its task module:\n" + "\n".join(offenders)


def test_the_branch_rule_catches_a_branch():
    assert BRANCH.search('    if exp.task == "regression":') and BRANCH.search("if task in ('binary', 'multiclass'):")
    assert BRANCH.search('metric = "mse" if meta["task"] == "regression" else "acc"')
    assert not BRANCH.search("task = get_task(exp.task)")


def test_registry_lists_every_task_and_imports_no_torch():
    code = (
        "import sys; from pipelines.tasks import get_task, task_names; "
        "[get_task(t).monitors() for t in task_names()]; print(','.join(task_names())); "
        "assert 'torch' not in sys.modules, 'a task module imported torch at import time'"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().split(",") == [
        "binary",
        "embedding",
        "forecasting",
        "language_model",
        "localization",
        "multiclass",
        "reconstruction",
        "regression",
        "seq2seq",
    ]
    for name in task_names():
        task = get_task(name)
        # the primary metric is monitored on val: a per-split metric, or one the task logs itself (seq2seq's bleu,
        # embedding's analogy accuracy)
        assert issubclass(task, Task) and task.name == name and task.losses and f"val_{task.primary}" in task.monitors()
        assert task.headline in task.metrics and task.summary[0] == task.primary
        assert task.mode(f"val_{task.primary}") == ("max" if task.higher_is_better else "min")
    with pytest.raises(KeyError, match="unknown task 'ranking'.*registered tasks: binary"):
        get_task("ranking")


@pytest.mark.parametrize("task_name", task_names())
def test_every_task_trains_one_step_and_evaluates_on_real_data(task_name, params, mirror, tmp_path):
    from pipelines.training.inference import split_outputs
    from pipelines.training.trainer import build_module, seed_everything

    name = _experiment_of(params, task_name)
    exp = params.experiment(name)
    data = _slice(prepare_dataset(exp.dataset, params.dataset(exp.dataset), 0, mirror=mirror))
    seed_everything(0)
    module = build_module(exp, data.meta)
    assert type(module) is get_task(task_name).module_class()
    before = {k: v.clone() for k, v in module.network.state_dict().items()}
    exp = _one_step(exp)
    trainer = _fit(module, exp, data, tmp_path)
    assert any(not torch.equal(before[k], v) for k, v in module.network.state_dict().items()), "no weight moved"
    assert f"train_{module.task.headline}" in trainer.callback_metrics
    assert {f"val_{m}" for m in module.task.metrics} <= set(trainer.callback_metrics)

    splits = split_outputs(module.network, data, task=module.task)  # as evaluate computes them
    metrics = {s: module.task.split_metrics(o.outputs, o.x, o.y) for s, o in splits.items()}
    assert set(module.task.metrics) <= set(metrics["test"]) and all(np.isfinite(list(metrics["test"].values())))
    error = module.task.error(metrics["test"])
    assert np.isfinite(error) and error >= 0
    evaluation = Evaluation(name, data, splits)
    module.task.evaluate(evaluation)
    assert "predictions.png" in evaluation.figures
    for figure in evaluation.figures.values():
        from pipelines import plots

        assert plots.png_bytes(figure)[:4] == b"\x89PNG"
        plots.close(figure)


def test_autoencoder_learns_to_reconstruct_and_beats_the_mean_image(params, mirror, tmp_path):
    """notes 002, "AUTO ENCODERS": the reconstruction error falls with training, and the test PSNR beats every image
    reconstructed as the train split's mean image."""
    from pipelines.config import DatasetConfig
    from pipelines.training.inference import split_outputs
    from pipelines.training.trainer import build_module, seed_everything

    exp = load_params().experiment("autoencoder_mnist")  # the default profile's experiment
    data = _slice(prepare_dataset("mnist", DatasetConfig(max_train_samples=3000), 0, mirror=mirror), n=3000)
    task = get_task("reconstruction")(data.meta)
    seed_everything(0)
    module = build_module(exp, data.meta)
    untrained = task.split_metrics(*vars(split_outputs(module.network, data, ("val",))["val"]).values())
    module.train()
    _fit(module, exp, data, tmp_path)
    splits = split_outputs(module.network, data)
    trained = {s: task.split_metrics(o.outputs, o.x, o.y) for s, o in splits.items()}
    assert trained["val"]["mse"] < 0.5 * untrained["mse"], (untrained, trained["val"])
    evaluation = Evaluation("autoencoder_mnist", data, splits)
    task.evaluate(evaluation)
    baseline = evaluation.test_metrics
    assert trained["test"]["mse"] < baseline["mse_mean_image"]
    assert trained["test"]["psnr"] > baseline["psnr_mean_image"] + 1.0, (trained["test"], baseline)
    # PSNR is 10 log10(1 / MSE) on [0, 1] pixels
    assert trained["test"]["psnr"] == pytest.approx(10 * np.log10(1 / trained["test"]["mse"]), rel=1e-4)


def test_reconstruction_targets_undo_the_channel_standardisation():
    meta = {
        "normalization": {"method": "per-channel standardization", "mean": [0.5, 0.25, 0.0], "std": [0.5, 0.25, 1.0]}
    }
    x = torch.tensor([[[[1.0]], [[-1.0]], [[0.5]]]])
    target = get_task("reconstruction")(meta).loss_targets(x, torch.zeros(1))
    assert target.flatten().tolist() == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="unknown reconstruction loss 'ce'"):
        get_task("reconstruction")(meta).loss("ce")


def _sequence_experiments() -> list[str]:
    """One experiment (the first in params.yaml) of every architecture of the sequence, attention, seq2seq and
    embedding families."""
    from models.registry import REGISTRY

    first: dict[str, str] = {}
    for name, exp in load_params(profile="tiny").all_experiments.items():
        if REGISTRY[exp.architecture].family in ("sequence", "attention", "seq2seq", "embedding"):
            first.setdefault(exp.architecture, name)
    return sorted(first.values())


@pytest.mark.parametrize("name", _sequence_experiments())
def test_every_sequence_architecture_trains_one_step_on_real_data(name, params, mirror, tmp_path):
    """The one-step smoke test of each architecture of models/sequence (rnn, conv1d_text, char_rnn),
    models/attention (transformer_encoder), models/seq2seq (seq2seq_rnn, seq2seq_attention, transformer_seq2seq) and
    models/embedding (word2vec):
    built from its experiment, one optimizer step on a real slice of its
    dataset moves its weights and logs the task's val metrics, with its task's own module and batches."""
    from models.registry import REGISTRY
    from pipelines.training.trainer import build_module, seed_everything

    exp = params.experiment(name)
    data = _slice(prepare_dataset(exp.dataset, params.dataset(exp.dataset), 0, mirror=mirror))
    seed_everything(0)
    module = build_module(exp, data.meta)
    assert type(module) is get_task(exp.task).module_class()
    network_class = REGISTRY[exp.architecture].load()  # the task may wrap it (a forecast's last-value residual)
    assert any(isinstance(m, network_class) for m in module.network.modules())
    before = {k: v.clone() for k, v in module.network.state_dict().items()}
    exp = _one_step(exp)
    trainer = _fit(module, exp, data, tmp_path)
    assert any(not torch.equal(before[k], v) for k, v in module.network.state_dict().items()), "no weight moved"
    assert {f"val_{m}" for m in module.task.metrics} <= set(trainer.callback_metrics)
