"""What the always-on gradient diagnostics cost: LeNet-5 on real MNIST, one epoch, with and without them.

    python -m benchmarks.diagnostics_overhead [--samples 12000] [--repeats 5]

Variants, run interleaved (off, default, every step; repeated) in one process so that machine noise hits all of
them alike: ``off`` (no callback), ``every 25`` (the default of ``params.yaml``) and ``every 1`` (the worst case).
Reports the median fit time of each and its ratio to ``off``, measured side by side, and rewrites
``benchmarks/DIAGNOSTICS.md`` (atomically). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning.pytorch as L
import torch

from benchmarks._common import REPO_ROOT, atomic_write_text, load_average, machine_info, mirror_path
from pipelines.data.datamodule import TensorBatches
from pipelines.data.readers import read_idx
from pipelines.training.gradient_flow import GradientDiagnostics
from pipelines.training.module import SupervisedModule

RESULTS = REPO_ROOT / "benchmarks" / "DIAGNOSTICS.md"
VARIANTS = {"off": None, "every 25 (default)": 25, "every 1": 1}


def _module() -> SupervisedModule:
    spec = {
        "input_shape": [1, 28, 28],
        "num_outputs": 10,
        "activation": "relu",
        "dropout": 0.0,
        "batch_norm": True,
        "vocab_size": None,
    }
    return SupervisedModule(
        "lenet5",
        spec,
        {"pooling": "max"},
        "multiclass",
        {"num_classes": 10},
        "ce",
        {"name": "adam", "lr": 1e-3},
        {"type": "none", "strength": 0.0},
        "he_uniform",
    )


def fit_seconds(x: torch.Tensor, y: torch.Tensor, every: int | None) -> float:
    L.seed_everything(0, verbose=False)
    module = _module()
    callbacks = [] if every is None else [GradientDiagnostics(every_n_steps=every)]
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(module, TensorBatches(x, y, batch_size=128, shuffle=True, seed=0))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=12000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    mirror = mirror_path()
    x = (
        torch.tensor(
            read_idx(mirror / "mnist" / "train-images-idx3-ubyte.gz")[: args.samples], dtype=torch.float32
        ).unsqueeze(1)
        / 255.0
    )
    y = torch.tensor(read_idx(mirror / "mnist" / "train-labels-idx1-ubyte.gz")[: args.samples], dtype=torch.long)
    fit_seconds(x[:1024], y[:1024], 1)  # warm-up: imports, first-call costs
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, every in VARIANTS.items():
            times[name].append(fit_seconds(x, y, every))
    base = statistics.median(times["off"])
    steps = -(-args.samples // 128)
    lines = [
        "# Gradient-diagnostics overhead",
        "",
        f"`python -m benchmarks.diagnostics_overhead --samples {args.samples} --repeats {args.repeats}`: LeNet-5 "
        f"(batch norm, max pooling) on {args.samples} real MNIST train images, one epoch of {steps} steps at batch "
        "128, Lightning `Trainer` without logger; variants interleaved in one process, medians of "
        f"{args.repeats} fits.",
        "",
        "| diagnostics | median fit (s) | all fits (s) | ratio to off |",
        "|---|---|---|---|",
    ]
    for name in VARIANTS:
        med = statistics.median(times[name])
        lines.append(f"| {name} | {med:.3f} | {', '.join(f'{t:.2f}' for t in times[name])} | {med / base:.3f} |")
    info = machine_info()
    lines += [
        "",
        f"Machine: {info.get('cpu', '?')}, {info.get('nproc', '?')} cores; load average at the end "
        f"{load_average()}; torch {torch.__version__}, lightning {L.__version__}.",
        "",
    ]
    atomic_write_text(RESULTS, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
