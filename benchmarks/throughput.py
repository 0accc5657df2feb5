"""Training throughput: the pipeline against a hand-written PyTorch loop (lenet5 on MNIST, same N steps, same tensors).

    python -m benchmarks.throughput [--steps 300] [--repeats 5] [--breakdown auto|always|never] [--pairs 4]

*Pipeline* side: the real pieces. ``pipelines.training.trainer.build_module`` with the ``lenet5_mnist`` experiment of
``params.yaml`` (active profile), ``pipelines.data.ArrayDataModule`` over the real prepared MNIST
(``data/prepared/mnist`` when present, else prepared in memory from the mirror), and a Lightning ``Trainer``
configured as ``pipelines/stages/train.py`` configures it: the same callbacks (ModelCheckpoint, History, LearningRateMonitor,
TQDMProgressBar with the experiment's refresh rate; EarlyStopping is left out because it needs validation metrics),
``log_every_n_steps``, ``deterministic``, ``precision``, and an ``MLFlowLogger`` into a temporary SQLite store with the
run created beforehand, as ``train.py`` does. ``max_steps=N`` and ``limit_val_batches=0``, so it does exactly N
optimizer steps and nothing else. The time is the wall time of ``trainer.fit`` (what ``train.py`` reports as
``fit_seconds``).

*Hand* side: the same network (``models.registry.build_network`` + ``models.factories.initialize``, seeded the same
way, so the initial weights are identical), the same optimizer (``make_optimizer``) and loss (``make_loss``), and a
plain loop: shuffle the training tensors once per epoch with the same seeded permutation as ``TensorBatches``, slice
batches, ``zero_grad / forward / loss / backward / step`` N times. Both sides therefore see the very same batches;
the benchmark checks that they end with the same weights.

*Reference*: the hand loop fed by ``DataLoader(TensorDataset(x, y), shuffle=True)`` instead of slices.

Each side is warmed up once, then the sides run interleaved in every round (the order rotates each round);
medians over rounds are reported, and the ratio is the median of the per-round ratios ``pipeline / hand``.

Breakdown (when the ratio exceeds the target 1.10, or ``--breakdown always``):

- *attribution*: pipeline and hand runs alternate with light timers around each piece of a step (forward, loss,
  backward, optimizer update, zero_grad, and in the pipeline the penalty, ``self.log``, the rest of
  ``training_step``, progress bar, MLflow); what is left is the loop itself (Lightning's hooks, closure, result
  collection).
- *ablation*: pipeline variants with one feature removed, then everything removed (a bare step in a bare Trainer,
  with automatic and manual optimization), each measured in ABBA pairs against the real pipeline (monkeypatched
  here; no project file changes); the bare one also directly against the hand loop.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import (
    CONTENTION_CORES,
    Policy,
    collect_rounds,
    git_commit,
    machine_info,
    median,
    mirror_path,
    timed,
    write_json,
)

TARGET_RATIO = 1.10
EXPERIMENT = "lenet5_mnist"

#: Pipeline variants for the cost breakdown, each measured in ABBA pairs against the real pipeline: one feature off
#: at a time (what it costs), then everything off (what Lightning's own loop costs). Monkeypatched here; no project
#: file changes.
BREAKDOWN_VARIANTS: dict[str, dict[str, Any]] = {
    "minimal_step": {"step": "minimal"},
    "no_progress_bar": {"progress_bar": False},
    "no_mlflow_logger": {"logger": False},
    "not_deterministic": {"deterministic": False},
    "no_project_callbacks": {"callbacks": False},
    "lightning_floor": {
        "step": "minimal",
        "progress_bar": False,
        "logger": False,
        "deterministic": False,
        "callbacks": False,
    },
    "floor_manual_optimization": {
        "step": "minimal",
        "progress_bar": False,
        "logger": False,
        "deterministic": False,
        "callbacks": False,
        "manual": True,
    },
}

#: Variants also measured directly against the hand loop (ABBA pairs), not only projected.
VERSUS_HAND = ("lightning_floor",)

#: What each variant changes, for the report.
VARIANT_NOTES: dict[str, str] = {
    "minimal_step": "training_step is forward + loss only: no penalty term, no running training statistics, no "
    "epoch log",
    "no_progress_bar": "enable_progress_bar=False (no TQDMProgressBar)",
    "no_mlflow_logger": "logger=False (and no LearningRateMonitor, which needs a logger)",
    "not_deterministic": "Trainer(deterministic=False)",
    "no_project_callbacks": "no ModelCheckpoint, History, LearningRateMonitor (enable_checkpointing=False)",
    "lightning_floor": "all of the above: a bare LightningModule step in a bare Trainer",
    "floor_manual_optimization": "lightning_floor with automatic_optimization=False (zero_grad, manual_backward, "
    "step in training_step): no closure machinery",
}


@dataclass
class Bench:
    """Everything both sides share: config, the prepared tensors and a temporary MLflow store."""

    params: Any
    exp: Any
    seed: int
    meta: dict[str, Any]
    datamodule: Any
    workdir: Path
    tracking_uri: str
    experiment_id: str
    data_source: str


def load_mnist(params, seed: int):
    """The prepared MNIST as a :class:`pipelines.data.prepared.PreparedData`: ``data/prepared/mnist`` when present,
    else prepared in memory with ``pipelines.data.preparers.prepare_mnist`` from the data mirror. Returns
    ``(data, source)`` where ``source`` says which."""
    from pipelines.data.prepared import PREPARED_ROOT, PreparedData, load_training_data

    if (PREPARED_ROOT / "mnist" / "meta.json").exists():
        return load_training_data("mnist"), f"{PREPARED_ROOT / 'mnist'} (load_training_data)"
    from pipelines.data.preparers.idx import prepare_mnist

    arrays, meta, _ = prepare_mnist(params.dataset("mnist"), seed)
    meta = dict(meta, splits={split: len(x) for split, (x, _) in arrays.items()})
    data = PreparedData(meta, {s: a[0] for s, a in arrays.items()}, {s: a[1] for s, a in arrays.items()})
    return data, "prepare_mnist(params.dataset('mnist'), seed) from the mirror, in memory"


def setup(workdir: Path) -> Bench:
    """Load params, data and a fresh SQLite MLflow store under ``workdir``; nothing here is timed."""
    import mlflow

    from pipelines.config import load_params
    from pipelines.data.datamodule import ArrayDataModule

    params = load_params()
    exp = params.experiment(EXPERIMENT)
    seed = params.experiment_seed(EXPERIMENT)
    if exp.trainer.num_threads:
        import torch

        torch.set_num_threads(exp.trainer.num_threads)
    data, source = load_mnist(params, seed)
    batch_size = None if exp.optimizer.name == "gd" else exp.batch_size
    datamodule = ArrayDataModule(data, batch_size=batch_size, seed=seed)
    uri = f"sqlite:///{(workdir / 'mlflow.db').resolve()}"
    experiment_id = mlflow.MlflowClient(uri).create_experiment(
        "throughput", artifact_location=(workdir / "artifacts").as_uri()
    )
    return Bench(params, exp, seed, data.meta, datamodule, workdir, uri, experiment_id, source)


# ------------------------------------------------------------------------------------------------ pipeline


@contextlib.contextmanager
def module_patches(module, step: str = "module", manual: bool = False) -> Iterator[None]:
    """Variants of the real ``SupervisedModule``'s training step (instance attributes only, undone on exit).

    - ``step="module"``: the module's own ``training_step`` (nothing patched).
    - ``step="minimal"``: ``training_step`` is forward + loss and nothing else (no penalty term, no running
      training statistics, no epoch log): a bare step, to price everything else the module's step does.
    - ``manual=True``: manual optimization (``automatic_optimization = False``; the step does ``zero_grad``,
      ``manual_backward`` and ``step`` itself), to price Lightning's closure machinery. Needs ``step="minimal"``.
    """
    patched: list[str] = []
    if step == "minimal" and not manual:

        def training_step(batch, batch_idx):
            x, y = batch
            return module.loss_fn(module(x), module._targets(y))

        module.training_step = training_step
        patched.append("training_step")
    elif step == "minimal" and manual:

        def manual_step(batch, batch_idx):
            optimizer = module.optimizers()
            x, y = batch
            loss = module.loss_fn(module(x), module._targets(y))
            optimizer.zero_grad()
            module.manual_backward(loss)
            optimizer.step()
            return loss.detach()

        module.training_step = manual_step
        module.automatic_optimization = False
        patched.append("training_step")
    elif step != "module" or manual:
        raise ValueError(f"unsupported variant: step={step!r}, manual={manual}")
    try:
        yield
    finally:
        for name in patched:
            delattr(module, name)
        module.automatic_optimization = True


def step_clock():
    """A Lightning callback recording the first batch start (``first``) and the last batch end (``last``), to split
    fit time into the step loop and the fixed cost of a fit (set-up, hyperparameter logging, final checkpoint,
    teardown)."""
    import lightning.pytorch as L

    class StepClock(L.Callback):
        def __init__(self) -> None:
            self.first: float | None = None
            self.last = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.first is None:
                self.first = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.last = time.perf_counter()

    return StepClock()


def run_pipeline(
    bench: Bench,
    steps: int,
    *,
    step: str = "module",
    manual: bool = False,
    progress_bar: bool = True,
    logger: bool = True,
    deterministic: bool | None = None,
    callbacks: bool = True,
    instrument: Callable | None = None,
) -> dict[str, Any]:
    """Train with the real pipeline pieces for exactly ``steps`` optimizer steps.

    The keyword switches remove one feature each (``step``/``manual``: :func:`module_patches`; the others change
    the Trainer's arguments; ``callbacks=False`` drops ModelCheckpoint, History and LearningRateMonitor); with the
    defaults nothing is patched and the trainer is set up as ``pipelines/stages/train.py`` sets it up.
    ``instrument(module)`` is called before the fit (timers).

    Returns ``seconds`` (``trainer.fit``), ``loop_seconds`` (first batch start to last batch end) and the module.
    """
    import lightning.pytorch as L
    import mlflow
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import MLFlowLogger

    from pipelines.training.callbacks import History
    from pipelines.training.trainer import build_module, seed_everything

    exp, t = bench.exp, bench.exp.trainer
    seed_everything(bench.seed)
    module = build_module(exp, bench.meta)
    if instrument is not None:
        instrument(module)
    ckpt_dir = Path(tempfile.mkdtemp(dir=bench.workdir, prefix="ckpt-"))
    clock = step_clock()
    callback_list: list[L.Callback] = [clock]
    if callbacks:
        callback_list += [
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename="best",
                monitor=exp.checkpoint.monitor,
                mode=exp.checkpoint.mode,
                save_last=exp.checkpoint.save_last,
                save_top_k=1,
                enable_version_counter=False,
            ),
            History(time.time()),
        ]
    mlf_logger: Any = False
    if logger:
        run_id = mlflow.MlflowClient(bench.tracking_uri).create_run(bench.experiment_id).info.run_id
        mlf_logger = MLFlowLogger(experiment_name="throughput", tracking_uri=bench.tracking_uri, run_id=run_id)
        if callbacks:
            callback_list.append(LearningRateMonitor(logging_interval="epoch"))
    if progress_bar:
        callback_list.append(TQDMProgressBar(refresh_rate=t.progress_bar_refresh_rate))
    trainer = L.Trainer(
        max_epochs=t.max_epochs,
        max_steps=steps,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=t.precision,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=0,
        check_val_every_n_epoch=min(t.check_val_every_n_epoch, t.max_epochs),
        gradient_clip_val=None if manual else t.gradient_clip_val,
        deterministic=t.deterministic if deterministic is None else deterministic,
        log_every_n_steps=t.log_every_n_steps,
        logger=mlf_logger,
        callbacks=callback_list,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        enable_progress_bar=progress_bar,
        enable_checkpointing=callbacks,
        default_root_dir=str(ckpt_dir),
    )
    gc.collect()
    with module_patches(module, step, manual):
        start = time.perf_counter()
        trainer.fit(module, datamodule=bench.datamodule)
        seconds = time.perf_counter() - start
        done = trainer.global_step  # read while the variant's optimization mode is still set
    if done != steps:
        raise RuntimeError(f"pipeline did {done} optimizer steps, expected {steps}")
    return {"seconds": seconds, "loop_seconds": clock.last - (clock.first or clock.last), "module": module}


# ---------------------------------------------------------------------------------------------------- hand


def hand_network(bench: Bench):
    """The experiment's network, built and initialised exactly as ``SupervisedModule`` does (same seeded RNG)."""
    from models.factories import initialize
    from models.registry import build_network
    from pipelines.training.module import network_spec
    from pipelines.training.trainer import seed_everything

    seed_everything(bench.seed)
    spec = network_spec(bench.exp, bench.meta)
    return initialize(build_network(bench.exp.architecture, spec, bench.exp.model), bench.exp.initializer)


def run_hand(bench: Bench, steps: int, loader: str = "slice", instrument: Callable | None = None) -> dict[str, Any]:
    """A plain PyTorch loop for exactly ``steps`` optimizer steps.

    ``loader`` is ``slice`` (tensors shuffled once per epoch with ``TensorBatches``' seeded permutation, then sliced)
    or ``dataloader`` (``DataLoader(TensorDataset)``, same permutation). Torch's deterministic mode is off, as in any
    plain script. ``instrument(network, loss_fn)`` is called before the loop (timers). Returns ``seconds`` (the
    loop, including each epoch's shuffle), ``loop_seconds`` (first batch to last step) and the network.
    """
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from models.factories import make_loss, make_optimizer

    net = hand_network(bench)
    optimizer = make_optimizer(net.parameters(), bench.exp.optimizer)
    loss_fn = make_loss(bench.exp.loss, huber_delta=bench.exp.huber_delta)
    if instrument is not None:
        instrument(net, loss_fn)
    x, y = bench.datamodule.tensors["train"]
    batch_size, n = bench.datamodule.batch_size, len(x)
    net.train()
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = 0
        while True:
            if loader == "slice":
                order = torch.randperm(n, generator=torch.Generator().manual_seed(bench.seed + epoch))
                xs, ys = x[order], y[order]
                for start in range(0, n, batch_size):
                    yield xs[start : start + batch_size], ys[start : start + batch_size]
            else:
                yield from DataLoader(
                    TensorDataset(x, y),
                    batch_size=batch_size,
                    shuffle=True,
                    generator=torch.Generator().manual_seed(bench.seed + epoch),
                )
            epoch += 1

    gc.collect()
    try:
        start = time.perf_counter()
        first = None
        for step, (xb, yb) in enumerate(batches()):
            if first is None:
                first = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb), yb)
            loss.backward()
            optimizer.step()
            if step + 1 == steps:
                break
        end = time.perf_counter()
    finally:
        torch.use_deterministic_algorithms(previous)
    return {"seconds": end - start, "loop_seconds": end - first, "network": net, "final_loss": float(loss.detach())}


