"""AlexNet and VGG (models/vision/alexnet.py, models/vision/vgg.py): shapes and parameter counts on MNIST-size and
CIFAR-size inputs, the errors on inputs too small for them, and one real training step on CIFAR-10 images through the
shared Lightning module.

Expected counts are derived here from the layer lists of the papers' adaptations (conv (F*F*D + 1)*N, dense
(fan_in + 1)*fan_out, batch norm 2 per channel or unit), not read from the module.
"""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from models.registry import REGISTRY, NetworkSpec, build_network
from models.shapes import summarize
from pipelines import REPO_ROOT
from pipelines.training.module import SupervisedModule

DATA = Path(os.environ.get("DEEPNOTES_DATA_MIRROR") or REPO_ROOT.parent / "shared" / "data")
CIFAR_TEST = DATA / "cifar10" / "test_batch.bin.gz"
needs_cifar = pytest.mark.skipif(not CIFAR_TEST.is_file(), reason=f"{CIFAR_TEST} not found")


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv(in_channels: int, out_channels: int, kernel_size: int) -> int:
    return (kernel_size * kernel_size * in_channels + 1) * out_channels


def dense(fan_in: int, fan_out: int) -> int:
    return (fan_in + 1) * fan_out


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------- counts

ALEXNET_CHANNELS = (24, 64, 96, 96, 64)  # a quarter of Krizhevsky et al.'s 96, 256, 384, 384, 256


def alexnet_count(
    in_channels: int,
    size: int,
    classes: int,
    batch_norm: bool,
    channels: tuple[int, ...] = ALEXNET_CHANNELS,
    hidden: int = 1024,
) -> int:
    """3x3, 5x5, 3x3, 3x3, 3x3 'same' convolutions; three 2x2 poolings rounding down; fc6, fc7, output."""
    c1, c2, c3, c4, c5 = channels
    total = conv(in_channels, c1, 3) + conv(c1, c2, 5) + conv(c2, c3, 3) + conv(c3, c4, 3) + conv(c4, c5, 3)
    side = size // 2 // 2 // 2
    total += dense(c5 * side * side, hidden) + dense(hidden, hidden) + dense(hidden, classes)
    if batch_norm:
        total += 2 * sum(channels) + 2 * 2 * hidden
    return total


#: Simonyan & Zisserman (2015) Table 1, configurations A (11) and D (16); "M" is a 2x2 max pooling.
VGG = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def vgg_count(
    depth: int, in_channels: int, size: int, classes: int, batch_norm: bool, divisor: int = 1, hidden: int = 512
) -> int:
    """3x3 'same' convolutions; five 2x2 poolings rounding up (28 -> 14 -> 7 -> 4 -> 2 -> 1); two hidden dense."""
    total, d, side = 0, in_channels, size
    for v in VGG[depth]:
        if v == "M":
            side = math.ceil(side / 2)
        else:
            n = v // divisor
            total += conv(d, n, 3) + (2 * n if batch_norm else 0)
            d = n
    total += dense(d * side * side, hidden) + dense(hidden, hidden) + dense(hidden, classes)
    return total + (2 * 2 * hidden if batch_norm else 0)


def test_headline_counts():
    assert alexnet_count(3, 32, 10, False) == 2_342_378
    assert alexnet_count(1, 28, 10, False) == 1_883_194
    assert vgg_count(11, 3, 32, 10, False) == 9_750_922
    assert vgg_count(16, 3, 32, 10, False) == 15_245_130
    assert vgg_count(11, 3, 32, 10, False) - vgg_count(11, 1, 28, 10, False) == 2 * 9 * 64  # only conv1 differs


CASES = [
    ("alexnet", {}, False),
    ("alexnet", {}, True),
    ("vgg", {"depth": 11}, False),
    ("vgg", {"depth": 11}, True),
    ("vgg", {"depth": 16}, False),
    ("vgg", {"depth": 16}, True),
]


def expected_count(name: str, params: dict, in_channels: int, size: int, classes: int, batch_norm: bool) -> int:
    if name == "alexnet":
        return alexnet_count(in_channels, size, classes, batch_norm)
    return vgg_count(params["depth"], in_channels, size, classes, batch_norm, params.get("width_divisor", 1))


@pytest.mark.parametrize(
    ("name", "params", "batch_norm"), CASES, ids=["alexnet", "alexnet-bn", "vgg11", "vgg11-bn", "vgg16", "vgg16-bn"]
)
@pytest.mark.parametrize("input_shape", [(1, 28, 28), (3, 32, 32)], ids=["mnist", "cifar"])
def test_shapes_and_counts(name, params, batch_norm, input_shape):
    net = build_network(name, NetworkSpec(input_shape, 10, batch_norm=batch_norm, dropout=0.5), params)
    assert n_params(net) == expected_count(name, params, input_shape[0], input_shape[1], 10, batch_norm)
    assert net(torch.rand(2, *input_shape)).shape == (2, 10)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == (
        (5 if name == "alexnet" else sum(v != "M" for v in VGG[params["depth"]])) if batch_norm else 0
    )
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 2


def test_feature_map_sizes_on_both_inputs():
    def pools(name, input_shape, params=None):
        rows = summarize(build_network(name, NetworkSpec(input_shape, 10), params), input_shape)
        return [r.output_shape[1:] for r in rows if r.type == "MaxPool2d"]

    assert pools("alexnet", (3, 32, 32)) == [(16, 16), (8, 8), (4, 4)]
    assert pools("alexnet", (1, 28, 28)) == [(14, 14), (7, 7), (3, 3)]
    assert pools("vgg", (3, 32, 32)) == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert pools("vgg", (1, 28, 28)) == [(14, 14), (7, 7), (4, 4), (2, 2), (1, 1)]
    assert pools("vgg", (3, 17, 64), {"width_divisor": 8}) == [(9, 32), (5, 16), (3, 8), (2, 4), (1, 2)]


