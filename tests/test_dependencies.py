"""Stage dependencies that follow the code (``pipelines/stages/resolve.py``, ``pipelines/dependencies.py``).

The import closure on small made-up packages, then the acceptance test in a copy of the tiny repro (after a complete
``dvc repro``): each edit is followed by ``dvc repro resolve`` (what ``dvc repro`` runs first) and ``dvc status``, and
the set of changed stages must be exactly the ones the edit can change.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from pipelines.dependencies import import_closure
from tests.conftest import BIN, _run


def _write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_import_closure_follows_static_imports_anywhere_but_not_imports_by_name(tmp_path):
    _write(
        tmp_path,
        {
            "pipelines/__init__.py": "",
            "pipelines/stage.py": "import os\nfrom pipelines import core\n\ndef run():\n    from pipelines.lazy import f\n"
            "    import importlib\n    importlib.import_module('pipelines.by_name')\n",
            "pipelines/core.py": "from .sub import leaf\nimport torch\n",
            "pipelines/sub/__init__.py": "",
            "pipelines/sub/leaf.py": "from ..core import x\n",
            "pipelines/lazy.py": "",
            "pipelines/by_name.py": "",
            "pipelines/unused.py": "",
            "models/__init__.py": "",
        },
    )
    found = {p.relative_to(tmp_path).as_posix() for p in import_closure(["pipelines.stage"], root=tmp_path)}
    assert found == {
        "pipelines/__init__.py",
        "pipelines/stage.py",
        "pipelines/core.py",
        "pipelines/sub/__init__.py",
        "pipelines/sub/leaf.py",
        "pipelines/lazy.py",
    }
    with pytest.raises(ModuleNotFoundError, match="pipelines.missing"):
        import_closure(["pipelines.missing"], root=tmp_path)


# -------------------------------------------------------------------------------- acceptance on the tiny repro


@pytest.fixture(scope="module")
def repo(tiny_repo, tmp_path_factory):
    """A copy of the tiny repro after its complete ``dvc repro``: data, cache and checkpoints hard-linked (edits
    below replace files, never write into them), DVC's state and git copied."""
    source, env, _ = tiny_repo
    target = tmp_path_factory.mktemp("deps") / "repo"

    def copy(src, dst):
        if "/.dvc/tmp/" in src or "/.git/" in src or src.endswith(".lock"):
            return shutil.copy2(src, dst)
        return os.link(src, dst)

    shutil.copytree(source, target, symlinks=True, copy_function=copy, ignore=shutil.ignore_patterns("mlflow"))
    assert _changed(target, env) == set(), "the copied tiny repro is not up to date"
    return target, env


def _changed(repo: Path, env: dict[str, str]) -> set[str]:
    """The stages of the root dvc.yaml that ``dvc status`` reports changed once ``resolve`` has rerun."""
    _run([str(BIN / "dvc"), "repro", "resolve"], repo, env)
    out = _run([str(BIN / "dvc"), "status", "--json", "dvc.yaml"], repo, env).stdout
    return set(json.loads(out or "{}"))


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to a new inode (the copy shares the others with the tiny repro)."""
    path.unlink()
    path.write_text(text)


@pytest.fixture
def edit(repo):
    """``edit(relative path, new text)``; every edited file is restored (and ``resolve`` rerun) afterwards."""
    root, env = repo
    saved: dict[Path, str | None] = {}

    def _edit(relative: str, text: str) -> None:
        path = root / relative
        saved.setdefault(path, path.read_text() if path.exists() else None)
        if path.exists():
            _replace(path, text)
        else:
            path.write_text(text)

    yield _edit
    for path, text in saved.items():
        if text is None:
            path.unlink()
        else:
            _replace(path, text)
    assert _changed(root, env) == set()


def _experiments(root: Path) -> dict[str, dict]:
    params = yaml.safe_load((root / "params.yaml").read_text())
    return params["experiments"] | params["transfer"]


def _stages_of(root: Path, names: set[str]) -> set[str]:
    """Every per-experiment stage of the experiments ``names``."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    out = set()
    for name in names:
        groups = (
            ("train", "evaluate", "diagnose") if name in params["experiments"] else ("finetune", "diagnose_transfer")
        )
        out |= {f"{group}@{name}" for group in groups}
    return out


NEW_MODULE = '''"""A linear classifier: the test architecture of tests/test_dependencies.py."""

from torch import nn


class Linear(nn.Module):
    def __init__(self, spec, **_):
        super().__init__()
        self.layer = nn.Linear(spec.input_shape[0], spec.num_outputs)

    def forward(self, x):
        return self.layer(x).squeeze(-1)
'''


def test_a_new_architecture_and_experiment_leave_every_other_stage_unchanged(repo, edit):
    root, env = repo
    specs = (root / "models" / "dense" / "specs.py").read_text()
    edit("models/dense/linear.py", NEW_MODULE)
    edit(
        "models/dense/specs.py",
        specs + '\n\nregister(Architecture("linear_test", "models.dense.linear:Linear", '
        'NoParams, "test", "test", frozenset({"tabular"}), frozenset({"binary"})))\n',
    )
    params = (root / "params.yaml").read_text()
    edit(
        "params.yaml",
        params.replace(
            "\nexperiments:\n",
            "\nexperiments:\n  linear_churn:\n    architecture: linear_test\n    dataset: churn\n    loss: bce\n",
            1,
        ),
    )
    changed = _changed(root, env)
    assert changed == {"train@linear_churn", "evaluate@linear_churn", "diagnose@linear_churn", "report"}, changed


