"""``train`` stage: ``python -m pipelines.train <experiment>``.

Trains one experiment of ``params.yaml`` with a seeded Lightning ``Trainer`` and tracks it in MLflow:
every resolved param (flattened), per-epoch train/val loss and metrics, the penalty term, the learning rate, epoch
time, git commit, the data hash from ``dvc.lock``, the seed and library versions; then the best checkpoint and the
model (``mlflow.pytorch.log_model`` with a signature, an input example and explicit pip requirements; a
``state_dict`` where export fails).

Outputs: ``checkpoints/<experiment>/{best,last}.ckpt``, ``network.pt`` (the best network's ``state_dict``, weights
only: what a ``transfer`` experiment starts from) and ``checkpoint.json`` (the best checkpoint's file name); the MLflow
run id goes to ``mlflow/runs/<experiment>.json``, outside what DVC hashes, so ``evaluate`` logs into the same run, ``metrics/train/<experiment>.json`` and ``plots/history/<experiment>.csv``.

An experiment under ``transfer:`` (``pretrained:``) first loads its backbone from the weights file
(:func:`models.transfer.load_backbone`) and trains with :class:`pipelines.callbacks.FreezeBackbone` when the backbone
is frozen.
"""

from __future__ import annotations

import time

_PROCESS_START = time.time()

import contextlib  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from pipelines import REPO_ROOT  # noqa: E402
from pipelines.config import ExperimentConfig, Params  # noqa: E402
from pipelines.io import atomic_write_json, atomic_write_text  # noqa: E402

log = logging.getLogger("deepnotes.train")

CHECKPOINT_ROOT = REPO_ROOT / "checkpoints"
METRICS_ROOT = REPO_ROOT / "metrics"
PLOTS_ROOT = REPO_ROOT / "plots"


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
    stopping (notes 001, "Early Stopping Callback") when enabled, and :class:`pipelines.callbacks.FreezeBackbone` when
    a transfer experiment fine-tunes a frozen backbone."""
    callbacks: list = []
    if exp.early_stopping.enabled:
        from lightning.pytorch.callbacks import EarlyStopping

        es = exp.early_stopping
        callbacks.append(EarlyStopping(monitor=es.monitor, mode=es.mode, min_delta=es.min_delta, patience=es.patience))
    return callbacks + transfer_callbacks(exp)


def transfer_callbacks(exp: ExperimentConfig) -> list:
    """``[FreezeBackbone]`` when ``exp`` fine-tunes a frozen backbone (:class:`pipelines.callbacks.FreezeBackbone`),
    else ``[]``."""
    if not (exp.pretrained and exp.pretrained.freeze_backbone):
        return []
    from pipelines.callbacks import FreezeBackbone

    return [FreezeBackbone(exp.pretrained.unfreeze_at_epoch, exp.pretrained.backbone_lr_ratio)]


def make_datamodule(exp: ExperimentConfig, data, seed: int):
    """The seeded :class:`pipelines.data.ArrayDataModule` of ``exp`` over prepared ``data`` (batches of
    ``exp.batch_size``; the whole train split at once for full-batch gradient descent, optimizer ``gd``)."""
    from pipelines.data import ArrayDataModule

    return ArrayDataModule(data, batch_size=exp.train_batch_size, seed=seed)


def load_pretrained(exp: ExperimentConfig, network) -> dict[str, Any]:
    """Load ``exp.pretrained``'s backbone weights into ``network``; returns what to log as ``pretrained.*``
    params: the file's sha256, the tensors and parameters loaded and the key prefix.

    Raises:
        ConfigError: the file is missing or does not fit the backbone (naming the key and the file).
    """
    import hashlib

    from models.transfer import PretrainedWeightsError, load_backbone
    from pipelines.config import ConfigError

    path = REPO_ROOT / exp.pretrained.path
    try:
        loaded = load_backbone(network, path, exp.pretrained.prefix)
    except PretrainedWeightsError as exc:
        raise ConfigError(f"params.yaml: pretrained.path: {exc}") from None
    return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "loaded_tensors": loaded["tensors"],
            "loaded_parameters": loaded["parameters"], "prefix": loaded["prefix"]}


def seed_everything(seed: int) -> None:
    import lightning.pytorch as L

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS on GPUs
    L.seed_everything(seed, workers=True, verbose=False)


def run_params(exp: ExperimentConfig, *, seed: int, profile: str, meta: dict[str, Any], num_params: int,
               versions: dict[str, str]) -> dict[str, Any]:
    """The MLflow params of a training run: the resolved experiment flattened to dotted keys, the seed, profile,
    task, parameter count, split sizes, the md5 of the data stages' outputs, and what the architecture describes
    of itself (:meth:`models.registry.Architecture.describe`, as ``model.<key>``)."""
    from pipelines.tracking import flatten

    from models.registry import REGISTRY

    from pipelines.training.module import network_spec

    flat = flatten(exp.model_dump(mode="json")) | {"seed": seed, "profile": profile, "num_params": num_params}
    described = REGISTRY[exp.architecture].describe(network_spec(exp, meta), exp.model)
    flat |= {f"model.{k}": v for k, v in described.items()}  # e.g. model.bottleneck.ratio (ResNet's 1x1 saving)
    flat |= {f"data.{split}_samples": n for split, n in meta["splits"].items()}
    flat |= {"data.augmented_train_samples": meta.get("augmented_train_samples", 0)}
    return flat | {k: v for k, v in versions.items() if k != "data_hash"}


def log_params(client, run_id: str, flat: dict[str, Any]) -> None:
    """Log ``flat`` as params of ``run_id`` in one batch (values cut to MLflow's 6,000 characters)."""
    from mlflow.entities import Param

    items = sorted(flat.items())
    for start in range(0, len(items), 100):  # log_batch takes at most 100 params per call
        client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in items[start:start + 100]])


