"""Transfer learning (notes 001, "Transfer learning": a small dataset fits the last few layers of a model trained on
a large one): load a backbone's weights from a file, and find the backbone of a network.

Every convolutional network of the registry is split into ``features`` (the backbone: convolutions up to the
flattened feature vector) and ``classifier`` (the head). Fine-tuning keeps the backbone of a network trained on
another task and trains a fresh head on top, with the backbone frozen
(:class:`pipelines.training.callbacks.FreezeBackbone`) or not.

Weights are read with ``torch.load(weights_only=True)``: tensors only, so a weights file cannot run code on load.
Nothing is ever downloaded: the file is a DVC dependency of the stage that reads it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

#: Key prefixes of the backbone tried in order when none is given: a Lightning checkpoint of
#: :class:`models.module.DeepNotesModule` (``network.features.``), then a plain ``network.state_dict()``.
BACKBONE_PREFIXES = ("network.features.", "features.")


class PretrainedWeightsError(ValueError):
    """A weights file cannot be read or does not fit the backbone; the message names the file and the keys."""


def backbone_of(network: nn.Module) -> nn.Module:
    """The network's backbone, its ``features`` module.

    Raises:
        PretrainedWeightsError: the network has no ``features`` module (e.g. an MLP or an LSTM).
    """
    features = getattr(network, "features", None)
    if not isinstance(features, nn.Module):
        raise PretrainedWeightsError(
            f"{type(network).__name__} has no `features` backbone; transfer learning needs a network split into "
            f"`features` (backbone) and `classifier` (head), like the registry's convolutional networks"
        )
    return features


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The ``{name: tensor}`` of a weights file: a plain ``state_dict`` or a Lightning checkpoint (its
    ``state_dict`` entry), loaded on the CPU with ``weights_only=True``.

    Raises:
        PretrainedWeightsError: the file is missing, unreadable, or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"{path}: no such weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike: the file is not a weights-only torch file
        raise PretrainedWeightsError(
            f"{path}: not a weights-only torch file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise PretrainedWeightsError(
            f"{path}: expected a state_dict (a mapping of names to tensors) or a Lightning checkpoint holding one"
        )
    return obj


def load_backbone(network: nn.Module, path: str | Path, prefix: str | None = None) -> dict[str, int | str]:
    """Copy the backbone weights stored in ``path`` into ``backbone_of(network)``, strictly: every backbone tensor
    must be in the file, with the same shape. The head is left as it is.

    Args:
        network: the network to fill (its head may have any number of outputs).
        path: a weights file (:func:`read_state_dict`).
        prefix: key prefix of the backbone in the file, e.g. ``"features."``; ``None`` tries
            :data:`BACKBONE_PREFIXES`. Converted third-party weights (e.g. ImageNet) need keys renamed to the
            network's ``features.*`` names first.

    Returns:
        ``{"tensors": loaded tensor count, "parameters": loaded parameter count, "prefix": the prefix used}``.

    Raises:
        PretrainedWeightsError: unreadable file, no key with the prefix, or missing, unexpected or mis-shaped
            backbone tensors (the message lists them).
    """
    state = read_state_dict(path)
    candidates = BACKBONE_PREFIXES if prefix is None else (prefix,)
    prefix = next((p for p in candidates if any(k.startswith(p) for k in state)), None)
    if prefix is None:
        sample = ", ".join(list(state)[:5])
        raise PretrainedWeightsError(
            f"{path}: no key starts with {' or '.join(map(repr, candidates))} (the file "
            f"has e.g. {sample}); set pretrained.prefix"
        )
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    backbone = backbone_of(network)
    own = backbone.state_dict()
    missing, unexpected = sorted(own.keys() - weights.keys()), sorted(weights.keys() - own.keys())
    mismatched = [
        f"{k}: file {tuple(weights[k].shape)}, network {tuple(own[k].shape)}"
        for k in own.keys() & weights.keys()
        if weights[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        problems = [
            f"{label} {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape mismatch", sorted(mismatched)),
            )
            if items
        ]
        raise PretrainedWeightsError(
            f"{path}: the weights under {prefix!r} do not fit the backbone of "
            f"{type(network).__name__}: {'; '.join(problems)}"
        )
    backbone.load_state_dict(weights)
    return {"tensors": len(weights), "parameters": sum(p.numel() for p in backbone.parameters()), "prefix": prefix}
