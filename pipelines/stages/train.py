"""``train`` stage: ``python -m pipelines.stages.train <experiment>``.

Trains one experiment of ``params.yaml`` with a seeded Lightning ``Trainer`` and tracks it in MLflow:
every resolved param (flattened), per-epoch train/val loss and metrics, the penalty term, the learning rate, epoch
time, git commit, the data hash from ``dvc.lock``, the seed and library versions; then the best checkpoint and the
served model (an MLflow pyfunc that takes raw input and bundles its preprocessing, :mod:`pipelines.serving`, with
a raw-input signature, a raw input example and explicit pip requirements).

Outputs: ``checkpoints/<experiment>/{best,last}.ckpt``, ``network.pt`` (the best network's ``state_dict``, weights
only: what a ``transfer`` experiment starts from) and ``checkpoint.json`` (the best checkpoint's file name); the MLflow
run id goes to ``mlflow/runs/<experiment>.json``, outside what DVC hashes, so ``evaluate`` logs into the same run, ``metrics/train/<experiment>.json`` and ``plots/history/<experiment>.csv``.

Tracking (``pipelines.tracking``): the run starts when this process did: ``start_time`` is ``_PROCESS_START``,
taken on this module's first line (the interpreter's own start-up before it, and the warm launcher's fork,
:mod:`pipelines.warm`, are a few tenths of a second not counted). It carries MLflow's source tags
(``mlflow.source.name`` ``pipelines/stages/train.py``, ``mlflow.source.type``, ``mlflow.source.git.commit``,
``mlflow.user``) with ``dvc.stage`` (``train@<experiment>``), and its train, validation and test datasets
(``log_inputs``: name, DVC digest, source, schema, context), all three logged here: the run's inputs are known
before it trains. ``train_seconds`` is this process's wall time from its start to the end of its work (logged at
each epoch's end too, cumulative); at the end the run is ``FINISHED`` with ``end_time = start_time +
train_seconds``, so its Duration is its own work. ``evaluate`` later adds ``evaluate_seconds`` and moves
``end_time`` by that much, without reopening the run. A resumed run (killed, rerun) keeps its ``start_time``: its
``train_seconds`` adds the seconds its killed processes had logged by their last finished epoch, and its end is
again ``start_time + train_seconds``, not counting the time between the kill and the rerun.

An experiment under ``transfer:`` (``pretrained:``) first loads its backbone from the weights file
(:func:`models.transfer.load_backbone`) and trains with :class:`pipelines.training.callbacks.FreezeBackbone` when the backbone
is frozen.
"""

from __future__ import annotations

import time

_PROCESS_START = time.time()

import csv  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from pipelines.config import Params  # noqa: E402
from pipelines.io import atomic_write_json, atomic_write_text  # noqa: E402
from pipelines.paths import CHECKPOINT_ROOT, METRICS_ROOT, PLOTS_ROOT  # noqa: E402

log = logging.getLogger("deepnotes.train")

#: Exit status after a SIGTERM (128 + 15, what the shell reports for a process the signal ended).
EXIT_SIGTERM = 143


def write_history(rows: list[dict[str, float]], path: Path) -> None:
    """Write per-epoch rows as CSV (one column per metric, ``epoch`` first) atomically."""
    columns = ["epoch"] + sorted({k for row in rows for k in row} - {"epoch"})
    _write_csv(path, columns, [{k: row.get(k, "") for k in columns} for row in rows])


