"""optuna-dashboard over the project's studies (issue 13, part 7): a search names its objective, and the dashboard's
JSON API (what its pages read) shows that name instead of "Objective 0".

A search of the churn MLP (2 trials of a few batches on 512 real churn rows, tiny profile) runs as a user runs it,
``python -m pipelines.stages.tune`` in a copy of the repo (:func:`tests.conftest.make_tiny_copy`); then
``python -m pipelines.tuning.dashboard`` (``make dashboard``) serves that copy's journal on a free loopback port.
Studies made before objectives had names are the same trials in a study without names; they are checked through
optuna-dashboard's WSGI app in-process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
import yaml

from pipelines.config import ConfigError, load_params
from tests.conftest import _free_port, _run, make_tiny_copy

EXPERIMENT = "mlp_churn"
STUDY = "dash"
#: 2 epochs of 3 train and 2 val batches per trial.
TRIAL = {"trainer": {"max_epochs": 2, "limit_train_batches": 3, "limit_val_batches": 2}}


@pytest.fixture(scope="module")
def searched(tmp_path_factory, mirror) -> tuple[Path, dict[str, str], str]:
    """A tiny copy of the repo with churn prepared from the mirror and a 2-trial search, study ``dash``.

    Returns ``(repo, env, metric)``, ``metric`` being the experiment's objective from its params.
    """
    root = tmp_path_factory.mktemp("dashboard") / "repo"
    env = make_tiny_copy(root, mirror)
    params = root / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    raw["tuning"]["experiments"][EXPERIMENT] = {"trial": TRIAL}
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    for stage in ("prepare", "augment"):
        _run([sys.executable, "-m", f"pipelines.stages.{stage}", "churn"], root, env)
    tune = [sys.executable, "-m", "pipelines.stages.tune", EXPERIMENT, "--study-name", STUDY]
    _run([*tune, "--n-trials", "2", "--pruner", "none"], root, env)
    return root, env, load_params(params).tune_settings(EXPERIMENT).metric


def _journal(root: Path) -> Path:
    return root / "studies" / "deepnotes.journal"


def _load(journal: Path, name: str) -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(journal))))


def _wsgi_get(app, path: str) -> dict[str, Any]:
    """GET ``path`` from a WSGI app, as a browser's request reaches it; the JSON answer (fails on a non-200)."""
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ |= {"REQUEST_METHOD": "GET", "PATH_INFO": path}
    status: list[str] = []
    body = b"".join(app(environ, lambda code, headers, exc_info=None: status.append(code)))
    assert status and status[0].startswith("200"), (path, status, body[:500])
    return json.loads(body)


def _study_detail(get, name: str) -> dict[str, Any]:
    """The dashboard's study list entry and detail of study ``name``, through ``get(path) -> JSON``."""
    summaries = {s["study_name"]: s for s in get("/api/studies")["study_summaries"]}
    assert name in summaries, sorted(summaries)
    return get(f"/api/studies/{summaries[name]['study_id']}")


def test_a_search_names_its_objective_and_make_dashboard_shows_it(searched):
    root, env, metric = searched
    assert metric == "val_loss"  # the experiment's checkpoint.monitor, the objective the issue names
    study = _load(_journal(root), STUDY)
    assert study.metric_names == [metric]  # named by the search itself, before any dashboard ran
    assert len(study.trials) == 2 and all(t.state.name == "COMPLETE" for t in study.trials)

    port = _free_port()
    log = root.parent / "dashboard.log"  # a file, not a pipe: the server logs every request
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "pipelines.tuning.dashboard", "--port", str(port)],
            cwd=root,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> dict[str, Any]:
        with urllib.request.urlopen(base + path, timeout=10) as response:
            return json.loads(response.read())

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                get("/api/meta")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the dashboard did not come up: {log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.5)
        detail = _study_detail(get, STUDY)
        with urllib.request.urlopen(f"{base}/dashboard", timeout=10) as page:
            html = page.read().decode()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert detail["objective_names"] == [metric]
    assert detail["directions"] == ["minimize"]
    assert [t["values"] for t in detail["trials"]] == [t.values for t in study.trials]
    assert [t["number"] for t in detail["best_trials"]] == [study.best_trial.number]
    assert "<html" in html.lower()
    printed = log.read_text(errors="replace")
    assert f"optuna-dashboard on {base}/dashboard over {_journal(root)}" in printed, printed[-2000:]


def test_a_study_from_before_names_gets_them_when_next_opened(searched, tmp_path):
    """The search's trials copied into studies made as ``deepnotes tune`` made them before it named objectives
    (the ``metric`` attribute, no metric name): the next search session names it, and so does ``make dashboard``
    for a study no search reopens. A study without a ``metric`` attribute is left alone."""
    from optuna_dashboard import wsgi

    from pipelines.tuning.studies import make_storage, name_objectives, open_study

    root, env, metric = searched
    journal = tmp_path / "deepnotes.journal"
    shutil.copy2(_journal(root), journal)
    storage = make_storage(str(journal), heartbeat_interval=30)
    trials = _load(journal, STUDY).trials
    for name, attrs in (("old-searched", {"metric": metric}), ("old-idle", {"metric": metric}), ("foreign", {})):
        old = optuna.create_study(study_name=name, storage=storage, direction="minimize")
        for key, value in attrs.items():
            old.set_user_attr(key, value)
        old.add_trials(trials)
    app = wsgi(storage)
    assert "objective_names" not in _study_detail(lambda p: _wsgi_get(app, p), "old-searched")  # "Objective 0"

    # the next session of the old study (one more trial on top of its two) names its objective
    tune = [sys.executable, "-m", "pipelines.stages.tune", EXPERIMENT, "--study-name", "old-searched"]
    _run([*tune, "--storage", str(journal), "--n-trials", "3", "--pruner", "none"], root, env)
    searched_again = _study_detail(lambda p: _wsgi_get(wsgi(storage), p), "old-searched")
    assert searched_again["objective_names"] == [metric] and len(searched_again["trials"]) == 3

    # make dashboard names the rest from their `metric` attribute, once
    assert name_objectives(storage) == ["old-idle"]
    assert name_objectives(storage) == []
    app = wsgi(storage)
    assert _study_detail(lambda p: _wsgi_get(app, p), "old-idle")["objective_names"] == [metric]
    assert "objective_names" not in _study_detail(lambda p: _wsgi_get(app, p), "foreign")

    # a search of another metric in the same study is refused: its values would not compare
    with pytest.raises(ConfigError, match=rf"created to minimize {metric}, but this search would minimize val_mae"):
        open_study(storage, str(journal), "old-searched", direction="minimize", metric="val_mae")


def test_dashboard_without_a_journal_says_what_to_run(tmp_path, capsys):
    from pipelines.tuning.dashboard import main

    missing = tmp_path / "none.journal"
    assert main(["--storage", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"no study journal at {missing}" in err and "deepnotes tune <experiment>" in err
    assert not missing.exists()
