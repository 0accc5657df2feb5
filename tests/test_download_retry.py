"""Transient download failures (issue 12, section 5): a loopback HTTP server that fails once, then serves the file.

The file is the real ``churn/Churn_Modelling.csv`` of the data mirror with its catalog entry (sha256 pinned), served
by the standard library's ``http.server`` on a port the OS picks. Each case checks that the download was retried
(the server saw a second request, after at least the configured backoff), that the file in the cache verifies, and
that no temporary ``.part`` file is left in the download folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipelines.data.catalog import RawFile, get_dataset
from pipelines.data.fetch import DEFAULT_BACKOFF, MIRROR_ENV, URL_ENV, fetch, sha256_file
from pipelines.errors import DataNotFoundError

CHURN = get_dataset("churn").files[0]
#: Short enough for tests, long enough to be measured between two requests.
BACKOFF = 0.05


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer mirror or base URL: every byte comes from the test's own server."""
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.delenv(URL_ENV, raising=False)


@dataclasses.dataclass
class Served:
    """What the flaky server saw: the base URL, and each request's path and arrival time (``time.monotonic``)."""

    url: str
    paths: list[str] = dataclasses.field(default_factory=list)
    times: list[float] = dataclasses.field(default_factory=list)

    def gaps(self) -> list[float]:
        """Seconds between consecutive requests."""
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


@contextlib.contextmanager
def flaky_server(directory: Path, failures: list[str]) -> Iterator[Served]:
    """Serve ``directory`` on loopback; the first requests fail as ``failures`` says, in order, then files are served.

    Failures: ``"503"`` (Service Unavailable), ``"404"`` (Not Found), ``"drop"`` (the connection is closed without
    a response), ``"truncate"`` (status 200 and the full ``Content-Length``, then half the body and a close).
    """
    plan = list(failures)
    lock = threading.Lock()

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)

        def do_GET(self) -> None:
            with lock:
                served.times.append(time.monotonic())
                served.paths.append(self.path)
                mode = plan.pop(0) if plan else None
            if mode in ("503", "404"):
                self.send_error(int(mode))
            elif mode == "drop":
                self.close_connection = True  # nothing written: the client reads EOF instead of a status line
            elif mode == "truncate":
                body = (directory / self.path.lstrip("/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
            else:
                super().do_GET()

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served = Served(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def offline(raw: RawFile) -> RawFile:
    """``raw`` without its internet URLs: nothing is fetched from outside the test."""
    return dataclasses.replace(raw, urls=())


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder``, hidden ones (the ``.part`` temporaries) included."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.parametrize("failure", ["503", "drop", "truncate"])
def test_a_transient_failure_is_retried_and_the_file_verifies(
    failure: str, mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Through ``$DEEPNOTES_DATA_URL``: one failure, one retry after the backoff, a verified file, no temporaries."""
    cache = tmp_path / "cache"
    with flaky_server(mirror, [failure]) as served:
        monkeypatch.setenv(URL_ENV, served.url)
        with caplog.at_level(logging.WARNING, logger="pipelines.data.fetch"):
            path = fetch(offline(CHURN), cache_dir=cache, backoff=BACKOFF)
    assert served.paths == [f"/{CHURN.path}"] * 2  # the failed request and its retry
    assert served.gaps()[0] >= BACKOFF
    assert path == cache / CHURN.path
    assert sha256_file(path) in CHURN.sha256
    assert path.read_bytes() == (mirror / CHURN.path).read_bytes()
    assert files_under(cache) == [path]  # the failed attempt's temporary file is gone
    (warning,) = [r.getMessage() for r in caplog.records]  # one retry, logged with its URL and delay
    assert warning.startswith(f"{served.url}/{CHURN.path}: ") and warning.endswith("; retrying in 0.05 s")


def test_a_dropped_connection_on_a_catalog_url_is_retried(mirror: Path, tmp_path: Path) -> None:
    """The same through the catalog entry's own ``urls`` (no base URL)."""
    cache = tmp_path / "cache"
    with flaky_server(mirror, ["drop"]) as served:
        raw = dataclasses.replace(CHURN, urls=(f"{served.url}/{CHURN.path}",))
        path = fetch(raw, cache_dir=cache, backoff=BACKOFF)
    assert len(served.paths) == 2 and served.gaps()[0] >= BACKOFF
    assert sha256_file(path) in CHURN.sha256 and files_under(cache) == [path]


def test_failures_that_do_not_stop_are_given_up_after_the_attempts(mirror: Path, tmp_path: Path) -> None:
    """Three attempts (``retries=3``), backoff doubling between them, then one error naming the URL; nothing left."""
    cache = tmp_path / "cache"
    with flaky_server(mirror, ["503", "drop", "503", "503"]) as served:
        with pytest.raises(DataNotFoundError) as exc:
            fetch(offline(CHURN), cache_dir=cache, base_url=served.url, retries=3, backoff=BACKOFF)
    assert len(served.paths) == 3
    first, second = served.gaps()
    assert first >= BACKOFF and second >= 2 * BACKOFF
    message = str(exc.value)
    assert f"{served.url}/{CHURN.path}: HTTP 503" in message and "(after 3 attempts)" in message
    assert files_under(cache) == []


def test_a_404_is_not_retried(mirror: Path, tmp_path: Path) -> None:
    """A missing file is not transient: one request, then the next URL (here none), and nothing left behind."""
    cache = tmp_path / "cache"
    with flaky_server(mirror, ["404"]) as served:
        with pytest.raises(DataNotFoundError, match="HTTP 404"):
            fetch(offline(CHURN), cache_dir=cache, base_url=served.url, backoff=BACKOFF)
    assert len(served.paths) == 1
    assert files_under(cache) == []


def test_the_default_backoff_is_half_a_second() -> None:
    """What a real download waits before its first retry (then 1 s, 2 s, ...)."""
    assert DEFAULT_BACKOFF == 0.5
