"""What every MLflow run records beside its metrics (issue 13): its own duration (``train_seconds`` +
``evaluate_seconds``, never the hours between DVC's train and evaluate stages), its datasets (``log_inputs`` with a
DVC digest, a source, a schema and a context) and its source (MLflow's standard tags and the DVC stage).

Each test builds runs with the functions of :mod:`pipelines.tracking` in a fresh SQLite store under ``tmp_path``,
on real prepared data: the churn table and the AND truth table prepared by the project's own preparers, and a
slice of the real MNIST images. The ``dvc.lock`` a test writes holds the md5 DVC itself computes for a directory
output (the md5 of its JSON manifest of file md5s, as in ``.dvc/cache/files/md5/**.dir``).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipelines import tracking
from pipelines.config import DatasetConfig, load_params
from pipelines.data.catalog import CATALOG
from pipelines.data.prepared import load_prepared, load_training_data, write_prepared
from pipelines.data.preparers import prepare_dataset
from pipelines.data.preparers.common import base_meta
from pipelines.data.readers import read_idx
from pipelines.stages import evaluate as evaluate_stage
from pipelines.stages import train as train_stage
from tests.conftest import REPO_ROOT

SEED = 42


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """An ``MlflowClient`` over a new SQLite store (one per module: creating its tables takes a second or two)."""
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}")


@pytest.fixture
def experiment_id(client, request, tmp_path: Path) -> str:
    """A new experiment of the test's own, in :func:`client`'s store."""
    return client.create_experiment(request.node.name, artifact_location=(tmp_path / "artifacts").as_uri())


def dvc_dir_md5(folder: Path) -> str:
    """The md5 DVC records in ``dvc.lock`` for a directory output: md5 of the JSON list of ``{md5, relpath}`` of
    its files, sorted by path, plus ``.dir`` (``ff0bafac...dir`` for the repo's ``data/prepared/logic_and``)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    manifest = [
        {"md5": hashlib.md5(p.read_bytes()).hexdigest(), "relpath": p.relative_to(folder).as_posix()} for p in files
    ]
    return hashlib.md5(json.dumps(manifest, sort_keys=True).encode()).hexdigest() + ".dir"


def write_lock(path: Path, dataset: str, prepared: Path, augmented: Path) -> Path:
    """A ``dvc.lock`` with the ``prepare@<dataset>`` and ``augment@<dataset>`` outputs' md5s."""
    stages = {
        f"{stage}@{dataset}": {"outs": [{"path": f"data/{kind}/{dataset}", "hash": "md5", "md5": dvc_dir_md5(folder)}]}
        for stage, kind, folder in (("prepare", "prepared", prepared), ("augment", "augmented", augmented))
    }
    path.write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))
    return path


@pytest.fixture(scope="module")
def churn(tmp_path_factory, mirror: Path):
    """The real churn table, prepared (``data/prepared/churn``) with 100 augmented copies of train rows
    (``data/augmented/churn``), and the ``dvc.lock`` of both: ``(prepared root, augmented root, lock)``. Read only."""
    tmp_path = tmp_path_factory.mktemp("churn")
    arrays, meta, extra = prepare_dataset("churn", DatasetConfig(), SEED, mirror=mirror)
    prepared = write_prepared(tmp_path / "prepared" / "churn", arrays, meta, extra)
    x, y = arrays["train"]
    noisy = (x[:100] + np.float32(0.01)).astype(np.float32)
    augmented = write_prepared(tmp_path / "augmented" / "churn", {"train": (noisy, y[:100])}, {"enabled": True})
    return prepared.parent, augmented.parent, write_lock(tmp_path / "dvc.lock", "churn", prepared, augmented)


def inputs_by_context(client, run_id: str) -> dict[str, object]:
    return {
        {t.key: t.value for t in di.tags}["mlflow.data.context"]: di.dataset
        for di in client.get_run(run_id).inputs.dataset_inputs
    }


