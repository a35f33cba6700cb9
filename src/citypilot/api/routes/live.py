"""The operators' live feed: ``GET /api/v1/live`` upgraded to a WebSocket (docs/integrators/live-feed.md).

The handshake is always accepted, and a refusal is a close with its own code right after (4401, 4403,
4400) preceded by an ``error`` frame: a refused handshake would reach a browser as a bare failure, with
no way to tell a bad token from a bad filter.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import msgspec
from fastapi import APIRouter, WebSocket
from starlette.datastructures import QueryParams

from citypilot.auth.roles import REGISTRY_READERS
from citypilot.live.client import DISCONNECTS, LiveClient, encode, short_reason
from citypilot.live.filters import FILTER_KEYS, FilterError, parse_filter
from citypilot.live.hub import LiveHub

from ..problems import Problem
from ..security import authenticate_websocket, websocket_access

router = APIRouter(tags=["live feed"])
PATH = "/api/v1/live"
MAX_CLIENT_FRAME = 16 * 1024
PARAMETERS = ("access_token", "last_event_id", *FILTER_KEYS)
FRAMES_ACCEPTED = '{"type": "filter", "filter": {...}} or {"type": "pong"}'
_decoder = msgspec.json.Decoder()


class HideAccessToken(logging.Filter):
    """uvicorn logs a WebSocket's path with its query string: keep the token out of the logs."""

    _TOKEN = re.compile(r"(access_token=)[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, str) and "access_token=" in a for a in record.args):
            record.args = tuple(self._TOKEN.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str) and "access_token=" in record.msg:
            record.msg = self._TOKEN.sub(r"\1***", record.msg)
        return True


if not any(isinstance(f, HideAccessToken) for f in logging.getLogger("uvicorn.error").filters):
    logging.getLogger("uvicorn.error").addFilter(HideAccessToken())


async def _refuse(websocket: WebSocket, code: int, detail: str, label: str) -> None:
    """Close a connection that was never served: an error frame with the whole story, then the close."""
    DISCONNECTS.labels(label).inc()
    try:
        await websocket.send_text(encode({"type": "error", "code": code, "detail": detail}))
        await websocket.close(code, short_reason(detail))
    except Exception:  # the peer left first
        pass


def _parameters(params: QueryParams) -> tuple[int | None, dict[str, Any]]:
    """``last_event_id`` and the filter's keys from the query string (each at most once)."""
    for key in params.keys():
        if key not in PARAMETERS:
            raise FilterError(key, f"unknown parameter (known: {', '.join(PARAMETERS)})")
        if len(params.getlist(key)) > 1:
            raise FilterError(key, "give it once (lists are comma-separated)")
    last_event_id = None
    raw = params.get("last_event_id")
    if raw is not None:
        if not raw.isdigit() or len(raw) > 18:
            raise FilterError("last_event_id", "a journal entry id: an integer >= 0")
        last_event_id = int(raw)
    return last_event_id, {k: v for k, v in params.items() if k in FILTER_KEYS}


@router.websocket(PATH)
@websocket_access(REGISTRY_READERS)
async def live_feed(websocket: WebSocket) -> None:
    """Journal entries, alarm changes and twin deltas as they happen, filtered, resumable."""
    await websocket.accept()
    context = websocket.app.state.context
    hub: LiveHub | None = context.extra.get("live")
    if hub is None:
        await _refuse(websocket, 1013, "the live feed is not running in this process: try again later", "unavailable")
        return
    try:
        principal = await authenticate_websocket(websocket)
    except Problem as problem:
        code = 4401 if problem.status == 401 else 4403
        await _refuse(websocket, code, problem.detail, "unauthenticated" if code == 4401 else "forbidden")
        return
    if principal.role not in REGISTRY_READERS:
        await _refuse(websocket, 4403, f"the {principal.role} role may not open the live feed", "forbidden")
        return
    try:
        last_event_id, raw = _parameters(websocket.query_params)
        flt = parse_filter(raw, hub.vocabulary, principal.role)
    except FilterError as exc:
        await _refuse(websocket, 4400, str(exc), "bad_filter")
        return
    client = hub.new_client(principal, flt, websocket.send_text, websocket.close)
    hub.attach(client, last_event_id)
    try:
        await _receive(websocket, client, hub)
    finally:
        client.close(None, "", "client_closed")  # nothing if already closed
        await client.wait_closed()


async def _receive(websocket: WebSocket, client: LiveClient, hub: LiveHub) -> None:
    """Read the client's frames until it leaves, or until the server has closed it (a slow reader may never
    read our close frame: ``finished`` ends the wait then)."""
    finished = asyncio.ensure_future(client.finished.wait())
    try:
        while True:
            receiving = asyncio.ensure_future(websocket.receive())
            done, _ = await asyncio.wait({receiving, finished}, return_when=asyncio.FIRST_COMPLETED)
            if receiving not in done:
                receiving.cancel()
                return
            message = receiving.result()
            if message["type"] == "websocket.disconnect":
                return
            if not client.closed:
                _handle(message, client, hub)
    finally:
        finished.cancel()


def _handle(message: dict[str, Any], client: LiveClient, hub: LiveHub) -> None:
    """One client frame: a new filter, a pong, or a protocol error that closes this connection only."""
    if message.get("bytes") is not None:
        client.close(1003, "binary frames are not accepted: send JSON text", "bad_frame",
                     detail=f"binary frames are not accepted: send JSON text frames, {FRAMES_ACCEPTED}")
        return
    text = message.get("text") or ""
    if len(text) > MAX_CLIENT_FRAME // 4 and len(text.encode()) > MAX_CLIENT_FRAME:
        _protocol_error(client, f"frame larger than {MAX_CLIENT_FRAME} bytes")
        return
    try:
        body = _decoder.decode(text)
    except msgspec.DecodeError:
        _protocol_error(client, f"not JSON: send {FRAMES_ACCEPTED}")
        return
    kind = body.get("type") if isinstance(body, dict) else None
    if kind == "pong":
        return
    if kind != "filter":
        what = f"unknown frame type {str(kind)[:32]!r}" if kind is not None else "a frame is a JSON object with a type"
        _protocol_error(client, f"{what}: send filter or pong")
        return
    if set(body) != {"type", "filter"} or not isinstance(body["filter"], dict):
        _protocol_error(client, 'a filter frame is {"type": "filter", "filter": {...}} (the query parameters\' keys)')
        return
    try:
        flt = parse_filter(body["filter"], hub.vocabulary, client.principal.role)
    except FilterError as exc:
        client.close(4400, str(exc), "bad_filter", detail=str(exc))
        return
    client.set_filter(flt)
    client.offer("filter_applied", encode({"type": "filter_applied", "filter": flt.describe()}))


def _protocol_error(client: LiveClient, reason: str) -> None:
    client.close(4400, reason, "bad_frame", detail=reason)
