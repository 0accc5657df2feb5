"""Data stages on the real data: readers, verification, fetching (mirror, cache, HTTP), preparation, the CLI.

Failures are provoked with deliberately corrupted *copies* of real files written to ``tmp_path``; nothing is made up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import REPO_ROOT
from pipelines.config import DatasetConfig
from pipelines.data.catalog import RawFile, get_dataset
from pipelines.data.fetch import MIRROR_ENV, URL_ENV, fetch, sha256_file, verify
from pipelines.data.prepared import load_prepared, to_unit_range
from pipelines.data.preparers import prepare_dataset
from pipelines.data.preparers.churn import CHURN_NUMERIC
from pipelines.data.preparers.imdb import IMDB_COLUMNS, PAD_ID, build_tokenizer, clean_review
from pipelines.data.preparers.temperature import TEMPERATURE_COLUMNS, daily_series
from pipelines.data.readers import read_cifar_batch, read_csv, read_idx
from pipelines.errors import DataError, DataFormatError, DataIntegrityError, DataNotFoundError
from pipelines.stages.prepare import main as prepare_main

MNIST = {raw.name: raw for raw in get_dataset("mnist").files}
T10K_IMAGES, T10K_LABELS = MNIST["t10k-images-idx3-ubyte.gz"], MNIST["t10k-labels-idx1-ubyte.gz"]
TRAIN_IMAGES = MNIST["train-images-idx3-ubyte.gz"]
CHURN = get_dataset("churn").files[0]
TEMPERATURES = get_dataset("melbourne_temp").files[0]
CHURN_HEADER = (
    "RowNumber,CustomerId,Surname,CreditScore,Geography,Gender,Age,Tenure,Balance,NumOfProducts,"
    "HasCrCard,IsActiveMember,EstimatedSalary,Exited"
).split(",")
# Published facts about the real files (shared/data/README.md).
MNIST_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
FASHION = {raw.name: raw for raw in get_dataset("fashion_mnist").files}
CIFAR = {raw.name: raw for raw in get_dataset("cifar10").files}
CIFAR_TEST = CIFAR["test_batch.bin.gz"]
#: The first test images of CIFAR-10: cat, ship, ship, airplane, frog, frog, automobile, frog, cat, automobile.
CIFAR_FIRST_TEST_LABELS = [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
#: Per-channel (R, G, B) mean and std of the full 50,000 train images on the [0, 1] scale (shared/data/README.md).
CIFAR_TRAIN_MEAN, CIFAR_TRAIN_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests pass the mirror explicitly; a developer's environment must not redirect them."""
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.delenv(URL_ENV, raising=False)


def offline(raw: RawFile) -> RawFile:
    """``raw`` without its internet URLs (the tests never leave the machine)."""
    return dataclasses.replace(raw, urls=())


def corrupt_copy(src: Path, dest: Path, offset: int = 1000) -> Path:
    """Copy ``src`` to ``dest`` with the byte at ``offset`` flipped."""
    data = bytearray(src.read_bytes())
    data[offset] ^= 0xFF
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(bytes(data))
    return dest


def truncated_copy(src: Path, dest: Path) -> Path:
    """Copy the first half of ``src`` to ``dest``."""
    data = src.read_bytes()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data[: len(data) // 2])
    return dest


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


# ------------------------------------------------------------------------------------------------ readers


def test_read_idx_real_mnist_test_split(mirror: Path) -> None:
    images = read_idx(mirror / T10K_IMAGES.path)
    labels = read_idx(mirror / T10K_LABELS.path)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,)
    assert np.bincount(labels).tolist() == MNIST_TEST_LABEL_COUNTS
    assert images.max() == 255 and images.min() == 0


def test_read_idx_reads_the_repacked_train_images(mirror: Path) -> None:
    images = read_idx(mirror / TRAIN_IMAGES.path)
    assert images.shape == (60000, 28, 28)
    assert images.mean() / 255 == pytest.approx(0.1306604763, abs=1e-9)  # the well-known MNIST pixel mean
    assert np.bincount(read_idx(mirror / MNIST["train-labels-idx1-ubyte.gz"].path)).tolist() == MNIST_TRAIN_LABEL_COUNTS


def test_read_idx_rejects_truncated_payload(mirror: Path, tmp_path: Path) -> None:
    raw_idx = gzip.decompress((mirror / T10K_IMAGES.path).read_bytes())
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(raw_idx[: 16 + 123])
    with pytest.raises(DataFormatError, match=r"truncated: header says 10000x28x28 = 7840000 bytes, found 123") as exc:
        read_idx(path)
    assert str(path) in str(exc.value)


def test_read_idx_rejects_bad_magic(mirror: Path, tmp_path: Path) -> None:
    raw_idx = bytearray(gzip.decompress((mirror / T10K_LABELS.path).read_bytes()))
    raw_idx[0] = 0x12
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(bytes(raw_idx))
    with pytest.raises(DataFormatError, match="not an IDX file: magic number"):
        read_idx(path)


def test_read_idx_truncated_gzip_names_the_file(mirror: Path, tmp_path: Path) -> None:
    path = truncated_copy(mirror / T10K_IMAGES.path, tmp_path / T10K_IMAGES.name)
    with pytest.raises(DataFormatError, match="truncated or corrupt") as exc:
        read_idx(path)
    assert str(path) in str(exc.value)


