"""``deepnotes`` command: one entry point for the stages, e.g. ``deepnotes train lenet5_mnist``, and for
hyperparameter searches, ``deepnotes tune lenet5_mnist --n-trials 30 --workers 2``.

Each subcommand runs the same code as its DVC stage (``python -m pipelines.stages.<stage> ...``); use ``dvc repro`` to run
the pipeline with caching, and these to run or debug one stage by hand.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

STAGES = ("prepare", "augment", "train", "evaluate", "diagnose", "report", "tune")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in STAGES:
        print(f"usage: deepnotes {{{','.join(STAGES)}}} <name> [options]", file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    stage = importlib.import_module(f"pipelines.stages.{argv[0]}")
    return stage.main(argv[1:])


def experiment_stage(
    argv: list[str] | None,
    *,
    prog: str,
    description: str,
    run: Callable[[str, Any], Any],
    done: Callable[[str, Any], None],
) -> int:
    """The command line of a per-experiment stage (``python -m pipelines.stages.<stage> <experiment> [--params FILE]``).

    Loads and validates the params, checks the experiment exists, calls ``run(experiment, params)`` and then
    ``done(experiment, result)`` (to log a summary). A :class:`~pipelines.config.ConfigError` from either step
    or a :class:`~pipelines.data.prepared.PreparedDataError` (missing or corrupt prepared data) from either step
    becomes one ``error: ...`` line on stderr and exit status 2; other exceptions propagate with their traceback.
    """
    from pipelines.config import ConfigError, load_params
    from pipelines.data.prepared import PreparedDataError

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("experiment", help="experiment name under `experiments:` in params.yaml")
    parser.add_argument("--params", type=Path, default=None, help="params file (default: <repo>/params.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = load_params(args.params)
        params.experiment(args.experiment)
        result = run(args.experiment, params)
    except (ConfigError, PreparedDataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    done(args.experiment, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
