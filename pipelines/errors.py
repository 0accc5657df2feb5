"""Errors of the data stages. Every message names the file (or key) and says what was expected.

The stage entry points (``pipelines.stages.prepare``, ``pipelines.stages.augment``) catch :class:`DataError` and print it as a
one-line ``error: ...`` with exit code 2, so anything raised here must read well on its own.
"""

from __future__ import annotations


class DataError(RuntimeError):
    """Base of every data problem: a raw file that is missing, corrupt or malformed."""


class DataNotFoundError(DataError):
    """A raw file is in none of the places looked at (mirror folder, local cache, HTTP sources)."""


class DataIntegrityError(DataError):
    """A raw file does not match its catalog checksum, or its gzip stream is truncated or corrupt."""


class DataFormatError(DataError):
    """A raw file has the right checksum (or none to check) but cannot be parsed as its format says."""
