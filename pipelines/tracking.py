"""MLflow tracking set-up and provenance: where the store is, the experiment, and what to record about a run.

The default store is ``sqlite:///<repo>/mlflow/mlflow.db`` with artifacts in ``<repo>/mlflow/artifacts``, both
absolute, so runs land in the same place from any directory and from DVC's experiment copies. Set
``MLFLOW_TRACKING_URI`` (e.g. ``http://mlflow.team:5000``) to log to a team server instead.
(MLflow's file store is deprecated and Lightning's logger defaults to ``./mlruns``: we always pass the URI.)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from pipelines import REPO_ROOT
from pipelines.config import Params
from pipelines.io import file_lock

MLFLOW_DIR = REPO_ROOT / "mlflow"
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


#: Without this tag the MLflow 3 UI opens an experiment on its GenAI overview instead of the runs table.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"


def ensure_experiment(params: Params, name: str | None = None) -> str:
    """Create (once) or fetch an MLflow experiment (default ``tracking.experiment_name``); returns its id.
    Safe when another process creates it first."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri(params)
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
            return mlflow.get_experiment_by_name(name).experiment_id


#: ``<repo>/mlflow/runs/<experiment>.json``: the MLflow run of an experiment's last ``train``, so ``evaluate`` and
#: ``diagnose`` log into the same run. Kept out of the DVC outputs: a run id differs on every run, and an output that
#: changes with identical weights would rerun every stage downstream.
RUN_LINKS = MLFLOW_DIR / "runs"


def write_run_link(experiment: str, run_id: str, uri: str, experiment_id: str) -> None:
    """Record ``run_id`` as ``experiment``'s training run (atomically, in :data:`RUN_LINKS`)."""
    from pipelines.io import atomic_write_json

    atomic_write_json(RUN_LINKS / f"{experiment}.json",
                      {"run_id": run_id, "tracking_uri": uri, "experiment_id": experiment_id})


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
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
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
