"""Building and fitting an experiment's module: the same for the train stage, every tuning trial and every fit of
a diagnostic study, so they all train exactly alike.

- :func:`build_module`: the task's LightningModule, the network initialised with the seeded RNG and, for transfer
  learning, its backbone loaded (:func:`load_pretrained`);
- :func:`make_datamodule`, :func:`make_trainer` and :func:`fit_callbacks`: the batches, the seeded deterministic
  ``Trainer`` and the callbacks every fit uses (early stopping, backbone freezing);
- :func:`gradient_diagnostics`, :func:`seed_everything`, :func:`save_network`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from pipelines import REPO_ROOT
from pipelines.config import ExperimentConfig


def build_module(exp: ExperimentConfig, meta: dict[str, Any]):
    """The LightningModule of ``exp``'s task (:meth:`pipelines.tasks.base.Task.module_class`, built with its
    ``from_experiment``) on a prepared dataset's ``meta``: the network initialised with the seeded RNG, then, for a
    transfer experiment, its backbone loaded from ``exp.pretrained.path`` (:func:`load_pretrained`).

    Raises:
        ConfigError: the pretrained weights file is missing or does not fit the backbone.
    """
    from pipelines.tasks import get_task

    module = get_task(exp.task).module_class().from_experiment(exp, meta)
    if exp.pretrained:
        load_pretrained(exp, module.network)
    return module


def fit_callbacks(exp: ExperimentConfig) -> list:
    """The callbacks of every fit of ``exp``, whether the train stage, a tuning trial or a diagnostic study: early
    stopping (notes 001, "Early Stopping Callback") when enabled, and :class:`pipelines.training.callbacks.FreezeBackbone` when
    a transfer experiment fine-tunes a frozen backbone."""
    callbacks: list = []
    if exp.early_stopping.enabled:
        from lightning.pytorch.callbacks import EarlyStopping

        es = exp.early_stopping
        callbacks.append(EarlyStopping(monitor=es.monitor, mode=es.mode, min_delta=es.min_delta, patience=es.patience))
    return callbacks + transfer_callbacks(exp)


def transfer_callbacks(exp: ExperimentConfig) -> list:
    """``[FreezeBackbone]`` when ``exp`` fine-tunes a frozen backbone (:class:`pipelines.training.callbacks.FreezeBackbone`),
    else ``[]``."""
    if not (exp.pretrained and exp.pretrained.freeze_backbone):
        return []
    from pipelines.training.callbacks import FreezeBackbone

    return [FreezeBackbone(exp.pretrained.unfreeze_at_epoch, exp.pretrained.backbone_lr_ratio)]


def make_datamodule(exp: ExperimentConfig, data, seed: int):
    """The seeded datamodule of ``exp``'s task (:meth:`pipelines.tasks.base.Task.datamodule_class`, by default
    :class:`pipelines.data.datamodule.ArrayDataModule`) over prepared ``data`` (batches of ``exp.batch_size``; the
    whole train split at once for full-batch gradient descent, optimizer ``gd``)."""
    from pipelines.tasks import get_task

    return get_task(exp.task).datamodule_class()(data, batch_size=exp.train_batch_size, seed=seed)


def load_pretrained(exp: ExperimentConfig, network) -> dict[str, Any]:
    """Load ``exp.pretrained``'s backbone weights into ``network``; returns what to log as ``pretrained.*``
    params: the file's sha256, the tensors and parameters loaded and the key prefix.

    Raises:
        ConfigError: the file is missing or does not fit the backbone (naming the key and the file).
    """
    import hashlib

    from models.transfer import PretrainedWeightsError, load_backbone
    from pipelines.config import ConfigError

    if exp.pretrained is None:
        raise ValueError("load_pretrained: the experiment has no pretrained: block")
    path = REPO_ROOT / exp.pretrained.path
    try:
        loaded = load_backbone(network, path, exp.pretrained.prefix)
    except PretrainedWeightsError as exc:
        raise ConfigError(f"params.yaml: pretrained.path: {exc}") from None
    return {
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "loaded_tensors": loaded["tensors"],
        "loaded_parameters": loaded["parameters"],
        "prefix": loaded["prefix"],
    }


def seed_everything(seed: int) -> None:
    import lightning.pytorch as L

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS on GPUs
    L.seed_everything(seed, workers=True, verbose=False)


def make_trainer(
    exp: ExperimentConfig,
    *,
    logger,
    callbacks: list,
    default_root_dir: Path,
    enable_checkpointing: bool = True,
    enable_progress_bar: bool = True,
):
    """The seeded, deterministic Lightning ``Trainer`` of an experiment's ``trainer:`` block.

    Shared by the train stage and by every tuning trial, so a trial trains exactly as ``train`` would.
    Validation runs at least once (``check_val_every_n_epoch`` is capped at ``max_epochs``); no sanity check.
    """
    import lightning.pytorch as L

    t = exp.trainer
    return L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=t.precision,  # type: ignore[arg-type]  # a str of Lightning's names; Lightning validates it
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        check_val_every_n_epoch=min(t.check_val_every_n_epoch, t.max_epochs),  # validate at least once
        gradient_clip_val=t.gradient_clip_val,
        gradient_clip_algorithm=t.gradient_clip_algorithm if t.gradient_clip_val is not None else None,
        deterministic=t.deterministic,
        log_every_n_steps=t.log_every_n_steps,
        logger=logger,
        callbacks=callbacks,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        default_root_dir=str(default_root_dir),
        enable_checkpointing=enable_checkpointing,
        enable_progress_bar=enable_progress_bar,
    )


def gradient_diagnostics(exp: ExperimentConfig):
    """The experiment's :class:`pipelines.diagnostics.GradientDiagnostics` callback, or ``None`` when disabled."""
    cfg = exp.diagnostics.gradients
    if not cfg.enabled:
        return None
    from pipelines.training.gradient_flow import GradientDiagnostics

    return GradientDiagnostics(
        every_n_steps=cfg.every_n_steps,
        vanishing_ratio=cfg.vanishing_ratio,
        exploding_norm=cfg.exploding_norm,
        exploding_ratio=cfg.exploding_ratio,
        saturation_threshold=cfg.saturation_threshold,
    )


def save_network(network, path: Path) -> None:
    """Write ``network.state_dict()`` to ``path`` atomically (load with ``torch.load(path, weights_only=True)``)."""
    import torch

    from pipelines.io import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save(network.state_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())