def max_weight_difference(a, b) -> float:
    """Largest absolute difference between two networks' parameters (0.0 means bitwise the same)."""
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


# -------------------------------------------------------------------------------------------------- driver


def paired_ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    """Per-round ratios ``numerator[i] / denominator[i]`` (rounds are interleaved, so pairs share the machine load)."""
    return [a / b for a, b in zip(numerator, denominator)]


def interleaved(
    bench: Bench, sides: dict[str, Callable], steps: int, warmup_steps: int, policy: Policy
) -> dict[str, Any]:
    """Warm every side up once, then run rounds of every side once (order rotated per round) under ``policy``.

    Returns per side: the seconds and loop seconds of the rounds used, their median, steps/s, ms per step, the
    fixed per-fit cost (fit minus loop), and the median of the per-round ratios against ``hand``; plus ``rounds``.
    """
    names = list(sides)
    for name in names:
        sides[name](bench, warmup_steps)

    def run_round(r: int) -> dict[str, dict[str, Any]]:
        order = names[r % len(names) :] + names[: r % len(names)]
        return {name: timed(lambda name=name: sides[name](bench, steps)) for name in order}

    rounds, info = collect_rounds(run_round, policy, "main")
    sec = {n: [r[n]["seconds"] for r in rounds] for n in names}
    loop = {n: [r[n]["loop_seconds"] for r in rounds] for n in names}
    summary: dict[str, Any] = {"rounds": info}
    for name in names:
        ratios = paired_ratios(sec[name], sec["hand"])
        summary[name] = {
            "seconds": sec[name],
            "median_seconds": median(sec[name]),
            "steps_per_s": steps / median(sec[name]),
            "loop_seconds": loop[name],
            "ms_per_step": 1000 * median(loop[name]) / max(steps - 1, 1),
            "fixed_seconds": median(s - lp for s, lp in zip(sec[name], loop[name])),
            "ratio_vs_hand": median(ratios),
            "ratios_vs_hand": ratios,
            "loop_ratio_vs_hand": median(paired_ratios(loop[name], loop["hand"])),
        }
    return summary


