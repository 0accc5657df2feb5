"""``evaluate`` stage: ``python -m pipelines.evaluate <experiment>``.

Loads the best checkpoint of ``train`` and computes, on the un-augmented train split and on the validation and test
splits: accuracy, precision, recall, F1, ROC-AUC (binary, or one-vs-rest macro) and the confusion matrix for
classification; MSE, RMSE, MAE, R² and adjusted R² for regression. It then gives a bias/variance verdict against
the experiment's reference error with the notes' remedies (:mod:`pipelines.bias_variance`).

Everything is logged to the same MLflow run as training (one run tells the whole story) and written to
``metrics/evaluate/<experiment>.json``; the confusion matrix and ROC curve go to ``plots/{confusion,roc}/<experiment>.csv`` for ``dvc plots``
and as PNG artifacts to MLflow.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
import time
from typing import Any

from pipelines.config import ConfigError, Params
from pipelines.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from pipelines.train import CHECKPOINT_ROOT, METRICS_ROOT, PLOTS_ROOT

log = logging.getLogger("deepnotes.evaluate")

ROC_POINTS = 101  # the ROC curve is resampled on this many evenly spaced false-positive rates


def predict(network, x, batch_size: int | None = None):
    """Network outputs for all of ``x`` (a tensor ``(N, ...)``), in eval mode without gradients, on the CPU, in
    batches of ``batch_size`` (default :data:`pipelines.data.EVAL_BATCH_SIZE`)."""
    import torch

    from pipelines.data import EVAL_BATCH_SIZE

    batch_size = batch_size or EVAL_BATCH_SIZE
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
    """The error the bias/variance verdict compares: 1 - accuracy, RMSE for regression, or 1 - accuracy at
    IoU >= 0.5 for localization (a wrong class or a box off by more than half its area both count).

    (Not stored under the key ``error``: ``dvc metrics`` reads that key as a failure to load the file.)
    """
    if task == "localization":
        return 1.0 - metrics["acc_iou50"]
    return metrics["rmse"] if task == "regression" else 1.0 - metrics["acc"]


def confusion_and_roc(outputs, targets, task: str, num_classes: int | None):
    """Confusion matrix ``(C, C)`` (rows actual) and ROC curves ``{label: (fpr, tpr, auc)}`` resampled on
    :data:`ROC_POINTS` false-positive rates (one-vs-rest per class for multiclass)."""
    import numpy as np
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


def pr_curves(outputs, targets, task: str, num_classes: int | None):
    """Precision-recall curves ``{label: (recall, precision, average_precision)}``, precision resampled on
    :data:`ROC_POINTS` evenly spaced recalls (one-vs-rest per class for multiclass)."""
    import numpy as np
    from torchmetrics.functional.classification import binary_average_precision, binary_precision_recall_curve

    from models.module import scores_to_predictions

    probs = scores_to_predictions(outputs, task)
    columns = ({"positive": (probs, targets)} if task == "binary"
               else {str(c): (probs[:, c], (targets == c).long()) for c in range(num_classes)})
    grid = np.linspace(0, 1, ROC_POINTS)
    curves = {}
    for label, (p, t) in columns.items():
        precision, recall, _ = binary_precision_recall_curve(p, t)
        order = np.argsort(recall.numpy(), kind="stable")  # recall falls along the thresholds: np.interp wants it rising
        curves[label] = (grid, np.interp(grid, recall.numpy()[order], precision.numpy()[order]),
                         float(binary_average_precision(p, t)))
    return curves


def bias_variance_components(diagnosis) -> dict[str, float]:
    """The bars of the bias/variance plot: reference error, avoidable bias, variance and the test gap."""
    return {"reference_error": diagnosis.reference_error, "avoidable_bias": diagnosis.avoidable_bias,
            "variance": diagnosis.variance, "test_gap": diagnosis.test_gap}


def classification_view(outputs, targets, task: str, num_classes: int | None):
    """``(outputs, targets, task)`` as a classifier sees them: for localization the class logits ``(N, C)`` and
    labels ``(N,)`` as a multiclass task (its confusion matrix, ROC and PR curves); others unchanged."""
    if task != "localization":
        return outputs, targets, task
    from models.boxes import split_outputs, split_targets

    return split_outputs(outputs, num_classes)[0], split_targets(targets)[0], "multiclass"


def prediction_figure(data, outputs, targets, task: str, examples: int = 32):
    """A figure of example test predictions: an image grid (misclassified in red; localization draws the true box
    in green and the predicted one in orange), text reviews or table rows with their predicted probability, or
    predicted against actual values for regression."""
    import numpy as np

    from pipelines import plots
    from pipelines.prepared import PREPARED_ROOT

    meta = data.meta
    if task == "regression":
        y, p = targets.numpy(), outputs.numpy()
        fig, ax = plots.plt.subplots(figsize=(5, 5))
        ax.scatter(y, p, s=6, alpha=0.5)
        low, high = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
        ax.set(xlabel="actual", ylabel="predicted", title="Test predictions against actual values")
        fig.tight_layout()
        return fig
    boxes = None
    if task == "localization":
        from models.boxes import split_outputs, split_targets

        num_classes = meta["num_classes"]
        boxes = list(zip(split_targets(targets)[1].tolist(), split_outputs(outputs, num_classes)[1].tolist()))
        outputs, targets, task = classification_view(outputs, targets, task, num_classes)
    classes = meta.get("classes") or [str(i) for i in range(int(outputs.shape[-1]))]
    if task == "binary":
        prob = outputs.sigmoid().numpy()
        predicted = (prob > 0.5).astype(int)
    else:
        prob = outputs.softmax(-1).max(-1).values.numpy()
        predicted = outputs.argmax(-1).numpy()
    actual = targets.numpy().astype(int)
    wrong = predicted != actual
    # Every misclassified sample among the first few hundred, up to half the grid, then correct ones: in test order.
    window = np.arange(min(len(actual), 20 * examples))
    chosen = np.sort(np.concatenate([window[wrong[window]][: examples // 2],
                                     window[~wrong[window]][: examples - min(examples // 2, int(wrong[window].sum()))]]))
    label = lambda i: classes[int(i)]  # noqa: E731
    if meta["modality"] == "image":
        from pipelines.prepared import to_unit_range

        pixels = np.clip(to_unit_range(np.asarray(data.x["test"][chosen]), meta), 0.0, 1.0)  # undo standardisation
        return plots.image_grid_figure(pixels, [label(a) for a in actual[chosen]],
                                       [label(p) for p in predicted[chosen]], wrong[chosen].tolist(),
                                       boxes=None if boxes is None else [boxes[i] for i in chosen])
    chosen = chosen[:16]
    if meta["modality"] == "text":
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(PREPARED_ROOT / meta["dataset"] / "tokenizer.json"))
        texts = [tokenizer.decode([int(t) for t in data.x["test"][i] if t != 0]) for i in chosen]
    else:
        names = meta.get("feature_names") or [f"x{j}" for j in range(data.x["test"].shape[1])]
        texts = [", ".join(f"{n}={v:.2f}" for n, v in zip(names, data.x["test"][i])) for i in chosen]
    lines = [f"{label(predicted[i]):>9} p={prob[i]:.2f} (actual {label(actual[i])}) | {text[:110]}"
             for i, text in zip(chosen, texts)]
    return plots.examples_figure(lines, wrong[chosen].tolist())


def register_model(client, name: str, run_id: str, task: str, results: dict[str, Any]):
    """Register the run's logged model as a new version of ``deepnotes-<name>`` and move the ``champion`` /
    ``challenger`` aliases by the primary test metric (:mod:`pipelines.model_registry`). Returns the
    :class:`~pipelines.model_registry.RegistrationResult`, or ``None`` when the run logged no MLflow model."""
    from pipelines.model_registry import primary_metric, register, registered_name

    model_uri = client.get_run(run_id).data.tags.get("model_uri")
    if not model_uri:
        return None
    metric, greater_is_better = primary_metric(task)
    return register(client, name=registered_name(name), model_uri=model_uri, run_id=run_id, metric=metric,
                    value=results["test"][metric.removeprefix("test_")], greater_is_better=greater_is_better,
                    tags={"experiment": name})


def _csv(header: list[str], rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def evaluate(name: str, params: Params) -> dict[str, Any]:
    """Evaluate experiment ``name``; returns the dict written to ``metrics/evaluate/<name>.json``."""
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
    task = meta["task"]
    num_classes = meta.get("num_classes") if task in ("multiclass", "localization") else None
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

    mlflow.set_tracking_uri(tracking_uri(params))  # the registry resolves models:/ sources through the global URI
    client = mlflow.MlflowClient(tracking_uri(params))
    run_id = run_info["run_id"]
    figures = {}
    history_path = PLOTS_ROOT / "history" / f"{name}.csv"
    if history_path.exists():
        rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(history_path.open())]
        figures["history.png"] = plots.history_figure(rows, "acc" if task != "regression" else "mse")
    if task != "regression":
        test_view = classification_view(*outputs["test"], task, num_classes)  # localization: its class part
        matrix, curves = confusion_and_roc(*test_view, num_classes)
        classes = meta.get("classes") or [str(i) for i in range(len(matrix))]
        confusion_matrix = matrix.tolist()  # logged to MLflow; dvc gets it as plots/confusion/<name>.csv
        predicted = (test_view[0] > 0).long() if task == "binary" else test_view[0].argmax(-1)
        atomic_write_text(PLOTS_ROOT / "confusion" / f"{name}.csv", _csv(
            ["actual", "predicted"],
            ((classes[a], classes[p]) for a, p in zip(test_view[1].tolist(), predicted.tolist()))))
        atomic_write_text(PLOTS_ROOT / "roc" / f"{name}.csv", _csv(
            ["class", "fpr", "tpr"],
            ((label, f"{f:.4f}", f"{t:.4f}") for label, (fpr, tpr, _) in curves.items() for f, t in zip(fpr, tpr))))
        pr = pr_curves(*test_view, num_classes)
        atomic_write_text(PLOTS_ROOT / "pr" / f"{name}.csv", _csv(
            ["class", "recall", "precision"],
            ((label, f"{r:.4f}", f"{p:.4f}") for label, (rec, prec, _) in pr.items() for r, p in zip(rec, prec))))
        results["test"]["average_precision"] = sum(ap for *_, ap in pr.values()) / len(pr)
        figures["confusion_matrix.png"] = plots.confusion_figure(matrix, classes)
        figures["roc.png"] = plots.roc_figure(dict(list(curves.items())[:10]))
        figures["pr.png"] = plots.pr_figure(dict(list(pr.items())[:10]))
    else:  # regression has no confusion matrix, ROC or PR curve; keep the declared outputs present and explicit
        atomic_write_text(PLOTS_ROOT / "confusion" / f"{name}.csv", "actual,predicted\n")
        atomic_write_text(PLOTS_ROOT / "roc" / f"{name}.csv", "class,fpr,tpr\n")
        atomic_write_text(PLOTS_ROOT / "pr" / f"{name}.csv", "class,recall,precision\n")
    components = bias_variance_components(diagnosis)
    atomic_write_text(PLOTS_ROOT / "bias_variance" / f"{name}.csv",
                      _csv(["component", "value"], ((k, f"{v:.6f}") for k, v in components.items())))
    unit = {"regression": "RMSE", "localization": "1 - accuracy at IoU >= 0.5"}.get(task, "classification error")
    figures["bias_variance.png"] = plots.bias_variance_figure(
        components, f"Bias/variance: {diagnosis.verdict}", unit)
    figures["predictions.png"] = prediction_figure(data, *outputs["test"], task)
    image_path = PLOTS_ROOT / "predictions" / f"{name}.png"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(image_path, plots.png_bytes(figures["predictions.png"]))

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
    registration = register_model(client, name, run_id, task, results)
    if registration is not None:
        results["registry"] = {"name": registration.name, "version": registration.version,
                               "alias": registration.alias, "champion_version": registration.champion_version}
        client.set_tag(run_id, "registered_model", f"{registration.model_uri} ({registration.alias})")
    client.set_terminated(run_id, "FINISHED")
    atomic_write_json(METRICS_ROOT / "evaluate" / f"{name}.json", results)
    return results


def _log_results(name: str, results: dict[str, Any]) -> None:
    test = {k: round(v, 4) for k, v in results["test"].items() if isinstance(v, float)}
    log.info("%s test: %s; verdict: %s", name, test, results["bias_variance"]["verdict"])


def main(argv: list[str] | None = None) -> int:
    from pipelines.cli import experiment_stage

    return experiment_stage(argv, prog="python -m pipelines.evaluate", description=__doc__.splitlines()[0],
                            run=evaluate, done=_log_results)


if __name__ == "__main__":
    sys.exit(main())
