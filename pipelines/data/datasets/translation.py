"""English to French sentence pairs from Tatoeba (manythings.org's ``fra-eng.zip``), for the encoder-decoder of notes
002 ("Seq-to-Vector followed by vector-to-seq encoder decoder", "Translating a sentence from one lang. to another")
and notes 000's "Seq to Seq" progression (:mod:`pipelines.data.preparers.translation`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pipelines.data.catalog import DatasetEntry, RawFile, register


class TranslationOptions(BaseModel):
    """``datasets.translation.options``: which pairs are kept (the split, ``vocab_size`` and ``seq_len`` are the usual
    ``datasets.translation`` settings)."""

    model_config = ConfigDict(extra="forbid")

    max_words: int = Field(
        10, ge=1, le=60, description="keep pairs with at most this many words (tokens with a letter or digit) per side"
    )


register(
    DatasetEntry(
        "translation",
        "seq2seq",
        "tsv-zip",
        "text_pair",
        files=(
            RawFile(
                "translation/fra-eng.zip",
                ("16c4f7d0df9e7c5e6c54cdb0447f3f4a18a55052ff5e2e0b27dd4a06c0e49d04",),
                urls=(
                    "https://raw.githubusercontent.com/genimind/seq2seq/"
                    "4f3f8eb0adde54fcc8b89394336b002e7961244c/fra-eng.zip",
                ),
            ),
        ),
        source="Tatoeba Project sentences (https://tatoeba.org), English-French pairs exported by "
        "www.manythings.org/anki (fra-eng.zip of 2017-09-29, 142,787 pairs); file from GitHub genimind/seq2seq",
        citation="Tatoeba Project, https://tatoeba.org; www.manythings.org/anki",
        license="CC BY 2.0 FR (attribution: www.manythings.org/anki and tatoeba.org)",
        preparer="pipelines.data.preparers.translation:prepare_translation",
        options=TranslationOptions,
    ),
)
