"""Shape and parameter arithmetic, layer by layer, as the notes do it by hand; and a Keras-like summary of a real
network.

The formulas (with W the input width or height, F the kernel, P the padding, S the stride, D the input depth,
N the number of filters):

- output size ``(W - F + 2P) / S + 1``: notes 001 "Lenet" (``H' = (H - f)/s + 1 = (28 - 5)/1 + 1 = 24``, and
  ``(H + 2P - k)/s + 1`` with padding), notes 001 "Alexnet" (``(54 - 3)/2 + 1``, ``(12 - 3)/1 + 1``) and notes 003
  (``n - k + 2P + 1`` for stride 1, "Valid Padding" / "Same Padding"). Max pooling uses the same formula with F the
  window and S its stride (notes 001 "Alexnet": "Max Pool (2D) (f x f, s x s)").
- 'same' padding ``P = (F - 1) / 2``: the P that solves ``(H + 2P - f)/S + 1 = H`` for S = 1 (notes 001 "Lenet";
  notes 003 "Same Padding": a 3x3 kernel with P = 1 keeps 5x5 at 5x5).
- convolution parameters ``(F * F * D + 1) * N`` (notes 001 "Alexnet": "learnable parameters = (f x f x d + 1) x n";
  notes 002 "CONVNET CODE (KERAS)": ``32 x 64 x 3 x 3 + 64 = 18,496``), dense parameters ``(fan_in + 1) * fan_out``
  (notes 002: ``64 x 10 + 10 = 650``); pooling, activations and flattening have none (notes 002: "Pooling layer
  has zero trainable params").

:func:`summarize` measures the same quantities on a real ``nn.Module`` (forward hooks, one zero sample) and
:func:`format_summary` prints them like Keras' ``model.summary()`` (notes 002, "Total params: 93,322")::

    >>> from models.registry import NetworkSpec, build_network
    >>> print(format_summary(summarize(build_network("keras_convnet", NetworkSpec((1, 28, 28), 10)), (1, 28, 28))))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "LayerRow",
    "conv_output_size",
    "conv_params",
    "dense_params",
    "format_summary",
    "same_padding",
    "summarize",
]

Rounding = Literal["exact", "floor", "ceil"]


def _check_ints(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")


def conv_output_size(w: int, f: int, p: int = 0, s: int = 1, *, rounding: Rounding = "exact") -> int:
    """Output width (or height) of a convolution or pooling: ``(W - F + 2P) / S + 1`` (notes 001 "Lenet").

    Examples from the notes: ``conv_output_size(28, 5) == 24``; AlexNet's ``conv_output_size(227, 11, s=4) == 55``;
    'same' padding ``conv_output_size(5, 3, p=1) == 5`` (notes 003).

    Args:
        w: input width or height W (>= 1).
        f: kernel or pooling window F (>= 1).
        p: zero padding P on each side (>= 0).
        s: stride S (>= 1).
        rounding: ``"exact"`` (default) insists on a whole number, as the notes' worked examples are; ``"floor"``
            rounds down, as PyTorch, Keras ``padding='valid'`` and the notes' ``(28 - 5)/2 + 1 -> 12`` do; ``"ceil"``
            rounds up, as PyTorch's ``ceil_mode=True`` pooling (a last window that would start in the right padding
            is dropped, as PyTorch does) and Keras pooling with ``padding='same'`` (for P = 0).

    Returns:
        The output size, a whole number >= 1.

    Raises:
        ValueError: a non-integer or out-of-range argument; a window larger than the padded input
            (``F > W + 2P``); with ``rounding="exact"``, a size that is not a whole number. The message names the
            values, e.g. ``(W - F + 2P)/S + 1 = (224 - 11 + 2*0)/4 + 1 = 54.25 is not a whole number``.
    """
    _check_ints(w=w, f=f, p=p, s=s)
    if w < 1 or f < 1 or p < 0 or s < 1:
        raise ValueError(f"need W >= 1, F >= 1, P >= 0, S >= 1; got W={w}, F={f}, P={p}, S={s}")
    if rounding not in ("exact", "floor", "ceil"):
        raise ValueError(f"unknown rounding {rounding!r}; allowed: exact, floor, ceil")
    numerator = w - f + 2 * p
    formula = f"(W - F + 2P)/S + 1 = ({w} - {f} + 2*{p})/{s} + 1 = {numerator / s + 1:g}"
    if numerator < 0:
        raise ValueError(f"{formula} is below 1: the {f}x{f} window does not fit in the padded input ({w} + 2*{p})")
    if rounding == "exact":
        if numerator % s:
            raise ValueError(
                f"{formula} is not a whole number (use rounding='floor' or 'ceil' for what PyTorch/Keras do)"
            )
        return numerator // s + 1
    if rounding == "floor":
        return numerator // s + 1
    out = -(-numerator // s) + 1
    if (out - 1) * s >= w + p:  # PyTorch: the last window must start inside the input or the left padding
        out -= 1
    return out


def same_padding(f: int) -> int:
    """The 'same' padding of an F x F kernel at stride 1: ``P = (F - 1) / 2``, which makes ``(W - F + 2P)/1 + 1 = W``.

    Notes 001 "Lenet" (``(H + 2P - f)/S + 1 = H``) and notes 003 "Same Padding" (a 3x3 kernel with P = 1).
    ``same_padding(3) == 1``, ``same_padding(5) == 2``, ``same_padding(11) == 5``.

    Raises:
        ValueError: F < 1, or an even F (no symmetric padding keeps the size: Keras pads one side more).
    """
    _check_ints(f=f)
    if f < 1:
        raise ValueError(f"kernel size F must be >= 1, got {f}")
    if f % 2 == 0:
        raise ValueError(
            f"'same' padding P = (F - 1)/2 = {(f - 1) / 2:g} is not a whole number for the even kernel "
            f"F={f}: no symmetric padding keeps the size"
        )
    return (f - 1) // 2


def conv_params(f: int, d: int, n: int, bias: bool = True) -> int:
    """Learnable parameters of a convolution: ``(F * F * D + 1) * N`` (notes 001 "Alexnet"; notes 002).

    One F x F x D filter per output map plus one bias each; ``bias=False`` drops the ``+ 1``.
    ``conv_params(3, 1, 32) == 320`` and ``conv_params(3, 32, 64) == 18_496`` (notes 002's Keras summary);
    ``conv_params(3, 256, 384) == 885_120`` (notes 001, AlexNet's third convolution).

    Raises:
        ValueError: any of F, D, N below 1.
    """
    _check_ints(f=f, d=d, n=n)
    if min(f, d, n) < 1:
        raise ValueError(f"need F, D, N >= 1; got F={f}, D={d}, N={n}")
    return (f * f * d + int(bool(bias))) * n


def dense_params(fan_in: int, fan_out: int, bias: bool = True) -> int:
    """Learnable parameters of a dense layer: ``(fan_in + 1) * fan_out`` (notes 002: ``64 x 10 + 10 = 650``).

    Raises:
        ValueError: ``fan_in`` or ``fan_out`` below 1.
    """
    _check_ints(fan_in=fan_in, fan_out=fan_out)
    if min(fan_in, fan_out) < 1:
        raise ValueError(f"need fan_in, fan_out >= 1; got fan_in={fan_in}, fan_out={fan_out}")
    return (fan_in + int(bool(bias))) * fan_out


# ---------------------------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class LayerRow:
    """One row of :func:`summarize`: one call of one layer.

    Attributes:
        name: the layer's dotted path in the module (``"features.0.0"``); ``""`` for the root module.
        type: the layer's class name (``"Conv2d"``).
        output_shape: the per-sample output shape, channels first (``(32, 26, 26)``; Keras prints channels last,
            ``(None, 26, 26, 32)``). For a layer returning a tuple (an LSTM), the shape of its first tensor.
        params: parameters the layer owns (each counted once: 0 on a second call, or for a parameter shared with a
            layer listed earlier).
        trainable: how many of ``params`` have ``requires_grad``.
    """

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    trainable: int


def _first_tensor(value: object) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, dict):
        return _first_tensor(list(value.values()))
    return None


def summarize(module: nn.Module, input_shape: Sequence[int], dtype: torch.dtype | None = None) -> list[LayerRow]:
    """The layers of ``module`` in the order they run, with output shapes and parameter counts.

    One forward pass of a single zero sample ``(1, *input_shape)`` under ``torch.no_grad`` in eval mode (batch-norm
    statistics untouched; the training mode is restored). A forward hook on every leaf module, and on every
    module that holds parameters of its own, records one :class:`LayerRow` per call. The input is created on the
    module's device (a network built under ``torch.device("meta")`` is summarised without any computation).

    ``sum(row.params for row in rows)`` equals ``sum(p.numel() for p in module.parameters())`` whenever every
    parameter takes part in the forward pass (parameters of layers the forward pass never calls are missing).

    Args:
        module: any network.
        input_shape: the per-sample input shape, e.g. ``(1, 28, 28)``.
        dtype: the input's dtype; default the dtype of the module's first floating parameter (float32 without one).
            Pass ``torch.long`` for token ids.

    Returns:
        The rows; format them with :func:`format_summary`.

    Raises:
        ValueError: the forward pass failed (e.g. an input too small for the network), naming the module's class and
        ``input_shape``.
    """
    shape = tuple(int(d) for d in input_shape)
    params = list(module.parameters())
    device = params[0].device if params else torch.device("cpu")
    if dtype is None:
        dtype = next((p.dtype for p in params if p.is_floating_point()), torch.float32)
    names = {id(m): name for name, m in module.named_modules(remove_duplicate=False)}
    seen: set[int] = set()
    rows: list[LayerRow] = []

    def hook(layer: nn.Module, _inputs: object, output: object) -> None:
        count = trainable = 0
        for p in layer.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                count += p.numel()
                trainable += p.numel() if p.requires_grad else 0
        out = _first_tensor(output)
        rows.append(
            LayerRow(
                names.get(id(layer), "?"),
                type(layer).__name__,
                tuple(out.shape[1:]) if out is not None else (),
                count,
                trainable,
            )
        )

    handles = [
        m.register_forward_hook(hook)
        for m in {id(m): m for m in module.modules()}.values()
        if not any(True for _ in m.children()) or any(True for _ in m.parameters(recurse=False))
    ]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(1, *shape, dtype=dtype, device=device))
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{type(module).__name__}: cannot summarise on input_shape {shape} ({exc})") from None
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    return rows


def format_summary(rows: Sequence[LayerRow], title: str | None = None) -> str:
    """A Keras-like ``model.summary()`` table of ``rows`` (notes 002 "CONVNET CODE (KERAS)"), totals at the bottom.

    Shapes are printed with ``None`` for the batch and channels first, e.g. ``(None, 32, 26, 26)``; parameter counts
    with thousands separators; then ``Total params``, ``Trainable params`` and ``Non-trainable params``. Batch-norm
    running statistics are buffers, not parameters, so they are not counted (Keras counts them as non-trainable).

    Args:
        rows: from :func:`summarize`.
        title: printed as ``Model: "<title>"`` above the table when given.

    Returns:
        The table as one string (``print`` it).
    """
    cells = [(f"{r.name or '(root)'} ({r.type})", str((None, *r.output_shape)), f"{r.params:,}") for r in rows]
    header = ("Layer (type)", "Output Shape", "Param #")
    w0 = max([len(header[0]), *(len(c[0]) for c in cells)]) + 2
    w1 = max([len(header[1]), *(len(c[1]) for c in cells)]) + 2
    w2 = max([len(header[2]), *(len(c[2]) for c in cells)])
    width = 1 + w0 + w1 + w2
    total, trainable = sum(r.params for r in rows), sum(r.trainable for r in rows)
    lines = [f'Model: "{title}"'] if title else []
    lines += ["_" * width, f" {header[0]:<{w0}}{header[1]:<{w1}}{header[2]:>{w2}}", "=" * width]
    lines += [f" {a:<{w0}}{b:<{w1}}{c:>{w2}}" for a, b, c in cells]
    lines += [
        "=" * width,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        "_" * width,
    ]
    return "\n".join(lines)
