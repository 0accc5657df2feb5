"""Running a trained experiment: its module reloaded from the best checkpoint, and its outputs on every split.
Shared by ``evaluate`` and the diagnostics' refits."""

from __future__ import annotations

import pickle
from typing import Any

from pipelines.config import ConfigError
from pipelines.paths import CHECKPOINT_ROOT


def predict(network, x, batch_size: int | None = None):
    """Network outputs for all of ``x`` (a tensor ``(N, ...)``), in eval mode without gradients, on the CPU, in
    batches of ``batch_size`` (default :data:`pipelines.data.EVAL_BATCH_SIZE`)."""
    import torch

    from pipelines.data.datamodule import EVAL_BATCH_SIZE

    batch_size = batch_size or EVAL_BATCH_SIZE
    network.eval()
    with torch.inference_mode():
        return torch.cat([network(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).float()


def split_outputs(network, data, splits: tuple[str, ...] = ("train", "val", "test"), task=None) -> dict[str, Any]:
    """``{split: Outputs(outputs, x, y)}`` of ``network`` on the prepared ``data``: the outputs of
    :meth:`task.compute_outputs <pipelines.tasks.base.Task.compute_outputs>` when a ``task`` is given, else the
    network's own (:func:`predict`)."""
    from pipelines.data.datamodule import to_tensor
    from pipelines.tasks.base import Outputs

    out = {}
    for split in splits:
        x, y = to_tensor(data.x[split]), to_tensor(data.y[split])
        out[split] = Outputs(predict(network, x) if task is None else task.compute_outputs(network, x, y), x, y)
    return out


def load_module(name: str, exp):
    """The best checkpoint of ``train@<name>``, loaded on the CPU with the task's LightningModule class (weights
    only: loading runs no pickled code). Returns ``(module, checkpoint info)``.

    Raises:
        ConfigError: ``checkpoints/<name>/checkpoint.json`` is missing (train has not run), or the checkpoint is
            missing, truncated or not a checkpoint of this experiment (the message names the file and says to
            rerun ``train@<name>``).
    """
    import json

    from pipelines.tasks import get_task

    info_path = CHECKPOINT_ROOT / name / "checkpoint.json"
    try:
        info = json.loads(info_path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{info_path}: missing; run `dvc repro train@{name}` first") from None
    module_class = get_task(exp.task).module_class()
    # `.__func__`: the classmethod's function itself. Lightning's wrapper around `load_from_checkpoint` first walks
    # `inspect.stack()`, reading the source of every frame, to refuse calls on an instance: 0.5 s per call here.
    path = CHECKPOINT_ROOT / name / info["best_checkpoint"]
    try:
        module = module_class.load_from_checkpoint.__func__(  # type: ignore[attr-defined]
            module_class, path, map_location="cpu", weights_only=True
        )
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing; run `dvc repro -f train@{name}`") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, pickle.UnpicklingError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"{path}: not a readable checkpoint of {name} ({reason[:200]}); rerun `dvc repro -f train@{name}`"
        ) from None
    return module, info
