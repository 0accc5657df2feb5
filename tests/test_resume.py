"""Training that survives a kill (issue 12, section 2): a real SIGKILL in the middle of a multi-epoch fit run by
``dvc repro``, then the rerun resumes at the next epoch in the same MLflow run and ends where an uninterrupted run
with the same seed ends; a SIGTERM stops at an epoch's end with its checkpoint written; a finished run and a run
with changed params never resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import BIN, _run, make_tiny_copy

EPOCHS = 12
#: mlp_churn on the tiny profile's 512 churn rows, with dropout (RNG state matters) and early stopping patience
#: that never triggers, for EPOCHS epochs of 8 batches.
EXPERIMENT = {
    "architecture": "mlp",
    "dataset": "churn",
    "model": {"hidden_sizes": [32, 16]},
    "dropout": 0.2,
    "loss": "bce",
    "optimizer": {"name": "adam", "lr": 0.003},
    "batch_size": 64,
    "trainer": {"max_epochs": EPOCHS},
    "early_stopping": {"monitor": "val_loss", "patience": EPOCHS},
    "profiles": {"tiny": {"trainer": {"max_epochs": EPOCHS, "limit_train_batches": 1.0}}},
}
NAME = "mlp_resume"


@pytest.fixture(scope="module")
def repo(tmp_path_factory, mirror):
    repo = tmp_path_factory.mktemp("resume") / "repo"
    env = make_tiny_copy(repo, mirror) | {"DEEPNOTES_WARM": "0"}  # the trainer is dvc's own child: killable
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["experiments"] = {NAME: EXPERIMENT}
    params |= {"transfer": {}, "claims": {}}
    params["tuning"]["experiments"] = {}
    params["datasets"] = {"churn": params["datasets"]["churn"]}
    params["augment"] = {"churn": params["augment"]["churn"]} if "churn" in params["augment"] else {}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run([str(BIN / "dvc"), "repro", "augment@churn"], repo, env)  # prepared before the fit we kill
    return repo, env


def _state(repo: Path) -> dict | None:
    try:
        return json.loads((repo / "checkpoints" / ".resume" / NAME / "resume.json").read_text())
    except (OSError, ValueError):
        return None


def _start(repo: Path, env: dict, cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def _wait_for_epoch(repo: Path, proc: subprocess.Popen, epoch: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while (state := _state(repo)) is None or state["epoch"] < epoch:
        if proc.poll() is not None:
            pytest.fail(f"the fit ended before epoch {epoch}: {proc.stderr.read()[-3000:] if proc.stderr else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"no resume checkpoint of epoch {epoch} within {timeout} s")
        time.sleep(0.02)


def _runs(repo: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(repo / "mlflow" / "mlflow.db") as db:
        return db.execute("SELECT run_uuid, status FROM runs WHERE name = ? ORDER BY start_time", (NAME,)).fetchall()


def _history(repo: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    with sqlite3.connect(repo / "mlflow" / "mlflow.db") as db:
        rows = db.execute(
            "SELECT step, value FROM metrics WHERE run_uuid = ? AND key = ? ORDER BY step, timestamp", (run_id, key)
        ).fetchall()
    return [(int(step), float(value)) for step, value in rows]


def _assert_work_spans_the_kill(repo: Path, run_id: str, killed_at: int) -> None:
    """``train_seconds`` (logged at each epoch's end) counts on from the killed process's last value, and the run's
    Duration is its train and evaluate seconds: not the time it lay killed (``pipelines.stages.train``)."""
    with sqlite3.connect(repo / "mlflow" / "mlflow.db") as db:
        start, end = db.execute("SELECT start_time, end_time FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
        points = db.execute(
            "SELECT step, value, timestamp FROM metrics WHERE run_uuid = ? AND key = 'train_seconds' ORDER BY step",
            (run_id,),
        ).fetchall()
        [evaluate] = db.execute(
            "SELECT value FROM latest_metrics WHERE run_uuid = ? AND key = 'evaluate_seconds'", (run_id,)
        ).fetchone()
    values = [value for _, value, _ in points]
    assert values == sorted(values) and len({step for step, _, _ in points}) == len(points), points
    killed = max(value for step, value, _ in points if step <= killed_at)  # the killed process's last
    first_resumed = min(stamp for step, _, stamp in points if step > killed_at)
    assert values[-1] >= killed + (points[-1][2] - first_resumed) / 1000, (killed, points)
    assert abs((end - start) / 1000 - (values[-1] + evaluate)) <= 1.0, (start, end, values[-1], evaluate)


def _outcome(repo: Path) -> dict:
    """What the finished run produced: the best network's weights, the val metrics, the test metrics."""
    train = json.loads((repo / "metrics" / "train" / f"{NAME}.json").read_text())
    evaluation = json.loads((repo / "metrics" / f"{NAME}.json").read_text())
    weights = torch.load(repo / "checkpoints" / NAME / "network.pt", weights_only=True)
    return {
        "weights": weights,
        "val": {k: v for k, v in train.items() if k.startswith(("val_", "best_"))},
        "test": {k: v for k, v in evaluation.items() if k.startswith("test_") or k == "value"},
        "epochs": train["epochs"],
        "history": (repo / "plots" / "history" / f"{NAME}.csv").read_text(),
    }


def test_sigkill_mid_fit_then_rerun_resumes_and_matches_an_uninterrupted_run(repo):
    repo, env = repo
    dvc = str(BIN / "dvc")
    proc = _start(repo, env, [dvc, "repro", f"train@{NAME}"])
    _wait_for_epoch(repo, proc, 4)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the trainer, at once
    proc.wait(timeout=60)
    killed_at = _state(repo)["epoch"]
    print(f"SIGKILL after epoch {killed_at} of 0-{EPOCHS - 1}")
    assert 4 <= killed_at < EPOCHS - 1
    [(run_id, status)] = _runs(repo)
    assert status == "RUNNING"  # a kill -9 leaves no chance to close the run

    rerun = _run([dvc, "repro", f"evaluate@{NAME}"], repo, env)
    assert f"resuming run {run_id} after epoch {killed_at}" in rerun.stderr + rerun.stdout
    assert [r[0] for r in _runs(repo)] == [run_id]  # the same MLflow run, no second one
    assert not (repo / "checkpoints" / ".resume" / NAME).exists()  # finished: nothing left to resume
    history = _history(repo, run_id, "epoch")
    assert sorted({int(v) for _, v in history}) == list(range(EPOCHS))  # every epoch, before and after the kill
    val_loss = _history(repo, run_id, "val_loss")
    by_step: dict[int, set[float]] = {}
    for step, value in val_loss:
        by_step.setdefault(step, set()).add(value)
    assert len(by_step) == EPOCHS and all(len(v) == 1 for v in by_step.values())  # a repeated epoch logs the same
    _assert_work_spans_the_kill(repo, run_id, killed_at)
    resumed = _outcome(repo)

    # the same experiment uninterrupted, same seed: forced retrain from scratch in the same repo
    _run([dvc, "repro", "-f", "-s", f"train@{NAME}"], repo, env)
    _run([dvc, "repro", f"evaluate@{NAME}"], repo, env)
    fresh = _outcome(repo)
    print(f"resumed vs uninterrupted: test {resumed['test']} / {fresh['test']}")
    assert fresh["epochs"] == resumed["epochs"]
    assert fresh["history"] == resumed["history"]  # every epoch's train and val metrics, bit for bit
    assert fresh["val"] == resumed["val"] and fresh["test"] == resumed["test"]
    assert all(torch.equal(fresh["weights"][k], resumed["weights"][k]) for k in fresh["weights"])


def test_sigterm_stops_at_an_epoch_end_with_its_checkpoint_then_resumes(repo):
    repo, env = repo
    cmd = [str(BIN / "python"), "-m", "pipelines.stages.train", NAME]
    proc = _start(repo, env, cmd)
    _wait_for_epoch(repo, proc, 2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    state = _state(repo)
    assert f"stopped by SIGTERM after epoch {state['epoch']}" in stderr
    assert (repo / "checkpoints" / ".resume" / NAME / "last.ckpt").is_file()
    run_id, status = _runs(repo)[-1]
    assert run_id == state["run_id"] and status == "KILLED"
    rerun = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming run {run_id} after epoch {state['epoch']}" in rerun.stderr
    assert _runs(repo)[-1] == (run_id, "FINISHED")


def test_changed_params_start_afresh(repo):
    repo, env = repo
    cmd = [str(BIN / "python"), "-m", "pipelines.stages.train", NAME]
    proc = _start(repo, env, cmd)
    _wait_for_epoch(repo, proc, 1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    killed_run = _state(repo)["run_id"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["experiments"][NAME]["optimizer"]["lr"] = 0.002
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = _run([str(BIN / "dvc"), "repro", f"train@{NAME}"], repo, env)
    assert "resuming" not in rerun.stderr + rerun.stdout
    assert _runs(repo)[-1][0] != killed_run
