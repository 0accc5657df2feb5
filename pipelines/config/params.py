"""The whole of ``params.yaml`` once its profile is applied (:class:`Params`): seed, profile, tracking, datasets,
augmentation, experiments, transfer and tuning, and the checks across sections."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    PositiveFloat,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from pipelines.config.base import (
    SPACE_TAGS,
    ConfigError,
    Strict,
    format_errors,
    validate_options,
)
from pipelines.config.claims import ClaimConfig, apply_claims
from pipelines.config.data import AugmentConfig, DatasetConfig
from pipelines.config.experiment import (
    DATASETS_CONTEXT,
    ExperimentConfig,
    dataset_context,
    dataset_entry,
)
from pipelines.config.tuning import TuneExperimentConfig, TuneSettings, TuningConfig
from pipelines.data.catalog import CATALOG, DatasetEntry
from pipelines.mappings import deep_merge
from pipelines.tasks import get_task
from pipelines.tuning.search_space import SearchSpace

# ----------------------------------------------------------------------------------------------- top level


class TrackingConfig(Strict):
    """MLflow tracking. ``MLFLOW_TRACKING_URI`` in the environment overrides ``tracking_uri`` (team servers)."""

    experiment_name: str = "deepnotes"
    tracking_uri: str | None = Field(None, description="default: sqlite:///<repo>/mlflow/mlflow.db")
    artifact_location: str | None = Field(None, description="default: <repo>/mlflow/artifacts")
    log_model: bool = True
    system_metrics: bool = Field(
        True, description="MLflow system metrics (CPU, memory, disk, network, GPU) of training"
    )
    system_metrics_interval: PositiveFloat = Field(2.0, description="seconds between system-metric samples")


class ProfileConfig(Strict):
    experiment: dict[str, Any] = Field(default_factory=dict, description="merged into every experiment")
    datasets: dict[str, dict[str, Any]] = Field(default_factory=dict, description="merged into the named datasets")


class Params(Strict):
    """The whole ``params.yaml``, resolved for the active profile."""

    seed: int = 42
    profile: str = "default"
    profiles: dict[str, ProfileConfig] = Field(default_factory=lambda: {"default": ProfileConfig()})
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    datasets: dict[str, DatasetConfig] = Field(default_factory=dict)
    augment: dict[str, AugmentConfig] = Field(default_factory=dict)
    experiments: dict[str, ExperimentConfig] = Field(default_factory=dict)
    #: Experiments that start from saved weights (``pretrained:``). DVC's foreach has no optional keys, so they have
    #: their own stage group (``finetune@<name>``), which depends on the weights file.
    transfer: dict[str, ExperimentConfig] = Field(default_factory=dict)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    #: The notes' claims the report checks, each over a seed spread (:mod:`pipelines.config.claims`).
    claims: dict[str, ClaimConfig] = Field(default_factory=dict)
    #: The entries of the datasets declared by a ``source:`` block (from the validation context).
    _source_entries: dict[str, DatasetEntry] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> Params:
        self._source_entries = dict((info.context or {}).get(DATASETS_CONTEXT) or {})
        for name, dataset in self.datasets.items():
            if dataset.source is None and name not in CATALOG:
                raise ValueError(
                    f"datasets.{name}: not in the catalog and no source: block; known: {', '.join(sorted(CATALOG))}"
                )
            options_model = CATALOG[name].options if dataset.source is None else None
            dataset.options = validate_options(options_model, dataset.options, f"datasets.{name}.options")
        for name, aug in self.augment.items():
            if name not in self.datasets:
                raise ValueError(f"augment.{name}: no such entry under datasets")
            entry = self.dataset_entry(name)
            modality = entry.modality
            if aug.hflip and not entry.flip_safe:
                raise ValueError(f"augment.{name}.hflip: a flip changes the label of {name} samples (not label-safe)")
            if modality != "image" and (
                aug.hflip or aug.crop_padding or aug.rotation_degrees or aug.zoom or aug.brightness
            ):
                raise ValueError(f"augment.{name}: {modality} data only takes noise_std, not image transforms")
            if modality in ("text", "table") and aug.enabled:
                raise ValueError(f"augment.{name}: offline augmentation of {modality} data is not supported")
        for section, experiments in (("experiments", self.experiments), ("transfer", self.transfer)):
            for name, exp in experiments.items():
                if exp.dataset not in self.datasets:
                    raise ValueError(f"{section}.{name}.dataset: {exp.dataset!r} has no entry under datasets")
                if self.augmentation(exp.dataset).enabled and not get_task(exp.task).augmentable:
                    raise ValueError(
                        f"augment.{exp.dataset}: offline augmentation would change the targets of the "
                        f"{exp.task} task of {section}.{name}; it is not supported"
                    )
                if (exp.pretrained is None) != (section == "experiments"):
                    raise ValueError(
                        f"experiments.{name}.pretrained: an experiment that starts from saved weights belongs under "
                        f"transfer:, whose stages depend on the weights file"
                        if section == "experiments"
                        else f"transfer.{name}.pretrained: missing; transfer experiments start from saved weights"
                    )
        clash = set(self.experiments) & set(self.transfer)
        if clash:
            raise ValueError(f"transfer: {sorted(clash)} also named under experiments; names must be unique")
        for name in self.tuning.experiments:
            if name not in self.all_experiments:
                raise ValueError(f"tuning.experiments.{name}: no such experiment under experiments or transfer")
        apply_claims(self.claims, {"experiments": self.experiments, "transfer": self.transfer})
        return self

    def dataset_entry(self, name: str) -> DatasetEntry:
        """Dataset ``name``'s entry: from its ``source:`` block, else from the catalog.

        Raises:
            ConfigError: no such dataset.
        """
        try:
            return dataset_entry(name, self.validation_context())
        except ValueError as exc:
            raise ConfigError(f"params.yaml: datasets.{name}: {exc}") from None

    def validation_context(self) -> dict[str, Any]:
        """The pydantic context an experiment of these params validates with (its user datasets):
        ``ExperimentConfig.model_validate(data, context=params.validation_context())``."""
        return dataset_context(self._source_entries)

    @property
    def all_experiments(self) -> dict[str, ExperimentConfig]:
        """``experiments`` and ``transfer`` together, in file order."""
        return self.experiments | self.transfer

    def experiment(self, name: str) -> ExperimentConfig:
        """Return experiment ``name`` (from ``experiments`` or ``transfer``). Raises :class:`ConfigError` listing the
        known experiments."""
        try:
            return self.all_experiments[name]
        except KeyError:
            raise ConfigError(
                f"params.yaml: experiments.{name}: no such experiment; known: {', '.join(sorted(self.all_experiments))}"
            ) from None

    def dataset(self, name: str) -> DatasetConfig:
        """Return dataset config ``name``. Raises :class:`ConfigError` listing the known datasets."""
        try:
            return self.datasets[name]
        except KeyError:
            raise ConfigError(
                f"params.yaml: datasets.{name}: no such dataset; known: {', '.join(sorted(self.datasets))}"
            ) from None

    def augmentation(self, name: str) -> AugmentConfig:
        return self.augment.get(name, AugmentConfig())

    def experiment_seed(self, name: str) -> int:
        exp = self.experiment(name)
        return self.seed if exp.seed is None else exp.seed

    def tune_settings(self, name: str) -> TuneSettings:
        """The search settings of experiment ``name`` with every unset field filled from ``tuning``.

        Raises:
            ConfigError: ``metric`` is not a validation metric the experiment logs.
        """
        exp = self.experiment(name)
        own = self.tuning.experiments.get(name, TuneExperimentConfig())
        metric = own.metric or exp.checkpoint.monitor
        mode = exp.checkpoint.mode if own.metric is None else get_task(exp.task).mode(metric)
        default_direction: Literal["minimize", "maximize"] = "maximize" if mode == "max" else "minimize"
        allowed = get_task(exp.task).monitors()
        if metric not in allowed:
            raise ConfigError(
                f"params.yaml: tuning.experiments.{name}.metric: {metric!r} is not logged for a "
                f"{exp.task} task; use one of {sorted(allowed)}"
            )
        return TuneSettings(
            metric=metric,
            direction=own.direction or default_direction,
            n_trials=own.n_trials or self.tuning.n_trials,
            timeout=own.timeout or self.tuning.timeout,
            sampler=own.sampler or self.tuning.sampler,
            pruner=own.pruner or self.tuning.pruner,
            trial=own.trial,
            space=own.space,
        )

    def search_space(self, name: str) -> SearchSpace:
        """The validated search space of experiment ``name`` (default, then architecture, then experiment).

        Every bound and choice is applied to the experiment and validated with the experiment schema, so a bad
        range, an unknown choice or a path the experiment does not have fails here, before any trial starts.

        Raises:
            ConfigError: naming ``tuning...space.<path>``, the value and what was expected; or an empty space.
        """
        exp = self.experiment(name)
        raw: dict[str, Any] = dict(self.tuning.space)
        raw.update(self.tuning.architectures.get(exp.architecture, {}))
        raw.update(self.tuning.experiments.get(name, TuneExperimentConfig()).space)
        where = f"params.yaml: tuning (space of experiment {name!r}, architecture {exp.architecture!r})"
        try:
            space = SearchSpace({path: spec for path, spec in raw.items() if spec is not None})
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not len(space):
            raise ConfigError(
                f"{where}: the search space is empty; declare tuning.space or tuning.experiments.{name}.space"
            )
        base = self.trial_experiment(name)
        from pipelines.tuning.search_space import apply

        for path, parent, value in space.conditions:  # every `when` value must be a value the parent can take
            try:
                ExperimentConfig.model_validate(apply(base, {parent: value}), context=self.validation_context())
            except ValidationError as exc:  # only errors about the parent field itself (not cross-field rules)
                own = [e for e in exc.errors() if ".".join(map(str, e["loc"])) == parent]
                if own:
                    raise ConfigError(
                        f"{where}: {path}.when.{parent}: {value!r} is not a value of {parent}: {own[0]['msg']}"
                    ) from None
        for path in space.params:
            unknown = _unknown_path(base, path)
            if unknown:
                raise ConfigError(f"{where}: {path}: the experiment has no setting {unknown!r}")
        for path, value, values in space.assignments_to_check():
            try:
                ExperimentConfig.model_validate(apply(base, values), context=self.validation_context())
            except ValidationError as exc:
                # name the sampled path the error is about (it may be another path than the one being varied)
                locs = [".".join(str(p) for p in err["loc"] if p not in SPACE_TAGS) for err in exc.errors()]
                texts = [f"{loc}: {err['msg']}" for loc, err in zip(locs, exc.errors())]
                culprit = next(
                    (
                        p
                        for p in values
                        for loc, text in zip(locs, texts)
                        if (loc and (loc.startswith(p) or p.startswith(loc))) or f"{p}:" in text
                    ),
                    path,
                )
                raise ConfigError(
                    f"{where}: {culprit}: value {values[culprit]!r} is not valid for this experiment"
                    f"{'' if culprit == path else f' (with {path}={value!r})'}: "
                    f"{format_errors(exc)}"
                ) from None
            except ValueError as exc:
                raise ConfigError(f"{where}: {path}: {exc}") from None
        return space

    def trial_experiment(self, name: str) -> dict[str, Any]:
        """The experiment as a plain mapping with ``tuning.experiments.<name>.trial`` merged in (what a trial
        trains before its sampled params are applied).

        Raises:
            ConfigError: the merged ``trial`` overrides do not validate.
        """
        exp = self.experiment(name).model_dump(mode="json")
        overrides = self.tuning.experiments.get(name, TuneExperimentConfig()).trial
        merged = deep_merge(exp, overrides)
        try:
            ExperimentConfig.model_validate(merged, context=self.validation_context())
        except ValidationError as exc:
            raise ConfigError(
                format_errors(exc, prefix=f"tuning.experiments.{name}.trial", source="params.yaml: ")
            ) from None
        return merged


def _unknown_path(experiment: dict[str, Any], path: str) -> str | None:
    """The first component of dotted ``path`` that the (fully dumped) experiment mapping lacks, else ``None``.
    Free-form mappings (``model``, whose keys each architecture validates) accept any key below them."""
    node: Any = experiment
    parts = path.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, list) and part.isdigit():
            node = node[int(part)] if int(part) < len(node) else None
            continue
        if not isinstance(node, dict) or part not in node:
            if i >= 1 and parts[0] == "model":
                return None
            return ".".join(parts[: i + 1])
        node = node[part]
    return None
