"""One serving citypilot per data directory: an advisory file lock held for the life of the process.

The embedded NATS server belongs to the process that started it; a second ``citypilot serve`` on the
same data directory must say so and stop, not take the first one's server away. Admin commands
(user, assets, db) do not take the lock: they share the embedded PostgreSQL safely.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import StartupError


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "serve.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StartupError(f"another citypilot (pid {holder}) is already serving with the data directory "
                               f"{self.path.parent}; stop it first, or give this one its own CITYPILOT_DATA_DIR.") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
