"""MLflow tracking set-up and provenance: where the store is, the experiment, and what to record about a run.

The default store is ``sqlite:///<repo>/mlflow/mlflow.db`` with artifacts in ``<repo>/mlflow/artifacts``, both
absolute, so runs land in the same place from any directory and from DVC's experiment copies (a queued
experiment's temporary copy logs into its workspace's store: :func:`workspace_root`). Set
``MLFLOW_TRACKING_URI`` (e.g. ``http://mlflow.team:5000``) to log to a team server instead.
(MLflow's file store is deprecated and Lightning's logger defaults to ``./mlruns``: we always pass the URI.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

from pipelines import REPO_ROOT
from pipelines.config import ConfigError, ExperimentConfig, Params
from pipelines.io import file_lock

log = logging.getLogger("deepnotes.tracking")


def workspace_root(root: Path = REPO_ROOT) -> Path:
    """The DVC workspace a checkout belongs to: ``root`` itself, or, for the temporary copy in which ``dvc exp run
    --queue`` / ``--temp`` runs an experiment (``<workspace>/.dvc/tmp/exps/...``), the workspace around it, whose
    tracking store outlives the copy."""
    parts = root.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


#: The default tracking store's folder: the workspace's ``mlflow/`` (a queued experiment's runs land there too).
MLFLOW_DIR = workspace_root() / "mlflow"
LIBRARIES = ("torch", "lightning", "torchmetrics", "mlflow", "optuna", "dvc", "kornia", "numpy", "tokenizers")


def tracking_uri(params: Params | None = None) -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI``, else ``tracking.tracking_uri``, else the repo's SQLite store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or (params.tracking.tracking_uri if params else None)
    if uri:
        return uri
    MLFLOW_DIR.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(MLFLOW_DIR / 'mlflow.db').resolve()}"


def artifact_location(params: Params | None = None) -> str | None:
    """Artifact root for new experiments (absolute ``file://`` URI), or ``None`` to let a remote server decide."""
    if params and params.tracking.artifact_location:
        return params.tracking.artifact_location
    if os.environ.get("MLFLOW_TRACKING_URI", "").startswith(("http://", "https://")):
        return None
    return (MLFLOW_DIR / "artifacts").resolve().as_uri()


class TrackingError(ConfigError):
    """The tracking URI (``MLFLOW_TRACKING_URI`` or ``tracking.tracking_uri``) names a server that does not answer.
    A :class:`~pipelines.config.ConfigError`: the stages print it as one ``error: ...`` line and exit with 2."""


#: MLflow's own request settings for the reachability check (unless the environment sets them): one retry after a
#: 1-second backoff, 3 seconds per attempt, so an unreachable server is reported within about 10 seconds.
CHECK_REQUEST_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "3",
}


def check_tracking_server(uri: str) -> None:
    """Fail fast when ``uri`` is an ``http(s)://`` tracking server that does not answer: one
    ``search_experiments`` call through MLflow's REST client, with :data:`CHECK_REQUEST_ENV` (MLflow's own retry
    and timeout settings; values already in the environment win). Local stores are not checked.

    Raises:
        TrackingError: the server refused, timed out or answered with an error; the message names the URI, what
            was tried and the settings.
    """
    if not uri.startswith(("http://", "https://")):
        return
    from mlflow import MlflowClient

    settings = {k: os.environ.get(k, v) for k, v in CHECK_REQUEST_ENV.items()}
    retries = logging.getLogger("urllib3.connectionpool")  # its "Retrying ..." warning would be a second message
    level = retries.level
    retries.setLevel(logging.ERROR)
    try:
        with mock.patch.dict(os.environ, settings):  # restored afterwards, whatever was set before
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - whatever the transport raised, the user needs the same one line
        text = str(exc)
        cause = re.search(r"\[Errno -?\d+\][^'\"()]*|[Rr]ead timed out|timed out|HTTP \d{3}[^.]*", text)
        reason = cause.group(0).strip() if cause else (text.splitlines()[0][:200] if text else type(exc).__name__)
        tried = ", ".join(f"{k}={v}" for k, v in settings.items())
        raise TrackingError(
            f"tracking server {uri} is not reachable as an MLflow server: GET {uri.rstrip('/')}/api/2.0/mlflow/experiments/search "
            f"failed ({reason}; {tried}). Start the server, or unset MLFLOW_TRACKING_URI to track into the "
            f"repo's store (mlflow/mlflow.db)"
        ) from None
    finally:
        retries.setLevel(level)


