"""The model registry (``pipelines.registered_models``) on real models: MLPs trained on a slice of the real churn table,
logged as served pyfunc models (``pipelines.tracking.log_model``) to a temporary SQLite store, ranked by their accuracy
on a held-out slice of the real test split. Checks the champion/challenger rule in both metric directions, that the
same weights never make a second version, that the champion loads (no pickle) and predicts exactly as the network
that won, on prepared and on raw rows, that plain artifacts are not registered, and that pickled and tampered models
are refused without running their payload.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import pickle
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
from pipelines.data.encoding import raw_input_for
from pipelines.data.preparers import prepare_dataset
from pipelines.registered_models import (
    CHALLENGER,
    CHAMPION,
    load_champion,
    load_model_safely,
    load_served,
    register,
    registered_name,
)
from pipelines.serving.bundle import WEIGHTS, Bundle
from pipelines.tasks import get_task
from pipelines.tracking import log_model

TRAIN_ROWS, HELD_OUT_ROWS = 2000, 1000
#: Full-batch Adam steps of the MLPs: untrained, a little and well trained, so their accuracies differ; the fourth
#: is trained like the third from another seed (other weights, for a tie on the metric).
STEPS = (0, 15, 300, 300)


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
    meta: dict


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return ((logits > 0).long() == y).float().mean().item()


@pytest.fixture(scope="module")
def store(tmp_path_factory, mirror) -> Iterator[Store]:
    """A temporary tracking store holding four MLPs trained on real churn rows, logged as served pyfunc models."""
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
            spec = NetworkSpec(tuple(meta["input_shape"]), 1)
            net = build_network("mlp", spec, {"hidden_sizes": [16]})
            optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
            for _ in range(steps):
                optimizer.zero_grad()
                nn.functional.binary_cross_entropy_with_logits(net(x_train), y_train).backward()
                optimizer.step()
            net.eval()
            run_id = client.create_run(experiment_id, tags={"mlflow.runName": f"mlp-{steps}-steps"}).info.run_id
            bundle = Bundle(
                "mlp",
                {"input_shape": list(spec.input_shape), "num_outputs": 1},
                {"hidden_sizes": [16]},
                "binary",
                {k: meta[k] for k in ("classes", "num_classes", "input_shape")},
                raw_input_for(meta, root),
                net,
            )
            fmt, model_uri, digest = log_model(bundle, x_test[:2].numpy(), run_id)
            assert fmt == "pyfunc" and model_uri.startswith("models:/m-") and digest == bundle.digest
            with torch.no_grad():
                models.append(Logged(net, run_id, model_uri, _accuracy(net(x_test), y_test)))
        yield Store(uri, root, client, experiment_id, x_test, y_test, models, meta)
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
    worst, mid, best, twin = store.models  # twin: trained like best, other weights
    assert worst.accuracy < mid.accuracy < best.accuracy, [m.accuracy for m in store.models]

    def reg(model: Logged, value: float | None = None):
        return register(
            client,
            name=name,
            model_uri=model.model_uri,
            run_id=model.run_id,
            metric=metric,
            value=model.accuracy if value is None else value,
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

    tie = reg(twin, value=best.accuracy)  # other weights, the same accuracy: the champion stays
    assert (tie.version, tie.alias, tie.champion_version, tie.created) == (4, CHALLENGER, 3, True)
    assert (_alias_version(client, name, CHAMPION), _alias_version(client, name, CHALLENGER)) == (3, 4)

    # The same weights again (evaluate rerun, or a retrain to identical weights): no new version, no alias moved.
    again = reg(best)
    assert (again.version, again.alias, again.created, again.champion_version) == (3, CHAMPION, False, 3)
    assert [int(v.version) for v in client.search_model_versions(f"name = '{name}'")] == [4, 3, 2, 1]

    # Each version is linked to its run and logged model, and carries its metric.
    v3 = client.get_model_version(name, "3")
    assert v3.run_id == best.run_id and v3.source == best.model_uri
    logged = client.get_logged_model(best.model_uri.split("/")[-1])
    assert v3.tags == {
        "metric": "test_acc",
        "metric_value": repr(best.accuracy),
        "greater_is_better": "true",
        "experiment": "mlp_churn",
        "weights_sha256": logged.tags["weights_sha256"],
    }
    links = json.loads(logged.tags["mlflow.modelVersions"])
    assert {"name": name, "version": 3} in links

    # The champion loads from the registry (pickle refused) and predicts exactly as the winning network.
    champion = load_champion(name)
    with torch.no_grad():
        expected = best.network(store.x_test)
        got = champion(store.x_test)
    assert got.shape == (len(store.x_test),)
    torch.testing.assert_close(got, expected)
    assert _accuracy(got, store.y_test) == best.accuracy
    with torch.no_grad():
        torch.testing.assert_close(load_champion(name, alias=CHALLENGER)(store.x_test), twin.network(store.x_test))
        torch.testing.assert_close(load_model_safely(f"models:/{name}/2")(store.x_test), worst.network(store.x_test))
    # ... and, served, it answers raw rows with the probability of that same network
    raw = raw_input_for(store.meta, store.root).example(store.x_test[:16].numpy())
    answer = load_served(f"models:/{name}@{CHAMPION}").predict(raw)
    torch.testing.assert_close(
        torch.tensor(answer["probability_exited"].to_numpy()), torch.sigmoid(expected[:16]), rtol=1e-4, atol=1e-5
    )

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
            weights_sha256="another-copy",  # registered again on purpose: stands for other weights
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
            weights_sha256=f"plan-{i}",  # five versions from four models: each stands for other weights
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


def test_plain_artifacts_and_bad_uris_are_not_registered(store, caplog, tmp_path):
    client = store.client
    metric, greater = primary_metric("binary")
    run_id = client.create_run(store.experiment_id).info.run_id
    (tmp_path / "state_dict.pt").write_bytes(b"not a model")
    client.log_artifact(run_id, str(tmp_path / "state_dict.pt"), artifact_path="model_state_dict")
    uri = f"runs:/{run_id}/model_state_dict/state_dict.pt"  # an artifact, not an MLflow model
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


def test_pickled_and_tampered_models_are_refused(store, tmp_path, monkeypatch):
    client = store.client
    metric, greater = primary_metric("binary")
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")  # the loaders refuse pickle regardless

    def champion_of(name: str, model_uri: str, run_id: str) -> None:
        result = register(
            client, name=name, model_uri=model_uri, run_id=run_id, metric=metric, value=0.5, greater_is_better=greater
        )
        assert result is not None and result.alias == CHAMPION

    # Models saved in MLflow's pickle formats (a torch pickle, a cloudpickled pyfunc) are refused outright.
    run_id = client.create_run(store.experiment_id).info.run_id
    with mlflow.start_run(run_id=run_id):
        torch_pickle = mlflow.pytorch.log_model(
            nn.Linear(store.x_test.shape[1], 1),
            name="pickled",
            serialization_format="pickle",
            pip_requirements=["torch"],
        )
        cloudpickled = mlflow.pyfunc.log_model(
            name="cloudpickled", python_model=mlflow.pyfunc.PythonModel(), pip_requirements=["mlflow"]
        )
    champion_of(registered_name("pickled"), torch_pickle.model_uri, run_id)
    with pytest.raises(MlflowException, match="pickle"):
        load_champion(registered_name("pickled"))
    champion_of(registered_name("cloudpickled"), cloudpickled.model_uri, run_id)
    with pytest.raises(MlflowException, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
        load_served(f"models:/{registered_name('cloudpickled')}@{CHAMPION}")
    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "true"  # restored after the load

    # A served model whose weights.pt was replaced by a pickle payload is refused before the payload runs.
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")  # creates the marker file when unpickled

    buffer = io.BytesIO()
    torch.save({"0.weight": Payload()}, buffer)
    torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)["0.weight"].close()  # the payload is live ...
    assert marker.exists()
    marker.unlink()
    logged = store.models[2]  # the champion of deepnotes-mlp_churn
    source = Path(client.get_logged_model(logged.model_uri.split("/")[-1]).artifact_location.removeprefix("file://"))
    [weights] = source.rglob(WEIGHTS)
    original = weights.read_bytes()
    weights.write_bytes(buffer.getvalue())
    try:
        with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
            load_served(logged.model_uri)
        with pytest.raises(pickle.UnpicklingError):
            load_champion(registered_name("mlp_churn"), tracking_uri=store.uri)
    finally:
        weights.write_bytes(original)
    assert not marker.exists()  # ... but it never ran
