"""What the recurrent networks share: the cell by name, its parameter count, and state handling.

notes 002 "RNN" (h_t = tanh(W_h h_{t-1} + W_x x_t): the same weights at every time step), "LSTM", "GRU VS LSTM";
notes 004 "LSTM"; notes 000 "Recurrent Neural Network (RNN)" (the LSTM's gates). Every network of the family runs
whole sequences through torch's fused kernels (``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``): no Python loop over time.

The cells, as the notes write them (sigma = sigmoid, * = elementwise product, [h, x] = concatenation):

- ``rnn`` (Elman): ``h_t = tanh(W_h h_{t-1} + W_x x_t + b)``; 1 weight block per layer and direction.
- ``lstm``: forget ``f_t = sigma(W_f [h_{t-1}, x_t] + b_f)``, input ``i_t = sigma(W_i [h_{t-1}, x_t] + b_i)``,
  candidate ``g_t = tanh(W_g [h_{t-1}, x_t] + b_g)``, output ``o_t = sigma(W_o [h_{t-1}, x_t] + b_o)``;
  long-term (cell) state ``c_t = f_t * c_{t-1} + i_t * g_t``, short-term (hidden) state ``h_t = o_t * tanh(c_t)``;
  4 blocks.
- ``gru``: reset ``r_t = sigma(W_r [h_{t-1}, x_t] + b_r)``, update ``z_t = sigma(W_z [h_{t-1}, x_t] + b_z)``,
  candidate ``n_t = tanh(W_n x_t + r_t * (U_n h_{t-1}) + b_n)``, ``h_t = (1 - z_t) * n_t + z_t * h_{t-1}``;
  3 blocks ("GRU is computationally efficient than LSTM": 3/4 of its parameters and multiply-adds).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from models.registry import NetworkSpec

#: Weight blocks ("gates") per layer and direction of each cell: rnn 1, gru 3 (reset, update, candidate),
#: lstm 4 (forget, input, candidate, output).
GATES: dict[str, int] = {"rnn": 1, "gru": 3, "lstm": 4}

#: A recurrent state as torch returns it: ``h_n`` ``(num_layers * num_directions, N, H)``, or ``(h_n, c_n)`` (LSTM).
State = Tensor | tuple[Tensor, Tensor]


def make_recurrent(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
) -> nn.RNNBase:
    """Build torch's fused recurrent module for ``cell`` (``batch_first=True``).

    ``rnn`` is ``nn.RNN(nonlinearity="tanh")`` (tanh, the notes' default against exploding activations),
    ``lstm`` is ``nn.LSTM``, ``gru`` is ``nn.GRU``. ``dropout`` applies between stacked layers only (torch's
    semantics), so it is dropped for a single layer rather than warned about.

    Shapes: input ``(N, T, input_size)``; outputs ``(N, T, hidden_size * num_directions)`` and the final state
    ``(num_layers * num_directions, N, hidden_size)`` (a pair ``(h_n, c_n)`` for LSTM).

    Raises:
        ValueError: unknown ``cell`` (the message lists the known ones), or ``dropout`` outside [0, 1).
    """
    if cell not in GATES:
        raise ValueError(f"unknown recurrent cell {cell!r}; expected one of {', '.join(GATES)}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"recurrent dropout must be in [0, 1), got {dropout}")
    kwargs: dict[str, Any] = {
        "num_layers": num_layers,
        "batch_first": True,
        "bidirectional": bidirectional,
        "dropout": dropout if num_layers > 1 else 0.0,
    }
    if cell == "rnn":
        return nn.RNN(input_size, hidden_size, nonlinearity="tanh", **kwargs)
    if cell == "lstm":
        return nn.LSTM(input_size, hidden_size, **kwargs)
    return nn.GRU(input_size, hidden_size, **kwargs)


def recurrent_parameter_count(
    cell: str, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False
) -> int:
    """Trainable parameters of :func:`make_recurrent`'s module, by formula.

    Per layer and direction: ``gates * (h * (h + x) + 2 * h)`` with ``gates`` from :data:`GATES` (rnn 1, gru 3,
    lstm 4), ``h = hidden_size`` and ``x`` the layer's input size: ``input_size`` for the first layer,
    ``hidden_size * num_directions`` above it (a stacked layer reads both directions' outputs).
    The notes write one bias per gate (``W [h, x] + b``: ``gates * (h * (h + x) + h)``); PyTorch keeps two bias
    vectors, ``b_ih`` and ``b_hh`` (cuDNN's layout), hence ``+ 2 * h``. The extra ``gates * h`` per layer and
    direction are redundant for rnn and lstm (they add up); for gru ``b_hn`` sits inside ``r_t * (U_n h + b_hn)``.

    Example: one LSTM layer, x = 64, h = 64: 4 * (64 * 128 + 128) = 33,280.

    Raises:
        ValueError: unknown ``cell``.
    """
    if cell not in GATES:
        raise ValueError(f"unknown recurrent cell {cell!r}; expected one of {', '.join(GATES)}")
    directions = 2 if bidirectional else 1
    total = 0
    for layer in range(num_layers):
        x = input_size if layer == 0 else hidden_size * directions
        total += directions * GATES[cell] * (hidden_size * (hidden_size + x) + 2 * hidden_size)
    return total


def detach_state(state: State | None) -> State | None:
    """Cut the graph behind a carried state (truncated back-propagation through time, notes 002 "BACK-PROPAGATION
    THRU TIME"): the values carry over to the next chunk, the gradients stop here. ``None`` stays ``None``."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return (state[0].detach(), state[1].detach())
    return state.detach()


def describe_recurrent(
    spec: NetworkSpec, cell: str, embedding_dim: int, hidden_size: int, num_layers: int, bidirectional: bool = False
) -> dict[str, float | int]:
    """Facts worth tracking of a recurrent network: the recurrent core's parameter count by
    :func:`recurrent_parameter_count` (``recurrent_params``), its weight blocks per layer and direction
    (``recurrent_gates``) and, for token inputs, the embedding's parameters (``embedding_params``).

    The input size is ``embedding_dim`` for token inputs (``spec.vocab_size`` set), else the series' features:
    ``spec.input_shape[1]`` for ``(T, F)``, 1 for ``(T,)``.
    """
    if spec.vocab_size is not None:
        input_size = embedding_dim
    else:
        input_size = int(spec.input_shape[1]) if len(spec.input_shape) == 2 else 1
    facts: dict[str, float | int] = {
        "recurrent_params": recurrent_parameter_count(cell, input_size, hidden_size, num_layers, bidirectional),
        "recurrent_gates": GATES[cell],
    }
    if spec.vocab_size is not None:
        facts["embedding_params"] = spec.vocab_size * embedding_dim
    return facts
