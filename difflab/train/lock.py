"""One writer per run directory: an exclusive ``fcntl.flock`` on ``RUN/.lock``.

The kernel drops the lock when its process dies, so a lock file left by a killed run is stale by
construction and the next run takes it over (saying whose it was); a live holder makes a second
``train`` / ``--resume`` on the same directory fail with one line naming its pid.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from difflab.errors import ConfigError

LOCK_FILE = ".lock"


class RunLock:
    """``with RunLock(run_dir):`` holds the directory's lock (re-entrant within one object)."""

    def __init__(self, run_dir):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None
        self.depth = 0
        self.stale_holder: str | None = None
        self.created = False

    def acquire(self) -> "RunLock":
        if self.fd is not None:
            self.depth += 1
            return self
        try:
            import fcntl
        except ImportError:  # no flock (Windows): one writer is then the user's to ensure
            self.depth += 1
            return self
        self.created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(f"run dir {self.path.parent} is in use by {holder}; wait for it to finish or use "
                              f"another --out (one writer per run directory)") from None
        previous = os.pread(fd, 200, 0).decode(errors="replace").strip()
        self.stale_holder = previous or None  # a dead process's record: its lock died with it
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self.fd, self.depth = fd, 1
        return self

    def release(self) -> None:
        self.depth -= 1
        if self.depth > 0 or self.fd is None:
            return
        os.ftruncate(self.fd, 0)
        if self.created and [p.name for p in self.path.parent.iterdir()] == [LOCK_FILE]:
            self.path.unlink()  # a run that failed before writing anything leaves no directory behind
            self.path.parent.rmdir()
        os.close(self.fd)  # closing the descriptor drops the flock
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


__all__ = ["LOCK_FILE", "RunLock"]
