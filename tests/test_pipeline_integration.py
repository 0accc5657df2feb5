"""End to end: ``dvc repro`` of the tiny profile in a temporary copy of the repo, on real data.

Checks that the MLflow store then holds one run per experiment with metrics and a model artifact, that the metrics
JSON files exist, that a second ``dvc repro`` is a no-op, and that a real ``mlflow server`` on loopback answers a
REST search with those runs.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import yaml

from pipelines.config.loading import load_params
from pipelines.diagnostics.bias_variance import verdict
from pipelines.tasks import get_task
from tests.conftest import BIN, _run

pytestmark = pytest.mark.integration


def _experiments(repo: Path) -> list[str]:
    """Every experiment's name: those under ``experiments`` and the fine-tuned ones under ``transfer``."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    return sorted(params["experiments"] | params["transfer"])


def test_repro_tracks_every_experiment(tiny_repo):
    import mlflow

    repo, _, _ = tiny_repo
    experiments = _experiments(repo)
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow' / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("deepnotes")
    assert exp is not None and exp.artifact_location.startswith("file://")
    assert str(repo / "mlflow" / "artifacts") in exp.artifact_location
    runs = client.search_runs([exp.experiment_id])
    tiny_params = load_params(repo / "params.yaml", profile="tiny")  # as the stages ran it (no DEEPNOTES_PROFILE)
    by_name = {r.data.tags["experiment"]: r for r in runs}
    assert sorted(by_name) == experiments and len(runs) == len(experiments)
    for name, run in by_name.items():
        assert run.info.status == "FINISHED", name
        metrics, tags, params = run.data.metrics, run.data.tags, run.data.params
        assert {"train_loss", "val_loss", "epoch_time"} <= set(metrics), (name, sorted(metrics))
        if tags["dataset"] == "melbourne_temp":  # regression: RMSE in degrees C
            assert tags["task"] == "regression" and metrics["test_rmse"] > 0 and "test_acc" not in metrics
        elif tags["dataset"] == "mnist_localization":  # class and box
            assert 0.0 <= metrics["test_acc_iou50"] <= metrics["test_acc"] <= 1.0
            assert 0.0 <= metrics["test_mean_iou"] <= 1.0
        elif tags["task"] == "forecasting":  # in the series' units, beside the baselines on the same windows
            assert metrics["test_rmse"] > 0 and metrics["test_mase"] > 0 and "test_acc" not in metrics
            assert {f"test_rmse_{b}" for b in ("persistence", "seasonal_naive", "linear_ar")} <= set(metrics)
        elif tags["task"] == "language_model":  # bits per character and perplexity (> 1: not every symbol sure)
            assert metrics["test_bits_per_char"] > 0 and metrics["test_perplexity"] > 1, name
        elif tags["task"] == "seq2seq":  # corpus BLEU and chrF (0-100) of beam and greedy test translations
            assert 0 <= metrics["test_bleu"] <= 100 and 0 <= metrics["test_chrf"] <= 100, name
            assert (
                "test_bleu_greedy" in metrics and 0 <= metrics["test_token_accuracy"] <= 1 and "test_acc" not in metrics
            )
        elif tags["task"] == "embedding":  # word vectors: analogies and WordSim-353, ours and gensim's on the same rows
            assert 0 <= metrics["test_analogy_accuracy"] <= 1 and 0 <= metrics["test_gensim_analogy_accuracy"] <= 1
            assert -1 <= metrics["test_wordsim_spearman"] <= 1 and metrics["test_gensim_seconds"] > 0, name
            assert 0 < metrics["test_ns_loss"] and "test_acc" not in metrics
        elif tags["architecture"] == "autoencoder":  # reconstruction of MNIST: PSNR in dB, per-pixel MSE
            assert tags["task"] == "reconstruction" and metrics["test_psnr"] > 0 and 0 < metrics["test_mse"] < 1
            assert "test_acc" not in metrics and "test_psnr_mean_image" in metrics
        else:
            assert 0.0 <= metrics["test_acc"] <= 1.0
        assert tags["architecture"] and tags["dataset"] and tags["notes"].startswith("notes ")
        assert tags["git_commit"] != "unknown" and len(tags["data_hash"]) == 16, name
        assert tags["version.torch"].startswith("2.13")
        assert params["seed"] == "42" and "optimizer.lr" in params and "trainer.max_epochs" in params
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"checkpoints", "plots"} <= artifacts, (name, artifacts)
        # every network is logged as the served pyfunc (raw input in), a LoggedModel linked to the run
        assert tags["model_format"] == "pyfunc", name
        models = mlflow.search_logged_models(
            experiment_ids=[exp.experiment_id],
            output_format="list",
            filter_string=f"source_run_id = '{run.info.run_id}'",
        )
        assert [m.model_uri for m in models] == [tags["model_uri"]], name
        assert models[0].tags["weights_sha256"] == tags["weights_sha256"], name
        plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        assert "plots/history.png" in plots and "plots/predictions.png" in plots  # the rest: test_pipeline_outputs
        train_json = json.loads((repo / "metrics" / "train" / f"{name}.json").read_text())
        eval_json = json.loads((repo / "metrics" / "evaluate" / f"{name}.json").read_text())
        assert train_json["run_id"] == eval_json["run_id"] == run.info.run_id
        # The verdict, recomputed from the file's own split metrics and the tiny repo's bias_variance params.
        exp_cfg = tiny_params.experiment(name)
        task = get_task(exp_cfg.task)(
            json.loads((repo / "data" / "prepared" / exp_cfg.dataset / "meta.json").read_text())
        )
        errors = [task.error(eval_json[split]) for split in ("train", "val", "test")]
        expected = verdict(*errors, exp_cfg.bias_variance.reference_error, exp_cfg.bias_variance.tolerance)
        assert eval_json["bias_variance"] == expected.as_dict() | {
            "remedies": "; ".join(expected.remedies) or "none",
            "unit": task.error_unit,
        }, name
        assert (repo / "plots" / "history" / f"{name}.csv").read_text().startswith("epoch,")


