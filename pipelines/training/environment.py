"""What decides whether two runs of the same params are bit-identical, recorded in every training run.

Seeds fix the random numbers, but not the floating-point order of the kernels: torch picks its CPU kernels by the
instruction set it detects (``torch.backends.cpu.get_cpu_capability()``: ``AVX512``, ``AVX2``, ``DEFAULT``, ...) and
splits reductions over its intra-op threads, so the same seed on another CPU kind or thread count can give other
sums, which training then amplifies (``benchmarks/REPRODUCIBILITY.md`` measures how far). :func:`environment`
collects those facts; :func:`log_environment` sets them as ``env.*`` tags of the MLflow run (tags, not params: a
run resumed from its checkpoint on another machine may differ, and MLflow refuses to change a logged param) and
returns them for the ``environment`` block of ``metrics/train/<experiment>.json``.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

#: The libraries whose versions decide the numbers (kernels, the training loop, the data pipeline).
VERSIONED = ("torch", "lightning", "numpy")
#: Thread settings read from the environment by torch's OpenMP/MKL back ends.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _version(lib: str) -> str:
    try:
        return metadata.version(lib)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(trainer_deterministic: bool | None = None) -> dict[str, Any]:
    """The facts that decide bit-identity of a run, as a flat dict of strings, ints and booleans.

    Call it after the ``Trainer`` is built (Lightning's ``deterministic=True`` switches on
    ``torch.use_deterministic_algorithms`` there), best after the fit.

    Args:
        trainer_deterministic: the experiment's ``trainer.deterministic`` flag, recorded as given.

    Returns:
        ``cpu_capability``, ``cpu_model``, ``cpu_count``, ``machine``, ``num_threads``, ``num_interop_threads``,
        ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` (``unset`` when not set), ``deterministic_algorithms``,
        ``trainer_deterministic``, ``cudnn_deterministic``, ``cudnn_benchmark``, ``float32_matmul_precision``,
        ``version.python`` / ``version.torch`` / ``version.lightning`` / ``version.numpy``, ``version.cuda`` and
        ``version.cudnn`` (``none`` on a CPU build) and ``gpu`` (the device name, or ``none``).
    """
    import torch

    cuda = torch.version.cuda
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    env: dict[str, Any] = {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "machine": platform.machine(),
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
    }
    env |= {var: os.environ.get(var, "unset") for var in THREAD_VARIABLES}
    env |= {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "trainer_deterministic": trainer_deterministic,
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "version.python": platform.python_version(),
    }
    env |= {f"version.{lib}": _version(lib) for lib in VERSIONED}
    env |= {
        "version.cuda": cuda or "none",
        "version.cudnn": str(cudnn) if cudnn else "none",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    return env


def log_environment(client, run_id: str, trainer_deterministic: bool | None = None) -> dict[str, Any]:
    """Set :func:`environment` as ``env.<key>`` tags of MLflow run ``run_id`` (``client``: an ``MlflowClient``);
    returns the dict, for ``metrics/train/<experiment>.json``."""
    from mlflow.entities import RunTag

    env = environment(trainer_deterministic)
    client.log_batch(run_id, tags=[RunTag(f"env.{k}", str(v)) for k, v in env.items()])
    return env
