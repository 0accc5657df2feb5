"""Params models and registry entries of the generative family (torch-free: pydantic and :mod:`models.registry`
only)."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from models.registry import Architecture, ArchParams, register


class AutoencoderParams(ArchParams):
    """``autoencoder`` (models/generative/autoencoder.py): the encoder's hidden widths and the code size."""

    hidden_sizes: list[PositiveInt] = Field(
        default_factory=lambda: [256],
        description="units per hidden layer of the encoder, input side first; the decoder mirrors them",
    )
    bottleneck: PositiveInt = Field(
        32, description="size of the code (latent representation); must be below the input's size (undercomplete)"
    )


register(
    Architecture(
        "autoencoder",
        "models.generative.autoencoder:Autoencoder",
        AutoencoderParams,
        "notes 002, AUTO ENCODERS (undercomplete: encoder to a bottleneck, decoder back)",
        "Hinton & Salakhutdinov (2006), Reducing the dimensionality of data with neural networks",
        frozenset({"image"}),
        frozenset({"reconstruction"}),
    )
)
