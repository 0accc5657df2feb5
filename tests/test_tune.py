"""Optuna searches (``pipelines.stages.tune``) on real data: the churn MLP on a slice of the real churn table.

The search tests run ``python -m pipelines.stages.tune`` as a user would, in a temporary copy of the repo (its own
prepared data, journal storage, MLflow store and tuned-params files), with trials of a few batches each.
The search-space and config tests run in-process without training.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from pipelines.config import ConfigError, validate
from pipelines.tuning.search_space import SearchSpace, overrides_from, set_path
from tests.conftest import REPO_ROOT

BIN = Path(sys.executable).parent
EXPERIMENT = "mlp_churn"
# Small and quick trials: 4 epochs of 6 batches of the real churn table (1,000 train rows).
TRIAL = {"trainer": {"max_epochs": 4, "limit_train_batches": 6, "limit_val_batches": 4}}


def _params_raw() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def _config_error(mutate) -> str:
    raw = _params_raw()
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        validate(raw).search_space(EXPERIMENT)
    return str(info.value)


# ------------------------------------------------------------------------------------- space and config


def test_every_experiment_has_a_valid_space_and_a_tuned_file():
    params = validate(_params_raw())
    for name in params.experiments:
        space = params.search_space(name)
        assert len(space) >= 5, name
        assert (REPO_ROOT / "params" / "tuned" / f"{name}.yaml").is_file(), f"params/tuned/{name}.yaml missing"
    settings = params.tune_settings("lenet5_mnist")
    assert (settings.metric, settings.direction, settings.sampler) == ("val_loss", "minimize", "tpe")


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda r: r["tuning"]["space"]["initializer"].update(choices=["he_normal", "glorot"]),
            "initializer: value 'glorot' is not valid",
        ),
        (
            lambda r: r["tuning"]["space"]["optimizer.lr"].update(low=0.1, high=0.01),
            "tuning.space.optimizer.lr: low must be below high",
        ),
        (lambda r: r["tuning"]["space"]["optimizer.lr"].update(low=0.0), "log: true needs low > 0"),
        (lambda r: r["tuning"]["space"]["dropout"].update(high=1.0), "dropout: value 1.0 is not valid"),
        (
            lambda r: r["tuning"]["space"].update({"optimizer.lrr": {"type": "float", "low": 0.1, "high": 1.0}}),
            "optimizer.lrr: the experiment has no setting 'optimizer.lrr'",
        ),
        (
            lambda r: r["tuning"]["space"]["optimizer.momentum"].update(when={"optimizer.name": ["sgdd"]}),
            "'sgdd' is not a value of optimizer.name",
        ),
        (
            lambda r: r["tuning"]["space"]["optimizer.momentum"].update(when={"optimizer.lr": [0.1]}),
            "'optimizer.lr' must be a categorical parameter",
        ),
        (
            lambda r: r["tuning"]["space"].update({"x": {"type": "floaty", "low": 0, "high": 1}}),
            "does not match any of the expected tags",
        ),
        (
            lambda r: r["tuning"]["space"]["regularization.strength"].update(low=0.0, log=False),
            "regularization.type is 'l1' but regularization.strength is 0",
        ),
    ],
)
def test_bad_search_space_is_named_before_any_trial(mutate, expected):
    assert expected in _config_error(mutate)


def test_unknown_experiment_and_metric_in_tuning_are_errors():
    raw = _params_raw()
    raw["tuning"]["experiments"]["nope"] = {}
    with pytest.raises(ConfigError, match="tuning.experiments.nope: no such experiment"):
        validate(raw)
    raw = _params_raw()
    raw["tuning"]["experiments"][EXPERIMENT] = {"metric": "val_r2"}
    with pytest.raises(ConfigError, match="'val_r2' is not logged for a binary task"):
        validate(raw).tune_settings(EXPERIMENT)


def test_conditional_params_are_sampled_only_under_their_parent():
    space = validate(_params_raw()).search_space(EXPERIMENT)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        values = space.suggest(trial)
        name = values["optimizer.name"]
        seen.add(name)
        assert ("optimizer.momentum" in values) == (name in ("sgd_momentum", "nesterov")), values
        assert ("optimizer.betas.0" in values) == (name in ("adam", "adamw")), values
        assert ("regularization.strength" in values) == (values["regularization.type"] != "none"), values
        assert ("regularization.l1_ratio" in values) == (values["regularization.type"] == "elastic_net"), values
        study.tell(trial, 0.0)
    assert {"sgd", "sgd_momentum", "adam"} <= seen


def test_overrides_are_nested_and_fill_lists_from_the_experiment():
    base = {"optimizer": {"name": "adam", "betas": [0.9, 0.999]}, "dropout": 0.0}
    out = overrides_from({"optimizer.betas.0": 0.8, "optimizer.lr": 0.01, "dropout": 0.3}, base)
    assert out == {"optimizer": {"betas": [0.8, 0.999], "lr": 0.01}, "dropout": 0.3}
    with pytest.raises(ValueError, match="not a mapping"):
        set_path({"dropout": 0.1}, "dropout.x", 1)
    with pytest.raises(ValueError, match="out of range"):
        set_path({}, "optimizer.betas.2", 1, base)
    with pytest.raises(ValueError, match="declared earlier"):
        SearchSpace.from_raw(
            {"optimizer.momentum": {"type": "float", "low": 0.1, "high": 0.9, "when": {"optimizer.name": ["sgd"]}}}
        )


def test_use_tuned_merges_the_tuned_file_and_fails_clearly_without_it(tmp_path):
    raw = _params_raw()
    raw["experiments"][EXPERIMENT]["use_tuned"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    from pipelines.config import load_params

    with pytest.raises(ConfigError, match=r"use_tuned is true but the file does not exist; run `deepnotes tune"):
        load_params(tmp_path / "params.yaml")
    tuned = tmp_path / "params" / "tuned" / f"{EXPERIMENT}.yaml"
    tuned.parent.mkdir(parents=True)
    tuned.write_text("params: {}\n")
    with pytest.raises(ConfigError, match="holds no tuned params"):
        load_params(tmp_path / "params.yaml")
    tuned.write_text(yaml.safe_dump({"params": {"optimizer": {"name": "sgd_momentum", "lr": 0.05}, "dropout": 0.1}}))
    exp = load_params(tmp_path / "params.yaml").experiment(EXPERIMENT)
    assert (exp.optimizer.name, exp.optimizer.lr, exp.dropout) == ("sgd_momentum", 0.05, 0.1)
    assert exp.batch_size == raw["experiments"][EXPERIMENT]["batch_size"]  # untouched settings stay


# ----------------------------------------------------------------------------------- real searches


def _env(mirror: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DEEPNOTES_"))}
    return env | {
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "DEEPNOTES_DATA_MIRROR": str(mirror),
        "PYTHONUNBUFFERED": "1",
    }


def _run(repo: Path, *args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=900
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout[-5000:]}\n"
            f"--- stderr\n{result.stderr[-8000:]}"
        )
    return result


@pytest.fixture(scope="module")
def repo(tmp_path_factory, mirror) -> tuple[Path, dict[str, str]]:
    """A copy of the code and params with churn prepared from the mirror (1,000 train rows) and small trials."""
    root = tmp_path_factory.mktemp("tune") / "repo"
    root.mkdir()
    for name in ("pipelines", "models", "params", "scheduling"):
        shutil.copytree(REPO_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    raw = _params_raw()
    raw["datasets"]["churn"]["max_train_samples"] = 1000
    raw["tuning"] |= {"n_startup_trials": 2, "n_warmup_steps": 0, "heartbeat_interval": 2, "grace_period": 600}
    raw["tuning"]["experiments"][EXPERIMENT] = {"trial": TRIAL}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = _env(mirror)
    _run(root, "pipelines.stages.prepare", "churn", env=env)
    _run(root, "pipelines.stages.augment", "churn", env=env)
    return root, env


def _study(repo: Path, name: str) -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(repo / "studies" / "deepnotes.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def _mlflow_runs(repo: Path, study_name: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"deepnotes-tune/{study_name}")
    return client.search_runs([experiment.experiment_id], max_results=1000), client


def tune_two_trials(root: Path, mirror: Path, dataset: str, experiment: str) -> tuple[list, dict]:
    """A tiny code copy in ``root``, ``dataset`` prepared and augmented, and ``deepnotes tune <experiment>`` for 2
    trials; returns the trials' nested MLflow runs (both checked COMPLETE) and the written ``params/tuned`` file."""
    import yaml

    from tests.conftest import tiny_code_copy

    env = tiny_code_copy(root, mirror)
    _run(root, "pipelines.stages.prepare", dataset, env=env)
    _run(root, "pipelines.stages.augment", dataset, env=env)
    _run(root, "pipelines.stages.tune", experiment, "--n-trials", "2", "--study-name", "two", env=env)
    runs, _ = _mlflow_runs(root, "two")
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2 and all(r.data.tags["state"] == "COMPLETE" for r in children)
    return children, yaml.safe_load((root / "params" / "tuned" / f"{experiment}.yaml").read_text())


