"""The writer lock of a sketch store: one writing process at a time.

An OS file lock (``flock``) on ``writer.lock`` inside the store, taken without waiting. The file
also holds who took it (pid, host, time, command), so a refused writer can name the holder. The
kernel drops the lock when its process dies, however it dies, so a lock left by a dead process is
taken over by the next writer (which reports that it did). The lock is advisory and local: it
excludes processes on one machine; several machines writing one store over a network filesystem
must not rely on it (Ray shards are workers of the one build that holds it).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings

from .errors import StoreLockedError

__all__ = ["WriterLock", "LOCK_NAME"]

LOCK_NAME = "writer.lock"

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: no exclusion, said once
    fcntl = None


class WriterLock:
    """An exclusive, non-blocking lock on ``folder/writer.lock``; ``release()`` or ``with``."""

    def __init__(self, folder, *, label: str = "") -> None:
        self.path = os.path.join(os.fspath(folder), LOCK_NAME)
        self.label = label or os.fspath(folder)
        self._fd: int | None = None
        self.took_over: dict | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> WriterLock:
        """Take the lock or raise :class:`StoreLockedError` naming the process that holds it."""
        if self._fd is not None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _read(fd)
                    raise StoreLockedError(
                        f"the store at {self.label!r} is being written by another process "
                        f"({describe_holder(holder)}); only one writer at a time. Wait for it to "
                        "finish or stop it (a lock whose process has died is taken over "
                        "automatically)."
                    ) from None
            else:  # pragma: no cover
                warnings.warn("no file locking on this platform: concurrent writers of one store "
                              "are not excluded.", RuntimeWarning, stacklevel=3)
            previous = _read(fd)
            if previous:  # a writer that released cleanly empties the file: this one died
                self.took_over = previous
            info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                    "command": " ".join(sys.argv)[:300]}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the holder record and drop the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:  # a store dropped without close() still frees its lock
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _read(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0)
        out = json.loads(raw.decode()) if raw.strip() else {}
        return out if isinstance(out, dict) else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}


def describe_holder(holder: dict) -> str:
    """``pid 123 on host h since 2026-01-01 10:00:00, running 'sketchcore tda build ...'``."""
    if not holder:
        return "holder unknown"
    since = holder.get("since")
    when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
            if isinstance(since, (int, float)) else "?")
    cmd = str(holder.get("command", ""))[:200]
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {when}"
            + (f", running {cmd!r}" if cmd else ""))
