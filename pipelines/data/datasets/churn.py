"""Churn Modelling, the bank-customer table of the notes' ANN chapter (:mod:`pipelines.data.preparers.churn`)."""

from __future__ import annotations

from pipelines.data.catalog import DatasetEntry, RawFile, register

register(
    DatasetEntry(
        "churn",
        "binary",
        "csv",
        "tabular",
        files=(
            RawFile(
                "churn/Churn_Modelling.csv",
                ("ee2a5c9d8daf3aed0d91c4d883a84ebb77d271447bebc0f0c80aafb0f288ceab",),
                urls=(
                    "https://raw.githubusercontent.com/Vamc-24/ANN-Classification/"
                    "91efaff80bf4252e8bac8e4edeb650219faadae4/Churn_Modelling.csv",
                ),
            ),
        ),
        source="Churn Modelling (SuperDataScience, Deep Learning A-Z; Kaggle)",
        license="educational/demo data, terms unknown",
        classes=("stayed", "exited"),
        preparer="pipelines.data.preparers.churn:prepare_churn",
    ),
)
