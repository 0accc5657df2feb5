"""``tune`` stage: ``python -m pipelines.stages.tune <experiment>`` (or ``deepnotes tune <experiment>``) runs one
session of the experiment's Optuna search (:mod:`pipelines.tuning.search`): workers, pruning, the MLflow parent run,
and the best params in ``params/tuned/<experiment>.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from pipelines.config import ConfigError, load_params, tuned_path
from pipelines.tuning.search import Session, run_worker, tune


def _terminate(signum, frame) -> None:
    """SIGTERM handler: raise ``KeyboardInterrupt`` so the running trial's MLflow run and the session's parent run
    are closed as KILLED (the trial itself is failed and re-queued by the next session)."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.stages.tune", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="experiment name under `experiments:` in params.yaml")
    parser.add_argument("--n-trials", type=int, help="target total of trials in the study (default tuning.n_trials)")
    parser.add_argument("--timeout", type=float, help="seconds in which this session may start trials")
    parser.add_argument("--workers", type=int, help="parallel worker processes (default tuning.workers)")
    parser.add_argument(
        "--storage",
        help="Optuna storage: RDB URL or journal file (default <repo>/studies/"
        "deepnotes.journal; env DEEPNOTES_OPTUNA_STORAGE)",
    )
    parser.add_argument("--study-name", help="default <experiment>-<profile>")
    parser.add_argument("--sampler", choices=("tpe", "random", "cmaes", "gp"))
    parser.add_argument("--pruner", choices=("median", "hyperband", "successive_halving", "none"))
    parser.add_argument("--seed", type=int, help="sampler seed (default the params seed)")
    parser.add_argument("--params", type=Path, default=None, help="params file (default: <repo>/params.yaml)")
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--parent-run-id", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)  # schedulers stop sessions with SIGTERM: end them like Ctrl+C
    for option in ("n_trials", "workers"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            print(
                f"error: --{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}", file=sys.stderr
            )
            return 2
    if args.timeout is not None and args.timeout <= 0:
        print(f"error: --timeout must be positive seconds, got {args.timeout}", file=sys.stderr)
        return 2
    try:
        params = load_params(args.params)
        params.experiment(args.experiment)
        session = Session(
            args.experiment,
            params,
            args.params,
            study_name=args.study_name,
            storage=args.storage,
            sampler=args.sampler,
            pruner=args.pruner,
            n_trials=args.n_trials,
            timeout=args.timeout,
            workers=args.workers,
            seed=args.seed,
            parent_run_id=args.parent_run_id,
        )
        if args.worker_index is not None:  # a worker started by a coordinator
            threads = os.environ.get("DEEPNOTES_WORKER_THREADS")
            if threads:
                import torch

                torch.set_num_threads(int(threads))
            run_worker(session, args.worker_index)
            return 0
        summary = tune(session)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    best = summary["best_value"]
    print(
        f"study {summary['study_name']}: {summary['study_trials']} trials "
        f"({summary['study_complete']} complete, {summary['study_pruned']} pruned, {summary['study_fail']} failed); "
        f"this session {summary['session_trials']} in {summary['session_seconds']:.0f} s; "
        + (
            f"best {summary['metric']} = {best:.4g} (trial {summary['best_trial']}), written to "
            f"{tuned_path(session.experiment, session.base_dir)}"
            if best is not None
            else "no trial has completed yet"
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
