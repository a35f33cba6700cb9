"""Running ingestion inside a process: N workers on the shared consumer, and the connectivity watch.

``citypilot serve`` runs ``ingest_workers`` of them (one by default, so that one command is a working
control centre); ``citypilot worker`` runs them alone, on as many machines as the load needs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from psycopg_pool import AsyncConnectionPool

from citypilot.config import Config
from citypilot.equipment.catalog import Catalog
from citypilot.geo.communes import Communes

from .connectivity import ConnectivityWatch
from .normalise import Limits
from .worker import IngestWorker

log = logging.getLogger("citypilot.ingest")
MAP_MARGIN_DEG = 0.03  # about 2-3 km around the metropole: vehicles leave it a little, GPS drifts


def limits_from(config: Config, communes: Communes) -> Limits:
    min_lon, min_lat, max_lon, max_lat = communes.bounds
    return Limits(
        max_message_bytes=config.ingest_max_message_bytes,
        max_future=dt.timedelta(seconds=config.ingest_max_future_s),
        max_age=dt.timedelta(days=config.ingest_max_age_days),
        bounds=(min_lon - MAP_MARGIN_DEG, min_lat - MAP_MARGIN_DEG, max_lon + MAP_MARGIN_DEG, max_lat + MAP_MARGIN_DEG),
    )


class IngestService:
    def __init__(self, config: Config, pool: AsyncConnectionPool, nc: Any, database_url: str, catalog: Catalog,
                 communes: Communes, workers: int, *, watch: bool = True, name: str = "serve") -> None:
        self.workers = [IngestWorker(nc, pool, catalog, limits_from(config, communes), database_url, batch_size=config.ingest_batch_size,
                                     stream_max_bytes=config.ingest_stream_max_bytes,
                                     stream_replicas=config.ingest_stream_replicas, name=f"{name}-{i}")
                        for i in range(workers)]
        self.watch = ConnectivityWatch(pool, nc, catalog, grace_percent=config.offline_grace_percent,
                                       min_grace_s=config.offline_min_grace_s, retention_days=config.ingest_retention_days,
                                       database_url=database_url) if watch else None
        self.stop_event = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for worker in self.workers:
            await worker.start()
            self.tasks.append(asyncio.create_task(worker.run(self.stop_event), name=worker.name))
        if self.watch is not None:
            self.tasks.append(asyncio.create_task(self.watch.run(self.stop_event), name="connectivity"))

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand (so it is committed and acknowledged), then stop."""
        self.stop_event.set()
        if self.tasks:
            done, pending = await asyncio.wait(self.tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            for task in done:
                if task.exception() is not None:
                    log.error("ingest task failed", extra={"task": task.get_name(), "error": repr(task.exception())})
