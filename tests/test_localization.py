"""Single-object localization: box IoU/GIoU on hand-computed boxes, the loss, the metrics and the Localizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.boxes import (
    AccuracyAtIoU,
    LocalizationAccuracy,
    LocalizationLoss,
    MeanIoU,
    box_iou,
    generalized_box_iou,
    split_outputs,
    split_targets,
)
from models.registry import NetworkSpec
from models.vision.localizer import Localizer, centre_size_to_corners

C = 10


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def _close(actual, expected, atol=1e-6):
    torch.testing.assert_close(
        torch.as_tensor(actual, dtype=torch.float32), torch.as_tensor(expected, dtype=torch.float32), atol=atol, rtol=0
    )


# ------------------------------------------------------------------------------------------------ IoU / GIoU


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 2, 2], [0, 0, 2, 2], 1.0),  # identical
        ([0, 0, 1, 1], [2, 2, 3, 3], 0.0),  # disjoint
        ([0, 0, 2, 2], [1, 1, 3, 3], 1 / 7),  # inter 1, union 4 + 4 - 1
        ([0, 0, 4, 4], [1, 1, 3, 3], 4 / 16),  # nested: inter 4, union 16
        ([0, 0, 1, 1], [1, 0, 2, 1], 0.0),  # touching edges
        ([0.1, 0.1, 0.5, 0.5], [0.3, 0.3, 0.7, 0.7], 0.04 / 0.28),  # inter 0.2^2, union 0.16 + 0.16 - 0.04
    ],
)
def test_box_iou_hand_computed(a, b, expected):
    _close(box_iou(_t([a]), _t([b])), [expected])
    _close(box_iou(_t([b]), _t([a])), [expected])  # symmetric


def test_box_iou_is_paired_and_never_nan():
    pred = _t([[0, 0, 2, 2], [0, 0, 4, 4], [1, 1, 1, 3], [0.5, 0.5, 0.5, 0.5]])
    target = _t([[1, 1, 3, 3], [1, 1, 3, 3], [0, 0, 2, 2], [0.5, 0.5, 0.5, 0.5]])
    iou = box_iou(pred, target)
    assert iou.shape == (4,)
    assert not torch.isnan(iou).any()
    _close(iou, [1 / 7, 0.25, 0.0, 0.0])  # zero-area box (line), and two identical zero-area points
    giou = generalized_box_iou(pred, target)
    assert not torch.isnan(giou).any()


def test_giou_hand_computed():
    # disjoint: IoU 0, enclosing [0,0,3,1] area 3, union 2 -> 0 - (3 - 2)/3
    _close(generalized_box_iou(_t([[0, 0, 1, 1]]), _t([[2, 0, 3, 1]])), [-1 / 3])
    _close(generalized_box_iou(_t([[0.2, 0.3, 0.6, 0.9]]), _t([[0.2, 0.3, 0.6, 0.9]])), [1.0])
    # overlapping: IoU 1/7, enclosing [0,0,3,3] area 9, union 7 -> 1/7 - 2/9
    _close(generalized_box_iou(_t([[0, 0, 2, 2]]), _t([[1, 1, 3, 3]])), [1 / 7 - 2 / 9])
    # nested: the enclosing box is the outer one, so GIoU == IoU
    _close(generalized_box_iou(_t([[0, 0, 4, 4]]), _t([[1, 1, 3, 3]])), [0.25])
    # far apart: tends to -1
    assert generalized_box_iou(_t([[0, 0, 0.01, 0.01]]), _t([[0.99, 0.99, 1, 1]])).item() < -0.99


def test_box_functions_reject_bad_shapes():
    with pytest.raises(ValueError):
        box_iou(_t([[0, 0, 1]]), _t([[0, 0, 1]]))
    with pytest.raises(ValueError):
        generalized_box_iou(_t([[0, 0, 1, 1]]), _t([[0, 0, 1, 1], [0, 0, 1, 1]]))


def test_split_outputs_and_targets():
    outputs = torch.arange(2 * (C + 4), dtype=torch.float32).reshape(2, C + 4)
    logits, boxes = split_outputs(outputs, C)
    assert logits.shape == (2, C) and boxes.shape == (2, 4)
    assert torch.equal(boxes[0], _t([10, 11, 12, 13]))
    labels, tboxes = split_targets(_t([[3, 0.1, 0.2, 0.3, 0.4], [7, 0, 0, 1, 1]]))
    assert labels.dtype == torch.long and labels.tolist() == [3, 7]
    _close(tboxes[0], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError):
        split_outputs(outputs, C + 1)
    with pytest.raises(ValueError):
        split_targets(torch.zeros(2, 4))
    with pytest.raises(ValueError):
        split_targets(torch.zeros(5))


# ------------------------------------------------------------------------------------------------ metrics


def _outputs(classes, boxes, num_classes=C, big=10.0):
    """Outputs whose arg-max is ``classes[i]`` and whose box is ``boxes[i]``."""
    logits = torch.zeros(len(classes), num_classes)
    logits[torch.arange(len(classes)), torch.tensor(classes)] = big
    return torch.cat([logits, _t(boxes)], dim=1)


TRUE = _t([[1, 0.0, 0.0, 0.5, 0.5], [2, 0.0, 0.0, 0.5, 0.5], [3, 0.2, 0.2, 0.6, 0.6], [4, 0.5, 0.5, 1.0, 1.0]])
PRED = _outputs(
    [1, 2, 5, 0],
    [
        [0.0, 0.0, 0.5, 0.5],  # right class, IoU 1
        [0.0, 0.0, 0.25, 0.5],  # right class, IoU 0.125/0.25 = 0.5 exactly (dyadic: at the threshold)
        [0.2, 0.2, 0.6, 0.5],  # wrong class, IoU 0.12/0.16 = 0.75
        [0.0, 0.0, 0.5, 0.5],
    ],  # wrong class, touching corner: IoU 0
)
IOUS = [1.0, 0.5, 0.75, 0.0]


def test_metrics_on_hand_built_outputs():
    acc, miou, at50, at60 = LocalizationAccuracy(C), MeanIoU(C), AccuracyAtIoU(C), AccuracyAtIoU(C, threshold=0.6)
    for m in (acc, miou, at50, at60):
        m.update(PRED, TRUE)
    _close(box_iou(PRED[:, C:], TRUE[:, 1:]), IOUS)
    _close(acc.compute(), 0.5)
    _close(miou.compute(), sum(IOUS) / 4)
    _close(at50.compute(), 0.5)  # samples 0 and 1 (1 has IoU exactly 0.5); 2 has IoU 0.75 but the wrong class
    _close(at60.compute(), 0.25)  # sample 1: right class, IoU 0.5 < 0.6


def test_metrics_right_class_low_iou_and_wrong_class_high_iou():
    y = _t([[0, 0.0, 0.0, 0.5, 0.5], [1, 0.0, 0.0, 0.5, 0.5]])
    out = _outputs(
        [0, 2],
        [
            [0.25, 0.25, 0.75, 0.75],  # right class, IoU 0.0625/0.4375 = 1/7
            [0.0, 0.0, 0.5, 0.5],
        ],
    )  # wrong class, IoU 1
    at = AccuracyAtIoU(C)
    at.update(out, y)
    _close(at.compute(), 0.0)
    acc = LocalizationAccuracy(C)
    acc.update(out, y)
    _close(acc.compute(), 0.5)
    miou = MeanIoU(C)
    miou.update(out, y)
    _close(miou.compute(), (1 / 7 + 1) / 2)


def test_metrics_accumulate_over_updates_and_reset():
    acc, miou, at50 = LocalizationAccuracy(C), MeanIoU(C), AccuracyAtIoU(C)
    for m in (acc, miou, at50):
        m.update(PRED[:1], TRUE[:1])  # 1 sample: right class, IoU 1
        m.update(PRED[1:], TRUE[1:])  # 3 samples
    _close(acc.compute(), 2 / 4)
    _close(miou.compute(), sum(IOUS) / 4)  # sample-weighted, not the mean of the two batch means
    _close(at50.compute(), 2 / 4)
    assert int(acc.total) == 4
    acc.reset()
    acc.update(PRED[:1], TRUE[:1])
    _close(acc.compute(), 1.0)


def test_metric_attributes_and_errors():
    for cls in (LocalizationAccuracy, MeanIoU, AccuracyAtIoU):
        m = cls(C)
        assert m.higher_is_better is True and m.full_state_update is False
        with pytest.raises(ValueError):
            m.update(torch.zeros(2, C + 3), TRUE[:2])
        with pytest.raises(ValueError):
            m.update(PRED[:2], torch.zeros(2, 4))
        with pytest.raises(ValueError):
            m.update(PRED[:3], TRUE[:2])
    with pytest.raises(ValueError):
        AccuracyAtIoU(C, threshold=1.5)


# ------------------------------------------------------------------------------------------------ loss


@pytest.mark.parametrize("box_loss", ["smooth_l1", "giou", "smooth_l1+giou"])
def test_loss_near_zero_when_perfect_and_grows_with_box_error(box_loss):
    loss_fn = LocalizationLoss(C, box_loss=box_loss)
    perfect = _outputs(TRUE[:, 0].long().tolist(), TRUE[:, 1:].tolist(), big=30.0)
    assert loss_fn(perfect, TRUE).item() < 1e-6
    shifted = perfect.clone()
    shifted[:, C:] = (shifted[:, C:] + 0.1).clamp(0, 1)
    wrong_class = _outputs([0, 0, 0, 0], TRUE[:, 1:].tolist(), big=30.0)
    assert loss_fn(shifted, TRUE).item() > 0.01
    assert loss_fn(wrong_class, TRUE).item() > 10.0  # cross-entropy of a logit 30 below the winner


def test_loss_value_by_hand():
    y = _t([[0, 0.0, 0.0, 1.0, 1.0]])
    out = torch.cat([torch.zeros(1, 2), _t([[0.0, 0.0, 0.5, 1.0]])], dim=1)  # uniform logits over 2 classes
    ce = torch.log(torch.tensor(2.0)).item()
    # smooth-L1 (beta 0.05): one coordinate off by 0.5 -> 0.5 - 0.025, mean over 4 coordinates
    sl1 = (0.5 - 0.025) / 4
    giou = 0.5  # IoU 0.5, the enclosing box is the target
    _close(LocalizationLoss(2, box_loss="smooth_l1")(out, y), ce + sl1)
    _close(LocalizationLoss(2, box_loss="giou")(out, y), ce + (1 - giou))
    _close(LocalizationLoss(2, box_weight=2.0)(out, y), ce + 2.0 * (sl1 + 1 - giou))
    _close(LocalizationLoss(2, box_weight=0.0)(out, y), ce)


def test_loss_errors():
    loss_fn = LocalizationLoss(C)
    with pytest.raises(ValueError):
        loss_fn(torch.zeros(4, C), TRUE)
    with pytest.raises(ValueError):
        loss_fn(PRED, TRUE[:, :4])
    with pytest.raises(ValueError):
        loss_fn(PRED[:3], TRUE)
    with pytest.raises(ValueError):
        LocalizationLoss(C, box_loss="l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LocalizationLoss(C, box_weight=-1.0)


# ------------------------------------------------------------------------------------------------ Localizer


def _expected_params(in_channels, channels, hidden, classes, spatial, batch_norm):
    """(F*F*D + 1)*N per 3x3 convolution, (fan_in + 1)*fan_out per dense layer, 2 per BN channel/unit."""
    total, d = 0, in_channels
    for n in channels:
        total += (3 * 3 * d + 1) * n + (2 * n if batch_norm else 0)
        d = n
    flat = d * spatial * spatial
    total += (flat + 1) * hidden + (2 * hidden if batch_norm else 0)
    total += (hidden + 1) * classes + (hidden + 1) * 4
    return total


@pytest.mark.parametrize("batch_norm", [False, True])
def test_localizer_shapes_boxes_and_parameter_count(batch_norm):
    torch.manual_seed(0)
    net = Localizer(NetworkSpec((1, 64, 64), C, batch_norm=batch_norm, dropout=0.1))
    expected = _expected_params(1, [16, 32, 64, 64], 128, C, 64 // 2**4, batch_norm)
    assert expected == (193_838 if batch_norm else 193_230)
    assert sum(p.numel() for p in net.parameters()) == expected
    assert isinstance(net.classifier, torch.nn.Linear) and net.classifier.out_features == C
    assert isinstance(net.box_head, torch.nn.Linear) and net.box_head.out_features == 4
    net.eval()
    out = net(torch.rand(5, 1, 64, 64))
    assert out.shape == (5, C + 4)
    boxes = out[:, C:]
    assert (boxes >= 0).all() and (boxes <= 1).all()
    assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()


@pytest.mark.parametrize(("input_shape", "spatial"), [((1, 28, 28), 1), ((3, 32, 32), 2)], ids=["mnist", "cifar"])
def test_localizer_on_mnist_and_cifar_sizes(input_shape, spatial):
    """28 -> 14 -> 7 -> 3 -> 1 and 32 -> 16 -> 8 -> 4 -> 2 after four 2x2 poolings (floor)."""
    net = Localizer(NetworkSpec(input_shape, C, batch_norm=True))
    assert net(torch.rand(3, *input_shape)).shape == (3, C + 4)
    assert sum(p.numel() for p in net.parameters()) == _expected_params(
        input_shape[0], [16, 32, 64, 64], 128, C, spatial, True
    )


def test_localizer_other_sizes_and_errors():
    torch.manual_seed(0)
    net = Localizer(NetworkSpec((3, 32, 48), 3), channels=[8, 8, 8], hidden_size=16)
    assert net(torch.rand(2, 3, 32, 48)).shape == (2, 3 + 4)
    assert sum(p.numel() for p in net.parameters()) == (
        (27 + 1) * 8 + 2 * (72 + 1) * 8 + (8 * 4 * 6 + 1) * 16 + 17 * 3 + 17 * 4
    )
    with pytest.raises(ValueError):
        Localizer(NetworkSpec((1, 8, 8), C))  # four poolings need H, W >= 16
    with pytest.raises(ValueError):
        Localizer(NetworkSpec((784,), C))
    with pytest.raises(ValueError):
        Localizer(NetworkSpec((1, 64, 64), C), channels=[])


def test_centre_size_to_corners():
    _close(
        centre_size_to_corners(_t([[0.5, 0.5, 0.2, 0.4], [0.05, 0.95, 0.3, 0.3]])),
        [[0.4, 0.3, 0.6, 0.7], [0.0, 0.8, 0.2, 1.0]],
    )


def test_localizer_backward_reaches_both_heads_and_trunk():
    torch.manual_seed(0)
    net = Localizer(NetworkSpec((1, 64, 64), C))
    x = torch.rand(4, 1, 64, 64)
    y = _t([[3, 0.1, 0.2, 0.5, 0.6], [7, 0.3, 0.3, 0.9, 0.8], [0, 0.0, 0.0, 0.4, 0.4], [9, 0.5, 0.1, 0.9, 0.5]])
    loss = LocalizationLoss(C)(net(x), y)
    assert torch.isfinite(loss)
    loss.backward()
    for name in ("classifier.weight", "box_head.weight", "hidden.0.weight", "features.0.0.weight"):
        grad = dict(net.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_loss_gradients_flow_to_logits_and_boxes():
    out = PRED.clone().requires_grad_(True)
    LocalizationLoss(C)(out, TRUE).backward()
    assert out.grad[:, :C].abs().sum() > 0
    assert out.grad[:, C:].abs().sum() > 0


# ------------------------------------------------------------------------- real MNIST digits on a canvas


@pytest.fixture(scope="module")
def canvases(mirror):
    from pipelines.config import DatasetConfig
    from pipelines.data.preparers import prepare_dataset

    return prepare_dataset(
        "mnist_localization",
        DatasetConfig(max_train_samples=64, max_test_samples=32, val_fraction=0.001),
        7,
        mirror=mirror,
    )


def test_prepare_places_real_digits_inside_their_boxes(canvases, mirror):
    from pipelines.data.preparers.idx import read_idx_pair

    arrays, meta, _ = canvases
    assert meta["task"] == "localization" and meta["input_shape"] == [1, 64, 64] and meta["num_classes"] == 10
    assert meta["target_columns"] == ["class", "x1", "y1", "x2", "y2"]
    x, y = arrays["train"]
    assert x.shape == (64, 1, 64, 64) and x.dtype == np.float32 and y.shape == (64, 5)
    assert 0 <= x.min() and x.max() <= 1
    _, labels = read_idx_pair(
        mirror / "mnist" / "train-images-idx3-ubyte.gz", mirror / "mnist" / "train-labels-idx1-ubyte.gz"
    )
    assert set(y[:, 0].astype(int)) <= set(range(10)) and len(set(y[:, 0].astype(int))) >= 8
    sides = []
    for image, (_label, x1, y1, x2, y2) in zip(x[:, 0], y):
        assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
        c1, r1, c2, r2 = (int(round(v * 64)) for v in (x1, y1, x2, y2))
        inside = image[r1:r2, c1:c2].sum()
        assert inside >= 0.97 * image.sum() > 0  # the box holds the digit's ink; outside is blank canvas
        sides.append(max(c2 - c1, r2 - r1))
    assert min(sides) >= 8 and max(sides) <= 45 and max(sides) - min(sides) >= 12  # random scales (17-45 px squares)


def test_prepare_is_seeded(canvases, mirror):
    from pipelines.config import DatasetConfig
    from pipelines.data.preparers import prepare_dataset

    again, _, _ = prepare_dataset(
        "mnist_localization",
        DatasetConfig(max_train_samples=64, max_test_samples=32, val_fraction=0.001),
        7,
        mirror=mirror,
    )
    assert np.array_equal(again["train"][0], canvases[0]["train"][0])
    assert np.array_equal(again["test"][1], canvases[0]["test"][1])
    other, _, _ = prepare_dataset(
        "mnist_localization",
        DatasetConfig(max_train_samples=64, max_test_samples=32, val_fraction=0.001),
        8,
        mirror=mirror,
    )
    assert not np.array_equal(other["test"][1][:, 1:], canvases[0]["test"][1][:, 1:])


def test_localization_module_trains_and_reports_iou(canvases, tmp_path):
    import lightning.pytorch as L

    from pipelines.training.module import SupervisedModule

    arrays, meta, _ = canvases
    x, y = (torch.from_numpy(a) for a in arrays["train"])
    module = SupervisedModule(
        "localizer",
        {"input_shape": (1, 64, 64), "num_outputs": 10, "batch_norm": True},
        {},
        task="localization",
        task_meta={"num_classes": 10},
        loss="ce_smooth_l1_giou",
        optimizer={"name": "adam", "lr": 1e-3},
        regularization={"type": "none"},
        initializer="he_uniform",
    )
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    before = {k: v.clone() for k, v in module.network.state_dict().items()}
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, loader)
    after = module.network.state_dict()
    assert not torch.equal(before["box_head.weight"], after["box_head.weight"])
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    results = trainer.test(module, loader, verbose=False)[0]
    assert set(results) >= {"test_acc", "test_mean_iou", "test_acc_iou50", "test_loss"}
    assert 0 <= results["test_acc_iou50"] <= results["test_acc"] and 0 <= results["test_mean_iou"] <= 1