#: Tracking URIs whose server stopped answering during this process's run (:class:`ResilientTracking`): what the
#: run still wants to log there is buffered, not sent (:func:`log_model` skips them too).
LOST_URIS: set[str] = set()


class ResilientTracking:
    """MLflow logging of one training run that survives a tracking server dying mid-run.

    :attr:`client` is an ``MlflowClient`` whose logging calls (``log_batch``, ``log_metric``, ``set_tag``,
    ``log_artifact``, ``log_figure``, ``set_terminated``, ...) never raise: the first one that fails (after MLflow's own
    retries, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``, ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``)
    marks the server lost with one warning, and from then on every logging call is buffered in memory instead of
    sent, so training continues at full speed and writes every local output. :meth:`logger` is Lightning's
    ``MLFlowLogger`` over the same client. Other calls (``create_run``, ``get_run``) pass through and may raise.

    At the end the stage calls :meth:`raise_if_lost`: it sends the buffer once more (a server that came back gets the
    whole run) and otherwise raises :class:`TrackingError`, so DVC does not record a stage whose run is incomplete.
    """

    #: The client methods that only log (buffered once the server is lost); everything else passes through.
    LOGGING = frozenset(
        {
            "log_batch",
            "log_metric",
            "log_param",
            "set_tag",
            "set_experiment_tag",
            "log_artifact",
            "log_artifacts",
            "log_figure",
            "log_dict",
            "log_text",
            "log_inputs",
            "set_terminated",
            "update_run",
        }
    )

    def __init__(self, uri: str, spool: Path | None = None) -> None:
        from mlflow import MlflowClient

        self.uri = uri
        #: where :meth:`raise_if_lost` keeps the metrics, params and tags not sent (JSON), for :meth:`replay`
        self.spool = spool
        self.error: str | None = None  # the first failure, once lost
        self.buffered: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self._client = MlflowClient(uri)
        self.client = _ResilientClient(self)

    @property
    def lost(self) -> bool:
        return self.error is not None

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Send one logging call, or buffer it when the server is (or just became) lost."""
        if self.lost:
            self.buffered.append((method, args, kwargs))
            return None
        try:
            return getattr(self._client, method)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - whatever the transport raised: keep training, report at the end
            self._lose(exc)
            self.buffered.append((method, args, kwargs))
            return None

    def get_run(self, run_id: str) -> Any:
        """``MlflowClient.get_run``, or ``None`` once the server is lost (Lightning's logger asks before it marks
        the run finished). An answer of the server (no such run) still raises ``MlflowException``."""
        from mlflow.exceptions import MlflowException

        if self.lost:
            return None
        try:
            return self._client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise
            self._lose(exc)
            return None

    def _lose(self, exc: BaseException) -> None:
        """Mark the server lost after ``exc`` (one warning)."""
        self.error = _reason(exc)
        LOST_URIS.add(self.uri)
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # no retry warning per call
        log.warning(
            "tracking server %s stopped answering (%s): MLflow logging is buffered from now on; training continues",
            self.uri,
            self.error,
        )

    def logger(self, experiment_name: str, experiment_id: str, run_id: str):
        """Lightning's ``MLFlowLogger`` for ``run_id`` over :attr:`client` (no request when it starts)."""
        from lightning.pytorch.loggers import MLFlowLogger

        logger = MLFlowLogger(experiment_name=experiment_name, tracking_uri=self.uri, run_id=run_id)
        logger._mlflow_client = self.client  # type: ignore[assignment]
        logger._experiment_id, logger._initialized = experiment_id, True  # skips its get_run at the first log
        return logger

    def raise_if_lost(self, experiment: str, outputs: list[Path]) -> None:
        """Nothing when every call was sent. Otherwise send the buffer once more, in order; if the server still
        does not answer, raise :class:`TrackingError` naming the URI, the reason, what was not sent and the local
        ``outputs`` (written and kept)."""
        if not self.lost:
            return
        pending, self.buffered = self.buffered, []
        sent = 0
        try:
            for method, args, kwargs in pending:
                getattr(self._client, method)(*args, **kwargs)
                sent += 1
        except Exception as exc:  # noqa: BLE001
            self._write_spool(pending[sent:])
            kept = ", ".join(str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(p) for p in outputs)
            raise TrackingError(
                f"tracking server {self.uri} stopped answering during the run of {experiment} ({self.error}; "
                f"again at the end: {_reason(exc)}); {len(pending) - sent} MLflow logging calls were not sent; local "
                f"outputs kept in {kept}. When the server answers again, rerun `dvc repro train@{experiment}` to "
                f"track the run, or keep these outputs as they are with `dvc commit train@{experiment}`"
            ) from None
        self.error = None
        if self.spool is not None:
            self.spool.unlink(missing_ok=True)
        LOST_URIS.discard(self.uri)
        log.warning("tracking server %s answers again: %d buffered MLflow calls sent", self.uri, len(pending))

    #: The calls a spool keeps: what the run's history is made of (artifacts, figures and the run status are
    #: logged again by the rerun).
    SPOOLED = ("log_batch", "log_metric", "log_param", "set_tag")

    def _write_spool(self, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> None:
        """Keep the metrics, params and tags of ``calls`` in :attr:`spool` (JSON), for :meth:`replay`."""
        if self.spool is None:
            return
        from pipelines.io import atomic_write_json

        kept = []
        for method, args, kwargs in calls:
            if method not in self.SPOOLED:
                continue
            call = {"method": method, "args": list(args)} | {
                k: [_entity(e) for e in v] if k in ("metrics", "params", "tags") else v for k, v in kwargs.items()
            }
            kept.append(call)
        if kept:
            atomic_write_json(self.spool, kept)

    def replay(self) -> int:
        """Send what a previous process of this run could not (:attr:`spool`), in order, then remove the spool;
        returns the number of calls sent. Called when the run resumes: its MLflow history is then continuous."""
        import json

        from mlflow.entities import Metric, Param, RunTag

        if self.spool is None or not self.spool.is_file():
            return 0
        kinds = {"metrics": Metric, "params": Param, "tags": RunTag}
        calls = json.loads(self.spool.read_text())
        metrics: dict[str, list[Metric]] = {}  # per run: sent 1,000 a request (MLflow's batch limit), steps explicit
        for call in calls:
            method, args = call.pop("method"), call.pop("args")
            kwargs = {k: [kinds[k](*e) for e in v] if k in kinds else v for k, v in call.items()}
            if method == "log_batch" and set(kwargs) - {"run_id", "synchronous"} == {"metrics"}:
                run = str(args[0] if args else kwargs["run_id"])
                metrics.setdefault(run, []).extend(kwargs["metrics"])
                continue
            getattr(self._client, method)(*args, **kwargs)
        for run, items in metrics.items():
            for start in range(0, len(items), 1000):
                self._client.log_batch(run, metrics=items[start : start + 1000])
        self.spool.unlink()
        log.info("sent %d MLflow calls that the interrupted run could not (%s)", len(calls), self.spool)
        return len(calls)


def _entity(entity: Any) -> list[Any]:
    """An MLflow ``Metric`` (key, value, timestamp, step), ``Param`` or ``RunTag`` (key, value) as a JSON list."""
    if hasattr(entity, "timestamp"):
        return [entity.key, entity.value, entity.timestamp, entity.step]
    return [entity.key, entity.value]


class _ResilientClient:
    """An ``MlflowClient`` whose logging methods go through :meth:`ResilientTracking.call`."""

    def __init__(self, tracking: ResilientTracking) -> None:
        self._tracking = tracking

    def __getattr__(self, name: str) -> Any:
        if name in ResilientTracking.LOGGING:
            return lambda *args, **kwargs: self._tracking.call(name, args, kwargs)
        if name == "get_run":
            return self._tracking.get_run
        return getattr(self._tracking._client, name)


def _reason(exc: BaseException) -> str:
    """The short cause of a failed MLflow request: ``[Errno 111] Connection refused``, ``Read timed out``, ..."""
    text = str(exc)
    cause = re.search(r"\[Errno -?\d+\][^'\"()]*|[Rr]ead timed out|timed out|HTTP \d{3}[^.]*", text)
    return cause.group(0).strip() if cause else (text.splitlines()[0][:200] if text else type(exc).__name__)


#: MLflow's experiment kind of a model-training experiment (the experiment tag ``mlflow.experimentKind``; the UI's
#: "Machine learning" kind), which :func:`ensure_experiment` sets. MLflow 3.17's UI does not read it to choose the page
#: an experiment opens on: it takes the kind from its sidebar switch "GenAI | Model training" (the URL parameter
#: ``workflowType``, else the browser's ``localStorage`` key ``mlflow.workflowType_v1``, default GenAI;
#: mlflow/mlflow#24498), so a fresh browser opens every experiment on the GenAI overview whatever the tag says. Links
#: into the UI therefore carry :data:`TRAINING_WORKFLOW` (:func:`runs_table_url`), and the README says to pick
#: "Model training" once per browser. (The 3.17 bundle still reads the tag, and opens the runs table for this kind,
#: only where its workflow-based navigation flag is off; that flag is hard-wired on.)
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
#: The MLflow UI's URL parameter that shows a page as a training workload (runs, models) rather than GenAI.
TRAINING_WORKFLOW = "workflowType=machine_learning"


def ensure_experiment(params: Params, name: str | None = None) -> str:
    """Create (once) or fetch an MLflow experiment (default ``tracking.experiment_name``); returns its id.
    Safe when another process creates it first.

    Raises:
        TrackingError: the tracking URI names a server that does not answer (:func:`check_tracking_server`).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri(params)
    check_tracking_server(uri)
    mlflow.set_tracking_uri(uri)
    name = name or params.tracking.experiment_name
    # Two processes creating a fresh SQLite store at once race in its schema migration: serialise the first
    # contact with a local store (concurrent scheduled searches, parallel `dvc exp` jobs).
    lock = Path(uri.removeprefix("sqlite:///") + ".lock") if uri.startswith("sqlite:///") else None
    with file_lock(lock) if lock else contextlib.nullcontext():
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            if KIND_TAG not in experiment.tags:  # a store made before the tag was set
                mlflow.MlflowClient(uri).set_experiment_tag(experiment.experiment_id, KIND_TAG, KIND)
            return experiment.experiment_id
        try:
            return mlflow.create_experiment(name, artifact_location=artifact_location(params), tags={KIND_TAG: KIND})
        except MlflowException:  # created concurrently (a remote server)
            created = mlflow.get_experiment_by_name(name)
            if created is None:
                raise
            return created.experiment_id


def runs_table_url(base: str, db: Path | None = None, name: str | None = None) -> str:
    """The URL of experiment ``name``'s runs table in the MLflow UI served at ``base`` (``http://127.0.0.1:5000``):
    ``<base>/#/experiments/<id>/runs?workflowType=machine_learning`` (:data:`TRAINING_WORKFLOW`: it opens the runs
    table in a fresh browser too). ``make ui`` prints it before it starts the server.

    The id is read from the SQLite store ``db`` (default the repo's ``mlflow/mlflow.db``) opened read-only, without
    MLflow and without a server: a query of MLflow's SQL schema (table ``experiments``: ``experiment_id``, ``name``,
    ``lifecycle_stage``) takes milliseconds, an ``MlflowClient`` over SQLite 3.5 s. ``name`` defaults to
    ``tracking.experiment_name`` of ``params.yaml``. Without the store or an active experiment of that name (before
    the first ``make run``), or when the store cannot be read (logged as a warning naming it), returns the experiments
    list, ``<base>/#/experiments``.
    """
    import sqlite3

    from pipelines.config import load_params

    db = db or MLFLOW_DIR / "mlflow.db"
    name = name or load_params().tracking.experiment_name
    row = None
    if db.is_file():
        query = "SELECT MIN(experiment_id) FROM experiments WHERE name = ? AND lifecycle_stage = 'active'"
        try:
            with contextlib.closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as store:
                row = store.execute(query, (name,)).fetchone()
        except sqlite3.Error as exc:
            log.warning("%s: cannot read the id of experiment %r (%s); printing the experiments list", db, name, exc)
    if row and row[0] is not None:
        return f"{base.rstrip('/')}/#/experiments/{row[0]}/runs?{TRAINING_WORKFLOW}"
    return f"{base.rstrip('/')}/#/experiments"


# --------------------------------------------------------------------------------------------- a run's record
# What every run of the project carries beside its metrics: its own duration, its datasets and its source.

#: The metrics that time a run's work, in seconds (wall time of a stage process, from its start to the end of its
#: work). The run's ``end_time`` is ``start_time`` plus their sum (:func:`record_work`), so MLflow's Duration column
#: shows the run's own work, not the hours between its ``train`` and its ``evaluate`` (DVC runs every train stage
#: before any evaluate stage).
WORK_METRICS = ("train_seconds", "evaluate_seconds")


def record_work(
    client,
    run_id: str,
    key: str,
    seconds: float,
    *,
    start_time: int,
    earlier: dict[str, float] | None = None,
    status: str = "FINISHED",
    step: int = 0,
) -> int:
    """Log the work metric ``key`` (one of :data:`WORK_METRICS`) of ``run_id`` and set the run's end time to
    ``start_time + 1000 * (seconds + the other work metrics in earlier)``; returns that end time (ms since the epoch).

    Goes through ``set_terminated(run_id, status, end_time=...)``: MLflow's only call that sets an end time; with an
    explicit ``end_time`` it writes that time, not "now", and ``status`` (the run's own status when ``evaluate``
    calls it) leaves the status unchanged. The run is never reopened (``RUNNING``).

    Args:
        client: an ``MlflowClient`` (or :attr:`ResilientTracking.client`).
        key: ``train_seconds`` or ``evaluate_seconds``.
        seconds: wall time of the stage's work, in seconds.
        start_time: the run's ``info.start_time`` (ms): the start of the process that created it.
        earlier: the run's metrics so far (``run.data.metrics``); only the other :data:`WORK_METRICS` are read.
        step: the metric's step (``train`` logs ``train_seconds`` per epoch as well: the last step is the total).

    Raises:
        ValueError: ``key`` is not a work metric.
    """
    if key not in WORK_METRICS:
        raise ValueError(f"work metric {key!r} is not one of {', '.join(WORK_METRICS)}")
    totals = {k: float(v) for k, v in (earlier or {}).items() if k in WORK_METRICS} | {key: float(seconds)}
    end_time = int(start_time) + round(1000 * sum(totals.values()))
    client.log_metric(run_id, key, float(seconds), step=step)
    client.set_terminated(run_id, status, end_time=end_time)
    return end_time


#: The ``dvc.yaml`` stage groups of a ``transfer:`` experiment, by the stage module that runs: its train and
#: evaluate run in one stage (``finetune@<name>``, which depends on the weights file), its diagnose in its own group.
TRANSFER_STAGES = {"train": "finetune", "evaluate": "finetune", "diagnose": "diagnose_transfer"}


def dvc_stage(params: Params, experiment: str, stage: str) -> str:
    """The address of the DVC stage running this process: DVC's own ``DVC_STAGE`` (which ``dvc repro`` and ``dvc
    exp run`` set for every command, e.g. ``train@lenet5_mnist``), else the stage of ``dvc.yaml`` that runs module
    ``stage`` for ``experiment``: ``<stage>@<experiment>``, or for a ``transfer:`` experiment its group in
    :data:`TRANSFER_STAGES` (``finetune@<experiment>``)."""
    if os.environ.get("DVC_STAGE"):
        return os.environ["DVC_STAGE"]
    group = TRANSFER_STAGES.get(stage, stage) if experiment in params.transfer else stage
    return f"{group}@{experiment}"


def entry_point(file: str | Path) -> str:
    """``file`` (a stage module's ``__file__``) relative to the checkout, e.g. ``pipelines/stages/train.py``: what
    ``mlflow.source.name`` holds (the UI's Source column shows its last part, ``train.py``)."""
    path = Path(file).resolve()
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)


def source_tags(entry: str, stage: str) -> dict[str, str]:
    """MLflow's standard source tags of a run a stage creates, plus the DVC stage:

    - ``mlflow.source.name``: ``entry`` (:func:`entry_point`); ``mlflow.source.type``: ``LOCAL``;
    - ``mlflow.source.git.commit``: the checkout's commit and ``mlflow.source.git.dirty``: ``true`` when tracked
      files differ from it (:func:`git_commit`; both absent outside a git checkout);
    - ``mlflow.user``: the account running it (absent when the system cannot name it);
    - ``dvc.stage``: the DVC stage that created the run (:func:`dvc_stage`), and ``dvc.stages``: every stage that
      logged into it so far (:func:`add_stage`).
    """
    import getpass

    from mlflow.entities import SourceType
    from mlflow.utils import mlflow_tags

    tags = {
        mlflow_tags.MLFLOW_SOURCE_NAME: entry,
        mlflow_tags.MLFLOW_SOURCE_TYPE: SourceType.to_string(SourceType.LOCAL),
        "dvc.stage": stage,
        "dvc.stages": stage,
    }
    commit = git_commit()
    if commit != "unknown":
        tags[mlflow_tags.MLFLOW_GIT_COMMIT] = commit.removesuffix("-dirty")
        tags[mlflow_tags.MLFLOW_GIT_DIRTY] = str(commit.endswith("-dirty")).lower()
    with contextlib.suppress(KeyError, OSError):  # no passwd entry for the uid (some containers)
        tags[mlflow_tags.MLFLOW_USER] = getpass.getuser()
    return tags


def add_stage(client, run_id: str, stage: str, tags: dict[str, str]) -> None:
    """Append ``stage`` to the run's ``dvc.stages`` tag (space-separated, each stage once), given the run's
    ``tags``: ``evaluate`` and ``diagnose`` name themselves in the run that ``train`` created."""
    stages = tags.get("dvc.stages", "").split()
    if stage not in stages:
        client.set_tag(run_id, "dvc.stages", " ".join([*stages, stage]))


#: ``mlflow.data.context`` of each split (MLflow's dataset contexts).
CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}
_URL = re.compile(r"https?://[^\s()<>;,]+")


