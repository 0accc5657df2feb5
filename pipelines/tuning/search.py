"""``tune`` command: ``python -m pipelines.stages.tune <experiment>`` (or ``deepnotes tune``): an Optuna search.

Each trial samples the experiment's search space (``tuning`` in ``params.yaml``, see :mod:`pipelines.tuning.search_space`),
trains it with the very module, data and ``Trainer`` the train stage uses, and reports the validation metric to the
pruner every epoch through ``optuna_integration.PyTorchLightningPruningCallback``. A trial's value is the best
epoch's metric, what ``train`` reports as its best checkpoint score.

Sessions: every invocation is one *session* of a persistent study (storage and budget: :mod:`pipelines.tuning.studies`).
The coordinator validates the space, creates the study and the MLflow experiment, fails trials left by dead
workers, opens the session's MLflow parent run, then runs the worker in-process (``--workers 1``) or starts K
worker processes with one thread each. At the end it writes the study's best params to
``params/tuned/<experiment>.yaml`` (``use_tuned: true`` on the experiment makes ``train`` use them) and a summary
to ``metrics/tune/<experiment>.json``, both beside the params file (the repo root by default).

MLflow: experiment ``<tracking.experiment_name>-tune/<study>``; one parent run per session (best value and params
of the study, trials per state for the study and for the session, plots of the study), one nested child run per
trial (its params, per-epoch metrics, study name, trial number, data hash and a ``state`` tag: COMPLETE, PRUNED or
FAIL). Pruned trials end FINISHED (not FAILED as Lightning's logger leaves them), failed ones FAILED.

Failure handling: a NaN or infinite loss prunes the trial with the reason; any other exception fails it with the
traceback summary and the study goes on; a killed worker's trial is failed by heartbeat and re-queued.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from pipelines import REPO_ROOT
from pipelines.config import ExperimentConfig, Params, TuneSettings, tuned_path
from pipelines.io import atomic_write_json, atomic_write_text
from pipelines.tuning.search_space import SearchSpace, apply

log = logging.getLogger("deepnotes.tune")

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
#: ``mlflow.source.name`` of the search's runs: the stage that runs it (``python -m pipelines.stages tune``).
TUNE_ENTRY = "pipelines/stages/tune.py"


# --------------------------------------------------------------------------------------------- settings


class Session:
    """Everything a worker needs, resolved once by the coordinator and passed to workers on the command line.

    Attributes: ``experiment``, ``params_path``, ``study_name``, ``storage`` (URL or journal path), ``settings``
    (:class:`~pipelines.config.TuneSettings`), ``seed``, ``n_trials``, ``timeout`` (seconds or
    ``None``), ``workers``, ``parent_run_id`` (set once the parent run exists).
    """

    def __init__(
        self,
        experiment: str,
        params: Params,
        params_path: Path | None,
        *,
        study_name: str | None = None,
        storage: str | None = None,
        sampler: str | None = None,
        pruner: str | None = None,
        n_trials: int | None = None,
        timeout: float | None = None,
        workers: int | None = None,
        seed: int | None = None,
        parent_run_id: str | None = None,
    ) -> None:
        from pipelines.tuning.studies import storage_url

        self.experiment = experiment
        self.params = params
        self.params_path = params_path
        #: where outputs go: the params file's folder (``params/tuned/``, ``metrics/tune/``); the repo by default
        self.base_dir = params_path.resolve().parent if params_path else REPO_ROOT
        base = params.tune_settings(experiment)
        self.settings: TuneSettings = base.model_copy(
            update={
                k: v
                for k, v in {"sampler": sampler, "pruner": pruner, "n_trials": n_trials, "timeout": timeout}.items()
                if v is not None
            }
        )
        self.study_name = study_name or f"{experiment}-{params.profile}"
        self.storage = storage_url(storage, params.tuning.storage)
        self.seed = params.seed if seed is None else seed
        self.n_trials = int(self.settings.n_trials)
        self.timeout = self.settings.timeout
        self.workers = workers or params.tuning.workers
        self.parent_run_id = parent_run_id

    def worker_argv(self, index: int) -> list[str]:
        argv = [
            sys.executable,
            "-m",
            "pipelines.stages.tune",
            self.experiment,
            "--study-name",
            self.study_name,
            "--storage",
            self.storage,
            "--sampler",
            self.settings.sampler,
            "--pruner",
            self.settings.pruner,
            "--n-trials",
            str(self.n_trials),
            "--seed",
            str(self.seed),
            "--workers",
            str(self.workers),
            "--worker-index",
            str(index),
            "--parent-run-id",
            str(self.parent_run_id),
        ]
        if self.timeout:
            argv += ["--timeout", str(self.timeout)]
        if self.params_path:
            argv += ["--params", str(self.params_path)]
        return argv


def mlflow_experiment_name(params: Params, study_name: str) -> str:
    """The MLflow experiment of a study's runs: ``<tracking.experiment_name>-tune/<study>``."""
    return f"{params.tracking.experiment_name}-tune/{study_name}"


