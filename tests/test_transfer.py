"""Transfer learning (notes 001, "Transfer learning") on real CIFAR-10: the class-subset datasets, loading a
backbone from our own checkpoint files (plain state_dict and Lightning checkpoint), freezing that really freezes,
unfreezing later, and the config rules that keep the weights file a DVC dependency."""

from __future__ import annotations

import copy

import lightning.pytorch as L
import numpy as np
import pytest
import torch
import yaml

from models.transfer import PretrainedWeightsError, backbone_of, load_backbone, read_state_dict
from pipelines.config import ConfigError, DatasetConfig, ExperimentConfig, load_params, validate
from pipelines.data.datamodule import ArrayDataModule
from pipelines.data.prepared import PreparedData
from pipelines.data.preparers import prepare_dataset
from pipelines.training.trainer import build_module, make_trainer, save_network, seed_everything, transfer_callbacks

EXPERIMENT = {
    "architecture": "resnet",
    "dataset": "cifar10_5to9",
    "model": {"depth": 20},
    "initializer": "he_normal",
    "loss": "ce",
    "optimizer": {"name": "adam", "lr": 0.01},
    "batch_size": 32,
    "trainer": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "accelerator": "cpu", "devices": 1},
    "early_stopping": {"enabled": False},
}


def _prepared(name: str, mirror, **config) -> PreparedData:
    arrays, meta, _ = prepare_dataset(name, DatasetConfig(**config), 42, mirror=mirror)
    meta["splits"] = {split: len(x) for split, (x, _) in arrays.items()}
    return PreparedData(meta, {k: x for k, (x, _) in arrays.items()}, {k: y for k, (_, y) in arrays.items()})


@pytest.fixture(scope="module")
def target(mirror) -> PreparedData:
    """CIFAR-10 classes 5-9 with 8 train images per class and 200 test images."""
    return _prepared("cifar10_5to9", mirror, max_train_per_class=8, max_test_samples=200)