def write_metric_history(rows: list[dict[str, float]], metric: str, path: Path) -> None:
    """Write the task's headline metric per epoch (``acc``, ``mse``, ...) as ``epoch,metric,train,val``
    (one DVC plot definition then serves every experiment, whatever its metric)."""
    _write_csv(
        path,
        ["epoch", "metric", "train", "val"],
        [
            {
                "epoch": row["epoch"],
                "metric": metric,
                "train": row.get(f"train_{metric}", ""),
                "val": row.get(f"val_{metric}", ""),
            }
            for row in rows
        ],
    )


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def log_gradient_summary(client, run_id: str, name: str, gradients) -> dict[str, Any]:
    """Log the gradient flags and summary as ``gradients.*`` metrics and a ``gradient_flags`` tag, the grad-flow
    figure as ``plots/grad_flow.png``, and write ``plots/grad_flow/<name>.csv`` (per layer, over the run)."""
    from pipelines import plots

    summary = {
        k: (v if not isinstance(v, float) or math.isfinite(v) else str(v))  # JSON has no inf/nan
        for k, v in gradients.summary().items()
    }
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    numbers = [Metric(f"gradients.{k}", float(v), now, 0) for k, v in summary.items() if isinstance(v, (int, float))]
    client.log_batch(run_id, metrics=numbers, tags=[RunTag("gradient_flags", summary.get("flags", "none"))])
    rows = gradients.layer_rows()
    _write_csv(
        PLOTS_ROOT / "grad_flow" / f"{name}.csv",
        ["order", "layer", "grad_mean", "grad_max", "grad_norm"],
        plots.grad_flow_table(rows),
    )
    if rows:
        fig = plots.grad_flow_figure(rows, title=f"Gradient flow: {name} ({summary['flags']})")
        client.log_figure(run_id, fig, "plots/grad_flow.png")
        plots.close(fig)
    return summary


