"""``citypilot worker``: ingest workers in a process of their own.

They connect to the configured NATS (or to the embedded one a running ``citypilot serve`` started, on
its configured port) and to the configured PostgreSQL (or join the embedded one), and share the
ingest stream's consumer with every other worker: each message is processed by one of them, and the
messages of a worker that dies are redelivered to the others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import typer
from psycopg_pool import AsyncConnectionPool

from citypilot.bus import connection as bus_connection
from citypilot.config import Config
from citypilot.equipment.catalog import default_catalog
from citypilot.geo.communes import metropole
from citypilot.runtime.errors import StartupError
from citypilot.runtime.infrastructure import nats_url_for

from .common import database, fail

log = logging.getLogger("citypilot.worker")


async def _serve_workers(config: Config, database_url: str, nats_url: str, count: int) -> None:
    from citypilot.ingest.service import IngestService

    await bus_connection.check_nats(nats_url)
    nc = await bus_connection.connect(nats_url, f"citypilot-worker-{os.getpid()}")
    async with AsyncConnectionPool(database_url, min_size=1, max_size=max(2, count + 1), open=False) as pool:
        await pool.open(wait=True, timeout=15)
        service = IngestService(config, pool, nc, database_url, default_catalog(), metropole(), count,
                                name=f"worker-{os.getpid()}")
        await service.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        typer.echo(f"citypilot worker: {count} ingest worker(s) on {nats_url.split('@')[-1]}; Ctrl-C stops them.")
        await stop.wait()
        await service.stop()
    # Every batch taken is committed and acknowledged by now: flush the last acks and close. (drain()
    # would wait for the pull subscription's pending fetch, up to its 30 s timeout.)
    try:
        await nc.flush(timeout=2)
    finally:
        await nc.close()


def run_workers(config: Config, count: int) -> None:
    nats_url = nats_url_for(config)
    with database(config) as url:
        try:
            asyncio.run(_serve_workers(config, url, nats_url, count))
        except StartupError as exc:
            if config.nats_url is None:
                fail(f"{exc}\n(with embedded defaults, start `citypilot serve` first: workers join its NATS server)")
            fail(str(exc))