NEW_DATASET = '''"""A second name for the churn table: the test dataset of tests/test_dependencies.py."""

from dataclasses import replace

from pipelines.data.catalog import get_dataset, register

register(replace(get_dataset("churn"), name="churn_test", preparer="pipelines.data.preparers.churn_test:prepare"))
'''

NEW_PREPARER = '''"""The preparer of the test dataset of tests/test_dependencies.py."""

from pipelines.data.preparers.churn import prepare_churn


def prepare(config, seed, *, name, mirror=None):
    return prepare_churn(config, seed, name=name, mirror=mirror)
'''


def test_a_new_dataset_and_its_preparer_leave_every_other_stage_unchanged(repo, edit):
    """A dataset is a module of pipelines/data/datasets and its preparer's: no file that other stages import."""
    root, env = repo
    edit("pipelines/data/datasets/churn_test.py", NEW_DATASET)
    edit("pipelines/data/preparers/churn_test.py", NEW_PREPARER)
    params = (root / "params.yaml").read_text()
    edit("params.yaml", params.replace("\ndatasets:\n", "\ndatasets:\n  churn_test: {}\n", 1))
    changed = _changed(root, env)
    assert changed == {"prepare@churn_test", "augment@churn_test"}, changed


def test_editing_a_dataset_entry_marks_only_the_stages_that_read_that_dataset(repo, edit):
    root, env = repo
    path = "pipelines/data/datasets/churn.py"
    text = (root / path).read_text()
    assert 'license="educational/demo data, terms unknown"' in text
    edit(path, text.replace("terms unknown", "terms not stated"))
    users = {n for n, e in _experiments(root).items() if e["dataset"] == "churn"}
    assert users and users != set(_experiments(root))
    assert _changed(root, env) == {"prepare@churn", "augment@churn"} | _stages_of(root, users)


def test_editing_the_resnet_module_marks_only_the_experiments_that_use_it(repo, edit):
    root, env = repo
    path = "models/vision/resnet.py"
    edit(path, (root / path).read_text() + "\n# an edit\n")
    users = {n for n, e in _experiments(root).items() if e["architecture"] in ("resnet", "plain_cnn")}
    assert users and users != set(_experiments(root))
    assert _changed(root, env) == _stages_of(root, users)


def test_editing_the_inactive_profile_marks_nothing(repo, edit):
    root, env = repo
    params = (root / "params.yaml").read_text()
    full = "  full:\n    experiment:\n      trainer: {accelerator: auto, devices: auto}\n"
    assert full in params and yaml.safe_load(params)["profile"] == "tiny"
    edit("params.yaml", params.replace(full, full.replace("devices: auto}", "devices: auto, max_epochs: 77}")))
    assert _changed(root, env) == set()


def test_editing_an_imported_module_marks_the_stages_that_import_it(repo, edit):
    root, env = repo
    path = "pipelines/training/callbacks.py"  # imported by training (train and finetune stages), not by evaluate
    edit(path, (root / path).read_text() + "\n# an edit\n")
    changed = _changed(root, env)
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert {f"train@{n}" for n in params["experiments"]} <= changed
    assert {f"finetune@{n}" for n in params["transfer"]} <= changed
    assert not any(s.startswith("evaluate@") for s in changed), changed


def test_a_task_module_marks_the_evaluations_of_its_task_only(repo, edit):
    root, env = repo
    path = "pipelines/tasks/classification.py"  # binary, multiclass and localization build on it
    edit(path, (root / path).read_text() + "\n# an edit\n")
    changed = _changed(root, env)
    assert "evaluate@lenet5_mnist" in changed and "evaluate@mlp_churn" in changed
    assert not {"evaluate@mlp_melbourne", "evaluate@autoencoder_mnist", "train@mlp_melbourne"} & changed, changed


def test_a_finished_search_leaves_train_up_to_date_while_use_tuned_is_false(repo, edit):
    root, env = repo
    assert not _experiments(root)["mlp_churn"].get("use_tuned")
    edit("params/tuned/mlp_churn.yaml", "params:\n  optimizer: {lr: 0.0123}\nvalue: 0.5\n")
    assert _changed(root, env) == set()


def test_retraining_with_the_same_params_gives_the_same_bytes(repo):
    """No run id or time stamp in what DVC hashes: a forced retrain leaves evaluate and diagnose up to date."""
    root, env = repo

    def outs() -> list[dict]:  # metrics/train holds the run id and fit time: for the report, a leaf
        entries = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["train@perceptron_and"]["outs"]
        return [e for e in entries if not e["path"].startswith("metrics/")]

    before = outs()
    _run([str(BIN / "dvc"), "repro", "--force", "--single-item", "train@perceptron_and"], root, env)
    assert outs() == before
    changed = _changed(root, env)
    assert not {"evaluate@perceptron_and", "diagnose@perceptron_and"} & changed, changed
