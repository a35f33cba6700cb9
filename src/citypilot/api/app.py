"""The control centre's HTTP application.

``create_app`` wires the routers, the error format, the middleware (request size limit, access log,
metrics) and checks that every route declares who may call it. The lifespan opens the PostgreSQL pool
and the NATS connection against endpoints that ``Infrastructure`` brought up beforehand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware
from prometheus_client import Counter, Histogram
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from citypilot import __version__
from citypilot.auth.accounts import purge_expired_sessions
from citypilot.auth.tokens import load_or_create_secret
from citypilot.bus import connection as bus_connection
from citypilot.config import Config
from citypilot.db import use_fast_json
from citypilot.equipment.catalog import default_catalog
from citypilot.geo.communes import metropole
from citypilot.runtime.infrastructure import Endpoints

from . import problems
from .context import AppContext
from .problems import problem_response
from .routes import (alarms, assets, auth, catalog, field, health, ingest, journal, kpi, open311, requests, teams, transport,
                     twin, users)
from .routes import commands as command_routes
from .routes import work_orders
from .routes import lighting as lighting_routes
from .routes import live as live_feed
from .routes import ui as web_ui
from .security import LoginThrottle, audit_routes

log = logging.getLogger("citypilot.http")

HTTP_REQUESTS = Counter("citypilot_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
HTTP_LATENCY = Histogram("citypilot_http_request_duration_seconds", "HTTP request duration", ["method", "route"],
                         buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


class BodyLimitMiddleware:
    """Refuse request bodies larger than the configured limit (413) before reading them whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"request body larger than {self.max_bytes} bytes (CITYPILOT_HTTP_MAX_BODY_BYTES)"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await problem_response(413, detail)(scope, receive, send)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await problem_response(413, detail)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class RejectNulMiddleware:
    """Refuse a NUL byte anywhere in the URL (400): no identifier or filter legitimately holds one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            raw = scope.get("raw_path") or b""
            if "\x00" in scope["path"] or b"%00" in raw or b"%00" in scope.get("query_string", b""):
                await problem_response(400, "the URL contains a NUL byte")(scope, receive, send)
                return
        await self.app(scope, receive, send)


class AccessLogMiddleware:
    """One JSON log line and two metrics per request, labelled with the route template (not the URL)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], template, str(status)).inc()
            HTTP_LATENCY.labels(scope["method"], template).observe(elapsed)
            principal = getattr(scope.get("state", {}).get("principal"), "username", None) if isinstance(scope.get("state"), dict) else None
            log.info("request", extra={"method": scope["method"], "path": scope["path"], "status": status,
                                       "duration_ms": round(elapsed * 1000, 2), "user": principal,
                                       "client": (scope.get("client") or ("", 0))[0]})


