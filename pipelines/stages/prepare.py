"""DVC stage ``prepare``: raw files -> ``data/prepared/<dataset>/`` (format in :mod:`pipelines.data.prepared`).

    python -m pipelines.stages.prepare <dataset> [--params params.yaml] [--profile NAME] [--out data/prepared]
                                          [--mirror DIR]

Raw files come from ``--mirror`` or ``$DEEPNOTES_DATA_MIRROR`` (a folder laid out like ``shared/data``), else from
the download cache ``data/raw`` or over HTTP (``$DEEPNOTES_DATA_URL``, then the catalog URLs); see
:mod:`pipelines.data.fetch`. The output directory is written atomically: on any error the previous output (or none)
stays. A data or configuration problem prints one line ``error: ...`` on stderr and exits with code 2.

Imports stay light (numpy, pandas, pydantic; sklearn and tokenizers on demand; no torch): DVC starts a fresh
process for every stage.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipelines.config import ConfigError, load_params
from pipelines.data.prepared import PREPARED_ROOT, PreparedDataError, write_prepared
from pipelines.errors import DataError

log = logging.getLogger("pipelines.stages.prepare")

#: Exit status of a stage that failed because of its input data or configuration (not a bug).
EXIT_DATA_ERROR = 2


def prepare(
    dataset: str,
    *,
    params_path: str | Path | None = None,
    profile: str | None = None,
    out_root: str | Path = PREPARED_ROOT,
    mirror: str | Path | None = None,
) -> Path:
    """Prepare ``dataset`` as configured in ``params.yaml`` and write it to ``<out_root>/<dataset>``.

    Returns:
        the output directory.

    Raises:
        ConfigError: ``params.yaml`` is invalid or has no ``datasets.<dataset>`` entry.
        DataError: a raw file is missing, corrupt or malformed.
    """
    from pipelines.data.preparers import prepare_dataset

    params = load_params(params_path, profile)
    config = params.dataset(dataset)
    start = time.perf_counter()
    root = Path(params_path).resolve().parent if params_path else None
    arrays, meta, extra_files = prepare_dataset(dataset, config, params.seed, mirror=mirror, root=root)
    out_dir = write_prepared(Path(out_root) / dataset, arrays, meta, extra_files)
    shapes = ", ".join(f"{split} x{tuple(x.shape)} y{tuple(y.shape)}" for split, (x, y) in arrays.items())
    log.info("prepared %s in %.1f s: %s -> %s", dataset, time.perf_counter() - start, shapes, out_dir)
    return out_dir


def run_stage(stage: Callable[..., object], **kwargs: Any) -> int:
    """Run a stage function; turn data/config errors into one ``error: ...`` line on stderr and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        stage(**kwargs)
    except (DataError, ConfigError, PreparedDataError) as exc:
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"error: {message}", file=sys.stderr)
        return EXIT_DATA_ERROR
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0, or 2 on a data or configuration error)."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.stages.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="a dataset under datasets: in params.yaml, e.g. mnist")
    parser.add_argument("--params", type=Path, default=None, help="params file (default: <repo>/params.yaml)")
    parser.add_argument("--profile", default=None, help="override the params file's profile")
    parser.add_argument("--out", type=Path, default=PREPARED_ROOT, help="output root (default: data/prepared)")
    parser.add_argument(
        "--mirror", type=Path, default=None, help="data mirror folder (default: $DEEPNOTES_DATA_MIRROR)"
    )
    args = parser.parse_args(argv)
    return run_stage(
        prepare,
        dataset=args.dataset,
        params_path=args.params,
        profile=args.profile,
        out_root=args.out,
        mirror=args.mirror,
    )


if __name__ == "__main__":
    sys.exit(main())
