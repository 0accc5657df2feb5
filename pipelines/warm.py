"""A warm interpreter that stage processes fork from: torch, Lightning, torchmetrics and MLflow imported once.

Every DVC stage is a new Python process, and a torch stage spends most of its fixed cost importing libraries
(torch, Lightning, torchmetrics, MLflow, matplotlib: about 9 s on this project's 2-core machines, against a
perceptron's 1 s of training). :func:`launch` runs a stage's module the way ``python -m <module>`` would, but in a
child forked from a *warm server* that has already imported those libraries, the same idea as Android's zygote or
``multiprocessing``'s ``forkserver``. The client is the process DVC started: it stays in the foreground for the
whole stage, hands its stdin/stdout/stderr, argv, working directory and environment to the child, forwards
SIGINT/SIGTERM/SIGHUP to it, and exits with its exit status. A stage run this way is the same code on the same
inputs, so it writes the same bytes (``tests/test_warm.py`` compares the outputs of both paths).

* **No project code is preloaded.** The server imports third-party libraries only (:data:`PRELOAD`); every
  ``pipelines``/``models`` module is imported fresh in each child, from the client's working directory, so an
  edited module or a different checkout (DVC's experiment copies, the tests' temporary repos) is always used as is.
* **One server per interpreter, installed packages and import-time environment** (:func:`server_key`: the
  executable, the mtime of each ``site-packages`` folder, and the ``OMP_*``/``MKL_*``/``CUDA_*``/``PYTHON*``/...
  variables that libraries read when imported). A ``pip install`` or a changed thread setting gets a new server;
  the old one exits after :data:`IDLE_SECONDS` without a connection.
* **The first stage never waits for the server.** A client that finds no server starts one in the background (a
  new session, its standard streams on ``/dev/null``, so no pipe is held open) and runs its own stage cold, in
  process. The server publishes its socket only once its imports are done (bound under a temporary name, then
  renamed), and a lock file keeps a second server from starting.
* **The server never runs a tensor operation**, so no OpenMP or CUDA state exists at fork time, and it holds no
  threads (checked before each fork; a server that finds one exits rather than fork unsafely).
* A child ends with ``os._exit`` after the ``atexit`` handlers and a flush: the interpreter's teardown (seconds,
  with torch loaded) is skipped.
* ``DEEPNOTES_WARM=0`` turns it off: every stage then runs cold, in the client process.

Protocol (a Unix socket in a per-user ``0700`` folder): the client sends one length-prefixed JSON request
``{"module", "argv", "cwd", "env"}`` with its fds 0, 1 and 2 attached (``SCM_RIGHTS``); the child answers
``{"pid"}`` and, at the end, ``{"exit"}``. A connection that closes without ``exit`` means the child died (a signal,
the OOM killer): the client reports it and exits 1. A client that disappears (``kill -9``) gets its child a SIGTERM.

Unix only (``fork``, ``SCM_RIGHTS``); elsewhere every stage runs cold.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import runpy
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

#: Third-party modules the server imports before it forks (missing ones are skipped): what the torch stages use.
PRELOAD = (
    "numpy",
    "pandas",
    "yaml",
    "pydantic",
    "torch",
    "torch.nn",
    "torch.optim",
    "lightning.pytorch",
    "lightning.pytorch.callbacks",
    "lightning.pytorch.loggers",
    "torchmetrics",
    "torchmetrics.classification",
    "torchmetrics.regression",
    "kornia.augmentation",
    "mlflow",
    "mlflow.pyfunc",
    "mlflow.models",
    "mlflow.entities",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.system_metrics.system_metrics_monitor",
    "matplotlib",
    "matplotlib.pyplot",
    "sklearn.model_selection",
    "scipy.stats",
    "tokenizers",  # the served text models' raw input
)


def _fill_caches() -> None:
    """Fill caches the stages would each fill again: MLflow's map of installed packages to modules (about 1 s,
    read by every ``log_model`` to check the requirements)."""
    from mlflow.utils import requirements_utils

    requirements_utils._init_packages_to_modules_map()


#: Seconds a server waits for a connection before it exits.
IDLE_SECONDS = float(os.environ.get("DEEPNOTES_WARM_IDLE", "300"))

#: Environment variables that libraries read at import time: a server is only reused when these match.
IMPORT_TIME_ENV = (
    "OMP_",
    "MKL_",
    "KMP_",
    "OPENBLAS_",
    "GOMP_",
    "CUDA_",
    "NVIDIA_",
    "NCCL_",
    "GLOO_",
    "TORCH",
    "PYTORCH_",
    "PYTHON",
    "LD_",
    "MPL",
    "DYLD_",
)

_HEADER = struct.Struct("!I")


def enabled(env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether stages may run in a warm child: not with ``DEEPNOTES_WARM=0`` (or ``off``/``false``/``no``), and
    only where ``fork`` and ``SCM_RIGHTS`` exist."""
    if env.get("DEEPNOTES_WARM", "1").strip().lower() in {"0", "off", "false", "no"}:
        return False
    return hasattr(os, "fork") and hasattr(socket, "send_fds")


