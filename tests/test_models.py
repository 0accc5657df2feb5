"""The architectures: output shapes, parameter counts against the notes, and small trainings on real data.

Parameter counts are hand-derived (notes 002 Keras summary "Total params: 93,322"; LeNet-5 per layer); the
perceptron/MLP gate checks reproduce notes 001 "Perceptron" and "XOR gate"; the real-data checks read
/work/shared/data directly (the data layer is tested separately).
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from models.factories import initialize, make_loss, make_optimizer
from models.generative.autoencoder import Autoencoder
from models.registry import REGISTRY, NetworkSpec, build_network, register
from pipelines import REPO_ROOT
from pipelines.config import OptimizerConfig

DATA = Path(os.environ.get("DEEPNOTES_DATA_MIRROR") or REPO_ROOT.parent / "shared" / "data")
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"data mirror {DATA} not found")


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def dense(fan_in: int, fan_out: int) -> int:
    return (fan_in + 1) * fan_out


def conv(in_channels: int, out_channels: int, kernel_size: int) -> int:
    return (in_channels * kernel_size * kernel_size + 1) * out_channels


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------ shapes and counts


def test_every_registered_architecture_is_buildable():
    specs = {
        "perceptron": NetworkSpec((2,), 1),
        "mlp": NetworkSpec((5,), 3),
        "keras_convnet": NetworkSpec((1, 28, 28), 10),
        "lenet5": NetworkSpec((1, 28, 28), 10),
        "rnn": NetworkSpec((12,), 1, vocab_size=50),
        "conv1d_text": NetworkSpec((24,), 3, vocab_size=50),
        "char_rnn": NetworkSpec((12,), 50, vocab_size=50),
        "transformer_encoder": NetworkSpec((12,), 1, vocab_size=50),
        "seq2seq_rnn": NetworkSpec((12,), 40, vocab_size=50),
        "seq2seq_attention": NetworkSpec((12,), 40, vocab_size=50),
        "transformer_seq2seq": NetworkSpec((12,), 40, vocab_size=50),
        "word2vec": NetworkSpec((12,), 1, vocab_size=50),
        "alexnet": NetworkSpec((3, 32, 32), 10),
        "vgg": NetworkSpec((3, 32, 32), 10),
        "resnet": NetworkSpec((3, 32, 32), 10),
        "plain_cnn": NetworkSpec((1, 28, 28), 10),
        "localizer": NetworkSpec((1, 64, 64), 10),
        "autoencoder": NetworkSpec((1, 28, 28), 10),
    }
    assert set(specs) == set(REGISTRY)
    for name, spec in specs.items():
        net = initialize(build_network(name, spec), "he_normal")
        x = torch.randint(1, 50, (4, *spec.input_shape)) if spec.vocab_size else torch.rand(4, *spec.input_shape)
        expected = (4,) if spec.num_outputs == 1 else (4, spec.num_outputs)
        if name == "localizer":  # class logits, then the box (x1, y1, x2, y2)
            expected = (4, spec.num_outputs + 4)
        if name == "autoencoder":  # the reconstruction has the input's shape
            expected = (4, *spec.input_shape)
        if name == "char_rnn":  # next-symbol logits at every step
            expected = (4, *spec.input_shape, spec.num_outputs)
        if REGISTRY[name].family == "seq2seq":  # the source alone: a greedy translation, after its [BOS]
            expected = (4, spec.input_shape[0] - 1)
        if name == "word2vec":  # the word vectors of every token
            expected = (4, *spec.input_shape, 100)
        assert net(x).shape == expected, name


# ------------------------------------------------------------------------------------------- the registry


def test_importing_the_registry_does_not_import_torch():
    code = "import sys, models.registry as r; assert 'torch' not in sys.modules; print(len(r.REGISTRY))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(REGISTRY)


def test_every_architecture_lives_in_the_family_that_registers_it():
    families = {path.parent.name for path in (REPO_ROOT / "models").glob("*/specs.py")}
    assert {"dense", "vision", "sequence", "generative"} <= families
    assert {arch.family for arch in REGISTRY.values()} == families
    for arch in REGISTRY.values():
        assert arch.target.startswith(f"models.{arch.family}."), arch.name
        assert arch.describe_target is None or arch.describe_target.startswith(f"models.{arch.family}."), arch.name
        path = arch.module_path()
        assert path == arch.target.partition(":")[0].replace(".", "/") + ".py", arch.name
        assert (REPO_ROOT / path).is_file(), arch.name
    assert REGISTRY["resnet"].module_path() == "models/vision/resnet.py"


def test_register_rejects_a_duplicate_name():
    with pytest.raises(ValueError, match="'mlp' is already registered"):
        register(dataclasses.replace(REGISTRY["mlp"], family="dense"))


def test_perceptron_is_one_linear_unit():
    net = build_network("perceptron", NetworkSpec((2,), 1))
    assert n_params(net) == 3
    assert net(torch.rand(5, 2)).shape == (5,)
    assert not any(isinstance(m, (nn.ReLU, nn.Sigmoid, nn.Tanh)) for m in net.modules())
    with pytest.raises(ValueError, match="num_outputs=2"):
        build_network("perceptron", NetworkSpec((2,), 2))


def test_keras_convnet_matches_the_notes_summary():
    net = build_network("keras_convnet", NetworkSpec((1, 28, 28), 10))
    # notes 002: 320 + 18,496 + 36,928 + 36,928 (576 -> 64) + 650
    assert conv(1, 32, 3) + conv(32, 64, 3) + conv(64, 64, 3) + dense(3 * 3 * 64, 64) + dense(64, 10) == 93_322
    assert n_params(net) == 93_322
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_keras_convnet_on_cifar_shapes():
    net = build_network("keras_convnet", NetworkSpec((3, 32, 32), 10))
    # 32 -> 30 -> 15 -> 13 -> 6 -> 4: 4 * 4 * 64 = 1,024 features (the Keras CIFAR-10 tutorial's 122,570)
    assert n_params(net) == conv(3, 32, 3) + conv(32, 64, 3) + conv(64, 64, 3) + dense(1024, 64) + dense(64, 10)
    assert n_params(net) == 122_570
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_keras_convnet_options_and_errors():
    net = build_network("keras_convnet", NetworkSpec((1, 28, 28), 1, batch_norm=True, dropout=0.5))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 3
    assert any(isinstance(m, nn.Dropout) for m in net.modules())
    assert net(torch.rand(3, 1, 28, 28)).shape == (3,)
    with pytest.raises(ValueError, match="channels, height, width"):
        build_network("keras_convnet", NetworkSpec((784,), 10))
    with pytest.raises(ValueError, match="too small"):
        build_network("keras_convnet", NetworkSpec((1, 16, 16), 10))


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_lenet5_counts(pooling):
    net = build_network("lenet5", NetworkSpec((1, 28, 28), 10, activation="tanh"), {"pooling": pooling})
    # C1 156, C3 2,416, C5 48,120, F6 10,164, output 850
    assert conv(1, 6, 5) + conv(6, 16, 5) + dense(16 * 5 * 5, 120) + dense(120, 84) + dense(84, 10) == 61_706
    assert n_params(net) == 61_706
    pool = nn.AvgPool2d if pooling == "avg" else nn.MaxPool2d
    assert sum(isinstance(m, pool) for m in net.modules()) == 2
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    # 3x32x32: C1 keeps 32, S2 16, C3 12, S4 6 -> 576 features into C5
    net = build_network("lenet5", NetworkSpec((3, 32, 32), 10), {"pooling": pooling})
    assert n_params(net) == conv(3, 6, 5) + conv(6, 16, 5) + dense(16 * 6 * 6, 120) + dense(120, 84) + dense(84, 10)


@pytest.mark.parametrize(
    ("input_shape", "hidden_sizes", "num_outputs", "batch_norm"),
    [
        ((11,), [64, 32], 1, False),
        ((11,), [64, 32], 1, True),
        ((1, 28, 28), [64, 32], 10, False),
        ((3,), [], 1, False),
    ],
)
def test_mlp_counts_and_heads(input_shape, hidden_sizes, num_outputs, batch_norm):
    spec = NetworkSpec(input_shape, num_outputs, activation="elu", batch_norm=batch_norm, dropout=0.1)
    net = build_network("mlp", spec, {"hidden_sizes": hidden_sizes})
    widths = [math.prod(input_shape), *hidden_sizes, num_outputs]
    expected = sum(dense(a, b) for a, b in zip(widths[:-1], widths[1:]))
    expected += 2 * sum(hidden_sizes) if batch_norm else 0
    assert n_params(net) == expected
    out = net(torch.rand(4, *input_shape))
    assert out.shape == ((4,) if num_outputs == 1 else (4, num_outputs))
    assert sum(isinstance(m, nn.ELU) for m in net.modules()) == len(hidden_sizes)
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == len(hidden_sizes)


def test_mlp_unknown_activation():
    with pytest.raises(ValueError, match="'gelu'"):
        build_network("mlp", NetworkSpec((3,), 1, activation="gelu"))


# The sequence family (rnn, char_rnn, conv1d_text): counts and shapes in tests/test_sequence_models.py.


# --------------------------------------------------------------------- notes 001: perceptron and XOR

GATE_INPUTS = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
GATES = {"and": [0, 0, 0, 1], "or": [0, 1, 1, 1], "xor": [0, 1, 1, 0]}


def _train_full_batch(net: nn.Module, targets: torch.Tensor, loss: str, cfg: OptimizerConfig, epochs: int) -> float:
    """Plain full-batch loop on the 4-row truth table; returns the accuracy of ``score > 0``."""
    loss_fn, optimizer = make_loss(loss), make_optimizer(net.parameters(), cfg)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss_fn(net(GATE_INPUTS), targets).backward()
        optimizer.step()
    with torch.no_grad():
        return ((net(GATE_INPUTS) > 0).float() == targets).float().mean().item()


@pytest.mark.parametrize(("gate", "learnable"), [("and", True), ("or", True), ("xor", False)])
def test_perceptron_learns_and_or_but_not_xor(gate, learnable):
    net = initialize(build_network("perceptron", NetworkSpec((2,), 1)), "zeros")
    accuracy = _train_full_batch(
        net, torch.tensor(GATES[gate], dtype=torch.float32), "hinge", OptimizerConfig(name="gd", lr=0.1), epochs=200
    )
    if learnable:
        assert accuracy == 1.0
    else:
        assert accuracy <= 0.75  # no line separates XOR (notes 001, "XOR gate")


def test_one_hidden_layer_solves_xor():
    net = initialize(
        build_network("mlp", NetworkSpec((2,), 1, activation="tanh"), {"hidden_sizes": [4]}), "xavier_uniform"
    )
    accuracy = _train_full_batch(
        net, torch.tensor(GATES["xor"], dtype=torch.float32), "bce", OptimizerConfig(name="adam", lr=0.05), epochs=300
    )
    assert accuracy == 1.0


# ------------------------------------------------------------------------------------------- real data


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (MNIST format): big-endian header of magic, then one uint32 per dimension."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@pytest.fixture(scope="module")
def mnist_test_split():
    images = read_idx(DATA / "mnist" / "t10k-images-idx3-ubyte.gz")[:2500]
    labels = read_idx(DATA / "mnist" / "t10k-labels-idx1-ubyte.gz")[:2500]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)  # (N, 1, 28, 28)
    return x, torch.from_numpy(labels.astype(np.int64))


@needs_data
def test_mlp_learns_real_mnist(mnist_test_split):
    x, y = mnist_test_split
    assert x.shape == (2500, 1, 28, 28) and set(y.tolist()) == set(range(10))
    net = initialize(build_network("mlp", NetworkSpec((1, 28, 28), 10), {"hidden_sizes": [64]}), "he_uniform")
    loss_fn = make_loss("ce")
    optimizer = make_optimizer(net.parameters(), OptimizerConfig(name="adam", lr=1e-3))
    batches = torch.randint(0, 2000, (300, 64))
    for idx in batches:
        optimizer.zero_grad()
        loss_fn(net(x[idx]), y[idx]).backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(x[2000:]).argmax(dim=1) == y[2000:]).float().mean().item()
    assert accuracy > 0.8


@needs_data
def test_convnets_forward_and_backward_on_real_mnist(mnist_test_split):
    x, y = mnist_test_split
    for name in ("keras_convnet", "lenet5"):
        net = initialize(build_network(name, NetworkSpec((1, 28, 28), 10)), "he_uniform")
        loss = make_loss("ce")(net(x[:32]), y[:32])
        loss.backward()
        assert loss.item() == pytest.approx(math.log(10), rel=0.5)  # near chance before training
        assert all(p.grad is not None for p in net.parameters())


@needs_data
def test_mlp_beats_majority_on_real_churn():
    df = pd.read_csv(DATA / "churn" / "Churn_Modelling.csv")
    numeric = [
        "CreditScore",
        "Age",
        "Tenure",
        "Balance",
        "NumOfProducts",
        "HasCrCard",
        "IsActiveMember",
        "EstimatedSalary",
    ]
    features = pd.concat([df[numeric], pd.get_dummies(df[["Geography", "Gender"]])], axis=1).astype("float32")
    x = torch.tensor(features.to_numpy())
    y = torch.tensor(df["Exited"].to_numpy(), dtype=torch.float32)
    train, test = slice(0, 8000), slice(8000, None)
    x = (x - x[train].mean(0)) / x[train].std(0)
    net = initialize(build_network("mlp", NetworkSpec((x.shape[1],), 1), {"hidden_sizes": [32, 16]}), "he_uniform")
    loss_fn = make_loss("bce")
    optimizer = make_optimizer(net.parameters(), OptimizerConfig(name="adam", lr=1e-2))
    for _ in range(200):  # full batch
        optimizer.zero_grad()
        loss_fn(net(x[train]), y[train]).backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = ((net(x[test]) > 0).float() == y[test]).float().mean().item()
    majority = 1 - y[test].mean().item()  # about 0.80 stay
    assert accuracy > majority + 0.03


# ------------------------------------------------------------------------- notes 002: the autoencoder


def _autoencoder_count(size: int, hidden_sizes: list[int], bottleneck: int, batch_norm: bool) -> int:
    widths = [size, *hidden_sizes, bottleneck, *reversed(hidden_sizes), size]
    return sum(dense(a, b) for a, b in zip(widths[:-1], widths[1:])) + (4 * sum(hidden_sizes) if batch_norm else 0)


@pytest.mark.parametrize(
    ("input_shape", "hidden_sizes", "bottleneck", "batch_norm"),
    [
        ((1, 28, 28), [256], 32, False),
        ((1, 28, 28), [100], 10, True),
        ((3, 32, 32), [128, 64], 16, False),
        ((20,), [], 4, False),
    ],
)
def test_autoencoder_parameter_count_and_shapes(input_shape, hidden_sizes, bottleneck, batch_norm):
    spec = NetworkSpec(input_shape, 10, batch_norm=batch_norm, dropout=0.1)
    net = build_network("autoencoder", spec, {"hidden_sizes": hidden_sizes, "bottleneck": bottleneck})
    assert isinstance(net, Autoencoder)
    assert n_params(net) == _autoencoder_count(math.prod(input_shape), hidden_sizes, bottleneck, batch_norm)
    x = torch.rand(5, *input_shape)
    z = net.encode(x)
    assert z.shape == (5, bottleneck)
    assert net.decode(z).shape == (5, *input_shape)
    assert net(x).shape == (5, *input_shape)


def test_autoencoder_default_count_matches_the_docstring():
    net = build_network("autoencoder", NetworkSpec((1, 28, 28), 10))
    assert net.bottleneck == 32 and net.encode(torch.rand(2, 1, 28, 28)).shape == (2, 32)
    assert n_params(net) == 200_960 + 8_224 + 8_448 + 201_488 == 419_120


def test_autoencoder_must_be_undercomplete():
    with pytest.raises(ValueError, match="bottleneck=784 is not below the input size 784"):
        build_network("autoencoder", NetworkSpec((1, 28, 28), 10), {"bottleneck": 784})
    with pytest.raises(ValueError, match="bottleneck=900"):
        Autoencoder(NetworkSpec((1, 28, 28), 10), hidden_sizes=[64], bottleneck=900)
    assert build_network("autoencoder", NetworkSpec((1, 28, 28), 10), {"bottleneck": 783}).bottleneck == 783


@needs_data
def test_autoencoder_reconstructs_real_mnist_in_pixel_range(mnist_test_split):
    x, _ = mnist_test_split
    net = initialize(
        build_network("autoencoder", NetworkSpec((1, 28, 28), 10), {"hidden_sizes": [128], "bottleneck": 32}),
        "he_uniform",
    )
    out = net(x[:256])
    assert out.shape == (256, 1, 28, 28)
    assert out.min().item() >= 0.0 and out.max().item() <= 1.0
    loss_fn = nn.MSELoss()
    optimizer = make_optimizer(net.parameters(), OptimizerConfig(name="adam", lr=1e-3))
    before = loss_fn(net(x[2000:]), x[2000:]).item()
    for idx in torch.randint(0, 2000, (150, 64)):
        optimizer.zero_grad()
        loss_fn(net(x[idx]), x[idx]).backward()
        optimizer.step()
    with torch.no_grad():
        after = loss_fn(net(x[2000:]), x[2000:]).item()
    assert after < 0.5 * before  # the code of 32 numbers carries most of the 784 pixels