def train(name: str, params: Params) -> dict[str, Any]:
    """Train experiment ``name``; returns the summary written to ``metrics/train/<name>.json``."""
    import lightning.pytorch as L
    import torch
    from lightning.pytorch.callbacks import LambdaCallback, LearningRateMonitor, TQDMProgressBar
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from mlflow.entities import Metric, RunTag

    from pipelines.data.prepared import load_training_data
    from pipelines.tasks import get_task
    from pipelines.tracking import (
        ResilientTracking,
        data_version,
        dataset_source,
        dvc_stage,
        ensure_experiment,
        entry_point,
        git_commit,
        library_versions,
        log_datasets,
        log_model,
        log_params,
        record_work,
        run_params,
        source_tags,
        system_metrics,
        tracking_uri,
        write_run_link,
    )
    from pipelines.training.callbacks import History, PortableModelCheckpoint
    from pipelines.training.environment import log_environment
    from pipelines.training.resume import (
        ResumeCheckpoint,
        RngState,
        clear_resume,
        find_resume,
        fingerprint,
        restore_best,
        resume_dir,
    )
    from pipelines.training.trainer import (
        build_module,
        fit_callbacks,
        gradient_diagnostics,
        load_pretrained,
        make_datamodule,
        make_trainer,
        save_network,
        seed_everything,
    )

    exp = params.experiment(name)
    seed = params.experiment_seed(name)
    experiment_id = ensure_experiment(params)  # first: an unreachable tracking server fails before any work
    if exp.trainer.num_threads:
        torch.set_num_threads(exp.trainer.num_threads)
    seed_everything(seed)

    data = load_training_data(exp.dataset)
    meta = data.meta
    datamodule = make_datamodule(exp, data, seed)
    module = build_module(exp, meta)
    num_params = sum(p.numel() for p in module.network.parameters())
    pretrained = load_pretrained(exp, module.network) if exp.pretrained else {}  # reloaded: for its params

    # a server that dies mid-run: logging is buffered, and what was never sent is kept for the resumed run
    tracking = ResilientTracking(tracking_uri(params), spool=resume_dir(name) / "unsent.json")
    client = tracking.client
    versions = data_version(exp.dataset)
    ckpt_dir = CHECKPOINT_ROOT / name
    trains = fingerprint(resolved_settings(name) or exp.model_dump(mode="json"), seed, versions["data_hash"])
    resume = find_resume(name, trains)
    if resume is not None and not _run_exists(client, resume.run_id):
        log.warning("%s: the run %s to resume is not in the tracking store; training from scratch", name, resume.run_id)
        clear_resume(name)
        resume = None
    tags = {
        "architecture": exp.architecture,
        "dataset": exp.dataset,
        "task": exp.task,
        "notes": exp.notes,
        "experiment": name,
        "profile": params.profile,
        "git_commit": git_commit(),
        "stage": "train",
        "mlflow.runName": name,
    } | {f"version.{k}": v for k, v in library_versions().items()}
    tags |= {"data_hash": versions["data_hash"]} | source_tags(entry_point(__file__), dvc_stage(params, name, "train"))
    if resume is None:
        # the run starts when this process did: its Duration is then its own work (module docstring)
        start_time = int(_PROCESS_START * 1000)
        run_id = client.create_run(experiment_id, start_time=start_time, tags=tags).info.run_id
        earlier = 0.0
        declared = params.datasets[exp.dataset].source if exp.dataset in params.datasets else None
        log_datasets(client, run_id, data, versions, dataset_source(exp.dataset, meta, declared))
        log_params(
            client,
            run_id,
            run_params(exp, seed=seed, profile=params.profile, meta=meta, num_params=num_params, versions=versions)
            | {f"pretrained.{k}": v for k, v in pretrained.items()},
        )
    else:  # the killed run's own MLflow run: its epochs so far are there, the next ones follow
        run_id = resume.run_id
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, "resumed_after_epoch", str(resume.epoch))
        tracking.replay()  # the metrics a dead tracking server missed, so the run's history is continuous
        # its start, and the seconds its killed processes trained until their last epoch (None: the server died)
        resumed = client.get_run(run_id)
        start_time = resumed.info.start_time if resumed else int(_PROCESS_START * 1000)
        earlier = float(resumed.data.metrics.get("train_seconds", 0.0)) if resumed else 0.0
        restore_best(resume, ckpt_dir)
        log.info("%s: resuming run %s after epoch %d (%s)", name, run_id, resume.epoch, resume.checkpoint)

    history = History(_PROCESS_START)
    checkpoint = PortableModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=exp.checkpoint.monitor,
        mode=exp.checkpoint.mode,
        save_last=exp.checkpoint.save_last,
        save_top_k=1,
        enable_version_counter=False,
    )
    callbacks: list[L.Callback] = [
        checkpoint,
        ResumeCheckpoint(resume_dir(name), run_id, trains),  # after `checkpoint`: it keeps its best model too
        RngState(),
        history,
        LearningRateMonitor(logging_interval="epoch"),
        TQDMProgressBar(refresh_rate=exp.trainer.progress_bar_refresh_rate),
    ]
    callbacks += fit_callbacks(exp)

    def log_train_seconds(trainer: L.Trainer, _module: L.LightningModule) -> None:
        """``train_seconds`` so far at each epoch's end: what a killed run's resumed process starts from."""
        if trainer.is_global_zero:
            client.log_metric(
                run_id, "train_seconds", earlier + time.time() - _PROCESS_START, step=trainer.current_epoch
            )

    callbacks.append(LambdaCallback(on_train_epoch_end=log_train_seconds))
    gradients = gradient_diagnostics(exp)
    if gradients is not None:
        callbacks.append(gradients)
    logger = tracking.logger(params.tracking.experiment_name, experiment_id, run_id)
    trainer = make_trainer(exp, logger=logger, callbacks=callbacks, default_root_dir=ckpt_dir)
    start = time.perf_counter()
    try:
        with system_metrics(params, run_id, enabled=trainer.is_global_zero):
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume.checkpoint if resume else None)
    except SIGTERMException:
        # pre-empted: Lightning stopped at the end of an epoch, whose resume checkpoint is written
        client.set_terminated(run_id, "KILLED")
        print(
            f"train {name}: stopped by SIGTERM after epoch {trainer.current_epoch - 1}; rerun `dvc repro "
            f"train@{name}` to resume from {resume_dir(name) / 'last.ckpt'}",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_SIGTERM) from None
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    fit_seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}

    best_path = Path(checkpoint.best_model_path or checkpoint.last_model_path)
    best_score = checkpoint.best_model_score
    # the mean seconds of an epoch's training batches in this process, validation excluded (History)
    epochs_timed = history.train_epoch_seconds
    epoch_seconds = round(statistics.fmean(epochs_timed), 3) if epochs_timed else None
    summary: dict[str, Any] = {
        "run_id": run_id,
        "experiment": name,
        "architecture": exp.architecture,
        "dataset": exp.dataset,
        "epochs": trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 3),
        "first_step_seconds": round(history.first_step_seconds or 0.0, 3),
        "epoch_seconds": epoch_seconds,
        "num_params": num_params,
        "best_checkpoint": best_path.name,
        f"best_{exp.checkpoint.monitor}": None if best_score is None else float(best_score),
    }
    if history.rows:
        summary |= {k: v for k, v in history.rows[-1].items() if k.startswith("val_")}
    if gradients is not None:
        summary["gradients"] = log_gradient_summary(client, run_id, name, gradients)
    summary["environment"] = log_environment(client, run_id, exp.trainer.deterministic)  # what decides bit-identity
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[
            Metric("fit_seconds", fit_seconds, now, 0),
            Metric("first_step_seconds", summary["first_step_seconds"], now, 0),
            *([Metric("epoch_seconds", summary["epoch_seconds"], now, 0)] if summary["epoch_seconds"] else []),
            Metric("num_params", num_params, now, 0),
        ],
    )
    client.log_artifact(run_id, str(best_path), artifact_path="checkpoints")

    # The best weights, into the module that trained (same class, same hyperparameters).
    module.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"])
    save_network(module.network, ckpt_dir / "network.pt")
    if params.tracking.log_model:  # the served pyfunc: raw input in, the task's answer out (pipelines/serving)
        from pipelines.data.prepared import PREPARED_ROOT
        from pipelines.serving.bundle import WEIGHTS_TAG, Bundle

        bundle = Bundle.from_module(module, meta, PREPARED_ROOT / exp.dataset)
        example = datamodule.tensors["test"][0][:2].numpy()
        summary["model_format"], summary["model_uri"], summary[WEIGHTS_TAG] = log_model(bundle, example, run_id)
        client.log_batch(
            run_id,
            tags=[
                RunTag("model_format", summary["model_format"]),
                RunTag("model_uri", summary["model_uri"]),
                RunTag(WEIGHTS_TAG, summary[WEIGHTS_TAG]),
            ],
        )

    write_history(history.rows, PLOTS_ROOT / "history" / f"{name}.csv")
    write_metric_history(history.rows, get_task(exp.task).headline, PLOTS_ROOT / "metric" / f"{name}.csv")
    # DVC hashes checkpoints/<name>: only what the weights determine goes there, so a retrained network with the
    # same weights stops the rerun cascade. The MLflow run id goes beside the tracking store instead.
    atomic_write_json(
        ckpt_dir / "checkpoint.json", {"best_checkpoint": best_path.name, "module": get_task(exp.task).module}
    )
    write_run_link(name, run_id, tracking_uri(params), experiment_id)
    atomic_write_json(METRICS_ROOT / "train" / f"{name}.json", summary)
    # Finished: end_time = start_time + train_seconds; evaluate later adds its own seconds, without reopening it.
    record_work(
        client,
        run_id,
        "train_seconds",
        earlier + time.time() - _PROCESS_START,
        start_time=start_time,
        step=trainer.current_epoch,
    )
    # the server died mid-run: every local output is written; exit 2 naming them (the resume checkpoint is kept)
    tracking.raise_if_lost(
        name, [ckpt_dir, METRICS_ROOT / "train" / f"{name}.json", PLOTS_ROOT / "history" / f"{name}.csv"]
    )
    clear_resume(name)  # finished: a rerun starts afresh
    return summary


def resolved_settings(name: str) -> dict[str, Any] | None:
    """``params/resolved/train/<name>.json`` (the settings and code the stage runs with), or ``None`` outside DVC."""
    import json

    from pipelines.stages.resolve import RESOLVED_ROOT

    try:
        return json.loads((RESOLVED_ROOT / "train" / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def _run_exists(client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException:
        return False
    return True


def _log_summary(name: str, summary: dict[str, Any]) -> None:
    if summary:  # empty on the non-zero ranks of a DDP run
        log.info(
            "trained %s in %.1f s (%d epochs): %s",
            name,
            summary["fit_seconds"],
            summary["epochs"],
            {k: round(v, 4) for k, v in summary.items() if k.startswith("val_") and isinstance(v, float)},
        )


def main(argv: list[str] | None = None) -> int:
    from pipelines.cli import experiment_stage

    return experiment_stage(
        argv, prog="python -m pipelines.stages.train", description=__doc__.splitlines()[0], run=train, done=_log_summary
    )


if __name__ == "__main__":
    sys.exit(main())
