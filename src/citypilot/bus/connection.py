"""Connecting to NATS: fail fast and clearly at start, reconnect quietly once running.

nats-py retries a refused connection indefinitely and prints a traceback at each attempt through its
default error callback; citypilot checks the endpoint first, bounds the wait, and logs one line per
connection event instead.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client as NATS

from citypilot.config import mask_url
from citypilot.runtime.errors import StartupError

log = logging.getLogger("citypilot.bus")


async def _log_error(exc: Exception) -> None:
    log.warning("NATS connection problem", extra={"error": f"{type(exc).__name__}: {exc}"})


def _disconnect_logger(client: "Client"):
    """nats-py also reports a disconnection when the connection is closed on purpose (shutdown): only a
    lost connection is a warning."""
    async def on_disconnected() -> None:
        if client.is_closed or client.is_closing:
            log.info("NATS connection closed")
        else:
            log.warning("NATS disconnected; reconnecting")
    return on_disconnected


async def _log_reconnected() -> None:
    log.info("NATS reconnected")


def servers(url: str) -> list[str]:
    """A NATS URL or a comma-separated list of them (a cluster) as the client's server list."""
    return [part.strip() for part in url.split(",") if part.strip()]


def _reachable(url: str, timeout: float = 3.0) -> str | None:
    """None if some host of the URL list accepts a TCP connection, else what went wrong with each."""
    errors = []
    for part in servers(url):
        parts = urlsplit(part if "://" in part else f"nats://{part}")
        host, port = parts.hostname or "127.0.0.1", parts.port or 4222
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return None
        except OSError as exc:
            errors.append(f"{host}:{port}: {exc.strerror or exc}")
    return "; ".join(errors)


async def check_nats(url: str) -> None:
    """Reach NATS and its JetStream before serving, so that a wrong URL is a clear message, not a hang."""
    from nats.js.errors import APIError, ServiceUnavailableError

    unreachable = await asyncio.to_thread(_reachable, url)
    if unreachable:
        raise StartupError(f"cannot connect to NATS at {mask_url(url)} ({unreachable}). Is the server running? "
                           "Check CITYPILOT_NATS_URL (unset it to use the embedded server).")
    try:
        nc = await asyncio.wait_for(nats.connect(servers=servers(url), connect_timeout=5, max_reconnect_attempts=0, allow_reconnect=False,
                                                 error_cb=_log_error), timeout=10)
    except Exception as exc:
        raise StartupError(f"cannot connect to NATS at {mask_url(url)}: {type(exc).__name__} {exc}. "
                           "Check CITYPILOT_NATS_URL and its credentials.") from None
    try:
        await nc.jetstream().account_info()
    except (APIError, ServiceUnavailableError, asyncio.TimeoutError, nats.errors.NoRespondersError) as exc:
        raise StartupError(f"NATS at {mask_url(url)} has no JetStream ({type(exc).__name__}): "
                           "start nats-server with JetStream enabled (-js).") from None
    finally:
        await nc.close()


class Client(NATS):
    """nats-py's client, remembering the headers it has parsed.

    Every message NATS's MQTT listener stores carries the same header block (``Nmqtt-Pub: 1``), and
    nats-py parses it again for each message, in a coroutine: a twentieth of an ingest worker's time.
    Parsed once per distinct block (a bounded number), and each message gets its own copy."""

    HEADER_CACHE_SIZE = 4096

    def __init__(self) -> None:
        super().__init__()
        self._parsed_headers: dict[bytes, dict[str, str] | None] = {}

    async def _process_headers(self, headers: Any) -> dict[str, str] | None:
        if not headers:
            return None
        key = bytes(headers)
        if key in self._parsed_headers:
            parsed = self._parsed_headers[key]
        else:
            parsed = await super()._process_headers(headers)
            if len(self._parsed_headers) >= self.HEADER_CACHE_SIZE:
                self._parsed_headers.clear()
            self._parsed_headers[key] = parsed
        return dict(parsed) if parsed is not None else None


async def connect(url: str, name: str) -> Any:
    """A long-lived connection that keeps reconnecting; readiness reports while it is down."""
    client = Client()
    await client.connect(servers=servers(url), name=name, connect_timeout=5, max_reconnect_attempts=-1, reconnect_time_wait=1,
                         allow_reconnect=True, error_cb=_log_error, disconnected_cb=_disconnect_logger(client),
                         reconnected_cb=_log_reconnected)
    return client
