"""Datasets declared in params.yaml with a ``source:`` block (issue 12, section 1): each format read from small real
files made from the project's own data (churn rows, MNIST digits, Yelp sentences, airline passengers), the bad
inputs that must fail before anything is written, and the AT&T faces moved to the image_folder reader."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import TypeAdapter

from pipelines.config import ConfigError, DatasetConfig, validate
from pipelines.config.sources import SourceConfig
from pipelines.data.preparers import prepare_dataset
from pipelines.data.readers import read_idx
from pipelines.errors import DataError, DataFormatError, DataIntegrityError, DataNotFoundError

# ------------------------------------------------------------------------------------- real files, small


def churn_rows(mirror: Path, n: int = 300) -> pd.DataFrame:
    """The first ``n`` rows of the real churn table."""
    return pd.read_csv(mirror / "churn" / "Churn_Modelling.csv", nrows=n)


def mnist_digits(mirror: Path, n: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` real MNIST digits of ``split``: uint8 (n, 28, 28) and their labels."""
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(mirror / "mnist" / f"{prefix}-images-idx3-ubyte.gz")[:n]
    labels = read_idx(mirror / "mnist" / f"{prefix}-labels-idx1-ubyte.gz")[:n]
    return images, labels


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> Path:
    """Write ``array`` (uint8) as an IDX file: magic ``0x0000 08 <ndim>``, big-endian sizes, the bytes."""
    data = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def write_png_folders(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """One folder per digit under ``root``, each image a PNG named by its index."""
    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    return root


def yelp_sentences(mirror: Path, n: int = 300) -> pd.DataFrame:
    """The first ``n`` real Yelp sentences with their 0/1 sentiment, as ``text`` and ``target`` columns."""
    lines = (mirror / "sentiment_labelled_sentences" / "yelp_labelled.txt").read_text().splitlines()[:n]
    rows = [line.rsplit("\t", 1) for line in lines]
    return pd.DataFrame({"text": [r[0].strip() for r in rows], "target": [int(r[1]) for r in rows]})


def airline_series(mirror: Path) -> pd.DataFrame:
    """The real monthly airline passengers, 1949-1960, as ``time`` and ``value`` columns."""
    frame = pd.read_csv(mirror / "airline_passengers" / "airline-passengers.csv")
    return frame.rename(columns={"Month": "time", "Passengers": "value"})


def config(source: dict, **kwargs) -> DatasetConfig:
    return DatasetConfig.model_validate({"source": source, **kwargs})


def prepare(tmp_path: Path, source: dict, **kwargs):
    return prepare_dataset("mine", config(source, **kwargs), 0, root=tmp_path)


# ------------------------------------------------------------------------------------------------ csv


def test_csv_encodes_like_churn_with_train_only_statistics(mirror, tmp_path):
    churn_rows(mirror).to_csv(tmp_path / "table.csv", index=False)
    source = {"format": "csv", "path": "table.csv", "target": "Exited", "drop": ["RowNumber", "CustomerId", "Surname"]}
    arrays, meta, _ = prepare(tmp_path, source)
    assert meta["task"] == "binary" and meta["classes"] == ["0", "1"]  # inferred from the 0/1 target
    assert {s: len(y) for s, (_, y) in arrays.items()} == {"train": 216, "val": 24, "test": 60}
    names = meta["feature_names"]
    assert names == [
        "CreditScore", "Geography_France", "Geography_Germany", "Geography_Spain", "Gender_Female", "Gender_Male",
        "Age", "Tenure", "Balance", "NumOfProducts", "HasCrCard", "IsActiveMember", "EstimatedSalary",
    ]  # fmt: skip
    x_train = arrays["train"][0]
    numeric = meta["numeric_features"]
    assert np.allclose(x_train[:, numeric].mean(axis=0), 0, atol=1e-5)  # standardised on train
    assert not np.allclose(arrays["test"][0][:, numeric].mean(axis=0), 0, atol=1e-3)
    one_hot = x_train[:, 1:4]
    assert set(np.unique(one_hot)) == {0.0, 1.0} and (one_hot.sum(axis=1) == 1).all()
    # the same rows in the same order as churn: the label of each row survives the encoding
    rows = churn_rows(mirror)
    stats = meta["normalization"]["features"]["Age"]
    age = x_train[:, names.index("Age")] * stats["std"] + stats["mean"]
    assert set(np.round(age).astype(int)) <= set(rows["Age"])


def test_csv_keeps_a_given_test_table_and_forces_categorical(mirror, tmp_path):
    rows = churn_rows(mirror, 400).drop(columns=["RowNumber", "CustomerId", "Surname"])
    rows.iloc[:300].to_csv(tmp_path / "train.csv", index=False)
    rows.iloc[300:].to_csv(tmp_path / "test.csv", index=False)
    source = {
        "format": "csv",
        "path": "train.csv",
        "test_path": "test.csv",
        "target": "Exited",
        "categorical": ["NumOfProducts"],
    }
    arrays, meta, _ = prepare(tmp_path, source, val_fraction=0.2)
    assert {s: len(y) for s, (_, y) in arrays.items()} == {"train": 240, "val": 60, "test": 100}
    assert (arrays["test"][1] == rows["Exited"].iloc[300:].to_numpy()).all()  # the given test split, in order
    assert [n for n in meta["feature_names"] if n.startswith("NumOfProducts_")] == [
        f"NumOfProducts_{k}" for k in meta["categories"]["NumOfProducts"]
    ]


def test_csv_regression_and_multiclass_are_inferred(mirror, tmp_path):
    rows = churn_rows(mirror).drop(columns=["RowNumber", "CustomerId", "Surname"])
    rows.to_csv(tmp_path / "table.csv", index=False)
    _, meta, _ = prepare(tmp_path, {"format": "csv", "path": "table.csv", "target": "EstimatedSalary"})
    assert meta["task"] == "regression" and "classes" not in meta
    arrays, meta, _ = prepare(tmp_path, {"format": "csv", "path": "table.csv", "target": "Geography"})
    assert meta["task"] == "multiclass" and meta["classes"] == ["France", "Germany", "Spain"]
    assert arrays["train"][1].dtype == np.int64


@pytest.mark.parametrize(
    ("edit", "source", "message"),
    [
        (None, {"path": "absent.csv"}, r"absent\.csv: no such file or folder"),
        (None, {"target": "Churned"}, r"table\.csv: no column 'Churned'; the header has RowNumber"),
        ("age", {}, r"table\.csv: line 19, column Age: 'forty' is not a number"),
        ("empty", {}, r"table\.csv: line 8, column Surname: empty value"),
        ("rare", {}, r"table\.csv: column Exited: class '2' has 1 sample\(s\); splitting it into train, val and test"),
        (None, {"sha256": "0" * 64}, r"table\.csv: sha256 is [0-9a-f]{64}, but source.sha256 pins 0{64}"),
    ],
)
def test_csv_bad_input_names_the_file_and_the_row_or_column(mirror, tmp_path, edit, source, message):
    rows = churn_rows(mirror)
    if edit == "age":
        rows["Age"] = rows["Age"].astype(object)
        rows.loc[17, "Age"] = "forty"
    elif edit == "empty":
        rows.loc[6, "Surname"] = None
    elif edit == "rare":
        rows.loc[3, "Exited"] = 2
    rows.to_csv(tmp_path / "table.csv", index=False)
    with pytest.raises(DataError, match=message):
        prepare(tmp_path, {"format": "csv", "path": "table.csv", "target": "Exited", "task": "multiclass"} | source)


# ------------------------------------------------------------------------------------------------ idx


def test_idx_reads_any_square_size_gz_or_raw(mirror, tmp_path):
    train, train_y = mnist_digits(mirror, 200)
    test, test_y = mnist_digits(mirror, 100, "test")
    small_train, small_test = train[:, ::2, ::2].copy(), test[:, ::2, ::2].copy()  # 14x14 digits
    write_idx(tmp_path / "train-images", small_train, compress=True)
    write_idx(tmp_path / "train-labels", train_y)
    write_idx(tmp_path / "test-images", small_test)
    write_idx(tmp_path / "test-labels", test_y, compress=True)
    source = {
        "format": "idx",
        "path": ".",
        "train_images": "train-images",
        "train_labels": "train-labels",
        "test_images": "test-images",
        "test_labels": "test-labels",
    }
    arrays, meta, _ = prepare(tmp_path, source)
    x, y = arrays["test"]
    assert x.shape == (100, 1, 14, 14) and x.dtype == np.float32
    assert np.array_equal(x[:, 0], small_test / np.float32(255)) and np.array_equal(y, test_y)
    assert len(arrays["train"][1]) + len(arrays["val"][1]) == 200 and meta["num_classes"] == 10
    assert meta["input_shape"] == [1, 14, 14]

    write_idx(tmp_path / "test-labels", test_y[:99])
    with pytest.raises(DataFormatError, match=r"test-labels: expected 100 labels \(one per image in test-images\)"):
        prepare(tmp_path, source)


# ---------------------------------------------------------------------------------------- image_folder


def test_image_folder_matches_the_digits_it_was_made_from(mirror, tmp_path):
    images, labels = mnist_digits(mirror, 200)
    write_png_folders(tmp_path / "digits", images, labels)
    arrays, meta, _ = prepare(tmp_path, {"format": "image_folder", "path": "digits"}, val_fraction=0.1)
    assert meta["classes"] == [f"digit_{d}" for d in range(10)] and meta["channels"] == 1
    assert sum(len(y) for _, y in arrays.values()) == 200
    x, y = arrays["test"]
    assert x.shape[1:] == (1, 28, 28)
    # every test image is one of the source digits, with its label
    by_bytes = {img.tobytes(): int(label) for img, label in zip(images, labels)}
    assert all(by_bytes[(img[0] * 255).round().astype(np.uint8).tobytes()] == t for img, t in zip(x, y))
    resized, meta = prepare(
        tmp_path, {"format": "image_folder", "path": "digits", "image_size": [16, 20], "channels": 3}
    )[:2]
    assert resized["train"][0].shape[1:] == (3, 16, 20) and meta["input_shape"] == [3, 16, 20]


def test_image_folder_split_by_folder_keeps_the_given_splits(mirror, tmp_path):
    images, labels = mnist_digits(mirror, 150)
    for split, part in (("train", slice(0, 100)), ("val", slice(100, 120)), ("test", slice(120, 150))):
        write_png_folders(tmp_path / "digits" / split, images[part], labels[part])
    arrays, _, _ = prepare(tmp_path, {"format": "image_folder", "path": "digits", "split_by": "folder"})
    assert {s: len(y) for s, (_, y) in arrays.items()} == {"train": 100, "val": 20, "test": 30}


def test_image_folder_bad_input(mirror, tmp_path):
    images, labels = mnist_digits(mirror, 60)
    root = write_png_folders(tmp_path / "digits", images, labels)
    source = {"format": "image_folder", "path": "digits"}
    (root / "digit_3" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match=r"digit_3/broken\.png: unreadable image"):
        prepare(tmp_path, source)
    (root / "digit_3" / "broken.png").unlink()
    (root / "digit_empty").mkdir()
    with pytest.raises(DataFormatError, match=r"digit_empty: class folder holds no image"):
        prepare(tmp_path, source)
    (root / "digit_empty").rmdir()
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataFormatError, match=r"nothing: no class subfolders"):
        prepare(tmp_path, {"format": "image_folder", "path": "nothing"})


