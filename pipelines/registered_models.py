"""The MLflow model registry: one registered model per experiment, with ``champion``/``challenger`` aliases.

Every experiment's model is registered as ``deepnotes-<experiment>`` (:func:`registered_name`). Each evaluated
model becomes a new version carrying its test metric (version tags ``metric``, ``metric_value``,
``greater_is_better``: the task's primary metric, :meth:`pipelines.tasks.base.Task.primary_metric`, e.g.
``test_acc``, higher is better, for classification and ``test_rmse``, lower is better, for regression), and
:func:`register` moves the aliases:

- no champion yet: the new version becomes ``champion``;
- the new version is strictly better than the champion in the metric's direction: it becomes ``champion`` and the
  former champion loses the alias (an alias names one version, so moving it is one call);
- otherwise, ties included: the new version becomes ``challenger`` and the champion stays.

``challenger`` therefore names the most recent version that did not beat the champion at the time it was
registered; a new champion leaves it where it is (that version is worse than the new champion too).

Only MLflow models are registered: the pyfunc ``models:/m-<id>`` that ``train`` logs
(:func:`pipelines.serving.bundle.log_served_model`), which takes raw input and bundles its preprocessing. A version
is added only when the weights changed: every logged model carries ``weights_sha256``
(:func:`pipelines.serving.bundle.weights_digest`, a content hash of the ``state_dict``), and :func:`register` finds
a version with the same digest first. So rerunning ``evaluate``, or retraining to the same weights, adds nothing.

Loading (:func:`load_champion`, :func:`load_model_safely`, :func:`load_served`) never unpickles: the served model is
an MLflow "model from code" (MLflow keeps the code file, not a cloudpickled object) whose weights are a
``state_dict`` read with ``torch.load(weights_only=True)``, and the loaders also force
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` around the load (MLflow 3.17.2 defaults it to *true*), so a model
saved in MLflow's "pickle" formats is refused outright. ``tests/test_model_registry.py`` builds tampered models
of both kinds and checks that their payload never runs.

Concurrency: the ``evaluate`` stages of different experiments may register in parallel (they touch different
registered models). The read-compare-set of the aliases in :func:`register` is not atomic across processes: two
processes registering versions of the *same* name at once could both read the old champion and both set
``champion``, the later write winning whatever its metric. The pipeline never does that (one ``evaluate`` stage
per experiment); anything else that registers should serialise per name itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from torch import nn

log = logging.getLogger("deepnotes.registry")

CHAMPION = "champion"
CHALLENGER = "challenger"
NAME_PREFIX = "deepnotes-"
#: Version tags :func:`register` writes (and reads back from the champion).
METRIC_TAG, VALUE_TAG, DIRECTION_TAG = "metric", "metric_value", "greater_is_better"
#: The logged model's tag listing its registered versions (what ``mlflow.register_model`` maintains; the UI
#: shows it on the logged model's page).
_MODEL_VERSIONS_TAG = "mlflow.modelVersions"
_LOGGED_MODEL_URI = re.compile(r"models:/(m-[0-9A-Za-z]+)")
_ALLOW_PICKLE_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
#: The weights digest tag (:data:`pipelines.serving.bundle.WEIGHTS_TAG`; not imported: this module stays torch-free).
WEIGHTS_TAG = "weights_sha256"


@dataclass(frozen=True)
class RegistrationResult:
    """What :func:`register` did.

    Attributes:
        name: the registered model's name.
        version: the new version's number.
        alias: ``"champion"`` or ``"challenger"``: the alias the new version got.
        value: the new version's metric value.
        champion_version: the champion's version after registration (``version`` when the new one won).
        champion_value: the champion's metric value after registration.
        previous_champion_version: the version that lost ``champion`` to the new one, else ``None``.
        created: ``False`` when a version with the same weights already existed (``version`` is that one, and the
            aliases did not move).
    """

    name: str
    version: int
    alias: str
    value: float
    champion_version: int
    champion_value: float
    previous_champion_version: int | None = None
    created: bool = True

    @property
    def model_uri(self) -> str:
        """``models:/<name>/<version>``: this exact version, whatever the aliases do later."""
        return f"models:/{self.name}/{self.version}"


def registered_name(experiment: str) -> str:
    """The registered model name of a ``params.yaml`` experiment: ``deepnotes-<experiment>``."""
    return f"{NAME_PREFIX}{experiment}"


def _beats(value: float, champion: float, greater_is_better: bool) -> bool:
    """Strictly better in the metric's direction. NaN never wins; any number beats a NaN champion."""
    if math.isnan(value):
        return False
    if math.isnan(champion):
        return True
    return value > champion if greater_is_better else value < champion


