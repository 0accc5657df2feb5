"""What one tiny ``dvc repro`` leaves behind beyond metrics: gradient diagnostics and system metrics in every
training run, the opt-in studies of ``diagnose``, every plot (MLflow PNGs and DVC plot files), the model registry
with its aliases, and the leaderboard of ``report``. Shares the session's tiny repro (``tests/conftest.py``).
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines.tasks import get_task
from pipelines.tasks.classification import ClassificationTask

pytestmark = pytest.mark.integration

#: PNG artifacts every run has, and those of classification runs only (the task's own evaluation figures).
PLOTS = {"history.png", "grad_flow.png", "bias_variance.png", "predictions.png"}
CLASSIFICATION_PLOTS = {"confusion_matrix.png", "roc.png", "pr.png"}


def _classification(run) -> bool:
    return issubclass(get_task(run.data.tags["task"]), ClassificationTask)


@pytest.fixture(scope="module")
def store(tiny_repo):
    """``(repo, params, client, {experiment: run})`` over the tiny repro's MLflow store."""
    import mlflow

    repo, _, _ = tiny_repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("deepnotes")
    runs = {r.data.tags["experiment"]: r for r in client.search_runs([experiment.experiment_id])}
    return repo, params, client, runs


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_every_run_has_gradient_and_system_metrics_and_plots(store):
    repo, params, client, runs = store
    experiments = params["experiments"] | params["transfer"]
    assert sorted(runs) == sorted(experiments)
    for name, run in runs.items():
        metrics, tags = run.data.metrics, run.data.tags
        assert {"grad_norm_total", "grad_ratio_first_last", "gradients.vanishing", "gradients.exploding"} <= set(
            metrics
        ), name
        assert any(k.startswith("grad_norm/") for k in metrics) and any(k.startswith("weight_norm/") for k in metrics)
        assert tags["gradient_flags"] in {"ok", "vanishing", "exploding", "vanishing+exploding"}, name
        assert any(k.startswith("system/cpu_utilization") for k in metrics), (name, sorted(metrics))
        expected = PLOTS | (CLASSIFICATION_PLOTS if _classification(run) else set())
        logged = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
        assert expected <= logged, (name, sorted(expected - logged))
        # dvc plots: the task's figures only, so no empty confusion matrix for a regression or a reconstruction
        drawn = {p.name for p in (repo / "plots" / "evaluate" / name).iterdir() if p.suffix == ".png"}
        if tags["architecture"] == "seq2seq_attention":  # the attention heatmaps of the first 6 test sentences
            drawn -= {f"attention_{k}.png" for k in range(1, 7)}
        if tags["task"] == "embedding":  # analogy accuracy by section, and the PCA of frequent words
            drawn -= {"analogies.png", "pca.png"}
        assert drawn == {"predictions.png"} | (CLASSIFICATION_PLOTS if _classification(run) else set()), (name, drawn)
        layers = _rows(repo / "plots" / "grad_flow" / f"{name}.csv")
        assert layers and [int(r["order"]) for r in layers] == list(range(len(layers)))
        assert (repo / "plots" / "evaluate" / name / "predictions.png").read_bytes()[:4] == b"\x89PNG"
        assert {r["component"] for r in _rows(repo / "plots" / "bias_variance" / f"{name}.csv")} == {
            "reference_error",
            "avoidable_bias",
            "variance",
            "test_gap",
        }
    relu_mlp = runs["mlp_churn"].data.metrics
    assert 0.0 <= relu_mlp["dead_relu_fraction"] <= 1.0
    history = client.get_metric_history(runs["mlp_churn"].info.run_id, "grad_norm_total")
    assert len(history) >= 2 and len({m.step for m in history}) == len(history)  # sampled at distinct steps


#: How far a run's Duration (``end_time - start_time``) may be from its ``train_seconds + evaluate_seconds``: both
#: ends are set from those metrics, so only their rounding to milliseconds remains; a run whose end moved to the time
#: of its evaluation (the bug this checks) is off by the minutes DVC spends on the other experiments' stages.
DURATION_MARGIN_S = 1.0
#: How far a ``train_seconds`` value logged at an epoch's end may be from its timestamp's distance to the run's start:
#: the two clocks are read a few milliseconds apart; a second allows for a loaded machine.
CLOCK_MARGIN_MS = 1000


