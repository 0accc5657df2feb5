"""The undercomplete autoencoder (notes 002 "AUTO ENCODERS (Unsupervised)"; Hinton & Salakhutdinov 2006)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from models.layers import dense_block, flat_size
from models.registry import NetworkSpec


class Autoencoder(nn.Module):
    """A dense undercomplete autoencoder: an encoder down to a bottleneck (the code), a mirrored decoder back.

    Hinton & Salakhutdinov, "Reducing the dimensionality of data with neural networks" (Science, 2006); notes 002
    "AUTO ENCODERS": the network is trained to give back its input, and the bottleneck (a code smaller than the
    input, "undercomplete") is what stops it from simply copying the input through; the encoder turns the input into
    an efficient latent representation, the decoder turns that back into something very close to the input. With
    several hidden layers it is the notes' "stacked deep autoencoder". The objective is the reconstruction error
    L(x, x_hat), typically MSE or cross-entropy (``F.binary_cross_entropy`` on these outputs, which are already
    through a sigmoid); there is no explicit regularizer (sparse and denoising variants are not built here).

    Layers, with ``D = prod(spec.input_shape)``, ``h = hidden_sizes`` and ``b = bottleneck``:

    - ``encoder``: Flatten, then one :func:`models.layers.dense_block` per width of ``h`` (Linear ->
      [BatchNorm1d if ``spec.batch_norm``] -> ``spec.activation`` -> [Dropout(``spec.dropout``) if > 0]), then a
      linear code layer Linear(h[-1] -> b) (no activation: with linear activations the autoencoder spans the
      same subspace as PCA, notes 002 "PCA vs autoencoders");
    - ``decoder``: the mirror, one dense_block per width of ``reversed(h)`` from b, then Linear(h[0] -> D),
      Unflatten to ``spec.input_shape`` and a Sigmoid, so outputs are pixel intensities in [0, 1] (the inputs are
      expected in [0, 1] too).

    Shapes: input ``(N, *spec.input_shape)``; :meth:`encode` gives ``(N, b)``, :meth:`decode` takes ``(N, b)`` to
    ``(N, *spec.input_shape)``; ``forward(x) = decode(encode(x))`` has the input's shape. ``spec.num_outputs`` is
    ignored (the output is the reconstructed input).

    Parameters: with widths ``w = [D, *h, b, *reversed(h), D]``, the sum over consecutive pairs of
    ``(w[i] + 1) * w[i + 1]``, plus ``2 * 2 * sum(h)`` with batch norm (a BatchNorm1d after every hidden layer of
    the encoder and of the decoder; none on the code and output layers). For 1x28x28 and the defaults (h = [256],
    b = 32): (784 + 1)*256 + (256 + 1)*32 + (32 + 1)*256 + (256 + 1)*784 = 200,960 + 8,224 + 8,448 + 201,488 =
    419,120 (+ 1,024 with batch norm). The notes' typical architecture 784 -> 100 -> 10 is ``hidden_sizes=[100],
    bottleneck=10``.

    Args:
        spec: data shape and shared knobs (``activation``, ``dropout``, ``batch_norm`` of the hidden layers).
        hidden_sizes: units per hidden layer of the encoder, input side first (the decoder uses them in reverse);
            empty gives a single linear layer each way.
        bottleneck: size of the code; must be below ``D``.

    Raises:
        ValueError: ``bottleneck >= prod(spec.input_shape)`` (not undercomplete) or below 1, a hidden size below 1
            (each naming the value), or an unknown activation.
    """

    def __init__(self, spec: NetworkSpec, hidden_sizes: Sequence[int] = (256,), bottleneck: int = 32) -> None:
        super().__init__()
        self.input_shape = tuple(int(d) for d in spec.input_shape)
        size = flat_size(self.input_shape)
        hidden = [int(h) for h in hidden_sizes]
        if bottleneck < 1:
            raise ValueError(f"autoencoder needs bottleneck >= 1, got bottleneck={bottleneck}")
        if bottleneck >= size:
            raise ValueError(
                f"autoencoder: bottleneck={bottleneck} is not below the input size {size} "
                f"(prod of input_shape {self.input_shape}); an undercomplete autoencoder needs a smaller "
                f"code"
            )
        if hidden and min(hidden) < 1:
            raise ValueError(f"autoencoder needs positive hidden sizes, got hidden_sizes={hidden}")
        self.bottleneck = int(bottleneck)
        act, bn, dropout = spec.activation, spec.batch_norm, spec.dropout
        down = [size, *hidden]
        up = [self.bottleneck, *reversed(hidden)]
        self.encoder = nn.Sequential(
            nn.Flatten(),
            *(dense_block(a, b, act, bn, dropout) for a, b in zip(down[:-1], down[1:])),
            nn.Linear(down[-1], self.bottleneck),  # the code
        )
        self.decoder = nn.Sequential(
            *(dense_block(a, b, act, bn, dropout) for a, b in zip(up[:-1], up[1:])),
            nn.Linear(up[-1], size),
            nn.Unflatten(1, self.input_shape),
            nn.Sigmoid(),
        )

    def encode(self, x: Tensor) -> Tensor:
        """``(N, *input_shape)`` -> ``(N, bottleneck)``: the code (latent representation)."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """``(N, bottleneck)`` -> ``(N, *input_shape)``: the reconstruction, in [0, 1]."""
        return self.decoder(z)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, *input_shape)`` -> ``(N, *input_shape)``: ``decode(encode(x))``."""
        return self.decode(self.encode(x))
