"""Per-dataset preparation: raw files in, ``{split: (x, y)}`` arrays and ``meta`` out (see :mod:`pipelines.data.prepared`).

Every function here is deterministic for a given config and seed: splits use scikit-learn's
``train_test_split`` with ``random_state=seed``, stratified on the label. An official test split is kept where the
dataset has one (MNIST, Fashion-MNIST, CIFAR-10, IMDB); validation is carved out of train with
``DatasetConfig.val_fraction``; and ``max_train_samples`` then keeps a seeded, stratified subset of what is left of
train. A time series (melbourne_temp) is never shuffled: its splits are consecutive stretches of time, train first,
then val, then test.
Statistics that are fitted (churn's and melbourne_temp's standardisation, CIFAR-10's per-channel standardisation,
IMDB's tokenizer) are fitted on the train split only (after the val carve-out and ``max_train_samples``).

Use :func:`prepare_dataset` to dispatch by name: each catalog entry names its preparer (``DatasetEntry.preparer``,
``"module:function"``, called as ``function(config, seed, *, name, mirror)``), and only that module is imported. One
module per dataset (or file format) holds its preparer: ``logic``, ``idx`` (MNIST, Fashion-MNIST), ``localization``,
``cifar10``, ``churn``, ``imdb``, ``temperature``, ``forecast``, ``chars``, ``image_folder`` (att_faces); ``common``
has the splits and the metadata they share. A dataset with a ``source:`` block is read from the user's files by the
reader of its format (:mod:`.sources`: ``table`` for csv, ``idx``, ``image_folder``, ``text_table`` for text_csv,
``timeseries``). The arrays are:

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

from pathlib import Path

from pipelines.config import DatasetConfig
from pipelines.data.catalog import get_dataset
from pipelines.data.preparers.common import Prepared
from pipelines.data.preparers.sources import prepare_source
from pipelines.errors import DataError


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
    root), else the catalog dataset of that name by the preparer its entry names; ``mirror`` overrides
    ``$DEEPNOTES_DATA_MIRROR``.

    Raises:
        DataError: no preparation is defined for ``name``, or a raw file is missing, corrupt or malformed.
    """
    if config.source is not None:
        from pipelines import REPO_ROOT

        return prepare_source(name, config, seed, root or REPO_ROOT)
    try:
        entry = get_dataset(name)
    except KeyError as exc:
        raise DataError(f"dataset {name!r}: no preparation defined; {exc.args[0]}") from None
    return entry.load_preparer()(config, seed, name=name, mirror=mirror)


__all__ = ["Prepared", "prepare_dataset", "prepare_source"]