def make_trainer(exp: ExperimentConfig, *, logger, callbacks: list, default_root_dir: Path,
                 enable_checkpointing: bool = True, enable_progress_bar: bool = True):
    """The seeded, deterministic Lightning ``Trainer`` of an experiment's ``trainer:`` block.

    Shared by the train stage and by every tuning trial, so a trial trains exactly as ``train`` would.
    Validation runs at least once (``check_val_every_n_epoch`` is capped at ``max_epochs``); no sanity check.
    """
    import lightning.pytorch as L

    t = exp.trainer
    return L.Trainer(
        max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices, strategy=t.strategy,
        num_nodes=t.num_nodes, precision=t.precision, limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        check_val_every_n_epoch=min(t.check_val_every_n_epoch, t.max_epochs),  # validate at least once
        gradient_clip_val=t.gradient_clip_val,
        deterministic=t.deterministic, log_every_n_steps=t.log_every_n_steps, logger=logger, callbacks=callbacks,
        num_sanity_val_steps=0, enable_model_summary=False, default_root_dir=str(default_root_dir),
        enable_checkpointing=enable_checkpointing, enable_progress_bar=enable_progress_bar,
    )


def write_history(rows: list[dict[str, float]], path: Path) -> None:
    """Write per-epoch rows as CSV (one column per metric, ``epoch`` first) atomically."""
    columns = ["epoch"] + sorted({k for row in rows for k in row} - {"epoch"})
    _write_csv(path, columns, [{k: row.get(k, "") for k in columns} for row in rows])


def write_metric_history(rows: list[dict[str, float]], metric: str, path: Path) -> None:
    """Write the task's headline metric per epoch (``acc``, ``mse``, ...) as ``epoch,metric,train,val``
    (one DVC plot definition then serves every experiment, whatever its metric)."""
    _write_csv(path, ["epoch", "metric", "train", "val"],
               [{"epoch": row["epoch"], "metric": metric, "train": row.get(f"train_{metric}", ""),
                 "val": row.get(f"val_{metric}", "")} for row in rows])


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def gradient_diagnostics(exp: ExperimentConfig):
    """The experiment's :class:`pipelines.diagnostics.GradientDiagnostics` callback, or ``None`` when disabled."""
    cfg = exp.diagnostics.gradients
    if not cfg.enabled:
        return None
    from pipelines.diagnostics import GradientDiagnostics

    return GradientDiagnostics(every_n_steps=cfg.every_n_steps, vanishing_ratio=cfg.vanishing_ratio,
                               exploding_norm=cfg.exploding_norm, exploding_ratio=cfg.exploding_ratio,
                               saturation_threshold=cfg.saturation_threshold)