def create_app(config: Config, endpoints: Endpoints) -> FastAPI:
    use_fast_json()
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(endpoints.database_url, min_size=1, max_size=config.database_pool_size,
                                   open=False, kwargs={"application_name": "citypilot"})
        await pool.open(wait=True, timeout=15)
        nc = await bus_connection.connect(endpoints.nats_url, "citypilot-api") if endpoints.nats_url else None
        app.state.context = AppContext(
            config=config, endpoints=endpoints, pool=pool, catalog=default_catalog(), communes=metropole(),
            secret_key=load_or_create_secret(config.auth_secret_key, config.data_dir), nats=nc,
        )
        from citypilot.citizens.runtime import Interventions

        app.state.context.extra["interventions"] = Interventions.build(config, pool, dict(app.state.context.catalog.services))
        log.info("citypilot ready", extra={"version": __version__, "mqtt": endpoints.mqtt_url,
                                           "embedded_database": endpoints.embedded_database,
                                           "embedded_nats": endpoints.embedded_nats})
        async with pool.connection() as conn:
            await purge_expired_sessions(conn)
        broker_users = violations = None
        if endpoints.nats_server is not None:  # this process started the embedded broker: it keeps its users
            from citypilot.runtime.broker_sync import BrokerUserSync
            from citypilot.runtime.broker_violations import BrokerViolationWatch

            broker_users = BrokerUserSync(endpoints.database_url, pool, endpoints.nats_server)
            await broker_users.start()
            app.state.context.broker_users = broker_users
            violations = BrokerViolationWatch(endpoints.nats_server.log_file, pool)  # refused publishes
            await violations.start()
        ingest = alarms_runtime = commands_sweeper = None
        if nc is not None:
            from citypilot.ingest.service import IngestService
            from citypilot.ingest.stream import ensure_stream

            # The stream must exist before devices publish, workers or not: without it the broker would
            # acknowledge their messages and drop them.
            await ensure_stream(nc, config.ingest_stream_max_bytes, config.ingest_stream_replicas)
            from citypilot.alarms.runtime import AlarmRuntime

            alarms_runtime = AlarmRuntime(config, pool, nc, app.state.context.catalog, endpoints.database_url)
            await alarms_runtime.prepare()  # before the workers publish what the engine reads
            app.state.context.extra["alarms"] = alarms_runtime
            app.state.context.extra["notify_config"] = alarms_runtime.notify_config

            ingest = IngestService(config, pool, nc, endpoints.database_url, app.state.context.catalog,
                                   app.state.context.communes, config.ingest_workers)
            await ingest.start()
            app.state.context.extra["ingest"] = ingest
            await alarms_runtime.start()
            from citypilot.commands.service import Commands, settings_of

            command_service = Commands(pool, nc, app.state.context.catalog, settings_of(config))
            app.state.context.extra["commands"] = command_service
            commands_stop = asyncio.Event()
            commands_sweeper = asyncio.create_task(command_service.run(commands_stop), name="commands-sweeper")
        rollup_stop = asyncio.Event()
        rollup = None
        if config.lighting_rollup_every_s:  # the daily per-light energy behind the monthly KPI by street
            from citypilot.lighting import rollup as lighting_rollup

            rollup = asyncio.create_task(
                lighting_rollup.run(pool, rollup_stop, config.lighting_rollup_every_s,
                                    retention_days=config.ingest_retention_days), name="lighting-rollup")
        from citypilot.live.hub import LiveHub

        live = LiveHub.from_context(app.state.context)  # the operators' WebSocket feed (routes/live.py)
        await live.start()
        app.state.context.extra["live"] = live
        try:
            yield
        finally:
            await live.stop()
            if rollup is not None:  # stops between days; a day being rolled is given a few seconds
                rollup_stop.set()
                if not (await asyncio.wait({rollup}, timeout=5))[0]:
                    from citypilot.runtime.background import cancel

                    await cancel(rollup)
            if commands_sweeper is not None:
                commands_stop.set()
                await commands_sweeper
            if alarms_runtime is not None:
                await alarms_runtime.stop()
            if ingest is not None:
                await ingest.stop()
            if violations is not None:
                await violations.stop()
            if broker_users is not None:
                await broker_users.stop()
            if nc is not None:
                try:  # ingest has acknowledged its batches: flush what is buffered, then close
                    await nc.flush(timeout=2)
                except Exception as exc:  # NATS down or reconnecting: nothing more can be sent
                    log.warning("NATS not flushed at shutdown", extra={"error": f"{type(exc).__name__}: {exc}"})
                await nc.close()
            await pool.close()

    app = FastAPI(
        title="citypilot", version=__version__, lifespan=lifespan,
        description="The urban hypervisor's API. Every route needs a bearer token from /api/v1/auth/login "
                    "unless marked public; `x-roles` lists the roles allowed.",
        openapi_url="/api/openapi.json", docs_url=None, redoc_url=None,  # no CDN-served docs UI: works offline
    )
    app.state.login_throttle = LoginThrottle()
    problems.install(app)
    # Routes are matched in order: the busiest public entry points (device batches, Open311) come first.
    routers = (health.router, ingest.router, open311.router, auth.router, catalog.router, assets.router, twin.router,
               users.router, alarms.router, journal.router, live_feed.router, web_ui.router, kpi.router, transport.router,
               requests.router, work_orders.router, work_orders.links, teams.router, field.router, command_routes.router,
               lighting_routes.router)
    audit_routes(routers)
    for router in routers:
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.http_max_body_bytes)
    app.add_middleware(RejectNulMiddleware)
    app.add_middleware(AccessLogMiddleware)
    # Large JSON documents (the map snapshot: 9.2 MB at 250,000 assets, twin pages, exports) shrink
    # about four-fold. Level 1, measured on such a snapshot: 2.49 MB in 99 ms (level 5: 2.22 MB in
    # 273 ms): the server's CPU is worth more than the last 10 %. Responses that already carry an
    # encoding (the UI bundle's gzip copy) are left as they are.
    app.add_middleware(GZipMiddleware, minimum_size=32 * 1024, compresslevel=1)
    return app