def dataset_source(dataset: str, meta: dict[str, Any], declared: Any = None):
    """Where ``dataset`` comes from, as an MLflow dataset source:

    - a dataset the user declares (``datasets.<name>.source`` in ``params.yaml``, :mod:`pipelines.config.sources`):
      a ``local`` source with the user's path as written there;
    - a catalog dataset (:mod:`pipelines.data.catalog`): an ``http`` source with the first URL of its provenance
      (``meta.json`` ``source``), else of its catalog files' download URLs;
    - a dataset the prepare stage generates (the logic gates' truth tables): a ``code`` source with its provenance.

    The provenance text, citation and license themselves go into each dataset's profile (:func:`dataset_inputs`).
    """
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.data.http_dataset_source import HTTPDatasetSource

    if declared is not None:
        return get_dataset_source_from_json(json.dumps({"uri": str(declared.path)}), "local")
    found = _URL.search(str(meta.get("source", "")))
    if found:
        return HTTPDatasetSource(found.group(0).rstrip(".:"))
    from pipelines.data.catalog import CATALOG

    entry = CATALOG.get(dataset)
    if entry is not None and entry.base:
        entry = CATALOG.get(entry.base)
    urls = [url for raw in (entry.files if entry else ()) for url in raw.urls]
    if urls:
        return HTTPDatasetSource(urls[0])
    return CodeDatasetSource({"generated_by": "pipelines.stages.prepare", "provenance": str(meta.get("source", ""))})


