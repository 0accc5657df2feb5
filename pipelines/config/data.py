"""The ``datasets:`` and ``augment:`` sections of ``params.yaml``: one dataset (catalog entry, split fractions,
subsampling, preprocessing) and its augmentation."""

from __future__ import annotations

from typing import Any

from pydantic import (
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    model_validator,
)

from pipelines.config.base import (
    Strict,
)
from pipelines.config.sources import SourceConfig

# --------------------------------------------------------------------------------------------- datasets


class DatasetConfig(Strict):
    """How ``prepare`` splits and preprocesses one dataset (notes 004, "Min-Max Scaling"; notes 001, standardising).

    A dataset is a catalog entry (:mod:`pipelines.data.catalog`) named like it, or the user's own files described
    by ``source`` (:mod:`pipelines.config.sources`).
    """

    source: SourceConfig | None = Field(None, description="the user's own files; None: the catalog entry of the name")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of the train split carved out for validation")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share held out for test when there is no official split")
    max_train_samples: PositiveInt | None = Field(
        None, description="seeded subset of the train split (after the val carve-out)"
    )
    vocab_size: PositiveInt = Field(20000, description="text: tokenizer vocabulary size, fitted on train only")
    seq_len: PositiveInt = Field(200, description="text: tokens per sequence after truncation/padding")
    window: PositiveInt = Field(
        14, description="time series: past days per sample (the features); the target is the next day"
    )
    horizon: PositiveInt = Field(
        1, description="forecasting: values predicted per sample, the steps right after the window"
    )
    test_steps: PositiveInt | None = Field(
        None, description="forecasting: the last test_steps time steps hold the test targets (None: test_fraction)"
    )
    max_train_per_class: PositiveInt | None = Field(
        None, description="keep this many seeded train samples of each class (few-label fine-tuning)"
    )
    max_test_samples: PositiveInt | None = Field(
        None, description="image datasets and imdb: seeded stratified subset of the official test split"
    )
    tbptt_steps: int = Field(
        100,
        ge=2,
        le=10000,
        description="characters: the chunk length of truncated back-propagation through time (the state is carried "
        "from one chunk to the next, the gradient is not) and of the served context",
    )
    max_train_chars: PositiveInt | None = Field(
        None, description="characters: keep only the first this many characters of the train stretch"
    )
    canvas_size: int = Field(64, ge=32, le=256, description="localization: side of the square canvas, pixels")
    min_scale: float = Field(0.6, gt=0, description="localization: smallest digit side, relative to its 28 pixels")
    max_scale: float = Field(1.6, gt=0, description="localization: largest digit side, relative to its 28 pixels")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the dataset's own settings, checked against its catalog entry's options model "
        "(DatasetEntry.options) and stored with every default filled in",
    )

    @model_validator(mode="after")
    def _scales(self) -> DatasetConfig:
        if self.min_scale > self.max_scale:
            raise ValueError(f"min_scale {self.min_scale} is above max_scale {self.max_scale}")
        if round(28 * self.max_scale) > self.canvas_size:
            raise ValueError(
                f"a digit at max_scale {self.max_scale} ({round(28 * self.max_scale)} px) does not fit "
                f"on the {self.canvas_size}-pixel canvas"
            )
        if self.max_train_chars is not None and self.max_train_chars <= self.tbptt_steps:
            raise ValueError(
                f"max_train_chars {self.max_train_chars} leaves no training chunk of tbptt_steps {self.tbptt_steps} "
                f"characters (and its next-character targets); use more characters or shorter chunks"
            )
        return self


class AugmentConfig(Strict):
    """Offline augmentation of the train split (notes 004, data augmentation). Off unless ``enabled``.

    Image transforms run through kornia; tabular data only gets Gaussian noise on its numeric features.
    """

    enabled: bool = False
    copies: PositiveInt = Field(1, description="augmented copies made of each selected train sample")
    fraction: float = Field(1.0, gt=0, le=1, description="share of the train split that is augmented")
    hflip: bool = Field(False, description="random horizontal flip (p=0.5); only for flip-safe datasets")
    crop_padding: NonNegativeInt = Field(
        0,
        description="random crop of the original size from the image zero-padded "
        "by this many pixels on each side (0 = off)",
    )
    rotation_degrees: NonNegativeFloat = Field(0.0, le=180)
    zoom: NonNegativeFloat = Field(0.0, lt=1, description="max relative scale change: 0.1 zooms in [0.9, 1.1]")
    brightness: NonNegativeFloat = Field(0.0, le=1, description="max additive brightness shift on [0, 1] pixels")
    noise_std: NonNegativeFloat = Field(0.0, description="std of additive Gaussian noise")
