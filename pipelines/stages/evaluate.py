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
- ``plots/bias_variance/<experiment>.csv`` and ``plots/evaluate/<experiment>/``: the task's figures as PNG, and the
  points of a figure as CSV where the task gives them (``Evaluation.plot_data``: a forecast's series).

The training run was ``FINISHED`` by ``train``; evaluate logs into it through the client API without reopening it
(its status never goes back to ``RUNNING``). It logs ``evaluate_seconds``, this process's wall time from its start
to the end of its work, and sets the run's ``end_time`` to ``start_time + train_seconds + evaluate_seconds``
(:func:`pipelines.tracking.record_work`, an explicit end time, never "now"): DVC runs every ``train`` before any
``evaluate``, and a run that ended when its evaluation did would show hours as the Duration of a 3-second training.
A rerun of evaluate replaces ``evaluate_seconds`` (the end moves back accordingly). The run's ``dvc.stages`` tag gains
``evaluate@<experiment>``. Without a run link (``mlflow/runs/<experiment>.json``: checkpoints pulled from a DVC
remote), evaluate creates its own run, started at this process's start, with the source tags and the datasets of
the splits it reads (:func:`pipelines.tracking.log_datasets`), and its Duration is ``evaluate_seconds``.
"""

from __future__ import annotations

import time

_PROCESS_START = time.time()

import csv  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

from pipelines.config import ExperimentConfig, Params  # noqa: E402
from pipelines.diagnostics.bias_variance import Diagnosis, verdict  # noqa: E402
from pipelines.io import atomic_dir, atomic_write_json, atomic_write_text  # noqa: E402
from pipelines.paths import METRICS_ROOT, PLOTS_ROOT  # noqa: E402

log = logging.getLogger("deepnotes.evaluate")


#: The run tags each registered version copies (``data_hash``: the DVC hash of the prepared data it trained on).
VERSION_TAGS = ("data_hash", "git_commit", "weights_sha256")


def register_model(client, name: str, run_id: str, task, results: dict[str, Any]):
    """Register the run's logged model as a version of ``deepnotes-<name>`` when its weights are new, and move the
    ``champion`` / ``challenger`` aliases by the task's primary test metric (:mod:`pipelines.registered_models`).
    The version is tagged with the experiment and the run's :data:`VERSION_TAGS`. Returns the
    :class:`~pipelines.registered_models.RegistrationResult` (``created=False``: a version with these weights
    existed), or ``None`` when the run logged no MLflow model."""
    from pipelines.registered_models import register, registered_name

    tags = client.get_run(run_id).data.tags
    model_uri = tags.get("model_uri")
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
        tags={"experiment": name} | {k: tags[k] for k in VERSION_TAGS if tags.get(k)},
        weights_sha256=tags.get("weights_sha256"),
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
    from pipelines.tracking import (
        add_stage,
        check_tracking_server,
        data_version,
        dataset_source,
        dvc_stage,
        ensure_experiment,
        entry_point,
        git_commit,
        log_datasets,
        read_run_link,
        record_work,
        source_tags,
        tracking_uri,
    )
    from pipelines.training.inference import load_module, split_outputs

    exp = params.experiment(name)
    check_tracking_server(tracking_uri(params))  # before any work: an unreachable server is one clear error
    module, _ = load_module(name, exp)
    task = module.task
    data = load_prepared(PREPARED_ROOT / exp.dataset)  # the un-augmented train split: the error the model fits
    splits = split_outputs(module.network, data, task=task)
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
    evaluation = Evaluation(name, data, splits, network=module.network)
    task.evaluate(evaluation)
    results["test"] |= evaluation.test_metrics
    if evaluation.report:  # what the task shows in the report (Task.report_section)
        results["report"] = evaluation.report

    mlflow.set_tracking_uri(tracking_uri(params))  # the registry resolves models:/ sources through the global URI
    client = mlflow.MlflowClient(tracking_uri(params))
    link = read_run_link(name)
    stage = dvc_stage(params, name, "evaluate")
    if link:  # the training run, finished: logged into as it is (module docstring)
        run = client.get_run(link["run_id"])
        add_stage(client, run.info.run_id, stage, run.data.tags)
    else:  # no training run in this checkout: a run of evaluate's own, from this process's start
        versions = data_version(exp.dataset)
        tags = {
            "experiment": name,
            "architecture": exp.architecture,
            "dataset": exp.dataset,
            "task": exp.task,
            "notes": exp.notes,
            "profile": params.profile,
            "git_commit": git_commit(),
            "data_hash": versions["data_hash"],
            "stage": "evaluate",
            "mlflow.runName": name,
        } | source_tags(entry_point(__file__), stage)
        run = client.create_run(ensure_experiment(params), start_time=int(_PROCESS_START * 1000), tags=tags)
        declared = params.datasets[exp.dataset].source if exp.dataset in params.datasets else None
        log_datasets(client, run.info.run_id, data, versions, dataset_source(exp.dataset, data.meta, declared))
    run_id = run.info.run_id
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
        for file_name, text in evaluation.plot_data.items():  # a figure's points, for `dvc plots` templates
            (tmp / file_name).write_text(text)

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
    for file_name, text in evaluation.plot_data.items():
        client.log_text(run_id, text, f"plots/{file_name}")
    client.log_dict(run_id, results | evaluation.details, "evaluation/metrics.json")
    registration = register_model(client, name, run_id, task, results)
    if registration is not None:
        results["registry"] = {
            "name": registration.name,
            "version": registration.version,
            "alias": registration.alias,
            "champion_version": registration.champion_version,
        }  # the same on a rerun with the same weights (no new version): downstream stages stay cached
        if not registration.created:
            log.info("%s: weights unchanged (%s), no new version", name, registration.model_uri)
        client.set_tag(run_id, "registered_model", f"{registration.model_uri} ({registration.alias})")
    atomic_write_json(METRICS_ROOT / "evaluate" / f"{name}.json", results)
    atomic_write_json(METRICS_ROOT / f"{name}.json", summary_metrics(results, task))
    # The end of its work: the run's end moves by these seconds; its status stays (a run of its own: FINISHED now).
    record_work(
        client,
        run_id,
        "evaluate_seconds",
        time.time() - _PROCESS_START,
        start_time=run.info.start_time,
        earlier=run.data.metrics,
        status="FINISHED" if run.info.status == "RUNNING" else run.info.status,
    )
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
