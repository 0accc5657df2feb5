"""Daily minimum temperatures in Melbourne, 1981-1990: the next day from a window of past days, read as a table
(:mod:`pipelines.data.preparers.temperature`), and the next 7 days as a forecast (notes 002, "TYPES OF RNN", many to
many; :mod:`pipelines.data.preparers.forecast`)."""

from __future__ import annotations

from pipelines.data.catalog import DatasetEntry, RawFile, register

MELBOURNE_TEMP = DatasetEntry(
    "melbourne_temp",
    "regression",
    "csv",
    "tabular",  # windows of past days become feature columns: the MLP reads them as a table
    files=(
        RawFile(
            "daily_min_temperatures/daily-min-temperatures.csv",
            ("8b9de63ed6789492bf497625e7f9beb96a63d367b4b0a21754006f749fa5e5da",),
            urls=(
                "https://raw.githubusercontent.com/jbrownlee/Datasets/"
                "d20fcb6402ae34e653d4513b00f39257bb37ed7f/daily-min-temperatures.csv",
            ),
        ),
    ),
    source="Daily minimum temperatures in Melbourne, 1981-1990 (°C): Australian Bureau of Meteorology, via the "
    "Time Series Data Library (TSDL); file from GitHub jbrownlee/Datasets",
    license="© Commonwealth of Australia (Bureau of Meteorology); widely redistributed for teaching",
    preparer="pipelines.data.preparers.temperature:prepare_melbourne_temp",
)

register(
    MELBOURNE_TEMP,
    DatasetEntry(
        "melbourne_temp_7d",
        "forecasting",
        "csv",
        "series",
        files=MELBOURNE_TEMP.files,
        source=MELBOURNE_TEMP.source + "; the next 7 days from past days",
        license=MELBOURNE_TEMP.license,
        base="melbourne_temp",
        preparer="pipelines.data.preparers.forecast:prepare_forecast",
    ),
)
