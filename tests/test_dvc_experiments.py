"""The README's experiment flows, run as a user would in a temporary copy of the repo (tiny profile, real data):
``dvc exp run -S <param>=<value>`` and ``dvc exp run --queue -S ...`` with ``dvc queue start``.

Only the smallest experiment runs (``evaluate@perceptron_and`` and its upstream stages: a perceptron on the four
rows of AND), so the module costs about a minute and a half and needs no full ``dvc repro``. Each override must
reach the experiment's row of ``dvc exp show`` and the params of the MLflow run that the train stage logged.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, _run, make_tiny_copy

pytestmark = pytest.mark.integration

EXPERIMENT = "perceptron_and"
STAGE = f"evaluate@{EXPERIMENT}"
LR = f"experiments.{EXPERIMENT}.optimizer.lr"


@pytest.fixture(scope="module")
def exp_repo(tmp_path_factory, mirror) -> tuple[Path, dict[str, str]]:
    """A git-committed tiny copy of the repo in which nothing has run yet: ``(repo, env)``."""
    repo = tmp_path_factory.mktemp("dvc-exp") / "repo"
    return repo, make_tiny_copy(repo, mirror)


def _dvc(repo: Path, env: dict[str, str], *args: str):
    return _run([str(BIN / "dvc"), *args], repo, env)


def _shown(repo: Path, env: dict[str, str]) -> dict[str, dict]:
    """``dvc exp show --json`` as ``{experiment name: {"lr": ..., "metrics": metrics/<EXPERIMENT>.json's data}}``."""
    out = {}
    for baseline in json.loads(_dvc(repo, env, "exp", "show", "--json").stdout):
        for experiment in baseline.get("experiments") or []:
            for rev in experiment["revs"]:
                data = rev["data"]
                params = data["params"]["params.yaml"]["data"]
                out[rev["name"]] = {
                    "lr": params["experiments"][EXPERIMENT]["optimizer"]["lr"],
                    "metrics": data["metrics"].get(f"metrics/{EXPERIMENT}.json", {}).get("data"),
                }
    return out


def _runs(store: Path, lr: float) -> list:
    """The MLflow runs of EXPERIMENT in the SQLite store ``store`` whose logged ``optimizer.lr`` is ``lr``."""
    import mlflow

    if not store.exists():
        return []
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("deepnotes")
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.experiment = '{EXPERIMENT}'")
    return [r for r in runs if float(r.data.params["optimizer.lr"]) == lr]


def _workspace_lr(repo: Path) -> float:
    import yaml

    return yaml.safe_load((repo / "params.yaml").read_text())["experiments"][EXPERIMENT]["optimizer"]["lr"]


def test_exp_run_set_reaches_the_mlflow_params_and_exp_show(exp_repo):
    """``dvc exp run <stage> -S experiments.<x>.optimizer.lr=0.25`` trains with 0.25: the MLflow run logs it, the
    experiment's ``dvc exp show`` row has it with the run's test metric, and the workspace holds the result."""
    repo, env = exp_repo
    assert _workspace_lr(repo) != 0.25
    out = _dvc(repo, env, "exp", "run", STAGE, "-S", f"{LR}=0.25", "-n", "lr-quarter")
    assert f"Running stage 'train@{EXPERIMENT}'" in out.stdout and "Ran experiment(s): lr-quarter" in out.stdout
    shown = _shown(repo, env)["lr-quarter"]
    assert shown["lr"] == 0.25 and shown["metrics"]["primary"] == "test_acc"
    [run] = _runs(repo / "mlflow" / "mlflow.db", 0.25)
    assert run.info.status == "FINISHED" and run.data.metrics["test_acc"] == pytest.approx(shown["metrics"]["value"])
    train = json.loads((repo / "metrics" / "train" / f"{EXPERIMENT}.json").read_text())
    assert train["run_id"] == run.info.run_id  # the workspace's outputs are this experiment's
    assert _workspace_lr(repo) == 0.25  # dvc exp run applies the experiment's params to the workspace


def _queue_status(repo: Path, env: dict[str, str], name: str) -> str:
    """The status column of experiment ``name`` in ``dvc queue status`` (``Queued``, ``Running``, ``Success``...)."""
    for line in _dvc(repo, env, "queue", "status").stdout.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[1] == name:
            return fields[-1]
    return ""


@pytest.fixture(scope="module")
def queued(exp_repo) -> tuple[Path, dict[str, str], float]:
    """The README's queue flow: ``dvc exp run --queue <stage> -S lr=0.125``, then ``dvc queue start`` and a wait
    for the task to finish. Returns ``(repo, env, the workspace's lr before)``; the queue's worker is stopped after.
    """
    repo, env = exp_repo
    before = _workspace_lr(repo)
    out = _dvc(repo, env, "exp", "run", "--queue", STAGE, "-S", f"{LR}=0.125", "-n", "lr-eighth")
    assert "Queued experiment 'lr-eighth'" in out.stdout
    assert _queue_status(repo, env, "lr-eighth") == "Queued"
    _dvc(repo, env, "queue", "start")
    try:
        deadline = time.monotonic() + 900
        while (status := _queue_status(repo, env, "lr-eighth")) in ("Queued", "Running"):
            assert time.monotonic() < deadline, "the queued experiment did not finish"
            time.sleep(2)
        logs = _dvc(repo, env, "queue", "logs", "lr-eighth").stdout
        assert status == "Success", logs[-5000:]
        assert re.search(rf"Running stage 'evaluate@{EXPERIMENT}'", logs)
    finally:
        _run([str(BIN / "dvc"), "queue", "stop"], repo, env)
    return repo, env, before


def test_queued_exp_run_set_runs_and_reaches_exp_show(queued):
    """The queued experiment ran with its override: ``dvc exp show`` has its row with lr 0.125 and its metrics,
    and the workspace's params are untouched (a queued experiment runs in a copy and is not applied)."""
    repo, env, before = queued
    shown = _shown(repo, env)["lr-eighth"]
    assert shown["lr"] == 0.125 and shown["metrics"]["primary"] == "test_acc"
    assert 0.0 <= shown["metrics"]["value"] <= 1.0
    assert _workspace_lr(repo) == before


def test_queued_exp_run_set_reaches_the_workspace_mlflow_store(queued):
    """The queued experiment's MLflow run, with lr 0.125 in its params, is in the workspace's store."""
    repo, _, _ = queued
    runs = _runs(repo / "mlflow" / "mlflow.db", 0.125)
    assert len(runs) == 1, "no MLflow run of the queued experiment in the workspace's store"
    assert runs[0].info.status == "FINISHED"
