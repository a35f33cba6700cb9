"""What the interventions routes share in one API process: the request categories, the address index
(rebuilt when the registry changes) and the routing adapter."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool
from starlette.concurrency import run_in_threadpool

from citypilot.config import Config
from citypilot.dispatch.routing import Routing, routing_for

from .addresses import AddressIndex
from .services import ServiceCatalogue, load_services

log = logging.getLogger("citypilot.interventions")
ADDRESS_CHECK_S = 30.0  # how often, at most, the registry is asked whether addresses changed


class AddressSource:
    """The address index, built from the registry on first use and again when the registry changed
    (looked at no more than every 30 s, when a search comes)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.index: AddressIndex | None = None
        self._stamp: tuple[Any, ...] | None = None
        self._checked = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> AddressIndex:
        if self.index is not None and time.monotonic() - self._checked < ADDRESS_CHECK_S:
            return self.index
        async with self._lock:
            if self.index is not None and time.monotonic() - self._checked < ADDRESS_CHECK_S:
                return self.index
            async with self.pool.connection() as conn:
                stamp = await (await conn.execute("SELECT count(*), max(updated_at) FROM assets")).fetchone()
                if self.index is None or stamp != self._stamp:
                    rows = await (await conn.execute(
                        "SELECT address, lat, lon FROM assets WHERE address IS NOT NULL AND status <> 'retired'")).fetchall()
                    started = time.perf_counter()
                    self.index = await run_in_threadpool(AddressIndex, rows)
                    log.info("address index built", extra={"streets": len(self.index), "addresses": len(rows),
                                                           "ms": round((time.perf_counter() - started) * 1000)})
                    self._stamp = tuple(stamp) if stamp else None
            self._checked = time.monotonic()
            return self.index


@dataclass
class Interventions:
    catalogue: ServiceCatalogue
    addresses: AddressSource
    routing: Routing

    @classmethod
    def build(cls, config: Config, pool: AsyncConnectionPool, service_names: dict[str, Any]) -> "Interventions":
        return cls(load_services(config.requests_services_file, service_names), AddressSource(pool),
                   routing_for(config))
