"""Training and running a character-level language model (the ``language_model`` task,
:mod:`pipelines.tasks.language_model`): truncated back-propagation through time, its loss and metrics, evaluation
along streams and seeded sampling.

Truncated back-propagation through time (notes 002, "BACK-PROPAGATION THRU TIME"; Williams & Peng 1990; char-rnn):
Lightning 2.x has no ``truncated_bptt_steps``, so :class:`LanguageModule` carries the state itself. Its batches are
``B`` parallel streams of the text (:mod:`pipelines.data.streams`: row ``b`` of batch ``k + 1`` continues row ``b`` of
batch ``k``); each step starts from the state the previous batch ended in, detached
(:func:`models.sequence.core.detach_state`), so the gradient of chunk ``k``'s loss flows through its ``T`` steps
only and never into chunk ``k - 1``. The state is reset to zeros at the start of every train, validation and test
epoch. The network is ``char_rnn`` (:class:`models.sequence.language_model.CharRNN`): ``step(tokens, state)``.
"""

from __future__ import annotations

import math

import torch
import torchmetrics
from torch import nn
from torchmetrics.text import Perplexity

from models.sequence.core import State, detach_state
from pipelines.training.module import SupervisedModule


class SequenceCrossEntropy(nn.Module):
    """The mean cross-entropy in nats of the next symbol over every step: logits ``(N, T, V)``, targets ``(N, T)``
    int64 -> a scalar (``nn.functional.cross_entropy`` of the flattened steps)."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1).long())


class BitsPerCharacter(Perplexity):
    """Bits per character: the mean cross-entropy of torchmetrics' :class:`~torchmetrics.text.Perplexity` state
    (summed ``-log p`` of the targets, in nats, and their count) divided by ``ln 2``. Logits ``(N, T, V)``, targets
    ``(N, T)``."""

    def compute(self) -> torch.Tensor:
        return self.total_log_probs / self.count / math.log(2)


def character_metrics(full: bool = True) -> torchmetrics.MetricCollection:
    """``bits_per_char`` (and ``perplexity`` when ``full``) over logits ``(N, T, V)`` and targets ``(N, T)``; the two
    share one state (torchmetrics' compute groups)."""
    metrics: dict[str, torchmetrics.Metric] = {"bits_per_char": BitsPerCharacter()}
    if full:
        metrics["perplexity"] = Perplexity()
    return torchmetrics.MetricCollection(metrics)  # type: ignore[arg-type]


def fit_state(state: State | None, rows: int) -> State | None:
    """``state`` for a batch of ``rows`` streams: its first ``rows`` (an evaluation's last batches lack the last
    streams, :func:`pipelines.data.streams.stream_order`), or ``None`` (zeros) when it has fewer."""
    if state is None:
        return None
    h = state[0] if isinstance(state, tuple) else state
    if h.shape[1] < rows:
        return None
    if h.shape[1] == rows:
        return state
    if isinstance(state, tuple):
        return (state[0][:, :rows], state[1][:, :rows])
    return state[:, :rows]


class LanguageModule(SupervisedModule):
    """:class:`~pipelines.training.module.SupervisedModule` with the recurrent state carried across batches:
    truncated back-propagation through time (module docstring).

    Everything else is the supervised module's (loss + penalty, the once-per-epoch train statistics, metrics,
    optimizer, checkpoints): only :meth:`forward` differs. It runs ``network.step`` from the state the previous
    batch of the same mode (training, or validation/test) left, keeps the new state detached, and returns the logits
    ``(B, T, V)`` of tokens ``(B, T)``. The states are reset at each epoch's start (:meth:`reset_state`).
    """

    def _carried(self) -> dict[bool, State | None]:
        carried = self.__dict__.get("_carried_state")
        if carried is None:
            carried = self.__dict__["_carried_state"] = {True: None, False: None}
        return carried

    def reset_state(self, training: bool | None = None) -> None:
        """Forget the carried state of training (``True``), evaluation (``False``) or both (``None``)."""
        carried = self._carried()
        for mode in (True, False) if training is None else (training,):
            carried[mode] = None

    def carried_state(self, training: bool = True) -> State | None:
        """The state the last batch of ``training`` (or evaluation) mode ended in, detached."""
        return self._carried()[training]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        carried = self._carried()
        state = fit_state(carried[self.training], len(x))
        logits, state = self.network.step(x, state)  # type: ignore[operator]
        carried[self.training] = detach_state(state)
        return logits

    def on_train_epoch_start(self) -> None:
        self.reset_state(True)

    def on_validation_epoch_start(self) -> None:
        self.reset_state(False)

    def on_test_epoch_start(self) -> None:
        self.reset_state(False)


def stream_nats(network: nn.Module, x: torch.Tensor, y: torch.Tensor, streams: int | None = None) -> torch.Tensor:
    """Each character's cross-entropy in nats ``(N, T)``, in chunk order, of ``network`` on chunks ``x`` with targets
    ``y`` (``(N, T)`` int64): run along ``streams`` parallel streams (default
    :data:`pipelines.data.datamodule.EVAL_BATCH_SIZE`; :func:`pipelines.data.streams.stream_order`, every chunk kept)
    with the state carried from batch to batch, as training and validation read the text, in eval mode without
    gradients. Only ``(B, T, V)`` logits exist at a time."""
    from pipelines.data.datamodule import EVAL_BATCH_SIZE
    from pipelines.data.streams import stream_order

    network.eval()
    state: State | None = None
    with torch.inference_mode():
        nats = torch.empty(y.shape, dtype=torch.float32)
        for index in stream_order(len(x), min(streams or EVAL_BATCH_SIZE, max(len(x), 1)), drop_last=False):
            logits, state = network.step(x[index], fit_state(state, len(index)))  # type: ignore[operator]
            nats[index] = nn.functional.cross_entropy(logits.float().transpose(1, 2), y[index].long(), reduction="none")
    return nats


def sample(
    network: nn.Module, vocab: list[str], seed_text: str, length: int, temperature: float = 1.0, seed: int = 0
) -> str:
    """``length`` characters generated after ``seed_text`` (Karpathy's char-rnn sampling; notes 002 one-to-many).

    The network reads the seed text from a zero state, then draws each next character from
    ``softmax(logits / temperature)`` with a ``torch.Generator`` seeded by ``seed`` and feeds it back
    (``network.step``), in eval mode without gradients. The same arguments give the same text.

    Raises:
        ValueError: ``seed_text`` is empty or holds a character outside ``vocab``; ``temperature`` is not positive.
    """
    from pipelines.data.preparers.chars import decode_chars, encode_chars

    if not seed_text:
        raise ValueError("sample: seed_text is empty; give at least one character")
    if temperature <= 0:
        raise ValueError(f"sample: temperature must be positive, got {temperature}")
    ids = torch.from_numpy(encode_chars(seed_text, vocab))
    generator = torch.Generator().manual_seed(seed)
    network.eval()
    out: list[int] = []
    with torch.inference_mode():
        logits, state = network.step(ids[None, :], None)  # type: ignore[operator]
        for _ in range(length):
            probs = torch.softmax(logits[0, -1].float() / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)
            out.append(int(nxt))
            logits, state = network.step(nxt[None, :], state)  # type: ignore[operator]
    return decode_chars(out, vocab)
