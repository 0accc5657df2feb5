"""The ``augment`` stage on slices of the real data: disabled (meta only), images (kornia), tabular (noise), and
images stored standardised per channel (CIFAR-10), which are augmented as [0, 1] pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pipelines.config import AugmentConfig, ConfigError, DatasetConfig, load_params, validate
from pipelines.data.augmentation import augment_arrays, augment_images, select_samples
from pipelines.data.catalog import get_dataset
from pipelines.data.prepared import (
    CHANNEL_STANDARDIZATION,
    from_unit_range,
    load_prepared,
    load_training_data,
    to_unit_range,
    write_prepared,
)
from pipelines.data.preparers import prepare_dataset
from pipelines.data.preparers.cifar10 import channel_statistics
from pipelines.data.readers import read_cifar_batch, read_idx
from pipelines.errors import DataError
from pipelines.stages.augment import augment, main

SEED = 42


def write_params(path: Path, augment_section: dict[str, Any], datasets: tuple[str, ...] = ("mnist", "churn")) -> Path:
    """A minimal, valid params file with the given ``augment:`` section."""
    params = {"seed": SEED, "datasets": {name: {} for name in datasets}, "augment": augment_section}
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def mnist_slice(mirror: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first 512 real MNIST test images as a prepared train split: float32 (512, 1, 28, 28) in [0, 1]."""
    images = read_idx(mirror / "mnist/t10k-images-idx3-ubyte.gz")[:512]
    labels = read_idx(mirror / "mnist/t10k-labels-idx1-ubyte.gz")[:512].astype(np.int64)
    return (images[:, None] / np.float32(255)).astype(np.float32), labels


@pytest.fixture
def prepared_mnist(tmp_path: Path, mnist_slice: tuple[np.ndarray, np.ndarray]) -> Path:
    root = tmp_path / "prepared"
    meta = {"dataset": "mnist", "task": "multiclass", "modality": "image"}
    write_prepared(root / "mnist", {"train": mnist_slice}, meta)
    return root


