"""models/shapes.py against the notes' worked examples and against real networks.

Notes 001 "Lenet" (28 -> 24 with a 5x5 kernel, (H + 2P - f)/s + 1), notes 001 "Alexnet" (227 -> 55 with 11x11
stride 4, (f x f x d + 1) x n, the (3 x 3 x 256 + 1) x 384 of conv3), notes 003 "Same Padding" (5x5 stays 5x5 with
a 3x3 kernel and P = 1) and notes 002's Keras summary (320 / 18,496 / 36,928 / 36,928 / 650, Total params: 93,322).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.registry import REGISTRY, NetworkSpec, build_network
from models.shapes import LayerRow, conv_output_size, conv_params, dense_params, format_summary, same_padding, summarize


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------- the arithmetic


def test_output_size_worked_examples_of_the_notes():
    assert conv_output_size(28, 5) == 24  # notes 001 "Lenet": (28 - 5)/1 + 1 = 24
    assert conv_output_size(14, 5) == 10  # notes 001: "#F = (14 - 5)/1 + 1" (LeNet's C3)
    # notes 001: (28 - 5)/2 + 1 = 12.5, which the notes round down to "11 + 1 = 12"
    with pytest.raises(ValueError, match=r"\(28 - 5 \+ 2\*0\)/2 \+ 1 = 12.5 is not a whole number"):
        conv_output_size(28, 5, s=2)
    assert conv_output_size(28, 5, s=2, rounding="floor") == 12
    assert conv_output_size(28, 5, s=2, rounding="ceil") == 13


def test_same_padding_keeps_the_size():
    assert same_padding(3) == 1 and same_padding(5) == 2 and same_padding(11) == 5
    assert conv_output_size(5, 3, p=same_padding(3)) == 5  # notes 003: the 5x5 image padded to 7x7
    assert conv_output_size(6, 3, p=1) == 6  # notes 003's diagram: 6x6, 3x3 kernel, P = 1
    assert conv_output_size(5, 3) == 3  # notes 003 "Valid Padding": 3x3 output
    for f in (1, 3, 5, 7, 11):
        for w in (f, 28, 32):
            assert conv_output_size(w, f, p=same_padding(f)) == w
    with pytest.raises(ValueError, match="F=4"):
        same_padding(4)
    with pytest.raises(ValueError, match="F must be >= 1"):
        same_padding(0)


def test_output_size_rejects_bad_values_naming_them():
    with pytest.raises(ValueError, match="W=0"):
        conv_output_size(0, 3)
    with pytest.raises(ValueError, match="S=0"):
        conv_output_size(8, 3, s=0)
    with pytest.raises(ValueError, match=r"\(2 - 5 \+ 2\*0\)/1 \+ 1 = -2 is below 1"):
        conv_output_size(2, 5)
    with pytest.raises(ValueError, match="integer"):
        conv_output_size(28.0, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rounding"):
        conv_output_size(28, 5, rounding="round")  # type: ignore[arg-type]


@pytest.mark.parametrize(("f", "s", "p"), [(2, 2, 0), (3, 2, 0), (3, 2, 1), (5, 3, 2), (3, 1, 1), (11, 4, 0)])
def test_rounding_matches_pytorch(f, s, p):
    for w in range(max(f - 2 * p, 1), 40):
        x = torch.zeros(1, 1, w, w)
        floor = nn.functional.max_pool2d(x, f, s, p).shape[-1]
        ceil = nn.functional.max_pool2d(x, f, s, p, ceil_mode=True).shape[-1]
        assert conv_output_size(w, f, p, s, rounding="floor") == floor, (w, f, s, p)
        assert conv_output_size(w, f, p, s, rounding="ceil") == ceil, (w, f, s, p)
        conv = nn.functional.conv2d(x, torch.zeros(1, 1, f, f), stride=s, padding=p).shape[-1]
        assert conv == floor


def test_parameter_formulas():
    # notes 002's Keras summary, and notes 001's (f x f x d + 1) x n
    assert conv_params(3, 1, 32) == 320
    assert conv_params(3, 32, 64) == 18_496
    assert conv_params(3, 64, 64) == 36_928
    assert dense_params(3 * 3 * 64, 64) == 36_928
    assert dense_params(64, 10) == 650
    assert 320 + 18_496 + 36_928 + 36_928 + 650 == 93_322
    assert conv_params(5, 1, 1) == 26  # notes 001: "25 weights + 1 bias = 26 parameters"
    assert conv_params(3, 256, 384) == 885_120  # notes 001 "Alexnet": (3 x 3 x 256 + 1) x 384
    assert conv_params(3, 3, 8, bias=False) == 216 and dense_params(4, 2, bias=False) == 8
    for f, d, n in [(3, 1, 32), (5, 6, 16), (11, 3, 96)]:
        assert conv_params(f, d, n) == n_params(nn.Conv2d(d, n, f))
    assert dense_params(576, 64) == n_params(nn.Linear(576, 64))
    with pytest.raises(ValueError, match="D=0"):
        conv_params(3, 0, 8)
    with pytest.raises(ValueError, match="fan_out=0"):
        dense_params(3, 0)


# --------------------------------------------------------------------------------- AlexNet (notes 001)

#: Krizhevsky et al. (2012) as one tower: (kind, filters or units, kernel, stride, padding).
ALEXNET_227 = [
    ("conv", 96, 11, 4, 0),
    ("pool", None, 3, 2, 0),
    ("conv", 256, 5, 1, 2),
    ("pool", None, 3, 2, 0),
    ("conv", 384, 3, 1, 1),
    ("conv", 384, 3, 1, 1),
    ("conv", 256, 3, 1, 1),
    ("pool", None, 3, 2, 0),
]


def test_alexnet_arithmetic_of_the_notes():
    w, d, sizes, params = 227, 3, [], []
    for kind, n, f, s, p in ALEXNET_227:
        w = conv_output_size(w, f, p, s)
        sizes.append(w)
        if kind == "conv":
            params.append(conv_params(f, d, n))
            d = n
    assert sizes == [55, 27, 27, 13, 13, 13, 13, 6]  # 227 -> 55 with 11x11 stride 4; 'same' 5x5 and 3x3 keep size
    assert same_padding(5) == 2 and same_padding(3) == 1
    assert params == [34_944, 614_656, 885_120, 1_327_488, 884_992]
    dense = [dense_params(6 * 6 * 256, 4096), dense_params(4096, 4096), dense_params(4096, 1000)]
    assert dense == [37_752_832, 16_781_312, 4_097_000]
    assert sum(params) + sum(dense) == 62_378_344  # the paper's "60 million parameters"

    # The notes' own figures 54 -> 26 -> 12 come from a 224 input, rounded down at every step
    with pytest.raises(ValueError, match=r"\(224 - 11 \+ 2\*0\)/4 \+ 1 = 54.25"):
        conv_output_size(224, 11, s=4)
    assert conv_output_size(224, 11, s=4, rounding="floor") == 54
    assert conv_output_size(54, 3, s=2, rounding="floor") == 26  # notes: (54 - 3)/2 + 1
    assert conv_output_size(26, 3, s=2, rounding="floor") == 12  # notes: (26 - 3)/2 + 1 -> 12
    assert conv_output_size(12, 3) == 10  # notes: (12 - 3)/1 + 1

    # the same network, built for real (on the meta device: shapes and counts without any computation)
    with torch.device("meta"):
        layers: list[nn.Module] = []
        d = 3
        for kind, n, f, s, p in ALEXNET_227:
            layers += [nn.Conv2d(d, n, f, s, p), nn.ReLU()] if kind == "conv" else [nn.MaxPool2d(f, s, p)]
            d = n or d
        net = nn.Sequential(
            *layers,
            nn.Flatten(),
            nn.Linear(9216, 4096),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(4096, 1000),
        )
    rows = summarize(net, (3, 227, 227))
    spatial = [r.output_shape[-1] for r in rows if r.type in ("Conv2d", "MaxPool2d")]
    assert spatial == sizes
    assert [r.params for r in rows if r.params] == params + dense
    assert sum(r.params for r in rows) == n_params(net) == 62_378_344
    assert rows[-1].output_shape == (1000,)


# ------------------------------------------------------------------------------------------ summarize


def test_summarize_keras_convnet_reproduces_the_notes_summary():
    net = build_network("keras_convnet", NetworkSpec((1, 28, 28), 10))
    rows = summarize(net, (1, 28, 28))
    assert all(isinstance(r, LayerRow) for r in rows)
    assert [r.params for r in rows if r.params] == [320, 18_496, 36_928, 36_928, 650]
    assert [(r.type, r.output_shape) for r in rows if r.type != "ReLU"] == [
        ("Conv2d", (32, 26, 26)),
        ("MaxPool2d", (32, 13, 13)),
        ("Conv2d", (64, 11, 11)),
        ("MaxPool2d", (64, 5, 5)),
        ("Conv2d", (64, 3, 3)),
        ("Flatten", (576,)),
        ("Linear", (64,)),
        ("OutputLayer", (10,)),
    ]  # the notes' (None, 26, 26, 32), (None, 13, 13, 32), ..., (None, 576), (None, 64), (None, 10), channels first
    assert rows[0].name == "features.0.0"
    assert sum(r.params for r in rows) == 93_322 == n_params(net)
    table = format_summary(rows, "keras_convnet")
    assert 'Model: "keras_convnet"' in table
    assert "(None, 32, 26, 26)" in table and "18,496" in table
    assert "Total params: 93,322" in table and "Trainable params: 93,322" in table
    assert "Non-trainable params: 0" in table
    assert net.training  # the mode is restored


def test_summarize_counts_shared_and_frozen_parameters_once():
    shared = nn.Linear(4, 4)
    net = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(4, 2))
    net[3].weight.requires_grad_(False)
    rows = summarize(net, (4,))
    assert [r.params for r in rows] == [20, 0, 0, 10]  # the second call of `shared` owns nothing new
    assert sum(r.params for r in rows) == n_params(net)
    assert "Non-trainable params: 8" in format_summary(rows)


def test_summarize_text_model_and_errors():
    net = build_network("rnn", NetworkSpec((12,), 1, vocab_size=50))
    rows = summarize(net, (12,), dtype=torch.long)
    assert sum(r.params for r in rows) == n_params(net)
    assert rows[-1].output_shape == ()  # a single logit per sample
    with pytest.raises(ValueError, match=r"KerasConvNet: cannot summarise on input_shape \(1, 8, 8\)"):
        summarize(build_network("keras_convnet", NetworkSpec((1, 28, 28), 10)), (1, 8, 8))


IMAGE_ARCHITECTURES = sorted(name for name, arch in REGISTRY.items() if "image" in arch.modalities)


@pytest.mark.parametrize("name", IMAGE_ARCHITECTURES)
@pytest.mark.parametrize(("input_shape", "batch_norm"), [((1, 28, 28), False), ((3, 32, 32), True)])
def test_summarize_total_matches_every_registered_image_architecture(name, input_shape, batch_norm):
    torch.manual_seed(0)
    net = build_network(name, NetworkSpec(input_shape, 10, batch_norm=batch_norm, dropout=0.1))
    rows = summarize(net, input_shape)
    assert sum(r.params for r in rows) == n_params(net), name
    # a reconstruction has the input's shape; every other image architecture ends on its 10 outputs
    expected = input_shape if "reconstruction" in REGISTRY[name].tasks else (10,)
    assert rows[-1].output_shape == expected, name
    assert f"Total params: {n_params(net):,}" in format_summary(rows)


def test_every_new_architecture_is_an_image_architecture():
    assert {"alexnet", "vgg", "keras_convnet", "lenet5"} <= set(IMAGE_ARCHITECTURES)