# ------------------------------------------------------------------------------------------------ breakdown


class Timers:
    """Accumulating wall-clock timers, installed by monkeypatching; ``patch`` wraps a callable attribute."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self._saved: list[tuple[Any, str, Any, bool]] = []
        self.depth: dict[str, int] = {}

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to timer ``name``."""
        self.totals[name] = self.totals.get(name, 0.0) + seconds
        self.counts[name] = self.counts.get(name, 0) + 1

    def wrap(self, name: str, fn: Callable, skip_inside: str | None = None) -> Callable:
        """``fn`` timed under ``name``; calls made while timer ``skip_inside`` is running are not counted."""

        def timed(*args, **kwargs):
            if skip_inside and self.depth.get(skip_inside):
                return fn(*args, **kwargs)
            self.depth[name] = self.depth.get(name, 0) + 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.depth[name] -= 1
                self.add(name, time.perf_counter() - start)

        return timed

    def patch(self, obj: Any, attr: str, name: str, skip_inside: str | None = None) -> None:
        """Replace ``obj.attr`` by a timed wrapper (restored by :meth:`restore`)."""
        had = attr in vars(obj)
        self._saved.append((obj, attr, getattr(obj, attr), had))
        setattr(obj, attr, self.wrap(name, getattr(obj, attr), skip_inside))

    def restore(self) -> None:
        """Undo every patch, last first."""
        for obj, attr, original, had in reversed(self._saved):
            if had:
                setattr(obj, attr, original)
            else:
                delattr(obj, attr)
        self._saved.clear()


