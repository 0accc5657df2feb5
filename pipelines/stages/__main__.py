"""``python -m pipelines.stages <stage> [args...]``: what ``dvc.yaml`` runs, e.g. ``python -m pipelines.stages train
lenet5_mnist``.

The same as ``python -m pipelines.stages.<stage> [args...]``, but the stage runs in a child of a warm interpreter
that has torch, Lightning and MLflow imported already (:mod:`pipelines.warm`), which saves most of a torch stage's
fixed cost. ``DEEPNOTES_WARM=0`` runs it cold, in this process. Only the standard library is imported here.
"""

from __future__ import annotations

import sys

from pipelines.warm import launch

STAGES = ("resolve", "prepare", "augment", "train", "evaluate", "diagnose", "report", "tune")


def main(argv: list[str] | None = None) -> int:
    """Run stage ``argv[0]`` with the remaining arguments; returns its exit status (2 for an unknown stage)."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in STAGES:
        print(f"usage: python -m pipelines.stages {{{','.join(STAGES)}}} [args...]", file=sys.stderr)
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    return launch(f"pipelines.stages.{args[0]}", args[1:])


if __name__ == "__main__":
    sys.exit(main())
