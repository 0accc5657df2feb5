"""Locate, download and verify the raw files of the catalog.

:func:`fetch` returns a verified local path for a :class:`~pipelines.data.catalog.RawFile`, looking in order at

1. the data mirror folder (``mirror=`` or ``$DEEPNOTES_DATA_MIRROR``): ``<mirror>/<raw.path>`` is verified and
   used in place, never copied;
2. the local cache ``<cache_dir>/<raw.path>`` (default ``<repo>/data/raw``), if the file there verifies;
3. HTTP(S) downloads: ``<base_url or $DEEPNOTES_DATA_URL>/<raw.path>`` first, then each of ``raw.urls``.
   Each download streams into a temporary file beside its destination, is verified, and is renamed into place;
   a failure removes the temporary file, so the cache never holds half a file. A transient failure (a refused or
   dropped connection, a timeout, a body shorter than its ``Content-Length``, HTTP 408/425/429/5xx) is retried,
   up to ``retries`` attempts per URL, after ``backoff`` seconds, then twice that, and so on; anything else (a
   404, a checksum mismatch) moves on to the next URL at once.

:func:`verify` accepts a file whose sha256 is one of ``raw.sha256``, or a gzip file whose decompressed stream
hashes to ``raw.payload_sha256`` (a repacked ``.gz`` differs from the canonical one only in its gzip wrapper).

Only the standard library is used (``urllib``), so the data stages need no extra dependency.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path

from pipelines import REPO_ROOT
from pipelines.data.catalog import RawFile
from pipelines.errors import DataError, DataIntegrityError, DataNotFoundError

log = logging.getLogger(__name__)

#: Environment variable naming a local folder laid out like ``shared/data`` (``<dataset>/<file>``).
MIRROR_ENV = "DEEPNOTES_DATA_MIRROR"
#: Environment variable naming an HTTP(S) base URL that serves the same layout.
URL_ENV = "DEEPNOTES_DATA_URL"
DEFAULT_CACHE_DIR = REPO_ROOT / "data" / "raw"
CHUNK_SIZE = 1 << 20  # 1 MiB: hashing and streaming block
GZIP_MAGIC = b"\x1f\x8b"
#: HTTP status codes worth retrying (timeouts, rate limits, server-side failures); other 4xx fail at once.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Seconds before the first retry of a transient download failure (then doubled: 0.5 s, 1 s, 2 s, ...).
DEFAULT_BACKOFF = 0.5


def _chunks(stream) -> Iterator[bytes]:
    while block := stream.read(CHUNK_SIZE):
        yield block


def sha256_file(path: str | Path) -> str:
    """Return the hex sha256 of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in _chunks(fh):
            digest.update(block)
    return digest.hexdigest()


def is_gzip(path: str | Path) -> bool:
    """Whether ``path`` starts with the gzip magic bytes (the extension is not trusted)."""
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def payload_sha256(path: str | Path, *, name: str | None = None) -> str:
    """Return the hex sha256 of the decompressed content of the gzip file at ``path``.

    Raises:
        DataIntegrityError: the gzip stream is truncated or corrupt (names ``name`` or ``path``).
    """
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as fh:
            for block in _chunks(fh):
                digest.update(block)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataIntegrityError(f"{name or path}: gzip stream is truncated or corrupt ({exc})") from None
    return digest.hexdigest()


def verify(path: str | Path, raw: RawFile, *, name: str | None = None) -> Path:
    """Check the file at ``path`` against the catalog checksums of ``raw`` and return ``path``.

    Accepted when the file's sha256 is one of ``raw.sha256``; otherwise, when ``raw.payload_sha256`` is set and the
    file is gzip, when the sha256 of its decompressed stream equals ``raw.payload_sha256``.

    Args:
        path: the local file.
        raw: its catalog entry.
        name: how to call the file in error messages (default: ``path``), e.g. the URL it came from.

    Raises:
        DataIntegrityError: naming the file, the expected and the actual sha256; or saying the gzip stream is
            truncated or corrupt.
    """
    path = Path(path)
    name = name or str(path)
    actual = sha256_file(path)
    if actual in raw.sha256:
        return path
    expected = " or ".join(raw.sha256)
    if raw.payload_sha256 and is_gzip(path):
        payload = payload_sha256(path, name=name)
        if payload == raw.payload_sha256:
            log.debug("%s: accepted by its decompressed payload (repacked gzip wrapper)", name)
            return path
        raise DataIntegrityError(
            f"{name}: checksum mismatch for {raw.path}: expected sha256 {expected} (or a gzip whose decompressed "
            f"content has sha256 {raw.payload_sha256}), got sha256 {actual} (decompressed: {payload})"
        )
    raise DataIntegrityError(f"{name}: checksum mismatch for {raw.path}: expected sha256 {expected}, got {actual}")


def mirror_root(mirror: str | Path | None = None) -> Path | None:
    """The data mirror folder: ``mirror`` if given, else ``$DEEPNOTES_DATA_MIRROR``, else ``None``."""
    value = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    return Path(value).expanduser() if value else None


