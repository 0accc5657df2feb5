"""ResNet, its plain twin and the 1x1 bottleneck (models/vision/resnet.py; He, Zhang, Ren, Sun 2016; notes 001 "Resnet
architecture" / "Code understanding", notes 002 "PURPOSE OF SKIP CONNECTIONS" and "PURPOSE OF 1X1 CONVOLUTION").

Parameter counts are derived here from the layer formulas, independently of the implementation; the smoke
training reads real CIFAR-10 test images straight from the data mirror with numpy (the data layer is tested
separately).
"""

from __future__ import annotations

import gzip
import math

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from models.layers import OutputLayer
from models.registry import REGISTRY, NetworkSpec, build_network
from models.vision.resnet import BottleneckBlock, PlainCNN, ResidualBlock, ResNet, parameter_reduction
from pipelines.data.datamodule import TensorBatches
from pipelines.training.module import SupervisedModule


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------- parameter counts by formula


def conv_bn(in_channels: int, out_channels: int, kernel_size: int) -> int:
    """A bias-free convolution and its BatchNorm (gamma and beta per channel)."""
    return in_channels * out_channels * kernel_size * kernel_size + 2 * out_channels


def block_count(in_channels: int, out_channels: int, stride: int, residual: bool, ratio: int | None) -> int:
    """One basic block (``ratio=None``) or bottleneck block, with its projection when it downsamples."""
    if ratio is None:
        body = conv_bn(in_channels, out_channels, 3) + conv_bn(out_channels, out_channels, 3)
    else:
        mid = max(1, out_channels // ratio)
        body = conv_bn(in_channels, mid, 1) + conv_bn(mid, mid, 3) + conv_bn(mid, out_channels, 1)
    projection = residual and (stride != 1 or in_channels != out_channels)
    return body + (conv_bn(in_channels, out_channels, 1) if projection else 0)


def expected_count(
    in_channels: int,
    classes: int,
    depth: int,
    width: int | None = None,
    residual: bool = True,
    ratio: int | None = None,
) -> int:
    """He et al. section 4.2 (depth = 6n + 2: 3 stages of n blocks, 16/32/64) or ResNet-18 (4 stages of 2)."""
    if depth == 18:
        blocks, width = [2, 2, 2, 2], width or 64
    else:
        blocks, width = [(depth - 2) // 6] * 3, width or 16
    total, channels = conv_bn(in_channels, width, 3), width  # stem
    for stage, n in enumerate(blocks):
        out_channels = width * 2**stage
        for b in range(n):
            total += block_count(channels, out_channels, 2 if stage and not b else 1, residual, ratio)
            channels = out_channels
    return total + (channels + 1) * classes  # the linear head after global average pooling


SHAPES = [(1, 28, 28), (3, 32, 32)]
CASES = [  # (registry name, model params)
    ("resnet", {"depth": 20}),
    ("resnet", {"depth": 32}),
    ("resnet", {"depth": 18, "width": 8}),
    ("plain_cnn", {"depth": 20}),
]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_registered_with_one_params_model():
    resnet, plain = REGISTRY["resnet"], REGISTRY["plain_cnn"]
    assert resnet.params is plain.params
    assert resnet.load() is ResNet and plain.load() is PlainCNN and issubclass(PlainCNN, ResNet)
    for arch in (resnet, plain):
        assert arch.modalities == {"image"} and arch.tasks == {"binary", "multiclass"}
        assert "He, Zhang, Ren, Sun (2016)" in arch.reference and "notes 00" in arch.notes


@pytest.mark.parametrize("input_shape", SHAPES)
@pytest.mark.parametrize(("name", "params"), CASES)
def test_output_shape_and_exact_parameter_count(name, params, input_shape):
    net = build_network(name, NetworkSpec(input_shape, 10), params)
    expected = expected_count(input_shape[0], 10, params["depth"], params.get("width"), residual=name == "resnet")
    assert n_params(net) == expected
    assert net(torch.rand(2, *input_shape)).shape == (2, 10)


def test_headline_counts():
    cifar = NetworkSpec((3, 32, 32), 10)
    assert n_params(build_network("resnet", cifar, {"depth": 20})) == 272_474  # He et al. Table 6: 0.27M
    # option A shortcuts (He et al.'s CIFAR nets) add no parameters: their count is the plain net's
    assert n_params(build_network("plain_cnn", cifar, {"depth": 20})) == 272_474 - (16 * 32 + 64) - (32 * 64 + 128)
    assert n_params(build_network("resnet", NetworkSpec((1, 28, 28), 10), {"depth": 20})) == 272_474 - 2 * 9 * 16
    with torch.device("meta"):  # full-width ResNet-18 without allocating it
        assert n_params(build_network("resnet", cifar, {"depth": 18})) == expected_count(3, 10, 18) == 11_173_962


@pytest.mark.parametrize(("depth", "sizes"), [(20, [28, 14, 7]), (18, [28, 14, 7, 4])])
def test_stages_halve_the_map_and_double_the_channels(depth, sizes):
    net = build_network("resnet", NetworkSpec((1, 28, 28), 1), {"depth": depth, "width": 4}).eval()
    x = net.features.stem(torch.rand(2, 1, 28, 28))
    for i, size in enumerate(sizes):
        x = getattr(net.features, f"stage{i + 1}")(x)
        assert x.shape == (2, 4 * 2**i, size, size)
    assert net(torch.rand(3, 1, 28, 28)).shape == (3,)  # one output: a binary logit per sample


def _convs(net: nn.Module, kernel_size: int) -> int:
    return sum(isinstance(m, nn.Conv2d) and m.kernel_size == (kernel_size, kernel_size) for m in net.modules())


@pytest.mark.parametrize("depth", [18, 20, 32])
def test_plain_cnn_is_resnet_without_shortcuts(depth):
    spec = NetworkSpec((3, 32, 32), 10)
    resnet = build_network("resnet", spec, {"depth": depth, "width": 4})
    plain = build_network("plain_cnn", spec, {"depth": depth, "width": 4})
    blocks = [m for m in plain.modules() if isinstance(m, ResidualBlock)]
    assert blocks and all(b.shortcut is None and not b.residual for b in blocks)
    assert not any("shortcut" in name for name, _ in plain.named_modules())
    assert not any(isinstance(m, nn.Identity) for m in plain.modules())
    assert _convs(plain, 3) == _convs(resnet, 3)
    assert _convs(plain, 3) + 1 == depth  # 3x3 convolutions and the linear head are the weighted layers
    stages = 3 if depth != 18 else 4
    assert _convs(resnet, 1) == stages - 1 and _convs(plain, 1) == 0  # one projection per downsampling stage
    assert sum(isinstance(m, nn.Identity) for m in resnet.modules()) == (depth - 2) // 2 - (stages - 1)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in plain.modules()) == depth - 1


def test_batch_norm_always_and_dropout_before_the_head():
    net = build_network("resnet", NetworkSpec((3, 32, 32), 10, batch_norm=False, dropout=0.3), {"width": 4})
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 19 + 2  # every conv, projections too
    dropout, head = net.classifier
    assert isinstance(dropout, nn.Dropout) and dropout.p == 0.3 and isinstance(head, OutputLayer)
    assert len(build_network("resnet", NetworkSpec((3, 32, 32), 10), {"width": 4}).classifier) == 1
    elu = build_network("plain_cnn", NetworkSpec((1, 28, 28), 10, activation="elu"), {"width": 4})
    assert sum(isinstance(m, nn.ELU) for m in elu.modules()) == 19  # stem + 2 per block
    assert not any(isinstance(m, nn.ReLU) for m in elu.modules())


def test_bad_params():
    spec = NetworkSpec((3, 32, 32), 10)
    for params in ({"depth": 19}, {"width": 0}, {"bottleneck_ratio": 0}, {"residual": False}, {"depth": "deep"}):
        with pytest.raises(ValidationError):
            build_network("resnet", spec, params)
    with pytest.raises(ValueError, match="channels, height, width"):
        build_network("plain_cnn", NetworkSpec((3072,), 10))
    with pytest.raises(ValueError, match="unknown resnet depth"):
        ResNet(spec, depth=50)
    with pytest.raises(ValueError, match="'gelu'"):
        build_network("resnet", NetworkSpec((3, 32, 32), 10, activation="gelu"))


# ------------------------------------------------------------------------- the residual add is the identity


def _zero_branch(block: nn.Module) -> None:
    """All convolution weights and BN gamma/beta of the residual branch F set to 0."""
    with torch.no_grad():
        for m in block.branch.modules():
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
                m.weight.zero_()
                if m.bias is not None:
                    m.bias.zero_()


@pytest.mark.parametrize("make", [lambda act: ResidualBlock(8, 8, act), lambda act: BottleneckBlock(8, 8, act)])
@pytest.mark.parametrize("training", [True, False])
def test_zero_residual_branch_is_the_identity(make, training):
    relu = make("relu").train(training)
    _zero_branch(relu)
    x = torch.rand(4, 8, 6, 6)  # non-negative: relu(x) == x
    assert isinstance(relu.shortcut, nn.Identity)
    torch.testing.assert_close(relu(x), x, rtol=0, atol=0)
    elu = make("elu").train(training)
    _zero_branch(elu)
    x = torch.randn(4, 8, 6, 6)
    torch.testing.assert_close(elu(x), nn.functional.elu(x), rtol=0, atol=0)


def test_zero_branch_inside_a_network_and_a_plain_block_loses_the_input():
    net = build_network("resnet", NetworkSpec((3, 32, 32), 10), {"width": 8})
    block = net.features.stage2[1]  # non-downsampling block of the second stage
    _zero_branch(block)
    x = torch.rand(2, 16, 16, 16)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    plain = ResidualBlock(8, 8, "relu", residual=False)
    _zero_branch(plain)
    assert torch.count_nonzero(plain(torch.rand(2, 8, 6, 6))) == 0  # without a skip, zero weights give zero


def test_downsampling_block_has_a_projection_shortcut():
    block = ResidualBlock(16, 32, "relu", stride=2)
    conv, bn = block.shortcut
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (2, 2)
    assert conv.bias is None and isinstance(bn, nn.BatchNorm2d)
    assert block(torch.rand(2, 16, 7, 7)).shape == (2, 32, 4, 4)
    assert n_params(block) == block_count(16, 32, 2, True, None)


# ----------------------------------------------------------------------------------- the 1x1 bottleneck


@pytest.mark.parametrize("input_shape", SHAPES)
@pytest.mark.parametrize(("depth", "width", "ratio"), [(20, None, 4), (32, None, 2), (18, 8, 4), (20, 6, 4)])
@pytest.mark.parametrize("residual", [True, False])
def test_bottleneck_reduces_parameters_exactly(input_shape, depth, width, ratio, residual):
    spec = NetworkSpec(input_shape, 10)
    params = {"depth": depth, "width": width, "bottleneck": True, "bottleneck_ratio": ratio}
    reduction = parameter_reduction(spec, params, residual=residual)
    basic = expected_count(input_shape[0], 10, depth, width, residual)
    bottleneck = expected_count(input_shape[0], 10, depth, width, residual, ratio)
    assert reduction == {
        "params_basic": basic,
        "params_bottleneck": bottleneck,
        "ratio": bottleneck / basic,
        "bottleneck_ratio": ratio,
    }
    assert reduction["ratio"] < 1
    net = build_network("resnet" if residual else "plain_cnn", spec, params)
    assert n_params(net) == bottleneck
    assert sum(isinstance(m, BottleneckBlock) for m in net.modules()) == (8 if depth == 18 else (depth - 2) // 2)
    assert net(torch.rand(2, *input_shape)).shape == (2, 10)


def test_bottleneck_figures_for_resnet20_on_cifar():
    spec = NetworkSpec((3, 32, 32), 10)
    r4 = parameter_reduction(spec, {"depth": 20})
    assert (r4["params_basic"], r4["params_bottleneck"]) == (272_474, 21_370)
    assert r4["ratio"] == pytest.approx(0.0784, abs=1e-4)
    r2 = parameter_reduction(spec, {"depth": 20, "bottleneck_ratio": 2})
    assert r4["ratio"] < r2["ratio"] < 1  # the stronger the 1x1 reduction, the fewer parameters
    # a 16-channel basic block has 2 * 9 * 16^2 conv weights; its ratio-4 bottleneck 16*4 + 9*4^2 + 4*16 = 272
    assert block_count(16, 16, 1, True, None) - 64 == 4_608 and block_count(16, 16, 1, True, 4) - 48 == 272


# ------------------------------------------------------------------------ one training step on real CIFAR-10


def read_cifar10(path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` records of a CIFAR-10 binary batch: 1 label byte, then 3 x 1,024 bytes (R, G, B planes)."""
    with gzip.open(path, "rb") as f:
        raw = np.frombuffer(f.read(3073 * count), dtype=np.uint8).reshape(count, 3073)
    images = torch.from_numpy(raw[:, 1:].reshape(count, 3, 32, 32).astype(np.float32) / 255.0)
    return images, torch.from_numpy(raw[:, 0].astype(np.int64))


@pytest.fixture(scope="module")
def cifar_batch(mirror):
    x, y = read_cifar10(mirror / "cifar10" / "test_batch.bin.gz", 64)
    assert x.shape == (64, 3, 32, 32) and y.max() <= 9 and len(set(y.tolist())) >= 8
    return x, y


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
@pytest.mark.parametrize("name", ["resnet", "plain_cnn"])
def test_one_training_step_on_real_cifar10(cifar_batch, name):
    L.seed_everything(0, verbose=False)
    spec = {
        "input_shape": [3, 32, 32],
        "num_outputs": 10,
        "activation": "relu",
        "dropout": 0.0,
        "batch_norm": False,
        "vocab_size": None,
    }
    module = SupervisedModule(
        name,
        spec,
        {"depth": 20},
        "multiclass",
        {"num_classes": 10},
        "ce",
        {"name": "sgd_momentum", "lr": 0.05},
        {"type": "l2", "strength": 1e-4},
        "he_normal",
    )
    before = {k: v.clone() for k, v in module.network.state_dict().items()}
    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(module, TensorBatches(*cifar_batch, batch_size=64))
    assert trainer.global_step == 1
    loss = float(trainer.callback_metrics["train_data_loss"])
    assert math.isfinite(loss) and 0.5 * math.log(10) < loss < 10 * math.log(10)  # near chance before the step
    after = module.network.state_dict()
    changed = [k for k, v in before.items() if v.dtype.is_floating_point and not torch.equal(v, after[k])]
    weights = [k for k in before if k.endswith("weight")]
    assert set(weights) <= set(changed)  # every conv, BN and linear weight moved (BN running stats too)
    assert all(torch.isfinite(v).all() for v in after.values())
