"""Keep the embedded broker's device users equal to what the database allows, while serve runs.

Whoever issues or revokes a credential, or retires an asset (the API, an import, the command line,
another process), the database's triggers NOTIFY ``citypilot_device_access``. The process that started
the embedded nats-server LISTENs, reads the active credentials again and, when they changed, rewrites
the server's user list and reloads it: a revoked device is disconnected at once, a new one can connect.
The credential routes also ask for a refresh and wait for it, so that their answer means "done".
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

import psycopg
from prometheus_client import Gauge
from psycopg_pool import AsyncConnectionPool

from citypilot.auth.broker_users import NOTIFY_CHANNEL, load_device_users_async

from .background import cancel
from .embedded_nats import EmbeddedNats

log = logging.getLogger("citypilot.broker")
RETRY_S = 2.0
STALE = Gauge("citypilot_broker_users_stale",
              "1 while the embedded broker's device users lag behind the database (its last refresh failed)")


class BrokerUserSync:
    def __init__(self, database_url: str, pool: AsyncConnectionPool, server: EmbeddedNats) -> None:
        self.database_url = database_url
        self.pool = pool
        self.server = server
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def refresh(self) -> None:
        """Read the active credentials and apply them; returns once the server has reloaded."""
        async with self._lock:  # one reader at a time, so the last one applied is the newest
            try:
                async with self.pool.connection() as conn:
                    users = await load_device_users_async(conn)
                if await asyncio.to_thread(self.server.apply_device_users, users):
                    log.info("broker device users reloaded", extra={"device_users": len(users)})
            except BaseException:
                STALE.set(1)
                raise
            STALE.set(0)

    async def start(self) -> None:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT count(*) FROM device_credentials WHERE revoked_at IS NULL AND mqtt_password_hash IS NULL"
            )).fetchone()
        if row and row[0]:  # issued before MQTT logins existed: say so, rather than refuse devices silently
            log.warning("device credentials without an MQTT login: they work over HTTP only; issue new ones for "
                        "devices that connect over MQTT", extra={"credentials": row[0]})
        self._task = asyncio.create_task(self._listen(), name="broker-user-sync")
        # Wait (briefly) for the LISTEN, so that no change made after start can be missed.
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._listening.wait(), timeout=10)

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._listening.set()
                    await self.refresh()  # what changed while nobody listened
                    async for _ in conn.notifies():
                        await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database restarting, broker reload refused: log, retry
                log.error("broker device users not updated; retrying",
                          extra={"error": f"{type(exc).__name__}: {exc}"})
                self._listening.set()
                await asyncio.sleep(RETRY_S)