def test_search_prunes_tracks_every_trial_and_writes_the_best_params(repo):
    root, env = repo
    out = _run(root, "pipelines.stages.tune", EXPERIMENT, "--n-trials", "8", "--study-name", "main", env=env)
    study = _study(root, "main")
    trials = study.get_trials()
    states = [t.state.name for t in trials]
    assert len(trials) == 8 and sorted(t.number for t in trials) == list(range(8))
    assert "PRUNED" in states, (states, [t.intermediate_values for t in trials])
    assert "COMPLETE" in states and "FAIL" not in states
    for trial in trials:
        if trial.state.name == "PRUNED":
            assert "median pruner stopped it after epoch" in trial.user_attrs["prune_reason"]
            assert len(trial.intermediate_values) < TRIAL["trainer"]["max_epochs"]

    runs, client = _mlflow_runs(root, "main")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {int(r.data.tags["trial_number"]): r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(parents) == 1 and sorted(children) == list(range(8))
    parent = parents[0]
    for trial in trials:
        child = children[trial.number]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["state"] == trial.state.name
        assert child.info.status == "FINISHED"  # pruned trials are not failed runs
        assert child.data.tags["study_name"] == "main"
        assert "data_hash" in child.data.tags  # empty here: no dvc.lock (the DVC stage test sees a real one)
        assert "val_loss" in child.data.metrics and "optimizer.lr" in child.data.params
        assert float(child.data.params["optimizer.lr"]) == pytest.approx(trial.params["optimizer.lr"])
    metrics = parent.data.metrics
    assert metrics["best_value"] == pytest.approx(study.best_value)
    assert metrics["study_pruned"] == states.count("PRUNED") and metrics["study_complete"] == states.count("COMPLETE")
    assert parent.data.params["best.optimizer.lr"] == str(study.best_params["optimizer.lr"])
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {
        "plots/optimization_history.png",
        "plots/param_importances.png",
        "plots/parallel_coordinate.png",
        "plots/slice.png",
    } <= plots

    tuned = yaml.safe_load((root / "params" / "tuned" / f"{EXPERIMENT}.yaml").read_text())
    assert tuned["trial"] == study.best_trial.number and tuned["value"] == pytest.approx(study.best_value)
    assert tuned["params"]["optimizer"]["lr"] == pytest.approx(study.best_params["optimizer.lr"])
    assert "best val_loss" in out.stdout


def test_resume_continues_the_numbering_and_never_reruns_a_trial(repo):
    """A second session with a higher target adds trials after the first's, a third at the same target adds none.

    The test runs its own study ("resume"), so it needs no other test to have run first.
    """
    root, env = repo
    common = ("--study-name", "resume", "--pruner", "none")
    _run(root, "pipelines.stages.tune", EXPERIMENT, "--n-trials", "3", *common, env=env)
    before = {t.number: (t.datetime_start, t.value, t.state) for t in _study(root, "resume").get_trials()}
    assert sorted(before) == [0, 1, 2]
    _run(root, "pipelines.stages.tune", EXPERIMENT, "--n-trials", "5", *common, env=env)
    after = _study(root, "resume").get_trials()
    assert [t.number for t in after] == list(range(5))
    for trial in after[:3]:
        assert (trial.datetime_start, trial.value, trial.state) == before[trial.number]
    again = _run(root, "pipelines.stages.tune", EXPERIMENT, "--n-trials", "5", *common, env=env)
    assert len(_study(root, "resume").get_trials()) == 5 and "this session 0" in again.stdout
    runs, _ = _mlflow_runs(root, "resume")
    sessions = sorted(r.info.run_name for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert sessions == ["session-001", "session-002", "session-003"]


def test_two_workers_run_exactly_the_target_without_duplicates(repo):
    root, env = repo
    _run(
        root,
        "pipelines.stages.tune",
        EXPERIMENT,
        "--n-trials",
        "6",
        "--workers",
        "2",
        "--study-name",
        "parallel",
        "--pruner",
        "none",
        env=env,
    )
    trials = _study(root, "parallel").get_trials()
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(6)) and len(set(numbers)) == 6
    assert all(t.state.name == "COMPLETE" for t in trials)
    workers = {t.system_attrs["deepnotes:worker"]["pid"] for t in trials}
    assert len(workers) == 2, workers  # both worker processes ran trials
    runs, _ = _mlflow_runs(root, "parallel")
    assert sorted(int(r.data.tags["trial_number"]) for r in runs if "trial_number" in r.data.tags) == list(range(6))


def _enqueue(root: Path, name: str, *fixed: dict) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    (root / "studies").mkdir(exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(root / "studies" / "deepnotes.journal")))
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
    for params in fixed:
        study.enqueue_trial(params, skip_if_exists=False)


