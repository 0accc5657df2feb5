"""Batches of parallel text streams for truncated back-propagation through time (char-rnn's and the PyTorch word
language model's "batchify").

A prepared character split is ``N`` consecutive chunks ``x[i]`` of ``T`` characters (chunk ``i + 1`` continues
chunk ``i``; :mod:`pipelines.data.preparers.chars`). :func:`stream_order` deals them into ``B`` streams of
``K = ceil(N / B)`` consecutive chunks, stream ``b`` holding chunks ``b*K ... b*K + K - 1``, and batch ``k`` is
chunk ``k`` of every stream: ``x[b*K + k]`` for ``b = 0 .. B-1``. So row ``b`` of batch ``k + 1`` continues row ``b``
of batch ``k``, and a recurrent state carried from one batch to the next reads each stream as one long text.
Nothing is shuffled; training drops the last ``N mod B`` chunks (every batch then has all ``B`` rows), evaluation
keeps them (the last stream is shorter: its row is missing from the last batches, and the rows present are always
the first ones).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from pipelines.data.datamodule import EVAL_BATCH_SIZE, ArrayDataModule


def stream_order(n: int, streams: int, drop_last: bool = True) -> list[torch.Tensor]:
    """The chunk indices of each batch: ``batches[k][b]`` is chunk ``k`` of stream ``b`` (module docstring).

    Args:
        n: the number of chunks ``N``.
        streams: ``B``, at most ``n``.
        drop_last: keep only ``B * (N // B)`` chunks, so every batch has ``B`` rows (training); otherwise every chunk
            is in one batch, streams of ``ceil(N / B)`` chunks and the last ones shorter (evaluation).

    Raises:
        ValueError: ``streams`` is not positive, or there are fewer chunks than streams (naming both).
    """
    if streams < 1:
        raise ValueError(f"streams must be positive, got {streams}")
    if n < streams and drop_last:
        raise ValueError(
            f"{n} chunks cannot fill {streams} parallel streams (batch_size); use a smaller batch_size, shorter "
            f"chunks (tbptt_steps) or more characters"
        )
    if n == 0:
        return []
    per_stream = n // streams if drop_last else -(-n // streams)
    starts = torch.arange(streams) * per_stream
    return [index[index < n] for index in (starts + k for k in range(per_stream))]


class StreamBatches:
    """An iterable of ``(x, y)`` batches ``(B, T)`` in stream order (:func:`stream_order`), the same every epoch.

    Under DDP, rank ``r`` of ``w`` takes streams ``r, r + w, ...`` of every batch (each rank carries its own state).
    ``len()`` is the number of batches.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, streams: int, drop_last: bool = True, rank: int = 0, world_size: int = 1
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} chunks but y has {len(y)}")
        self.x, self.y = x, y
        self.order = stream_order(len(x), min(streams, len(x)) if not drop_last else streams, drop_last)
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index in self.order:
            index = index[self.rank :: self.world_size]
            yield self.x[index], self.y[index]


class StreamDataModule(ArrayDataModule):
    """The datamodule of a language model: ``batch_size`` parallel streams of chunks for training, without
    shuffling (:class:`StreamBatches`), and :data:`~pipelines.data.datamodule.EVAL_BATCH_SIZE` streams with every
    chunk for validation and test. ``seed`` is kept for the interface: nothing is random here.

    Raises:
        ValueError: the train split has fewer chunks than ``batch_size`` (at construction, naming both).
    """

    def __init__(self, data, batch_size: int | None, seed: int, eval_batch_size: int | None = None):
        super().__init__(data, batch_size, seed, eval_batch_size)
        n_train = len(self.tensors["train"][0])
        if n_train < self.batch_size:
            raise ValueError(
                f"dataset {data.meta.get('dataset')!r}: its train split has {n_train} chunks of "
                f"{data.meta.get('tbptt_steps')} characters, fewer than batch_size {self.batch_size} parallel "
                f"streams; use a smaller batch_size or tbptt_steps, or more characters (max_train_chars)"
            )

    def _loader(self, split: str, train: bool) -> StreamBatches:  # type: ignore[override]
        x, y = self.tensors[split]
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        streams = self.batch_size if train else (self.eval_batch_size or EVAL_BATCH_SIZE)
        return StreamBatches(x, y, streams, drop_last=train, rank=rank, world_size=world)
