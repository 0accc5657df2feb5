"""``evaluate`` stage: ``python -m pipelines.evaluate <experiment>``.

Loads the best checkpoint of ``train`` and computes, on the un-augmented train split and on the validation and test
splits: accuracy, precision, recall, F1, ROC-AUC (binary, or one-vs-rest macro) and the confusion matrix for
classification; MSE, RMSE, MAE, R² and adjusted R² for regression. It then gives a bias/variance verdict against
the experiment's reference error with the notes' remedies (:mod:`pipelines.bias_variance`).

Everything is logged to the same MLflow run as training (one run tells the whole story) and written to
``metrics/<experiment>.json``; the confusion matrix and ROC curve go to ``plots/{confusion,roc}/<experiment>.csv`` for ``dvc plots``
and as PNG artifacts to MLflow.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from pipelines.config import ConfigError, Params, load_params
from pipelines.io import atomic_write_json, atomic_write_text
from pipelines.train import CHECKPOINT_ROOT, METRICS_ROOT, PLOTS_ROOT

log = logging.getLogger("deepnotes.evaluate")

ROC_POINTS = 101  # the ROC curve is resampled on this many evenly spaced false-positive rates


def predict(network, x, batch_size: int = 2048):
    """Network outputs for all of ``x`` (a tensor ``(N, ...)``), in eval mode without gradients, on the CPU."""
    import torch

    network.eval()
    with torch.inference_mode():
        return torch.cat([network(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).float()


def split_metrics(outputs, targets, task: str, num_classes: int | None, num_features: int) -> dict[str, float]:
    """The task's metrics for one split (``outputs``: ``(N,)`` or ``(N, C)`` network outputs; ``targets``: ``(N,)``).

    Regression adds the adjusted R² ``1 - (1 - R²)(n - 1)/(n - p - 1)`` with ``p = num_features``.
    """
    from models.module import build_metrics, scores_to_predictions

    metrics = build_metrics(task, num_classes)
    values = {k: float(v) for k, v in metrics(scores_to_predictions(outputs, task), targets).items()}
    if task == "regression":
        n, p = len(targets), num_features
        values["adjusted_r2"] = 1 - (1 - values["r2"]) * (n - 1) / (n - p - 1) if n - p - 1 > 0 else float("nan")
    return values


def error_of(metrics: dict[str, float], task: str) -> float:
    """The error the bias/variance verdict compares: 1 - accuracy, or RMSE for regression.

    (Not stored under the key ``error``: ``dvc metrics`` reads that key as a failure to load the file.)
    """
    return metrics["rmse"] if task == "regression" else 1.0 - metrics["acc"]


def confusion_and_roc(outputs, targets, task: str, num_classes: int | None):
    """Confusion matrix ``(C, C)`` (rows actual) and ROC curves ``{label: (fpr, tpr, auc)}`` resampled on
    :data:`ROC_POINTS` false-positive rates (one-vs-rest per class for multiclass)."""
    import numpy as np
    import torch
    from torchmetrics.functional.classification import binary_auroc, binary_confusion_matrix, binary_roc
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    from models.module import scores_to_predictions

    probs = scores_to_predictions(outputs, task)
    grid = np.linspace(0, 1, ROC_POINTS)
    curves = {}
    if task == "binary":
        matrix = binary_confusion_matrix(probs, targets)
        columns = {"positive": (probs, targets)}
    else:
        matrix = multiclass_confusion_matrix(probs, targets, num_classes)
        columns = {str(c): (probs[:, c], (targets == c).long()) for c in range(num_classes)}
    for label, (p, t) in columns.items():
        fpr, tpr, _ = binary_roc(p, t)
        curves[label] = (grid, np.interp(grid, fpr.numpy(), tpr.numpy()), float(binary_auroc(p, t)))
    return matrix.numpy(), curves


def _csv(header: list[str], rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def evaluate(name: str, params: Params) -> dict[str, Any]:
    """Evaluate experiment ``name``; returns the dict written to ``metrics/<name>.json``."""
    import mlflow
    import torch

    from models.module import DeepNotesModule
    from pipelines import plots
    from pipelines.bias_variance import diagnose
    from pipelines.data import to_tensor
    from pipelines.prepared import PREPARED_ROOT, load_prepared
    from pipelines.tracking import tracking_uri

    exp = params.experiment(name)
    ckpt_dir = CHECKPOINT_ROOT / name
    try:
        run_info = json.loads((ckpt_dir / "run.json").read_text())
    except FileNotFoundError:
        raise ConfigError(f"{ckpt_dir / 'run.json'}: missing; run `dvc repro train@{name}` first") from None
    module = DeepNotesModule.load_from_checkpoint(ckpt_dir / run_info["best_checkpoint"], map_location="cpu",
                                                  weights_only=True)
    data = load_prepared(PREPARED_ROOT / exp.dataset)  # the un-augmented train split: the error the model fits
    meta = data.meta
    task, num_classes = meta["task"], meta.get("num_classes") if meta["task"] == "multiclass" else None
    num_features = int(torch.tensor(meta["input_shape"]).prod())

    results: dict[str, Any] = {"experiment": name, "architecture": exp.architecture, "dataset": exp.dataset,
                               "notes": exp.notes, "task": task, "run_id": run_info["run_id"]}
    outputs = {}
    for split in ("train", "val", "test"):
        x, y = to_tensor(data.x[split]), to_tensor(data.y[split])
        outputs[split] = (predict(module.network, x), y)
        results[split] = split_metrics(*outputs[split], task, num_classes, num_features)
    bv = exp.bias_variance
    diagnosis = diagnose(*(error_of(results[split], task) for split in ("train", "val", "test")),
                         bv.reference_error, bv.tolerance)
    # dvc metrics reads numbers and strings only: the remedies become one string.
    results["bias_variance"] = diagnosis.as_dict() | {"remedies": "; ".join(diagnosis.remedies) or "none"}

    client = mlflow.MlflowClient(tracking_uri(params))
    run_id = run_info["run_id"]
    figures = {}
    history_path = PLOTS_ROOT / "history" / f"{name}.csv"
    if history_path.exists():
        rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(history_path.open())]
        figures["history.png"] = plots.history_figure(rows, "acc" if task != "regression" else "mse")
    if task != "regression":
        matrix, curves = confusion_and_roc(*outputs["test"], task, num_classes)
        classes = meta.get("classes") or [str(i) for i in range(len(matrix))]
        confusion_matrix = matrix.tolist()  # logged to MLflow; dvc gets it as plots/confusion/<name>.csv
        predicted = (outputs["test"][0] > 0).long() if task == "binary" else outputs["test"][0].argmax(-1)
        atomic_write_text(PLOTS_ROOT / "confusion" / f"{name}.csv", _csv(
            ["actual", "predicted"],
            ((classes[a], classes[p]) for a, p in zip(outputs["test"][1].tolist(), predicted.tolist()))))
        atomic_write_text(PLOTS_ROOT / "roc" / f"{name}.csv", _csv(
            ["class", "fpr", "tpr"],
            ((label, f"{f:.4f}", f"{t:.4f}") for label, (fpr, tpr, _) in curves.items() for f, t in zip(fpr, tpr))))
        figures["confusion_matrix.png"] = plots.confusion_figure(matrix, classes)
        figures["roc.png"] = plots.roc_figure(curves if len(curves) <= 10 else dict(list(curves.items())[:10]))
    else:  # regression has no confusion matrix or ROC; keep the declared outputs present and explicit
        atomic_write_text(PLOTS_ROOT / "confusion" / f"{name}.csv", "actual,predicted\n")
        atomic_write_text(PLOTS_ROOT / "roc" / f"{name}.csv", "class,fpr,tpr\n")

    # test_<metric> for the test split; eval_<split>_<metric> for the best checkpoint on train and val.
    metrics = {f"test_{k}": v for k, v in results["test"].items() if isinstance(v, (int, float))}
    for split in ("train", "val"):
        metrics |= {f"eval_{split}_{k}": v for k, v in results[split].items() if isinstance(v, (int, float))}
    metrics |= {f"bias_variance.{k}": v for k, v in results["bias_variance"].items() if isinstance(v, (int, float))}
    timestamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), timestamp, 0) for k, v in metrics.items()])
    client.set_tag(run_id, "bias_variance.verdict", diagnosis.verdict)
    client.set_tag(run_id, "bias_variance.remedies", results["bias_variance"]["remedies"])
    for file, fig in figures.items():
        client.log_figure(run_id, fig, f"plots/{file}")
        plots.close(fig)
    client.log_dict(run_id, results | ({"test_confusion_matrix": confusion_matrix} if task != "regression" else {}),
                    "evaluation/metrics.json")
    client.set_terminated(run_id, "FINISHED")
    atomic_write_json(METRICS_ROOT / f"{name}.json", results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="experiment name under `experiments:` in params.yaml")
    parser.add_argument("--params", type=Path, default=None, help="params file (default: <repo>/params.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = load_params(args.params)
        results = evaluate(args.experiment, params)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    test = {k: round(v, 4) for k, v in results["test"].items() if isinstance(v, float)}
    log.info("%s test: %s; verdict: %s", args.experiment, test, results["bias_variance"]["verdict"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
