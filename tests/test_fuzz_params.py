"""Fuzzed ``params.yaml`` (issue 12, section 3): a property-based test mutates the real file and validates it.

Each example applies one to three mutations at random key paths of the real ``params.yaml``:

- a wrong type (``None``, a string, a list, a mapping, a bool, a number where something else was expected);
- an out-of-range value (negative, zero, huge, ``nan``, ``inf``);
- an unknown key added to a mapping;
- a deleted key or section.

Every mutated file must either validate or raise :class:`pipelines.config.ConfigError` whose message names the
mutated key path, an ancestor of it, or (for a profile block, which is merged into the sections it names) the path
it lands on. No other exception may escape: a ``TypeError``, ``KeyError`` or ``AttributeError`` out of a validator or
out of :func:`pipelines.config.resolve` is a bug. The examples are derandomised, so every CI run tries the same
:data:`EXAMPLES` files.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")  # a dev extra (pyproject.toml): `pip install -e .[dev]`
from hypothesis import HealthCheck, event, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pipelines.config import ConfigError, validate  # noqa: E402
from tests.conftest import REPO_ROOT  # noqa: E402

#: How many mutated files the property test validates (derandomised: the same files on every run).
EXAMPLES = 300

RAW: dict[str, Any] = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())

Path = tuple[str | int, ...]


def _paths(node: Any, prefix: Path = ()) -> list[Path]:
    """Every key path of ``node`` (mapping keys and list indices), parents before children."""
    out: list[Path] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        path = (*prefix, key)
        out.append(path)
        out += _paths(value, path)
    return out


def _get(node: Any, path: Path) -> Any:
    for key in path:
        node = node[key]
    return node


PATHS = _paths(RAW)
#: Where an unknown key may be added: the top level and every mapping of the file.
MAPPINGS: list[Path] = [()] + [p for p in PATHS if isinstance(_get(RAW, p), dict)]

WRONG_TYPES = st.sampled_from([None, "", "x", "1e-3", True, False, [], [1, "a"], {}, {"a": 1}, 0, 1, -1, 2.5])
OUT_OF_RANGE = st.sampled_from([-1, 0, -1e-9, 1e308, -(10**30), 10**30, math.nan, math.inf, -math.inf, 1.5, 2, 101])
UNKNOWN_KEYS = st.sampled_from(
    ["bogus", "source", "lr", "enabled", "max_epochs", "name", "type", "0", "profiles", "datasets"]
)

Mutation = tuple[str, Path, Any]


@st.composite
def mutation(draw) -> Mutation:
    """One mutation: ``(kind, key path, new value)``."""
    kind = draw(st.sampled_from(["wrong_type", "out_of_range", "unknown_key", "delete"]))
    if kind == "unknown_key":
        parent = draw(st.sampled_from(MAPPINGS))
        return kind, (*parent, draw(UNKNOWN_KEYS)), draw(WRONG_TYPES | OUT_OF_RANGE)
    path = draw(st.sampled_from(PATHS))
    value = None if kind == "delete" else draw(WRONG_TYPES if kind == "wrong_type" else OUT_OF_RANGE)
    return kind, path, value


def apply(raw: dict[str, Any], mutations: list[Mutation]) -> dict[str, Any]:
    """A deep copy of ``raw`` with ``mutations`` applied in order (a path a previous one removed is skipped)."""
    out = copy.deepcopy(raw)
    for kind, path, value in mutations:
        try:
            parent = _get(out, path[:-1])
        except (KeyError, IndexError, TypeError):
            continue
        key = path[-1]
        if isinstance(parent, dict):
            if kind == "delete":
                parent.pop(key, None)
            else:
                parent[key] = value
        elif isinstance(parent, list) and isinstance(key, int) and key < len(parent):
            if kind == "delete":
                del parent[key]
            else:
                parent[key] = value
    return out


def dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


def landing_paths(path: Path) -> list[str]:
    """The dotted paths an error about ``path`` may name: ``path`` itself, and where a profile block lands
    (``profiles.<p>.experiment.X`` -> ``X`` of an experiment, ``profiles.<p>.datasets.<d>.X`` ->
    ``datasets.<d>.X``, ``experiments.<e>.profiles.<p>.X`` -> ``experiments.<e>.X``; a deleted or retyped active
    profile -> ``profile``)."""
    names = [dotted(path)]
    if path[:1] == ("profiles",):
        if len(path) <= 2:
            names.append("profile")
        if len(path) >= 4 and path[2] == "experiment":
            names.append(dotted(path[3:]))
        if len(path) >= 4 and path[2] == "datasets":
            names.append(dotted(("datasets", *path[3:])))
    if path[:1] in (("experiments",), ("transfer",)) and len(path) >= 5 and path[2] == "profiles":
        names.append(dotted((*path[:2], *path[4:])))
    return names


#: The key path at the start of each line of a :class:`ConfigError`: ``params.yaml: <key path>: <message>``.
LINE = re.compile(r"^params\.yaml: ([^\s:]+): (.*)$", re.M)


def related(named: str, landing: str) -> bool:
    """``named`` is ``landing``, a key below it, or an ancestor of it below the top-level section
    (``experiments.x: loss 'ce' does not fit ...`` is about ``experiments.x.loss``; ``experiments: ...`` would not
    say which experiment)."""
    if named == landing or named.startswith(f"{landing}."):
        return True
    return landing.startswith(f"{named}.") and ("." in named or "." not in landing.removeprefix(f"{named}."))


def names_a_path(message: str, mutations: list[Mutation]) -> bool:
    """Whether a line of ``message`` names a mutated key path (:func:`related` to one of its
    :func:`landing_paths`) or a sibling whose message names the mutated key (``tuning.space.optimizer.lr.log: true
    needs low > 0``); or, for a removed or retyped section or entry, a key that refers to it by name
    (``augment.churn: no such entry under datasets``, ``experiments.x.profiles: unknown profile(s) ['full']``)."""
    lines = LINE.findall(message)
    for _, path, _ in mutations:
        key = str(path[-1])
        mentioned = re.compile(rf"(?<![\w.]){re.escape(key)}(?![\w])")
        for named, text in lines:
            if any(related(named, landing) for landing in landing_paths(path)):
                return True
            if len(path) >= 2 and named.rpartition(".")[0] == dotted(path[:-1]) and mentioned.search(text):
                return True  # a sibling's check about the mutated key
            if len(path) <= 2 and (key in named.split(".") or mentioned.search(text)):
                return True  # a reference to a removed or retyped section or entry
    return False


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(mutation(), min_size=1, max_size=3))
# The crashes the fuzzer found in `resolve` (each a TypeError before the fix), kept as fixed examples:
@example([("wrong_type", ("datasets", "mnist_localization"), "x")])  # a profile's override merged into a string
@example([("wrong_type", ("profile",), [1, "a"])])  # an unhashable profile name
@example([("wrong_type", ("profile",), {"a": 1})])
@example([("wrong_type", ("profiles", "default", "datasets"), "x")])  # the active profile's blocks not mappings
@example([("wrong_type", ("profiles", "default", "datasets", "cifar10"), [1, "a"])])
@example([("wrong_type", ("experiments", "mlp_churn", "profiles"), "x")])
def test_a_mutated_params_file_validates_or_names_the_key_path(mutations):
    raw = apply(RAW, mutations)
    raw = yaml.safe_load(yaml.safe_dump(raw))  # what a user could write in the file
    try:
        validate(raw, base_dir=REPO_ROOT)
        event("validated")  # --hypothesis-show-statistics counts the outcomes
    except ConfigError as exc:
        event("ConfigError")
        message = str(exc)
        assert all(LINE.match(line) for line in message.splitlines()), message  # every line names a key path
        assert names_a_path(message, mutations), f"{message!r} names none of {[dotted(p) for _, p, _ in mutations]}"
