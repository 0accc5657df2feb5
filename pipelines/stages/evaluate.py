"""``evaluate`` stage: ``python -m pipelines.stages.evaluate <experiment>``.

Loads the best checkpoint of ``train`` with the LightningModule class of the experiment's task and computes the
task's metrics on the un-augmented train split and on the validation and test splits, then the bias/variance
verdict of the task's error against the experiment's reference error, with the notes' remedies
(:mod:`pipelines.diagnostics.bias_variance`). The task adds its own evaluation (:meth:`pipelines.tasks.base.Task.evaluate`):
classification a confusion matrix, ROC and precision-recall curves, regression predicted against actual values,
reconstruction originals above their reconstructions.

Everything is logged to the training run in MLflow (one run tells the whole story). DVC outputs:

- ``metrics/<experiment>.json``: the summary ``dvc metrics show`` prints: the task, its primary test metric and a few
  headline figures, with the same keys for every experiment;
- ``metrics/evaluate/<experiment>.json``: every metric of every split, the verdict and the registered model
  (``dvc metrics show metrics/evaluate/<experiment>.json``);
- ``plots/bias_variance/<experiment>.csv`` and ``plots/evaluate/<experiment>/``: the task's figures as PNG.
"""

from __future__ import annotations

import csv
import logging
import sys
import time
from typing import Any

from pipelines.config import ExperimentConfig, Params
from pipelines.diagnostics.bias_variance import Diagnosis, verdict
from pipelines.io import atomic_dir, atomic_write_json, atomic_write_text
from pipelines.paths import METRICS_ROOT, PLOTS_ROOT

log = logging.getLogger("deepnotes.evaluate")


def register_model(client, name: str, run_id: str, task, results: dict[str, Any]):
    """Register the run's logged model as a new version of ``deepnotes-<name>`` and move the ``champion`` /
    ``challenger`` aliases by the task's primary test metric (:mod:`pipelines.registered_models`). Returns the
    :class:`~pipelines.registered_models.RegistrationResult`, or ``None`` when the run logged no MLflow model."""
    from pipelines.registered_models import register, registered_name

    model_uri = client.get_run(run_id).data.tags.get("model_uri")
    if not model_uri:
        return None
    metric, greater_is_better = task.primary_metric()
    return register(
        client,
        name=registered_name(name),
        model_uri=model_uri,
        run_id=run_id,
        metric=metric,
        value=results["test"][task.primary],
        greater_is_better=greater_is_better,
        tags={"experiment": name},
    )


def summary_metrics(results: dict[str, Any], task) -> dict[str, Any]:
    """The experiment's row of ``dvc metrics show``: the task, its primary test metric and value, the other headline
    test metrics in one string, and the train / val / test error of the bias/variance verdict. The keys are the same
    for every task, so the table stays a few columns wide."""
    bv = results["bias_variance"]
    others = ", ".join(f"{m}={results['test'][m]:.4g}" for m in task.summary if m != task.primary)
    return {
        "task": task.name,
        "primary": f"test_{task.primary}",
        "value": results["test"][task.primary],
        "headline": others,
        "train_error": bv["train_error"],
        "val_error": bv["val_error"],
        "test_error": bv["test_error"],
        "verdict": bv["verdict"],
    }


def bias_variance_diagnosis(exp: ExperimentConfig, task, results: dict[str, Any]) -> Diagnosis:
    """The bias/variance verdict of ``evaluate``: the task's error (:meth:`pipelines.tasks.base.Task.error`) on
    ``results["train"]``, ``["val"]`` and ``["test"]`` (each split's metrics) against the experiment's
    ``bias_variance.reference_error`` and ``bias_variance.tolerance`` from ``params.yaml``. Pure: no model, no files.
    """
    bv = exp.bias_variance
    return verdict(
        task.error(results["train"]),
        task.error(results["val"]),
        task.error(results["test"]),
        bv.reference_error,
        bv.tolerance,
    )