def test_att_faces_moved_to_the_image_folder_reader(mirror):
    arrays, meta, _ = prepare_dataset(
        "att_faces", DatasetConfig(val_fraction=0.125, test_fraction=0.2), 0, mirror=mirror
    )
    assert {s: x.shape for s, (x, _) in arrays.items()} == {
        "train": (280, 1, 112, 92),
        "val": (40, 1, 112, 92),
        "test": (80, 1, 112, 92),
    }
    assert meta["classes"][:3] == ["s1", "s2", "s3"] and meta["num_classes"] == 40
    assert (np.bincount(arrays["test"][1]) == 2).all()  # stratified by subject
    assert meta["format"] == "image_folder" and "Samaria" in meta["citation"]


def test_att_faces_needs_its_verified_folder(tmp_path, mirror):
    import shutil

    shutil.copytree(mirror / "att_faces", tmp_path / "att_faces")
    (tmp_path / "att_faces" / "s7" / "3.pgm").write_bytes((mirror / "att_faces" / "s7" / "4.pgm").read_bytes())
    with pytest.raises(DataIntegrityError, match=r"att_faces: 400 images whose combined sha256 is not"):
        prepare_dataset("att_faces", DatasetConfig(), 0, mirror=tmp_path)
    with pytest.raises(DataNotFoundError, match=r"att_faces/: not in the data mirror"):
        prepare_dataset("att_faces", DatasetConfig(), 0, mirror=tmp_path / "elsewhere")


