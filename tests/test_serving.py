"""Raw-input serving (``pipelines.data.encoding``, ``pipelines.serving``) on real data.

Unit part: the raw input rebuilt from ``meta.json`` encodes real raw samples (churn rows, a user CSV, MNIST pixels,
IMDB reviews) exactly as the preparer encoded its splits; a bundle round-trips through its folder; a tampered
``weights.pt`` is refused without running its payload.

Integration part (the tiny repro): the registered champions are served with ``mlflow models serve`` on loopback
and answer raw requests: a raw churn row gets the probability ``evaluate``'s code path computes for that test row, a
raw review and raw 0-255 digits get labels, and a body that does not fit the signature gets MLflow's schema error.
Rerunning ``evaluate`` on unchanged weights adds no model version.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import pickle
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.config import DatasetConfig
from pipelines.data.encoding import ImageInput, RawInputError, TableInput, TextInput, raw_input_for
from pipelines.data.preparers import prepare_dataset
from pipelines.data.readers import read_idx
from tests.conftest import BIN, _free_port, _run

CHURN_COLUMNS = ["CreditScore", "Geography", "Gender", "Age", "Tenure", "Balance", "NumOfProducts", "HasCrCard"]


def _rows_as_bytes(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.ascontiguousarray(x, dtype=np.float32)}


def test_churn_raw_rows_encode_as_prepared(mirror):
    arrays, meta, _ = prepare_dataset("churn", DatasetConfig(), 42, mirror=mirror)
    raw = raw_input_for(meta, Path("unused"))
    assert isinstance(raw, TableInput)
    assert [c["name"] for c in raw.columns][:3] == ["CreditScore", "Geography", "Gender"]
    frame = pd.read_csv(mirror / "churn" / "Churn_Modelling.csv")
    encoded = _rows_as_bytes(raw.encode(frame))  # every raw row, through the served encoding
    for split in ("train", "val", "test"):
        prepared = np.asarray(arrays[split][0])
        assert all(row.tobytes() in encoded for row in prepared), f"a {split} row has no raw row encoding to it"
    # the input example decodes prepared rows back to raw rows that encode to the same features
    example = raw.example(arrays["test"][0][:5])
    assert set(example["Geography"]) <= {"France", "Germany", "Spain"}
    assert set(example["Gender"]) <= {"Female", "Male"}
    np.testing.assert_allclose(raw.encode(example), arrays["test"][0][:5], atol=1e-5)
    with pytest.raises(RawInputError, match="'Gender' has 'Other'"):
        raw.encode(frame.head(1).assign(Gender="Other"))
    with pytest.raises(RawInputError, match="no column 'Age'"):
        raw.encode(frame.head(1).drop(columns="Age"))
    with pytest.raises(RawInputError, match="'Balance' has 'lots'"):
        raw.encode(frame.head(1).astype({"Balance": object}).assign(Balance="lots"))


def test_user_csv_one_hot_columns_encode_as_prepared(mirror, tmp_path):
    from pipelines.config.sources import CsvSource
    from pipelines.data.preparers.table import prepare_csv

    rows = pd.read_csv(mirror / "churn" / "Churn_Modelling.csv").head(300)[CHURN_COLUMNS + ["Exited"]]
    rows.to_csv(tmp_path / "bank.csv", index=False)
    source = CsvSource(format="csv", path=str(tmp_path / "bank.csv"), target="Exited")
    arrays, meta, _ = prepare_csv("bank", source, DatasetConfig(), 42, tmp_path)
    raw = raw_input_for(meta, tmp_path)
    kinds = {c["name"]: c["encoding"] for c in raw.columns}
    assert kinds["Geography"] == "one_hot" and kinds["Gender"] == "one_hot" and kinds["Age"] == "standard"
    encoded = _rows_as_bytes(raw.encode(rows.drop(columns="Exited")))
    assert all(row.tobytes() in encoded for row in arrays["test"][0])


def test_mnist_pixels_encode_as_prepared(mirror):
    arrays, meta, _ = prepare_dataset("mnist", DatasetConfig(max_train_samples=500), 42, mirror=mirror)
    raw = raw_input_for(meta, Path("unused"))
    assert isinstance(raw, ImageInput)
    pixels = read_idx(mirror / "mnist" / "t10k-images-idx3-ubyte.gz")[:64, None]  # uint8 (64, 1, 28, 28)
    np.testing.assert_array_equal(raw.encode(pixels), arrays["test"][0][:64])
    np.testing.assert_array_equal(raw.example(arrays["test"][0][:64]), pixels.astype(np.float32))
    assert raw.schema().inputs[0].shape == (-1, 1, 28, 28)
    with pytest.raises(RawInputError, match=r"expected \(N, 1, 28, 28\)"):
        raw.encode(pixels[:, 0])
    with pytest.raises(RawInputError, match="expected 0-255"):
        raw.encode(pixels.astype(np.float32) * 2)


def test_imdb_reviews_encode_as_prepared(mirror, tmp_path):
    config = DatasetConfig(max_train_samples=2000, vocab_size=2000, seq_len=64)
    arrays, meta, files = prepare_dataset("imdb", config, 42, mirror=mirror)
    (tmp_path / "tokenizer.json").write_bytes(files["tokenizer.json"])
    raw = raw_input_for(meta, tmp_path)
    assert isinstance(raw, TextInput) and raw.spec["cleaning"] == ["html_line_breaks"]
    with gzip.open(mirror / "imdb" / "imdb_reviews.csv.gz", "rt", encoding="utf-8") as file:
        reviews = pd.read_csv(file)
    test = reviews[reviews["split"] == "test"].head(200)  # the official test split, in file order
    assert any("<br />" in text for text in test["review"])  # the cleaning matters on these
    np.testing.assert_array_equal(raw.encode(pd.DataFrame({"text": test["review"]})), arrays["test"][0][:200])


def _tiny_bundle(mirror, tmp_path):
    """A bundle of a small MLP on the churn table (untrained: only the round trip matters here)."""
    from pipelines.serving.bundle import Bundle
    from pipelines.tasks import get_task
    from pipelines.training.module import SupervisedModule

    arrays, meta, _ = prepare_dataset("churn", DatasetConfig(max_train_samples=200), 42, mirror=mirror)
    torch.manual_seed(0)
    module = SupervisedModule(
        architecture="mlp",
        spec={"input_shape": meta["input_shape"], "num_outputs": get_task("binary")(meta).num_outputs},
        model_params={"hidden_sizes": [8]},
        task="binary",
        task_meta={"classes": meta["classes"], "num_classes": 2, "input_shape": meta["input_shape"]},
        loss="bce",
        optimizer={"name": "adam", "lr": 0.01},
        regularization={},
        initializer="he_uniform",
    )
    return Bundle.from_module(module, meta, tmp_path), arrays


def test_bundle_round_trip_and_tampered_weights_are_refused(mirror, tmp_path):
    from pipelines.serving.bundle import WEIGHTS, Bundle, weights_digest

    bundle, arrays = _tiny_bundle(mirror, tmp_path)
    folder = bundle.write(tmp_path / "bundle")
    back = Bundle.read(folder)
    assert weights_digest(back.network.state_dict()) == bundle.digest
    raw = bundle.raw_input.example(arrays["test"][0][:8])
    pd.testing.assert_frame_equal(back.predict(raw), bundle.predict(raw))
    answer = back.predict(raw)
    assert list(answer.columns) == ["label", "probability", "probability_stayed", "probability_exited"]
    np.testing.assert_allclose(answer["probability_stayed"] + answer["probability_exited"], 1.0, rtol=1e-6)

    changed = {k: v.clone() for k, v in bundle.network.state_dict().items()}
    next(iter(changed.values())).view(-1)[0] += 1e-3
    assert weights_digest(changed) != bundle.digest

    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"weight": Payload()}, folder / WEIGHTS)  # a pickle that would create `marker` when unpickled
    with pytest.raises(pickle.UnpicklingError):
        Bundle.read(folder)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------- served models


@contextlib.contextmanager
def _served(repo: Path, env: dict[str, str], model: str) -> Iterator[str]:
    """``mlflow models serve`` of ``models:/<model>@champion`` from the tiny repo's store, on a free loopback port,
    with pickle deserialization refused; yields the base URL."""
    port = _free_port()
    log = repo.parent / f"serve-{model}.log"
    serve_env = env | {
        "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow' / 'mlflow.db'}",
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
    }
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{model}@champion", "--env-manager", "local"]
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [*cmd, "-h", "127.0.0.1", "-p", str(port)],
            cwd=repo,
            env=serve_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow models serve {model} did not come up: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _post(base: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{base}/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _test_outputs(repo: Path, name: str) -> tuple[np.ndarray, torch.Tensor]:
    """The prepared test inputs of experiment ``name`` in the tiny repo and its best checkpoint's outputs on them,
    as ``evaluate`` computes them (the task's module from the checkpoint, weights only; ``predict``)."""
    from pipelines.training.inference import predict
    from pipelines.training.module import SupervisedModule

    info = json.loads((repo / "checkpoints" / name / "checkpoint.json").read_text())
    module = SupervisedModule.load_from_checkpoint(
        repo / "checkpoints" / name / info["best_checkpoint"], map_location="cpu", weights_only=True
    )
    dataset = module.hparams["task_meta"]["dataset"]
    x = np.load(repo / "data" / "prepared" / dataset / "test_x.npy")
    return x, predict(module.network, torch.as_tensor(x))


@pytest.mark.integration
def test_served_churn_answers_a_raw_row_as_evaluate_does(tiny_repo, mirror):
    repo, env, _ = tiny_repo
    meta = json.loads((repo / "data" / "prepared" / "churn" / "meta.json").read_text())
    x_test, logits = _test_outputs(repo, "mlp_churn")
    raw = pd.read_csv(mirror / "churn" / "Churn_Modelling.csv")
    encoded = raw_input_for(meta, Path("unused")).encode(raw)
    row = int(np.flatnonzero((encoded == x_test[0]).all(axis=1))[0])  # the raw row behind test row 0
    record = json.loads(raw.iloc[[row]].to_json(orient="records"))[0]  # the whole raw row, ids and target too
    expected = torch.sigmoid(logits[0]).item()
    with _served(repo, env, "deepnotes-mlp_churn") as base:
        status, answer = _post(base, {"dataframe_records": [record]})
        assert status == 200, answer
        [prediction] = answer["predictions"]
        assert prediction["probability_exited"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
        assert prediction["label"] == ("exited" if expected > 0.5 else "stayed")

        status, answer = _post(base, {"dataframe_records": [{"CreditScore": 600, "Geography": "France"}]})
        assert status == 400 and "Gender" in answer["message"], answer  # MLflow's schema enforcement names it
        status, answer = _post(base, {"inputs": [[0.1] * 12]})  # the prepared layout is not the raw one
        assert status == 400, answer


@pytest.mark.integration
def test_served_imdb_and_lenet_answer_raw_text_and_pixels(tiny_repo, mirror):
    repo, env, _ = tiny_repo
    with _served(repo, env, "deepnotes-lstm_imdb") as base:
        review = "A wonderful film.<br /><br />The acting is superb and the story moved me to tears."
        status, answer = _post(base, {"dataframe_records": [{"text": review}, {"text": "Dull, long and badly acted."}]})
        assert status == 200, answer
        assert [p["label"] in ("negative", "positive") for p in answer["predictions"]] == [True, True]
        assert all(0 <= p["probability"] <= 1 for p in answer["predictions"])
    pixels = read_idx(mirror / "mnist" / "t10k-images-idx3-ubyte.gz")[:3, None]
    x_test, logits = _test_outputs(repo, "lenet5_mnist")
    with _served(repo, env, "deepnotes-lenet5_mnist") as base:
        status, answer = _post(base, {"inputs": pixels.tolist()})  # 0-255 integers, as read from the file
        assert status == 200, answer
        labels = [p["label"] for p in answer["predictions"]]
        assert len(labels) == 3 and all(isinstance(label, str) for label in labels)
        status, answer = _post(base, {"inputs": pixels[:, 0].tolist()})  # (N, 28, 28): no channel axis
        assert status == 400, answer


@pytest.mark.integration
def test_rerunning_evaluate_on_unchanged_weights_adds_no_version(tiny_repo):
    import mlflow

    repo, env, _ = tiny_repo
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow' / 'mlflow.db'}")
    name = "deepnotes-perceptron_and"
    before = client.search_model_versions(f"name = '{name}'")
    assert len(before) == 1
    version = before[0]
    run_tags = client.get_run(version.run_id).data.tags
    assert version.tags["weights_sha256"] == run_tags["weights_sha256"]
    assert version.tags["data_hash"] == run_tags["data_hash"] and version.tags["experiment"] == "perceptron_and"
    assert version.tags["git_commit"] == run_tags["git_commit"]
    _run([str(BIN / "dvc"), "repro", "-f", "-s", "evaluate@perceptron_and"], repo, env)
    after = client.search_model_versions(f"name = '{name}'")
    assert [v.version for v in after] == [version.version]
    result = json.loads((repo / "metrics" / "evaluate" / "perceptron_and.json").read_text())
    assert result["registry"]["version"] == int(version.version) and result["registry"]["alias"] == "champion"


def test_a_raw_input_kind_defined_elsewhere_is_named_by_module_and_class(tmp_path: Path) -> None:
    """A prepared dataset names a kind that lives beside its preparer (``meta["raw_input"]``); it is rebuilt from
    that name, and a name that does not import is one clear error."""
    from pipelines.data.encoding import load_raw_input

    class Elsewhere(TextInput):
        kind = f"{__name__}:Elsewhere"

    globals()["Elsewhere"] = Elsewhere
    try:
        (tmp_path / "tokenizer.json").write_text("{}")
        raw = raw_input_for({"raw_input": Elsewhere.kind, "tokenizer": "tokenizer.json"}, tmp_path)
        assert type(raw) is Elsewhere
        again = load_raw_input(raw.to_json(), tmp_path)
        assert type(again) is Elsewhere and again.spec == raw.spec
    finally:
        del globals()["Elsewhere"]
    with pytest.raises(RawInputError, match=r"raw input kind 'pipelines.data.encoding:Nowhere' does not import"):
        load_raw_input({"kind": "pipelines.data.encoding:Nowhere", "spec": {}, "files": []}, tmp_path)
