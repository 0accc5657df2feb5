"""The ``augment`` stage on slices of the real data: disabled (meta only), images (kornia), tabular (noise)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pipelines.augment import augment, augment_arrays, augment_images, main, select_samples
from pipelines.catalog import get_dataset
from pipelines.config import AugmentConfig, DatasetConfig
from pipelines.datasets import prepare_dataset
from pipelines.errors import DataError
from pipelines.prepared import load_prepared, load_training_data, write_prepared
from pipelines.readers import read_idx

SEED = 42


def write_params(path: Path, augment_section: dict[str, Any]) -> Path:
    """A minimal, valid params file with the given ``augment:`` section."""
    params = {"seed": SEED, "datasets": {"mnist": {}, "churn": {}}, "augment": augment_section}
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


def test_enabled_images_deterministic_in_range_labels_kept(tmp_path: Path, prepared_mnist: Path,
                                                           mnist_slice: tuple[np.ndarray, np.ndarray]) -> None:
    section = {"mnist": {"enabled": True, "copies": 2, "fraction": 0.25, "rotation_degrees": 10, "zoom": 0.1,
                         "brightness": 0.1, "noise_std": 0.05}}
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
    out = augment("churn", params_path=write_params(tmp_path / "params.yaml", section), prepared_root=root,
                  out_root=tmp_path / "augmented")
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