STEP_TOTAL = "training_step (total)"
STEP_REST = "rest of training_step (running statistics, epoch-end check)"


def attribute(bench: Bench, steps: int, policy: Policy) -> dict[str, Any]:
    """Per-step cost of each piece of a training step, pipeline vs hand, from alternating instrumented runs.

    Returns ``{"pipeline": {piece: us_per_step}, "hand": {...}, "rounds": ...}`` (medians over rounds) where the
    pieces are forward, loss, backward, optimizer update, zero_grad, in the pipeline the penalty, ``self.log``, the
    rest of ``training_step`` (its running statistics), the progress bar and MLflow, and ``loop (rest)``: the step
    time not covered by any timer (Lightning's loop, hooks, closure and result collection in the pipeline; slicing
    and the Python loop in the hand side).
    """
    import lightning.pytorch as L
    import torch
    from lightning.pytorch.callbacks import TQDMProgressBar
    from lightning.pytorch.loggers import MLFlowLogger

    import models.module as mm

    def run_side(side: str) -> dict[str, Any]:
        timers = Timers()
        optimizer_update = {"total": 0.0}

        def time_optimizer_step(optimizer) -> None:
            original = optimizer.step

            def step(closure=None, **kwargs):
                start = time.perf_counter()
                inner = {"s": 0.0}
                if closure is not None:

                    def timed_closure():
                        t0 = time.perf_counter()
                        try:
                            return closure()
                        finally:
                            inner["s"] += time.perf_counter() - t0

                    out = original(closure=timed_closure, **kwargs)
                else:
                    out = original(**kwargs)
                optimizer_update["total"] += time.perf_counter() - start - inner["s"]
                return out

            optimizer.step = step

        timers.patch(torch.Tensor, "backward", "backward")
        timers.patch(torch.optim.Optimizer, "zero_grad", "zero_grad")
        try:
            if side == "pipeline":
                timers.patch(mm, "regularization_penalty", "penalty (regularization_penalty)")
                timers.patch(L.LightningModule, "log", "self.log (all calls)")
                timers.patch(TQDMProgressBar, "on_train_batch_end", "progress bar (on_train_batch_end)")
                timers.patch(MLFlowLogger, "log_metrics", "MLflow log_metrics")

                def instrument(module) -> None:
                    module.network.forward = timers.wrap("forward", module.network.forward)
                    module.loss_fn.forward = timers.wrap("loss", module.loss_fn.forward)
                    module.training_step = timers.wrap(STEP_TOTAL, module.training_step)
                    original_configure = module.configure_optimizers

                    def configure_optimizers():
                        optimizer = original_configure()
                        time_optimizer_step(optimizer)
                        return optimizer

                    module.configure_optimizers = configure_optimizers

                result = run_pipeline(bench, steps, instrument=instrument)
            else:

                def instrument_hand(net, loss_fn) -> None:
                    net.forward = timers.wrap("forward", net.forward)
                    loss_fn.forward = timers.wrap("loss", loss_fn.forward)

                import models.factories as mf

                original_make = mf.make_optimizer

                def make_optimizer(params, cfg):
                    optimizer = original_make(params, cfg)
                    time_optimizer_step(optimizer)
                    return optimizer

                mf.make_optimizer = make_optimizer
                try:
                    result = run_hand(bench, steps, instrument=instrument_hand)
                finally:
                    mf.make_optimizer = original_make
        finally:
            timers.restore()
        timers.totals["optimizer update"] = optimizer_update["total"]
        loop_us = 1e6 * result["loop_seconds"] / max(steps - 1, 1)
        pieces = {k: 1e6 * v / steps for k, v in timers.totals.items()}
        if STEP_TOTAL in pieces:  # what training_step does besides forward, loss, penalty and self.log
            inside = ("forward", "loss", "penalty (regularization_penalty)", "self.log (all calls)")
            pieces[STEP_REST] = pieces.pop(STEP_TOTAL) - sum(pieces.get(k, 0.0) for k in inside)
        pieces["loop (rest)"] = loop_us - sum(pieces.values())
        pieces["step total"] = loop_us
        return {"seconds": result["seconds"], "pieces": pieces}

    def run_round(r: int) -> dict[str, dict[str, Any]]:
        order = ("pipeline", "hand") if r % 2 == 0 else ("hand", "pipeline")
        return {side: timed(lambda side=side: run_side(side)) for side in order}

    rounds, info = collect_rounds(run_round, policy, "attribution")
    out: dict[str, Any] = {"rounds": info}
    for side in ("pipeline", "hand"):
        rows = [r[side]["pieces"] for r in rounds]
        keys = sorted({k for row in rows for k in row})
        out[side] = {k: round(median(row.get(k, 0.0) for row in rows), 1) for k in keys}
    return out


