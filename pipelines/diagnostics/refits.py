"""Diagnostics that refit the experiment: bias and variance beyond the single verdict of ``evaluate``.

Each refit has its own budget (:class:`pipelines.config.StudyBudget`) and uses the train stage's own module, data
and ``Trainer`` (:mod:`pipelines.training.trainer`):

- **learning curve** (notes 000 "Overfitting & Underfitting": more data is the first remedy for variance): one
  fit per fraction of the train split, train and validation error against the number of training samples, and
  an automatic note on whether more data is likely to help (:func:`more_data_verdict`);
- **seeds**: the same experiment with ``count`` seeds; the spread (standard deviation) of test error;
- **bootstrap** (regression): ``rounds`` fits on bootstrap resamples of the train split decompose the test
  squared error into bias², variance and noise (:func:`bootstrap_decomposition`).

Errors are those of the verdict, as the task defines them (1 - accuracy, RMSE, ...; the bootstrap works in squared
units). The learning curve and the bootstrap fit on the un-augmented train split (a fraction of augmented copies
would not be a fraction of the data); the seeds study trains as the train stage does, augmented copies included.
Fits end at the last epoch of the budget (or early stopping); they log nothing themselves.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from pipelines.config import ConfigError, ExperimentConfig, StudyBudget
from pipelines.tasks import get_task

log = logging.getLogger("deepnotes.diagnose")


# ------------------------------------------------------------------------------------------------- analysis


def more_data_verdict(rows: list[dict[str, float]], tolerance: float) -> tuple[bool, str]:
    """Whether more training data is likely to help, from a learning curve (notes 000: more data cures variance,
    not bias).

    Args:
        rows: ``train_samples``, ``train_error``, ``val_error`` per point, in increasing size.
        tolerance: the largest train/validation gap still counted as small (the verdict's ``tolerance``).

    Returns:
        ``(likely_helps, note)``. More data is likely to help when, at the largest size, validation error is
        above train error by more than ``tolerance`` *and* it still fell between the last two sizes; a gap with a
        flat (or rising) validation error, or a single point, is reported as unclear; no gap means the curves have
        met and only a better model helps. A gap of exactly ``tolerance`` counts as small (``>``, as in
        :func:`pipelines.diagnostics.bias_variance.verdict`). The slope is per doubling of the train size
        (one step between two equal sizes).
    """
    last = rows[-1]
    gap = last["val_error"] - last["train_error"]
    if len(rows) >= 2:
        prev = rows[-2]
        doublings = math.log2(last["train_samples"] / prev["train_samples"]) or 1.0
        slope = (prev["val_error"] - last["val_error"]) / doublings
    else:
        slope = float("nan")
    numbers = (
        f"train/val gap {gap:.4f} at {int(last['train_samples'])} samples; val error falls {slope:.4f} per doubling"
    )
    if gap > tolerance and slope > 0:
        return True, f"more data is likely to help: {numbers}"
    if gap > tolerance and len(rows) < 2:
        return False, f"unclear: a train/val gap remains, and one point cannot show whether val error falls ({numbers})"
    if gap > tolerance:
        return False, f"unclear: a train/val gap remains but val error stopped falling ({numbers}); regularise"
    return False, f"more data is unlikely to help: the curves have met ({numbers}); reduce bias instead"


def bootstrap_decomposition(predictions: np.ndarray, targets: np.ndarray, inputs: np.ndarray) -> dict[str, float]:
    """Decompose the expected squared error of a regression model into bias², variance and noise.

    In the spirit of ``mlxtend.evaluate.bias_variance_decomp`` (Domingos 2000), for any model:
    ``expected_loss = mean_{r,i} (p_ri - y_i)²``, ``variance = mean_{r,i} (p_ri - p̄_i)²`` with ``p̄_i`` the mean
    prediction; mlxtend's "bias" ``mean_i (p̄_i - y_i)²`` still holds the noise of the observed ``y``, so the noise
    is estimated apart with the delta test (Pi & Peterson 1994: half the mean squared difference of the targets
    of nearest neighbours in input space, each sample paired with its nearest *other* sample, so duplicate inputs
    pair with each other) and ``bias_squared = mean_i (p̄_i - y_i)² - noise``. The delta test
    over-estimates the noise when neighbours are far apart (the function changes between them), so the estimate is
    capped at ``mean_i (p̄_i - y_i)²`` and ``bias_squared`` is never negative; the uncapped value is returned as
    ``noise_delta_test``. The three components add up to ``expected_loss`` exactly.

    Args:
        predictions: ``(R, N)`` test predictions of R models fitted on bootstrap resamples.
        targets: ``(N,)`` test targets (same units as the predictions).
        inputs: ``(N, ...)`` test inputs, flattened for the nearest-neighbour search.

    Returns:
        ``expected_loss``, ``bias_squared``, ``variance``, ``noise``, ``noise_delta_test`` (squared target
        units) and ``rounds``.

    Raises:
        ValueError: fewer than 2 rounds or test samples, or mismatched shapes.
    """
    from sklearn.neighbors import NearestNeighbors

    predictions, targets = np.asarray(predictions, dtype=float), np.asarray(targets, dtype=float)
    if predictions.ndim != 2 or predictions.shape[0] < 2 or predictions.shape[1] != len(targets) or len(targets) < 2:
        raise ValueError(
            f"predictions must be (rounds >= 2, N) with N = {len(targets)} >= 2 targets, got {predictions.shape}"
        )
    inputs = np.asarray(inputs, dtype=float)
    if inputs.ndim == 0 or inputs.shape[0] != len(targets):  # reshape alone would fold (2N,) into (N, 2)
        raise ValueError(f"inputs must be (N = {len(targets)}, ...), one row per target, got {inputs.shape}")
    main = predictions.mean(axis=0)
    expected_loss = float(((predictions - targets) ** 2).mean())
    variance = float(((predictions - main) ** 2).mean())
    flat = inputs.reshape(len(targets), -1)
    # kneighbors() without a query excludes each sample itself, by index: kneighbors(flat) with two neighbours
    # would, for duplicate inputs, sometimes return the sample as its own second neighbour (a difference of 0).
    _, index = NearestNeighbors(n_neighbors=1).fit(flat).kneighbors()
    delta = float(0.5 * ((targets - targets[index[:, 0]]) ** 2).mean())
    main_loss = float(((main - targets) ** 2).mean())
    noise = min(delta, main_loss)
    return {
        "expected_loss": expected_loss,
        "bias_squared": main_loss - noise,
        "variance": variance,
        "noise": noise,
        "noise_delta_test": delta,
        "rounds": int(predictions.shape[0]),
    }


# --------------------------------------------------------------------------------------------------- fitting


def _with_budget(exp: ExperimentConfig, budget: StudyBudget) -> ExperimentConfig:
    update = {
        k: v
        for k, v in (("max_epochs", budget.max_epochs), ("limit_train_batches", budget.limit_train_batches))
        if v is not None
    }
    return exp.model_copy(update={"trainer": exp.trainer.model_copy(update=update)})


def fit(exp: ExperimentConfig, data, seed: int):
    """Train a fresh network of ``exp`` on ``data`` (a :class:`PreparedData`) with ``seed``; returns the trained
    ``nn.Module`` (last epoch, or where early stopping ended it). No logger, no checkpoints."""
    import tempfile

    from pipelines.training.trainer import build_module, fit_callbacks, make_datamodule, make_trainer, seed_everything

    seed_everything(seed)
    module = build_module(exp, data.meta)
    datamodule = make_datamodule(exp, data, seed)
    callbacks = fit_callbacks(exp)
    with tempfile.TemporaryDirectory(prefix="deepnotes-diagnose-") as tmp:
        trainer = make_trainer(
            exp,
            logger=False,
            callbacks=callbacks,
            default_root_dir=Path(tmp),
            enable_checkpointing=False,
            enable_progress_bar=False,
        )
        trainer.fit(module, datamodule=datamodule)
    return module.network


def _errors(task, network, data, splits: tuple[str, ...]) -> dict[str, float]:
    """``{<split>_error: the task's error}`` of ``network`` on ``splits`` of ``data``."""
    from pipelines.training.inference import split_outputs

    return {
        f"{split}_error": task.error(task.split_metrics(out.outputs, out.x, out.y))
        for split, out in split_outputs(network, data, splits, task=task).items()
    }


def _subset(data, index: np.ndarray):
    from pipelines.data.prepared import PreparedData

    x, y = dict(data.x), dict(data.y)
    x["train"], y["train"] = np.asarray(data.x["train"])[index], np.asarray(data.y["train"])[index]
    return PreparedData(data.meta, x, y)


def learning_curve(exp: ExperimentConfig, data, seed: int) -> list[dict[str, float]]:
    """One fit per ``diagnostics.learning_curve.fractions`` (sorted) of the train split: a seeded subset,
    stratified by class for classification (scikit-learn), the whole split at 1.0.

    Raises:
        ConfigError: a fraction leaves fewer samples than classes (stratification impossible) or none at all.
    """
    from sklearn.model_selection import train_test_split

    cfg = exp.diagnostics.learning_curve
    budgeted = _with_budget(exp, cfg)
    task = get_task(exp.task)(data.meta)
    n = len(data.y["train"])
    y = task.class_labels(np.asarray(data.y["train"]))  # stratify by class where there are classes
    classification = y is not None
    rows = []
    for fraction in sorted(cfg.fractions):
        size = int(round(fraction * n))
        if fraction == 1.0:
            index = np.arange(n)
        else:
            classes = len(np.unique(y)) if y is not None else 1
            if size < max(classes, 1) or n - size < max(classes, 1):
                raise ConfigError(
                    f"diagnostics.learning_curve.fractions: {fraction} of the {n} train samples of "
                    f"{exp.dataset!r} is {size}, too few to hold all {classes} classes"
                )
            index, _ = train_test_split(
                np.arange(n), train_size=size, random_state=seed, stratify=y if classification else None
            )
            index = np.sort(index)
        subset = _subset(data, index)
        network = fit(budgeted, subset, seed)
        rows.append(
            {"fraction": fraction, "train_samples": len(index)} | _errors(task, network, subset, ("train", "val"))
        )
        log.info("learning curve: %.0f%% (%d samples): %s", 100 * fraction, len(index), rows[-1])
    return rows


def seed_spread(exp: ExperimentConfig, data, seed: int, train_data=None) -> list[dict[str, float]]:
    """Fits with seeds ``seed, seed + 1, ...`` (``diagnostics.seeds.count``); train, val and test error of each.

    ``train_data`` (default ``data``) is what the fits train on: the diagnose stage passes the train split with its
    augmented copies, as the train stage trains, so that a claim's seeds (:mod:`pipelines.config.claims`) vary the
    seed alone. The errors are measured on ``data``."""
    cfg = exp.diagnostics.seeds
    budgeted = _with_budget(exp, cfg)
    task = get_task(exp.task)(data.meta)
    rows = []
    for s in range(seed, seed + cfg.count):
        network = fit(budgeted, data if train_data is None else train_data, s)
        rows.append({"seed": s} | _errors(task, network, data, ("train", "val", "test")))
        log.info("seeds: %s", rows[-1])
    return rows


def bootstrap(exp: ExperimentConfig, data, seed: int) -> dict[str, float]:
    """``diagnostics.bootstrap.rounds`` fits on bootstrap resamples of the train split (drawn with replacement,
    same size, seeded), then :func:`bootstrap_decomposition` of their test predictions."""
    from pipelines.data.datamodule import to_tensor
    from pipelines.training.inference import predict

    cfg = exp.diagnostics.bootstrap
    budgeted = _with_budget(exp, cfg)
    rng = np.random.default_rng(seed)
    n = len(data.y["train"])
    x_test = to_tensor(data.x["test"])
    predictions = []
    for r in range(cfg.rounds):
        network = fit(budgeted, _subset(data, np.sort(rng.integers(0, n, size=n))), seed + r)
        predictions.append(predict(network, x_test).numpy())
    return bootstrap_decomposition(np.stack(predictions), np.asarray(data.y["test"]), np.asarray(data.x["test"]))