def log_gradient_summary(client, run_id: str, name: str, gradients) -> dict[str, Any]:
    """Log the gradient flags and summary as ``gradients.*`` metrics and a ``gradient_flags`` tag, the grad-flow
    figure as ``plots/grad_flow.png``, and write ``plots/grad_flow/<name>.csv`` (per layer, over the run)."""
    from pipelines import plots

    summary = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v))  # JSON has no inf/nan
               for k, v in gradients.summary().items()}
    numbers = {f"gradients.{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float))}
    for key, value in numbers.items():
        client.log_metric(run_id, key, value)
    client.set_tag(run_id, "gradient_flags", summary.get("flags", "none"))
    rows = gradients.layer_rows()
    _write_csv(PLOTS_ROOT / "grad_flow" / f"{name}.csv", ["order", "layer", "grad_mean", "grad_max", "grad_norm"],
               plots.grad_flow_table(rows))
    if rows:
        fig = plots.grad_flow_figure(rows, title=f"Gradient flow: {name} ({summary['flags']})")
        client.log_figure(run_id, fig, "plots/grad_flow.png")
        plots.close(fig)
    return summary


@contextlib.contextmanager
def system_metrics(params: Params, run_id: str, enabled: bool = True):
    """MLflow system metrics (``system/cpu_utilization_percentage``, memory, disk, network, and the GPU when
    ``nvidia-ml-py`` finds one) sampled every ``tracking.system_metrics_interval`` seconds while the block runs."""
    if not (enabled and params.tracking.system_metrics):
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    from pipelines.tracking import tracking_uri

    monitor = SystemMetricsMonitor(run_id, sampling_interval=params.tracking.system_metrics_interval,
                                   tracking_uri=tracking_uri(params))
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
        # MLflow publishes only after a whole interval, so a fit shorter than one would log nothing: publish the
        # samples of the last, partial interval too.
        if any(m._metrics for m in monitor.monitors):
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()


def log_model(network, example, run_id: str) -> tuple[str, str]:
    """Log the trained network to MLflow with a signature, input example and explicit pip requirements.

    Returns ``(format, uri)``: ``("pytorch", "models:/m-...")`` when ``mlflow.pytorch.log_model`` succeeded (a
    logged model linked to the run), or ``("state_dict", "runs:/<run>/model_state_dict/state_dict.pt")`` when export
    failed and a weights-only ``state_dict`` was logged instead (load with ``torch.load(..., weights_only=True)``).
    """
    import mlflow
    import torch
    from mlflow.models import infer_signature

    from pipelines.tracking import pip_requirements

    network = network.cpu().eval()
    with torch.no_grad():
        output = network(torch.as_tensor(example)).numpy()
    try:
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(network, name="model", signature=infer_signature(example, output),
                                            input_example=example, pip_requirements=pip_requirements())
        return "pytorch", info.model_uri
    except Exception as exc:  # export of some modules (recurrent, dynamic shapes) is not supported
        log.warning("mlflow.pytorch.log_model failed (%s: %s); logging a state_dict instead",
                    type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        buffer = io.BytesIO()
        torch.save(network.state_dict(), buffer)
        client = mlflow.MlflowClient()
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "state_dict.pt"
            path.write_bytes(buffer.getvalue())
            client.log_artifact(run_id, str(path), artifact_path="model_state_dict")
        return "state_dict", f"runs:/{run_id}/model_state_dict/state_dict.pt"


def save_network(network, path: Path) -> None:
    """Write ``network.state_dict()`` to ``path`` atomically (load with ``torch.load(path, weights_only=True)``)."""
    import torch

    from pipelines.io import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save(network.state_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def train(name: str, params: Params) -> dict[str, Any]:
    """Train experiment ``name``; returns the summary written to ``metrics/train/<name>.json``."""
    import lightning.pytorch as L
    import mlflow
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import MLFlowLogger

    from pipelines.callbacks import History
    from pipelines.prepared import load_training_data
    from pipelines.tasks import get_task
    from pipelines.tracking import (data_version, ensure_experiment, git_commit, library_versions, tracking_uri,
                                    write_run_link)

    exp = params.experiment(name)
    seed = params.experiment_seed(name)
    if exp.trainer.num_threads:
        torch.set_num_threads(exp.trainer.num_threads)
    seed_everything(seed)

    data = load_training_data(exp.dataset)
    meta = data.meta
    datamodule = make_datamodule(exp, data, seed)
    module = build_module(exp, meta)
    num_params = sum(p.numel() for p in module.network.parameters())
    pretrained = load_pretrained(exp, module.network) if exp.pretrained else {}  # reloaded: for its params

    experiment_id = ensure_experiment(params)
    client = mlflow.MlflowClient(tracking_uri(params))
    tags = {"architecture": exp.architecture, "dataset": exp.dataset, "task": exp.task, "notes": exp.notes,
            "experiment": name,
            "profile": params.profile, "git_commit": git_commit(), "stage": "train",
            "mlflow.runName": name} | {f"version.{k}": v for k, v in library_versions().items()}
    versions = data_version(exp.dataset)
    tags |= {"data_hash": versions["data_hash"]}
    run = client.create_run(experiment_id, tags=tags)
    run_id = run.info.run_id
    log_params(client, run_id, run_params(exp, seed=seed, profile=params.profile, meta=meta,
                                          num_params=num_params, versions=versions)
               | {f"pretrained.{k}": v for k, v in pretrained.items()})

    ckpt_dir = CHECKPOINT_ROOT / name
    history = History(_PROCESS_START)
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=exp.checkpoint.monitor,
                                 mode=exp.checkpoint.mode, save_last=exp.checkpoint.save_last, save_top_k=1,
                                 enable_version_counter=False)
    callbacks: list[L.Callback] = [checkpoint, history, LearningRateMonitor(logging_interval="epoch"),
                                   TQDMProgressBar(refresh_rate=exp.trainer.progress_bar_refresh_rate)]
    callbacks += fit_callbacks(exp)
    gradients = gradient_diagnostics(exp)
    if gradients is not None:
        callbacks.append(gradients)
    logger = MLFlowLogger(experiment_name=params.tracking.experiment_name, tracking_uri=tracking_uri(params),
                          run_id=run_id)
    trainer = make_trainer(exp, logger=logger, callbacks=callbacks, default_root_dir=ckpt_dir)
    start = time.perf_counter()
    try:
        with system_metrics(params, run_id, enabled=trainer.is_global_zero):
            trainer.fit(module, datamodule=datamodule)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    fit_seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}

    best_path = Path(checkpoint.best_model_path or checkpoint.last_model_path)
    best_score = checkpoint.best_model_score
    summary: dict[str, Any] = {
        "run_id": run_id, "experiment": name, "architecture": exp.architecture, "dataset": exp.dataset,
        "epochs": trainer.current_epoch, "fit_seconds": round(fit_seconds, 3),
        "first_step_seconds": round(history.first_step_seconds or 0.0, 3), "num_params": num_params,
        "best_checkpoint": best_path.name, f"best_{exp.checkpoint.monitor}": None if best_score is None
        else float(best_score),
    }
    if history.rows:
        summary |= {k: v for k, v in history.rows[-1].items() if k.startswith("val_")}
    if gradients is not None:
        summary["gradients"] = log_gradient_summary(client, run_id, name, gradients)
    client.log_metric(run_id, "fit_seconds", fit_seconds)
    client.log_metric(run_id, "first_step_seconds", summary["first_step_seconds"])
    client.log_artifact(run_id, str(best_path), artifact_path="checkpoints")

    best = type(module).load_from_checkpoint(best_path, map_location="cpu", weights_only=True)
    save_network(best.network, ckpt_dir / "network.pt")
    if params.tracking.log_model:
        example = datamodule.tensors["test"][0][:2].numpy()
        summary["model_format"], summary["model_uri"] = log_model(best.network, example, run_id)
        client.set_tag(run_id, "model_format", summary["model_format"])
        client.set_tag(run_id, "model_uri", summary["model_uri"])

    write_history(history.rows, PLOTS_ROOT / "history" / f"{name}.csv")
    write_metric_history(history.rows, get_task(exp.task).headline, PLOTS_ROOT / "metric" / f"{name}.csv")
    # DVC hashes checkpoints/<name>: only what the weights determine goes there, so a retrained network with the
    # same weights stops the rerun cascade. The MLflow run id goes beside the tracking store instead.
    atomic_write_json(ckpt_dir / "checkpoint.json", {"best_checkpoint": best_path.name,
                                                    "module": get_task(exp.task).module})
    write_run_link(name, run_id, tracking_uri(params), experiment_id)
    atomic_write_json(METRICS_ROOT / "train" / f"{name}.json", summary)
    # The run stays open for evaluate (it sets the final status); mark it finished for now.
    client.set_terminated(run_id, "FINISHED")
    return summary


def _log_summary(name: str, summary: dict[str, Any]) -> None:
    if summary:  # empty on the non-zero ranks of a DDP run
        log.info("trained %s in %.1f s (%d epochs): %s", name, summary["fit_seconds"], summary["epochs"],
                 {k: round(v, 4) for k, v in summary.items() if k.startswith("val_") and isinstance(v, float)})


def main(argv: list[str] | None = None) -> int:
    from pipelines.cli import experiment_stage

    return experiment_stage(argv, prog="python -m pipelines.train", description=__doc__.splitlines()[0],
                            run=train, done=_log_summary)


if __name__ == "__main__":
    sys.exit(main())
