"""Helpers shared by the benchmarks: statistics, machine description, a tiny temporary copy of the repo, output.

Nothing here imports torch at module level, so the start-up benchmark stays light.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from pipelines.io import atomic_write_text  # noqa: F401  (re-exported for the benchmark scripts)

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Machine-readable results of each benchmark (git-ignored); run_all renders RESULTS.md from them.
OUT_DIR = REPO_ROOT / "benchmarks" / "out"
RESULTS_MD = REPO_ROOT / "benchmarks" / "RESULTS.md"
BIN = Path(sys.executable).parent

#: What a tiny copy of the repo needs to run `dvc repro` (the integration test copies the same set).
REPO_COPY = ("pipelines", "models", "params", "tuning", "dvc.yaml", "params.yaml", ".dvcignore", "pyproject.toml")
LOGIC_DATASETS = ("logic_and", "logic_or", "logic_xor")
LIBRARIES = ("torch", "lightning", "torchmetrics", "mlflow", "dvc", "numpy", "pydantic")


def median(values: Iterable[float]) -> float:
    """Median of ``values`` (a list of repeats)."""
    return float(statistics.median(list(values)))


def spread(values: Sequence[float]) -> str:
    """``min-max`` of the repeats as a short string (2 decimals), to show the noise next to a median."""
    return f"{min(values):.2f}-{max(values):.2f}"


#: Other processes using more than this many cores (of ``nproc``) during a timed run make it "contended".
CONTENTION_CORES = 0.2


def _cpu_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (``/proc/stat``: user, nice, system, irq, softirq, steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its waited-for children."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def process_tree_cpu_seconds(pid: int | None) -> float:
    """CPU seconds of process ``pid`` and of its waited-for children (``/proc/<pid>/stat``); 0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