@pytest.fixture(scope="module")
def upstream(mirror, tmp_path_factory):
    """A ResNet-20 trained for a few steps on CIFAR-10 classes 0-4: ``(network, network.pt, best.ckpt)``."""
    data = _prepared("cifar10_0to4", mirror, max_train_samples=128, max_test_samples=64)
    exp = ExperimentConfig.model_validate(EXPERIMENT | {"dataset": "cifar10_0to4"})
    seed_everything(0)
    module = build_module(exp, data.meta)
    folder = tmp_path_factory.mktemp("upstream")
    trainer = make_trainer(
        exp, logger=False, callbacks=[], default_root_dir=folder, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(module, datamodule=ArrayDataModule(data, batch_size=32, seed=0))
    save_network(module.network, folder / "network.pt")
    trainer.save_checkpoint(folder / "best.ckpt", weights_only=True)
    return module.network, folder / "network.pt", folder / "best.ckpt"


def test_class_subsets_are_real_cifar10_relabelled(mirror, target):
    source = _prepared("cifar10_0to4", mirror, max_train_samples=500, max_test_samples=100)
    assert source.meta["classes"] == ["airplane", "automobile", "bird", "cat", "deer"]
    assert target.meta["classes"] == ["dog", "frog", "horse", "ship", "truck"]
    assert target.meta["base_classes"] == [5, 6, 7, 8, 9] and target.meta["num_classes"] == 5
    assert np.bincount(target.y["train"]).tolist() == [8] * 5  # max_train_per_class
    assert set(np.unique(target.y["test"])) == set(range(5)) and len(target.y["test"]) == 200
    # The first test record of class 8 (ship) in the official test batch is its 2nd image: it is kept, as label 3.
    full = _prepared("cifar10", mirror, max_train_samples=100)
    ship = full.x["test"][1]
    assert full.y["test"][1] == 8
    relabelled = _prepared("cifar10_5to9", mirror, max_train_per_class=1)
    mean = np.asarray(relabelled.meta["normalization"]["mean"], dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(relabelled.meta["normalization"]["std"], dtype=np.float32).reshape(3, 1, 1)
    full_mean = np.asarray(full.meta["normalization"]["mean"], dtype=np.float32).reshape(3, 1, 1)
    full_std = np.asarray(full.meta["normalization"]["std"], dtype=np.float32).reshape(3, 1, 1)
    pixels = relabelled.x["test"][relabelled.y["test"] == 3][0] * std + mean  # back to [0, 1]
    assert np.allclose(pixels, ship * full_std + full_mean, atol=1e-5)


@pytest.mark.parametrize("which", ["network.pt", "best.ckpt"])
def test_transfer_loads_the_upstream_backbone_not_its_head(upstream, target, which):
    network, state_dict_file, checkpoint_file = upstream
    path = state_dict_file if which == "network.pt" else checkpoint_file
    exp = ExperimentConfig.model_validate(EXPERIMENT | {"pretrained": {"path": str(path)}})
    seed_everything(1)
    module = build_module(exp, target.meta)  # build_module loads pretrained.path (absolute here)
    loaded, source = backbone_of(module.network).state_dict(), backbone_of(network).state_dict()
    assert loaded.keys() == source.keys() and len(loaded) > 50
    assert all(torch.equal(loaded[k], source[k]) for k in loaded)
    seed_everything(1)
    scratch = build_module(exp.model_copy(update={"pretrained": None}), target.meta)
    assert torch.equal(module.network.classifier[0].weight, scratch.network.classifier[0].weight)  # a fresh head
    assert not torch.equal(backbone_of(module.network).stem[0].weight, backbone_of(scratch.network).stem[0].weight)


def test_external_state_dict_with_a_prefix(upstream, tmp_path):
    """A third-party file (e.g. converted ImageNet weights) with its own key names: the backbone under a prefix."""
    network, state_dict_file, _ = upstream
    foreign = {f"encoder.{k}": v for k, v in backbone_of(network).state_dict().items()}
    foreign["fc.weight"] = torch.zeros(1000, 64)  # another task's head: ignored
    torch.save(foreign, tmp_path / "imagenet-like.pt")
    fresh = copy.deepcopy(network)
    for p in fresh.parameters():
        torch.nn.init.zeros_(p)
    info = load_backbone(fresh, tmp_path / "imagenet-like.pt", prefix="encoder.")
    assert info["prefix"] == "encoder." and info["parameters"] == sum(p.numel() for p in network.features.parameters())
    assert all(torch.equal(a, b) for a, b in zip(fresh.features.parameters(), network.features.parameters()))
    with pytest.raises(PretrainedWeightsError, match="no key starts with 'features.'"):
        load_backbone(fresh, tmp_path / "imagenet-like.pt", prefix="features.")


def test_weights_that_do_not_fit_are_named(upstream, target, tmp_path):
    _, state_dict_file, _ = upstream
    wider = ExperimentConfig.model_validate(
        EXPERIMENT | {"model": {"depth": 20, "width": 8}, "pretrained": {"path": str(state_dict_file)}}
    )
    with pytest.raises(
        ConfigError,
        match=r"pretrained.path: .*network.pt: .*do not fit the backbone of ResNet: "
        r"shape mismatch stage1",
    ):
        build_module(wider, target.meta)
    deeper = ExperimentConfig.model_validate(
        EXPERIMENT | {"model": {"depth": 32}, "pretrained": {"path": str(state_dict_file)}}
    )
    with pytest.raises(ConfigError, match=r"missing stage1.3"):
        build_module(deeper, target.meta)
    with pytest.raises(PretrainedWeightsError, match="no such weights file"):
        read_state_dict(tmp_path / "absent.pt")
    (tmp_path / "code.pt").write_bytes(b"not a torch file")
    with pytest.raises(PretrainedWeightsError, match="not a weights-only torch file"):
        read_state_dict(tmp_path / "code.pt")
    torch.save({"note": "no tensors"}, tmp_path / "empty.pt")
    with pytest.raises(PretrainedWeightsError, match="expected a state_dict"):
        read_state_dict(tmp_path / "empty.pt")


class _Grads(L.Callback):
    """Records, after each backward pass, which backbone parameters got a non-zero gradient."""

    def __init__(self) -> None:
        self.backbone_grads: list[bool] = []
        self.head_grads: list[bool] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        net = pl_module.network
        self.backbone_grads.append(
            any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in net.features.parameters())
        )
        self.head_grads.append(
            all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in net.classifier.parameters())
        )


def _fit(exp: ExperimentConfig, data: PreparedData, tmp_path, epochs: int):
    seed_everything(2)
    module = build_module(exp, data.meta)
    before = {k: v.clone() for k, v in module.network.state_dict().items()}
    grads = _Grads()
    exp = exp.model_copy(update={"trainer": exp.trainer.model_copy(update={"max_epochs": epochs})})
    trainer = make_trainer(
        exp,
        logger=False,
        callbacks=[grads, *transfer_callbacks(exp)],
        default_root_dir=tmp_path,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, datamodule=ArrayDataModule(data, batch_size=16, seed=2))
    return module, before, grads, trainer


