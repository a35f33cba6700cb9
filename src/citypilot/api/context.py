"""What request handlers need, built once per process by the application's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.requests import HTTPConnection
from psycopg_pool import AsyncConnectionPool

from citypilot.config import Config
from citypilot.equipment.catalog import Catalog
from citypilot.geo.communes import Communes
from citypilot.runtime.infrastructure import Endpoints


@dataclass
class AppContext:
    config: Config
    endpoints: Endpoints
    pool: AsyncConnectionPool
    catalog: Catalog
    communes: Communes
    secret_key: str
    nats: Any = None  # nats.aio.client.Client when connected
    broker_users: Any = None  # runtime.broker_sync.BrokerUserSync when this process owns the embedded broker
    extra: dict[str, Any] = field(default_factory=dict)


def context_of(request: HTTPConnection) -> AppContext:
    return request.app.state.context  # type: ignore[no-any-return]


async def get_context(request: Request) -> AppContext:
    """The dependency. Async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a
    thread hop on every request for a dictionary lookup."""
    return request.app.state.context
