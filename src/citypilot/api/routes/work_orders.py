"""Work orders over HTTP: open one (by hand, from an alarm, from a request), list and read them, act on
them (assign, accept, en route, on site, done, confirm, reopen, cancel), comment, attach photos, and
ask which team to send.

Every change needs the version it was based on (``If-Match`` or ``version``): two coordinators acting
on one order at once get a 409 with the current order instead of silently overwriting each other.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from citypilot.alarms.lifecycle import TransitionError as AlarmTransitionError
from citypilot.auth.accounts import Principal
from citypilot.auth.roles import WORK_ORDER_ACTORS, WORK_ORDER_CREATORS, WORK_ORDER_READERS, Role, sees_restricted
from citypilot.db.reading import reading
from citypilot.citizens import store as requests
from citypilot.dispatch.service import recommend
from citypilot.journal import store as journal
from citypilot.journal.query import JournalFilter, list_entries
from citypilot.workorders import lifecycle, service, store
from citypilot.workorders.lifecycle import TransitionError

from ..context import AppContext, get_context
from ..interventions import (actor_of, conflict, expected_version, interventions, may_see_order, now, photos_of,
                             read_photo, store_photo, visible_order)
from ..problems import Problem
from ..responses import FastJSONResponse
from ..security import allow
from .assets import _split

router = APIRouter(prefix="/api/v1/work-orders", tags=["work orders"])
ACTIONS = ("assign", "unassign", "accept", "en_route", "on_site", "done", "confirm", "reopen", "cancel")
MAX_PAGE = 500


def transition_problem(exc: TransitionError) -> Problem:
    return Problem(exc.status, exc.reason, type_=exc.code)


class NewWorkOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=200)
    service: str | None = Field(None, max_length=40, description="The service in charge; default: the asset's")
    category: str = Field("maintenance", min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.]*$")
    priority: str = Field("normal", pattern="^(urgent|high|normal|low)$")
    description: str | None = Field(None, max_length=lifecycle.MAX_NOTE)
    asset_id: str | None = Field(None, max_length=64, description="Equipment concerned: its location is used")
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    address: str | None = Field(None, max_length=300)
    planned_for: dt.datetime | None = Field(None, description="Planned maintenance: when it is to be done")
    recurrence: dict[str, Any] | None = Field(None, description='{"every": 3, "unit": "month", "until": "2027-12-31"}')
    response_h: float | None = Field(None, gt=0, le=24 * 366)
    resolution_h: float | None = Field(None, gt=0, le=24 * 366)


class FromSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    priority: str | None = Field(None, pattern="^(urgent|high|normal|low)$")
    description: str | None = Field(None, max_length=lifecycle.MAX_NOTE)


class ActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(None, ge=1, description="The version you saw (or If-Match)")
    team_id: str | None = Field(None, max_length=64, description="assign: the team")
    note: str | None = Field(None, max_length=lifecycle.MAX_NOTE, description="done, reopen: what was done, why")
    reason: str | None = Field(None, max_length=lifecycle.MAX_NOTE, description="cancel: why")


class Comment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(min_length=1, max_length=lifecycle.MAX_NOTE)


def _check_when(moment: dt.datetime | None, field: str) -> None:
    if moment is not None and moment.tzinfo is None:
        raise Problem(422, f"{field} needs a time zone (e.g. 2026-12-01T08:00:00+01:00)", type_="invalid", field=field)


@router.post("", status_code=201, summary="Open a work order by hand (or plan a maintenance, recurring or not)")
async def create(body: NewWorkOrder, principal: Principal = allow(WORK_ORDER_CREATORS),
                 context: AppContext = Depends(get_context)) -> FastJSONResponse:
    _check_when(body.planned_for, "planned_for")
    try:
        recurrence = lifecycle.check_recurrence(body.recurrence)
    except ValueError as exc:
        raise Problem(422, str(exc), type_="invalid", field="recurrence") from None
    if recurrence and body.planned_for is None:
        raise Problem(422, "a recurring order needs planned_for (the first date)", type_="invalid", field="planned_for")
    at = now()
    async with context.pool.connection() as conn, conn.transaction():
        actor = await actor_of(conn, principal)
        lat, lon, svc, restricted, address = body.lat, body.lon, body.service, False, body.address
        if body.asset_id is not None:
            row = await (await conn.execute("SELECT lat, lon, service, kind, address FROM assets WHERE id = %s "
                                            "AND status <> 'retired'", (body.asset_id,))).fetchone()
            if row is None:
                raise Problem(422, f"no asset {body.asset_id!r} in service", type_="unknown-asset", field="asset_id")
            spec = context.catalog.kinds.get(row[3])
            restricted = bool(spec and spec.restricted)
            if restricted and not sees_restricted(principal.role):
                raise Problem(422, f"no asset {body.asset_id!r} in service", type_="unknown-asset", field="asset_id")
            lat, lon, svc, address = (lat if lat is not None else row[0], lon if lon is not None else row[1],
                                      svc or row[2], address or row[4])
        if lat is None or lon is None:
            raise Problem(422, "a location is needed: lat and lon, or an asset_id", type_="invalid", field="lat")
        if context.communes.locate(lon, lat) is None:
            raise Problem(422, "the location is outside the metropole", type_="outside", field="lat")
        if svc is None or svc not in context.catalog.services:
            raise Problem(422, f"unknown service {svc!r} (one of {', '.join(sorted(context.catalog.services))})",
                          type_="invalid", field="service")
        if not lifecycle.may_create(actor, svc):
            raise Problem(403, f"a coordinator opens work orders for his own service ({principal.service}), not {svc}")
        order = await service.create(conn, service.NewOrder(
            title=body.title.strip(), service=svc, category=body.category, priority=body.priority, lat=lat, lon=lon,
            origin="planned" if body.planned_for else "manual", description=body.description, asset_id=body.asset_id,
            address=address, planned_for=body.planned_for, recurrence=recurrence, response_h=body.response_h,
            resolution_h=body.resolution_h, restricted=restricted), principal.username, at, context.communes)
    return FastJSONResponse(store.to_json(order, at), status_code=201,
                            headers={"Location": f"/api/v1/work-orders/{order.id}", "ETag": f'"{order.version}"'})


async def from_alarm(alarm_id: int, body: FromSource | None, principal: Principal, context: AppContext) -> FastJSONResponse:
    """POST /api/v1/alarms/{id}/work-order (routes/alarms.py): the order that repairs an alarm."""
    at = now()
    restricted_ok = sees_restricted(principal.role)
    async with context.pool.connection() as conn, conn.transaction():
        actor = await actor_of(conn, principal)
        try:
            order, created = await service.from_alarm(conn, alarm_id, principal.username, at, context.communes,
                                                      body.priority if body else None, body.description if body else None,
                                                      visible=lambda a: restricted_ok or not a.restricted)
        except LookupError:
            raise Problem(404, f"no alarm {alarm_id}", type_="not-found") from None
        except (TransitionError, AlarmTransitionError) as exc:
            raise Problem(exc.status, exc.reason, type_=getattr(exc, "code", "illegal-transition")) from None
        if created and not lifecycle.may_create(actor, order.service):
            raise Problem(403, f"a coordinator opens work orders for his own service ({principal.service}), "
                               f"not {order.service}")
    return FastJSONResponse({**store.to_json(order, at), "created": created}, status_code=201 if created else 200,
                            headers={"Location": f"/api/v1/work-orders/{order.id}", "ETag": f'"{order.version}"'})


@router.get("", summary="List work orders (filters; newest first; cursor pagination)")
async def list_orders(
    state: str | None = Query(None, max_length=100, description="States, comma-separated; 'open' for all open ones"),
    service_: str | None = Query(None, alias="service", max_length=200), team: str | None = Query(None, max_length=64),
    priority: str | None = Query(None, max_length=100), origin: str | None = Query(None, max_length=100),
    overdue: bool | None = Query(None, description="true: only those past an SLA deadline"),
    alarm: int | None = Query(None, ge=1), asset: str | None = Query(None, max_length=64),
    planned: bool | None = Query(None, description="true: only planned maintenance"),
    limit: int = Query(100, ge=1, le=MAX_PAGE), cursor: int | None = Query(None, ge=1),
    principal: Principal = allow(WORK_ORDER_READERS), context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    clauses, params = ["true"], {}
    states = _split(state)
    if states == ["open"]:
        states = list(lifecycle.OPEN_STATES)
    for name, values, allowed, column in (("states", states, lifecycle.STATES, "state"),
                                          ("priorities", _split(priority), lifecycle.PRIORITIES, "priority"),
                                          ("origins", _split(origin), lifecycle.ORIGINS, "origin"),
                                          ("services", _split(service_), None, "service")):
        if allowed is not None:
            for value in values:
                if value not in allowed:
                    raise Problem(400, f"unknown {column} {value!r} (one of {', '.join(allowed)})",
                                  type_="invalid-parameter", field=column)
        if values:
            clauses.append(f"{column} = ANY(%({name})s)")
            params[name] = values
    for name, value, column in (("team", team, "team_id"), ("alarm", alarm, "alarm_id"), ("asset", asset, "asset_id")):
        if value is not None:
            clauses.append(f"{column} = %({name})s")
            params[name] = value
    if overdue:
        clauses.append("((coalesce(on_site_at, done_at, now()) > sla_response_due OR coalesce(done_at, now()) > "
                       "sla_resolution_due) AND state <> 'cancelled')")
    if planned is not None:
        clauses.append("planned_for IS NOT NULL" if planned else "planned_for IS NULL")
    if not sees_restricted(principal.role):
        clauses.append("NOT restricted")
    if cursor is not None:
        clauses.append("id < %(cursor)s")
        params["cursor"] = cursor
    async with context.pool.connection() as conn:
        actor = await actor_of(conn, principal)
        if principal.role == Role.FIELD_AGENT:
            clauses.append("team_id = %(my_team)s")
            params["my_team"] = actor.team_id
        rows = await (await conn.execute(f"SELECT {store.COLUMNS} FROM work_orders WHERE {' AND '.join(clauses)} "
                                         "ORDER BY id DESC LIMIT %(limit)s", {**params, "limit": limit + 1})).fetchall()
    at = now()
    items = [store.from_row(r) for r in rows]
    more = len(items) > limit
    items = items[:limit]
    return FastJSONResponse({"items": [store.to_json(o, at) for o in items],
                             "next_cursor": items[-1].id if more else None})


@router.get("/{order_id}", summary="One work order, its requests, photos and history")
async def get_order(order_id: int, principal: Principal = allow(WORK_ORDER_READERS),
                    context: AppContext = Depends(get_context)) -> FastJSONResponse:
    async with context.pool.connection() as conn:
        actor = await actor_of(conn, principal)
        order = await visible_order(conn, actor, order_id)
        linked = await (await conn.execute(f"SELECT {requests.COLUMNS} FROM service_requests WHERE work_order_id = %s "
                                           "ORDER BY id", (order_id,))).fetchall()
        history, _ = await list_entries(conn, JournalFilter(types=["workorder.*"], include_restricted=True,
                                                            work_order_id=order_id), limit=200)
        pictures = await photos_of(conn, work_order_id=order_id)
    at = now()
    public = [{k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in zip(requests.REQUEST_FIELDS, r)}
              for r in linked]
    return FastJSONResponse({**store.to_json(order, at), "requests": public, "photos": pictures, "history": history},
                            headers={"ETag": f'"{order.version}"'})


@router.post("/{order_id}/comments", status_code=201, summary="Comment on a work order (journaled)")
async def add_comment(order_id: int, body: Comment, principal: Principal = allow(WORK_ORDER_ACTORS),
                      context: AppContext = Depends(get_context)) -> dict[str, Any]:
    at = now()
    async with context.pool.connection() as conn, conn.transaction():
        actor = await actor_of(conn, principal)
        await visible_order(conn, actor, order_id)
        try:
            await service.comment(conn, order_id, actor, body.note, at)
        except TransitionError as exc:
            raise transition_problem(exc) from None
    return {"work_order_id": order_id, "note": body.note.strip(), "by": principal.username, "at": at.isoformat()}


@router.post("/{order_id}/photos", status_code=201, summary="Attach a photo (JPEG, PNG or WebP; metadata removed)")
async def add_photo(order_id: int, request: Request, photo_id: str | None = Query(None, max_length=36, description=
                    "Your own id for the photo (a UUID): sending it again stores it once (offline tablets)"),
                    principal: Principal = allow(WORK_ORDER_ACTORS),
                    context: AppContext = Depends(get_context)) -> FastJSONResponse:
    if photo_id is not None:
        import uuid

        try:
            uuid.UUID(photo_id)
        except ValueError:
            raise Problem(400, "photo_id must be a UUID", type_="invalid-parameter", field="photo_id") from None
    async with context.pool.connection() as conn:
        actor = await actor_of(conn, principal)
        order = await visible_order(conn, actor, order_id)
        if not lifecycle.may_work(actor, order):
            raise Problem(403, f"only the team of work order {order_id} and its coordinators add photos to it")
    photo = await read_photo(request, context.config.requests_photo_max_bytes)
    at = now()
    async with context.pool.connection() as conn, conn.transaction():
        saved = await store_photo(conn, photo, principal.username, work_order_id=order_id, photo_id=photo_id)
        if saved["created"]:
            await store.record(conn, order, "workorder.photo", principal.username, at, {"photo_id": saved["id"]})
    return FastJSONResponse(saved, status_code=201 if saved["created"] else 200)


@router.get("/{order_id}/recommendations", summary="The nearest available teams of the order's service")
async def recommendations(order_id: int, limit: int = Query(5, ge=1, le=50),
                          principal: Principal = allow(Role.ADMIN, Role.SUPERVISOR, Role.OPERATOR,
                                                       Role.SERVICE_COORDINATOR),
                          context: AppContext = Depends(get_context)) -> FastJSONResponse:
    runtime = interventions(context)
    async with reading(context.pool) as conn:
        actor = await actor_of(conn, principal)
        order = await visible_order(conn, actor, order_id)
        answer = await recommend(conn, order.service, order.lat, order.lon, runtime.routing, now(),
                                 context.config.dispatch_stale_after_s, limit)
    return FastJSONResponse({"work_order_id": order.id, **answer})


@router.post("/{order_id}/{action}", summary="Act on a work order: assign, unassign, accept, en_route, on_site, "
                                             "done, confirm, reopen, cancel")
async def act(order_id: int, action: str, request: Request, body: ActionBody | None = None,
              principal: Principal = allow(WORK_ORDER_ACTORS),
              context: AppContext = Depends(get_context)) -> FastJSONResponse:
    if action not in ACTIONS:
        raise Problem(404, f"unknown action {action!r} (one of {', '.join(ACTIONS)})", type_="not-found")
    body = body or ActionBody()
    version = expected_version(request, body.version)
    at = now()
    notify_config = context.extra.get("notify_config")
    async with context.pool.connection() as conn:
        try:
            async with conn.transaction(), journal.deferred(conn):
                actor = await actor_of(conn, principal)
                await visible_order(conn, actor, order_id)
                order, journal_type = await service.perform(
                    conn, order_id, version, actor, action,
                    {"team_id": body.team_id, "note": body.note, "reason": body.reason}, at, context.communes,
                    notify_config)
        except store.VersionConflict as exc:
            raise conflict(exc.current) from None
        except TransitionError as exc:
            raise transition_problem(exc) from None
        except LookupError:
            raise Problem(404, f"no work order {order_id}", type_="not-found") from None
    return FastJSONResponse({**store.to_json(order, at), "event": journal_type}, headers={"ETag": f'"{order.version}"'})


def visible(principal: Principal, order: lifecycle.WorkOrder) -> bool:  # used by the field routes
    return may_see_order(lifecycle.Actor(principal.username, principal.role, principal.service), order)


# Opening an order from what it answers lives beside the orders; the paths read as the alarm's or the request's.
links = APIRouter(tags=["work orders"])


@links.post("/api/v1/alarms/{alarm_id}/work-order", status_code=201,
            summary="The work order that repairs an alarm (the open one, or a new one: 201)")
async def alarm_work_order(alarm_id: int, body: FromSource | None = None, principal: Principal = allow(WORK_ORDER_CREATORS),
                           context: AppContext = Depends(get_context)) -> FastJSONResponse:
    return await from_alarm(alarm_id, body, principal, context)