def test_read_cifar_batch_real_test_batch(mirror: Path) -> None:
    images, labels = read_cifar_batch(mirror / CIFAR_TEST.path)
    assert images.shape == (10000, 3, 32, 32) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert labels.min() == 0 and labels.max() == 9 and np.bincount(labels).tolist() == [1000] * 10
    assert labels[:10].tolist() == CIFAR_FIRST_TEST_LABELS
    # Planes R, G, B in that order: the test set's well-known per-channel statistics.
    np.testing.assert_allclose((images / 255).mean(axis=(0, 2, 3)), [0.4942, 0.4851, 0.4504], atol=1e-4)
    np.testing.assert_allclose((images / 255).std(axis=(0, 2, 3)), [0.2467, 0.2429, 0.2616], atol=1e-4)
    record = np.frombuffer(gzip.decompress((mirror / CIFAR_TEST.path).read_bytes())[:3073], np.uint8)
    assert record[0] == labels[0] and np.array_equal(record[1:].reshape(3, 32, 32), images[0])


def test_read_cifar_batch_rejects_a_truncated_batch(mirror: Path, tmp_path: Path) -> None:
    content = gzip.decompress((mirror / CIFAR_TEST.path).read_bytes())
    path = tmp_path / CIFAR_TEST.name
    path.write_bytes(gzip.compress(content[: 100 * 3073 + 1000]))  # a valid gzip of 100 records and part of one
    with pytest.raises(
        DataFormatError,
        match=r"truncated or malformed CIFAR-10 batch: 308300 bytes is not a whole "
        r"number of 3073-byte records .*100 records and 1000 bytes left",
    ) as exc:
        read_cifar_batch(path)
    assert str(path) in str(exc.value)

    cut = truncated_copy(mirror / CIFAR_TEST.path, tmp_path / "cut" / CIFAR_TEST.name)  # the gzip stream itself cut
    with pytest.raises(DataFormatError, match="gzip stream is truncated or corrupt") as exc:
        read_cifar_batch(cut)
    assert str(cut) in str(exc.value)


def test_read_cifar_batch_rejects_a_bad_label(mirror: Path, tmp_path: Path) -> None:
    content = bytearray(gzip.decompress((mirror / CIFAR_TEST.path).read_bytes())[: 20 * 3073])
    content[5 * 3073] = 10  # record 5's label byte
    path = tmp_path / "test_batch.bin"
    path.write_bytes(bytes(content))
    with pytest.raises(DataFormatError, match=r"record 5 \(byte 15365\): label byte is 10; expected 0-9") as exc:
        read_cifar_batch(path)
    assert str(path) in str(exc.value)


def test_read_csv_churn(mirror: Path) -> None:
    frame = read_csv(mirror / CHURN.path, CHURN_HEADER)
    assert frame.shape == (10000, 14)
    assert frame["RowNumber"].tolist() == list(range(1, 10001))
    assert frame["Exited"].sum() == 2037
    assert frame["Geography"].value_counts().to_dict() == {"France": 5014, "Germany": 2509, "Spain": 2477}


def test_read_csv_imdb_gzip(mirror: Path) -> None:
    frame = read_csv(mirror / "imdb/imdb_reviews.csv.gz", IMDB_COLUMNS)
    assert len(frame) == 50000
    assert frame.groupby(["split", "sentiment"]).size().tolist() == [12500] * 4
    first_train_pos = frame[(frame["split"] == "train") & (frame["sentiment"] == "positive")].iloc[0]["review"]
    assert first_train_pos.startswith("Bromwell High is a cartoon comedy.")


def test_read_csv_rejects_wrong_header(mirror: Path) -> None:
    with pytest.raises(DataFormatError, match="expected RowNumber,CustomerId"):
        read_csv(mirror / CHURN.path, ["RowNumber", "CustomerId"] + CHURN_HEADER[3:] + ["Extra"])


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("51,15999999,Doe,600,France,Male,40,3,0,1,1,1,1000.0,0,EXTRA", "line 51: expected 14 fields .* found 15"),
        ("51,15999999,Doe,600,France", "line 51: expected 14 fields .* found 5"),
        ("51,15999999,,600,France,Male,40,3,0,1,1,1,1000.0,0", "line 51: empty value in column.* Surname"),
    ],
    ids=["too-many-fields", "too-few-fields", "empty-field"],
)
def test_read_csv_malformed_row_names_file_and_line(mirror: Path, tmp_path: Path, bad_row: str, message: str) -> None:
    lines = (mirror / CHURN.path).read_text().splitlines()[:50]  # header + 49 real rows
    path = tmp_path / "Churn_Modelling.csv"
    path.write_text("\n".join([*lines, bad_row, lines[-1]]) + "\n")
    with pytest.raises(DataFormatError, match=message) as exc:
        read_csv(path, CHURN_HEADER)
    assert str(path) in str(exc.value)


def test_read_csv_truncated_gzip_names_the_file(mirror: Path, tmp_path: Path) -> None:
    path = truncated_copy(mirror / "imdb/imdb_reviews.csv.gz", tmp_path / "imdb_reviews.csv.gz")
    with pytest.raises(DataFormatError, match="truncated or corrupt") as exc:
        read_csv(path, IMDB_COLUMNS)
    assert str(path) in str(exc.value)


# ------------------------------------------------------------------------------------------------- verify


def test_verify_accepts_canonical_and_repacked_mirror_files(mirror: Path) -> None:
    for dataset in ("mnist", "fashion_mnist", "cifar10", "churn", "imdb", "melbourne_temp"):
        for raw in get_dataset(dataset).files:
            if raw.required or (mirror / raw.path).exists():  # the mirror has CIFAR-10 train batches 1-3 of 5
                assert verify(mirror / raw.path, raw) == mirror / raw.path
    assert [raw.name for raw in CIFAR.values() if not (mirror / raw.path).exists()] == [
        "data_batch_4.bin.gz",
        "data_batch_5.bin.gz",
    ]