def split_digest(dataset: str, versions: dict[str, str], augmented: bool, meta: dict[str, Any]) -> tuple[str, str]:
    """``(digest, what it is)`` of one split of ``dataset``, from the DVC hashes of :func:`data_version`:

    - a split read from ``data/prepared/<dataset>``: the md5 DVC recorded for the ``prepare@<dataset>`` output in
      ``dvc.lock`` (32 hex digits, its ``.dir`` suffix dropped);
    - a training split with the augmented copies appended (``augmented``): the run's ``data_hash`` (16 hex digits,
      the sha256 of the ``prepare`` and ``augment`` md5s);
    - without a ``dvc.lock`` entry (a stage run outside DVC): the sha256 of ``meta.json``'s content (16 hex digits).

    Each is within MLflow's 36 characters for a dataset digest.
    """
    prepared = versions.get("data.md5.prepare", "").removesuffix(".dir")
    if augmented and versions.get("data_hash"):
        return versions["data_hash"], f"sha256 of the dvc.lock md5s of prepare@{dataset} and augment@{dataset}"
    if prepared:
        return prepared[:36], f"dvc.lock md5 of prepare@{dataset} (data/prepared/{dataset})"
    text = json.dumps(meta, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16], "sha256 of meta.json (no dvc.lock entry)"