def test_each_split_is_a_dataset_with_its_dvc_digest_context_source_and_schema(client, experiment_id, churn):
    prepared_root, _, lock = churn
    data = load_prepared(prepared_root / "churn")
    versions = tracking.data_version("churn", lock)
    run_id = client.create_run(experiment_id).info.run_id
    tracking.log_datasets(client, run_id, data, versions, tracking.dataset_source("churn", data.meta))

    datasets = inputs_by_context(client, run_id)
    assert sorted(datasets) == ["testing", "training", "validation"]
    prepare_md5 = dvc_dir_md5(prepared_root / "churn").removesuffix(".dir")
    catalog_url = CATALOG["churn"].files[0].urls[0]  # the meta's provenance names no URL: the catalog's download
    for context, split in (("training", "train"), ("validation", "val"), ("testing", "test")):
        dataset = datasets[context]
        assert dataset.name == f"churn/{split}"
        assert dataset.digest == prepare_md5  # no augmented copies in what this run read
        assert (dataset.source_type, json.loads(dataset.source)) == ("http", {"url": catalog_url})
        columns = json.loads(dataset.schema)["mlflow_colspec"]
        assert [c["name"] for c in columns] == [*data.meta["feature_names"], "y"]
        assert [c["type"] for c in columns] == ["float"] * len(data.meta["feature_names"]) + ["long"]
        profile = json.loads(dataset.profile)
        assert profile["num_samples"] == len(data.x[split]) == data.meta["splits"][split]
        assert profile["x_shape"] == list(data.x[split].shape)
        assert profile["provenance"] == CATALOG["churn"].source

    # logged again (a resumed run, a rerun of evaluate's own run): nothing is added
    tracking.log_datasets(client, run_id, data, versions, tracking.dataset_source("churn", data.meta))
    assert len(client.get_run(run_id).inputs.dataset_inputs) == 3


def test_a_training_split_with_augmented_copies_has_the_data_hash_digest(client, experiment_id, churn):
    prepared_root, augmented_root, lock = churn
    data = load_training_data("churn", prepared_root=prepared_root, augmented_root=augmented_root)
    versions = tracking.data_version("churn", lock)
    run_id = client.create_run(experiment_id).info.run_id
    tracking.log_datasets(client, run_id, data, versions, tracking.dataset_source("churn", data.meta))

    datasets = inputs_by_context(client, run_id)
    assert datasets["training"].digest == versions["data_hash"] != ""
    assert versions["data.md5.augment"] == dvc_dir_md5(augmented_root / "churn")
    assert datasets["validation"].digest == versions["data.md5.prepare"].removesuffix(".dir")
    profile = json.loads(datasets["training"].profile)
    assert profile["augmented_samples"] == 100
    assert profile["num_samples"] == data.meta["splits"]["train"] + 100 == len(data.x["train"])
    assert "augmented_samples" not in json.loads(datasets["testing"].profile)


def test_image_splits_have_tensor_schemas_and_the_catalog_url(client, experiment_id, tmp_path, mirror):
    images = read_idx(mirror / "mnist/t10k-images-idx3-ubyte.gz")[:300]
    labels = read_idx(mirror / "mnist/t10k-labels-idx1-ubyte.gz")[:300].astype(np.int64)
    x = (images[:, None] / np.float32(255)).astype(np.float32)
    splits = {"train": (x[:200], labels[:200]), "val": (x[200:250], labels[200:250]), "test": (x[250:], labels[250:])}
    meta = base_meta(CATALOG["mnist"], SEED) | {"input_shape": [1, 28, 28]}
    data = load_prepared(write_prepared(tmp_path / "prepared" / "mnist", splits, meta))
    run_id = client.create_run(experiment_id).info.run_id
    tracking.log_datasets(client, run_id, data, {}, tracking.dataset_source("mnist", data.meta))

    for context, split in (("training", "train"), ("validation", "val"), ("testing", "test")):
        dataset = inputs_by_context(client, run_id)[context]
        specs = {c["name"]: c["tensor-spec"] for c in json.loads(dataset.schema)["mlflow_colspec"]}
        assert specs == {"x": {"dtype": "float32", "shape": [-1, 1, 28, 28]}, "y": {"dtype": "int64", "shape": [-1]}}
        assert json.loads(dataset.source) == {"url": CATALOG["mnist"].source}
        # without a dvc.lock entry (a stage run outside DVC) the digest is meta.json's
        assert len(dataset.digest) == 16 and json.loads(dataset.profile)["digest"].startswith("sha256 of meta.json")
        assert json.loads(dataset.profile)["num_samples"] == len(splits[split][0])


