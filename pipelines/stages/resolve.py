"""``resolve`` stage: ``python -m pipelines.stages.resolve`` writes what each stage of each dataset and experiment really
depends on, one small JSON file each, under ``params/resolved/``:

- ``prepare/<dataset>.json``, ``augment/<dataset>.json``: the seed, the dataset's (or its augmentation's) settings
  with the active profile merged in, the dataset's catalog entry as data (:meth:`DatasetEntry.record
  <pipelines.data.catalog.DatasetEntry.record>`), and the md5 of every project file the stage imports, the preparer
  its entry names included;
- ``train/<experiment>.json``, ``evaluate/<experiment>.json``, ``diagnose/<experiment>.json``: the seed, the
  experiment as it runs (profile and, with ``use_tuned``, tuned values merged in), the architecture's registry entry
  and params schema, its dataset's catalog entry, and the md5 of every file of the stage's import closure, its task's module, the task's
  LightningModule and the architecture's module included (:mod:`pipelines.dependencies`);
- ``report.json``: the experiments the report lists, the claims it checks (``claims:``) and the report's code.

The per-experiment stages depend on these files instead of on all of ``params.yaml`` and whole code folders. So
adding an architecture, a dataset (a module of :mod:`pipelines.data.datasets` and its preparer) or an experiment, editing another architecture's module, the inactive profile, or finishing
a tuning search while ``use_tuned`` is false changes none of an experiment's files, and DVC reruns none of its
stages; an edit to a module that a stage does import changes that stage's file. ``resolve`` itself depends on the
params and the code folders: it always reruns when they change, in well under a second (no torch), and rewrites
identical files where nothing an experiment uses changed. The files hold no time stamps or run ids.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pipelines import REPO_ROOT
from pipelines.config import ConfigError, ExperimentConfig, Params, load_params
from pipelines.dependencies import file_hashes, import_closure
from pipelines.io import atomic_dir

log = logging.getLogger("deepnotes.resolve")

RESOLVED_ROOT = REPO_ROOT / "params" / "resolved"
#: ``data/sources/<dataset>`` (and ``<dataset>.test``): what ``prepare@<dataset>`` depends on in DVC besides its
#: resolved settings: a symbolic link to the user's file or folder of a ``source:`` block, else a placeholder file.
SOURCES_ROOT = REPO_ROOT / "data" / "sources"
#: The entry module of each stage.
STAGES = {
    "prepare": "pipelines.stages.prepare",
    "augment": "pipelines.stages.augment",
    "train": "pipelines.stages.train",
    "evaluate": "pipelines.stages.evaluate",
    "diagnose": "pipelines.stages.diagnose",
}


def experiment_modules(exp: ExperimentConfig) -> list[str]:
    """The modules an experiment's stages load by name at run time: its task, the task's LightningModule and
    datamodule, and the architecture's network (and its ``describe`` function)."""
    from models.registry import get_architecture
    from pipelines.tasks import get_task

    task = get_task(exp.task)
    arch = get_architecture(exp.architecture)
    targets = [arch.target] + ([arch.describe_target] if arch.describe_target else [])
    loaded = [task.module, task.datamodule] + targets
    return [f"pipelines.tasks.{exp.task}"] + [t.partition(":")[0] for t in loaded]


def architecture_entry(name: str) -> dict[str, Any]:
    """The registry entry of architecture ``name`` as plain data, with its params model's JSON schema: an edit to
    another architecture's entry in the same ``specs.py`` leaves it unchanged."""
    from models.registry import get_architecture

    arch = get_architecture(name)
    return {
        "name": arch.name,
        "target": arch.target,
        "describe_target": arch.describe_target,
        "notes": arch.notes,
        "modalities": sorted(arch.modalities),
        "tasks": sorted(arch.tasks),
        "params_schema": arch.params.model_json_schema(),
    }