def test_every_run_records_its_own_duration_datasets_and_source(store):
    repo, params, client, runs = store
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    for name, run in runs.items():
        info, metrics, tags = run.info, run.data.metrics, run.data.tags
        assert info.status == "FINISHED", name
        work = metrics["train_seconds"] + metrics["evaluate_seconds"]
        assert metrics["evaluate_seconds"] > 0 and abs((info.end_time - info.start_time) / 1000 - work) <= (
            DURATION_MARGIN_S
        ), (name, info.start_time, info.end_time, work)
        # the start is the train process's: each epoch's train_seconds was logged that long after it
        epochs = client.get_metric_history(info.run_id, "train_seconds")
        assert len(epochs) >= 2, name
        for point in epochs:
            assert abs(point.timestamp - info.start_time - 1000 * point.value) <= CLOCK_MARGIN_MS, (name, point)
        # the datasets: one per split, the DVC hash of the prepared data as digest
        dataset = tags["dataset"]
        datasets = {
            {t.key: t.value for t in di.tags}["mlflow.data.context"]: di.dataset for di in run.inputs.dataset_inputs
        }
        assert {c: d.name for c, d in datasets.items()} == {
            "training": f"{dataset}/train",
            "validation": f"{dataset}/val",
            "testing": f"{dataset}/test",
        }, name
        prepared = lock[f"prepare@{dataset}"]["outs"][0]["md5"].removesuffix(".dir")
        assert datasets["validation"].digest == datasets["testing"].digest == prepared, name
        assert datasets["training"].digest in {prepared, tags["data_hash"]}, name  # data_hash: augmented copies
        assert all(d.schema and d.source for d in datasets.values()), name
        # the source: the stage's entry point, the commit, the DVC stages that logged into the run
        group = "finetune" if name in params["transfer"] else None
        assert tags["mlflow.source.name"] == "pipelines/stages/train.py" and tags["mlflow.source.type"] == "LOCAL"
        assert tags["mlflow.source.git.commit"] == head, name
        assert tags["dvc.stage"] == f"{group or 'train'}@{name}", name
        assert f"{group or 'evaluate'}@{name}" in tags["dvc.stages"].split(), name
    assert runs["resnet20_cifar10_5to9_frozen"].data.tags["notes"].startswith("notes 001, Transfer learning")
    assert runs["localizer_mnist"].data.tags["notes"].startswith("notes 000, Image or Object localization")


def test_diagnose_runs_the_opt_in_studies(store):
    repo, params, client, runs = store
    churn = params["experiments"]["mlp_churn"]["diagnostics"]
    curve = _rows(repo / "plots" / "diagnostics" / "learning_curve" / "mlp_churn.csv")
    assert [float(r["fraction"]) for r in curve] == sorted(churn["learning_curve"]["fractions"])  # one point each
    summary = json.loads((repo / "metrics" / "diagnose" / "mlp_churn.json").read_text())
    assert summary["learning_curve"]["points"] == len(curve) and summary["learning_curve"]["note"]
    assert (
        summary["seeds"]["count"]
        == churn["seeds"]["count"]
        == len(_rows(repo / "plots" / "diagnostics" / "seeds" / "mlp_churn.csv"))
    )
    metrics = runs["mlp_churn"].data.metrics
    assert "diagnose.seeds.test_error_std" in metrics and "diagnose.learning_curve.more_data_helps" in metrics
    logged = {Path(a.path).name for a in client.list_artifacts(runs["mlp_churn"].info.run_id, "plots")}
    assert {"learning_curve.png", "seeds.png"} <= logged
    boot = json.loads((repo / "metrics" / "diagnose" / "mlp_melbourne.json").read_text())["bootstrap"]
    assert boot["bias_squared"] + boot["variance"] + boot["noise"] == pytest.approx(boot["expected_loss"])
    off = json.loads((repo / "metrics" / "diagnose" / "lenet5_mnist.json").read_text())
    assert off["studies"] == "none"
    assert not (repo / "plots" / "diagnostics" / "learning_curve" / "lenet5_mnist.csv").exists()  # no empty chart
    assert (repo / "plots" / "diagnostics" / "bootstrap" / "mlp_melbourne.csv").is_file()


def test_every_experiment_is_registered_with_a_champion(store):
    repo, params, client, runs = store
    for name, run in runs.items():
        version = client.get_model_version_by_alias(f"deepnotes-{name}", "champion")
        assert version.run_id == run.info.run_id, name  # the only version so far
        registry = json.loads((repo / "metrics" / "evaluate" / f"{name}.json").read_text())["registry"]
        assert registry == {
            "name": f"deepnotes-{name}",
            "version": int(version.version),
            "alias": "champion",
            "champion_version": int(version.version),
        }


def test_report_lists_every_experiment(store):
    repo, params, _, runs = store
    report = (repo / "reports" / "summary.md").read_text()
    for name, run in runs.items():
        line = next(line for line in report.splitlines() if f"`{name}`" in line and "|" in line)
        assert run.info.run_id in line and f"deepnotes-{name} v" in line, line
    assert "## regression" in report and "test_rmse" in report and "learning curve" in report
