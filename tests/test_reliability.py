"""Fail fast, lose nothing (issue 12, section 3): a disk that fills or a folder without write permission, and a
tracking server that dies in the middle of a training run.

Disk and permissions: every output goes through :mod:`pipelines.io` (a temporary sibling, then a rename). A write
that fails is one ``error: <output>: cannot write: <errno meaning> (<ERRNO>) ...`` line and exit status 2 from the
stage's command line; the previous output is byte-for-byte intact and no temporary file is left. A full disk is
simulated by a writer that writes half its bytes and then raises ``OSError(ENOSPC)``; a folder without write
permission is a real ``chmod 0555`` folder (skipped as root, where chmod does not block) and, as root too, an output
path below a regular file (``ENOTDIR``), which no user can write.
"""

from __future__ import annotations

import errno
import os
import stat

import numpy as np
import pytest

from pipelines import io as pio
from pipelines.config import ConfigError
from pipelines.data import prepared as prepared_module
from pipelines.stages import prepare

# --------------------------------------------------------------------------------- disk full, no permission


def _snapshot(folder):
    """``{relative path: bytes}`` of every file under ``folder`` (hidden temporaries included)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _temporaries(folder):
    return sorted(str(p) for p in folder.rglob("*") if p.name.endswith(".tmp") or ".old-" in p.name)


def _half_then_enospc(real):
    """A stand-in for ``np.save`` that writes half of what the real one would, then fails as a full disk does."""

    def save(file, array, *args, **kwargs):
        real(file, array, *args, **kwargs)
        path = os.fspath(file)
        data = open(path, "rb").read()  # noqa: SIM115
        with open(path, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return save


@pytest.fixture
def prepared_once(tmp_path, mirror):
    """``data/prepared/logic_and`` written once by the prepare stage's command line: the previous output."""
    out = tmp_path / "prepared"
    assert prepare.main(["logic_and", "--out", str(out), "--mirror", str(mirror)]) == 0
    return out