def test_verify_cifar_batches_by_payload(mirror: Path, tmp_path: Path) -> None:
    """Batches are pinned by their decompressed content too (the published sha256 of the canonical .bin files), so
    any gzip wrapper of a canonical batch passes, and batches 4 and 5 are pinned by their payload alone."""
    raw = CIFAR["data_batch_1.bin.gz"]
    content = gzip.decompress((mirror / raw.path).read_bytes())
    assert hashlib.sha256(content).hexdigest() == raw.payload_sha256
    rewrapped = tmp_path / raw.name
    rewrapped.write_bytes(gzip.compress(content, compresslevel=1))
    assert sha256_file(rewrapped) not in raw.sha256 and verify(rewrapped, raw) == rewrapped
    assert CIFAR["data_batch_4.bin.gz"].sha256 == () and len(CIFAR["data_batch_4.bin.gz"].payload_sha256) == 64
    with pytest.raises(DataIntegrityError, match="decompressed"):  # batch 1's content is not batch 4's
        verify(rewrapped, CIFAR["data_batch_4.bin.gz"])


def test_verify_accepts_repacked_train_images_by_payload(mirror: Path) -> None:
    path = mirror / TRAIN_IMAGES.path
    assert sha256_file(path) != TRAIN_IMAGES.sha256[0]  # not the canonical archive ...
    canonical_only = dataclasses.replace(TRAIN_IMAGES, sha256=TRAIN_IMAGES.sha256[:1])
    assert verify(path, canonical_only) == path  # ... but its decompressed payload is the canonical one


def test_verify_payload_accepts_any_gzip_wrapper_of_the_same_content(mirror: Path, tmp_path: Path) -> None:
    original = mirror / T10K_LABELS.path
    content = gzip.decompress(original.read_bytes())
    repacked = tmp_path / T10K_LABELS.name
    with open(repacked, "wb") as fh, gzip.GzipFile("t10k-labels-idx1-ubyte", "wb", 1, fh, mtime=1234567890) as gz:
        gz.write(content)
    assert sha256_file(repacked) not in T10K_LABELS.sha256

    with pytest.raises(DataIntegrityError):  # the catalog entry pins the archive bytes only
        verify(repacked, T10K_LABELS)
    with_payload = dataclasses.replace(T10K_LABELS, payload_sha256=hashlib.sha256(content).hexdigest())
    assert verify(repacked, with_payload) == repacked
    assert verify(original, with_payload) == original

    changed = bytearray(content)
    changed[-1] = (changed[-1] + 1) % 10  # one label changed: same wrapper kind, different payload
    repacked.write_bytes(gzip.compress(bytes(changed), compresslevel=1))
    with pytest.raises(DataIntegrityError, match="decompressed"):
        verify(repacked, with_payload)


def test_verify_flipped_byte_names_file_and_both_digests(mirror: Path, tmp_path: Path) -> None:
    path = corrupt_copy(mirror / CHURN.path, tmp_path / "Churn_Modelling.csv")
    with pytest.raises(DataIntegrityError) as exc:
        verify(path, CHURN)
    message = str(exc.value)
    assert str(path) in message and CHURN.sha256[0] in message and sha256_file(path) in message


def test_verify_truncated_gzip_with_payload_check(mirror: Path, tmp_path: Path) -> None:
    path = truncated_copy(mirror / TRAIN_IMAGES.path, tmp_path / TRAIN_IMAGES.name)
    with pytest.raises(DataIntegrityError, match="truncated or corrupt") as exc:
        verify(path, TRAIN_IMAGES)
    assert str(path) in str(exc.value)


# -------------------------------------------------------------------------------------------------- fetch