def test_options():
    spec = NetworkSpec((3, 32, 32), 1, activation="elu")
    net = build_network(
        "alexnet", spec, {"channels": [8, 16, 24, 24, 16], "hidden_size": 64, "local_response_norm": True}
    )
    assert n_params(net) == alexnet_count(3, 32, 1, False, (8, 16, 24, 24, 16), 64)
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in net.modules()) == 2
    assert sum(isinstance(m, nn.ELU) for m in net.modules()) == 7
    assert net(torch.rand(3, 3, 32, 32)).shape == (3,)  # one binary logit per image

    for depth in (11, 13, 16, 19):
        net = build_network("vgg", NetworkSpec((1, 28, 28), 10), {"depth": depth, "width_divisor": 4})
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) + 3 == depth  # the paper's depth counts the weight layers
        assert max(c.out_channels for c in convs) == 128 and convs[0].out_channels == 16
    assert n_params(build_network("vgg", NetworkSpec((3, 32, 32), 10), {"width_divisor": 4})) == vgg_count(
        11, 3, 32, 10, False, divisor=4
    )


def test_params_are_validated():
    with pytest.raises(ValidationError, match="depth"):
        build_network("vgg", NetworkSpec((3, 32, 32), 10), {"depth": 12})
    with pytest.raises(ValidationError, match="width_divisor"):
        build_network("vgg", NetworkSpec((3, 32, 32), 10), {"width_divisor": 0})
    with pytest.raises(ValidationError, match="channels"):
        build_network("alexnet", NetworkSpec((3, 32, 32), 10), {"channels": [8, 16]})
    with pytest.raises(ValidationError, match="extra"):
        build_network("alexnet", NetworkSpec((3, 32, 32), 10), {"batch_norm": True})
    assert REGISTRY["alexnet"].tasks == REGISTRY["vgg"].tasks == frozenset({"binary", "multiclass"})


def test_too_small_inputs_name_the_architecture():
    with pytest.raises(ValueError, match=r"alexnet: input_shape \(3, 7, 7\) is too small.*H, W >= 8"):
        build_network("alexnet", NetworkSpec((3, 7, 7), 10))
    assert build_network("alexnet", NetworkSpec((3, 8, 8), 10))(torch.rand(2, 3, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"vgg \(depth 16\): input_shape \(1, 16, 16\) is too small.*pooling 5"):
        build_network("vgg", NetworkSpec((1, 16, 16), 10), {"depth": 16})
    with pytest.raises(ValueError, match=r"vgg \(depth 11\): input_shape \(1, 28, 8\) is too small.*pooling 4"):
        build_network("vgg", NetworkSpec((1, 28, 8), 10))
    assert build_network("vgg", NetworkSpec((1, 17, 17), 10))(torch.rand(2, 1, 17, 17)).shape == (2, 10)
    for name in ("alexnet", "vgg"):
        with pytest.raises(ValueError, match=f"{name} needs input_shape"):
            build_network(name, NetworkSpec((784,), 10))


# ---------------------------------------------------------------------------------- real CIFAR-10


@pytest.fixture(scope="module")
def cifar_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The first 64 test images: records of 1 label byte and 3,072 bytes (R, G, B planes of 32x32)."""
    with gzip.open(CIFAR_TEST, "rb") as f:
        raw = np.frombuffer(f.read(64 * 3073), dtype=np.uint8).reshape(64, 3073)
    labels = torch.from_numpy(raw[:, 0].astype(np.int64))
    images = torch.from_numpy(raw[:, 1:].reshape(64, 3, 32, 32).astype(np.float32) / 255.0)
    return (images - 0.5) / 0.25, labels


class _Losses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


@needs_cifar
@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
@pytest.mark.parametrize(
    ("name", "params", "batch_norm"),
    [
        ("alexnet", {}, False),
        ("vgg", {"depth": 11, "width_divisor": 4}, True),
        ("vgg", {"depth": 16, "width_divisor": 4}, True),
    ],
    ids=["alexnet", "vgg11-bn", "vgg16-bn"],
)
def test_one_training_step_on_real_cifar10(cifar_batch, tmp_path, name, params, batch_norm):
    images, labels = cifar_batch
    assert images.shape == (64, 3, 32, 32) and labels.max() <= 9
    assert labels[:4].tolist() == [3, 8, 8, 0]  # cat, ship, ship, airplane: the test batch's first records
    module = SupervisedModule(
        name,
        {"input_shape": (3, 32, 32), "num_outputs": 10, "dropout": 0.5, "batch_norm": batch_norm},
        params,
        task="multiclass",
        task_meta={"num_classes": 10},
        loss="ce",
        optimizer={"name": "adam", "lr": 1e-3},
        regularization={"type": "none"},
        initializer="he_normal",
    )
    before = {k: v.clone() for k, v in module.network.state_dict().items()}
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=64)
    losses = _Losses()
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[losses],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, loader)
    assert trainer.global_step == 1 and len(losses.losses) == 1
    assert math.isfinite(losses.losses[0]) and 0 < losses.losses[0] < 50
    after = module.network.state_dict()
    weights = [k for k, v in before.items() if v.ndim > 1]  # every conv and dense weight
    assert weights and all(not torch.equal(before[k], after[k]) for k in weights)
    assert all(torch.isfinite(v).all() for v in after.values())
