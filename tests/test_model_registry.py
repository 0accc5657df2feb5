"""The model registry (``pipelines.registered_models``) on real models: MLPs trained on a slice of the real churn table,
logged with ``pipelines.stages.train.log_model`` to a temporary SQLite store, ranked by their accuracy on a held-out
slice of the real test split. Checks the champion/challenger rule in both metric directions, that the champion
loads (pt2, no pickle) and predicts exactly as the network that won, that the state_dict fallback is not
registered, and that pickled and tampered models are refused without running their payload.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.exceptions import MlflowException
from torch import nn

from models.registry import NetworkSpec, build_network
from pipelines.config import DatasetConfig
from pipelines.data.preparers import prepare_dataset
from pipelines.registered_models import (
    CHALLENGER,
    CHAMPION,
    load_champion,
    load_model_safely,
    register,
    registered_name,
)
from pipelines.tasks import get_task
from pipelines.tracking import log_model

TRAIN_ROWS, HELD_OUT_ROWS = 2000, 1000
#: Full-batch Adam steps of the three MLPs: untrained, a little and well trained, so their accuracies differ.
STEPS = (0, 15, 300)


@dataclass
class Logged:
    network: nn.Module
    run_id: str
    model_uri: str
    accuracy: float


@dataclass
class Store:
    uri: str
    root: Path
    client: mlflow.MlflowClient
    experiment_id: str
    x_test: torch.Tensor  # (HELD_OUT_ROWS, 12) float32, standardised like the train split
    y_test: torch.Tensor  # (HELD_OUT_ROWS,) 0/1
    models: list[Logged]  # in the order of STEPS


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return ((logits > 0).long() == y).float().mean().item()


@pytest.fixture(scope="module")
def store(tmp_path_factory, mirror) -> Iterator[Store]:
    """A temporary tracking store holding three MLPs trained on real churn rows, logged as pt2 models."""
    arrays, meta, _ = prepare_dataset("churn", DatasetConfig(), 42, mirror=mirror)
    x_train = torch.as_tensor(arrays["train"][0][:TRAIN_ROWS])
    y_train = torch.as_tensor(arrays["train"][1][:TRAIN_ROWS]).float()
    x_test = torch.as_tensor(arrays["test"][0][:HELD_OUT_ROWS])
    y_test = torch.as_tensor(arrays["test"][1][:HELD_OUT_ROWS])

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)  # log_model logs through the process-wide URI
    try:
        client = mlflow.MlflowClient(uri)
        experiment_id = client.create_experiment("registry", artifact_location=(root / "artifacts").as_uri())
        models = []
        for seed, steps in enumerate(STEPS):
            torch.manual_seed(seed)
            net = build_network("mlp", NetworkSpec(tuple(meta["input_shape"]), 1), {"hidden_sizes": [16]})
            optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
            for _ in range(steps):
                optimizer.zero_grad()
                nn.functional.binary_cross_entropy_with_logits(net(x_train), y_train).backward()
                optimizer.step()
            net.eval()
            run_id = client.create_run(experiment_id, tags={"mlflow.runName": f"mlp-{steps}-steps"}).info.run_id
            fmt, model_uri = log_model(net, x_test[:2].numpy(), run_id)
            assert fmt == "pytorch" and model_uri.startswith("models:/m-")
            with torch.no_grad():
                models.append(Logged(net, run_id, model_uri, _accuracy(net(x_test), y_test)))
        yield Store(uri, root, client, experiment_id, x_test, y_test, models)
    finally:
        mlflow.set_tracking_uri(previous)  # None unsets MLFLOW_TRACKING_URI again


def _alias_version(client, name: str, alias: str) -> int | None:
    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def primary_metric(task: str) -> tuple[str, bool]:
    """The ranking metric of a task, as evaluate registers it."""
    return get_task(task).primary_metric()


def test_names_and_metrics():
    assert registered_name("lenet5_mnist") == "deepnotes-lenet5_mnist"
    assert primary_metric("binary") == primary_metric("multiclass") == ("test_acc", True)
    assert primary_metric("regression") == ("test_rmse", False)
    assert primary_metric("localization") == ("test_acc_iou50", True)
    with pytest.raises(KeyError, match="unknown task"):
        primary_metric("ranking")


def test_champion_moves_only_to_a_strictly_better_accuracy(store):
    client, name = store.client, registered_name("mlp_churn")
    metric, greater = primary_metric("binary")
    worst, mid, best = sorted(store.models, key=lambda m: m.accuracy)
    assert worst.accuracy < mid.accuracy < best.accuracy, [m.accuracy for m in store.models]

    def reg(model: Logged):
        return register(
            client,
            name=name,
            model_uri=model.model_uri,
            run_id=model.run_id,
            metric=metric,
            value=model.accuracy,
            greater_is_better=greater,
            tags={"experiment": "mlp_churn"},
        )

    first = reg(mid)  # no champion yet
    assert (first.version, first.alias, first.champion_version, first.previous_champion_version) == (
        1,
        CHAMPION,
        1,
        None,
    )
    assert (_alias_version(client, name, CHAMPION), _alias_version(client, name, CHALLENGER)) == (1, None)

    worse = reg(worst)
    assert (worse.version, worse.alias, worse.champion_version, worse.champion_value) == (
        2,
        CHALLENGER,
        1,
        mid.accuracy,
    )
    assert (_alias_version(client, name, CHAMPION), _alias_version(client, name, CHALLENGER)) == (1, 2)

    better = reg(best)
    assert (
        better.version,
        better.alias,
        better.champion_version,
        better.champion_value,
        better.previous_champion_version,
    ) == (3, CHAMPION, 3, best.accuracy, 1)
    assert (_alias_version(client, name, CHAMPION), _alias_version(client, name, CHALLENGER)) == (3, 2)
    assert client.get_model_version(name, "1").aliases == []  # the former champion lost its alias

    tie = reg(best)  # the same accuracy again: the champion stays
    assert (tie.version, tie.alias, tie.champion_version) == (4, CHALLENGER, 3)
    assert (_alias_version(client, name, CHAMPION), _alias_version(client, name, CHALLENGER)) == (3, 4)

    # Each version is linked to its run and logged model, and carries its metric.
    v3 = client.get_model_version(name, "3")
    assert v3.run_id == best.run_id and v3.source == best.model_uri
    assert v3.tags == {
        "metric": "test_acc",
        "metric_value": repr(best.accuracy),
        "greater_is_better": "true",
        "experiment": "mlp_churn",
    }
    links = json.loads(client.get_logged_model(best.model_uri.split("/")[-1]).tags["mlflow.modelVersions"])
    assert {"name": name, "version": 3} in links and {"name": name, "version": 4} in links

    # The champion loads from the registry (pt2, pickle refused) and predicts exactly as the winning network.
    champion = load_champion(name)
    with torch.no_grad():
        expected = best.network(store.x_test)
        got = champion(store.x_test)
    assert got.shape == (len(store.x_test),)
    torch.testing.assert_close(got, expected)
    assert _accuracy(got, store.y_test) == best.accuracy
    with torch.no_grad():
        torch.testing.assert_close(load_champion(name, alias=CHALLENGER)(store.x_test), expected)  # v4 is best too
        torch.testing.assert_close(load_model_safely(f"models:/{name}/2")(store.x_test), worst.network(store.x_test))

    # An explicit tracking URI works while the process-wide URI points elsewhere (and is left alone).
    mlflow.set_tracking_uri(f"sqlite:///{store.root / 'elsewhere.db'}")
    try:
        with torch.no_grad():
            torch.testing.assert_close(load_champion(name, tracking_uri=store.uri)(store.x_test), expected)
        assert mlflow.get_tracking_uri().endswith("elsewhere.db")
        # Registering through a client whose URI is not the process-wide one records the artifact location.
        other = register(
            client,
            name=name,
            model_uri=worst.model_uri,
            run_id=worst.run_id,
            metric=metric,
            value=worst.accuracy,
            greater_is_better=greater,
        )
        version = client.get_model_version(name, str(other.version))
        assert other.alias == CHALLENGER and version.run_id == worst.run_id
        assert version.source == client.get_logged_model(worst.model_uri.split("/")[-1]).artifact_location
    finally:
        mlflow.set_tracking_uri(store.uri)
    assert not (store.root / "elsewhere.db").exists()


def test_lower_is_better_for_regression(store):
    client, name = store.client, registered_name("regression_direction")
    metric, greater = primary_metric("regression")
    # Plain RMSE values on the real logged models: 0.5 first, 0.7 worse, 0.3 better, 0.3 a tie, NaN never wins.
    plan = [
        (0.5, CHAMPION, 1, None),
        (0.7, CHALLENGER, 1, None),
        (0.3, CHAMPION, 3, 1),
        (0.3, CHALLENGER, 3, None),
        (math.nan, CHALLENGER, 3, None),
    ]
    for i, (rmse, alias, champion_version, previous) in enumerate(plan):
        model = store.models[i % len(store.models)]
        result = register(
            client,
            name=name,
            model_uri=model.model_uri,
            run_id=model.run_id,
            metric=metric,
            value=rmse,
            greater_is_better=greater,
        )
        assert (result.version, result.alias, result.champion_version, result.previous_champion_version) == (
            i + 1,
            alias,
            champion_version,
            previous,
        ), rmse
        assert _alias_version(client, name, CHAMPION) == champion_version
        assert _alias_version(client, name, alias) == (champion_version if alias == CHAMPION else i + 1)
    assert client.get_model_version(name, "3").tags["greater_is_better"] == "false"
    assert result.champion_value == 0.3


def test_state_dict_fallback_and_bad_uris_are_not_registered(store, caplog):
    client = store.client
    metric, greater = primary_metric("binary")

    class DataDependent(nn.Module):  # torch.export cannot trace a branch on the data: log_model falls back
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(store.x_test.shape[1], 1)

        def forward(self, x):
            out = self.linear(x).squeeze(-1)
            return out if bool(out.sum() > 0) else -out

    run_id = client.create_run(store.experiment_id).info.run_id
    fmt, uri = log_model(DataDependent(), store.x_test[:2].numpy(), run_id)
    assert (fmt, uri) == ("state_dict", f"runs:/{run_id}/model_state_dict/state_dict.pt")
    name = registered_name("state_dict_only")
    with caplog.at_level(logging.WARNING, logger="deepnotes.registry"):
        assert (
            register(
                client, name=name, model_uri=uri, run_id=run_id, metric=metric, value=0.9, greater_is_better=greater
            )
            is None
        )
    assert "not an MLflow model" in caplog.text
    assert client.search_registered_models(f"name = '{name}'") == []

    logged = store.models[0]
    with pytest.raises(ValueError, match="not a logged model URI"):
        register(
            client,
            name=name,
            model_uri="/tmp/model.pt",
            run_id=run_id,
            metric=metric,
            value=0.9,
            greater_is_better=greater,
        )
    with pytest.raises(ValueError, match="was logged by run"):
        register(
            client,
            name=name,
            model_uri=logged.model_uri,
            run_id=run_id,
            metric=metric,
            value=0.9,
            greater_is_better=greater,
        )
    assert client.search_registered_models(f"name = '{name}'") == []


def _tamper(model_dir: Path, payload: bytes) -> None:
    """Flag the first weight of the model's pt2 archive as pickled and replace its bytes with ``payload``."""
    pt2 = model_dir / "data" / "model.pt2"
    with zipfile.ZipFile(pt2) as archive:
        records = {info.filename: (info, archive.read(info)) for info in archive.infolist()}
    config_name = next(name for name in records if name.endswith("/model_weights_config.json"))
    config = json.loads(records[config_name][1])
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    target = f"{config_name.rsplit('/', 1)[0]}/{first['path_name']}"
    records[config_name] = (records[config_name][0], json.dumps(config).encode())
    records[target] = (records[target][0], payload)
    with zipfile.ZipFile(pt2, "w") as archive:
        for info, data in records.values():
            archive.writestr(info, data)


