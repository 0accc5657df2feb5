"""deepnotes pipeline: typed DVC stage entry points (prepare, augment, train, evaluate) and the library behind them."""

from pathlib import Path

#: Repository root: every default path (data, checkpoints, tracking store) resolves against it, so the
#: stages behave the same from any working directory and from DVC's experiment copies.
REPO_ROOT = Path(__file__).resolve().parent.parent
