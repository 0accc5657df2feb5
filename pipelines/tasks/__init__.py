"""Tasks: what an experiment learns to do, each in one module of this package (Ludwig's output features).

A task owns everything that differs between, say, classification and reconstruction: which losses fit it and how
its targets are prepared, its torchmetrics metric set, headline and primary metric (and that metric's direction),
how outputs become predictions, what ``evaluate`` computes and writes, what "error" means for the bias/variance
verdict, and what the report shows. The rest of the pipeline asks the task and never branches on its name.

The registry is torch-free: a task is found by its module name (``pipelines/tasks/<name>.py`` defines
``TASK``, a :class:`~pipelines.tasks.base.Task` subclass), and task modules import torch only inside methods, so
``params.yaml`` validates at the cost of pydantic alone.

To add a task: write ``pipelines/tasks/<name>.py`` with a ``Task`` subclass bound to ``TASK``. A task that does not
fit the shared supervised step (a GAN's two optimizers, DQN's environment) overrides :attr:`Task.module` with its
own LightningModule; one whose batches must keep an order (a language model's parallel streams of one text) overrides
:attr:`Task.datamodule`, and one whose raw outputs are too large to keep for a whole split summarises them in
:meth:`Task.compute_outputs`.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from pipelines.tasks.base import Task

__all__ = ["Task", "get_task", "task_names"]


@cache
def task_names() -> tuple[str, ...]:
    """Names of every registered task (the modules of this package that define ``TASK``), sorted."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in ("base", "classification")))


def get_task(name: str) -> type[Task]:
    """The :class:`Task` class registered as ``name``.

    Raises:
        KeyError: naming the unknown task and listing the registered ones.
    """
    if name not in task_names():
        raise KeyError(f"unknown task {name!r}; registered tasks: {', '.join(task_names())}")
    task = importlib.import_module(f"pipelines.tasks.{name}").TASK
    if task.name != name:  # pragma: no cover - a module/TASK mismatch is a programming error
        raise KeyError(f"pipelines/tasks/{name}.py defines TASK {task.name!r}; they must match")
    return task
