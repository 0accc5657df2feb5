"""Shared pytest fixtures: the data mirror, plus the tiny end-to-end repro and an ``mlflow server`` over its store,
which several integration modules share (one ``dvc repro`` per test session)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The real data every test reads (read-only): $DEEPNOTES_DATA_MIRROR, else the shared checkout beside the repo.
DATA_MIRROR = Path(os.environ.get("DEEPNOTES_DATA_MIRROR") or REPO_ROOT.parent / "shared" / "data")
#: What the tiny repro copies from the repo, and the venv's bin folder (dvc, mlflow).
COPY = ["pipelines", "models", "params", "tuning", "dvc.yaml", "params.yaml", ".dvcignore", "pyproject.toml"]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The real data mirror folder (laid out as ``<dataset>/<file>``). The tests need it: fail loudly if absent."""
    if not (DATA_MIRROR / "SHA256SUMS").is_file():
        pytest.fail(f"data mirror not found at {DATA_MIRROR}: set DEEPNOTES_DATA_MIRROR to the shared data folder")
    return DATA_MIRROR


@pytest.fixture(scope="session")
def imdb(mirror: Path):
    """Real IMDB reviews through the imdb preparer: 256 train reviews, their last 200 tokens, left-padded with 0.
    ``(arrays, meta)``; shared by the sequence and attention families' tests."""
    import numpy as np

    from pipelines.config import DatasetConfig
    from pipelines.data.preparers import prepare_dataset

    config = DatasetConfig(val_fraction=0.1, max_train_samples=256, max_test_samples=64, vocab_size=3000, seq_len=200)
    arrays, meta, _ = prepare_dataset("imdb", config, 42, mirror=mirror)
    assert arrays["test"][0].shape == (64, 200) and np.bincount(arrays["test"][1]).tolist() == [32, 32]
    return arrays, meta


@pytest.fixture(scope="session")
def imdb_reviews(imdb):
    """``n -> (n, 200)`` int64 real reviews of :func:`imdb`: half shorter than 200 tokens (left-padded), half cut to
    their last 200."""
    import torch

    def reviews(n: int):
        x = torch.from_numpy(imdb[0]["train"][0])
        padded = (x == 0).any(dim=1)
        return torch.cat([x[padded][: n // 2], x[~padded][: n - n // 2]])

    return reviews


def _env(mirror: Path) -> dict[str, str]:
    """A clean environment for subprocesses: no inherited MLFLOW_/DEEPNOTES_ settings, the venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DEEPNOTES_"))}
    env |= {
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "DEEPNOTES_DATA_MIRROR": str(mirror),
        "PYTHONUNBUFFERED": "1",
        "GIT_AUTHOR_NAME": "ci",
        "GIT_AUTHOR_EMAIL": "ci@localhost",
        "GIT_COMMITTER_NAME": "ci",
        "GIT_COMMITTER_EMAIL": "ci@localhost",
    }
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 1200) -> subprocess.CompletedProcess:
    """Run ``cmd``; fail the test with the tail of its output if it exits non-zero."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n"
            f"--- stderr\n{result.stderr[-6000:]}"
        )
    return result


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory, mirror) -> tuple[Path, dict[str, str], str]:
    """A copy of the repo switched to the tiny profile (the one-line switch), after one ``dvc repro``.

    Returns ``(repo, env, stdout of the repro)``.
    """
    repo = tmp_path_factory.mktemp("deepnotes") / "repo"
    repo.mkdir()
    for name in COPY:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, repo / name)
    (repo / ".dvc").mkdir()
    shutil.copy2(REPO_ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    params = repo / "params.yaml"
    params.write_text(
        params.read_text()
        .replace("\nprofile: default\n", "\nprofile: tiny\n", 1)
        .replace("\n  n_trials: 20 ", "\n  n_trials: 4 ", 1)
    )
    assert yaml.safe_load(params.read_text())["profile"] == "tiny"
    assert yaml.safe_load(params.read_text())["tuning"]["n_trials"] == 4
    env = _env(mirror)
    _run(["git", "init", "-q"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "tiny"], repo, env)
    first = _run([str(BIN / "dvc"), "repro"], repo, env)
    assert "stage 'tune@" not in first.stdout  # searches are opt-in
    return repo, env, first.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tiny_repo) -> Iterator[str]:
    """A real ``mlflow server`` on loopback over the tiny repo's store (lean: one worker, no job runner).

    Yields its base URL (``http://127.0.0.1:<port>``); the server is terminated at teardown.
    """
    repo, env, _ = tiny_repo
    port, artifacts = _free_port(), str(repo / "mlflow" / "artifacts")
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{repo / 'mlflow' / 'mlflow.db'}",
        "--default-artifact-root",
        artifacts,
        "--artifacts-destination",
        artifacts,
    ]
    log = repo.parent / "mlflow-server.log"  # a file, not a pipe: a long-lived server would fill a pipe and stall
    with log.open("wb") as sink:
        server = subprocess.Popen(
            cmd,
            cwd=repo,
            env=env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


#: Debian's chromium (apt), driven by Playwright with no browser download; the flags keep it off the closed network.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    """Headless Debian chromium driven by Playwright (sync API), closed at teardown.

    Skips when playwright or /usr/bin/chromium is missing, unless ``DEEPNOTES_REQUIRE_BROWSER=1`` (CI): then it fails.
    Request it before slow fixtures so that a skip costs nothing.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    missing = [
        name
        for name, ok in (("playwright (pip)", sync_playwright), (f"{CHROMIUM} (apt)", CHROMIUM.is_file()))
        if not ok
    ]
    if missing:
        reason = f"browser test needs {' and '.join(missing)}"
        if os.environ.get("DEEPNOTES_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason} (DEEPNOTES_REQUIRE_BROWSER=1: the browser is required here)")
        pytest.skip(f"{reason} (set DEEPNOTES_REQUIRE_BROWSER=1 to fail instead)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def tiny_code_copy(root: Path, mirror: Path, **tuning) -> dict[str, str]:
    """The code, ``params/`` and ``scheduling/`` copied into the new folder ``root`` with ``params.yaml`` in the tiny
    profile (``tuning`` merged into its ``tuning:`` section): for a test that runs a few stages, such as a search,
    itself. Returns the subprocess environment."""
    root.mkdir(parents=True)
    for name in ("pipelines", "models", "params", "scheduling"):
        shutil.copytree(REPO_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["profile"] = "tiny"
    raw["tuning"] |= tuning
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return _env(mirror)


def make_tiny_copy(repo: Path, mirror: Path) -> dict[str, str]:
    """Copy the project into the new folder ``repo`` as :func:`tiny_repo` does (tiny profile, git-committed), but
    run nothing: for tests that drive ``dvc`` themselves on a few cheap stages. Returns the subprocess environment.
    """
    repo.mkdir(parents=True)
    for name in COPY:
        src = REPO_ROOT / name
        if src.is_dir():
            shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, repo / name)
    (repo / ".dvc").mkdir()
    shutil.copy2(REPO_ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copy2(REPO_ROOT / ".gitignore", repo / ".gitignore")
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("\nprofile: default\n", "\nprofile: tiny\n", 1))
    assert yaml.safe_load(params.read_text())["profile"] == "tiny"
    env = _env(mirror)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny"]):
        _run(cmd, repo, env)
    return env
