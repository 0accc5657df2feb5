"""The attention family (models/attention/): the Transformer blocks' positions and masks, and the
``transformer_encoder`` classifier on real IMDB reviews.

The mask checks use inputs where a leak would change the output: the same review under different amounts of left
padding, and encoder inputs poisoned at the padded steps.
"""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from models.attention.blocks import SinusoidalPositions, make_encoder, padding_mask, real_positions
from models.pooling import pool_over_time
from models.registry import NetworkSpec, build_network


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def encoder_classifier(imdb, **params) -> nn.Module:
    spec = NetworkSpec((200,), 1, dropout=0.1, vocab_size=imdb[1]["vocab_size"])
    return build_network("transformer_encoder", spec, {"embedding_dim": 16, "num_heads": 2, **params}).eval()


def test_sinusoidal_positions_are_the_papers_formula():
    table = SinusoidalPositions(8, 50)(torch.arange(50)[None])[0]  # (50, 8)
    for p in (0, 1, 17, 49):
        for i in range(4):
            angle = p / 10000 ** (2 * i / 8)
            assert table[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert not list(SinusoidalPositions(8, 50).parameters())
    with pytest.raises(ValueError, match="dim must be even, got 7"):
        SinusoidalPositions(7, 50)


def test_positions_count_from_the_first_real_token():
    real = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    assert real_positions(real).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_padding_mask_masks_padding_and_keeps_an_all_padding_row_finite():
    tokens = torch.tensor([[0, 0, 5, 6], [0, 0, 0, 0]])
    assert padding_mask(tokens).tolist() == [[True, True, False, False], [True, True, True, False]]
    assert tokens[1].eq(0).all()  # the input is not modified


def test_no_real_position_attends_to_padding(imdb_reviews):
    x = imdb_reviews(16)
    real = x != 0
    assert (~real).any(dim=1).sum() == 8
    encoder = make_encoder(16, 2, 2, 32).eval()
    inputs = torch.randn(*x.shape, 16)
    outputs = encoder(inputs, src_key_padding_mask=padding_mask(x))
    poisoned = inputs.masked_fill(~real.unsqueeze(-1), 1e3)  # a leak from the padding would move every output
    leaked = encoder(poisoned, src_key_padding_mask=padding_mask(x))
    torch.testing.assert_close(leaked[real], outputs[real])
    unmasked = encoder(poisoned)  # the check can fail: without the mask the poison reaches the real steps
    assert not torch.allclose(unmasked[real], outputs[real], atol=1e-3)


def test_the_classifier_ignores_how_much_left_padding_a_review_has(imdb, imdb_reviews):
    x = imdb_reviews(16)
    review = x[~(x == 0).any(dim=1)][0][-40:]  # the last 40 tokens of a real review
    net = encoder_classifier(imdb, num_layers=2)
    outputs = []
    for pad in (0, 7, 160):  # 40 to 200 steps: the same text, its first word at position 0 each time
        padded = torch.cat([torch.zeros(pad, dtype=torch.long), review])  # a shorter input, or left-padded
        outputs.append(net(padded[None]))
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0])
    assert torch.isfinite(net(torch.zeros(2, 200, dtype=torch.long))).all()  # all padding: finite


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_pool_over_time_counts_only_real_steps(pooling):
    features = torch.randn(4, 6, 3)
    real = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]]).bool()
    pooled = pool_over_time(features, real, pooling)
    for i in range(3):
        steps = features[i, real[i]]
        torch.testing.assert_close(pooled[i], steps.mean(0) if pooling == "mean" else steps.amax(0))
    assert torch.equal(pooled[3], torch.zeros(3))  # an all-padding row pools to 0
    every = features.mean(1) if pooling == "mean" else features.amax(1)
    torch.testing.assert_close(pool_over_time(features, None, pooling), every)  # None: every step is real
    with pytest.raises(ValueError, match="one of mean, max, got 'last'"):
        pool_over_time(features, real, "last")


def test_the_parameter_count_is_the_docstring_formula(imdb):
    vocab, d, f, layers = imdb[1]["vocab_size"], 16, 40, 3
    net = encoder_classifier(imdb, num_layers=layers, dim_feedforward=f)
    per_block = 4 * (d * d + d) + 2 * d * f + f + d + 4 * d
    assert n_params(net) == vocab * d + layers * per_block + 2 * d + (d + 1)


def test_heads_must_divide_the_width(imdb):
    with pytest.raises(ValidationError, match=r"model.num_heads \(3\) must divide model.embedding_dim \(16\)"):
        encoder_classifier(imdb, num_heads=3)
    with pytest.raises(ValueError, match=r"input_shape \(seq_len,\)"):
        build_network("transformer_encoder", NetworkSpec((20, 3), 1, vocab_size=100))
    with pytest.raises(ValueError, match="needs spec.vocab_size"):
        build_network("transformer_encoder", NetworkSpec((20,), 1))


def test_the_backbone_transfers_to_a_network_with_another_head(tmp_path, imdb, imdb_reviews):
    """``features`` (embedding + blocks) is what models/transfer.py copies: a 3-output classifier built from a
    binary one's weights file gives the same per-token features on real reviews, with its own head."""
    from models.transfer import backbone_of, load_backbone

    source = encoder_classifier(imdb)
    torch.save(source.state_dict(), tmp_path / "network.pt")
    torch.manual_seed(1)
    spec = NetworkSpec((200,), 3, vocab_size=imdb[1]["vocab_size"])
    target = build_network("transformer_encoder", spec, {"embedding_dim": 16, "num_heads": 2}).eval()
    x = imdb_reviews(8)
    assert not torch.allclose(backbone_of(target)(x), backbone_of(source)(x))
    load_backbone(target, tmp_path / "network.pt")
    assert torch.equal(backbone_of(target)(x), backbone_of(source)(x))
    assert target(x).shape == (8, 3)
