"""The IMDB movie reviews of Maas et al. (2011), 25,000 train and 25,000 test: for binary sentiment (``imdb``,
:mod:`pipelines.data.preparers.imdb`), and their text as a word corpus for word embeddings (``imdb_corpus``,
:mod:`pipelines.data.preparers.corpus`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from pipelines.data.catalog import DatasetEntry, RawFile, register

#: Repacked from aclImdb_v1 into one CSV; there is no canonical file of this format, so only the mirror (or an HTTP
#: mirror of it, DEEPNOTES_DATA_URL) can serve it.
IMDB_REVIEWS = RawFile(
    "imdb/imdb_reviews.csv.gz",
    ("02f74586126382eb804a4045a0fabb4529d4b68753438145e707490cd755ed28",),
    payload_sha256="77656e874317642bf634df8fbf3002365904e5cf859d1c5e2646adb9c963fae9",
)
SOURCE = "https://ai.stanford.edu/~amaas/data/sentiment/"
CITATION = "Maas et al. (2011), Learning Word Vectors for Sentiment Analysis, ACL"
LICENSE = "no formal license; cite the paper"


class CorpusOptions(BaseModel):
    """``datasets.imdb_corpus.options``: the vocabulary and how much text each split holds (the reviews are split as
    usual: ``val_fraction`` of the train reviews, ``max_train_samples`` and ``max_test_samples`` reviews)."""

    model_config = ConfigDict(extra="forbid")

    min_count: PositiveInt = Field(
        5, description="words seen fewer times in the train text are dropped (word2vec's -min-count)"
    )
    chunk_words: int = Field(
        1000, ge=16, le=100000, description="words per row of the prepared arrays; no window crosses a row"
    )
    max_train_words: PositiveInt | None = Field(
        None, description="keep the first this many words of the (shuffled) train reviews; None: all of them"
    )
    max_eval_words: PositiveInt | None = Field(
        200000, description="words kept of the validation and of the test reviews each; None: all of them"
    )


register(
    DatasetEntry(
        "imdb",
        "binary",
        "csv-gz",
        "text",
        files=(IMDB_REVIEWS,),
        source=SOURCE,
        citation=CITATION,
        license=LICENSE,
        classes=("negative", "positive"),
        preparer="pipelines.data.preparers.imdb:prepare_imdb",
    ),
    DatasetEntry(
        "imdb_corpus",
        "embedding",
        "csv-gz",
        # "words" (rows of consecutive word ids) is not yet in catalog.Modality: adding it there changes a module that
        # every stage imports, which reruns the whole zoo; it goes in with the next whole-zoo rerun
        "words",  # type: ignore[arg-type]
        files=(IMDB_REVIEWS,),
        source=SOURCE + " (the review texts; labels unused)",
        citation=CITATION,
        license=LICENSE,
        base="imdb",
        preparer="pipelines.data.preparers.corpus:prepare_imdb_corpus",
        options=CorpusOptions,
    ),
)