def test_nan_loss_is_pruned_with_a_reason_and_an_exception_is_a_failed_trial(repo):
    root, env = repo
    params = root / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    injected = dict(raw)
    injected["tuning"] = dict(
        raw["tuning"],
        experiments={
            EXPERIMENT: {
                "trial": TRIAL,
                "space": {
                    "optimizer.name": {"type": "categorical", "choices": ["sgd"]},
                    "optimizer.lr": {"type": "float", "low": 1.0e-3, "high": 1.0e30, "log": True},
                    "trainer.precision": {"type": "categorical", "choices": ["32-true", "no-such-precision"]},
                },
            }
        },
    )
    params_injected = root / "params-injected.yaml"
    params_injected.write_text(yaml.safe_dump(injected, sort_keys=False))
    _enqueue(
        root,
        "injected",
        {"optimizer.lr": 1.0e30, "trainer.precision": "32-true"},  # NaN after one step
        {"optimizer.lr": 0.05, "trainer.precision": "32-true"},  # fine
        {"optimizer.lr": 0.05, "trainer.precision": "no-such-precision"},
    )  # Lightning raises
    result = _run(
        root,
        "pipelines.stages.tune",
        EXPERIMENT,
        "--n-trials",
        "3",
        "--study-name",
        "injected",
        "--params",
        str(params_injected),
        "--pruner",
        "none",
        env=env,
    )
    trials = sorted(_study(root, "injected").get_trials(), key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["PRUNED", "COMPLETE", "FAIL"], result.stderr[-3000:]
    assert re.search(r"non-finite training loss \((nan|inf|-inf)\) at epoch 0", trials[0].user_attrs["prune_reason"])
    assert "no-such-precision" in trials[2].user_attrs["fail_reason"]
    runs, _ = _mlflow_runs(root, "injected")
    by_number = {int(r.data.tags["trial_number"]): r for r in runs if "trial_number" in r.data.tags}
    assert (by_number[0].info.status, by_number[0].data.tags["state"]) == ("FINISHED", "PRUNED")
    assert "non-finite" in by_number[0].data.tags["prune_reason"]
    assert (by_number[1].info.status, by_number[1].data.tags["state"]) == ("FINISHED", "COMPLETE")
    assert (by_number[2].info.status, by_number[2].data.tags["state"]) == ("FAILED", "FAIL")
    assert "no-such-precision" in by_number[2].data.tags["fail_reason"]


def test_a_killed_worker_trial_is_failed_and_retried_on_the_next_start(repo):
    root, env = repo
    slow = dict(yaml.safe_load((root / "params.yaml").read_text()))
    slow["tuning"] = dict(
        slow["tuning"],
        experiments={
            EXPERIMENT: {"trial": {"trainer": {"max_epochs": 200, "limit_train_batches": 6, "limit_val_batches": 2}}}
        },
    )
    params_slow = root / "params-slow.yaml"
    params_slow.write_text(yaml.safe_dump(slow, sort_keys=False))
    argv = [
        sys.executable,
        "-m",
        "pipelines.stages.tune",
        EXPERIMENT,
        "--n-trials",
        "1",
        "--study-name",
        "killed",
        "--params",
        str(params_slow),
        "--pruner",
        "none",
    ]
    proc = subprocess.Popen(
        argv, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(1)
            if not (root / "studies" / "deepnotes.journal").exists():  # first search in this repo: not started yet
                continue
            try:
                trials = _study(root, "killed").get_trials()
            except KeyError:  # study not created yet
                continue
            if trials and trials[0].state.name == "RUNNING" and trials[0].intermediate_values:
                break
        else:
            pytest.fail("the first trial never started training")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert _study(root, "killed").get_trials()[0].state.name == "RUNNING"  # the kill left it running
    # the next start fails it at once (its worker is gone), re-queues its params and runs them
    params_quick = root / "params-quick.yaml"
    quick = dict(slow, tuning=dict(slow["tuning"], experiments={EXPERIMENT: {"trial": TRIAL}}))
    params_quick.write_text(yaml.safe_dump(quick, sort_keys=False))
    _run(
        root,
        "pipelines.stages.tune",
        EXPERIMENT,
        "--n-trials",
        "1",
        "--study-name",
        "killed",
        "--params",
        str(params_quick),
        "--pruner",
        "none",
        env=env,
    )
    trials = sorted(_study(root, "killed").get_trials(), key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].params == trials[0].params
    runs, _ = _mlflow_runs(root, "killed")
    killed_run = next(r for r in runs if r.data.tags.get("trial_number") == "0")
    assert (killed_run.info.status, killed_run.data.tags["state"]) == ("FAILED", "FAIL")
    assert "worker stopped" in killed_run.data.tags["fail_reason"]


def test_train_with_use_tuned_reproduces_the_winning_trial(repo):
    """With no per-trial overrides, ``train`` on the tuned params gives the best trial's value exactly."""
    root, env = repo
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["experiments"][EXPERIMENT]["trainer"] = dict(raw["experiments"][EXPERIMENT]["trainer"], **TRIAL["trainer"])
    raw["experiments"][EXPERIMENT]["early_stopping"] = {"enabled": False}
    raw["tuning"] = dict(raw["tuning"], experiments={})
    params_exact = root / "params-exact.yaml"
    params_exact.write_text(yaml.safe_dump(raw, sort_keys=False))
    _run(
        root,
        "pipelines.stages.tune",
        EXPERIMENT,
        "--n-trials",
        "3",
        "--study-name",
        "exact",
        "--params",
        str(params_exact),
        "--pruner",
        "none",
        env=env,
    )
    study = _study(root, "exact")
    raw["experiments"][EXPERIMENT]["use_tuned"] = True
    params_exact.write_text(yaml.safe_dump(raw, sort_keys=False))
    _run(root, "pipelines.stages.train", EXPERIMENT, "--params", str(params_exact), env=env)
    import json

    summary = json.loads((root / "metrics" / "train" / f"{EXPERIMENT}.json").read_text())
    assert summary["best_val_loss"] == pytest.approx(study.best_value, rel=1e-6)


def test_scheduled_sessions_run_concurrently_on_one_study(repo):
    """Two overlapping runs of the scheduling wrapper (what cron, systemd and SLURM start) share the study: the
    target total holds and no trial number repeats."""
    root, env = repo
    argv = [
        "bash",
        "scheduling/tune-session.sh",
        EXPERIMENT,
        "--n-trials",
        "4",
        "--study-name",
        "scheduled",
        "--pruner",
        "none",
        "--timeout",
        "600",
    ]
    session_env = env | {"DEEPNOTES_PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(argv, cwd=root, env=session_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    trials = _study(root, "scheduled").get_trials()
    assert sorted(t.number for t in trials) == list(range(4))
    assert all(t.state.name == "COMPLETE" for t in trials)
    runs, _ = _mlflow_runs(root, "scheduled")
    assert len([r for r in runs if "mlflow.parentRunId" not in r.data.tags]) == 2  # one parent run per session
    assert (root / "studies" / "logs" / "sessions.log").read_text().count("tune mlp_churn") == 2


@pytest.mark.parametrize("sampler, pruner", [("cmaes", "successive_halving"), ("gp", "hyperband")])
def test_every_sampler_and_pruner_runs_a_search(repo, sampler, pruner):
    root, env = repo
    name = f"{sampler}-{pruner}"
    _run(
        root,
        "pipelines.stages.tune",
        EXPERIMENT,
        "--n-trials",
        "7",
        "--study-name",
        name,
        "--sampler",
        sampler,
        "--pruner",
        pruner,
        env=env,
    )
    trials = _study(root, name).get_trials()
    assert len(trials) == 7 and not [t for t in trials if t.state.name == "FAIL"]
    assert any(t.state.name == "COMPLETE" for t in trials)


# ------------------------------------------------------------------------------ liveness and storage


def _age_past(grace_period: float, since: float) -> None:
    """Wait until a heartbeat recorded at ``since`` is older than ``grace_period`` in every storage.

    The margin is over a second: SQLite's ``CURRENT_TIMESTAMP``, which Optuna's RDB heartbeat stores, has whole
    seconds, so a beat at 0.0 s compared at 2.9 s counts as 2 s old.
    """
    while time.time() - since <= grace_period + 1.5:
        time.sleep(0.2)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning", "ignore:Heartbeat of storage")
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_stale_heartbeat_fails_the_trial_after_a_small_grace_period_and_re_queues_it(tmp_path, kind):
    """Two RUNNING trials of live workers (this process, so only the heartbeat decides): the one whose last
    heartbeat is older than ``grace_period`` (2 s) is failed, its MLflow run closed FAILED with the reason and its
    params re-queued (``RetryHeartbeatStaleTrialCallback``); the one that beat just now keeps running."""
    import mlflow

    from pipelines.tuning.search import StaleTrialHandler
    from pipelines.tuning.studies import WORKER_KEY, make_storage, worker_identity

    url = f"sqlite:///{tmp_path / 'optuna.db'}" if kind == "sqlite" else str(tmp_path / "optuna.journal")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking)
    experiment_id = client.create_experiment("stale", artifact_location=(tmp_path / "artifacts").as_uri())
    storage = make_storage(
        url, heartbeat_interval=1, grace_period=2, stale_callback=StaleTrialHandler(tracking, max_retry=1)
    )
    study = optuna.create_study(study_name="stale", storage=storage, direction="minimize")
    trials = []
    for _ in range(2):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        storage.set_trial_system_attr(trial._trial_id, WORKER_KEY, worker_identity())
        run_id = client.create_run(experiment_id, tags={"state": "RUNNING"}).info.run_id
        trial.set_user_attr("mlflow_run_id", run_id)
        storage.record_heartbeat(trial._trial_id)
        trials.append(trial)
    stale, alive = trials
    _age_past(2, time.time())
    storage.record_heartbeat(alive._trial_id)  # a live worker's heartbeat thread
    assert storage._get_stale_trial_ids(study._study_id) == [stale._trial_id]

    optuna.storages.fail_stale_trials(study)
    by_number = {t.number: t for t in study.get_trials()}
    assert [by_number[n].state.name for n in sorted(by_number)] == ["FAIL", "RUNNING", "WAITING"]
    retry = by_number[2]
    assert retry.system_attrs["failed_trial"] == stale.number and retry.params == by_number[0].params
    stale_run = client.get_run(by_number[0].user_attrs["mlflow_run_id"])
    assert (stale_run.info.status, stale_run.data.tags["state"]) == ("FAILED", "FAIL")
    assert "no heartbeat within the grace period" in stale_run.data.tags["fail_reason"]
    assert client.get_run(by_number[1].user_attrs["mlflow_run_id"]).info.status == "RUNNING"
    optuna.storages.fail_stale_trials(study)  # idempotent: nothing else is stale, nothing re-queued twice
    assert len(study.get_trials()) == 3


def test_a_grace_period_not_longer_than_the_heartbeat_interval_is_refused(tmp_path):
    """``grace_period <= heartbeat_interval`` would fail live trials between two heartbeats: a config error."""
    from pipelines.tuning.studies import make_storage

    for grace in (1, 5):
        with pytest.raises(ConfigError, match=r"tuning\.grace_period: \d s is not longer than tuning\.heartbeat"):
            make_storage(str(tmp_path / "j.journal"), heartbeat_interval=5, grace_period=grace)
    make_storage(str(tmp_path / "j.journal"), heartbeat_interval=5, grace_period=6)
    make_storage(str(tmp_path / "j.journal"), heartbeat_interval=5, grace_period=None)  # 2 x interval


def test_the_storage_flag_wins_over_the_environment_which_wins_over_params(tmp_path, monkeypatch):
    """:func:`storage_url`'s order: ``--storage``, then ``DEEPNOTES_OPTUNA_STORAGE``, then ``tuning.storage``."""
    from pipelines.tuning.studies import DEFAULT_JOURNAL, storage_url

    flag, from_env, configured = (f"sqlite:///{tmp_path / n}.db" for n in ("flag", "env", "params"))
    monkeypatch.setenv("DEEPNOTES_OPTUNA_STORAGE", from_env)
    assert storage_url(flag, configured) == flag
    assert storage_url(None, configured) == from_env
    monkeypatch.delenv("DEEPNOTES_OPTUNA_STORAGE")
    assert storage_url(None, configured) == configured
    assert storage_url(None, None) == str(DEFAULT_JOURNAL)
    monkeypatch.chdir(tmp_path)
    assert storage_url("journal://studies/x.journal") == str(tmp_path / "studies" / "x.journal")  # made absolute


def _studies_in(url: str) -> list[str]:
    """The study names in an RDB storage, ``[]`` when its database file was never created."""
    if not Path(url.removeprefix("sqlite:///")).exists():
        return []
    return optuna.get_all_study_names(storage=url)


def test_tune_creates_the_study_in_the_flag_storage_else_in_the_environment_one(repo, tmp_path):
    """With ``DEEPNOTES_OPTUNA_STORAGE`` set, ``tune --storage URL`` creates its study in URL only (and the
    session's MLflow parent run names URL); without the flag the study goes to the environment's storage."""
    root, env = repo
    flag, from_env = f"sqlite:///{tmp_path / 'flag.db'}", f"sqlite:///{tmp_path / 'env.db'}"
    env = env | {"DEEPNOTES_OPTUNA_STORAGE": from_env}
    journal_before = _journal_studies(root)
    quick = ("--n-trials", "1", "--pruner", "none")
    _run(root, "pipelines.stages.tune", EXPERIMENT, "--storage", flag, "--study-name", "by-flag", *quick, env=env)
    assert _studies_in(flag) == ["by-flag"] and _studies_in(from_env) == []
    study = optuna.load_study(study_name="by-flag", storage=flag)
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"]
    _run(root, "pipelines.stages.tune", EXPERIMENT, "--study-name", "by-env", *quick, env=env)
    assert _studies_in(from_env) == ["by-env"] and _studies_in(flag) == ["by-flag"]
    assert _journal_studies(root) == journal_before  # the default journal was never touched
    runs = {name: _mlflow_runs(root, name)[0] for name in ("by-flag", "by-env")}
    parents = {name: [r for r in found if "mlflow.parentRunId" not in r.data.tags] for name, found in runs.items()}
    assert [r.data.tags["storage"] for r in parents["by-flag"]] == [flag]
    assert [r.data.tags["storage"] for r in parents["by-env"]] == [from_env]


def _journal_studies(root: Path) -> list[str]:
    """The study names in the repo's default journal (``[]`` before any search wrote it)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = root / "studies" / "deepnotes.journal"
    if not path.exists():
        return []
    return sorted(s.study_name for s in JournalStorage(JournalFileBackend(str(path))).get_all_studies())


def test_tune_fails_a_trial_with_a_stale_heartbeat_on_rdb_storage_and_reruns_its_params(repo, tmp_path):
    """A trial left RUNNING in an SQLite study by a worker that is still alive but stopped beating (hung, or on a
    host that lost its network) is failed by the next ``tune --storage sqlite:///...`` once its heartbeat is older
    than ``tuning.grace_period`` (2 s here), and its params are rerun as a new trial."""
    from pipelines.tuning.studies import WORKER_KEY, make_storage, worker_identity

    root, env = repo
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["tuning"] = dict(raw["tuning"], heartbeat_interval=1, grace_period=2)
    params_file = root / "params-heartbeat.yaml"
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = make_storage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="heartbeat", storage=storage, direction="minimize")
    trial = study.ask()
    validate(raw).search_space(EXPERIMENT).suggest(trial)  # a full point of the real space
    storage.set_trial_system_attr(trial._trial_id, WORKER_KEY, worker_identity())  # alive: this test process
    storage.record_heartbeat(trial._trial_id)
    _age_past(2, time.time())
    _run(
        root,
        "pipelines.stages.tune",
        EXPERIMENT,
        "--storage",
        url,
        "--study-name",
        "heartbeat",
        "--n-trials",
        "1",
        "--pruner",
        "none",
        "--params",
        str(params_file),
        env=env,
    )
    trials = sorted(optuna.load_study(study_name="heartbeat", storage=url).get_trials(), key=lambda t: t.number)
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].params == trials[0].params
