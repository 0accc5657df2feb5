"""A tracking URI that names a server nobody answers on fails the stage at once, with one line, and writes nothing.

The check (``pipelines.tracking.check_tracking_server``) runs MLflow's own REST client with MLflow's own retry and
timeout settings, so the port here is a real loopback port with nothing listening on it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on exit: nothing listens there


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_an_unreachable_tracking_server_fails_fast_and_writes_nothing(tmp_path, mirror, stage):
    repo = tmp_path / "repo"
    for name in ("pipelines", "models", "params"):
        shutil.copytree(REPO_ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO_ROOT / "params.yaml", repo / "params.yaml")
    uri = f"http://127.0.0.1:{_closed_port()}"
    result = subprocess.run(
        [sys.executable, "-m", f"pipelines.stages.{stage}", "perceptron_and"],
        cwd=repo,
        env={
            "PATH": str(REPO_ROOT / ".venv" / "bin"),
            "MLFLOW_TRACKING_URI": uri,
            "DEEPNOTES_DATA_MIRROR": str(mirror),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # one clear line: no traceback, no urllib3 retry warnings
    assert lines[0].startswith(f"error: tracking server {uri} is not reachable as an MLflow server")
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES=1" in lines[0] and "Connection refused" in lines[0]
    written = {p.name for p in repo.iterdir()} - {"pipelines", "models", "params", "params.yaml"}
    assert written == set(), written  # no checkpoints, metrics, plots or tracking store