def _champion(client: MlflowClient, name: str, metric: str, greater_is_better: bool) -> tuple[int, float] | None:
    """``(version, value)`` of ``name``'s champion, or ``None`` when there is none or its value is not comparable
    (no metric tags, another metric or direction: logged, and the new version takes over)."""
    version = client.get_registered_model(name).aliases.get(CHAMPION)
    if version is None:
        return None
    tags = client.get_model_version(name, str(version)).tags
    try:
        value = float(tags[VALUE_TAG])
        comparable = tags.get(METRIC_TAG) == metric and tags.get(DIRECTION_TAG) == str(greater_is_better).lower()
    except (KeyError, ValueError):
        comparable = False
    if not comparable:
        log.warning(
            "%s: champion version %s has no comparable %s value (tags %s); the new version replaces it",
            name,
            version,
            metric,
            {k: tags.get(k) for k in (METRIC_TAG, VALUE_TAG, DIRECTION_TAG)},
        )
        return None
    return int(version), value


def _link_logged_model(client: MlflowClient, model_id: str, name: str, version: int) -> None:
    """Append ``{name, version}`` to the logged model's ``mlflow.modelVersions`` tag, as ``mlflow.register_model``
    does (only a UI link: a failure is logged, not raised)."""
    from mlflow.exceptions import MlflowException

    try:
        existing = client.get_logged_model(model_id).tags.get(_MODEL_VERSIONS_TAG)
        entries = (json.loads(existing) if existing else []) + [{"name": name, "version": version}]
        client.set_logged_model_tags(model_id, {_MODEL_VERSIONS_TAG: json.dumps(entries)})
    except (MlflowException, ValueError) as exc:
        log.warning("could not tag logged model %s with its registered version (%s)", model_id, exc)