def _storage_for(session: Session, stale_callback=None):
    from pipelines.tuning.studies import make_storage

    t = session.params.tuning
    return make_storage(
        session.storage,
        heartbeat_interval=t.heartbeat_interval,
        grace_period=t.grace_period,
        stale_callback=stale_callback,
    )


class StaleTrialHandler:
    """Heartbeat-stale trial callback: closes the trial's MLflow run as FAILED with the reason, then re-queues
    the trial's params (``RetryHeartbeatStaleTrialCallback``, up to ``max_retry`` times)."""

    def __init__(self, tracking_uri: str, max_retry: int) -> None:
        import warnings

        import optuna
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        self.tracking_uri = tracking_uri
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry) if max_retry else None

    def __call__(self, study, trial) -> None:
        reason = "its worker stopped (no heartbeat within the grace period, or the process is gone)"
        log.warning("trial %d of %s failed: %s", trial.number, study.study_name, reason)
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            import mlflow

            client = mlflow.MlflowClient(self.tracking_uri)
            try:
                client.set_tag(run_id, "state", "FAIL")
                client.set_tag(run_id, "fail_reason", reason)
                client.set_terminated(run_id, "FAILED")
            except Exception as exc:  # the run may never have been created; the trial must still be failed
                log.warning("could not close MLflow run %s of trial %d: %s", run_id, trial.number, exc)
        if self.retry is not None:
            self.retry(study, trial)


# ------------------------------------------------------------------------------------------------ trials


