"""What the interventions routes (requests, work orders, teams, photos, Open311) share: the caller as
a work-order ``Actor``, who sees which order, the version a change was based on, uploaded photos."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
from fastapi import Request

from citypilot.auth.accounts import Principal
from citypilot.auth.roles import Role, sees_restricted
from citypilot.citizens import photos
from citypilot.citizens.runtime import Interventions
from citypilot.dispatch import teams
from citypilot.workorders import store as orders
from citypilot.workorders.lifecycle import Actor, WorkOrder

from .context import AppContext
from .problems import Problem

PHOTO_TYPES = ("image/jpeg", "image/png", "image/webp")


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def interventions(context: AppContext) -> Interventions:
    runtime = context.extra.get("interventions")
    if runtime is None:
        raise Problem(503, "interventions are not available in this process", type_="unavailable")
    return runtime


async def actor_of(conn: psycopg.AsyncConnection, principal: Principal) -> Actor:
    team = await teams.team_of(conn, principal.username) if principal.role == Role.FIELD_AGENT else None
    return Actor(principal.username, principal.role, principal.service, team)


def may_see_order(actor: Actor, order: WorkOrder) -> bool:
    """A field agent sees his team's orders; public-safety orders are for the police, supervisors and
    admins; everyone else who reads work orders sees the rest."""
    if order.restricted and not sees_restricted(actor.role):
        return False
    if actor.role == Role.FIELD_AGENT:
        return actor.team_id is not None and order.team_id == actor.team_id
    return True


async def visible_order(conn: psycopg.AsyncConnection, actor: Actor, order_id: int) -> WorkOrder:
    order = await orders.load(conn, order_id)
    if order is None or not may_see_order(actor, order):
        raise Problem(404, f"no work order {order_id}", type_="not-found")
    return order


def expected_version(request: Request, body_version: int | None) -> int:
    """The version the caller based a change on: ``If-Match: "3"`` or ``version`` in the body. Without it a
    change could silently undo someone else's (a lost update), so it is required (428)."""
    header = request.headers.get("if-match")
    if header is not None:
        text = header.strip().removeprefix("W/").strip('"')
        if not text.isdigit():
            raise Problem(400, 'If-Match must be the ETag of the work order, e.g. "3"', type_="invalid-parameter",
                          field="If-Match")
        version = int(text)
        if body_version is not None and body_version != version:
            raise Problem(400, "If-Match and version disagree", type_="invalid-parameter", field="version")
        return version
    if body_version is None:
        raise Problem(428, 'send the version you saw (If-Match: "N" or "version": N), so that no one else\'s change '
                           "is overwritten", type_="precondition-required", field="version")
    return body_version


def conflict(current: WorkOrder) -> Problem:
    return Problem(409, f"work order {current.id} was changed by someone else (now version {current.version}, "
                        f"{current.state}): look at it again and redo your change if it still applies",
                   type_="version-conflict", current=orders.to_json(current, now()))


async def read_photo(request: Request, max_bytes: int) -> photos.CleanPhoto:
    """The photo in the request body: a raw image (Content-Type image/...) or the ``photo`` (or ``media``)
    field of a multipart form. Checked and re-encoded (``citizens/photos.py``)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=10, max_part_size=max_bytes + 1)
        upload = form.get("photo") or form.get("media")
        if upload is None or isinstance(upload, str):
            raise Problem(422, "the form has no file field 'photo'", type_="invalid-photo", field="photo")
        raw = await upload.read(max_bytes + 1)
    elif content_type in PHOTO_TYPES:
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > max_bytes:
                break
    else:
        raise Problem(415, "send the photo as image/jpeg, image/png or image/webp, or as the 'photo' field of a "
                           "multipart form", type_="invalid-photo")
    try:
        return photos.clean(raw, max_bytes)
    except photos.PhotoError as exc:
        raise Problem(exc.status, exc.reason, type_="invalid-photo", field="photo") from None


async def store_photo(conn: psycopg.AsyncConnection, photo: photos.CleanPhoto, by: str, *, request_id: int | None = None,
                      work_order_id: int | None = None, photo_id: str | None = None) -> dict[str, Any]:
    """Keep a checked photo; with ``photo_id`` (a tablet's own id) storing it twice keeps one."""
    ident = str(uuid.UUID(photo_id)) if photo_id else str(uuid.uuid4())
    row = await (await conn.execute(
        "INSERT INTO photos (id, request_id, work_order_id, content_type, size, width, height, sha256, data, uploaded_by) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id",
        (ident, request_id, work_order_id, photo.content_type, len(photo.data), photo.width, photo.height, photo.sha256,
         photo.data, by))).fetchone()
    return {"id": ident, "url": f"/api/v1/photos/{ident}", "content_type": photo.content_type, "size": len(photo.data),
            "width": photo.width, "height": photo.height, "created": row is not None}


async def photos_of(conn: psycopg.AsyncConnection, *, request_id: int | None = None,
                    work_order_id: int | None = None) -> list[dict[str, Any]]:
    column, value = ("request_id", request_id) if request_id is not None else ("work_order_id", work_order_id)
    rows = await (await conn.execute(
        f"SELECT id, content_type, size, width, height, uploaded_by, uploaded_at FROM photos WHERE {column} = %s "
        "ORDER BY uploaded_at, id", (value,))).fetchall()
    return [{"id": str(r[0]), "url": f"/api/v1/photos/{r[0]}", "content_type": r[1], "size": r[2], "width": r[3],
             "height": r[4], "uploaded_by": r[5], "uploaded_at": r[6].isoformat()} for r in rows]
