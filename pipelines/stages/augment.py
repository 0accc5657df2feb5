"""DVC stage ``augment``: extra, augmented train samples -> ``data/augmented/<dataset>/`` (notes 004, augmentation).

    python -m pipelines.stages.augment <dataset> [--params params.yaml] [--profile NAME]
                                          [--prepared data/prepared] [--out data/augmented]

Configured by ``augment.<dataset>`` in ``params.yaml`` (:class:`~pipelines.config.AugmentConfig`):

- disabled: only ``meta.json`` = ``{"enabled": false, "dataset": ...}`` is written; nothing is copied;
- enabled: a seeded ``fraction`` of the prepared train split is drawn and ``copies`` augmented copies of it are
  written as ``train_x.npy``/``train_y.npy`` (only the extra samples; labels are those of the originals).
  How the samples are transformed: :mod:`pipelines.data.augmentation`.

Errors: like ``prepare``, one line ``error: ...`` on stderr and exit status 2; the output directory is replaced
atomically.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pipelines.config import load_params
from pipelines.data.augmentation import augment_arrays
from pipelines.data.prepared import AUGMENTED_ROOT, PREPARED_ROOT, load_prepared, write_prepared
from pipelines.io import atomic_dir, atomic_write_json
from pipelines.stages.prepare import run_stage

log = logging.getLogger("pipelines.stages.augment")


def augment(
    dataset: str,
    *,
    params_path: str | Path | None = None,
    profile: str | None = None,
    prepared_root: str | Path = PREPARED_ROOT,
    out_root: str | Path = AUGMENTED_ROOT,
) -> Path:
    """Write ``<out_root>/<dataset>`` from ``<prepared_root>/<dataset>`` as ``augment.<dataset>`` configures.

    Raises:
        ConfigError: ``params.yaml`` is invalid.
        PreparedDataError: augmentation is enabled but the prepared dataset is missing.
        DataError: the dataset's modality cannot be augmented.
    """
    params = load_params(params_path, profile)
    params.dataset(dataset)  # an unknown dataset is a ConfigError, not a silently disabled augmentation
    config = params.augmentation(dataset)
    out_dir = Path(out_root) / dataset
    if not config.enabled:
        with atomic_dir(out_dir) as tmp:
            atomic_write_json(tmp / "meta.json", {"enabled": False, "dataset": dataset})
        log.info("augmentation of %s is disabled: wrote %s", dataset, out_dir / "meta.json")
        return out_dir

    start = time.perf_counter()
    source = load_prepared(Path(prepared_root) / dataset, splits=("train",))
    x, y = source.x["train"], source.y["train"]
    x_aug, y_aug = augment_arrays(x, y, source.meta, config, params.seed)
    meta = {
        "enabled": True,
        "dataset": dataset,
        "task": source.meta.get("task"),
        "modality": source.meta.get("modality"),
        "normalization": source.meta.get("normalization"),  # the extra samples are on the prepared train scale
        "seed": params.seed,
        "source_train_samples": int(len(x)),
        "selected_samples": int(len(x_aug) // config.copies),
        "copies": config.copies,
        "augmented_samples": int(len(x_aug)),
        "config": config.model_dump(),
    }
    write_prepared(out_dir, {"train": (x_aug, y_aug)}, meta)
    log.info(
        "augmented %s in %.1f s: %d extra train samples from %d -> %s",
        dataset,
        time.perf_counter() - start,
        len(x_aug),
        len(x),
        out_dir,
    )
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0, or 2 on a data or configuration error)."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.stages.augment", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="a dataset under datasets: in params.yaml, e.g. mnist")
    parser.add_argument("--params", type=Path, default=None, help="params file (default: <repo>/params.yaml)")
    parser.add_argument("--profile", default=None, help="override the params file's profile")
    parser.add_argument(
        "--prepared", type=Path, default=PREPARED_ROOT, help="prepared data root (default: data/prepared)"
    )
    parser.add_argument("--out", type=Path, default=AUGMENTED_ROOT, help="output root (default: data/augmented)")
    args = parser.parse_args(argv)
    return run_stage(
        augment,
        dataset=args.dataset,
        params_path=args.params,
        profile=args.profile,
        prepared_root=args.prepared,
        out_root=args.out,
    )


if __name__ == "__main__":
    sys.exit(main())