def test_a_full_disk_during_prepare_is_one_line_and_keeps_the_previous_output(
    prepared_once, mirror, monkeypatch, capsys
):
    before = _snapshot(prepared_once)
    capsys.readouterr()
    monkeypatch.setattr(prepared_module.np, "save", _half_then_enospc(np.save))
    status = prepare.main(["logic_and", "--out", str(prepared_once), "--mirror", str(mirror)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2
    assert len(err) == 1, err
    target = prepared_once / "logic_and"
    assert err[0] == f"error: {target}: cannot write: No space left on device (ENOSPC); the previous logic_and is kept"
    assert _snapshot(prepared_once) == before  # byte-identical, and no half-written file beside it
    assert _temporaries(prepared_once.parent) == []


def test_a_full_disk_while_writing_a_metrics_file_keeps_the_old_one(tmp_path, monkeypatch):
    metrics = tmp_path / "metrics" / "train" / "perceptron_and.json"
    pio.atomic_write_json(metrics, {"val_acc": 1.0})
    before = metrics.read_bytes()

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pio.os, "fsync", fsync)
    with pytest.raises(pio.OutputError) as info:
        pio.atomic_write_json(metrics, {"val_acc": 0.5})
    assert (
        str(info.value)
        == f"{metrics}: cannot write: No space left on device (ENOSPC); the previous {metrics.name} is kept"
    )
    assert isinstance(info.value, ConfigError)  # what every stage prints as one line with exit status 2
    assert metrics.read_bytes() == before
    assert _temporaries(tmp_path) == []


def test_an_output_path_nobody_can_write_is_one_line_with_nothing_written(tmp_path, mirror, capsys):
    """Works as root too: a folder cannot be made below a regular file."""
    blocker = tmp_path / "data"
    blocker.write_text("a file where the output folder should be\n")
    status = prepare.main(["logic_and", "--out", str(blocker / "prepared"), "--mirror", str(mirror)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2
    assert err == [
        f"error: {blocker / 'prepared' / 'logic_and'}: cannot write: Not a directory (ENOTDIR) at "
        f"{blocker / 'prepared'}; nothing was written"
    ], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


@pytest.mark.skipif(os.geteuid() == 0, reason="as root chmod does not block writes (the ENOTDIR case covers root)")
def test_a_read_only_output_folder_is_one_line_and_keeps_the_previous_output(prepared_once, mirror, capsys):
    before = _snapshot(prepared_once)
    capsys.readouterr()
    prepared_once.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        status = prepare.main(["logic_and", "--out", str(prepared_once), "--mirror", str(mirror)])
    finally:
        prepared_once.chmod(stat.S_IRWXU)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2
    assert len(err) == 1 and "cannot write: Permission denied (EACCES)" in err[0], err
    assert err[0].endswith("the previous logic_and is kept"), err
    assert _snapshot(prepared_once) == before
    assert _temporaries(prepared_once) == []


def test_a_per_experiment_stage_prints_a_write_failure_as_one_line(tmp_path, capsys):
    """The train/evaluate/diagnose command line (:func:`pipelines.cli.experiment_stage`) on a failed write."""
    from pipelines.cli import experiment_stage

    blocker = tmp_path / "metrics"
    blocker.write_text("")

    def run(name, params):
        pio.atomic_write_json(blocker / "train" / f"{name}.json", {})

    status = experiment_stage(["perceptron_and"], prog="train", description="", run=run, done=lambda n, r: None)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2
    assert len(err) == 1 and err[0].startswith(
        f"error: {blocker / 'train' / 'perceptron_and.json'}: cannot write: Not a directory (ENOTDIR)"
    ), err


# ------------------------------------------------------------------------------- a server that dies mid-run

#: MLflow's own request settings for the run (low, as a CI job would set them): one retry, 2 s per attempt.
RETRY_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
}
EPOCHS = 400


def _metric_rows(db) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("select count(*) from metrics").fetchone()[0]
    except sqlite3.Error:
        return 0


def _start_server(store, port: int, env: dict[str, str]):
    """A lean ``mlflow server`` (one worker, no job runner) on loopback ``port`` over ``store/mlflow.db``, once its
    ``/health`` answers. Its own process group, so that the test can SIGKILL all of it."""
    import subprocess
    import time
    import urllib.request

    from tests.conftest import BIN

    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    cmd += ["--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--artifacts-destination", str(store / "art")]
    with (store / "server.log").open("ab") as sink:
        server = subprocess.Popen(
            cmd,
            cwd=store,
            env=env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, (store / "server.log").read_text()[-3000:]
        time.sleep(0.5)


def test_a_tracking_server_killed_mid_run_loses_nothing(tmp_path, mirror):
    """A real ``mlflow server`` (sqlite in tmp, loopback port) is SIGKILLed while ``train perceptron_and`` fits
    (400 epochs, one step each, logged over HTTP). The fit goes on with logging buffered, writes the checkpoints,
    ``metrics/train/perceptron_and.json`` and the whole per-epoch history, and the stage then exits 2 with one
    ``error: tracking server ... stopped answering during the run`` line that names the kept outputs. With the
    server back, the rerun resumes the same MLflow run after the last epoch and replays what was never sent."""
    import csv
    import json
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO_ROOT, _env, _free_port

    repo = tmp_path / "repo"
    for name in ("pipelines", "models", "params"):
        shutil.copytree(REPO_ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    text = (REPO_ROOT / "params.yaml").read_text()
    old = "    trainer: {max_epochs: 100, check_val_every_n_epoch: 10}\n"  # perceptron_and's, the first of three
    assert old in text
    (repo / "params.yaml").write_text(text.replace(old, f"    trainer: {{max_epochs: {EPOCHS}}}\n", 1))
    env = _env(mirror)
    subprocess.run(
        [sys.executable, "-m", "pipelines.stages.prepare", "logic_and"],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )

    store = tmp_path / "server"
    store.mkdir()
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_server(store, port, env)
    try:
        train = subprocess.Popen(
            [sys.executable, "-m", "pipelines.stages.train", "perceptron_and"],
            cwd=repo,
            env=env | RETRY_ENV | {"MLFLOW_TRACKING_URI": uri},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while _metric_rows(store / "mlflow.db") < 20:  # a few epochs are in the server: kill it mid-fit
            assert train.poll() is None, train.communicate()[1][-3000:]
            time.sleep(0.1)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        killed_at = time.monotonic()
        _, stderr = train.communicate(timeout=300)
        after_kill = time.monotonic() - killed_at
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)

    lines = [line for line in stderr.splitlines() if line.strip()]
    assert train.returncode == 2, stderr[-4000:]
    assert "Traceback" not in stderr, stderr[-4000:]
    assert lines[-1].startswith(f"error: tracking server {uri} stopped answering during the run of perceptron_and ("), (
        lines[-1]
    )
    assert (
        "local outputs kept in checkpoints/perceptron_and, metrics/train/perceptron_and.json, "
        "plots/history/perceptron_and.csv" in lines[-1]
    ), lines[-1]
    assert sum("stopped answering (" in line for line in lines) == 1  # one warning when it was lost, not one per call

    # nothing lost locally: the whole fit, its checkpoints and its metrics
    ckpt = repo / "checkpoints" / "perceptron_and"
    assert {"best.ckpt", "last.ckpt", "network.pt", "checkpoint.json"} <= {p.name for p in ckpt.iterdir()}
    summary = json.loads((repo / "metrics" / "train" / "perceptron_and.json").read_text())
    assert summary["epochs"] == EPOCHS and summary["model_format"] == "not logged"
    with (repo / "plots" / "history" / "perceptron_and.csv").open() as fh:
        assert [int(float(row["epoch"])) for row in csv.DictReader(fh)] == list(range(EPOCHS))
    assert after_kill < 120, after_kill
    print(
        f"\nserver killed after {_metric_rows(store / 'mlflow.db')} metric rows; stage ended {after_kill:.1f} s later"
    )
    print(lines[-1])

    # nothing lost in MLflow either: with the server back, the rerun resumes the same run after its last epoch
    # (no retraining), sends what the dead server missed, and the run has every epoch
    import sqlite3

    server = _start_server(store, port, env)
    try:
        rerun = subprocess.run(
            [sys.executable, "-m", "pipelines.stages.train", "perceptron_and"],
            cwd=repo,
            env=env | RETRY_ENV | {"MLFLOW_TRACKING_URI": uri},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert f"resuming run {summary['run_id']} after epoch {EPOCHS - 1}" in rerun.stderr, rerun.stderr[-4000:]
    with sqlite3.connect(store / "mlflow.db") as con:
        runs = con.execute("select run_uuid, status from runs").fetchall()
        steps = [r[0] for r in con.execute("select step from metrics where key = 'train_loss' order by step")]
    assert runs == [(summary["run_id"], "FINISHED")]  # one run, not a second unrelated one
    assert steps == list(range(EPOCHS))  # a continuous per-epoch history
    assert not (repo / "checkpoints" / ".resume" / "perceptron_and").exists()  # finished: nothing left to resume


class _FlakyClient:
    """An ``MlflowClient`` stand-in that refuses connections while ``down`` and records what it received."""

    def __init__(self):
        self.down, self.received = False, []

    def log_batch(self, run_id, metrics=()):
        if self.down:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "[Errno 111] Connection refused")
        self.received.append((run_id, list(metrics)))

    def get_run(self, run_id):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

        if run_id == "missing":
            raise MlflowException("no run", error_code=RESOURCE_DOES_NOT_EXIST)
        if self.down:
            raise MlflowException("[Errno 111] Connection refused")
        return run_id


def test_logging_is_buffered_while_the_server_is_down_and_sent_when_it_answers_again():
    from pipelines import tracking

    resilient = tracking.ResilientTracking("http://127.0.0.1:9")
    flaky = resilient._client = _FlakyClient()  # type: ignore[assignment]
    resilient.client.log_batch("r", metrics=[1])
    flaky.down = True
    resilient.client.log_batch("r", metrics=[2])  # fails: lost, buffered, no exception
    resilient.client.log_batch("r", metrics=[3])  # buffered without a request
    assert resilient.lost and "Connection refused" in resilient.error and len(resilient.buffered) == 2
    assert resilient.client.get_run("r") is None  # Lightning's logger asks before it marks the run finished
    flaky.down = False
    resilient.raise_if_lost("perceptron_and", [])  # the server came back: everything sent, in order, no error
    assert flaky.received == [("r", [1]), ("r", [2]), ("r", [3])] and resilient.buffered == []
    assert resilient.client.get_run("r") == "r"
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="no run"):  # an answer of the server is not a lost server
        resilient.client.get_run("missing")
    assert not resilient.lost


def test_what_was_never_sent_is_spooled_and_replayed_when_the_run_resumes(tmp_path):
    from mlflow.entities import Metric

    from pipelines import tracking

    spool = tmp_path / ".resume" / "perceptron_and" / "unsent.json"
    first = tracking.ResilientTracking("http://127.0.0.1:9", spool=spool)
    flaky = first._client = _FlakyClient()  # type: ignore[assignment]
    flaky.down = True
    first.client.log_batch("r", metrics=[Metric("train_loss", 0.5, 1000, 7)])
    first.client.log_artifact("r", "best.ckpt")  # not spooled: the rerun logs its artifacts again
    with pytest.raises(tracking.TrackingError, match="2 MLflow logging calls were not sent"):
        first.raise_if_lost("perceptron_and", [])

    resumed = tracking.ResilientTracking("http://127.0.0.1:9", spool=spool)
    resumed._client = flaky  # type: ignore[assignment]
    flaky.down = False
    assert resumed.replay() == 1 and not spool.exists()
    (run_id, [metric]), *_ = flaky.received
    assert (run_id, metric.key, metric.value, metric.timestamp, metric.step) == ("r", "train_loss", 0.5, 1000, 7)
    assert resumed.replay() == 0
    tracking.LOST_URIS.discard("http://127.0.0.1:9")
