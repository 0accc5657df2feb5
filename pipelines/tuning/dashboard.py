"""``python -m pipelines.tuning.dashboard`` (``make dashboard``): optuna-dashboard over the project's study storage.

The storage is the one ``deepnotes tune`` uses (:func:`pipelines.tuning.studies.storage_url`): ``--storage``, else
``DEEPNOTES_OPTUNA_STORAGE``, else ``tuning.storage`` in ``params.yaml``, else ``<repo>/studies/deepnotes.journal``.
Before serving, the objective of each study made before studies named it gets its name from the study's ``metric``
attribute (:func:`~pipelines.tuning.studies.name_objectives`), so the dashboard shows ``val_loss``, not "Objective 0".
The server is optuna-dashboard's own (``optuna_dashboard.run_server``, wsgiref), on loopback by default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.config import ConfigError, load_params
from pipelines.tuning.studies import is_rdb, make_storage, name_objectives, redact, storage_url


def main(argv: list[str] | None = None) -> int:
    """Print the dashboard's URL and serve it until interrupted. Returns 2 on a bad params file or no study storage."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.tuning.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; make dashboard DASHBOARD_PORT=)")
    parser.add_argument(
        "--storage", help="Optuna storage: RDB URL or journal file (default as `deepnotes tune`: tuning.storage)"
    )
    parser.add_argument("--params", type=Path, default=None, help="params file (default: <repo>/params.yaml)")
    args = parser.parse_args(argv)
    try:
        from optuna_dashboard import run_server
    except ImportError:
        print(
            "error: optuna-dashboard is not installed; it is in the dev extra: pip install -e '.[dev]'", file=sys.stderr
        )
        return 2
    try:
        params = load_params(args.params)
        url = storage_url(args.storage, params.tuning.storage)
        if not is_rdb(url) and not Path(url).is_file():
            raise ConfigError(
                f"no study journal at {url} (--storage, DEEPNOTES_OPTUNA_STORAGE, tuning.storage, else studies/deepnotes.journal): run "
                f"`deepnotes tune <experiment>` first, or pass --storage"
            )
        t = params.tuning
        storage = make_storage(url, heartbeat_interval=t.heartbeat_interval, grace_period=t.grace_period)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    named = name_objectives(storage)
    studies = storage.get_all_studies()
    print(
        f"optuna-dashboard on http://{args.host}:{args.port}/dashboard over {redact(url)}: {len(studies)} studies"
        + (f" (objective named in {', '.join(named)})" if named else ""),
        flush=True,
    )
    run_server(storage, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