class ForeignLoad:
    """Context manager measuring how many cores *other* processes kept busy during the block (machine busy time
    minus this process's and its children's CPU time, over the wall time; hypervisor steal counts as foreign).

    ``also``: pids whose CPU time (with their waited-for children's) counts as this block's own, e.g. the warm
    stage server whose forked children run the stages (:func:`pipelines.warm.server_pid`).

    ``cores`` is set on exit; above :data:`CONTENTION_CORES` the block's timing is called contended. On systems
    without ``/proc/stat`` it is ``nan``.
    """

    def __init__(self, also: Sequence[int | None] = ()) -> None:
        self.also = [pid for pid in also if pid]

    def _own_now(self) -> float:
        return _own_cpu_seconds() + sum(process_tree_cpu_seconds(pid) for pid in self.also)

    def __enter__(self) -> ForeignLoad:
        self.cores = float("nan")
        try:
            self._busy = _cpu_busy_seconds()
        except (OSError, ValueError):
            self._busy = None
        self._own, self._wall = self._own_now(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._wall
        if self._busy is not None and wall > 0:
            foreign = (_cpu_busy_seconds() - self._busy) - (self._own_now() - self._own)
            self.cores = max(foreign, 0.0) / wall

    @property
    def contended(self) -> bool:
        """Whether other processes used more than :data:`CONTENTION_CORES` cores during the block."""
        return self.cores > CONTENTION_CORES


def foreign_cores(seconds: float = 2.0) -> float:
    """Cores other processes keep busy over the next ``seconds`` (sleeping meanwhile)."""
    with ForeignLoad() as load:
        time.sleep(seconds)
    return load.cores


def wait_for_quiet(timeout: float, log=None, poll: float = 2.0) -> float:
    """Wait until other processes use at most :data:`CONTENTION_CORES` cores over a ``poll``-second window, or
    ``timeout`` seconds have passed; returns the last measured foreign load (cores)."""
    deadline = time.monotonic() + timeout
    cores = foreign_cores(poll)
    announced = False
    while cores > CONTENTION_CORES and time.monotonic() < deadline:
        if log and not announced:
            log(f"other processes use {cores:.2f} cores; waiting up to {timeout:.0f} s for a quieter machine")
            announced = True
        cores = foreign_cores(poll)
    return cores


def mirror_path() -> Path:
    """The real data mirror, from ``$DEEPNOTES_DATA_MIRROR`` (``make bench`` sets it, as ``make run`` does).

    Raises:
        SystemExit: the variable is unset, with a message saying how to set it.
    """
    mirror = os.environ.get("DEEPNOTES_DATA_MIRROR")
    if not mirror:
        raise SystemExit("benchmarks need the data mirror: set DEEPNOTES_DATA_MIRROR (or run `make bench`)")
    return Path(mirror)


def stage_env(extra_path: Path = BIN) -> dict[str, str]:
    """Environment for stage and ``dvc`` subprocesses: the venv's ``bin`` first on ``PATH`` (DVC runs
    ``python -m pipelines.stages.<stage>``), the data mirror set, unbuffered output, and no ``MLFLOW_*`` /
    ``DEEPNOTES_PROFILE`` leaking in from the caller (each copy must track into its own store)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DEEPNOTES_PROFILE"))}
    env |= {
        "PATH": f"{extra_path}{os.pathsep}{env.get('PATH', '')}",
        "DEEPNOTES_DATA_MIRROR": str(mirror_path()),
        "PYTHONUNBUFFERED": "1",
    }
    for key in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        env.setdefault(key, "bench")
    for key in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        env.setdefault(key, "bench@localhost")
    return env


def tiny_params(raw: dict[str, Any]) -> dict[str, Any]:
    """``params.yaml`` cut down for the start-up benchmarks: ``profile: tiny``, only the logic datasets, no
    augmentation or transfer, only the ``perceptron_*`` experiments."""
    raw = dict(raw)
    raw["profile"] = "tiny"
    raw["datasets"] = {k: v for k, v in (raw.get("datasets") or {}).items() if k in LOGIC_DATASETS}
    raw["augment"] = {}
    raw["experiments"] = {k: v for k, v in (raw.get("experiments") or {}).items() if k.startswith("perceptron_")}
    raw["transfer"] = {}
    tuning = dict(raw.get("tuning") or {})
    tuning["experiments"] = {k: v for k, v in (tuning.get("experiments") or {}).items() if k in raw["experiments"]}
    raw["tuning"] = tuning
    return raw


def make_tiny_repo(dest: Path, source: Path = REPO_ROOT, env: dict[str, str] | None = None) -> Path:
    """Copy the pipeline code of ``source`` into ``dest`` (a new directory), switch it to the tiny logic-only
    params (:func:`tiny_params`), and commit it in a fresh git repository. Returns ``dest``.

    Nothing of ``source`` is modified; its data, checkpoints and MLflow store are not copied.
    """
    dest.mkdir(parents=True)
    for name in REPO_COPY:
        src = source / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    (dest / ".dvc").mkdir()
    shutil.copy2(source / ".dvc" / "config", dest / ".dvc" / "config")
    (dest / ".gitignore").write_text("/data/\n/checkpoints/\n/mlflow/\n__pycache__/\n")
    raw = yaml.safe_load((source / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params(raw), sort_keys=False))
    env = env or stage_env()
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny benchmark copy"]):
        subprocess.run(cmd, cwd=dest, env=env, check=True, capture_output=True)
    return dest


@contextlib.contextmanager
def temporary_dir(prefix: str, keep: bool = False):
    """A temporary directory (removed afterwards unless ``keep``)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def load_average() -> str:
    """``/proc/loadavg``'s 1/5/15-minute load, or ``unknown``."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def busy_processes(min_cpu: float = 20.0, limit: int = 8) -> list[str]:
    """Other processes using at least ``min_cpu`` % CPU right now (``ps``), to say what shared the cores."""
    try:
        out = subprocess.run(
            ["ps", "-eo", "pid,pcpu,etimes,args", "--sort=-pcpu", "--no-headers"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4 or int(parts[0]) == os.getpid():
            continue
        try:
            cpu = float(parts[1])
        except ValueError:
            continue
        if cpu >= min_cpu:
            rows.append(f"{parts[1]}% {parts[3][:100]}")
    return rows[:limit]


def machine_info() -> dict[str, Any]:
    """CPU count, torch threads, load, Python and library versions (what a reader needs to compare numbers)."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": load_average(),
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
    }
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["nproc"] = int(subprocess.run(["nproc"], capture_output=True, text=True, timeout=5).stdout)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    for lib in LIBRARIES:
        try:
            info[f"version.{lib}"] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            info[f"version.{lib}"] = "not installed"
    if "torch" in sys.modules:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["torch_interop_threads"] = torch.get_num_interop_threads()
    return info