def non_finite_guard(monitor: str):
    """A Lightning callback that prunes the trial as soon as the training loss or the monitored validation metric
    is NaN or infinite, with the reason (built here so this module imports without lightning)."""
    import lightning.pytorch as L
    import optuna
    import torch

    class NonFiniteGuard(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            if loss is not None and not bool(torch.isfinite(loss.detach()).all()):
                raise optuna.TrialPruned(
                    f"non-finite training loss ({float(loss.detach())}) at epoch "
                    f"{trainer.current_epoch}, step {trainer.global_step}"
                )

        def on_validation_end(self, trainer, pl_module) -> None:
            value = trainer.callback_metrics.get(monitor)
            if value is not None and not math.isfinite(float(value)):
                raise optuna.TrialPruned(f"non-finite {monitor} ({float(value)}) at epoch {trainer.current_epoch}")

    return NonFiniteGuard()


class Objective:
    """The objective a worker optimizes: one seeded training run per trial, tracked as a nested MLflow run.

    Returns the best epoch value of ``settings.metric``. Raises ``optuna.TrialPruned`` (pruner or a non-finite
    loss; the reason is in the trial's ``prune_reason`` attribute and the run's tag) or the trial's exception
    (recorded as FAIL with ``fail_reason``).
    """

    def __init__(self, session: Session, space: SearchSpace, experiment_id: str, tracking_uri: str) -> None:
        import warnings

        import lightning.pytorch  # noqa: F401  (sets its loggers to INFO on import: quiet them after)

        from pipelines.data.prepared import load_training_data
        from pipelines.tracking import data_version, dvc_stage, source_tags

        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
        for message in (".*LeafSpec.*", "The number of training batches", ".*does not have many workers.*"):
            warnings.filterwarnings("ignore", message=message)
        self.session = session
        self.space = space
        self.experiment_id = experiment_id
        self.tracking_uri = tracking_uri
        self.base = session.params.trial_experiment(session.experiment)
        self.seed = session.params.experiment_seed(session.experiment)
        dataset = self.base["dataset"]
        self.data = load_training_data(dataset)  # once per worker, shared by its trials
        self.versions = data_version(dataset)
        #: MLflow's source tags and the DVC stage, the same for every trial of this worker
        self.source = source_tags(TUNE_ENTRY, dvc_stage(session.params, session.experiment, "tune"))

    def __call__(self, trial) -> float:
        import mlflow
        import optuna

        session, settings = self.session, self.session.settings
        client = mlflow.MlflowClient(self.tracking_uri)
        values = self.space.suggest(trial)
        tags = {
            "mlflow.parentRunId": session.parent_run_id,
            "mlflow.runName": f"trial-{trial.number:04d}",
            "study_name": session.study_name,
            "trial_number": str(trial.number),
            "experiment": session.experiment,
            "data_hash": self.versions["data_hash"],
            "state": "RUNNING",
            "sampler": settings.sampler,
            "pruner": settings.pruner,
            "stage": "tune",
            "architecture": self.base["architecture"],
            "dataset": self.base["dataset"],
            "notes": self.base.get("notes"),
        } | self.source
        frozen = trial.study._storage.get_trial(trial._trial_id)  # system attrs (a re-queued trial's origin)
        retried = frozen.system_attrs.get("failed_trial")  # set by RetryHeartbeatStaleTrialCallback
        if retried is not None:
            tags["retry_of_trial"] = str(retried)
        run_id = client.create_run(
            self.experiment_id, tags={k: v for k, v in tags.items() if v is not None}
        ).info.run_id
        trial.set_user_attr("mlflow_run_id", run_id)
        trial.set_user_attr("mlflow_parent_run_id", session.parent_run_id)
        if {"fail_reason", "prune_reason"} & set(frozen.user_attrs):  # copied from a failed attempt
            trial.set_user_attr("fail_reason", None)
            trial.set_user_attr("prune_reason", None)
        try:
            value = self._train(trial, values, run_id, client)
        except optuna.TrialPruned as exc:
            reason = str(exc) or "pruned"
            if reason.startswith("Trial was pruned"):  # the pruning callback's message: say why
                steps = trial.study._storage.get_trial(trial._trial_id).intermediate_values
                if steps:
                    epoch = max(steps)
                    reason = (
                        f"{settings.pruner} pruner stopped it after epoch {epoch}: {settings.metric} = "
                        f"{steps[epoch]:.4g} was not promising against the other trials at that epoch"
                    )
            trial.set_user_attr("prune_reason", reason)
            self._finish(client, run_id, "PRUNED", "FINISHED", prune_reason=reason)
            raise
        except Exception as exc:
            reason = _traceback_summary(exc)
            trial.set_user_attr("fail_reason", reason)
            self._finish(client, run_id, "FAIL", "FAILED", fail_reason=reason)
            raise
        except BaseException:  # KeyboardInterrupt, SystemExit: the session is being stopped
            self._finish(client, run_id, "FAIL", "KILLED", fail_reason="interrupted")
            raise
        client.log_metric(run_id, "objective", value)
        self._finish(client, run_id, "COMPLETE", "FINISHED")
        return value

    def _train(self, trial, values: dict[str, Any], run_id: str, client) -> float:
        import optuna
        from lightning.pytorch.loggers import MLFlowLogger
        from optuna_integration import PyTorchLightningPruningCallback

        from pipelines.tracking import log_params, run_params
        from pipelines.training.callbacks import History
        from pipelines.training.trainer import (
            build_module,
            fit_callbacks,
            gradient_diagnostics,
            make_datamodule,
            make_trainer,
            seed_everything,
        )

        settings = self.session.settings
        # one device per trial: parallelism comes from workers (the pruning callback cannot span DDP processes
        # on a journal storage); a multi-GPU node gives each worker its own GPU
        exp = ExperimentConfig.model_validate(
            apply(self.base, values | {"trainer.devices": 1, "trainer.strategy": "auto", "trainer.num_nodes": 1}),
            context=self.session.params.validation_context(),
        )
        seed_everything(self.seed)
        module = build_module(exp, self.data.meta)
        num_params = sum(p.numel() for p in module.network.parameters())
        flat = run_params(
            exp,
            seed=self.seed,
            profile=self.session.params.profile,
            meta=self.data.meta,
            num_params=num_params,
            versions=self.versions,
        )
        log_params(client, run_id, flat | {"study_name": self.session.study_name, "trial_number": trial.number})
        datamodule = make_datamodule(exp, self.data, self.seed)
        history = History()
        callbacks = [
            history,
            non_finite_guard(settings.metric),
            PyTorchLightningPruningCallback(trial, monitor=settings.metric),
            *fit_callbacks(exp),
        ]
        gradients = gradient_diagnostics(exp)  # the same gradient-flow metrics as a training run
        if gradients is not None:
            callbacks.append(gradients)
        logger = MLFlowLogger(
            experiment_name=mlflow_experiment_name(self.session.params, self.session.study_name),
            tracking_uri=self.tracking_uri,
            run_id=run_id,
        )
        with tempfile.TemporaryDirectory(prefix="deepnotes-trial-") as tmp:
            trainer = make_trainer(
                exp,
                logger=logger,
                callbacks=callbacks,
                default_root_dir=Path(tmp),
                enable_checkpointing=False,
                enable_progress_bar=False,
            )
            trainer.fit(module, datamodule=datamodule)
        scores = [row[settings.metric] for row in history.rows if settings.metric in row]
        if not scores:
            raise RuntimeError(
                f"{settings.metric} was never logged: does the experiment validate "
                f"(trainer.check_val_every_n_epoch <= max_epochs)?"
            )
        best = min(scores) if settings.direction == "minimize" else max(scores)
        if not math.isfinite(best):
            raise optuna.TrialPruned(f"non-finite {settings.metric} ({best})")
        trial.set_user_attr("epochs", trainer.current_epoch)
        if gradients is not None and gradients.records:
            flags = gradients.summary()["flags"]
            trial.set_user_attr("gradient_flags", flags)
            client.set_tag(run_id, "gradient_flags", flags)
        return float(best)

    @staticmethod
    def _finish(client, run_id: str, state: str, status: str, **reasons: str) -> None:
        client.set_tag(run_id, "state", state)
        for key, reason in reasons.items():
            client.set_tag(run_id, key, reason[:5000])
        client.set_terminated(run_id, status)


def _traceback_summary(exc: BaseException, frames: int = 3) -> str:
    """``Type: message`` plus the innermost ``frames`` frames, for a FAIL trial's attribute and run tag."""
    head = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    tail = traceback.format_list(traceback.extract_tb(exc.__traceback__)[-frames:])
    return head + "\n" + "".join(tail).rstrip()


# ----------------------------------------------------------------------------------------------- workers


def run_worker(session: Session, worker_index: int = 0) -> int:
    """Run trials of ``session``'s study until its budget or timeout; returns the number of trials this worker ran.

    Trials that raise are recorded (FAIL) and the worker goes on; only the budget, the timeout or a signal end it.
    """
    import optuna

    from pipelines.tracking import ensure_experiment, tracking_uri
    from pipelines.tuning.studies import BudgetedStudy, BudgetExhausted, lock_path, make_pruner, make_sampler

    params, settings = session.params, session.settings
    space = params.search_space(session.experiment)
    uri = tracking_uri(params)
    experiment_id = ensure_experiment(params, mlflow_experiment_name(params, session.study_name))
    storage = _storage_for(session, StaleTrialHandler(uri, params.tuning.max_retry))
    t = params.tuning
    existing = len(optuna.load_study(study_name=session.study_name, storage=storage).get_trials(deepcopy=False))
    # a different sampler seed per worker and per session start, so workers and reruns explore different points
    sampler_seed = session.seed + 7919 * worker_index + 104729 * existing
    sampler = make_sampler(
        settings.sampler, sampler_seed, n_startup_trials=t.n_startup_trials, parallel=session.workers > 1
    )
    max_epochs = ExperimentConfig.model_validate(
        params.trial_experiment(session.experiment), context=params.validation_context()
    ).trainer.max_epochs
    pruner = make_pruner(
        settings.pruner,
        n_startup_trials=t.n_startup_trials,
        n_warmup_steps=t.n_warmup_steps,
        min_resource=t.min_resource,
        max_resource=max_epochs,
        reduction_factor=t.reduction_factor,
    )
    study = BudgetedStudy(
        study_name=session.study_name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        n_trials=session.n_trials,
        lock=lock_path(session.storage),
    )
    objective = Objective(session, space, experiment_id, uri)
    ran = []
    try:
        study.optimize(
            objective,
            timeout=session.timeout,
            catch=(Exception,),
            callbacks=[lambda s, trial: ran.append(trial.number)],
        )
    except BudgetExhausted as exc:
        log.info("worker %d: %s", worker_index, exc)
    return len(ran)


def _run_workers(session: Session) -> list[int]:
    """Start ``session.workers`` worker processes (one thread each, GPUs shared round-robin) and wait for them;
    returns their exit codes. SIGINT/SIGTERM reach the workers, whose running trials end as failed."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        DEEPNOTES_WORKER_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    )
    gpus = _gpu_count()
    procs = []
    for index in range(session.workers):
        worker_env = dict(env, CUDA_VISIBLE_DEVICES=str(index % gpus)) if gpus > 1 else env
        procs.append(subprocess.Popen(session.worker_argv(index), env=worker_env, cwd=REPO_ROOT))
    try:
        return [proc.wait() for proc in procs]
    except BaseException:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()  # via NVML: does not initialise CUDA in the coordinator


# ------------------------------------------------------------------------------------------- coordinator


def tune(session: Session) -> dict[str, Any]:
    """Run one session of ``session``'s study: validate, create study and MLflow experiment, run the workers,
    then record the outcome. Returns the summary written to ``metrics/tune/<experiment>.json``.

    Raises:
        ConfigError: bad search space or settings, or a study created with the other direction.
    """
    import mlflow
    import optuna

    from pipelines.io import file_lock
    from pipelines.tracking import dvc_stage, ensure_experiment, git_commit, source_tags, tracking_uri
    from pipelines.tuning.studies import lock_path, open_study, redact

    params, settings = session.params, session.settings
    params.search_space(session.experiment)  # validated (with the `trial` overrides) before anything starts
    uri = tracking_uri(params)
    experiment_id = ensure_experiment(params, mlflow_experiment_name(params, session.study_name))
    storage = _storage_for(session, StaleTrialHandler(uri, params.tuning.max_retry))
    study = open_study(  # names the objective (optuna-dashboard shows the metric, not "Objective 0")
        storage,
        session.storage,
        session.study_name,
        direction=settings.direction,
        metric=settings.metric,
        attrs={"experiment": session.experiment, "profile": params.profile},
    )
    optuna.storages.fail_stale_trials(study)  # trials of workers killed since the last session
    before = len(study.get_trials(deepcopy=False))
    with file_lock(lock_path(session.storage)):  # concurrent sessions (cron overlap, SLURM) get distinct numbers
        session_index = int(study.user_attrs.get("sessions", 0)) + 1
        study.set_user_attr("sessions", session_index)

    client = mlflow.MlflowClient(uri)
    parent = client.create_run(
        experiment_id,
        tags={
            "mlflow.runName": f"session-{session_index:03d}",
            "study_name": session.study_name,
            "experiment": session.experiment,
            "stage": "tune",
            "storage": redact(session.storage),
            "git_commit": git_commit(),
            "profile": params.profile,
            "session": str(session_index),
        }
        | source_tags(TUNE_ENTRY, dvc_stage(params, session.experiment, "tune")),
    )
    session.parent_run_id = parent.info.run_id
    from pipelines.tracking import log_params

    log_params(
        client,
        session.parent_run_id,
        {
            "sampler": settings.sampler,
            "pruner": settings.pruner,
            "n_trials": session.n_trials,
            "timeout": session.timeout,
            "workers": session.workers,
            "seed": session.seed,
            "metric": settings.metric,
            "direction": settings.direction,
            "trials_before": before,
        },
    )
    log.info(
        "study %s (%s): %d trials so far, target %d; MLflow run %s",
        session.study_name,
        redact(session.storage),
        before,
        session.n_trials,
        session.parent_run_id,
    )
    status = "FAILED"
    start = time.perf_counter()
    worker_codes: list[int] = []
    try:
        if session.workers == 1:
            run_worker(session)
        else:
            worker_codes = _run_workers(session)
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):  # Ctrl+C, or SIGTERM (see main); Lightning turns either into exit(1)
        status = "KILLED"
        raise
    finally:
        seconds = time.perf_counter() - start
        summary = _record_session(session, storage, client, seconds, before, worker_codes)
        client.set_terminated(session.parent_run_id, status)
    log.info(
        "session %d of %s: %s",
        session_index,
        session.study_name,
        {k: summary[k] for k in ("best_value", "session_trials", "study_trials")},
    )
    return summary


def _record_session(
    session: Session, storage, client, seconds: float, before: int, worker_codes: list[int]
) -> dict[str, Any]:
    """Log the study's state to the parent run, write the tuned params and the metrics summary."""
    import optuna

    from pipelines.tuning.studies import counts

    study = optuna.load_study(study_name=session.study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    mine = [t for t in trials if t.user_attrs.get("mlflow_parent_run_id") == session.parent_run_id]
    study_counts, session_counts = counts(study, trials), counts(study, mine)
    run_id = session.parent_run_id
    if run_id is None:
        raise RuntimeError("the session has no parent MLflow run to record into")
    metrics: dict[str, float] = {f"study_{k.lower()}": v for k, v in study_counts.items()}
    metrics |= {f"session_{k.lower()}": v for k, v in session_counts.items()}
    metrics |= {
        "study_trials": len(trials),
        "session_trials": len(mine),
        "session_seconds": seconds,
        "trials_per_minute": 60 * len(mine) / seconds if seconds > 0 else 0.0,
    }
    summary: dict[str, Any] = {
        "study_name": session.study_name,
        "experiment": session.experiment,
        "metric": session.settings.metric,
        "direction": session.settings.direction,
        "best_value": None,
        "best_trial": None,
        "best_params": {},
        "parent_run_id": run_id,
        **metrics,
    }
    if worker_codes:
        summary["worker_exit_codes"] = worker_codes
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        summary |= {
            "best_value": best.value,
            "best_trial": best.number,
            "best_params": dict(best.params),
            "best_run_id": best.user_attrs.get("mlflow_run_id"),
        }
        metrics["best_value"] = float("nan") if best.value is None else best.value
        client.set_tag(run_id, "best_trial_number", str(best.number))
        if best.user_attrs.get("mlflow_run_id"):
            client.set_tag(run_id, "best_trial_run_id", best.user_attrs["mlflow_run_id"])
        from pipelines.tracking import log_params

        log_params(client, run_id, {f"best.{k}": v for k, v in best.params.items()})
        write_tuned(session, best)
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    _log_plots(study, client, run_id)
    atomic_write_json(
        session.base_dir / "metrics" / "tune" / f"{session.experiment}.json",
        {k: v for k, v in summary.items() if k not in ("best_params",)}
        | {f"best.{k}": v for k, v in summary["best_params"].items()},
    )
    return summary


def write_tuned(session: Session, best) -> Path:
    """Write the best trial's params to ``params/tuned/<experiment>.yaml`` (atomically) as nested overrides."""
    import yaml

    from pipelines.tuning.search_space import overrides_from

    base = session.params.experiment(session.experiment).model_dump(mode="json")
    path = tuned_path(session.experiment, session.base_dir)
    body = {
        "experiment": session.experiment,
        "study_name": session.study_name,
        "profile": session.params.profile,
        "metric": session.settings.metric,
        "direction": session.settings.direction,
        "value": best.value,
        "trial": best.number,
        "mlflow_run_id": best.user_attrs.get("mlflow_run_id"),
        "params": overrides_from(dict(best.params), base),
    }
    header = (
        f"# Best params of study {session.study_name!r}, written by `deepnotes tune {session.experiment}`.\n"
        f"# Set experiments.{session.experiment}.use_tuned: true in params.yaml to train with them: the `params`\n"
        f"# below are then merged into the experiment (params/resolved/train/{session.experiment}.json).\n"
    )
    atomic_write_text(path, header + yaml.safe_dump(body, sort_keys=False))
    return path


def _log_plots(study, client, run_id: str) -> None:
    """Optuna's matplotlib plots of the study, as PNG artifacts ``plots/*.png`` of the parent run.

    Each plot that cannot be drawn yet (e.g. importances need two finished trials) is skipped with a log line.
    """
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    plots: dict[str, Any] = {
        "optimization_history": ovm.plot_optimization_history,
        "param_importances": ovm.plot_param_importances,
        "parallel_coordinate": ovm.plot_parallel_coordinate,
        "slice": ovm.plot_slice,
        "intermediate_values": ovm.plot_intermediate_values,
    }
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, plot in plots.items():
            try:
                result = plot(study)
                axes = result.flat[0] if hasattr(result, "flat") else result
                figure = axes.get_figure()
                figure.set_size_inches(max(figure.get_size_inches()[0], 8), max(figure.get_size_inches()[1], 5))
                figure.savefig(Path(tmp) / f"{name}.png", dpi=100, bbox_inches="tight")
            except Exception as exc:  # too few trials for this plot yet
                log.info("plot %s skipped: %s", name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            finally:
                plt.close("all")
        if any(Path(tmp).iterdir()):
            client.log_artifacts(run_id, tmp, artifact_path="plots")
