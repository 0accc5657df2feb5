"""The truth tables of notes 001 ("Perceptron", "AND GATE", "XOR gate"): generated, no files
(:mod:`pipelines.data.preparers.logic`)."""

from __future__ import annotations

from pipelines.data.catalog import DatasetEntry, register

_PREPARER = "pipelines.data.preparers.logic:prepare_logic"

register(
    DatasetEntry(
        "logic_and",
        "binary",
        "truth-table",
        "table",
        source="notes 001, AND GATE",
        classes=("0", "1"),
        preparer=_PREPARER,
    ),
    DatasetEntry(
        "logic_or",
        "binary",
        "truth-table",
        "table",
        source="notes 001, Perceptron",
        classes=("0", "1"),
        preparer=_PREPARER,
    ),
    DatasetEntry(
        "logic_xor",
        "binary",
        "truth-table",
        "table",
        source="notes 001, XOR gate",
        classes=("0", "1"),
        preparer=_PREPARER,
    ),
)
