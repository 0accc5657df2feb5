#!/usr/bin/env bash
# One scheduled search session: append trials to an experiment's persistent Optuna study for a time budget.
#   scheduling/tune-session.sh <experiment> [pipelines.stages.tune options...]
# e.g. scheduling/tune-session.sh lenet5_mnist --timeout 3300 --n-trials 200
#
# Safe to run again and concurrently (cron overlap, systemd, SLURM array tasks): the study lives in persistent
# storage, trial numbers continue, finished trials are never re-run, a lock around trial creation keeps the study
# at its --n-trials target, and a killed session's running trial is failed and re-queued by the next one.
# Environment: DEEPNOTES_OPTUNA_STORAGE (default: <repo>/studies/deepnotes.journal), MLFLOW_TRACKING_URI (default:
# <repo>/mlflow/mlflow.db), DEEPNOTES_DATA_MIRROR, DEEPNOTES_PROFILE. The data must be prepared (`dvc repro`).
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 <experiment> [pipelines.stages.tune options]" >&2
  exit 2
fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
python="${DEEPNOTES_PYTHON:-$repo/.venv/bin/python}"
if [[ -z "${DEEPNOTES_DATA_MIRROR:-}" && -d "$repo/../shared/data" ]]; then
  export DEEPNOTES_DATA_MIRROR="$repo/../shared/data"
fi
mkdir -p "$repo/studies/logs"
echo "$(date -u +%FT%TZ) tune $* (pid $$, host $(hostname))" >> "$repo/studies/logs/sessions.log"
exec "$python" -m pipelines.stages.tune "$@"
