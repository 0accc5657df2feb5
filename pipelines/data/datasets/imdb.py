"""The IMDB movie reviews of Maas et al. (2011), 25,000 train and 25,000 test, for binary sentiment
(:mod:`pipelines.data.preparers.imdb`)."""

from __future__ import annotations

from pipelines.data.catalog import DatasetEntry, RawFile, register

register(
    DatasetEntry(
        "imdb",
        "binary",
        "csv-gz",
        "text",
        files=(
            # Repacked from aclImdb_v1 into one CSV; there is no canonical file of this format, so only the
            # mirror (or an HTTP mirror of it, DEEPNOTES_DATA_URL) can serve it.
            RawFile(
                "imdb/imdb_reviews.csv.gz",
                ("02f74586126382eb804a4045a0fabb4529d4b68753438145e707490cd755ed28",),
                payload_sha256="77656e874317642bf634df8fbf3002365904e5cf859d1c5e2646adb9c963fae9",
            ),
        ),
        source="https://ai.stanford.edu/~amaas/data/sentiment/",
        citation="Maas et al. (2011), Learning Word Vectors for Sentiment Analysis, ACL",
        license="no formal license; cite the paper",
        classes=("negative", "positive"),
        preparer="pipelines.data.preparers.imdb:prepare_imdb",
    ),
)