def split_schema(meta: dict[str, Any], x: Any, y: Any):
    """An ``mlflow.types.Schema`` of one split's arrays: one column per feature for a table whose ``meta.json``
    names its features (``feature_names``, one per column of ``x``) plus the target ``y``; otherwise two tensors,
    ``x`` of shape ``(-1, *x.shape[1:])`` and ``y``, with their dtypes."""
    import numpy as np
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec

    names = meta.get("feature_names") or []
    x_type, y_type = DataType.from_numpy_type(x.dtype), DataType.from_numpy_type(y.dtype)
    specs: list[ColSpec | TensorSpec]
    if x.ndim == 2 and len(names) == x.shape[1] and y.ndim == 1 and x_type and y_type:
        specs = [*(ColSpec(x_type, str(n)) for n in names), ColSpec(y_type, "y")]
    else:
        specs = [
            TensorSpec(np.dtype(x.dtype), (-1, *x.shape[1:]), "x"),
            TensorSpec(np.dtype(y.dtype), (-1, *y.shape[1:]), "y"),
        ]
    return Schema(specs)


def dataset_inputs(data: Any, versions: dict[str, str], source: Any, splits: tuple[str, ...] = tuple(CONTEXTS)):
    """MLflow ``DatasetInput`` entities of ``splits`` of a prepared dataset (``data``: a
    :class:`~pipelines.data.prepared.PreparedData`, its ``meta``, ``x`` and ``y``), one per split:

    - name ``<dataset>/<split>`` (``mnist/train``): splits of one dataset have different digests, and MLflow keeps
      one dataset per name and digest;
    - digest :func:`split_digest`; source ``source`` (:func:`dataset_source`); schema :func:`split_schema`;
    - profile: ``num_samples``, the arrays' shapes and dtypes, the augmented copies in the training split, what
      the digest is, and the catalog's provenance (``source``, ``citation``, ``license`` of ``meta.json``);
    - tag ``mlflow.data.context``: ``training``, ``validation`` or ``testing``.
    """
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    meta = data.meta
    name = str(meta.get("dataset", ""))
    inputs = []
    for split in splits:
        x, y = data.x[split], data.y[split]
        augmented = int(meta.get("augmented_train_samples", 0)) if split == "train" else 0
        digest, digest_of = split_digest(name, versions, augmented > 0, meta)
        profile = {
            "num_samples": int(len(x)),
            "x_shape": list(x.shape),
            "x_dtype": str(x.dtype),
            "y_shape": list(y.shape),
            "y_dtype": str(y.dtype),
            **({"augmented_samples": augmented} if augmented else {}),
            "digest": digest_of,
            "provenance": meta.get("source", ""),
            "citation": meta.get("citation", ""),
            "license": meta.get("license", ""),
        }
        # MetaDataset writes name, digest, source and schema as MLflow reads them; it has no profile of its own
        # (its base class declares one abstract, unused by MetaDataset), so the profile goes on the entity.
        schema = split_schema(meta, x, y)
        meta_dataset = MetaDataset(source, name=f"{name}/{split}", digest=digest, schema=schema)  # type: ignore[abstract]
        dataset = Dataset(profile=json.dumps(profile), **meta_dataset.to_dict())
        inputs.append(DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, CONTEXTS[split])]))
    return inputs


