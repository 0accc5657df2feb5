"""The warm stage server (``pipelines/warm.py``): a stage run in a child forked from it behaves as ``python -m``.

Each test gets its own runtime folder (``XDG_RUNTIME_DIR``), hence its own server, stopped afterwards. A probe module
written into a temporary working directory reports what it sees: whether torch was imported before it ran (the sign
of a warm child), its argv, working directory, environment, ``sys.path`` and the file its ``pipelines`` package came
from. The last test trains and evaluates the same experiment cold and warm in a copy of the tiny repo and compares
the bytes and metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PROBE = """
import json, os, sys
torch_preloaded = "torch" in sys.modules
import pipelines
print(json.dumps({
    "torch_preloaded": torch_preloaded, "argv": sys.argv[1:], "cwd": os.getcwd(), "foo": os.environ.get("FOO"),
    "path0": sys.path[0], "pipelines": pipelines.__file__, "stdin": sys.stdin.read(), "pid": os.getpid(),
}))
print("to stderr", file=sys.stderr)
if "--sleep" in sys.argv:
    import time
    time.sleep(60)
sys.exit(int(os.environ.get("EXIT", "0")))
"""

LAUNCH = "import sys; from pipelines.warm import launch; sys.exit(launch(sys.argv[1], sys.argv[2:]))"


@pytest.fixture
def warm_env() -> dict[str, str]:
    """An environment with its own runtime folder; the server started there is stopped at the end. (A short path
    under /tmp: a Unix socket's path has at most 108 bytes.)"""
    runtime = Path(tempfile.mkdtemp(prefix="dnw-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPNOTES_WARM") and k != "PYTHONPATH"}
    env |= {"XDG_RUNTIME_DIR": str(runtime)}
    yield env
    subprocess.run([sys.executable, "-m", "pipelines.warm", "stop"], env=env, cwd=REPO_ROOT, timeout=60)
    shutil.rmtree(runtime, ignore_errors=True)


def _start(env: dict[str, str], cwd: Path = REPO_ROOT) -> None:
    """Start the server of ``env`` from ``cwd`` (unless one is up) and wait until it accepts."""
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.warm", "start", "--wait", "240"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    logs = "".join(p.read_text() for p in Path(env["XDG_RUNTIME_DIR"]).glob("*/*.log"))
    assert out.returncode == 0, out.stdout + out.stderr + logs


def _probe_dir(tmp_path: Path) -> Path:
    """A working directory with its own copy of ``pipelines`` and the probe module."""
    work = tmp_path / "work"
    shutil.copytree(REPO_ROOT / "pipelines", work / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "probe.py").write_text(PROBE)
    return work


def _launch(work: Path, env: dict[str, str], *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", LAUNCH, "probe", *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def test_a_warm_child_runs_the_module_as_python_m_would(tmp_path, warm_env):
    work = _probe_dir(tmp_path)
    _start(warm_env)
    out = _launch(work, warm_env | {"FOO": "bar", "EXIT": "3"}, "a", "--b", input="from stdin")
    assert out.returncode == 3, out.stderr
    seen = json.loads(out.stdout)
    assert seen["torch_preloaded"]  # forked from the server, which imported torch
    assert seen["argv"] == ["a", "--b"]
    assert seen["cwd"] == str(work)
    assert seen["foo"] == "bar"
    assert seen["stdin"] == "from stdin"
    assert "to stderr" in out.stderr
    # Project code comes from the client's directory, not from where the server started (the repo).
    assert seen["path0"] == ""  # the client's own sys.path: `python -c` puts "" (its working directory) first
    assert Path(seen["pipelines"]).resolve() == (work / "pipelines" / "__init__.py").resolve()


def test_without_a_server_the_stage_runs_cold_and_starts_one(tmp_path, warm_env):
    work = _probe_dir(tmp_path)
    first = _launch(work, warm_env)
    assert first.returncode == 0, first.stderr
    assert not json.loads(first.stdout)["torch_preloaded"]  # ran in the client itself
    _start(warm_env)  # the first launch started it: this only waits for it
    assert json.loads(_launch(work, warm_env).stdout)["torch_preloaded"]


def test_deepnotes_warm_0_runs_cold(tmp_path, warm_env):
    work = _probe_dir(tmp_path)
    _start(warm_env)
    out = _launch(work, warm_env | {"DEEPNOTES_WARM": "0"})
    assert out.returncode == 0, out.stderr
    assert not json.loads(out.stdout)["torch_preloaded"]


def test_a_signal_to_the_client_reaches_the_child(tmp_path, warm_env):
    work = _probe_dir(tmp_path)
    _start(warm_env)
    client = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "probe", "--sleep"],
        cwd=work,
        env=warm_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert client.stdout is not None
    child = json.loads(client.stdout.readline())["pid"]
    assert child != client.pid
    client.send_signal(signal.SIGTERM)
    _, err = client.communicate(timeout=60)
    assert client.returncode == 1
    assert "died without an exit status" in err
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


#: What differs between two runs of the same stage on the same inputs: times, run ids and URIs, and the registered
#: model (each evaluate registers a new version: the first becomes champion, the second challenger).
VOLATILE = {"fit_seconds", "first_step_seconds", "run_id", "model_uri", "seconds", "registry"}


def _stable(path: Path) -> dict:
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in VOLATILE and not k.endswith("_seconds")}
        return value

    return strip(json.loads(path.read_text()))


def test_cold_and_warm_stages_write_the_same_results(tiny_repo, tmp_path, warm_env):
    source, env, _ = tiny_repo
    repo = tmp_path / "repo"
    shutil.copytree(source, repo, ignore=shutil.ignore_patterns("mlflow", "__pycache__"), symlinks=True)
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"} | {"XDG_RUNTIME_DIR": warm_env["XDG_RUNTIME_DIR"]}
    experiment = "mlp_churn"
    outputs = {}
    for mode in ("cold", "warm"):
        if mode == "warm":
            _start(env, cwd=repo)
        for stage in ("train", "evaluate"):
            run = subprocess.run(
                [sys.executable, "-m", "pipelines.stages", stage, experiment],
                cwd=repo,
                env=env | {"DEEPNOTES_WARM": "0" if mode == "cold" else "1"},
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert run.returncode == 0, run.stderr[-3000:]
        outputs[mode] = {
            "network": (repo / "checkpoints" / experiment / "network.pt").read_bytes(),
            "train": _stable(repo / "metrics" / "train" / f"{experiment}.json"),
            "evaluate": _stable(repo / "metrics" / "evaluate" / f"{experiment}.json"),
            "summary": _stable(repo / "metrics" / f"{experiment}.json"),
        }
    assert outputs["warm"] == outputs["cold"]