def test_pickled_and_tampered_models_are_refused(store, tmp_path, monkeypatch):
    client = store.client
    metric, greater = primary_metric("binary")
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # the loaders refuse pickle regardless

    # A model saved in MLflow's "pickle" format is refused outright.
    run_id = client.create_run(store.experiment_id).info.run_id
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            nn.Linear(store.x_test.shape[1], 1),
            name="pickled",
            serialization_format="pickle",
            pip_requirements=["torch"],
        )
    name = registered_name("pickled")
    assert (
        register(
            client,
            name=name,
            model_uri=info.model_uri,
            run_id=run_id,
            metric=metric,
            value=0.5,
            greater_is_better=greater,
        ).alias
        == CHAMPION
    )
    with pytest.raises(MlflowException, match="pickle"):
        load_champion(name)
    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "true"  # restored after the load

    # A pt2 archive whose weight record carries a pickle payload is refused before anything is unpickled.
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")  # creates the marker file when unpickled

    buffer = io.BytesIO()
    torch.save(Payload(), buffer)
    torch.load(io.BytesIO(buffer.getvalue()), weights_only=False).close()  # the payload is live ...
    assert marker.exists()
    marker.unlink()
    logged = store.models[-1]
    source = Path(client.get_logged_model(logged.model_uri.split("/")[-1]).artifact_location.removeprefix("file://"))
    tampered = tmp_path / "tampered"
    shutil.copytree(source, tampered)
    _tamper(tampered, buffer.getvalue())
    name = registered_name("tampered")
    client.create_registered_model(name)
    version = client.create_model_version(name, tampered.as_uri(), run_id=logged.run_id).version
    client.set_registered_model_alias(name, CHAMPION, version)
    with pytest.raises(MlflowException, match=r"weights/weight_0.*not a pickle-free payload"):
        load_champion(name)
    with pytest.raises(MlflowException, match="not a pickle-free payload"):
        load_champion(name, tracking_uri=store.uri)
    assert not marker.exists()  # ... but it never ran
