"""CIFAR-10 (Krizhevsky 2009), binary version, and the two halves of its classes for transfer learning (notes
001, "Transfer learning": pretrain on one half, fine-tune on the other with few labels,
``datasets.<name>.max_train_per_class``); :mod:`pipelines.data.preparers.cifar10`."""

from __future__ import annotations

from dataclasses import replace

from pipelines.data.catalog import DatasetEntry, raw_file, register

#: sha256 of the decompressed CIFAR-10 binary batches: the mirror's payloads, equal to the list published for the
#: files of ``cifar-10-binary.tar.gz`` (GitHub ankane/torchvision-ruby, lib/torchvision/datasets/cifar10.rb, commit
#: 9bf22501fd5c3d782244bbc8409a95d9dadb3808), which also gives batches 4 and 5.
_PAYLOADS = {
    "data_batch_1.bin": "cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5",
    "data_batch_2.bin": "a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed",
    "data_batch_3.bin": "bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67",
    "data_batch_4.bin": "014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48",
    "data_batch_5.bin": "755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add",
    "test_batch.bin": "8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b",
}
#: sha256 of the mirror's gzip files (each batch gzipped on its own, level 9, no name, mtime 0). Batches 4 and 5 are
#: not in the mirror, so only their payload is pinned.
_GZ = {
    "data_batch_1.bin": "f27c826404183bf6fd3823fb45744b4f7fd83201dfa6253c32e8d2f8e60e8f1b",
    "data_batch_2.bin": "203422e12acce31f5c14e9eaf82d43c4f17b0c7c5db6b2d08e1e6d927aaffc5d",
    "data_batch_3.bin": "cc4339a09c7d4d196c71bc92812cf7ff9c74b82a2673ab4aae4a4ef02212e65f",
    "test_batch.bin": "27ae0e1ce42c156c20a7e87f67dc90a50876ca6a755a60c608fc646a4ec4b937",
}


def _batch(name: str, *, required: bool):
    # The canonical distribution is one tarball (cifar-10-binary.tar.gz), not per-file downloads: no URLs here, so
    # only the mirror or $DEEPNOTES_DATA_URL can serve the batches.
    sha = (_GZ[name],) if name in _GZ else ()
    return raw_file("cifar10", (), f"{name}.gz", *sha, payload=_PAYLOADS[name], required=required)


CIFAR10 = DatasetEntry(
    "cifar10",
    "multiclass",
    "cifar-bin-gz",
    "image",
    files=(
        # Train batches are optional: whichever are found are used (the mirror holds 1-3 of 5).
        *(_batch(f"data_batch_{k}.bin", required=False) for k in range(1, 6)),
        _batch("test_batch.bin", required=True),
    ),
    source="https://www.cs.toronto.edu/~kriz/cifar.html (binary version)",
    citation="Krizhevsky (2009), Learning Multiple Layers of Features from Tiny Images, technical report, "
    "University of Toronto",
    license="no formal license; cite the report",
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    flip_safe=True,
    preparer="pipelines.data.preparers.cifar10:prepare_cifar10",
)


def _subset(name: str, classes: tuple[int, ...], role: str) -> DatasetEntry:
    return replace(
        CIFAR10,
        name=name,
        source=f"{CIFAR10.source}; classes {', '.join(CIFAR10.classes[c] for c in classes)} only ({role})",
        classes=tuple(CIFAR10.classes[c] for c in classes),
        base="cifar10",
        class_subset=classes,
    )


register(
    CIFAR10,
    _subset("cifar10_0to4", (0, 1, 2, 3, 4), "the source task of transfer learning"),
    _subset("cifar10_5to9", (5, 6, 7, 8, 9), "the target task of transfer learning"),
)
