"""``source: {format: image_folder}``: one subfolder per class of PNG, JPEG or PGM images (torchvision's
``ImageFolder`` layout), and the built-in AT&T faces (``att_faces``), which are that layout.

Images are read with Pillow in sorted file order, converted to grayscale (``channels: 1``) or RGB (``3``), resized
to ``image_size`` ``[H, W]`` (bilinear) when given, and min-max scaled like MNIST (pixel / 255, in [0, 1]). Classes
are the subfolder names in natural order (``s2`` before ``s10``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pipelines.config import DatasetConfig
from pipelines.config.sources import IMAGE_SUFFIXES, ImageFolderSource, resolve_path
from pipelines.data.catalog import get_dataset
from pipelines.data.fetch import mirror_root
from pipelines.data.preparers.common import (
    Prepared,
    base_meta,
    per_class_indices,
    subsample_indices,
    test_indices,
)
from pipelines.data.preparers.idx import scale_images
from pipelines.data.preparers.sources import (
    check_class_counts,
    natural_key,
    random_splits,
    source_meta,
    source_reader,
)
from pipelines.errors import DataError, DataFormatError, DataIntegrityError, DataNotFoundError

#: Pillow modes that are grayscale already (``channels`` inferred as 1 when every image has one of them).
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def list_images(folder: Path) -> dict[str, list[Path]]:
    """``{class name: image files}`` of a folder with one subfolder per class, both in natural order.

    Raises:
        DataFormatError: the folder has no class subfolders, or a class folder holds no image (naming it).
    """
    classes = sorted(
        (d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: natural_key(d.name)
    )
    if not classes:
        raise DataFormatError(f"{folder}: no class subfolders; expected <class>/<image> files (png, jpg, pgm)")
    files = {}
    for d in classes:
        images = sorted(
            (f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda f: natural_key(f.name),
        )
        if not images:
            raise DataFormatError(f"{d}: class folder holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files[d.name] = images
    return files


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataFormatError(f"{path}: unreadable image ({exc})") from None
    return image


def read_images(files: list[Path], image_size: tuple[int, int] | None, channels: int | None) -> tuple[np.ndarray, int]:
    """Read ``files`` into uint8 (N, C, H, W); returns the array and C.

    Raises:
        DataFormatError: an unreadable image, or (without ``image_size``) one whose size differs from the first's.
    """
    from PIL import Image

    images = [_open(path) for path in files]
    if channels is None:
        channels = 1 if all(image.mode in GRAY_MODES for image in images) else 3
    size = None if image_size is None else (image_size[1], image_size[0])  # Pillow sizes are (W, H)
    first = images[0].size
    out = []
    for path, image in zip(files, images):
        image = image.convert("L" if channels == 1 else "RGB")
        if size is not None and image.size != size:
            image = image.resize(size, Image.Resampling.BILINEAR)
        elif size is None and image.size != first:
            raise DataFormatError(
                f"{path}: {image.size[0]}x{image.size[1]} pixels, but {files[0].name} is {first[0]}x{first[1]}; "
                f"set source.image_size: [H, W] to resize"
            )
        array = np.asarray(image, dtype=np.uint8)
        out.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
    return np.stack(out), channels


def _labelled(files: dict[str, list[Path]], classes: list[str]) -> tuple[list[Path], np.ndarray]:
    paths = [path for name in files for path in files[name]]
    labels = np.concatenate([np.full(len(files[name]), classes.index(name), dtype=np.int64) for name in files])
    return paths, labels


def image_folder_arrays(
    folder: Path, source: ImageFolderSource, config: DatasetConfig, seed: int
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str], int]:
    """The splits of an image folder, ``{split: (x float32 (N, C, H, W) in [0, 1], y int64)}``, its classes and C.

    Raises:
        DataNotFoundError: ``split_by: folder`` and a ``train/``, ``val/`` or ``test/`` folder is missing.
        DataFormatError, DataError: see :func:`list_images`, :func:`read_images`, and a class too small to split.
    """
    if source.split_by == "folder":
        parts = {}
        for split in ("train", "val", "test"):
            if not (folder / split).is_dir():
                raise DataNotFoundError(
                    f"{folder / split}: no such folder (split_by: folder needs train/, val/, test/)"
                )
            parts[split] = list_images(folder / split)
        classes = list(parts["train"])
        for split in ("val", "test"):
            unknown = sorted(set(parts[split]) - set(classes), key=natural_key)
            if unknown:
                raise DataFormatError(f"{folder / split}: class folder(s) {unknown} are not in {folder / 'train'}")
        labelled = {split: _labelled(files, classes) for split, files in parts.items()}
        y_train = labelled["train"][1]
        train = per_class_indices(y_train, config.max_train_per_class, seed)
        train = np.sort(train[subsample_indices(y_train[train], config.max_train_samples, seed)])
        index = {
            "train": train,  # train/ is all train: val is val/, and only the train subsets apply
            "val": np.arange(len(labelled["val"][1])),
            "test": test_indices(labelled["test"][1], config, seed),
        }
        paths = {split: [labelled[split][0][i] for i in index[split]] for split in index}
        ys = {split: labelled[split][1][index[split]] for split in index}
    else:
        files = list_images(folder)
        classes = list(files)
        all_paths, y = _labelled(files, classes)
        check_class_counts(y, classes, 3, str(folder))
        index = random_splits(y, config, seed)
        paths = {split: [all_paths[i] for i in np.sort(idx)] for split, idx in index.items()}
        ys = {split: y[np.sort(idx)] for split, idx in index.items()}
    channels: int | None = source.channels
    arrays = {}
    for split in ("train", "val", "test"):
        images, channels = read_images(paths[split], source.image_size, channels)
        arrays[split] = (scale_images(images), ys[split])
    shapes = {split: x.shape[1:] for split, (x, _) in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise DataFormatError(f"{folder}: the splits' images differ in size {shapes}; set source.image_size: [H, W]")
    return arrays, classes, int(channels or 1)


@source_reader("image_folder")
def prepare_image_folder(
    name: str, source: ImageFolderSource, config: DatasetConfig, seed: int, root: Path
) -> Prepared:
    """A user image folder: x float32 (N, C, H, W) in [0, 1], y int64 class indices in ``meta.classes`` order."""
    arrays, classes, channels = image_folder_arrays(resolve_path(source.path, root), source, config, seed)
    meta = source_meta(name, source, source.known_task(), seed, root)
    meta.update(
        classes=classes,
        num_classes=len(classes),
        input_shape=list(arrays["train"][0].shape[1:]),
        channels=channels,
        split_method=source.split_by,
        normalization={"method": "min-max", "min": 0, "max": 255},
    )
    return Prepared(arrays, meta, {})


def folder_digest(folder: Path, files: list[Path]) -> str:
    """sha256 of the ``sha256sum`` listing of ``files`` (``<digest>  <path relative to folder>`` lines, in the
    given order): one digest that pins a whole folder (``shared/data/README.md``, att_faces)."""
    listing = "".join(
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(folder).as_posix()}\n" for path in files
    )
    return hashlib.sha256(listing.encode()).hexdigest()


def prepare_att_faces(
    config: DatasetConfig, seed: int, *, mirror: str | Path | None = None, name: str = "att_faces"
) -> Prepared:
    """The AT&T (ORL) faces, read by the ``image_folder`` reader: x float32 (400 split, 1, 112, 92) in [0, 1],
    y int64 subject 0-39 (``s1`` .. ``s40``); a seeded split stratified by subject.

    The folder comes from the data mirror only (the distribution has no per-file download) and is verified by its
    combined digest (:func:`folder_digest`).

    Raises:
        DataNotFoundError: no mirror, or no ``att_faces/`` in it.
        DataIntegrityError: a file is missing or differs (the combined digest does not match).
    """
    entry = get_dataset(name)
    root = mirror_root(mirror)
    if root is None or not (root / "att_faces").is_dir():
        raise DataNotFoundError(
            "att_faces/: not in the data mirror (set DEEPNOTES_DATA_MIRROR or --mirror to a folder holding it); "
            "the distribution has no per-file download"
        )
    folder = root / "att_faces"
    files = [path for paths in list_images(folder).values() for path in paths]
    assert entry.folder_sha256 is not None
    if len(files) != 400 or folder_digest(folder, files) != entry.folder_sha256:
        raise DataIntegrityError(
            f"{folder}: {len(files)} images whose combined sha256 is not {entry.folder_sha256} "
            "(shared/data/README.md, att_faces): a file is missing, extra or changed"
        )
    source = ImageFolderSource(format="image_folder", path=str(folder), channels=1)
    try:
        arrays, classes, _ = image_folder_arrays(folder, source, config, seed)
    except DataError as exc:
        raise DataError(f"dataset 'att_faces': {exc}") from None
    meta = base_meta(entry, seed)
    meta.update(
        raw_files=["att_faces/s1/1.pgm ... att_faces/s40/10.pgm"],
        classes=classes,
        num_classes=len(classes),
        input_shape=list(arrays["train"][0].shape[1:]),
        channels=1,
        normalization={"method": "min-max", "min": 0, "max": 255},
    )
    return Prepared(arrays, meta, {})
