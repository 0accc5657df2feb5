"""Crash-safe file output: everything is written to a temporary sibling and renamed into place.

A crash or kill therefore leaves either the old output or the new one, never half of one. A write that fails (a full
disk, a folder without write permission, a read-only filesystem) raises :class:`OutputError`: one line naming the
output and the errno's meaning, with the previous output intact and no temporary file left.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.config.base import ConfigError

#: Errors that mean "this cannot be written here" whatever file they name (a full disk, a quota, a read-only
#: filesystem, a file too large); permission errors count only when they name the output or its temporary.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
_PERMISSION_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST})


class OutputError(ConfigError):
    """An output could not be written (``No space left on device``, ``Permission denied``, ...).

    The message is one line: the output, the errno's meaning and name, and that the previous output is kept. A
    :class:`~pipelines.config.ConfigError` (like :class:`pipelines.tracking.TrackingError`), so every stage entry
    point prints it as one ``error: ...`` line and exits with status 2.
    """


def _is_write_failure(exc: OSError, *places: Path) -> bool:
    """Whether ``exc`` says the output cannot be written: a full disk or read-only filesystem anywhere, or a
    permission problem on one of ``places`` (the output, its folder, its temporary) or below them."""
    if exc.errno in _WRITE_ERRNOS:
        return True
    if exc.errno not in _PERMISSION_ERRNOS:
        return False
    named = [Path(os.fsdecode(f)) for f in (exc.filename, exc.filename2) if f is not None]
    return not named or any(n == p or p in n.parents for n in named for p in places)


def output_error(path: Path, exc: OSError) -> OutputError:
    """The :class:`OutputError` of a failed write of ``path``: ``<path>: cannot write: <strerror> (<ERRNO>) at
    <file>; the previous <path> is kept`` (or ``nothing was written``)."""
    code = exc.errno or 0
    meaning = exc.strerror or os.strerror(code)
    name = errno.errorcode.get(code, str(code))
    at = (
        f" at {os.fsdecode(exc.filename)}"
        if exc.filename is not None and Path(os.fsdecode(exc.filename)) != path
        else ""
    )
    kept = f"the previous {path.name} is kept" if path.exists() else "nothing was written"
    return OutputError(f"{path}: cannot write: {meaning} ({name}){at}; {kept}")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory and an atomic rename.

    Raises:
        OutputError: the folder cannot be created or written, or the disk is full; ``path`` is as it was and the
            temporary file is removed.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and _is_write_failure(exc, path.parent):
            raise output_error(path, exc) from exc
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``path`` only if the block finishes without error.

    On an exception the temporary directory is removed and ``path`` is left as it was.

    Raises:
        OutputError: the folder cannot be created or written, or the disk filled while the block wrote into the
            temporary directory (an ``OSError`` such as ``ENOSPC`` out of the block); ``path`` is as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as exc:
        if _is_write_failure(exc, path.parent):
            raise output_error(path, exc) from exc
        raise
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:  # put the previous output back
                os.replace(old, path)
            raise
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and _is_write_failure(exc, path.parent, tmp):
            raise output_error(path, exc) from exc
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` block: serialises processes
    on one machine or a shared filesystem (tracking-store creation, a study's trial budget)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