def test_disabled_writes_only_meta_and_replaces_stale_output(tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", {"mnist": {"enabled": False}})
    out = tmp_path / "augmented"
    (out / "mnist").mkdir(parents=True)
    (out / "mnist" / "train_x.npy").write_bytes(b"stale output of an earlier enabled run")
    # Disabled: the prepared data is not even read (the prepared root does not exist).
    augment("mnist", params_path=params, prepared_root=tmp_path / "missing", out_root=out)
    assert sorted(p.name for p in (out / "mnist").iterdir()) == ["meta.json"]
    assert load_prepared(out / "mnist").meta == {"enabled": False, "dataset": "mnist"}
    assert sorted(p.name for p in out.iterdir()) == ["mnist"]  # no temporary directories left


def test_enabled_images_deterministic_in_range_labels_kept(
    tmp_path: Path, prepared_mnist: Path, mnist_slice: tuple[np.ndarray, np.ndarray]
) -> None:
    section = {
        "mnist": {
            "enabled": True,
            "copies": 2,
            "fraction": 0.25,
            "rotation_degrees": 10,
            "zoom": 0.1,
            "brightness": 0.1,
            "noise_std": 0.05,
        }
    }
    params = write_params(tmp_path / "params.yaml", section)
    runs = []
    for name in ("first", "second"):
        out = augment("mnist", params_path=params, prepared_root=prepared_mnist, out_root=tmp_path / name)
        runs.append(load_prepared(out, splits=("train",), mmap=False))
    first, second = runs
    x, y = first.x["train"], first.y["train"]
    assert x.shape == (256, 1, 28, 28) and x.dtype == np.float32  # round(0.25 * 512) = 128 samples, 2 copies
    assert first.meta["enabled"] is True and first.meta["augmented_samples"] == 256
    assert first.meta["selected_samples"] == 128 and first.meta["source_train_samples"] == 512
    np.testing.assert_array_equal(x, second.x["train"])  # deterministic
    np.testing.assert_array_equal(y, second.y["train"])
    assert 0.0 <= x.min() and x.max() <= 1.0

    source_x, source_y = mnist_slice
    index = select_samples(512, AugmentConfig(**section["mnist"]), SEED)
    np.testing.assert_array_equal(y, source_y[index])  # labels preserved
    assert not np.array_equal(x[:128], x[128:])  # the two copies are augmented differently
    # Mild transforms: an augmented digit correlates with its own source image far more than with another one.
    flat, src = x.reshape(len(x), -1), source_x[index].reshape(len(x), -1)
    own = np.median([np.corrcoef(a, b)[0, 1] for a, b in zip(flat, src)])
    other = np.median([np.corrcoef(a, b)[0, 1] for a, b in zip(flat, np.roll(src, 1, axis=0))])
    assert own > 0.7 and other < 0.5 and not np.allclose(flat, src)


def test_augmented_samples_are_appended_to_train(tmp_path: Path, prepared_mnist: Path) -> None:
    params = write_params(tmp_path / "params.yaml", {"mnist": {"enabled": True, "fraction": 0.5, "noise_std": 0.1}})
    augment("mnist", params_path=params, prepared_root=prepared_mnist, out_root=tmp_path / "augmented")
    data = load_training_data("mnist", prepared_root=prepared_mnist, augmented_root=tmp_path / "augmented")
    assert len(data.x["train"]) == 512 + 256 and data.meta["augmented_train_samples"] == 256


def test_augment_images_without_transforms_is_identity(mnist_slice: tuple[np.ndarray, np.ndarray]) -> None:
    x = mnist_slice[0][:64]
    np.testing.assert_array_equal(augment_images(x, AugmentConfig(enabled=True), SEED), x)


def test_tabular_noise_touches_only_numeric_columns(tmp_path: Path, mirror: Path) -> None:
    arrays, meta, _ = prepare_dataset("churn", DatasetConfig(), SEED, mirror=mirror)
    root = tmp_path / "prepared"
    write_prepared(root / "churn", arrays, meta)
    section = {"churn": {"enabled": True, "copies": 1, "fraction": 0.5, "noise_std": 0.1}}
    out = augment(
        "churn",
        params_path=write_params(tmp_path / "params.yaml", section),
        prepared_root=root,
        out_root=tmp_path / "augmented",
    )
    aug = load_prepared(out, splits=("train",))
    x_train, y_train = arrays["train"]
    index = select_samples(len(x_train), AugmentConfig(**section["churn"]), SEED)
    assert len(aug.x["train"]) == len(index) == 3600
    np.testing.assert_array_equal(aug.y["train"], y_train[index])
    diff = aug.x["train"] - x_train[index]
    numeric = meta["numeric_features"]
    other = [i for i in range(x_train.shape[1]) if i not in numeric]
    assert (diff[:, other] == 0).all()  # one-hot, binary and label-encoded columns untouched
    assert diff[:, numeric].std() == pytest.approx(0.1, rel=0.05)  # noise in standardised units
    assert abs(diff[:, numeric].mean()) < 0.01


def test_text_cannot_be_augmented_offline() -> None:
    x, y = np.zeros((4, 8), dtype=np.int64), np.zeros(4, dtype=np.int64)
    meta = {"dataset": "imdb", "modality": get_dataset("imdb").modality}
    with pytest.raises(DataError, match="text data is not supported"):
        augment_arrays(x, y, meta, AugmentConfig(enabled=True, noise_std=0.1), SEED)


def test_stage_missing_prepared_data_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    params = write_params(tmp_path / "params.yaml", {"mnist": {"enabled": True, "noise_std": 0.1}})
    argv = ["mnist", "--params", str(params), "--prepared", str(tmp_path / "none"), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "meta.json" in err[0]
    assert not (tmp_path / "out" / "mnist").exists()


# ------------------------------------------------------------------------------- crops, flips, standardised images


def real_images(mirror: Path, dataset: str, n: int = 64) -> np.ndarray:
    """The first ``n`` real test images of ``dataset`` as float32 (n, C, H, W) pixels in [0, 1]."""
    if dataset == "cifar10":
        images = read_cifar_batch(mirror / "cifar10/test_batch.bin.gz")[0][:n]
    else:
        images = read_idx(mirror / f"{dataset}/t10k-images-idx3-ubyte.gz")[:n, None]
    return (images / np.float32(255)).astype(np.float32)


def find_shift(out: np.ndarray, image: np.ndarray, pad: int, flips: tuple[bool, ...] = (False,)):
    """``(dy, dx, flipped)`` such that ``out`` is ``image`` (flipped left-right if so) zero-padded by ``pad`` pixels
    and cropped back to its size at offset ``(dy, dx)`` from the centre; None if there is no such shift."""
    _, h, w = image.shape
    for flipped in flips:
        padded = np.pad(image[..., ::-1] if flipped else image, ((0, 0), (pad, pad), (pad, pad)))
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                if np.allclose(out, padded[:, pad + dy : pad + dy + h, pad + dx : pad + dx + w], atol=1e-5):
                    return dy, dx, flipped
    return None


@pytest.mark.parametrize("dataset", ["cifar10", "fashion_mnist"])
def test_crop_padding_keeps_shape_and_shifts_pixels(mirror: Path, dataset: str) -> None:
    x = real_images(mirror, dataset)
    out = augment_images(x, AugmentConfig(enabled=True, crop_padding=4), SEED)
    assert out.shape == x.shape and out.dtype == np.float32
    assert not np.array_equal(out, x)
    # Each image is its source moved by up to 4 pixels each way, with black where the padding came in.
    shifts = [find_shift(o, i, 4) for o, i in zip(out, x)]
    assert None not in shifts
    assert len(set(shifts)) > 10 and sum(dy != 0 or dx != 0 for dy, dx, _ in shifts) > len(x) // 2
    np.testing.assert_array_equal(out, augment_images(x, AugmentConfig(enabled=True, crop_padding=4), SEED))


def test_flips_allowed_for_cifar10_and_fashion_mnist_rejected_for_mnist() -> None:
    datasets = {name: {} for name in ("mnist", "fashion_mnist", "cifar10", "churn")}
    flips = {"fashion_mnist": {"enabled": True, "hflip": True}, "cifar10": {"enabled": True, "hflip": True}}
    params = validate({"seed": SEED, "datasets": datasets, "augment": flips})
    assert params.augmentation("fashion_mnist").hflip and params.augmentation("cifar10").hflip
    with pytest.raises(ConfigError, match="augment.mnist.hflip: a flip changes the label of mnist"):
        validate({"seed": SEED, "datasets": datasets, "augment": {**flips, "mnist": {"enabled": True, "hflip": True}}})
    with pytest.raises(ConfigError, match="augment.churn: tabular data only takes noise_std"):
        validate({"seed": SEED, "datasets": datasets, "augment": {"churn": {"enabled": True, "crop_padding": 2}}})
    real = load_params(profile="default")  # the repo's params.yaml: the usual CIFAR-10 recipe
    assert real.augmentation("cifar10").model_dump(include={"enabled", "hflip", "crop_padding"}) == {
        "enabled": True,
        "hflip": True,
        "crop_padding": 4,
    }
    assert not real.augmentation("mnist").hflip


def test_standardised_images_are_augmented_as_pixels(tmp_path: Path, mirror: Path) -> None:
    """CIFAR-10 is stored standardised per channel: augment maps it back to [0, 1] pixels with the prepared train
    statistics, flips and crops there (black padding), and standardises the result with the same statistics."""
    images = read_cifar_batch(mirror / "cifar10/test_batch.bin.gz")[0][:256]
    labels = read_cifar_batch(mirror / "cifar10/test_batch.bin.gz")[1][:256]
    mean, std = channel_statistics(images)
    meta = {
        "dataset": "cifar10",
        "task": "multiclass",
        "modality": "image",
        "normalization": {"method": CHANNEL_STANDARDIZATION, "fitted_on": "train", "mean": mean, "std": std},
    }
    pixels = (images / np.float32(255)).astype(np.float32)
    x = from_unit_range(pixels, meta)
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    root = tmp_path / "prepared"
    write_prepared(root / "cifar10", {"train": (x, labels)}, meta)
    section = {"cifar10": {"enabled": True, "fraction": 0.25, "hflip": True, "crop_padding": 4}}
    params = write_params(tmp_path / "params.yaml", section, datasets=("cifar10",))
    out = augment("cifar10", params_path=params, prepared_root=root, out_root=tmp_path / "augmented")
    aug = load_prepared(out, splits=("train",), mmap=False)
    index = select_samples(256, AugmentConfig(**section["cifar10"]), SEED)
    np.testing.assert_array_equal(aug.y["train"], labels[index])
    assert aug.meta["normalization"] == meta["normalization"]  # recorded: the extra samples are on the stored scale

    back = to_unit_range(aug.x["train"], meta)  # the stored extra samples, as pixels
    assert back.min() >= -1e-5 and back.max() <= 1 + 1e-5
    shifts = [find_shift(b, p, 4, flips=(False, True)) for b, p in zip(back, pixels[index])]
    assert None not in shifts and {flipped for *_, flipped in shifts} == {False, True}
    # Where padding came in, the pixel is black: 0 in [0, 1], -mean/std on the stored scale.
    black = (np.abs(back) < 1e-6).all(axis=1)
    assert black.sum() > 1000
    stored = aug.x["train"].transpose(1, 0, 2, 3)[:, black]
    expected = -np.array(mean) / np.array(std)
    np.testing.assert_allclose(stored, np.broadcast_to(expected[:, None], stored.shape), atol=1e-5)
