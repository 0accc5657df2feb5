"""``diagnose`` stage: ``python -m pipelines.stages.diagnose <experiment>``: bias and variance beyond the single
verdict, by refitting the experiment (:mod:`pipelines.diagnostics.refits`: learning curve, seed spread, bootstrap).

The summary goes to ``metrics/diagnose/<experiment>.json``, the tables (one row per fit) to
``reports/diagnostics/<experiment>.json`` (the ``report`` stage turns the non-empty ones into DVC plots) and, as
metrics and PNG plots, into the experiment's MLflow run. With every refit off the stage writes its two small files
in well under a second, without torch.
"""

from __future__ import annotations

import logging
import statistics
import sys
from typing import Any

from pipelines import REPO_ROOT
from pipelines.config import ConfigError, ExperimentConfig, Params
from pipelines.diagnostics.refits import bootstrap, learning_curve, more_data_verdict, seed_spread
from pipelines.io import atomic_write_json
from pipelines.paths import METRICS_ROOT
from pipelines.tasks import get_task

log = logging.getLogger("deepnotes.diagnose")

DIAGNOSTICS_ROOT = REPO_ROOT / "reports" / "diagnostics"
#: Each refit's table columns (the report writes them as plots/diagnostics/<refit>/<experiment>.csv).
COLUMNS = {
    "learning_curve": ["fraction", "train_samples", "train_error", "val_error"],
    "seeds": ["seed", "train_error", "val_error", "test_error"],
    "bootstrap": ["component", "value"],
}


def diagnose(name: str, params: Params) -> dict[str, Any]:
    """Run experiment ``name``'s enabled studies; returns the dict written to ``metrics/diagnose/<name>.json``."""
    exp = params.experiment(name)
    studies = exp.diagnostics.studies
    results: dict[str, Any] = {"experiment": name, "studies": ", ".join(studies) or "none"}
    tables: dict[str, list[dict[str, Any]]] = {study: [] for study in COLUMNS}
    if studies:
        try:
            results |= _run_studies(name, params, exp, studies, tables)
        except ConfigError as exc:
            raise ConfigError(f"params.yaml: experiments.{name}.{exc}") from None
    atomic_write_json(DIAGNOSTICS_ROOT / f"{name}.json", {"experiment": name, "tables": tables})
    atomic_write_json(METRICS_ROOT / "diagnose" / f"{name}.json", results)
    return results


def _run_studies(
    name: str, params: Params, exp: ExperimentConfig, studies: list[str], tables: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    from pipelines import plots
    from pipelines.data.prepared import PREPARED_ROOT, load_prepared

    data = load_prepared(PREPARED_ROOT / exp.dataset, mmap=False)
    seed = params.experiment_seed(name)
    unit = get_task(exp.task).error_unit
    results: dict[str, Any] = {}
    figures = {}
    if "learning_curve" in studies:
        rows = tables["learning_curve"] = learning_curve(exp, data, seed)
        helps, note = more_data_verdict(rows, exp.bias_variance.tolerance)
        results["learning_curve"] = {
            "points": len(rows),
            "more_data_helps": int(helps),
            "note": note,
            "final_gap": rows[-1]["val_error"] - rows[-1]["train_error"],
        }
        figures["learning_curve.png"] = plots.learning_curve_figure(rows, note, unit)
    if "seeds" in studies:
        from pipelines.data.prepared import load_training_data

        rows = tables["seeds"] = seed_spread(exp, data, seed, train_data=load_training_data(exp.dataset))
        test = [r["test_error"] for r in rows]
        results["seeds"] = {
            "count": len(rows),
            "test_error_mean": statistics.fmean(test),
            "test_error_std": statistics.stdev(test),
            "test_error_min": min(test),
            "test_error_max": max(test),
        }
        figures["seeds.png"] = plots.seeds_figure(rows, f"test {unit}")
    if "bootstrap" in studies:
        decomposition = bootstrap(exp, data, seed)
        results["bootstrap"] = decomposition
        components = {k: decomposition[k] for k in ("bias_squared", "variance", "noise")}
        tables["bootstrap"] = [{"component": k, "value": v} for k, v in components.items()]
        figures["bootstrap.png"] = plots.bias_variance_figure(
            components,
            f"Bootstrap decomposition ({decomposition['rounds']} rounds): expected loss "
            f"{decomposition['expected_loss']:.4g}",
            "squared error",
        )
    _log_to_run(name, params, results, figures)
    for fig in figures.values():
        plots.close(fig)
    return results


def _log_to_run(name: str, params: Params, results: dict[str, Any], figures: dict) -> None:
    """Log the studies into the experiment's training run (:func:`pipelines.tracking.read_run_link`), when this
    checkout has one, through the client API: the run stays as ``train`` and ``evaluate`` left it (its status and
    end time, so its Duration stays its train and evaluate seconds); its ``dvc.stages`` tag gains this stage."""
    import mlflow

    from pipelines.tracking import add_stage, dvc_stage, flatten, read_run_link, tracking_uri

    link = read_run_link(name)
    if link is None:
        log.warning("no MLflow run recorded for %s (mlflow/runs/%s.json): the diagnostics are not logged", name, name)
        return
    run_id = link["run_id"]
    client = mlflow.MlflowClient(tracking_uri(params))
    add_stage(client, run_id, dvc_stage(params, name, "diagnose"), client.get_run(run_id).data.tags)
    numbers = {f"diagnose.{k}": float(v) for k, v in flatten(results).items() if isinstance(v, (int, float))}
    for key, value in numbers.items():
        client.log_metric(run_id, key, value)
    if "learning_curve" in results:
        client.set_tag(run_id, "learning_curve.note", results["learning_curve"]["note"])
    for file, fig in figures.items():
        client.log_figure(run_id, fig, f"plots/{file}")


def main(argv: list[str] | None = None) -> int:
    from pipelines.cli import experiment_stage

    return experiment_stage(
        argv,
        prog="python -m pipelines.stages.diagnose",
        description=__doc__.splitlines()[0],
        run=diagnose,
        done=lambda name, results: log.info("%s diagnostics: %s", name, results),
    )


if __name__ == "__main__":
    sys.exit(main())
