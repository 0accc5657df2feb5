"""``deepnotes`` command: one entry point for the stages, e.g. ``deepnotes train lenet5_mnist``, and for
hyperparameter searches, ``deepnotes tune lenet5_mnist --n-trials 30 --workers 2``.

Each subcommand runs the same code as its DVC stage (``python -m pipelines.<stage> ...``); use ``dvc repro`` to run
the pipeline with caching, and these to run or debug one stage by hand.
"""

from __future__ import annotations

import importlib
import sys

STAGES = ("prepare", "augment", "train", "evaluate", "diagnose", "report", "tune")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in STAGES:
        print(f"usage: deepnotes {{{','.join(STAGES)}}} <name> [options]", file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    stage = importlib.import_module(f"pipelines.{argv[0]}")
    return stage.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