def evaluate(name: str, params: Params) -> dict[str, Any]:
    """Evaluate experiment ``name``; returns the dict written to ``metrics/evaluate/<name>.json``."""
    import mlflow

    from pipelines import plots
    from pipelines.data.prepared import PREPARED_ROOT, load_prepared
    from pipelines.tasks.base import Evaluation
    from pipelines.tracking import check_tracking_server, ensure_experiment, read_run_link, tracking_uri
    from pipelines.training.inference import load_module, split_outputs

    exp = params.experiment(name)
    check_tracking_server(tracking_uri(params))  # before any work: an unreachable server is one clear error
    module, _ = load_module(name, exp)
    task = module.task
    data = load_prepared(PREPARED_ROOT / exp.dataset)  # the un-augmented train split: the error the model fits
    splits = split_outputs(module.network, data)
    results: dict[str, Any] = {
        "experiment": name,
        "architecture": exp.architecture,
        "dataset": exp.dataset,
        "notes": exp.notes,
        "task": task.name,
    }
    for split, out in splits.items():
        results[split] = task.split_metrics(out.outputs, out.x, out.y)
    diagnosis = bias_variance_diagnosis(exp, task, results)
    # dvc metrics reads numbers and strings only: the remedies become one string.
    results["bias_variance"] = diagnosis.as_dict() | {
        "remedies": "; ".join(diagnosis.remedies) or "none",
        "unit": task.error_unit,
    }
    evaluation = Evaluation(name, data, splits)
    task.evaluate(evaluation)
    results["test"] |= evaluation.test_metrics

    mlflow.set_tracking_uri(tracking_uri(params))  # the registry resolves models:/ sources through the global URI
    client = mlflow.MlflowClient(tracking_uri(params))
    link = read_run_link(name)
    run_id = (
        link["run_id"]
        if link
        else client.create_run(
            ensure_experiment(params), tags={"experiment": name, "stage": "evaluate", "mlflow.runName": name}
        ).info.run_id
    )
    results["run_id"] = run_id
    figures = dict(evaluation.figures)
    history_path = PLOTS_ROOT / "history" / f"{name}.csv"
    if history_path.exists():
        with history_path.open() as file:
            rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(file)]
        figures["history.png"] = plots.history_figure(rows, task.headline)
    components = {
        "reference_error": diagnosis.reference_error,
        "avoidable_bias": diagnosis.avoidable_bias,
        "variance": diagnosis.variance,
        "test_gap": diagnosis.test_gap,
    }
    atomic_write_text(
        PLOTS_ROOT / "bias_variance" / f"{name}.csv",
        "component,value\n" + "".join(f"{k},{v:.6f}\n" for k, v in components.items()),
    )
    figures["bias_variance.png"] = plots.bias_variance_figure(
        components, f"Bias/variance: {diagnosis.verdict}", task.error_unit
    )
    with atomic_dir(PLOTS_ROOT / "evaluate" / name) as tmp:  # the task's own figures, for `dvc plots`
        for file_name, fig in evaluation.figures.items():
            (tmp / file_name).write_bytes(plots.png_bytes(fig))

    # test_<metric> for the test split; eval_<split>_<metric> for the best checkpoint on train and val.
    metrics = {f"test_{k}": v for k, v in results["test"].items() if isinstance(v, (int, float))}
    for split in ("train", "val"):
        metrics |= {f"eval_{split}_{k}": v for k, v in results[split].items() if isinstance(v, (int, float))}
    metrics |= {f"bias_variance.{k}": v for k, v in results["bias_variance"].items() if isinstance(v, (int, float))}
    timestamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), timestamp, 0) for k, v in metrics.items()])
    client.set_tag(run_id, "bias_variance.verdict", diagnosis.verdict)
    client.set_tag(run_id, "bias_variance.remedies", results["bias_variance"]["remedies"])
    for file_name, fig in figures.items():
        client.log_figure(run_id, fig, f"plots/{file_name}")
        plots.close(fig)
    for file_name, text in evaluation.tables.items():
        client.log_text(run_id, text, f"evaluation/{file_name}")
    client.log_dict(run_id, results | evaluation.details, "evaluation/metrics.json")
    registration = register_model(client, name, run_id, task, results)
    if registration is not None:
        results["registry"] = {
            "name": registration.name,
            "version": registration.version,
            "alias": registration.alias,
            "champion_version": registration.champion_version,
        }
        client.set_tag(run_id, "registered_model", f"{registration.model_uri} ({registration.alias})")
    client.set_terminated(run_id, "FINISHED")
    atomic_write_json(METRICS_ROOT / "evaluate" / f"{name}.json", results)
    atomic_write_json(METRICS_ROOT / f"{name}.json", summary_metrics(results, task))
    return results


def _log_results(name: str, results: dict[str, Any]) -> None:
    test = {k: round(v, 4) for k, v in results["test"].items() if isinstance(v, float)}
    log.info("%s test: %s; verdict: %s", name, test, results["bias_variance"]["verdict"])


def main(argv: list[str] | None = None) -> int:
    from pipelines.cli import experiment_stage

    return experiment_stage(
        argv,
        prog="python -m pipelines.stages.evaluate",
        description=__doc__.splitlines()[0],
        run=evaluate,
        done=_log_results,
    )


if __name__ == "__main__":
    sys.exit(main())