def test_fetch_uses_the_mirror_in_place(mirror: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert fetch(T10K_LABELS, mirror=mirror, cache_dir=cache) == mirror / T10K_LABELS.path
    assert not cache.exists()


def test_fetch_reads_the_mirror_from_the_environment(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    assert fetch(CHURN, cache_dir=tmp_path / "cache") == mirror / CHURN.path


def test_fetch_missing_everywhere(tmp_path: Path) -> None:
    empty_mirror = tmp_path / "mirror"
    empty_mirror.mkdir()
    with pytest.raises(DataNotFoundError) as exc:
        fetch(offline(CHURN), mirror=empty_mirror, cache_dir=tmp_path / "cache")
    message = str(exc.value)
    for expected in (CHURN.path, str(empty_mirror / CHURN.path), MIRROR_ENV, URL_ENV):
        assert expected in message


def test_fetch_mirror_copy_that_fails_verification_is_an_error(mirror: Path, tmp_path: Path) -> None:
    bad_mirror = tmp_path / "mirror"
    corrupt_copy(mirror / CHURN.path, bad_mirror / CHURN.path)
    with pytest.raises(DataIntegrityError, match="Churn_Modelling.csv"):
        fetch(offline(CHURN), mirror=bad_mirror, cache_dir=tmp_path / "cache")


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``directory`` over HTTP on a loopback port; yields the base URL and the list of requested paths."""
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)

        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_fetch_downloads_verifies_and_then_uses_the_cache(mirror: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    raw = offline(T10K_IMAGES)  # 1.6 MB: streamed in several 1 MiB blocks
    with serve(mirror) as (url, requests):
        path = fetch(raw, cache_dir=cache, base_url=url)
        assert path == cache / raw.path
        assert sha256_file(path) == raw.sha256[0]
        assert requests == [f"/{raw.path}"]
        assert fetch(raw, cache_dir=cache, base_url=url) == path
        assert requests == [f"/{raw.path}"]  # second fetch: served from the verified cache
    assert files_under(cache) == [path]  # no temporary files left


def test_fetch_falls_back_from_base_url_to_catalog_urls(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with serve(empty) as (base, base_requests), serve(mirror) as (good, _):
        monkeypatch.setenv(URL_ENV, base)  # the base URL from the environment answers 404
        raw = dataclasses.replace(T10K_LABELS, urls=(f"{good}/{T10K_LABELS.path}",))
        path = fetch(raw, cache_dir=tmp_path / "cache")
    assert base_requests == [f"/{T10K_LABELS.path}"]
    assert sha256_file(path) == T10K_LABELS.sha256[0]


def test_fetch_corrupt_download_leaves_nothing_in_the_cache(mirror: Path, tmp_path: Path) -> None:
    served = tmp_path / "served"
    corrupt_copy(mirror / T10K_LABELS.path, served / T10K_LABELS.path, offset=100)
    cache = tmp_path / "cache"
    with serve(served) as (url, requests):
        with pytest.raises(DataIntegrityError) as exc:
            fetch(offline(T10K_LABELS), cache_dir=cache, base_url=url)
    assert f"{url}/{T10K_LABELS.path}" in str(exc.value) and "checksum mismatch" in str(exc.value)
    assert requests == [f"/{T10K_LABELS.path}"]  # a checksum mismatch is not retried
    assert files_under(cache) == []


def test_fetch_replaces_a_corrupt_cached_copy(mirror: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    corrupt_copy(mirror / T10K_LABELS.path, cache / T10K_LABELS.path, offset=100)
    with serve(mirror) as (url, _):
        path = fetch(offline(T10K_LABELS), cache_dir=cache, base_url=url)
    assert sha256_file(path) == T10K_LABELS.sha256[0]


# ------------------------------------------------------------------------------------------------ prepare


@pytest.mark.parametrize(
    ("name", "truth"), [("logic_and", [0, 0, 0, 1]), ("logic_or", [0, 1, 1, 1]), ("logic_xor", [0, 1, 1, 0])]
)
def test_prepare_logic_gates(name: str, truth: list[int]) -> None:
    arrays, meta, extra = prepare_dataset(name, DatasetConfig(), seed=0)
    assert set(arrays) == {"train", "val", "test"}
    for x, y in arrays.values():
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
        assert y.tolist() == truth
    assert meta["input_shape"] == [2] and meta["num_classes"] == 2 and extra == {}


def test_prepare_mnist(mirror: Path) -> None:
    arrays, meta, _ = prepare_dataset("mnist", DatasetConfig(val_fraction=0.1, max_train_samples=500), 7, mirror=mirror)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = arrays["train"], arrays["val"], arrays["test"]
    assert x_train.shape == (500, 1, 28, 28) and x_val.shape == (6000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= x_test.min() and x_test.max() == 1.0
    assert np.bincount(y_test).tolist() == MNIST_TEST_LABEL_COUNTS  # the official test split, untouched
    assert np.array_equal(x_test[0, 0], read_idx(mirror / T10K_IMAGES.path)[0] / np.float32(255))
    assert np.bincount(y_val, minlength=10).min() >= 500  # stratified: ~600 per class
    assert np.bincount(y_train, minlength=10).min() >= 40  # stratified subset: ~50 per class
    assert meta["normalization"] == {"method": "min-max", "min": 0, "max": 255}
    assert meta["input_shape"] == [1, 28, 28] and meta["num_classes"] == 10 and meta["seed"] == 7
    assert "LeCun" in meta["citation"]


def test_prepare_fashion_mnist(mirror: Path) -> None:
    arrays, meta, _ = prepare_dataset(
        "fashion_mnist", DatasetConfig(val_fraction=0.1, max_train_samples=500), 7, mirror=mirror
    )
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = arrays["train"], arrays["val"], arrays["test"]
    assert x_train.shape == (500, 1, 28, 28) and x_val.shape == (6000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= x_test.min() and x_test.max() == 1.0
    assert np.bincount(y_test).tolist() == [1000] * 10  # the official test split, untouched
    assert x_test.mean() == pytest.approx(0.2868493, abs=1e-6)  # its published pixel mean
    first = read_idx(mirror / FASHION["t10k-images-idx3-ubyte.gz"].path)[0]
    assert np.array_equal(x_test[0, 0], first / np.float32(255))
    assert np.bincount(y_val, minlength=10).tolist() == [600] * 10  # stratified: 6,000 per class in train
    assert np.bincount(y_train, minlength=10).tolist() == [50] * 10
    assert meta["normalization"] == {"method": "min-max", "min": 0, "max": 255}
    assert meta["classes"][:2] == ["T-shirt/top", "Trouser"] and meta["classes"][-1] == "Ankle boot"
    assert meta["input_shape"] == [1, 28, 28] and meta["num_classes"] == 10 and "Xiao" in meta["citation"]
    assert get_dataset("fashion_mnist").flip_safe and not get_dataset("mnist").flip_safe


@pytest.fixture(scope="module")
def cifar_prepared(mirror: Path):
    return prepare_dataset("cifar10", DatasetConfig(val_fraction=0.1, max_train_samples=1000), 42, mirror=mirror)


def test_prepare_cifar10_splits(mirror: Path, cifar_prepared) -> None:
    arrays, meta, extra = cifar_prepared
    assert {s: arrays[s][0].shape for s in arrays} == {
        "train": (1000, 3, 32, 32),
        "val": (3000, 3, 32, 32),
        "test": (10000, 3, 32, 32),
    }
    assert all(x.dtype == np.float32 and y.dtype == np.int64 for x, y in arrays.values()) and extra == {}
    assert meta["train_batches"] == [1, 2, 3] and meta["train_images_available"] == 30000
    assert meta["raw_files"] == [f"cifar10/data_batch_{k}.bin.gz" for k in (1, 2, 3)] + ["cifar10/test_batch.bin.gz"]
    assert meta["input_shape"] == [3, 32, 32] and meta["classes"][0] == "airplane" and meta["classes"][-1] == "truck"
    test_images, test_labels = read_cifar_batch(mirror / CIFAR_TEST.path)
    assert np.array_equal(arrays["test"][1], test_labels)  # the official test batch, in order
    assert np.bincount(arrays["val"][1]).min() >= 280  # stratified: ~300 per class
    assert np.bincount(arrays["train"][1]).min() >= 90

    # Back to pixels: every split holds whole 8-bit values, and the splits are disjoint sets of real train images.
    pixels = {s: to_unit_range(x, meta) * 255 for s, (x, _) in arrays.items()}
    for values in pixels.values():
        np.testing.assert_allclose(values, np.round(values), atol=2e-3)
    np.testing.assert_array_equal(np.round(pixels["test"]).astype(np.uint8), test_images)
    train_images = np.concatenate(
        [read_cifar_batch(mirror / CIFAR[f"data_batch_{k}.bin.gz"].path)[0] for k in (1, 2, 3)]
    )
    known = {image.tobytes() for image in train_images}  # 30,000 distinct images
    keys = {
        s: {np.round(pixels[s][i]).astype(np.uint8).tobytes() for i in range(len(pixels[s]))} for s in ("train", "val")
    }
    assert len(keys["train"]) == 1000 and len(keys["val"]) == 3000
    assert keys["train"] <= known and keys["val"] <= known and not keys["train"] & keys["val"]


def test_prepare_cifar10_standardises_with_train_statistics(cifar_prepared) -> None:
    arrays, meta, _ = cifar_prepared
    norm = meta["normalization"]
    assert norm["method"] == "per-channel standardization" and norm["fitted_on"] == "train"
    train_pixels = to_unit_range(arrays["train"][0], meta).astype(np.float64)
    np.testing.assert_allclose(norm["mean"], train_pixels.mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(norm["std"], train_pixels.std(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(norm["mean"], CIFAR_TRAIN_MEAN, atol=0.02)  # 1,000 images: close to the known values
    np.testing.assert_allclose(norm["std"], CIFAR_TRAIN_STD, atol=0.02)
    x_train = arrays["train"][0].astype(np.float64)
    np.testing.assert_allclose(x_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(axis=(0, 2, 3)), 1, atol=1e-5)
    for split in ("val", "test"):  # scaled with the train statistics, not their own
        x = arrays[split][0].astype(np.float64)
        assert np.abs(x.mean(axis=(0, 2, 3))).max() > 1e-3 and np.abs(x.std(axis=(0, 2, 3)) - 1).max() > 1e-3


def test_prepare_cifar10_uses_whichever_train_batches_exist(mirror: Path, tmp_path: Path) -> None:
    partial = tmp_path / "mirror"
    (partial / "cifar10").mkdir(parents=True)
    (partial / CIFAR_TEST.path).symlink_to(mirror / CIFAR_TEST.path)
    with pytest.raises(DataNotFoundError, match="none of the train batches .* at least one is required"):
        prepare_dataset("cifar10", DatasetConfig(max_train_samples=100), 42, mirror=partial)
    batch2 = CIFAR["data_batch_2.bin.gz"].path
    (partial / batch2).symlink_to(mirror / batch2)
    arrays, meta, _ = prepare_dataset(
        "cifar10", DatasetConfig(val_fraction=0.1, max_train_samples=100), 42, mirror=partial
    )
    assert meta["train_batches"] == [2] and meta["train_images_available"] == 10000
    assert {s: len(y) for s, (_, y) in arrays.items()} == {"train": 100, "val": 1000, "test": 10000}


@pytest.mark.parametrize(
    ("dataset", "name"), [("fashion_mnist", "train-images-idx3-ubyte.gz"), ("cifar10", "data_batch_1.bin.gz")]
)
def test_prepare_image_datasets_verify_the_sha256(mirror: Path, tmp_path: Path, dataset: str, name: str) -> None:
    """One pixel changed in a well-formed gzip copy of the dataset's first file: its checksum and payload checksum
    both fail, and prepare stops there, naming the file and the expected digests."""
    raw = {r.name: r for r in get_dataset(dataset).files}[name]
    assert get_dataset(dataset).files[0] == raw  # fetched first: nothing else is looked for (no download attempted)
    content = bytearray(gzip.decompress((mirror / raw.path).read_bytes()))
    content[5000] ^= 0xFF
    bad = tmp_path / "mirror" / raw.path
    bad.parent.mkdir(parents=True)
    bad.write_bytes(gzip.compress(bytes(content), compresslevel=1))
    with pytest.raises(DataIntegrityError) as exc:
        prepare_dataset(dataset, DatasetConfig(max_train_samples=100), 42, mirror=tmp_path / "mirror")
    message = str(exc.value)
    assert str(bad) in message and raw.sha256[0] in message and raw.payload_sha256 in message


def test_prepare_churn(mirror: Path) -> None:
    arrays, meta, _ = prepare_dataset("churn", DatasetConfig(val_fraction=0.1, test_fraction=0.2), 42, mirror=mirror)
    names = meta["feature_names"]
    assert not {"RowNumber", "CustomerId", "Surname", "Exited"} & set(names)
    assert {len(arrays[s][0]) for s in arrays} == {7200, 800, 2000}
    assert meta["input_shape"] == [len(names)] == [12]
    geo = [names.index(f"Geography_{c}") for c in ("France", "Germany", "Spain")]
    numeric = meta["numeric_features"]
    assert [names[i] for i in numeric] == list(CHURN_NUMERIC)
    for x, y in arrays.values():
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert np.isin(x[:, geo], [0, 1]).all() and (x[:, geo].sum(axis=1) == 1).all()  # one-hot
        assert np.isin(x[:, names.index("Gender")], [0, 1]).all()
        assert y.mean() == pytest.approx(0.2037, abs=0.01)  # stratified on Exited
    train = arrays["train"][0][:, numeric]
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0), 1, atol=1e-4)
    for split in ("val", "test"):  # standardised with the train statistics, not their own
        assert np.abs(arrays[split][0][:, numeric].mean(axis=0)).max() > 1e-3
    age = meta["normalization"]["features"]["Age"]
    ages = arrays["test"][0][:, names.index("Age")] * age["std"] + age["mean"]
    np.testing.assert_allclose(ages, np.round(ages), atol=1e-3)  # invertible back to whole years


def test_prepare_imdb_small(mirror: Path) -> None:
    from tokenizers import Tokenizer

    config = DatasetConfig(val_fraction=0.1, max_train_samples=400, vocab_size=100_000, seq_len=64)
    arrays, meta, extra = prepare_dataset("imdb", config, 42, mirror=mirror)
    assert {s: arrays[s][0].shape for s in arrays} == {"train": (400, 64), "val": (2500, 64), "test": (25000, 64)}
    assert all(x.dtype == np.int64 and y.dtype == np.int64 for x, y in arrays.values())
    assert np.bincount(arrays["test"][1]).tolist() == [12500, 12500]
    assert meta["pad_id"] == PAD_ID == 0 and meta["seq_len"] == 64 and meta["input_shape"] == [64]

    tokenizer = Tokenizer.from_str(extra["tokenizer.json"].decode())
    assert tokenizer.token_to_id("[PAD]") == 0 and meta["vocab_size"] == tokenizer.get_vocab_size()
    # Fitted on the 400 train reviews only: the vocabulary holds every train token (no [UNK] in train) and is
    # far smaller than the whole corpus', so held-out reviews do contain unknown tokens.
    assert meta["vocab_size"] < 20_000
    assert not (arrays["train"][0] == meta["unk_id"]).any()
    assert (arrays["val"][0] == meta["unk_id"]).any() and (arrays["test"][0] == meta["unk_id"]).any()

    # 'pre' padding: zeros only as a prefix; 'pre' truncation: the last seq_len tokens are kept.
    for x, _ in arrays.values():
        nonzero = x != PAD_ID
        assert (np.diff(nonzero.astype(np.int8), axis=1) >= 0).all()
    frame = read_csv(mirror / "imdb/imdb_reviews.csv.gz", IMDB_COLUMNS)
    test_reviews = [clean_review(t) for t in frame.loc[frame["split"] == "test", "review"]]
    sample = list(range(100)) + [i for i, t in enumerate(test_reviews) if not t.isascii()][:100]
    encoded = np.array([e.ids for e in tokenizer.encode_batch([test_reviews[i] for i in sample])])
    np.testing.assert_array_equal(arrays["test"][0][sample], encoded)  # tokenizer.json alone reproduces x
    tokenizer.no_truncation()
    tokenizer.no_padding()
    full = [tokenizer.encode(test_reviews[i]).ids for i in sample]
    long_rows = [(row, ids) for row, ids in zip(sample, full) if len(ids) > 64]
    short_rows = [(row, ids) for row, ids in zip(sample, full) if len(ids) < 64]
    assert long_rows and short_rows
    for row, ids in long_rows:
        assert arrays["test"][0][row].tolist() == ids[-64:]
    for row, ids in short_rows:
        assert arrays["test"][0][row].tolist() == [PAD_ID] * (64 - len(ids)) + ids

    again, meta_again, extra_again = prepare_dataset("imdb", config, 42, mirror=mirror)
    for split in arrays:
        np.testing.assert_array_equal(arrays[split][0], again[split][0])
        np.testing.assert_array_equal(arrays[split][1], again[split][1])
    assert extra_again == extra and meta_again == meta


def test_tokenizer_vocab_size_is_capped(mirror: Path) -> None:
    frame = read_csv(mirror / "imdb/imdb_reviews.csv.gz", IMDB_COLUMNS, nrows=300)
    tokenizer = build_tokenizer([clean_review(t) for t in frame["review"]], vocab_size=50, seq_len=16)
    assert tokenizer.get_vocab_size() == 50
    assert tokenizer.token_to_id("[PAD]") == 0 and tokenizer.token_to_id("[UNK]") == 1
    assert "br" not in tokenizer.get_vocab()  # the <br /> tags were removed, not tokenised


# ------------------------------------------------------------------------------------------ melbourne_temp

#: The melbourne_temp settings of params.yaml: 14 days per window, the last 20% of windows test, 12.5% of the rest val.
TEMP_CONFIG = DatasetConfig(window=14, val_fraction=0.125, test_fraction=0.2)


@pytest.fixture(scope="module")
def temp_series(mirror: Path) -> pd.Series:
    """The raw daily minima (°C) indexed by date, read with plain pandas (independently of the code under test)."""
    frame = pd.read_csv(mirror / TEMPERATURES.path)
    return pd.Series(frame["Temp"].to_numpy(), index=pd.to_datetime(frame["Date"]))


@pytest.fixture(scope="module")
def temp_prepared(mirror: Path):
    return prepare_dataset("melbourne_temp", TEMP_CONFIG, 42, mirror=mirror)


def expected_target_dates(series: pd.Series, window: int) -> list[pd.Timestamp]:
    """Every date whose ``window`` previous calendar days are all in the file, in order."""
    dates = set(series.index)
    return [day for day in series.index if all(day - pd.Timedelta(days=lag) in dates for lag in range(1, window + 1))]


def test_read_csv_melbourne_temperatures(mirror: Path) -> None:
    frame = read_csv(mirror / TEMPERATURES.path, TEMPERATURE_COLUMNS)
    days, values = daily_series(frame, mirror / TEMPERATURES.path)
    assert len(days) == 3650 and str(days[0]) == "1981-01-01" and str(days[-1]) == "1990-12-31"
    assert values[:4].tolist() == [20.7, 17.9, 18.8, 14.6] and values[-1] == 13.0
    assert values.min() == 0.0 and values.max() == 26.3  # shared/data/README.md


def test_melbourne_temp_prepare_verifies_the_sha256(mirror: Path, tmp_path: Path) -> None:
    bad_mirror = tmp_path / "mirror"
    corrupt_copy(mirror / TEMPERATURES.path, bad_mirror / TEMPERATURES.path)
    with pytest.raises(DataIntegrityError) as exc:
        prepare_dataset("melbourne_temp", TEMP_CONFIG, 42, mirror=bad_mirror)
    message = str(exc.value)
    assert str(bad_mirror / TEMPERATURES.path) in message and TEMPERATURES.sha256[0] in message


@pytest.mark.parametrize(
    ("line", "replacement", "message"),
    [
        ('"1981-01-05",15.8', '"1981-01-05",?15.8', r"line 6: Temp is '\?15.8'; expected a finite number"),
        ('"1981-01-05",15.8', '"1981-01-03",15.8', r"line 6: Date is '1981-01-03'; expected a date after"),
        ('"1981-01-05",15.8', '"1981-13-05",15.8', r"line 6: Date is '1981-13-05'; expected a date YYYY-MM-DD"),
    ],
    ids=["temperature", "order", "date"],
)
def test_daily_series_names_the_bad_line(
    mirror: Path, tmp_path: Path, line: str, replacement: str, message: str
) -> None:
    text = (mirror / TEMPERATURES.path).read_text()
    assert line in text
    path = tmp_path / TEMPERATURES.name
    path.write_text(text.replace(line, replacement, 1))
    with pytest.raises(DataFormatError, match=message) as exc:
        daily_series(read_csv(path, TEMPERATURE_COLUMNS), path)
    assert str(path) in str(exc.value)


def test_prepare_melbourne_temp_windows_are_the_raw_series(temp_prepared, temp_series: pd.Series) -> None:
    arrays, meta, extra = temp_prepared
    assert meta["task"] == "regression" and meta["modality"] == "tabular" and extra == {}
    assert meta["input_shape"] == [14] and meta["window"] == 14
    assert meta["feature_names"] == [f"t-{lag}" for lag in range(14, 0, -1)]  # oldest day first
    x = np.concatenate([arrays[s][0] for s in ("train", "val", "test")])
    y = np.concatenate([arrays[s][1] for s in ("train", "val", "test")])
    assert x.dtype == np.float32 and y.dtype == np.float32
    stats = meta["normalization"]["features"]
    mean = np.array([stats[name]["mean"] for name in meta["feature_names"]])
    std = np.array([stats[name]["std"] for name in meta["feature_names"]])
    # Windows across the two missing dates (1984-12-31, 1988-12-31) are dropped: 14 per gap.
    targets = expected_target_dates(temp_series, 14)
    assert meta["missing_dates"] == ["1984-12-31", "1988-12-31"]
    assert len(targets) == len(y) == 3650 - 14 - 28 and meta["dropped_windows"] == 28
    assert pd.Timestamp("1985-01-14") not in targets and pd.Timestamp("1985-01-15") in targets
    for k, day in enumerate(targets):  # row k: the 14 days before its target, then the target day itself, in °C
        past = temp_series[day - pd.Timedelta(days=14) : day - pd.Timedelta(days=1)].to_numpy()
        np.testing.assert_allclose(x[k] * std + mean, past, atol=1e-4)
        assert y[k] == np.float32(temp_series[day])
    # The first sample: the file's first 14 days predict 1981-01-15.
    np.testing.assert_allclose(arrays["train"][0][0] * std + mean, temp_series.iloc[:14].to_numpy(), atol=1e-4)
    assert arrays["train"][1][0] == np.float32(temp_series["1981-01-15"])


def test_prepare_melbourne_temp_splits_are_chronological_and_disjoint(
    mirror: Path, temp_prepared, temp_series: pd.Series
) -> None:
    arrays, meta, _ = temp_prepared
    sizes = {split: len(arrays[split][1]) for split in ("train", "val", "test")}
    assert sizes == {"train": 2525, "val": 361, "test": 722}  # 722 = ceil(0.2 * 3608), 361 = ceil(0.125 * 2886)
    targets = expected_target_dates(temp_series, 14)
    bounds = np.cumsum([0, sizes["train"], sizes["val"], sizes["test"]])
    dates = {split: targets[bounds[i] : bounds[i + 1]] for i, split in enumerate(("train", "val", "test"))}
    assert meta["split_dates"] == {split: [str(d[0].date()), str(d[-1].date())] for split, d in dates.items()}
    # Disjoint and in time order. A window precedes its target, so the latest day any train sample sees is the last
    # train target: no val or test target reaches the training data.
    assert dates["train"][-1] < dates["val"][0] and dates["val"][-1] < dates["test"][0]
    assert meta["split_dates"]["test"] == ["1988-12-25", "1990-12-31"]

    latest = prepare_dataset(
        "melbourne_temp", TEMP_CONFIG.model_copy(update={"max_train_samples": 500}), 42, mirror=mirror
    )
    assert len(latest.arrays["train"][1]) == 500  # the 500 windows just before val, not a random subset
    np.testing.assert_array_equal(latest.arrays["train"][1], arrays["train"][1][-500:])
    np.testing.assert_array_equal(latest.arrays["test"][1], arrays["test"][1])


def test_prepare_melbourne_temp_standardises_with_train_statistics(temp_prepared, temp_series: pd.Series) -> None:
    arrays, meta, _ = temp_prepared
    assert meta["normalization"]["method"] == "standard" and meta["normalization"]["fitted_on"] == "train"
    targets = expected_target_dates(temp_series, 14)[: len(arrays["train"][1])]
    raw_train = np.stack(
        [temp_series[day - pd.Timedelta(days=14) : day - pd.Timedelta(days=1)].to_numpy() for day in targets]
    )
    for j, name in enumerate(meta["feature_names"]):
        stats = meta["normalization"]["features"][name]
        assert stats["mean"] == pytest.approx(raw_train[:, j].mean())
        assert stats["std"] == pytest.approx(raw_train[:, j].std())
    np.testing.assert_allclose(arrays["train"][0].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(arrays["train"][0].std(axis=0), 1, atol=1e-4)
    for split in ("val", "test"):  # scaled with the train statistics, not their own
        assert np.abs(arrays[split][0].mean(axis=0)).min() > 0.05
    # The target is not scaled: degrees Celsius, as in the file.
    assert arrays["test"][1].min() >= 0.0 and arrays["test"][1].max() <= 26.3
    assert arrays["train"][1].mean() == pytest.approx(raw_train[:, -1].mean(), abs=0.1)


def test_prepare_melbourne_temp_window_too_long_for_the_splits(mirror: Path) -> None:
    with pytest.raises(DataError, match="no sample for .*smaller window"):
        prepare_dataset("melbourne_temp", TEMP_CONFIG.model_copy(update={"window": 3640}), 42, mirror=mirror)


# ----------------------------------------------------------------------------------------- stage (CLI)


def test_prepare_stage_writes_the_dataset(mirror: Path, tmp_path: Path) -> None:
    assert prepare_main(["mnist", "--profile", "tiny", "--out", str(tmp_path), "--mirror", str(mirror)]) == 0
    data = load_prepared(tmp_path / "mnist")
    assert data.meta["splits"] == {"train": 512, "val": 6000, "test": 10000}
    assert data.x["train"].shape == (512, 1, 28, 28) and data.meta["x_dtype"] == "float32"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist"]


def test_prepare_stage_unknown_dataset_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert prepare_main(["no_such_dataset", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no_such_dataset" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_prepare_stage_subprocess_corrupt_mirror_exits_2(mirror: Path, tmp_path: Path) -> None:
    bad_mirror = tmp_path / "mirror"
    corrupt_copy(mirror / CHURN.path, bad_mirror / CHURN.path)
    out = tmp_path / "prepared"
    env = {k: v for k, v in os.environ.items() if k not in (MIRROR_ENV, URL_ENV)}
    env[MIRROR_ENV] = str(bad_mirror)
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.stages.prepare", "churn", "--out", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and str(bad_mirror / CHURN.path) in lines[0] and "checksum" in lines[0]
    assert files_under(out) == [] and not (out / "churn").exists()


def test_prepare_module_does_not_import_torch() -> None:
    code = "import sys, pipelines.stages.prepare, pipelines.stages.augment; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_no_hard_coded_shared_path() -> None:
    files = [REPO_ROOT / "pipelines" / f"{m}.py" for m in ("data/fetch", "data/readers", "stages/prepare", "errors")]
    files += [REPO_ROOT / "pipelines" / "stages" / "augment.py", *(REPO_ROOT / "pipelines/data/preparers").glob("*.py")]
    for path in files:
        assert "../shared" not in path.read_text(), path


def test_every_dataset_is_registered_by_its_own_module_and_names_an_importable_preparer() -> None:
    from pipelines.data.catalog import CATALOG, MODULES

    assert MODULES["imdb"] == "pipelines.data.datasets.imdb"
    assert MODULES["cifar10_5to9"] == MODULES["cifar10"] == "pipelines.data.datasets.cifar10"
    for name, entry in CATALOG.items():
        assert MODULES[name].startswith("pipelines.data.datasets."), name
        assert callable(entry.load_preparer()), name
        json.dumps(entry.record())  # the resolve stage writes it


def test_a_dataset_registered_twice_or_without_a_preparer_is_refused() -> None:
    from dataclasses import replace

    from pipelines.data.catalog import CATALOG, register

    churn = get_dataset("churn")
    with pytest.raises(ValueError, match="dataset 'churn' is registered twice"):
        register(replace(churn, license="another"))
    with pytest.raises(ValueError, match="dataset 'churn_nowhere' .*set preparer='module:function'"):
        register(replace(churn, name="churn_nowhere", preparer=""))
    assert CATALOG["churn"] == churn and "churn_nowhere" not in CATALOG