def register(
    client: MlflowClient,
    *,
    name: str,
    model_uri: str,
    run_id: str,
    metric: str,
    value: float,
    greater_is_better: bool,
    tags: dict[str, object] | None = None,
    description: str | None = None,
    weights_sha256: str | None = None,
) -> RegistrationResult | None:
    """Register a logged model as a new version of ``name`` and move the ``champion``/``challenger`` aliases.

    Creates the registered model if missing, then a version from ``model_uri`` linked to ``run_id`` (the version's
    ``run_id``) and to the logged model (its ``source`` is ``models:/m-<id>`` and the logged model's
    ``mlflow.modelVersions`` tag lists the version, as ``mlflow.register_model`` records them), tagged
    ``metric``, ``metric_value`` (``repr`` of the float), ``greater_is_better`` (``true``/``false``) plus
    ``tags``. Then: no comparable champion, or ``value`` strictly better than the champion's: the version becomes
    ``champion`` (and ``challenger`` is removed if it names this version); otherwise, ties included, it becomes
    ``challenger``. A NaN ``value`` never beats a champion; any number beats a NaN champion.

    Args:
        client: the client of the tracking store that holds the logged model (its registry is used too).
        name: registered model name, e.g. :func:`registered_name` of the experiment.
        model_uri: ``models:/m-<id>`` from :func:`pipelines.tracking.log_model`. A ``runs:/...`` artifact URI (a
            plain artifact, e.g. a weights-only ``state_dict``) is not an MLflow model: nothing is registered, a warning is
            logged and ``None`` is returned.
        run_id: the run that logged the model (must be the logged model's source run).
        metric, value, greater_is_better: the ranking metric (the task's primary metric) and this model's value.
        tags: extra version tags (values are turned into strings; the three metric tags cannot be overridden).
        description: optional version description.
        weights_sha256: the model's :func:`~pipelines.serving.bundle.weights_digest` (default: the logged model's
            ``weights_sha256`` tag). When a version of ``name`` already carries it, nothing is registered and that
            version is returned with ``created=False``.

    Returns:
        A :class:`RegistrationResult`, or ``None`` for a ``runs:/`` artifact URI.

    Raises:
        ValueError: ``model_uri`` is neither ``models:/m-<id>`` nor ``runs:/...``, or ``run_id`` is not the logged
            model's source run.
        mlflow.exceptions.MlflowException: the logged model does not exist in ``client``'s store, or a store error.

    Not atomic across processes for one ``name`` (see the module docstring); different names are independent.
    When the process-wide tracking URI (``mlflow.get_tracking_uri()``) is not ``client``'s, the version's source
    is the logged model's artifact location instead of ``models:/m-<id>`` (MLflow's SQL registry resolves a
    ``models:/`` source through the process-wide URI, not the client's); loading and serving are unaffected.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    match = _LOGGED_MODEL_URI.fullmatch(model_uri)
    if match is None:
        if model_uri.startswith("runs:/"):
            log.warning(
                "%s: %s is a plain artifact (a weights-only state_dict), not an MLflow model; nothing is registered",
                name,
                model_uri,
            )
            return None
        raise ValueError(f"{model_uri!r} is not a logged model URI (models:/m-<id>)")
    model_id = match.group(1)
    logged = client.get_logged_model(model_id)
    if logged.source_run_id and logged.source_run_id != run_id:
        raise ValueError(f"{model_uri} was logged by run {logged.source_run_id}, not {run_id}")
    value = float(value)

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    digest = weights_sha256 or logged.tags.get(WEIGHTS_TAG)
    if digest:
        existing = _version_with_weights(client, name, digest)
        if existing is not None:
            return existing
    version_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    version_tags |= {METRIC_TAG: metric, VALUE_TAG: repr(value), DIRECTION_TAG: str(greater_is_better).lower()}
    if digest:
        version_tags[WEIGHTS_TAG] = digest
    source = model_uri if mlflow.get_tracking_uri() == client.tracking_uri else logged.artifact_location
    created = client.create_model_version(
        name, source, run_id=run_id, tags=version_tags, description=description, model_id=model_id
    )
    version = int(created.version)
    _link_logged_model(client, model_id, name, version)

    champion = _champion(client, name, metric, greater_is_better)
    if champion is None or _beats(value, champion[1], greater_is_better):
        client.set_registered_model_alias(name, CHAMPION, str(version))
        if str(client.get_registered_model(name).aliases.get(CHALLENGER)) == str(version):
            client.delete_registered_model_alias(name, CHALLENGER)
        result = RegistrationResult(name, version, CHAMPION, value, version, value, champion[0] if champion else None)
    else:
        client.set_registered_model_alias(name, CHALLENGER, str(version))
        result = RegistrationResult(name, version, CHALLENGER, value, champion[0], champion[1])
    log.info(
        "%s version %d (%s=%.6g) is the %s; champion: version %d (%.6g)",
        name,
        version,
        metric,
        value,
        result.alias,
        result.champion_version,
        result.champion_value,
    )
    return result


def _version_with_weights(client: MlflowClient, name: str, digest: str) -> RegistrationResult | None:
    """The version of ``name`` tagged ``weights_sha256 = digest``, as an unchanged :class:`RegistrationResult`
    (``created=False``; the lowest such version), or ``None``."""
    versions = client.search_model_versions(f"name = '{name}' and tags.{WEIGHTS_TAG} = '{digest}'")
    if not versions:
        return None
    found = min(versions, key=lambda v: int(v.version))
    aliases = client.get_registered_model(name).aliases
    champion_version = int(aliases.get(CHAMPION, found.version))
    champion_tags = client.get_model_version(name, str(champion_version)).tags
    value = float(found.tags.get(VALUE_TAG, "nan"))
    alias = next((a for a, v in aliases.items() if str(v) == str(found.version)), "")
    log.info("%s: version %s already holds these weights (%s...); no new version", name, found.version, digest[:12])
    return RegistrationResult(
        name,
        int(found.version),
        alias,
        value,
        champion_version,
        float(champion_tags.get(VALUE_TAG, "nan")),
        created=False,
    )


@contextlib.contextmanager
def _pickle_refused() -> Iterator[None]:
    """Set ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` for the block (process-wide: not thread-safe)."""
    old = os.environ.get(_ALLOW_PICKLE_ENV)
    os.environ[_ALLOW_PICKLE_ENV] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(_ALLOW_PICKLE_ENV, None)
        else:
            os.environ[_ALLOW_PICKLE_ENV] = old


def load_served(model_uri: str):
    """``mlflow.pyfunc.load_model(model_uri)`` with pickle deserialization refused (see the module docstring): the
    served model, whose ``predict`` takes raw input (its signature) and answers what the task predicts.

    ``model_uri`` is anything MLflow resolves (``models:/<name>@<alias>``, ``models:/<name>/<version>``,
    ``models:/m-<id>``, a local directory), resolved through the process-wide tracking/registry URI.

    Raises:
        mlflow.exceptions.MlflowException: the model is in a pickle format, the URI or alias does not exist, or
            the model has no ``python_function`` flavor.
        pickle.UnpicklingError: the bundle's ``weights.pt`` holds more than tensors (torch's ``weights_only``).
    """
    import mlflow.pyfunc

    with _pickle_refused():
        return mlflow.pyfunc.load_model(model_uri)


def load_model_safely(model_uri: str) -> nn.Module:
    """The network of the served model at ``model_uri`` (loaded as :func:`load_served` does), on the CPU in eval
    mode: a batch ``(N, *input_shape)`` of *prepared* float32 inputs gives the raw outputs, e.g. ``(N,)`` logits for
    a binary head, ``(N, C)`` for C classes.

    Raises:
        mlflow.exceptions.MlflowException, pickle.UnpicklingError: as :func:`load_served`.
    """
    return load_served(model_uri).unwrap_python_model().network


def _local_copy(name: str, tracking_uri: str, alias: str, folder: str) -> str:
    """Download the ``alias`` version of ``name`` from the store at ``tracking_uri`` into ``folder``."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    version = client.get_model_version_by_alias(name, alias).version
    source = client.get_model_version_download_uri(name, version)
    return mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=folder, tracking_uri=tracking_uri)


def load_champion(name: str, tracking_uri: str | None = None, *, alias: str = CHAMPION) -> nn.Module:
    """The network of the ``champion`` (or ``alias``) version of registered model ``name``, loaded without
    unpickling anything (:func:`load_model_safely`).

    With ``tracking_uri=None`` the alias resolves through the process-wide tracking URI (``MLFLOW_TRACKING_URI`` or
    ``mlflow.set_tracking_uri``). With a ``tracking_uri`` it is resolved by a client of that store (used as the
    registry too) and the version's files are downloaded from there, leaving the process-wide URI alone (MLflow
    resolves ``models:/`` URIs only through the process-wide registry URI).

    Raises:
        mlflow.exceptions.MlflowException: no such registered model or alias, or the model is refused as pickled.
    """
    if tracking_uri is None:
        return load_model_safely(f"models:/{name}@{alias}")
    with tempfile.TemporaryDirectory(prefix="deepnotes-model-") as tmp:
        return load_model_safely(_local_copy(name, tracking_uri, alias, tmp))  # read into memory: the folder can go
