"""International airline passengers, Box & Jenkins Series G: forecasting (notes 002, "TYPES OF RNN", many to many:
past values -> the next ``horizon`` values; :mod:`pipelines.data.preparers.forecast`)."""

from __future__ import annotations

from pipelines.data.catalog import DatasetEntry, RawFile, register

register(
    DatasetEntry(
        "airline_passengers",
        "forecasting",
        "csv",
        "series",
        files=(
            RawFile(
                "airline_passengers/airline-passengers.csv",
                ("8cb51be753a718d9be5d76d7e238cc224792754676adc21faa59e954b0201621",),
                urls=(
                    "https://raw.githubusercontent.com/jbrownlee/Datasets/"
                    "d20fcb6402ae34e653d4513b00f39257bb37ed7f/airline-passengers.csv",
                ),
            ),
        ),
        source="International airline passengers, monthly totals Jan 1949 - Dec 1960 (thousands): Box & Jenkins "
        "Series G, via Hyndman's Time Series Data Library (TSDL); file from GitHub jbrownlee/Datasets",
        citation="Box, Jenkins (1976), Time Series Analysis: Forecasting and Control, Series G",
        license="classic textbook series, commonly treated as freely usable (R's datasets::AirPassengers)",
        preparer="pipelines.data.preparers.forecast:prepare_forecast",
    ),
)
