"""params.yaml validation: the real file loads in every profile, and bad input names the key path."""

from __future__ import annotations

import copy

import pytest
import yaml

from pipelines.config import DEFAULT_PARAMS_PATH, ConfigError, load_params, validate


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(DEFAULT_PARAMS_PATH.read_text())


def with_change(raw: dict, path: str, value) -> dict:
    out = copy.deepcopy(raw)
    *parents, leaf = path.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return out


@pytest.mark.parametrize("profile", ["default", "full", "tiny"])
def test_real_params_load_in_every_profile(profile):
    params = load_params(profile=profile)
    assert params.profile == profile
    assert {"perceptron_and", "mlp_churn", "keras_convnet_mnist", "lenet5_mnist", "lstm_imdb"} <= set(
        params.experiments
    )


def test_profiles_merge_most_specific_last():
    default, full, tiny = (load_params(profile=p) for p in ("default", "full", "tiny"))
    assert default.experiment("lenet5_mnist").trainer.max_epochs == 5
    assert full.experiment("lenet5_mnist").trainer.max_epochs == 20  # the experiment's own full block
    assert tiny.experiment("lenet5_mnist").trainer.max_epochs == 1  # the global tiny block
    assert tiny.dataset("imdb").max_train_samples == 512 and default.dataset("imdb").max_train_samples == 16000
    assert full.experiment("bilstm_imdb").model == {
        "cell": "lstm",
        "embedding_dim": 64,
        "hidden_size": 128,
        "bidirectional": True,
    }  # the experiment's own full block
    assert full.dataset("imdb").seq_len == 256 and default.dataset("imdb").max_test_samples == 5000


def test_env_var_selects_profile(monkeypatch):
    monkeypatch.setenv("DEEPNOTES_PROFILE", "tiny")
    assert load_params().profile == "tiny"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("experiments.lenet5_mnist.optimizer.lr", -1, "experiments.lenet5_mnist.optimizer.lr"),
        ("experiments.lenet5_mnist.optimizer.name", "adamax", "experiments.lenet5_mnist.optimizer.name"),
        ("experiments.lenet5_mnist.bogus", 1, "experiments.lenet5_mnist.bogus: Extra inputs are not permitted"),
        ("experiments.lenet5_mnist.batch_size", "big", "experiments.lenet5_mnist.batch_size"),
        ("experiments.lenet5_mnist.model", {"pooling": "median"}, "model.pooling"),
        ("experiments.lenet5_mnist.model", {"depth": 3}, "model.depth"),
        ("experiments.mlp_churn.loss", "ce", "loss 'ce' does not fit the binary task"),
        ("experiments.lenet5_mnist.loss", "hinge", "loss 'hinge' does not fit the multiclass task"),
        ("experiments.lenet5_mnist.architecture", "conv1d_text", "cannot read image data"),
        ("experiments.lenet5_mnist.architecture", "transformer", "architecture 'transformer' is not registered"),
        ("experiments.mlp_churn.early_stopping.monitor", "val_r2", "early_stopping.monitor 'val_r2' is not logged"),
        ("experiments.mlp_churn.regularization", {"type": "l1", "strength": 0}, "regularization.strength is 0"),
        ("augment.mnist.hflip", True, "augment.mnist.hflip: a flip changes the label"),
        ("augment.churn.rotation_degrees", 10, "augment.churn: tabular data only takes noise_std"),
        ("datasets.mnist.val_fraction", 1.5, "datasets.mnist.val_fraction"),
        ("datasets.churn.options", {"max_words": 5}, "datasets.churn.options: takes no options; got max_words"),
        ("experiments.mlp_churn.task_options", {"beam_size": 4}, "task_options: takes no options; got beam_size"),
        ("profile", "huge", "unknown profile 'huge'"),
    ],
)
def test_bad_values_name_the_key_path(raw, path, value, message):
    with pytest.raises(ConfigError) as info:
        validate(with_change(raw, path, value))
    assert message in str(info.value)
    assert str(info.value).startswith("params.yaml")


def test_hinge_loss_on_regression_is_rejected(raw):
    assert validate(raw).experiment("mlp_melbourne").task == "regression"
    with pytest.raises(ConfigError, match="experiments.mlp_melbourne: .*loss 'hinge' does not fit the regression task"):
        validate(with_change(raw, "experiments.mlp_melbourne.loss", "hinge"))


def test_bootstrap_is_rejected_for_classification(raw):
    with pytest.raises(ConfigError, match="experiments.mlp_churn.*bootstrap.*needs a regression task"):
        validate(with_change(raw, "experiments.mlp_churn.diagnostics.bootstrap", {"enabled": True}))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("experiments: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("experiments:\n  x: 3\n")
    with pytest.raises(ConfigError, match="experiments.x: expected a mapping"):
        load_params(bad)


def test_unknown_experiment_lists_known(raw):
    params = validate(raw)
    with pytest.raises(ConfigError, match="no such experiment; known: .*lenet5_mnist"):
        params.experiment("resnet_mnist")


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_stage_rejects_unknown_experiment_before_running(stage, capsys):
    from pipelines.cli import main

    assert main([stage, "resnet_mnist"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: params.yaml: experiments.resnet_mnist: no such experiment")


def test_options_are_checked_against_their_model_and_stored_with_defaults():
    from pydantic import BaseModel, ConfigDict, Field

    from pipelines.config.base import validate_options

    class Decoding(BaseModel):
        model_config = ConfigDict(extra="forbid")
        beam_size: int = Field(1, ge=1)
        max_len: int = 20

    assert validate_options(Decoding, {"beam_size": 4}, "task_options") == {"beam_size": 4, "max_len": 20}
    assert validate_options(None, {}, "task_options") == {}
    with pytest.raises(ValueError, match=r"task_options\.beam_size: Input should be greater than or equal to 1"):
        validate_options(Decoding, {"beam_size": 0}, "task_options")
    with pytest.raises(ValueError, match=r"task_options\.beam: Extra inputs are not permitted"):
        validate_options(Decoding, {"beam": 2}, "task_options")