def fetch(
    raw: RawFile,
    *,
    mirror: str | Path | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    base_url: str | None = None,
    retries: int = 3,
    timeout: float = 60,
    backoff: float = DEFAULT_BACKOFF,
) -> Path:
    """Return a verified local path to ``raw`` (see the module docstring for the search order).

    Args:
        raw: the catalog file.
        mirror: data mirror folder; default ``$DEEPNOTES_DATA_MIRROR``. A file found there is used in place.
        cache_dir: where downloads are kept, as ``<cache_dir>/<raw.path>``.
        base_url: HTTP(S) mirror tried before ``raw.urls``; default ``$DEEPNOTES_DATA_URL``.
        retries: attempts per URL (at least 1) for transient failures (connection errors, timeouts, short bodies,
            408/425/429/5xx). A 404 or a checksum mismatch moves on to the next URL at once.
        timeout: socket timeout in seconds for each request.
        backoff: seconds before the first retry, doubled before each further one (0.5 s, 1 s, 2 s, ... by
            default; tests pass a few milliseconds).

    Raises:
        DataIntegrityError: the mirror copy fails verification, or every download failed and at least one of them
            failed verification.
        DataNotFoundError: the file is nowhere; the message names the mirror path looked at, the URLs tried and
            how to point the pipeline at the data (``DEEPNOTES_DATA_MIRROR`` or ``DEEPNOTES_DATA_URL``).
    """
    root = mirror_root(mirror)
    if root is not None:
        candidate = root / raw.path
        if candidate.is_file():
            return verify(candidate, raw)

    cached = Path(cache_dir) / raw.path
    integrity_error: DataIntegrityError | None = None
    if cached.is_file():
        try:
            return verify(cached, raw)
        except DataIntegrityError as exc:
            log.warning("ignoring the cached copy: %s", exc)
            integrity_error = exc

    base = base_url if base_url is not None else os.environ.get(URL_ENV)
    urls = ([f"{base.rstrip('/')}/{raw.path}"] if base else []) + list(raw.urls)
    failures = [f"cached copy rejected: {integrity_error}"] if integrity_error else []
    for url in urls:
        try:
            return _download(url, cached, raw, retries=retries, timeout=timeout, backoff=backoff)
        except DataIntegrityError as exc:
            integrity_error = exc
            failures.append(str(exc))
        except DataError as exc:
            failures.append(str(exc))

    if root is None:
        looked = f"no mirror folder set (${MIRROR_ENV} is unset)"
    elif not root.is_dir():
        looked = f"mirror folder {root} does not exist"
    else:
        looked = f"not in the mirror at {root / raw.path}"
    tried = "" if urls else "; no download URL configured"
    problems = f"; {' | '.join(failures)}" if failures else ""
    hint = (
        f"Set {MIRROR_ENV} to a folder holding the data (laid out as <dataset>/<file>, like shared/data) "
        f"or {URL_ENV} to an HTTP(S) URL serving it"
    )
    if integrity_error is not None:
        raise DataIntegrityError(f"{raw.path}: {looked}{tried}{problems}")
    raise DataNotFoundError(f"{raw.path}: {looked}, not in the cache at {cached}{tried}{problems}. {hint}")


def _download(url: str, dest: Path, raw: RawFile, *, retries: int, timeout: float, backoff: float) -> Path:
    """Download ``url`` to ``dest`` through a verified temporary file; retry transient failures, waiting
    ``backoff * 2 ** (attempt - 1)`` seconds after failed attempt ``attempt``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    attempts = max(1, retries)
    for attempt in range(1, attempts + 1):
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            log.info("downloading %s (attempt %d/%d)", url, attempt, attempts)
            with os.fdopen(fd, "wb") as out:
                _stream(url, out, timeout=timeout)
            verify(tmp, raw, name=url)
            os.replace(tmp, dest)
            return dest
        except _Transient as exc:
            if attempt == attempts:
                raise DataNotFoundError(f"{url}: {exc} (after {attempts} attempts)") from None
            delay = backoff * 2 ** (attempt - 1)
            log.warning("%s: %s; retrying in %.3g s", url, exc, delay)
            time.sleep(delay)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    raise AssertionError("unreachable")  # pragma: no cover


class _Transient(Exception):
    """A download failure worth retrying."""


def _stream(url: str, out, *, timeout: float) -> None:
    """Copy the body of ``url`` into ``out``; raise :class:`_Transient` or :class:`DataNotFoundError`."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http(s) URLs from the catalog)
            expected = response.headers.get("Content-Length")
            received = 0
            for block in _chunks(response):
                out.write(block)
                received += len(block)
    except urllib.error.HTTPError as exc:
        if exc.code in RETRYABLE_STATUS:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise DataNotFoundError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # refused, DNS, timeout, reset
        raise _Transient(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None
    except ValueError as exc:  # not a URL urllib can open, e.g. a base URL without a scheme
        raise DataNotFoundError(f"{url}: {exc}") from None
    if expected is not None and received != int(expected):
        raise _Transient(f"connection closed after {received} of {expected} bytes")
