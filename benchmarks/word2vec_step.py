"""The word2vec training step (models/embedding/word2vec.py) with two ways of scoring the positive and noise words:
``torch.einsum("pd,pkd->pk")`` (a batched matrix product of (1, d) x (d, K) blocks) against
``torch.linalg.vecdot`` (a broadcast multiply and sum), forward, backward and SGD step together.

Why: a profile of the skip-gram step put 38% of its time in the einsum's ``bmm``. This times both side by side on
real batches (interleaved rounds, the best round of each), so the choice rests on a ratio measured in one run.

    python -m benchmarks.word2vec_step [--rounds 5] [--steps 40]

Needs ``data/prepared/imdb_corpus`` (``dvc repro -s prepare@imdb_corpus``). Prints a Markdown table (ms per step of
2 rows of 1,000 words, the default profile's batch).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from models.embedding import word2vec
from models.registry import NetworkSpec
from pipelines.data.prepared import PREPARED_ROOT
from pipelines.training.embedding import NegativeSamplingLoss


def _einsum(hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.einsum("pd,pkd->pk", hidden.squeeze(1), targets)


def time_steps(mode: str, scorer, x: torch.Tensor, meta: dict, steps: int) -> float:
    """Milliseconds per SGD step of ``mode`` with ``scorer`` standing in for ``torch.linalg.vecdot``."""
    torch.manual_seed(0)
    net = word2vec.Word2Vec(NetworkSpec((x.shape[1],), 1, vocab_size=meta["vocab_size"]), mode=mode)
    net.use_counts(meta["counts"])
    optimizer = torch.optim.SGD(net.parameters(), lr=0.025)
    loss_fn = NegativeSamplingLoss()
    original = word2vec.torch.linalg.vecdot
    word2vec.torch.linalg.vecdot = scorer
    try:
        start = time.perf_counter()
        for i in range(steps):
            logits = net.objective(x[2 * i : 2 * i + 2])
            loss = loss_fn(logits) * len(logits)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - start) / steps * 1000
    finally:
        word2vec.torch.linalg.vecdot = original


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args(argv)
    folder = PREPARED_ROOT / "imdb_corpus"
    meta = json.loads((folder / "meta.json").read_text())
    x = torch.from_numpy(np.load(folder / "train_x.npy")[: 2 * args.steps])
    scorers = {"einsum": _einsum, "vecdot": torch.linalg.vecdot}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds of {args.steps} steps")
    print("| mode | einsum ms/step | vecdot ms/step | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for mode in ("skipgram", "cbow"):
        best = {name: float("inf") for name in scorers}
        for _ in range(args.rounds):
            for name, scorer in scorers.items():
                best[name] = min(best[name], time_steps(mode, scorer, x, meta, args.steps))
        print(f"| {mode} | {best['einsum']:.1f} | {best['vecdot']:.1f} | {best['einsum'] / best['vecdot']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
