"""Bring your own data, end to end (issue 12, section 1): in a copy of the tiny repo, a dataset of each ``source:``
format made from the project's own data is declared in params.yaml alone, and ``dvc repro`` prepares, trains and
evaluates it, tracked in MLflow like the built-in ones. Editing a user's file reruns its ``prepare`` stage."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, _run, make_tiny_copy
from tests.test_sources import airline_series, churn_rows, mnist_digits, write_idx, write_png_folders, yelp_sentences

DATASETS = {
    "my_table": {
        "source": {"format": "csv", "path": "data/raw/table.csv", "target": "Exited", "drop": ["RowNumber", "Surname"]}
    },
    "my_idx": {
        "source": {
            "format": "idx",
            "path": "data/raw/idx",
            "train_images": "train-images.gz",
            "train_labels": "train-labels",
            "test_images": "test-images",
            "test_labels": "test-labels",
        }
    },
    "my_digits": {"source": {"format": "image_folder", "path": "data/raw/digits"}},
    "my_text": {"source": {"format": "text_csv", "path": "data/raw/reviews.csv"}, "vocab_size": 500, "seq_len": 24},
    "my_series": {"source": {"format": "timeseries_csv", "path": "data/raw/passengers.csv"}, "window": 12},
}
EXPERIMENTS = {
    "mlp_my_table": {"architecture": "mlp", "dataset": "my_table", "loss": "bce", "model": {"hidden_sizes": [16]}},
    "mlp_my_idx": {"architecture": "mlp", "dataset": "my_idx", "loss": "ce", "model": {"hidden_sizes": [32]}},
    "lenet5_my_digits": {"architecture": "lenet5", "dataset": "my_digits", "loss": "ce", "batch_size": 32},
    "lstm_my_text": {
        "architecture": "rnn",
        "dataset": "my_text",
        "loss": "bce",
        "model": {"cell": "lstm", "embedding_dim": 16, "hidden_size": 16},
    },
    "mlp_my_series": {"architecture": "mlp", "dataset": "my_series", "loss": "mse", "model": {"hidden_sizes": [8]}},
}


def write_user_files(repo: Path, mirror: Path) -> None:
    """The user's files, made from real data: 300 churn rows, 300 MNIST digits as IDX and as PNG folders, 300
    Yelp sentences, the airline passengers."""
    raw = repo / "data" / "raw"
    (raw / "idx").mkdir(parents=True)
    churn_rows(mirror).to_csv(raw / "table.csv", index=False)
    images, labels = mnist_digits(mirror, 200)
    test_images, test_labels = mnist_digits(mirror, 100, "test")
    write_idx(raw / "idx" / "train-images.gz", images, compress=True)
    write_idx(raw / "idx" / "train-labels", labels)
    write_idx(raw / "idx" / "test-images", test_images)
    write_idx(raw / "idx" / "test-labels", test_labels)
    write_png_folders(raw / "digits", images, labels)
    yelp_sentences(mirror).to_csv(raw / "reviews.csv", index=False)
    airline_series(mirror).to_csv(raw / "passengers.csv", index=False)


@pytest.fixture(scope="module")
def byod_repo(tmp_path_factory, mirror):
    repo = tmp_path_factory.mktemp("byod") / "repo"
    env = make_tiny_copy(repo, mirror)
    write_user_files(repo, mirror)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params |= {"datasets": DATASETS, "augment": {}, "experiments": EXPERIMENTS, "transfer": {}, "claims": {}}
    params["tuning"]["experiments"] = {}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = _run([str(BIN / "dvc"), "repro"], repo, env, timeout=1500)
    return repo, env, result.stdout


def test_every_format_trains_and_evaluates_through_dvc_repro(byod_repo):
    repo, _, stdout = byod_repo
    for name in DATASETS:
        assert f"Running stage 'prepare@{name}'" in stdout
    for name, exp in EXPERIMENTS.items():
        metrics = json.loads((repo / "metrics" / f"{name}.json").read_text())
        assert metrics["primary"] == ("test_rmse" if exp["loss"] == "mse" else "test_acc"), (name, metrics)
        assert math.isfinite(metrics["value"]) and math.isfinite(metrics["test_error"]), (name, metrics)
    meta = json.loads((repo / "data" / "prepared" / "my_digits" / "meta.json").read_text())
    assert meta["format"] == "image_folder" and meta["num_classes"] == 10
    # one MLflow run per experiment, with the user dataset's name as its dataset param
    with sqlite3.connect(repo / "mlflow" / "mlflow.db") as db:
        rows = db.execute(
            "SELECT r.name, p.value FROM runs r JOIN params p ON p.run_uuid = r.run_uuid WHERE p.key = 'dataset'"
        ).fetchall()
    assert {name: value for name, value in rows if name in EXPERIMENTS} == {
        name: exp["dataset"] for name, exp in EXPERIMENTS.items()
    }


def test_editing_a_users_file_reruns_only_its_prepare(byod_repo):
    repo, env, _ = byod_repo
    table = repo / "data" / "raw" / "table.csv"
    table.write_text(table.read_text().replace(",France,", ",Spain,", 1))
    status = _run([str(BIN / "dvc"), "status"], repo, env).stdout
    assert "prepare@my_table" in status and "data/sources/my_table" in status
    assert "prepare@my_text" not in status and "prepare@my_digits" not in status
    (repo / "data" / "raw" / "digits" / "digit_3" / "0.png").unlink(missing_ok=True)
    next((repo / "data" / "raw" / "digits" / "digit_7").iterdir()).unlink()  # a removed image counts too
    status = _run([str(BIN / "dvc"), "status"], repo, env).stdout
    assert "prepare@my_digits" in status
    rerun = _run([str(BIN / "dvc"), "repro", "prepare@my_table", "prepare@my_digits"], repo, env).stdout
    assert "Running stage 'prepare@my_table'" in rerun and "Running stage 'prepare@my_digits'" in rerun


def test_a_bad_user_file_fails_its_stage_with_one_line_and_writes_nothing(byod_repo):
    repo, env, _ = byod_repo
    series = repo / "data" / "raw" / "passengers.csv"
    lines = series.read_text().splitlines()
    lines[30] = lines[30].split(",")[0] + ",lots"
    series.write_text("\n".join(lines) + "\n")
    import subprocess

    result = subprocess.run(
        [str(BIN / "dvc"), "repro", "prepare@my_series"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "passengers.csv: line 31: value is 'lots'; expected a finite number" in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    # DVC removes a stage's outputs before it runs; the failed stage leaves no half-written folder behind
    assert sorted(p.name for p in (repo / "data" / "prepared").iterdir() if "my_series" in p.name) == []