def log_datasets(
    client, run_id: str, data: Any, versions: dict[str, str], source: Any, splits: tuple[str, ...] = tuple(CONTEXTS)
) -> None:
    """Log :func:`dataset_inputs` of ``data`` to ``run_id`` with ``client.log_inputs`` (MLflow's dataset tracking:
    the runs table's Dataset column and the run page's Datasets). Logging the same inputs again adds nothing."""
    client.log_inputs(run_id, datasets=dataset_inputs(data, versions, source, splits))


#: ``<repo>/mlflow/runs/<experiment>.json``: the MLflow run of an experiment's last ``train``, so ``evaluate`` and
#: ``diagnose`` log into the same run. Kept out of the DVC outputs: a run id differs on every run, and an output that
#: changes with identical weights would rerun every stage downstream.
#: The checkout's own run links (a queued experiment's copy keeps its own: its train and evaluate share a run).
RUN_LINKS = REPO_ROOT / "mlflow" / "runs"


def write_run_link(experiment: str, run_id: str, uri: str, experiment_id: str) -> None:
    """Record ``run_id`` as ``experiment``'s training run (atomically, in :data:`RUN_LINKS`)."""
    from pipelines.io import atomic_write_json

    atomic_write_json(
        RUN_LINKS / f"{experiment}.json", {"run_id": run_id, "tracking_uri": uri, "experiment_id": experiment_id}
    )