def server_key(env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """A 16-hex-digit key of what a server's imports depend on: the interpreter, its version, the mtime of each
    ``site-packages`` folder on ``sys.path`` (a ``pip install`` changes it) and :data:`IMPORT_TIME_ENV` variables."""
    parts = [sys.executable, sys.version]
    for entry in sys.path:
        if entry.endswith("site-packages") and os.path.isdir(entry):
            parts.append(f"{entry}:{os.stat(entry).st_mtime_ns}")
    parts += sorted(f"{k}={v}" for k, v in env.items() if k.startswith(IMPORT_TIME_ENV) and k != "PYTHONPATH")
    parts.append(f"PYTHONPATH={env.get('PYTHONPATH', '')}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def runtime_dir() -> Path:
    """The per-user folder of the servers' sockets and locks (``$XDG_RUNTIME_DIR/deepnotes-warm`` or
    ``<tmp>/deepnotes-warm-<uid>``), created ``0700``.

    Raises:
        PermissionError: the folder exists but belongs to another user or is open to others.
    """
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "deepnotes-warm" if base else Path(tempfile.gettempdir()) / f"deepnotes-warm-{os.getuid()}"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{path}: expected a folder of uid {os.getuid()} with mode 0700")
    return path


def socket_path(key: str) -> Path:
    """The socket of the server with ``key`` (:func:`server_key`)."""
    return runtime_dir() / f"{key}.sock"


# --------------------------------------------------------------------------------------------------- client side


def launch(module: str, argv: list[str]) -> int:
    """Run ``python -m <module> <argv...>`` in a warm child when a server is up, else in this process (and start a
    server in the background for the next stage). Returns the exit status.

    Args:
        module: the stage's module, e.g. ``pipelines.stages.train``.
        argv: its arguments, e.g. ``["lenet5_mnist"]``.
    """
    if not enabled():
        return run_module(module, argv)
    try:
        path = socket_path(server_key())
    except OSError:
        return run_module(module, argv)
    conn = _connect(path)
    if conn is None:
        _start_server(path)
        return run_module(module, argv)
    with conn:
        return _run_remote(conn, module, argv)


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:  # no server, or a stale socket of one that exited
        conn.close()
        return None
    return conn


def _start_server(path: Path) -> None:
    """Start a server for ``path`` in a new session with its streams on /dev/null (it never holds a caller's pipe).
    It runs from this directory with this environment, so it finds ``pipelines.warm`` as this client did."""
    with contextlib.suppress(OSError):
        subprocess.Popen(
            [sys.executable, "-m", "pipelines.warm", "serve", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )


def _run_remote(conn: socket.socket, module: str, argv: list[str]) -> int:
    request = {"module": module, "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "path": sys.path}
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    payload = json.dumps(request).encode()
    socket.send_fds(conn, [_HEADER.pack(len(payload)) + payload], [0, 1, 2])
    reader = conn.makefile("rb")
    hello = _read_message(reader)
    if hello is None or "pid" not in hello:
        print(f"error: warm stage server at {conn.getpeername()} did not start {module}", file=sys.stderr)
        return 1
    child = int(hello["pid"])

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    done = _read_message(reader)
    if done is None or "exit" not in done:
        print(
            f"error: the stage process {child} ({module} {' '.join(argv)}) died without an exit status", file=sys.stderr
        )
        return 1
    return int(done["exit"])


def _read_message(reader) -> dict[str, Any] | None:
    header = reader.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    body = reader.read(size)
    return json.loads(body) if len(body) == size else None


def _send_message(conn: socket.socket, message: dict[str, Any]) -> None:
    payload = json.dumps(message).encode()
    conn.sendall(_HEADER.pack(len(payload)) + payload)


def run_module(module: str, argv: list[str]) -> int:
    """Run ``module`` as ``__main__`` with ``argv`` in this process, as ``python -m`` does; returns its exit status
    (``SystemExit``'s code; 1 with the traceback on stderr for an exception)."""
    sys.argv = [module, *argv]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return _exit_status(exc.code)
    except BaseException:  # noqa: BLE001 - reported exactly as the interpreter would, then the exit status
        traceback.print_exc()
        return 1
    return 0


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


# --------------------------------------------------------------------------------------------------- server side


def serve(path: Path) -> None:
    """Import :data:`PRELOAD`, publish the socket at ``path`` and fork a child per connection until
    :data:`IDLE_SECONDS` pass without one. Returns at once when another server holds ``path``'s lock (its pid is
    in the lock file, for :func:`stop`)."""
    lock = open(path.with_suffix(".lock"), "a+")  # noqa: SIM115 - held for the server's lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another server is starting or running
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    origin = sys.path[0]  # the directory this server started in: its project modules are not the children's
    os.environ.setdefault("MPLBACKEND", "Agg")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    failures = []
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception as exc:  # noqa: BLE001 - an optional library; the child imports what it needs
            failures.append(f"preload {name}: {type(exc).__name__}: {exc}")
    try:
        _fill_caches()
    except Exception as exc:  # noqa: BLE001
        failures.append(f"caches: {type(exc).__name__}: {exc}")
    path.with_suffix(".log").write_text("".join(f"{line}\n" for line in failures))
    # Some imports configure the root logger (mlflow's flavors, through pytorch_lightning); a stage that calls
    # logging.basicConfig first, as in a fresh process, must find it as Python leaves it.
    root.handlers[:], root.level = handlers, level
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = path.with_name(f".{os.getpid()}.sock")  # AF_UNIX paths are short (108 bytes): keep it brief
    with contextlib.suppress(FileNotFoundError):
        staging.unlink()
    listener.bind(str(staging))
    listener.listen(64)
    os.replace(staging, path)  # published only now, with every import done
    published = path.stat().st_ino
    signal.signal(signal.SIGCHLD, _reap)  # waited for, so their CPU time adds to this server's (benchmarks read it)
    listener.settimeout(IDLE_SECONDS)
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                break
            if threading.active_count() > 1:  # an import started a thread: forking now would be unsafe
                conn.close()
                break
            if os.fork() == 0:
                listener.close()
                _child(conn, origin)  # never returns
            conn.close()
    finally:
        with contextlib.suppress(OSError):
            if path.stat().st_ino == published:  # not a newer server's socket
                path.unlink()
        listener.close()


def _reap(_signum: int, _frame: Any) -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _lock_holder(lock_path: Path) -> int | None:
    """The pid written in ``lock_path`` when a server holds that lock, else ``None`` (no file, or a free lock)."""
    try:
        with open(lock_path) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return None  # nobody holds it: no server
            except OSError:
                return int(lock.read().strip())
    except (OSError, ValueError):
        return None


def server_pid(env: dict[str, str] | os._Environ[str] = os.environ) -> int | None:
    """The pid of the running server for ``env`` (:func:`server_key`), or ``None`` when there is none."""
    return _lock_holder(socket_path(server_key(env)).with_suffix(".lock"))


def stop() -> int:
    """Stop every running server of this user (SIGTERM to the pid in each held lock file); returns how many."""
    stopped = 0
    for pid in filter(None, map(_lock_holder, runtime_dir().glob("*.lock"))):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            stopped += 1
    return stopped


def _child(conn: socket.socket, origin: str) -> None:
    """In the forked child: adopt the client's streams, directory, environment, ``sys.path`` and argv, forget any
    module imported from the server's own directory ``origin`` (this package), run the stage, report its exit
    status and leave with ``os._exit`` (skipping the interpreter's teardown)."""
    status = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        conn.settimeout(30)
        data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
        if len(fds) != 3 or len(data) < _HEADER.size:
            os._exit(1)
        (size,) = _HEADER.unpack(data[: _HEADER.size])
        body = data[_HEADER.size :]
        while len(body) < size:
            chunk = conn.recv(size - len(body))
            if not chunk:
                os._exit(1)
            body += chunk
        conn.settimeout(None)
        request = json.loads(body)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.setpgid(0, 0)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[:] = request["path"]
        _forget_project_modules(origin)
        _send_message(conn, {"pid": os.getpid()})
        threading.Thread(target=_watch_client, args=(conn,), daemon=True).start()
        status = run_module(request["module"], list(request["argv"]))
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - the child must always reach os._exit
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        with contextlib.suppress(BaseException):
            _send_message(conn, {"exit": status})
        os._exit(status)


def _forget_project_modules(origin: str) -> None:
    """Drop from ``sys.modules`` this ``pipelines`` package and every top-level module or package that was loaded
    from the server's ``sys.path[0]`` (``origin``), with their submodules: the child imports the client's copies
    afresh. Libraries are kept, a virtual environment inside ``origin`` included (a path with ``site-packages``)."""
    prefix = os.path.join(os.path.abspath(origin or "."), "")

    def local(module: Any) -> bool:
        files = [getattr(module, "__file__", None) or "", *list(getattr(module, "__path__", None) or [])]
        return any(f and os.path.abspath(f).startswith(prefix) and "site-packages" not in f for f in files)

    tops = {name for name, module in list(sys.modules.items()) if "." not in name and local(module)}
    tops.add("pipelines")
    for name in list(sys.modules):
        if name.partition(".")[0] in tops:
            del sys.modules[name]


def _watch_client(conn: socket.socket) -> None:
    """End the child (SIGTERM) when its client goes away without waiting for it (killed, or its pipe closed)."""
    with contextlib.suppress(OSError):
        while conn.recv(1):
            pass
    os.kill(os.getpid(), signal.SIGTERM)


def start(wait: float = 0.0) -> bool:
    """Start a server for this interpreter and environment unless one is up; with ``wait``, block up to that many
    seconds until it accepts connections. Returns whether one is accepting now."""
    path = socket_path(server_key())
    conn = _connect(path)
    if conn is None:
        _start_server(path)
    deadline = time.monotonic() + wait
    while conn is None and time.monotonic() < deadline:
        time.sleep(0.2)
        conn = _connect(path)
    if conn is None:
        return False
    conn.close()
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.warm start [--wait SECONDS] | stop``: start this environment's server (and wait until
    it accepts), or stop this user's servers. ``serve <socket>`` is how :func:`launch` runs one."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["start"] and (len(args) == 1 or (len(args) == 3 and args[1] == "--wait")):
        ready = start(float(args[2]) if len(args) == 3 else 0.0)
        print("warm stage server " + ("ready" if ready else "starting"))
        return 0 if ready or len(args) == 1 else 1
    if args == ["stop"]:
        print(f"stopped {stop()} warm stage server(s)")
        return 0
    if len(args) == 2 and args[0] == "serve":
        path = Path(args[1])
        try:
            serve(path)
        except BaseException:  # a server has no terminal: leave the reason beside its socket
            path.with_suffix(".log").write_text(traceback.format_exc())
            raise
        return 0
    print("usage: python -m pipelines.warm start [--wait SECONDS] | stop", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
