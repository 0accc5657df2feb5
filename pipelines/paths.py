"""Where the stages write, under the repository root (:data:`pipelines.REPO_ROOT`), so they behave the same from any
working directory and from DVC's experiment copies."""

from __future__ import annotations

from pipelines import REPO_ROOT

#: ``checkpoints/<experiment>/``: best and last Lightning checkpoints, ``network.pt``, ``checkpoint.json``.
CHECKPOINT_ROOT = REPO_ROOT / "checkpoints"
#: ``metrics/<experiment>.json`` (the summary) and ``metrics/{train,evaluate,diagnose,tune}/<experiment>.json``.
METRICS_ROOT = REPO_ROOT / "metrics"
#: The DVC plot files: ``plots/<kind>/<experiment>.csv`` and ``plots/evaluate/<experiment>/*.png``.
PLOTS_ROOT = REPO_ROOT / "plots"
