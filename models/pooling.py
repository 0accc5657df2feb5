"""Pooling a sequence of feature vectors over time, over its real (non-padding) steps only.

Used by the Transformer encoder (models/attention/encoder.py); ``rnn`` (models/sequence/recurrent.py) and
``conv1d_text`` (models/sequence/conv1d.py) still pool with their own copy of these lines, to be replaced by this
function when their experiments next rerun anyway (an edit there reruns the 12 sequence experiments). Kim (2014) pools a sentence's convolution features by their max over time;
BERT-style classifiers often mean-pool the encoder's outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The pooling modes :func:`pool_over_time` knows.
POOLINGS = ("mean", "max")


def pool_over_time(features: Tensor, real: Tensor | None = None, mode: str = "mean") -> Tensor:
    """The mean or max of ``features`` over time, counting only the steps ``real`` marks.

    Shapes: ``features`` ``(N, T, C)``; ``real`` ``(N, T)`` bool, True on the steps to pool (None: all of them);
    returns ``(N, C)``. A row without a real step pools to 0 (not NaN or -inf), so an all-padding input still gives
    a finite prediction.

    Raises:
        ValueError: ``mode`` is not ``mean`` or ``max``.
    """
    if mode not in POOLINGS:
        raise ValueError(f"pooling over time must be one of {', '.join(POOLINGS)}, got {mode!r}")
    if real is None:
        return features.mean(dim=1) if mode == "mean" else features.amax(dim=1)
    mask = real.unsqueeze(-1)  # (N, T, 1)
    count = mask.sum(dim=1)  # (N, 1): real steps per row
    if mode == "mean":
        return (features * mask).sum(dim=1) / count.clamp(min=1)
    pooled = features.masked_fill(~mask, float("-inf")).amax(dim=1)
    return torch.where(count > 0, pooled, torch.zeros_like(pooled))
