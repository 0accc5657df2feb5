"""Inference time per image against batch size, for the networks the pipeline evaluates on a CPU.

Why: ``evaluate`` and the validation loop used 1,024-2,048 images per batch; on a 2-core CPU inference is
cache-bound and smaller batches are much faster. This measures the ratio side by side (interleaved rounds, best
of them per batch size) so the choice of :data:`pipelines.data.EVAL_BATCH_SIZE` rests on numbers.

    python -m benchmarks.eval_batch [--rounds 3]

Prints a Markdown table (microseconds per image; the last column is the speed-up of 128 over 2,048).
"""

from __future__ import annotations

import argparse
import time

import torch

from models.registry import NetworkSpec, build_network

BATCH_SIZES = (2048, 1024, 256, 128, 64)


def cases() -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    """The zoo's networks in eval mode with random inputs of their data's shape (times do not depend on values)."""
    torch.manual_seed(0)
    image = lambda n, *shape: torch.randn(n, *shape)  # noqa: E731
    return {
        "resnet (depth 20), 3x32x32": (
            build_network("resnet", NetworkSpec((3, 32, 32), 10), {"depth": 20}),
            image(4096, 3, 32, 32),
        ),
        "vgg (11, BN, widths / 4), 3x32x32": (
            build_network("vgg", NetworkSpec((3, 32, 32), 10, batch_norm=True), {"depth": 11, "width_divisor": 4}),
            image(4096, 3, 32, 32),
        ),
        "alexnet, 3x32x32": (build_network("alexnet", NetworkSpec((3, 32, 32), 10)), image(4096, 3, 32, 32)),
        "lenet5, 1x28x28": (build_network("lenet5", NetworkSpec((1, 28, 28), 10)), image(8192, 1, 28, 28)),
        "localizer, 1x64x64": (
            build_network("localizer", NetworkSpec((1, 64, 64), 10, batch_norm=True)),
            image(4096, 1, 64, 64),
        ),
        "rnn (lstm), 128 tokens": (
            build_network("rnn", NetworkSpec((128,), 1, vocab_size=20000), {"cell": "lstm"}),
            torch.randint(0, 20000, (4096, 128)),
        ),
    }


def per_image_us(network: torch.nn.Module, x: torch.Tensor, batch_size: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            network(x[i : i + batch_size])
    return (time.perf_counter() - start) * 1e6 / len(x)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; best of {args.rounds} interleaved rounds\n")
    print("| network | " + " | ".join(f"batch {b}" for b in BATCH_SIZES) + " | 2048 / 128 |")
    print("|---|" + "---:|" * (len(BATCH_SIZES) + 1))
    for name, (network, x) in cases().items():
        network.eval()
        best = {b: float("inf") for b in BATCH_SIZES}
        for _ in range(args.rounds):
            for b in BATCH_SIZES:  # interleaved: every batch size sees the same machine state
                best[b] = min(best[b], per_image_us(network, x, b))
        print(
            f"| {name} | "
            + " | ".join(f"{best[b]:.0f} µs" for b in BATCH_SIZES)
            + f" | {best[2048] / best[128]:.1f}x |"
        )


if __name__ == "__main__":
    main()