def paired(
    bench: Bench,
    run_a: Callable[[int], dict],
    run_b: Callable[[int], dict],
    steps: int,
    policy: Policy,
    label: str,
    names: tuple[str, str] = ("variant", "pipeline"),
) -> dict[str, Any]:
    """``run_a`` against ``run_b`` (each takes a number of steps) in ABBA-ordered pairs, ``policy.repeats`` clean
    pairs wanted. Returns ``ratio`` (median of the paired ratios a/b), ``saved_ms_per_step`` (median of the paired
    differences b - a of loop time per step), ``saved_fixed_seconds`` (same for the fixed cost per fit), the raw
    times and how the pairs went."""
    name_a, name_b = names

    def run_round(p: int) -> dict[str, dict[str, Any]]:
        order = (name_b, name_a) if p % 2 == 0 else (name_a, name_b)
        return {which: timed(lambda which=which: (run_a if which == name_a else run_b)(steps)) for which in order}

    pairs, info = collect_rounds(run_round, policy, label)
    a, b = [p[name_a] for p in pairs], [p[name_b] for p in pairs]
    ratios = [x["seconds"] / y["seconds"] for x, y in zip(a, b)]
    saved_step = [1000 * (y["loop_seconds"] - x["loop_seconds"]) / max(steps - 1, 1) for x, y in zip(a, b)]
    saved_fixed = [(y["seconds"] - y["loop_seconds"]) - (x["seconds"] - x["loop_seconds"]) for x, y in zip(a, b)]
    return {
        "ratio": median(ratios),
        "ratios": ratios,
        "saved_ms_per_step": median(saved_step),
        "saved_fixed_seconds": median(saved_fixed),
        "a_seconds": [x["seconds"] for x in a],
        "b_seconds": [y["seconds"] for y in b],
        "rounds": info,
    }