def test_sources_of_declared_generated_and_derived_datasets(tmp_path, mirror):
    rows = (mirror / "churn" / "Churn_Modelling.csv").read_text().splitlines()[:301]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.csv").write_text("\n".join(rows) + "\n")
    config = DatasetConfig.model_validate(
        {
            "source": {
                "format": "csv",
                "path": "data/mine.csv",
                "target": "Exited",
                "drop": ["RowNumber", "CustomerId", "Surname"],
            }
        }
    )
    _, meta, _ = prepare_dataset("mine", config, 0, root=tmp_path)
    declared = tracking.dataset_source("mine", meta, config.source)
    assert (declared._get_source_type(), json.loads(declared.to_json())) == ("local", {"uri": "data/mine.csv"})

    _, meta, _ = prepare_dataset("logic_and", DatasetConfig(), 0)
    generated = tracking.dataset_source("logic_and", meta)
    assert generated._get_source_type() == "code"
    assert json.loads(generated.to_json())["tags"]["provenance"] == "notes 001, AND GATE"

    derived = tracking.dataset_source("cifar10_5to9", {"source": CATALOG["cifar10_5to9"].source})
    assert json.loads(derived.to_json()) == {"url": "https://www.cs.toronto.edu/~kriz/cifar.html"}


def test_source_tags_name_the_entry_point_commit_and_dvc_stage(client, experiment_id, monkeypatch):
    monkeypatch.delenv("DVC_STAGE", raising=False)
    params = load_params()
    tags = tracking.source_tags(
        tracking.entry_point(train_stage.__file__), tracking.dvc_stage(params, "lenet5_mnist", "train")
    )
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    assert tags["mlflow.source.name"] == "pipelines/stages/train.py"
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.git.commit"] == head
    assert tags["mlflow.source.git.dirty"] in {"true", "false"}
    assert tags["dvc.stage"] == tags["dvc.stages"] == "train@lenet5_mnist"
    transfer = next(iter(params.transfer))
    assert tracking.dvc_stage(params, transfer, "evaluate") == f"finetune@{transfer}"
    assert tracking.dvc_stage(params, transfer, "diagnose") == f"diagnose_transfer@{transfer}"
    monkeypatch.setenv("DVC_STAGE", "train@perceptron_and")  # what dvc repro sets for the command it runs
    assert tracking.dvc_stage(params, "lenet5_mnist", "train") == "train@perceptron_and"

    run = client.create_run(experiment_id, tags=tags)
    for stage in ("evaluate@lenet5_mnist", "diagnose@lenet5_mnist", "evaluate@lenet5_mnist"):
        tracking.add_stage(client, run.info.run_id, stage, client.get_run(run.info.run_id).data.tags)
    stages = client.get_run(run.info.run_id).data.tags["dvc.stages"]
    assert stages == "train@lenet5_mnist evaluate@lenet5_mnist diagnose@lenet5_mnist"


def _end(client, run_id: str) -> int:
    info = client.get_run(run_id).info
    return info.end_time - info.start_time


