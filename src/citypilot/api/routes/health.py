"""Liveness, readiness and Prometheus metrics: what the city's supervision polls."""

from __future__ import annotations

import asyncio
import hmac

from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from starlette.responses import JSONResponse, Response

from ..context import AppContext, get_context
from ..problems import Problem
from ..security import PUBLIC

router = APIRouter(tags=["operations"])


@router.get("/healthz", dependencies=[PUBLIC], summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check_database(context: AppContext) -> str | None:
    try:
        async with asyncio.timeout(2):
            async with context.pool.connection() as conn:
                await conn.execute("SELECT 1")
    except Exception as exc:  # any failure means not ready; say which
        return f"{type(exc).__name__}: {str(exc).strip()[:200] or 'timeout'}"
    return None


async def _check_nats(context: AppContext) -> str | None:
    if context.nats is None:
        return "not connected"
    if not context.nats.is_connected:  # flush() returns at once while the client is reconnecting
        return "disconnected (reconnecting)" if context.nats.is_reconnecting else "disconnected"
    try:
        async with asyncio.timeout(2):
            await context.nats.flush()
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip()[:200] or 'timeout'}"
    return None


@router.get("/readyz", dependencies=[PUBLIC], summary="Readiness: PostgreSQL and NATS reachable",
            responses={503: {"description": "a dependency is unreachable"}})
async def readyz(context: AppContext = Depends(get_context)) -> JSONResponse:
    db_error, nats_error = await asyncio.gather(_check_database(context), _check_nats(context))
    checks = {"database": db_error or "ok", "nats": nats_error or "ok"}
    ready = db_error is None and nats_error is None
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)


STREAM_BYTES = Gauge("citypilot_ingest_stream_bytes", "Bytes held by the ingest stream (messages not yet applied)")
STREAM_MAX_BYTES = Gauge("citypilot_ingest_stream_max_bytes", "The ingest stream's limit: MQTT messages past it are lost")
BACKLOG = Gauge("citypilot_ingest_backlog_messages", "Messages waiting for, or held by, the ingest workers")


async def _update_stream_gauges(context: AppContext) -> None:
    """Read the ingest stream's state at scrape time, so that any process serving /metrics reports it:
    alert well before the stream is full (the broker acknowledges MQTT messages it then cannot keep)."""
    from citypilot.ingest import protocol
    from citypilot.ingest.stream import backlog

    if context.nats is None or not context.nats.is_connected:
        return
    try:
        async with asyncio.timeout(1):
            js = context.nats.jetstream()
            stream = await js.stream_info(protocol.STREAM)
            waiting = await backlog(js)
    except Exception:  # metrics must answer even when NATS does not
        return
    STREAM_BYTES.set(stream.state.bytes)
    STREAM_MAX_BYTES.set(stream.config.max_bytes or 0)
    BACKLOG.set(waiting.total)


@router.get("/metrics", dependencies=[PUBLIC], summary="Prometheus metrics",
            description="Public unless CITYPILOT_METRICS_TOKEN is set; then send it as a bearer token.")
async def metrics(request: Request, context: AppContext = Depends(get_context)) -> Response:
    expected = context.config.metrics_token
    if expected:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
            raise Problem(401, "metrics require the metrics token", headers={"WWW-Authenticate": "Bearer"})
    await _update_stream_gauges(context)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