def ablation(
    bench: Bench, variants: dict[str, dict[str, Any]], steps: int, warmup_steps: int, policy: Policy
) -> dict[str, Any]:
    """Each variant against the real pipeline in ABBA-ordered pairs (:func:`paired`); ``ratio`` < 1 is faster."""
    out: dict[str, Any] = {}
    for name, opts in variants.items():
        run_pipeline(bench, warmup_steps, **opts)
        row = paired(
            bench,
            lambda n, opts=opts: run_pipeline(bench, n, **opts),
            lambda n: run_pipeline(bench, n),
            steps,
            policy,
            f"ablation {name}",
        )
        out[name] = row | {"what": VARIANT_NOTES.get(name, "")}
        policy.log(
            f"ablation {name}: {row['ratio']:.3f} x pipeline time, saves {row['saved_ms_per_step']:.2f} "
            f"ms/step and {row['saved_fixed_seconds']:.3f} s/fit"
        )
    return out


def micro_costs(bench: Bench, repeats: int = 2000) -> dict[str, float]:
    """Microbenchmarks outside Lightning (microseconds per call, median of 5 batches of ``repeats`` calls), on one
    real batch, of per-step work a training step can do: for scale against the step times above."""
    import torch
    import torchmetrics

    from models.factories import make_loss, regularization_penalty
    from pipelines.config import RegularizationConfig
    from pipelines.tasks import get_task

    x, y = bench.datamodule.tensors["train"]
    bs = bench.datamodule.batch_size
    net = hand_network(bench)
    loss_fn = make_loss(bench.exp.loss, huber_delta=bench.exp.huber_delta)
    with torch.no_grad():
        logits = net(x[:bs])
    yb = y[:bs]
    loss = loss_fn(logits, yb)
    num_classes = bench.meta.get("num_classes")
    task = get_task("multiclass")(bench.meta)
    full = task.build_metrics(full=False)
    fast = torchmetrics.MetricCollection(
        {"acc": torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro", validate_args=False)}
    )
    none_cfg = RegularizationConfig()
    penalty = regularization_penalty(net, none_cfg)
    sums = torch.zeros(5)
    n = float(bs)

    def running_statistics() -> None:  # what SupervisedModule.training_step adds per step since 96b5e22
        sums.add_(
            torch.stack(
                [
                    loss.detach() * n,
                    loss.detach() * n,
                    penalty.detach() * n,
                    (logits.argmax(dim=-1) == yb).sum().float(),
                    torch.tensor(n),
                ]
            )
        )

    cases: dict[str, Callable[[], Any]] = {
        "running statistics (torch.stack of 5 sums into a buffer, as training_step does)": running_statistics,
        "regularization_penalty(type none)": lambda: regularization_penalty(net, none_cfg),
        "softmax (Task.predictions)": lambda: task.predictions(logits),
        "MetricCollection[MulticlassAccuracy].update(softmax(logits)) (the step before 96b5e22)": lambda: full.update(
            task.predictions(logits), yb
        ),
        "same, validate_args=False, on logits": lambda: fast.update(logits, yb),
    }
    out: dict[str, float] = {}
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(bench.exp.trainer.deterministic)
    try:
        for name, fn in cases.items():
            for _ in range(50):
                fn()
            samples = []
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(repeats):
                    fn()
                samples.append(1e6 * (time.perf_counter() - start) / repeats)
            out[name] = round(median(samples), 1)
    finally:
        torch.use_deterministic_algorithms(previous)
    return out


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's info lines and the expected warnings (no validation, so no monitored metric)."""
    import lightning.pytorch  # noqa: F401  (its import sets the level of its logger; override it afterwards)

    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*could not find the monitored key.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


@contextlib.contextmanager
def progress_to(path: Path | None) -> Iterator[None]:
    """Send stdout (where Lightning's TQDM progress bar writes) to ``path`` (``None``: leave it alone). The bar still
    formats and writes every refresh, as in a ``dvc repro`` log."""
    if path is None:
        yield
        return
    with open(path, "a", encoding="utf-8") as fh, contextlib.redirect_stdout(fh):
        yield


def measure(
    steps: int = 300,
    repeats: int = 5,
    breakdown: str = "auto",
    warmup_steps: int = 30,
    pairs: int = 4,
    max_rounds: int | None = None,
    quiet_wait: float = 60.0,
    log: Callable[[str], None] = print,
    progress_log: Path | None = None,
) -> dict[str, Any]:
    """Run the benchmark; returns the results (also written to ``benchmarks/out/throughput.json``).

    Args:
        steps: optimizer steps per run (both sides).
        repeats: clean interleaved rounds wanted for the headline comparison (see :class:`Policy`).
        breakdown: ``auto`` (only when the ratio exceeds 1.10), ``always`` or ``never``.
        warmup_steps: steps of the one warm-up run of each side.
        pairs: clean ABBA pairs wanted per ablation variant, and alternating rounds of the attribution.
        max_rounds: give up waiting for clean rounds after this many (default ``2 * repeats``).
        quiet_wait: seconds to wait for a quiet machine before each round (0: never wait).
        log: where progress lines go.
        progress_log: file that receives the progress bar (stdout) during the runs.
    """
    import torch

    policy = Policy(repeats, max_rounds or 2 * repeats, quiet_wait, log)
    with (
        tempfile.TemporaryDirectory(prefix="deepnotes-throughput-") as tmp,
        quiet_lightning(),
        progress_to(progress_log),
    ):
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        bench = setup(Path(tmp))
        log(
            f"data: {bench.data_source}; train samples {len(bench.datamodule.tensors['train'][0])}, batch "
            f"{bench.datamodule.batch_size}; torch threads {torch.get_num_threads()}"
        )
        # Equivalence: the same batches, network, optimizer and loss must give the same weights.
        pipe, hand = run_pipeline(bench, 20), run_hand(bench, 20)
        equivalence = max_weight_difference(pipe["module"].network, hand["network"])
        log(f"max |w_pipeline - w_hand| after 20 steps: {equivalence:.3g}")

        sides: dict[str, Callable] = {
            "pipeline": lambda b, n: run_pipeline(b, n),
            "hand": lambda b, n: run_hand(b, n, "slice"),
            "hand_dataloader": lambda b, n: run_hand(b, n, "dataloader"),
        }
        summary = interleaved(bench, sides, steps, warmup_steps, policy)
        ratio = summary["pipeline"]["ratio_vs_hand"]
        exp = bench.exp
        results: dict[str, Any] = {
            "date": started,
            "machine": machine_info(),
            "git_commit": git_commit(),
            "experiment": EXPERIMENT,
            "profile": bench.params.profile,
            "steps": steps,
            "batch_size": bench.datamodule.batch_size,
            "repeats": repeats,
            "warmup_steps": warmup_steps,
            "data": bench.data_source,
            "train_samples": len(bench.datamodule.tensors["train"][0]),
            "config": {
                "architecture": exp.architecture,
                "model": exp.model,
                "activation": exp.activation,
                "batch_norm": exp.batch_norm,
                "dropout": exp.dropout,
                "optimizer": exp.optimizer.name,
                "lr": exp.optimizer.lr,
                "loss": exp.loss,
                "regularization": exp.regularization.type,
            },
            "trainer": exp.trainer.model_dump(mode="json"),
            "equivalence_max_abs_weight_diff": equivalence,
            "sides": summary,
            "ratio_pipeline_vs_hand": ratio,
            "ratio_dataloader_vs_hand": summary["hand_dataloader"]["ratio_vs_hand"],
            "target_ratio": TARGET_RATIO,
            "contention_threshold_cores": CONTENTION_CORES,
        }
        log(f"ratio pipeline/hand {ratio:.3f}, dataloader/hand {results['ratio_dataloader_vs_hand']:.3f}")
        if breakdown == "always" or (breakdown == "auto" and ratio > TARGET_RATIO):
            write_json("throughput", results | {"partial": "breakdown running"})
            pair_policy = Policy(pairs, 2 * pairs, quiet_wait, log)
            results["pairs"] = pairs
            results["micro_us_per_call"] = micro_costs(bench)
            results["attribution_us_per_step"] = attribute(bench, steps, pair_policy)
            write_json("throughput", results | {"partial": "breakdown running"})
            results["ablation"] = ablation(bench, BREAKDOWN_VARIANTS, steps, warmup_steps, pair_policy)
            write_json("throughput", results | {"partial": "breakdown running"})
            results["versus_hand"] = {}
            for name in VERSUS_HAND:
                opts = BREAKDOWN_VARIANTS[name]
                row = paired(
                    bench,
                    lambda n, opts=opts: run_pipeline(bench, n, **opts),
                    lambda n: run_hand(bench, n),
                    steps,
                    pair_policy,
                    f"{name} vs hand",
                    names=(name, "hand"),
                )
                results["versus_hand"][name] = row
                log(f"pipeline with {name} / hand: {row['ratio']:.3f}")
        results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        results["load_average_after"] = machine_info()["load_average"]
    write_json("throughput", results)
    return results


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: measure and print the ratios."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run (default 300)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--warmup-steps", type=int, default=30, help="steps of each side's warm-up run")
    parser.add_argument(
        "--breakdown",
        choices=("auto", "always", "never"),
        default="auto",
        help="per-feature cost breakdown: when the ratio exceeds 1.10 (auto), always or never",
    )
    parser.add_argument("--pairs", type=int, default=4, help="clean ABBA pairs per ablation variant (default 4)")
    parser.add_argument("--max-rounds", type=int, default=None, help="stop after this many rounds (default 2x)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait for a quiet machine before each round (default 60; 0: never)",
    )
    parser.add_argument(
        "--progress-log", type=Path, default=None, help="file for the progress bar output (default: stdout)"
    )
    args = parser.parse_args(argv)
    import os

    os.environ.setdefault("DEEPNOTES_DATA_MIRROR", str(mirror_path()))
    results = measure(
        args.steps,
        args.repeats,
        args.breakdown,
        args.warmup_steps,
        args.pairs,
        args.max_rounds,
        args.quiet_wait,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        progress_log=args.progress_log,
    )
    print(
        f"pipeline/hand = {results['ratio_pipeline_vs_hand']:.3f} (target <= {TARGET_RATIO}); "
        f"dataloader/hand = {results['ratio_dataloader_vs_hand']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