def test_duration_is_train_plus_evaluate_seconds_and_evaluate_does_not_reopen_the_run(client, experiment_id, churn):
    """A train stage, other stages that DVC runs in between, then the evaluate stage: real work, measured."""
    prepared_root, augmented_root, lock = churn
    started = time.time()  # what train's _PROCESS_START is
    run = client.create_run(experiment_id, start_time=int(started * 1000))
    data = load_training_data("churn", prepared_root=prepared_root, augmented_root=augmented_root)
    tracking.log_datasets(
        client, run.info.run_id, data, tracking.data_version("churn", lock), tracking.dataset_source("churn", data.meta)
    )
    train_seconds = time.time() - started
    tracking.record_work(client, run.info.run_id, "train_seconds", train_seconds, start_time=run.info.start_time)
    trained = client.get_run(run.info.run_id)
    assert trained.info.status == "FINISHED"
    assert abs(_end(client, run.info.run_id) - 1000 * train_seconds) <= 1  # ms rounding

    between = time.time()  # the other experiments' train stages
    prepare_dataset("logic_xor", DatasetConfig(), 0)
    load_prepared(prepared_root / "churn", mmap=False)
    gap = time.time() - between

    evaluate_started = time.time()  # evaluate's _PROCESS_START
    before = client.get_run(run.info.run_id)
    # its logging goes through the client: the run is not reopened
    client.log_metric(run.info.run_id, "test_acc", float(np.mean(data.y["test"] == 0)))
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    evaluate_seconds = time.time() - evaluate_started
    end_time = tracking.record_work(
        client,
        run.info.run_id,
        "evaluate_seconds",
        evaluate_seconds,
        start_time=before.info.start_time,
        earlier=before.data.metrics,
        status=before.info.status,
    )
    now = time.time() * 1000
    evaluated = client.get_run(run.info.run_id)
    assert evaluated.info.status == "FINISHED" and evaluated.info.end_time == end_time
    assert evaluated.data.metrics["train_seconds"] == pytest.approx(train_seconds)
    assert abs(_end(client, run.info.run_id) - 1000 * (train_seconds + evaluate_seconds)) <= 1
    assert end_time <= now - 1000 * gap + 1  # not "now": the stages in between are not the run's work

    rerun = time.time() - evaluate_started  # a rerun of evaluate replaces its seconds
    tracking.record_work(
        client,
        run.info.run_id,
        "evaluate_seconds",
        rerun,
        start_time=evaluated.info.start_time,
        earlier=evaluated.data.metrics,
        status=evaluated.info.status,
    )
    assert abs(_end(client, run.info.run_id) - 1000 * (train_seconds + rerun)) <= 1
    history = client.get_metric_history(run.info.run_id, "evaluate_seconds")
    assert [m.value for m in history] == pytest.approx([evaluate_seconds, rerun])


def test_evaluate_without_a_training_run_times_its_own_run(client, experiment_id):
    run = client.create_run(experiment_id, start_time=int(evaluate_stage._PROCESS_START * 1000))
    assert run.info.status == "RUNNING"
    seconds = time.time() - evaluate_stage._PROCESS_START
    tracking.record_work(client, run.info.run_id, "evaluate_seconds", seconds, start_time=run.info.start_time)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert abs(_end(client, run.info.run_id) - 1000 * seconds) <= 1
    with pytest.raises(ValueError, match="fit_seconds"):
        tracking.record_work(client, run.info.run_id, "fit_seconds", 1.0, start_time=run.info.start_time)


def test_every_run_names_the_notes_section_of_its_technique():
    from models.registry import REGISTRY

    params = load_params()
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    declared = raw["experiments"] | raw.get("transfer", {})
    for name, exp in params.all_experiments.items():
        assert exp.notes.startswith("notes 00"), (name, exp.notes)
        if name in params.transfer or name in {"resnet20_cifar10_0to4", "resnet20_cifar10_5to9_scratch"}:
            assert exp.notes.startswith("notes 001, Transfer learning"), name  # the study's steps and baseline
        elif "notes" in declared[name]:  # the experiment's own technique (a vanilla RNN, a stacked LSTM)
            assert exp.notes == declared[name]["notes"], name
        else:  # none given: the architecture's
            assert exp.notes == REGISTRY[exp.architecture].notes, name
    assert params.transfer
    assert params.experiment("localizer_mnist").notes.startswith("notes 000, Image or Object localization")