def read_run_link(experiment: str) -> dict[str, str] | None:
    """``{"run_id", "tracking_uri", "experiment_id"}`` of ``experiment``'s training run, or ``None`` when this
    checkout has none (e.g. checkpoints pulled from a DVC remote)."""
    import json

    try:
        return json.loads((RUN_LINKS / f"{experiment}.json").read_text())
    except FileNotFoundError:
        return None


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys: ``{"optimizer": {"lr": 0.1}}`` -> ``{"optimizer.lr": 0.1}``."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


def git_commit() -> str:
    """The current git commit (with ``-dirty`` when tracked files changed), or ``unknown`` outside a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def data_version(dataset: str, lock_path: Path | None = None) -> dict[str, str]:
    """Hash of the data a run trained on, from ``dvc.lock``: the md5 of the ``prepare@<dataset>`` and
    ``augment@<dataset>`` outputs (``data.md5.prepare``, ``data.md5.augment``), combined into ``data_hash``.
    ``data_hash`` is empty when the lock has no entry yet (a run outside ``dvc repro``)."""
    lock_path = lock_path or REPO_ROOT / "dvc.lock"
    try:
        stages = (yaml.safe_load(lock_path.read_text()) or {}).get("stages", {})
    except (FileNotFoundError, yaml.YAMLError):
        stages = {}
    found: dict[str, str] = {}
    for stage in ("prepare", "augment"):
        for out in stages.get(f"{stage}@{dataset}", {}).get("outs", []):
            found[f"data.md5.{stage}"] = str(out.get("md5", ""))
    digest = hashlib.sha256("\n".join(f"{k}={v}" for k, v in sorted(found.items())).encode()).hexdigest()
    return {"data_hash": digest[:16] if found else "", **found}


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = "not installed"
    return versions


def pip_requirements() -> list[str]:
    """Explicit requirements for ``mlflow.pytorch.log_model`` (inferring them costs 6-8 s, STACK.md)."""
    return [f"{lib}=={metadata.version(lib)}" for lib in ("torch", "numpy") if _installed(lib)]


def _installed(lib: str) -> bool:
    try:
        metadata.version(lib)
        return True
    except metadata.PackageNotFoundError:
        return False


def run_params(
    exp: ExperimentConfig, *, seed: int, profile: str, meta: dict[str, Any], num_params: int, versions: dict[str, str]
) -> dict[str, Any]:
    """The MLflow params of a training run: the resolved experiment flattened to dotted keys, the seed, profile,
    task, parameter count, split sizes, the md5 of the data stages' outputs, and what the architecture describes
    of itself (:meth:`models.registry.Architecture.describe`, as ``model.<key>``)."""
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
        client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in items[start : start + 100]])


@contextlib.contextmanager
def system_metrics(params: Params, run_id: str, enabled: bool = True):
    """MLflow system metrics (``system/cpu_utilization_percentage``, memory, disk, network, and the GPU when
    ``nvidia-ml-py`` finds one) sampled every ``tracking.system_metrics_interval`` seconds while the block runs."""
    if not (enabled and params.tracking.system_metrics):
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=params.tracking.system_metrics_interval, tracking_uri=tracking_uri(params)
    )
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
        # MLflow publishes only after a whole interval, so a fit shorter than one would log nothing: publish the
        # samples of the last, partial interval too.
        uri = tracking_uri(params)
        if any(m._metrics for m in monitor.monitors) and uri not in LOST_URIS:
            try:
                monitor.publish_metrics(monitor.aggregate_metrics())
                monitor.mlflow_logger.flush()
            except Exception as exc:  # noqa: BLE001 - a server that died mid-run: the stage reports it at the end
                log.warning("system metrics of run %s not sent to %s (%s)", run_id, uri, _reason(exc))


def log_model(bundle, example, run_id: str) -> tuple[str, str, str]:
    """Log a trained network as the served pyfunc model of run ``run_id``
    (:func:`pipelines.serving.bundle.log_served_model`: raw-input signature, a raw ``input_example`` made from the
    prepared samples ``example``, explicit pip requirements, plain-data preprocessing).

    Returns ``(format, model_uri, weights_sha256)``: ``("pyfunc", "models:/m-...", digest)``, or
    ``("not logged", "", digest)`` when the tracking server stopped answering during the run (:data:`LOST_URIS`;
    the weights are in ``checkpoints/`` only).
    """
    import mlflow

    from pipelines.serving.bundle import log_served_model

    if mlflow.get_tracking_uri() in LOST_URIS:
        return "not logged", "", bundle.digest
    requirements = pip_requirements() + [f"{lib}=={metadata.version(lib)}" for lib in ("pandas", "tokenizers")]
    logged = log_served_model(bundle, example, run_id, requirements)
    return "pyfunc", logged.model_uri, logged.weights_sha256