def resolved(params: Params) -> dict[str, dict[str, Any]]:
    """``{relative file path: content}`` of every file ``resolve`` writes for ``params``."""
    closures: dict[tuple[str, ...], dict[str, str]] = {}

    def code(*modules: str) -> dict[str, str]:
        key = tuple(sorted(set(modules)))
        if key not in closures:
            closures[key] = file_hashes(import_closure(key))
        return closures[key]

    files: dict[str, dict[str, Any]] = {}
    for name, dataset in params.datasets.items():
        entry = params.dataset_entry(name)
        preparer = [entry.preparer.partition(":")[0]] if entry.preparer and dataset.source is None else []
        files[f"prepare/{name}.json"] = {
            "seed": params.seed,
            "dataset": dataset.model_dump(mode="json"),
            "entry": entry.record(),
            "code": code(STAGES["prepare"], *preparer),
        }
        files[f"augment/{name}.json"] = {
            "seed": params.seed,
            "augment": params.augmentation(name).model_dump(mode="json"),
            "entry": entry.record(),
            "code": code(STAGES["augment"]),
        }
    for name, exp in params.all_experiments.items():
        common = {
            "seed": params.experiment_seed(name),
            "experiment": exp.model_dump(mode="json"),
            "architecture": architecture_entry(exp.architecture),
            "dataset_entry": params.dataset_entry(exp.dataset).record(),
        }
        for stage in ("train", "evaluate", "diagnose"):
            files[f"{stage}/{name}.json"] = common | {"code": code(STAGES[stage], *experiment_modules(exp))}
    from pipelines.tasks import task_names

    files["report.json"] = {
        "experiments": {
            name: {
                "architecture": exp.architecture,
                "dataset": exp.dataset,
                "task": exp.task,
                "notes": exp.notes,
                "pretrained": exp.pretrained.model_dump(mode="json") if exp.pretrained else None,
            }
            for name, exp in params.all_experiments.items()
        },
        "claims": {name: claim.model_dump(mode="json") for name, claim in params.claims.items()},
        "code": code("pipelines.stages.report", *(f"pipelines.tasks.{t}" for t in task_names())),
    }
    return files


def write(params: Params, root: Path = RESOLVED_ROOT) -> dict[str, dict[str, Any]]:
    """Write :func:`resolved` under ``root`` (the whole folder atomically replaced); returns what it wrote."""
    import json

    files = resolved(params)
    with atomic_dir(root) as tmp:
        for relative, content in files.items():
            path = tmp / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
    return files


def _link(link: Path, target: Path | None, repo: Path) -> None:
    """``link`` -> ``target`` (relative when ``target`` is inside ``repo``, so a copy of the repo links its own
    files), or a small placeholder file when there is no target (a catalog dataset) or it does not exist (then
    ``prepare`` reruns and names the missing file). A file, not an empty folder: DVC warns about empty ones."""
    if target is None or not target.exists():
        link.write_text("no user files\n" if target is None else f"missing: {target}\n")
        return
    target = target.absolute()
    try:
        target.relative_to(repo)
        link.symlink_to(os.path.relpath(target, link.parent))
    except ValueError:
        link.symlink_to(target)


def write_source_links(params: Params, root: Path = SOURCES_ROOT, repo: Path = REPO_ROOT) -> None:
    """Make ``root/<dataset>`` and ``root/<dataset>.test`` for every dataset of ``params`` (the folder atomically
    replaced). DVC hashes what a link points to, so editing, adding or removing a user's file changes
    ``prepare@<dataset>``'s dependency and reruns it; ``dvc status`` shows it."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(root) as tmp:
        for name, dataset in params.datasets.items():
            main, extra = dataset.source.dependencies(repo) if dataset.source else (None, None)
            # the temporary folder is a sibling of root: a relative target is the same from both
            _link(tmp / name, main, repo)
            _link(tmp / f"{name}.test", extra, repo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.stages.resolve", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=None, help="params file (default: <repo>/params.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = load_params(args.params)
        files = write(params)
        write_source_links(params)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("resolved %d files under %s", len(files), RESOLVED_ROOT.relative_to(REPO_ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