def git_commit(repo: Path = REPO_ROOT) -> str:
    """``git rev-parse HEAD`` of ``repo`` plus ``-dirty`` when tracked files under ``pipelines/``, ``models/`` or
    ``params.yaml`` differ from it (what the numbers were measured on); ``unknown`` outside a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "pipelines", "models", "params.yaml"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_json(name: str, obj: Any) -> Path:
    """Write ``obj`` to ``benchmarks/out/<name>.json`` atomically (temp file + rename)."""
    return atomic_write_text(OUT_DIR / f"{name}.json", json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(name: str) -> Any:
    """Read ``benchmarks/out/<name>.json``; ``None`` when the benchmark has not been run."""
    path = OUT_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


# ----------------------------------------------------------------------------------------- repeated rounds


@dataclass
class Policy:
    """How many rounds to run and what to do about other processes on the machine.

    A round (all sides once, or one ABBA pair) is *clean* when no run in it had other processes using more than
    ``CONTENTION_CORES`` cores. Rounds run until ``repeats`` are clean or ``max_rounds`` were run; before each round
    the driver waits up to ``quiet_wait`` seconds for a quiet machine. Medians come from the clean rounds when there
    are at least ``min(repeats, 3)`` of them, else from all rounds (and the result says so).
    """

    repeats: int = 5
    max_rounds: int = 10
    quiet_wait: float = 60.0
    log: Callable[[str], None] = print


def timed(fn: Callable[[], dict[str, Any]], also: Sequence[int | None] = ()) -> dict[str, Any]:
    """Run ``fn`` and add ``foreign_cores`` (other processes' CPU use during it, not counting ``also``'s, see
    :class:`ForeignLoad`) to its result."""
    with ForeignLoad(also) as load:
        result = fn()
    result["foreign_cores"] = load.cores
    return result


def collect_rounds(
    run_round: Callable[[int], dict[str, dict[str, Any]]], policy: Policy, label: str
) -> tuple[list[dict[str, dict[str, Any]]], dict[str, Any]]:
    """Run rounds (``run_round(r)`` returns ``{side: result}``) under ``policy``; returns the rounds to use and a
    description (rounds run, clean rounds, foreign load per round, whether the medians are from clean rounds)."""
    rounds: list[dict[str, dict[str, Any]]] = []
    clean: list[dict[str, dict[str, Any]]] = []
    loads: list[float] = []
    while len(clean) < policy.repeats and len(rounds) < policy.max_rounds:
        if policy.quiet_wait > 0:
            wait_for_quiet(policy.quiet_wait, policy.log)
        results = run_round(len(rounds))
        worst = max(r["foreign_cores"] for r in results.values())
        rounds.append(results)
        loads.append(round(worst, 2))
        if not worst > CONTENTION_CORES:
            clean.append(results)
        policy.log(
            f"{label} round {len(rounds)}: "
            + ", ".join(f"{name} {r['seconds']:.2f} s" for name, r in results.items())
            + f"; other processes {worst:.2f} cores"
            + ("" if not worst > CONTENTION_CORES else " (contended)")
        )
    use_clean = len(clean) >= min(policy.repeats, 3)
    info = {
        "rounds_run": len(rounds),
        "clean_rounds": len(clean),
        "foreign_cores_per_round": loads,
        "medians_from": "clean rounds" if use_clean else "all rounds (too few clean ones: contended machine)",
    }
    return (clean if use_clean else rounds), info
