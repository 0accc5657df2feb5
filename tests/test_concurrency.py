"""Two ``dvc repro`` runs started at once in the same repo (issue 12, section 3): the second fails on DVC's lock,
and the first finishes unharmed.

In a temporary tiny copy of the repo, the first ``dvc repro evaluate@perceptron_and`` is started and the test waits
until it holds the stage lock (``.dvc/tmp/rwlock`` names its pid). It is then paused with ``SIGSTOP`` (its whole
process group), so that it still holds DVC's repo lock however slow the machine is, while the second
``dvc repro`` runs; after the second has exited the first is resumed with ``SIGCONT``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, _run, make_tiny_copy

pytestmark = pytest.mark.integration

EXPERIMENT = "perceptron_and"
STAGE = f"evaluate@{EXPERIMENT}"


def _rwlock_pids(repo: Path) -> set[int]:
    """The pids holding a stage lock in ``.dvc/tmp/rwlock`` (``{}`` while the file is missing or being written)."""
    try:
        lock = json.loads((repo / ".dvc" / "tmp" / "rwlock").read_text())
    except (OSError, json.JSONDecodeError):
        return set()
    pids = {info["pid"] for info in lock.get("write", {}).values()}
    return pids | {info["pid"] for infos in lock.get("read", {}).values() for info in infos}


def test_a_second_dvc_repro_fails_on_the_lock_and_the_first_finishes_unharmed(tmp_path, mirror):
    """The second ``dvc repro`` exits non-zero with DVC's "Unable to acquire lock" error and runs no stage; the
    first exits 0, its outputs are complete (``dvc status`` up to date, the metrics file names a FINISHED MLflow
    run) and no lock is left behind (a third ``dvc repro`` is a no-op)."""
    import mlflow

    repo = tmp_path / "repo"
    env = make_tiny_copy(repo, mirror)
    dvc = str(BIN / "dvc")
    log = tmp_path / "first.log"
    with log.open("wb") as sink:
        first = subprocess.Popen(
            [dvc, "repro", STAGE], cwd=repo, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 300
        while first.pid not in _rwlock_pids(repo):
            assert first.poll() is None, f"the first repro ended before taking a lock:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the first repro never took a stage lock"
            time.sleep(0.1)
        os.killpg(first.pid, signal.SIGSTOP)
        try:
            second = subprocess.run(
                [dvc, "repro", STAGE], cwd=repo, env=env, capture_output=True, text=True, timeout=300
            )
            holders = _rwlock_pids(repo)
        finally:
            os.killpg(first.pid, signal.SIGCONT)
        first.wait(timeout=900)
    finally:
        if first.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    first_out = log.read_text()

    assert second.returncode != 0, second.stdout + second.stderr
    assert "Unable to acquire lock" in second.stderr, second.stderr
    assert "Running stage" not in second.stdout
    assert first.pid in holders  # the first still held its stage lock while the second ran

    assert first.returncode == 0, first_out[-5000:]
    assert f"Running stage '{STAGE}'" in first_out
    assert "up to date" in _run([dvc, "status", STAGE], repo, env).stdout
    train = json.loads((repo / "metrics" / "train" / f"{EXPERIMENT}.json").read_text())
    evaluated = json.loads((repo / "metrics" / "evaluate" / f"{EXPERIMENT}.json").read_text())
    assert train["run_id"] == evaluated["run_id"]
    run = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow' / 'mlflow.db'}").get_run(train["run_id"])
    assert run.info.status == "FINISHED" and "test_acc" in run.data.metrics
    assert _rwlock_pids(repo) == set()
    third = _run([dvc, "repro", STAGE], repo, env)
    assert "Running stage" not in third.stdout