# ------------------------------------------------------------------------------------ text_csv, series


def test_text_csv_is_tokenised_like_imdb(mirror, tmp_path):
    yelp_sentences(mirror).to_csv(tmp_path / "reviews.csv", index=False)
    arrays, meta, extra = prepare(tmp_path, {"format": "text_csv", "path": "reviews.csv"}, vocab_size=500, seq_len=24)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(extra["tokenizer.json"].decode())
    x, y = arrays["val"]
    assert x.shape == (len(y), 24) and meta["task"] == "binary" and meta["vocab_size"] <= 500
    assert meta["pad_id"] == 0 and (x[:, 0] == 0).any()  # short sentences are left-padded
    texts = yelp_sentences(mirror)
    first = tokenizer.encode(texts["text"].iloc[0]).ids  # the tokenizer reproduces the stored ids
    assert first in [row.tolist() for s in arrays for row in arrays[s][0]]
    with pytest.raises(DataFormatError, match=r"reviews\.csv: no column 'label'"):
        prepare(tmp_path, {"format": "text_csv", "path": "reviews.csv", "target": "label"})


def test_timeseries_csv_windows_split_by_time(mirror, tmp_path):
    series = airline_series(mirror)
    series.to_csv(tmp_path / "passengers.csv", index=False)
    source = {"format": "timeseries_csv", "path": "passengers.csv", "horizon": 3}
    arrays, meta, _ = prepare(tmp_path, source, window=12, val_fraction=0.2, test_fraction=0.2)
    n = len(series) - 12 - 3 + 1
    assert sum(len(y) for _, y in arrays.values()) == n and meta["task"] == "regression"
    x, y = arrays["test"]
    assert y.shape[1] == 3 and meta["horizon"] == 3
    # the last test target is the series' last three months, unscaled; splits are consecutive in time
    assert np.array_equal(y[-1], series["value"].to_numpy()[-3:].astype(np.float32))
    assert meta["split_times"]["train"][1] < meta["split_times"]["val"][0] < meta["split_times"]["test"][0]
    stats = meta["normalization"]["features"]["t-12"]
    assert np.isclose(x[0, 0] * stats["std"] + stats["mean"], series["value"].iloc[n - len(y)], atol=1e-3)
    series["value"] = series["value"].astype(object)
    series.loc[40, "value"] = "n/a"
    series.to_csv(tmp_path / "passengers.csv", index=False)
    with pytest.raises(DataFormatError, match=r"passengers\.csv: line 42: value is 'n/a'; expected a finite number"):
        prepare(tmp_path, source, window=12)