def test_second_repro_is_a_noop(tiny_repo):
    repo, env, _ = tiny_repo
    second = _run([str(BIN / "dvc"), "repro"], repo, env)
    assert "Running stage" not in second.stdout
    status = _run([str(BIN / "dvc"), "status", "dvc.yaml"], repo, env)
    assert "up to date" in status.stdout


def test_opt_in_tune_stage_runs_a_tracked_search(tiny_repo):
    """``dvc repro tuning/dvc.yaml:tune@mlp_churn`` runs a search on the pipeline's data: the child runs carry the
    data hash from dvc.lock, the tuned params land in params/tuned, and the stage is then up to date."""
    import mlflow

    repo, env, _ = tiny_repo
    tuned_before = (repo / "params" / "tuned" / "mlp_churn.yaml").read_text()
    out = _run([str(BIN / "dvc"), "repro", "tuning/dvc.yaml:tune@mlp_churn"], repo, env)
    assert "Running stage 'tuning/dvc.yaml:tune@mlp_churn'" in out.stdout
    summary = json.loads((repo / "metrics" / "tune" / "mlp_churn.json").read_text())
    assert summary["study_trials"] == 4 and summary["best_value"] is not None
    tuned = yaml.safe_load((repo / "params" / "tuned" / "mlp_churn.yaml").read_text())
    assert tuned["params"] and tuned["value"] == summary["best_value"] and tuned_before != str(tuned)
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("deepnotes-tune/mlp_churn-tiny")
    children = [r for r in client.search_runs([experiment.experiment_id]) if "trial_number" in r.data.tags]
    assert len(children) == 4 and all(len(r.data.tags["data_hash"]) == 16 for r in children)
    again = _run([str(BIN / "dvc"), "repro", "tuning/dvc.yaml:tune@mlp_churn"], repo, env)
    # the search is not rerun (resolve, upstream, does rerun: it reads params/tuned, and rewrites the same files)
    assert "Running stage 'tuning/dvc.yaml:tune@mlp_churn'" not in again.stdout, again.stdout
    # While use_tuned is false the finished search changes nothing train@mlp_churn runs: it stays up to date
    # (resolve reruns, in under a second, and writes the same params/resolved/train/mlp_churn.json).
    _run([str(BIN / "dvc"), "repro", "resolve"], repo, env)
    status = _run([str(BIN / "dvc"), "status", "train@mlp_churn", "evaluate@mlp_churn"], repo, env)
    assert "up to date" in status.stdout, status.stdout


def test_dvc_metrics_show_reads_the_metrics(tiny_repo):
    """The default table has one narrow row per experiment (the same keys for every task) and no warning; the
    details are one `dvc metrics show <file>` away."""
    repo, env, _ = tiny_repo
    table = _run([str(BIN / "dvc"), "metrics", "show"], repo, env)
    assert "failed to load" not in table.stdout + table.stderr, table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header == [
        "Path",
        "headline",
        "primary",
        "task",
        "test_error",
        "train_error",
        "val_error",
        "value",
        "verdict",
    ], header
    shown = _run([str(BIN / "dvc"), "metrics", "show", "--json"], repo, env)
    files = json.loads(shown.stdout)[""]["data"]
    assert set(files) == {f"metrics/{name}.json" for name in _experiments(repo)}
    lenet = files["metrics/lenet5_mnist.json"]["data"]
    assert lenet["task"] == "multiclass" and lenet["primary"] == "test_acc" and 0 <= lenet["value"] <= 1
    autoencoder = files["metrics/autoencoder_mnist.json"]["data"]
    assert autoencoder["task"] == "reconstruction" and autoencoder["primary"] == "test_psnr"
    details = _run([str(BIN / "dvc"), "metrics", "show", "--json", "metrics/evaluate/lenet5_mnist.json"], repo, env)
    assert "test" in json.loads(details.stdout)[""]["data"]["metrics/evaluate/lenet5_mnist.json"]["data"]


def test_mlflow_server_answers_rest_search(tiny_repo, mlflow_server):
    repo, _, _ = tiny_repo
    base = mlflow_server
    with urllib.request.urlopen(
        f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=deepnotes", timeout=10
    ) as response:
        experiment_id = json.load(response)["experiment"]["experiment_id"]
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/runs/search",
        method="POST",
        headers={"Content-Type": "application/json"},
        data=json.dumps({"experiment_ids": [experiment_id], "max_results": 100}).encode(),
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        runs = json.load(response)["runs"]
    names = sorted(next(t["value"] for t in r["data"]["tags"] if t["key"] == "experiment") for r in runs)
    assert names == _experiments(repo)
    for run in runs:  # each run carries its task's primary test metric
        task = next(t["value"] for t in run["data"]["tags"] if t["key"] == "task")
        assert get_task(task).primary_metric()[0] in {m["key"] for m in run["data"]["metrics"]}, task
