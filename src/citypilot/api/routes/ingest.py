"""Device data over HTTP, the dead-letter store, and device credentials."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
from typing import Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from psycopg.rows import dict_row

from citypilot.auth import devices
from citypilot.auth.accounts import Principal
from citypilot.auth.roles import Role, sees_restricted
from citypilot.ingest import protocol
from citypilot.ingest.normalise import REASONS
from citypilot.registry import repository as repo
from citypilot.registry.sheet import ASSET_ID_RE

from ..context import AppContext, get_context
from ..problems import Problem
from ..responses import FastJSONResponse
from ..security import allow, allow_device

log = logging.getLogger("citypilot.broker")
router = APIRouter(prefix="/api/v1", tags=["ingestion"])
MAX_HTTP_MESSAGES = 1000
DEAD_LETTER_READERS = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.OPERATOR, Role.POLICE})
CREDENTIAL_ADMINS = frozenset({Role.ADMIN})


class DeviceMessage(msgspec.Struct, forbid_unknown_fields=True):
    device: str
    channel: str
    payload: msgspec.Raw


class IngestBatch(msgspec.Struct, forbid_unknown_fields=True):
    messages: list[DeviceMessage]


_batch_decoder = msgspec.json.Decoder(IngestBatch)


@router.post("/ingest", status_code=202, summary="Device messages over HTTP (gateways, webhooks), in batches",
             description="Body: {\"messages\": [{\"device\": ID, \"channel\": \"telemetry\"|\"state\"|\"event\", "
                         "\"payload\": {...}}]}, each payload as on MQTT (docs/protocol.md). Answered once every "
                         "message is durably in the ingest stream; validation then happens as for MQTT, and "
                         "rejected messages go to the dead-letter store.",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}},
             responses={503: {"description": "the ingest stream is full or unreachable: retry later"}})
async def ingest_http(request: Request, identity: devices.DeviceIdentity = allow_device(),
                      context: AppContext = Depends(get_context)) -> dict[str, Any]:
    body = await request.body()
    try:
        batch = _batch_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Problem(422, f"not an ingest batch: {exc}", type_="invalid-input") from None
    if not 1 <= len(batch.messages) <= MAX_HTTP_MESSAGES:
        raise Problem(422, f"a batch holds 1 to {MAX_HTTP_MESSAGES} messages", type_="invalid-input")
    for index, message in enumerate(batch.messages):
        if not ASSET_ID_RE.match(message.device) or message.channel not in protocol.INBOUND_CHANNELS:
            raise Problem(422, f"messages[{index}]: device must be an asset id and channel one of "
                               f"{', '.join(protocol.INBOUND_CHANNELS)}", type_="invalid-input")
    if context.nats is None or not context.nats.is_connected:
        raise Problem(503, "the message bus is unavailable; retry later", headers={"Retry-After": "5"})
    js = context.nats.jetstream()
    headers = {protocol.SOURCE_HEADER: "http", protocol.AUTHENTICATED_DEVICE_HEADER: identity.device_id}
    # The server counts the headers in its limit, and closes the connection (ours, shared by every request
    # and the ingest worker) on a message over it: refuse it here.
    header_bytes = len(b"NATS/1.0\r\n\r\n") + sum(len(k) + len(v) + 4 for k, v in headers.items())
    too_big = [i for i, m in enumerate(batch.messages) if len(m.payload) + header_bytes > context.nats.max_payload]
    if too_big:
        raise Problem(413, f"messages[{too_big[0]}]: larger than the bus accepts ({context.nats.max_payload} bytes); "
                           "nothing was accepted")
    try:
        await asyncio.gather(*(js.publish(protocol.subject(m.device, m.channel), bytes(m.payload), headers=headers)
                               for m in batch.messages))
    except Exception as exc:  # nats-py raises several types here (no stream, timeout, API error, disconnect)
        raise Problem(503, f"the ingest stream did not accept every message ({type(exc).__name__}); retry the "
                           "batch: a reading that carries its own timestamp is stored once however often it is sent",
                      headers={"Retry-After": "5"}) from None
    return {"accepted": len(batch.messages)}


@router.get("/ingest/dead-letters", summary="Messages that could not be applied, newest first, with why and their bytes")
async def list_dead_letters(
    device: str | None = Query(None, max_length=64), reason: str | None = Query(None, max_length=40),
    since: dt.datetime | None = Query(None, description="Received at or after (ISO 8601 with time zone)"),
    limit: int = Query(100, ge=1, le=1000), cursor: int | None = Query(None, ge=1, description="next_cursor of the previous page"),
    principal: Principal = allow(DEAD_LETTER_READERS), context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    if reason is not None and reason not in REASONS:
        raise Problem(400, f"unknown reason {reason!r} (one of {', '.join(REASONS)})", type_="invalid-parameter", field="reason")
    if since is not None and since.tzinfo is None:
        raise Problem(400, "since needs a time zone (e.g. 2026-11-21T22:00:00+01:00)", type_="invalid-parameter", field="since")
    hidden = [] if sees_restricted(principal.role) else context.catalog.restricted_kinds()
    clauses, params = ["(a.kind IS NULL OR a.kind <> ALL(%(hidden)s))"], {"hidden": hidden, "limit": limit + 1}
    for name, column, value in (("device", "d.device_id", device), ("reason", "d.reason_code", reason)):
        if value is not None:
            clauses.append(f"{column} = %({name})s")
            params[name] = value
    if since is not None:
        clauses.append("d.received_at >= %(since)s")
        params["since"] = since
    if cursor is not None:
        clauses.append("d.id < %(cursor)s")
        params["cursor"] = cursor
    sql = (f"SELECT d.id, d.received_at, d.source, d.subject, d.device_id, d.asset_id, d.reason_code, d.reason, "
           f"d.payload, d.payload_size, d.stream_seq FROM dead_letters d LEFT JOIN assets a ON a.id = d.device_id "
           f"WHERE {' AND '.join(clauses)} ORDER BY d.id DESC LIMIT %(limit)s")
    async with context.pool.connection() as conn:
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(sql, params)
            rows = await cur.fetchall()
    next_cursor = rows[limit - 1]["id"] if len(rows) > limit else None
    items = []
    for row in rows[:limit]:
        payload: bytes = bytes(row.pop("payload"))
        row["received_at"] = row["received_at"].isoformat()
        row["payload_base64"] = base64.b64encode(payload).decode()
        row["payload_text"] = payload.decode("utf-8", errors="replace")[:2000]
        row["payload_truncated"] = row["payload_size"] > len(payload)
        items.append(row)
    return FastJSONResponse({"items": items, "next_cursor": next_cursor})


async def _update_broker(context: AppContext) -> bool:
    """With the embedded broker, wait until it knows the change, so that the answer means it is done
    (the database's notification would bring it there too: this only waits for it). False when the
    broker could not take it: the change is committed, and the broker catches up at a later refresh
    (every 2 s), but the caller must say it is not in force yet."""
    if context.broker_users is None:
        return True
    try:
        await context.broker_users.refresh()
    except Exception as exc:
        log.error("the MQTT broker's device users could not be updated",
                  extra={"error": f"{type(exc).__name__}: {exc}"})
        return False
    return True


@router.post("/assets/{asset_id}/credentials", status_code=201,
             summary="Issue a device credential (shown once) for the HTTP ingest and MQTT device endpoints",
             description="MQTT: user name `mqtt_username`, password the whole `token`. With the embedded broker, "
                         "the credential works on MQTT when this answer arrives.")
async def issue_credential(asset_id: str, principal: Principal = allow(CREDENTIAL_ADMINS),
                           context: AppContext = Depends(get_context)) -> dict[str, Any]:
    async with context.pool.connection() as conn:
        asset = await repo.get_asset(conn, asset_id)
        if asset["status"] == "retired":
            raise Problem(409, f"{asset_id} is retired")
        credential_id, token = await devices.issue(conn, asset_id, principal.username)
    in_force = await _update_broker(context)
    answer = {"device": asset_id, "credential_id": credential_id, "token": token,
              "mqtt_username": devices.mqtt_username(credential_id), "mqtt_active": in_force,
              "note": "keep the token now: it is not stored and cannot be shown again"}
    if not in_force:  # the token is shown once: answer with it, and say MQTT is not open to it yet
        answer["warning"] = "the MQTT broker has not taken this credential yet (it retries every 2 s; see the logs)"
    return answer


@router.get("/assets/{asset_id}/credentials", summary="A device's credentials (ids and dates, never secrets)")
async def list_credentials(asset_id: str, principal: Principal = allow(CREDENTIAL_ADMINS),
                           context: AppContext = Depends(get_context)) -> list[dict[str, Any]]:
    async with context.pool.connection() as conn:
        await repo.get_asset(conn, asset_id)
        return await devices.list_for(conn, asset_id)


@router.delete("/assets/{asset_id}/credentials/{credential_id}", status_code=204, response_model=None,
               responses={202: {"description": "Revoked, but the embedded MQTT broker has not applied it yet"}}, summary="Revoke a device credential",
               description="With the embedded broker, a device connected over MQTT with this credential is "
                           "disconnected, and refused from then on, when this answer arrives.")
async def revoke_credential(asset_id: str, credential_id: str, principal: Principal = allow(CREDENTIAL_ADMINS),
                            context: AppContext = Depends(get_context)) -> Response | None:
    async with context.pool.connection() as conn:
        if not await devices.revoke(conn, asset_id, credential_id):
            raise Problem(404, f"no active credential {credential_id!r} for {asset_id!r}")
    if not await _update_broker(context):
        # Revoked in the database, but a device connected with it may still be: not "done" (204).
        return JSONResponse(status_code=202, content={
            "revoked": True, "mqtt_disconnected": False,
            "warning": "revoked, but the MQTT broker has not applied it yet (it retries every 2 s; see the logs): "
                       "a device connected with this credential may still be connected"})
    return None