# ------------------------------------------------------------------------------------------- config


def test_unknown_format_and_bad_keys_are_config_errors_naming_the_key(mirror, tmp_path):
    raw = {"datasets": {"mine": {"source": {"format": "parquet", "path": "x"}}}}
    with pytest.raises(ConfigError, match=r"datasets\.mine\.source: Input tag 'parquet' found using 'format'"):
        validate(raw, base_dir=tmp_path)
    raw = {"datasets": {"mine": {"source": {"format": "csv", "path": "x", "target": "y", "colour": 1}}}}
    with pytest.raises(ConfigError, match=r"datasets\.mine\.source\.csv\.colour: Extra inputs are not permitted"):
        validate(raw, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"datasets\.elsewhere: not in the catalog and no source: block"):
        validate({"datasets": {"elsewhere": {}}}, base_dir=tmp_path)


def test_an_experiment_on_a_user_dataset_takes_its_inferred_task(mirror, tmp_path):
    churn_rows(mirror).to_csv(tmp_path / "table.csv", index=False)
    raw = {
        "datasets": {"mine": {"source": {"format": "csv", "path": "table.csv", "target": "Geography"}}},
        "experiments": {"mlp_mine": {"architecture": "mlp", "dataset": "mine", "loss": "ce"}},
    }
    params = validate(raw, base_dir=tmp_path)
    assert params.experiment("mlp_mine").task == "multiclass"
    with pytest.raises(ConfigError, match=r"experiments\.mlp_mine.*loss 'bce' does not fit the multiclass task"):
        validate(
            raw | {"experiments": {"mlp_mine": {"architecture": "mlp", "dataset": "mine", "loss": "bce"}}},
            base_dir=tmp_path,
        )
    raw["datasets"]["mine"]["source"]["path"] = "gone.csv"
    with pytest.raises(ConfigError, match=r"datasets\.mine\.source: .*gone\.csv: no such file"):
        validate(raw, base_dir=tmp_path)


def test_every_source_lists_the_files_it_depends_on(tmp_path):
    adapter = TypeAdapter(SourceConfig)
    csv = adapter.validate_python({"format": "csv", "path": "a.csv", "target": "y", "test_path": "/abs/b.csv"})
    assert csv.dependencies(tmp_path) == (tmp_path / "a.csv", Path("/abs/b.csv"))
    idx = adapter.validate_python(
        {"format": "idx", "path": "d", "train_images": "a", "train_labels": "b", "test_images": "c", "test_labels": "e"}
    )
    assert idx.dependencies(tmp_path) == (tmp_path / "d", None)
    assert [p.name for p in idx.files(tmp_path)] == ["a", "b", "c", "e"]
