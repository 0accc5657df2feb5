"""Per-dataset preparation: raw files in, ``{split: (x, y)}`` arrays and ``meta`` out (see :mod:`pipelines.data.prepared`).

Every function here is deterministic for a given config and seed: splits use scikit-learn's
``train_test_split`` with ``random_state=seed``, stratified on the label. An official test split is kept where the
dataset has one (MNIST, Fashion-MNIST, CIFAR-10, IMDB); validation is carved out of train with
``DatasetConfig.val_fraction``; and ``max_train_samples`` then keeps a seeded, stratified subset of what is left of
train. A time series (melbourne_temp) is never shuffled: its splits are consecutive stretches of time, train first,
then val, then test.
Statistics that are fitted (churn's and melbourne_temp's standardisation, CIFAR-10's per-channel standardisation,
IMDB's tokenizer) are fitted on the train split only (after the val carve-out and ``max_train_samples``).

Use :func:`prepare_dataset` (or :data:`PREPARERS`) to dispatch by name. One module per dataset (or file format) holds
its preparer: ``logic``, ``idx`` (MNIST, Fashion-MNIST), ``localization``, ``cifar10``, ``churn``, ``imdb``,
``temperature``, ``image_folder`` (att_faces); ``common`` has the splits and the metadata they share. A dataset
with a ``source:`` block is read from the user's files by the reader of its format (:mod:`.sources`: ``table``
for csv, ``idx``, ``image_folder``, ``text_table`` for text_csv, ``timeseries``). The arrays are:

===============  ==========================  =========  ================================================
dataset          x                           y          preprocessing
===============  ==========================  =========  ================================================
logic_*          float32 (4, 2) of 0/1       int64 0/1  none: the truth table is train, val and test
mnist            float32 (N, 1, 28, 28)      int64 0-9  min-max: pixel / 255, in [0, 1]
fashion_mnist    float32 (N, 1, 28, 28)      int64 0-9  min-max: pixel / 255, in [0, 1] (as mnist)
cifar10          float32 (N, 3, 32, 32)      int64 0-9  per-channel standardisation (train mean/std of
                                                        pixel / 255), see :func:`prepare_cifar10`
churn            float32 (N, 12)             int64 0/1  ids dropped, one-hot Geography, Gender 0/1,
                                                        numeric columns standardised (train mean/std)
imdb             int64 (N, seq_len)          int64 0/1  ``<br />`` removed, WordLevel tokenizer fitted on
                                                        train, keep the last seq_len ids, left-pad with 0
melbourne_temp   float32 (N, window)         float32    x: the previous ``window`` days' minimum temperatures
                                                        standardised (train mean/std); y: the next day's, °C
att_faces        float32 (N, 1, 112, 92)     int64 0-39 min-max: pixel / 255; subjects s1-s40, stratified
===============  ==========================  =========  ================================================

``airline_passengers``, ``melbourne_temp_7d`` (:mod:`.forecast`): x float32 ``(N, window)`` on the network's scale
(airline logged, then standardised on train), y float32 ``(N, horizon)`` in the series' units, split by target time.

``tiny_shakespeare`` (:mod:`.chars`): x and y int64 ``(N, tbptt_steps)``, contiguous chunks of character ids
(the corpus's sorted characters) and the same chunks shifted by one character, train, val, test in text order.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from pipelines.config import DatasetConfig
from pipelines.data.preparers.chars import prepare_tiny_shakespeare
from pipelines.data.preparers.churn import prepare_churn
from pipelines.data.preparers.cifar10 import prepare_cifar10
from pipelines.data.preparers.common import Prepared
from pipelines.data.preparers.forecast import prepare_forecast
from pipelines.data.preparers.idx import prepare_fashion_mnist, prepare_mnist
from pipelines.data.preparers.image_folder import prepare_att_faces
from pipelines.data.preparers.imdb import prepare_imdb
from pipelines.data.preparers.localization import prepare_mnist_localization
from pipelines.data.preparers.logic import TRUTH_TABLES, prepare_logic
from pipelines.data.preparers.sources import prepare_source
from pipelines.data.preparers.temperature import prepare_melbourne_temp
from pipelines.errors import DataError


def _logic(name: str) -> Callable[..., Prepared]:
    def prepare(config: DatasetConfig, seed: int, *, mirror: str | Path | None = None) -> Prepared:
        return prepare_logic(name, config, seed)

    prepare.__name__ = prepare.__qualname__ = f"prepare_{name}"
    prepare.__doc__ = f"The {name.removeprefix('logic_').upper()} truth table; see :func:`prepare_logic`."
    return prepare


#: Dataset name -> preparation function ``(config, seed, *, mirror=None) -> Prepared``.
PREPARERS: dict[str, Callable[..., Prepared]] = {
    **{name: _logic(name) for name in TRUTH_TABLES},
    "mnist": prepare_mnist,
    "fashion_mnist": prepare_fashion_mnist,
    "cifar10": prepare_cifar10,
    "cifar10_0to4": partial(prepare_cifar10, name="cifar10_0to4"),
    "cifar10_5to9": partial(prepare_cifar10, name="cifar10_5to9"),
    "mnist_localization": prepare_mnist_localization,
    "churn": prepare_churn,
    "imdb": prepare_imdb,
    "melbourne_temp": prepare_melbourne_temp,
    "att_faces": prepare_att_faces,
    "airline_passengers": partial(prepare_forecast, name="airline_passengers"),
    "melbourne_temp_7d": partial(prepare_forecast, name="melbourne_temp_7d"),
    "tiny_shakespeare": prepare_tiny_shakespeare,
}


def prepare_dataset(
    name: str,
    config: DatasetConfig,
    seed: int,
    *,
    mirror: str | Path | None = None,
    root: Path | None = None,
) -> Prepared:
    """Prepare dataset ``name``: from the user's files when ``config.source`` is set
    (:func:`~pipelines.data.preparers.sources.prepare_source`, paths relative to ``root``, default the repository
    root), else the catalog dataset of that name (see :data:`PREPARERS`); ``mirror`` overrides
    ``$DEEPNOTES_DATA_MIRROR``.

    Raises:
        DataError: no preparation is defined for ``name``, or a raw file is missing, corrupt or malformed.
    """
    if config.source is not None:
        from pipelines import REPO_ROOT

        return prepare_source(name, config, seed, root or REPO_ROOT)
    try:
        preparer = PREPARERS[name]
    except KeyError:
        raise DataError(f"dataset {name!r}: no preparation defined; known: {', '.join(sorted(PREPARERS))}") from None
    return preparer(config, seed, mirror=mirror)


__all__ = [
    "PREPARERS",
    "Prepared",
    "prepare_churn",
    "prepare_cifar10",
    "prepare_dataset",
    "prepare_fashion_mnist",
    "prepare_forecast",
    "prepare_imdb",
    "prepare_logic",
    "prepare_melbourne_temp",
    "prepare_mnist",
    "prepare_mnist_localization",
    "prepare_att_faces",
    "prepare_source",
]
