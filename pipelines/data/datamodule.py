"""Feeding prepared arrays to Lightning as fast as a hand-written loop.

``torch.utils.data.DataLoader`` indexes one sample at a time and collates each batch, which costs about 10-30 %
over slicing pre-shuffled in-memory tensors (STACK.md). Our datasets fit in memory, so :class:`TensorBatches`
shuffles an index once per epoch (seeded) and yields contiguous slices. Under DDP each rank takes an
interleaved, equal-sized shard of the same permutation, as ``DistributedSampler`` would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import lightning.pytorch as L
import numpy as np
import torch

from pipelines.data.prepared import PreparedData

#: Batch size for validation, test and prediction. Inference on a CPU is cache-bound: on 2 cores, 128 images per
#: batch ran 1.5x (LSTM) to 2.2x (ResNet-20, LeNet-5) faster than 2,048 (``python -m benchmarks.eval_batch``,
#: results in benchmarks/ZOO.md). The outputs are the same; only the batching differs.
EVAL_BATCH_SIZE = 128


class TensorBatches:
    """An iterable of ``(x, y)`` mini-batches over in-memory tensors.

    Args:
        x: inputs ``(N, ...)``; y: targets ``(N,)``.
        batch_size: samples per batch; the last batch may be smaller unless ``drop_last``.
        shuffle: reshuffle every epoch with ``torch.Generator`` seeded by ``seed + epoch``.
        rank, world_size: this process's shard under data-parallel training.
        epoch_of: returns the epoch being iterated (the trainer's ``current_epoch``), so that a run resumed at
            epoch ``k`` draws epoch ``k``'s order; without it, iterations are counted from 0.

    ``len()`` is the number of batches per epoch, so Lightning can show progress and honour
    ``limit_train_batches``.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        epoch_of: Callable[[], int] | None = None,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.epoch_of = epoch_of

    def _shard_size(self) -> int:
        return -(-len(self.x) // self.world_size) if self.world_size > 1 else len(self.x)

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        order = None
        epoch = self.epoch_of() if self.epoch_of is not None else self.epoch
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=gen)
        self.epoch = epoch + 1
        if self.world_size > 1:
            index = order if order is not None else torch.arange(n)
            total = self._shard_size() * self.world_size
            index = torch.cat([index, index[: total - n]])  # pad by wrapping, like DistributedSampler
            order = index[self.rank :: self.world_size]
        x, y = (self.x, self.y) if order is None else (self.x[order], self.y[order])
        for start in range(0, len(x), self.batch_size):
            end = start + self.batch_size
            if self.drop_last and end > len(x):
                return
            yield x[start:end], y[start:end]


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """Copy a (possibly memory-mapped, read-only) array into a torch tensor; float64 becomes float32."""
    return torch.from_numpy(np.array(array, dtype=np.float32 if array.dtype == np.float64 else array.dtype))


class ArrayDataModule(L.LightningDataModule):
    """A ``LightningDataModule`` over a :class:`PreparedData` (train, val and test splits in memory).

    Args:
        data: the prepared arrays (augmented train samples already appended).
        batch_size: mini-batch size; ``None`` means full-batch (the notes' gradient descent, ``gd``).
        seed: shuffling seed.
        eval_batch_size: batch size for val/test/predict (default: :data:`EVAL_BATCH_SIZE`).
    """

    def __init__(self, data: PreparedData, batch_size: int | None, seed: int, eval_batch_size: int | None = None):
        super().__init__()
        self.data = data
        self.tensors = {split: (to_tensor(data.x[split]), to_tensor(data.y[split])) for split in data.x}
        n_train = len(self.tensors["train"][0])
        self.batch_size = batch_size or n_train
        self.eval_batch_size = eval_batch_size or EVAL_BATCH_SIZE
        self.seed = seed

    def _loader(self, split: str, train: bool) -> TensorBatches:
        x, y = self.tensors[split]
        rank, world, epoch_of = 0, 1, None
        trainer = self.trainer
        if trainer is not None:
            rank, world = trainer.global_rank, trainer.world_size
            epoch_of = lambda: trainer.current_epoch  # noqa: E731
        return TensorBatches(
            x,
            y,
            self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            seed=self.seed,
            rank=rank,
            world_size=world,
            epoch_of=epoch_of,
        )

    def train_dataloader(self) -> TensorBatches:
        return self._loader("train", train=True)

    def val_dataloader(self) -> TensorBatches:
        return self._loader("val", train=False)

    def test_dataloader(self) -> TensorBatches:
        return self._loader("test", train=False)