def test_a_frozen_backbone_gets_no_gradient_and_does_not_change(upstream, target, tmp_path):
    _, state_dict_file, _ = upstream
    exp = ExperimentConfig.model_validate(EXPERIMENT | {"pretrained": {"path": str(state_dict_file)}})
    assert [type(c).__name__ for c in transfer_callbacks(exp)] == ["FreezeBackbone"]
    module, before, grads, trainer = _fit(exp, target, tmp_path, epochs=2)
    assert trainer.global_step == 4 and len(grads.backbone_grads) == 4
    assert not any(grads.backbone_grads) and all(grads.head_grads)
    assert all(p.grad is None for p in module.network.features.parameters())
    after = module.network.state_dict()
    backbone = [k for k in after if k.startswith("features.")]
    assert all(torch.equal(before[k], after[k]) for k in backbone)  # weights and batch-norm running statistics
    assert not torch.equal(before["classifier.0.weight"], after["classifier.0.weight"])  # the head trained
    optimizer = trainer.optimizers[0]
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in module.network.features.parameters()}


def test_unfreezing_trains_the_backbone_at_the_lower_rate(upstream, target, tmp_path):
    _, state_dict_file, _ = upstream
    exp = ExperimentConfig.model_validate(
        EXPERIMENT | {"pretrained": {"path": str(state_dict_file), "unfreeze_at_epoch": 1, "backbone_lr_ratio": 0.25}}
    )
    module, before, grads, trainer = _fit(exp, target, tmp_path, epochs=2)
    assert grads.backbone_grads == [False, False, True, True]  # epoch 0 frozen, epoch 1 trained
    groups = trainer.optimizers[0].param_groups
    assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(0.25 * groups[0]["lr"])
    after = module.network.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith("features.") and after[k].ndim == 4)


def test_without_freezing_everything_trains_from_the_first_step(upstream, target, tmp_path):
    _, state_dict_file, _ = upstream
    exp = ExperimentConfig.model_validate(
        EXPERIMENT | {"pretrained": {"path": str(state_dict_file), "freeze_backbone": False}}
    )
    assert transfer_callbacks(exp) == []
    _, _, grads, _ = _fit(exp, target, tmp_path, epochs=1)
    assert all(grads.backbone_grads)


def test_config_keeps_pretrained_experiments_under_transfer():
    raw = yaml.safe_load(open("params.yaml"))
    params = validate(raw)
    assert set(params.transfer) == {"resnet20_cifar10_5to9_frozen", "resnet20_cifar10_5to9_finetune"}
    upstream = params.transfer["resnet20_cifar10_5to9_frozen"].pretrained.path
    assert upstream == "checkpoints/resnet20_cifar10_0to4/network.pt"  # written by train@resnet20_cifar10_0to4
    assert params.experiment("resnet20_cifar10_5to9_finetune").pretrained.unfreeze_at_epoch == 2
    moved = copy.deepcopy(raw)
    moved["experiments"]["lenet5_mnist"]["pretrained"] = {"path": "x.pt"}
    with pytest.raises(ConfigError, match="experiments.lenet5_mnist.pretrained: .* belongs under transfer"):
        validate(moved)
    missing = copy.deepcopy(raw)
    del missing["transfer"]["resnet20_cifar10_5to9_frozen"]["pretrained"]
    with pytest.raises(ConfigError, match="transfer.resnet20_cifar10_5to9_frozen.pretrained: missing"):
        validate(missing)
    clash = copy.deepcopy(raw)
    clash["transfer"]["lenet5_mnist"] = clash["transfer"]["resnet20_cifar10_5to9_frozen"]
    with pytest.raises(ConfigError, match="also named under experiments"):
        validate(clash)
    nothing_to_unfreeze = copy.deepcopy(raw)
    nothing_to_unfreeze["transfer"]["resnet20_cifar10_5to9_finetune"]["pretrained"]["freeze_backbone"] = False
    with pytest.raises(ConfigError, match="unfreeze_at_epoch needs pretrained.freeze_backbone"):
        validate(nothing_to_unfreeze)
    assert "resnet20_cifar10_5to9_frozen" in load_params().all_experiments
