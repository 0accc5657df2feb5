"""Optuna studies for ``deepnotes tune``: storage, samplers, pruners, the trial budget and worker liveness.

Storage
    The default is a journal file, ``<repo>/studies/deepnotes.journal`` (absolute, git-ignored):
    ``JournalStorage(JournalFileBackend)``, safe for parallel workers on one machine or a shared filesystem and
    append-only, so a killed worker cannot corrupt it. Any RDB URL works too (``sqlite:///...`` here,
    ``postgresql://...`` on clusters). ``--storage``, then ``DEEPNOTES_OPTUNA_STORAGE``, then ``tuning.storage``
    choose it.

Liveness
    Both storages record a heartbeat per running trial (Optuna's heartbeat: RDB natively, the journal through
    :class:`HeartbeatJournalStorage`) and know the worker (host, pid namespace, pid, process start time) that
    runs it. A trial whose heartbeat is older than the grace period, or whose worker on this host no longer
    exists, is stale: the next worker (or the next ``deepnotes tune``) marks it FAIL, and
    ``RetryHeartbeatStaleTrialCallback`` (formerly ``RetryFailedTrialCallback``) re-queues its params.

Budget
    ``n_trials`` is a target total for the study, not per session: :class:`BudgetedStudy` creates a new trial only
    while the study holds fewer, under a file lock shared by every worker of the storage, so K workers end with
    exactly ``n_trials`` trials and re-running continues the numbering. Re-queued retries of killed trials run
    on top of the target.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from pipelines import REPO_ROOT
from pipelines.io import file_lock

STUDIES_DIR = REPO_ROOT / "studies"
DEFAULT_JOURNAL = STUDIES_DIR / "deepnotes.journal"
HEARTBEAT_KEY = "deepnotes:heartbeat"
WORKER_KEY = "deepnotes:worker"
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


class BudgetExhausted(Exception):
    """Raised by :meth:`BudgetedStudy.ask` when the study already holds its target number of trials."""


# ------------------------------------------------------------------------------------------------ storage


def storage_url(cli: str | None = None, configured: str | None = None) -> str:
    """The storage to use: ``cli``, else ``DEEPNOTES_OPTUNA_STORAGE``, else ``configured``, else the repo journal.

    A relative journal path is made absolute (against the current directory), so every worker and the
    coordinator agree on one file.
    """
    url = cli or os.environ.get("DEEPNOTES_OPTUNA_STORAGE") or configured or str(DEFAULT_JOURNAL)
    if is_rdb(url):
        return url
    return str(Path(url.removeprefix("journal://")).expanduser().resolve())


def is_rdb(url: str) -> bool:
    """Whether ``url`` is an SQLAlchemy database URL (else it is a journal file path)."""
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    return scheme in RDB_SCHEMES


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and MLflow tags)."""
    if not is_rdb(url):
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _process_identity(pid: int) -> dict[str, Any]:
    """Who a worker is: host, pid namespace, pid and the process's start time (clock ticks since boot)."""
    identity: dict[str, Any] = {"host": socket.gethostname(), "pid": pid}
    with contextlib.suppress(OSError):
        identity["pidns"] = os.readlink(f"/proc/{pid}/ns/pid")
    with contextlib.suppress(OSError, IndexError, ValueError):
        identity["start"] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    return identity


def worker_identity() -> dict[str, Any]:
    """This process's identity, stamped on every trial it runs (``system_attrs[WORKER_KEY]``)."""
    return _process_identity(os.getpid()) | {"since": time.time()}


def worker_is_dead(worker: dict[str, Any] | None) -> bool:
    """Whether ``worker`` ran on this host (same pid namespace) and its process is gone or was replaced.

    Unknown or remote workers are never declared dead here; their heartbeat decides.
    """
    if not worker:
        return False
    here = _process_identity(os.getpid())
    if worker.get("host") != here["host"] or worker.get("pidns") != here.get("pidns"):
        return False
    try:
        os.kill(int(worker["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError, ValueError, KeyError):
        return False
    now = _process_identity(int(worker["pid"]))
    return "start" in worker and "start" in now and now["start"] != worker["start"]


def _stale(trial: FrozenTrial, grace_period: float, now: float) -> bool:
    started = trial.datetime_start.timestamp() if trial.datetime_start else now
    beat = trial.system_attrs.get(HEARTBEAT_KEY)
    last_alive = max(started, beat) if isinstance(beat, (int, float)) else started
    if now - last_alive > grace_period:
        return True
    worker = trial.system_attrs.get(WORKER_KEY)
    # attributes copied into a re-queued trial belong to the previous attempt: only trust a stamp of this one
    if isinstance(worker, dict) and worker.get("since", 0) >= started - 1:
        return worker_is_dead(worker)
    return False


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """``JournalStorage`` with Optuna's heartbeat protocol, which Optuna implements only for RDB storages.

    Heartbeats are trial system attributes (one journal line per ``heartbeat_interval``); a RUNNING trial is stale
    when its last heartbeat is older than ``grace_period`` or its worker on this host has died.
    """

    def __init__(
        self,
        backend,
        *,
        heartbeat_interval: int,
        grace_period: int | None = None,
        stale_callback: StaleCallback | None = None,
    ) -> None:
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period or 2 * heartbeat_interval
        self.stale_callback = stale_callback

    def record_heartbeat(self, trial_id: int) -> None:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [t._trial_id for t in running if _stale(t, self.grace_period, now)]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self.stale_callback


class LivenessRDBStorage(RDBStorage):
    """``RDBStorage`` whose stale trials also include those of workers that died on this host (no need to wait
    out the grace period after a local kill)."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = set(super()._get_stale_trial_ids(study_id))
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            worker = trial.system_attrs.get(WORKER_KEY)
            started = trial.datetime_start.timestamp() if trial.datetime_start else 0
            if isinstance(worker, dict) and worker.get("since", 0) >= started - 1 and worker_is_dead(worker):
                stale.add(trial._trial_id)
        return sorted(stale)


def check_liveness(heartbeat_interval: int, grace_period: int | None) -> None:
    """Refuse a grace period that a live trial cannot meet.

    A running trial's heartbeat is refreshed every ``heartbeat_interval`` seconds, so its age reaches the interval
    just before each beat: with ``grace_period <= heartbeat_interval`` any other session or worker would fail live
    trials as stale. (Optuna itself only requires a positive grace period.)

    Raises:
        ConfigError: naming ``tuning.grace_period`` and both values.
    """
    from pipelines.config import ConfigError

    if grace_period is not None and grace_period <= heartbeat_interval:
        raise ConfigError(
            f"tuning.grace_period: {grace_period} s is not longer than tuning.heartbeat_interval "
            f"({heartbeat_interval} s), so a running trial would look stale between two heartbeats and another "
            f"session would fail it; set it above the interval (unset, it is 2 x heartbeat_interval)"
        )


def make_storage(
    url: str, *, heartbeat_interval: int, grace_period: int | None = None, stale_callback: StaleCallback | None = None
):
    """An Optuna storage for ``url`` (see :func:`storage_url`) with heartbeats and the stale-trial callback.

    Raises:
        ConfigError: ``grace_period`` is not longer than ``heartbeat_interval``.
        OSError: the journal's folder cannot be created.
    """
    check_liveness(heartbeat_interval, grace_period)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if is_rdb(url):
            return LivenessRDBStorage(
                url,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=stale_callback,
            )
        path = Path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return HeartbeatJournalStorage(
            JournalFileBackend(str(path)),
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            stale_callback=stale_callback,
        )


def lock_path(url: str) -> Path:
    """The budget lock file of a storage: beside a journal, or under ``studies/`` for a database."""
    if not is_rdb(url):  # not `<journal>.lock`: JournalFileBackend's own lock lives there
        return Path(f"{url}.budget-lock")
    return STUDIES_DIR / f"rdb-{hashlib.sha256(url.encode()).hexdigest()[:16]}.lock"


# -------------------------------------------------------------------------------------- samplers, pruners


def make_sampler(name: str, seed: int, *, n_startup_trials: int, parallel: bool) -> optuna.samplers.BaseSampler:
    """The sampler ``tpe`` (multivariate, grouped for conditional spaces, constant liar when parallel), ``random``,
    ``cmaes`` or ``gp``, seeded with ``seed``.

    Raises:
        ValueError: an unknown name.
    """
    samplers = optuna.samplers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return samplers.TPESampler(
                seed=seed, n_startup_trials=n_startup_trials, multivariate=True, group=True, constant_liar=parallel
            )
        if name == "random":
            return samplers.RandomSampler(seed=seed)
        if name == "cmaes":  # categorical and conditional params fall back to random sampling
            return samplers.CmaEsSampler(seed=seed, n_startup_trials=n_startup_trials, warn_independent_sampling=False)
        if name == "gp":
            return samplers.GPSampler(seed=seed, n_startup_trials=n_startup_trials)
    raise ValueError(f"unknown sampler {name!r}; expected tpe, random, cmaes or gp")


def make_pruner(
    name: str,
    *,
    n_startup_trials: int,
    n_warmup_steps: int,
    min_resource: int,
    max_resource: int,
    reduction_factor: int,
) -> optuna.pruners.BasePruner:
    """The pruner ``median``, ``hyperband``, ``successive_halving`` or ``none``; steps are epochs.

    Raises:
        ValueError: an unknown name.
    """
    pruners = optuna.pruners
    if name == "median":
        return pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps)
    if name == "hyperband":
        return pruners.HyperbandPruner(
            min_resource=min_resource, max_resource=max(max_resource, min_resource), reduction_factor=reduction_factor
        )
    if name == "successive_halving":
        return pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=reduction_factor)
    if name == "none":
        return pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}; expected median, hyperband, successive_halving or none")


# -------------------------------------------------------------------------------------------------- study


class BudgetedStudy(optuna.Study):
    """A ``Study`` whose :meth:`ask` keeps the study at ``n_trials`` trials in total, across processes.

    Args:
        n_trials: target total of trials in the study (every state counts).
        lock: the lock file every worker on this storage shares (:func:`lock_path`).
        **kwargs: ``optuna.Study`` arguments (``study_name``, ``storage``, ``sampler``, ``pruner``).
    """

    def __init__(self, *, n_trials: int, lock: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_trials = n_trials
        self.lock = lock

    def ask(self, fixed_distributions=None):
        """Create (or pop a re-queued) trial and stamp it with this worker's identity.

        Raises:
            BudgetExhausted: the study already holds ``n_trials`` trials and none is waiting.
        """
        with file_lock(self.lock):
            trials = self.get_trials(deepcopy=False)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if not waiting and len(trials) >= self.n_trials:
                raise BudgetExhausted(f"study {self.study_name!r} holds {len(trials)} of {self.n_trials} trials")
            trial = super().ask(fixed_distributions)
            self._storage.set_trial_system_attr(trial._trial_id, WORKER_KEY, worker_identity())
        return trial


def study_metric(study: optuna.Study) -> str | None:
    """The metric ``study`` optimises: its objective's Optuna metric name, else its ``metric`` user attribute (set by
    every ``deepnotes tune`` session, also before metric names were), else ``None``."""
    names = study.metric_names
    if names:
        return names[0]
    metric = study.user_attrs.get("metric")
    return metric if isinstance(metric, str) else None


def name_objective(study: optuna.Study, metric: str) -> None:
    """Name the study's single objective ``metric`` (``Study.set_metric_names``), unless it already has that name.

    The name is what optuna-dashboard, ``Study.trials_dataframe`` and Optuna's plots show instead of "Objective 0".
    """
    if study.metric_names != [metric]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # experimental since 3.2
            study.set_metric_names([metric])


def open_study(
    storage,
    url: str,
    study_name: str,
    *,
    direction: Literal["minimize", "maximize"],
    metric: str,
    attrs: dict[str, Any] | None = None,
) -> optuna.Study:
    """Create the study ``study_name`` in ``storage`` (opened from ``url``), or load it, and name its objective.

    A study made before its objective had a name gets the name ``metric`` here, the next time a search opens it.
    ``metric`` and ``attrs`` (e.g. ``experiment``, ``profile``) are set as user attributes where absent.

    Raises:
        ConfigError: the study was created to optimise in the other ``direction`` or another ``metric`` (its
            trials' values would not compare with this search's).
    """
    from pipelines.config import ConfigError

    study = optuna.create_study(study_name=study_name, storage=storage, direction=direction, load_if_exists=True)
    known = study_metric(study)
    if study.direction.name.lower() != direction or known not in (None, metric):
        raise ConfigError(
            f"study {study_name!r} in {redact(url)} was created to {study.direction.name.lower()} "
            f"{known or '?'}, but this search would {direction} {metric}; use another --study-name"
        )
    name_objective(study, metric)
    for key, value in ({"metric": metric} | (attrs or {})).items():
        if key not in study.user_attrs:
            study.set_user_attr(key, value)
    return study


def name_objectives(storage) -> list[str]:
    """Name the objective of every single-objective study in ``storage`` that has no name yet, from its ``metric``
    user attribute (studies of ``deepnotes tune`` made before metric names were set). Returns the studies named."""
    named = []
    for frozen in storage.get_all_studies():
        metric = frozen.user_attrs.get("metric")
        if len(frozen.directions) != 1 or not isinstance(metric, str):
            continue
        study = optuna.load_study(study_name=frozen.study_name, storage=storage)
        if study.metric_names is None:
            name_objective(study, metric)
            named.append(frozen.study_name)
    return named


def counts(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> dict[str, int]:
    """Trials per state, e.g. ``{"COMPLETE": 12, "PRUNED": 7, "FAIL": 1, "RUNNING": 0, "WAITING": 0}``."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    out = {
        state.name: 0
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)
    }
    for trial in trials:
        out[trial.state.name] = out.get(trial.state.name, 0) + 1
    return out
