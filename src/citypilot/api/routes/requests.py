"""Citizens' requests for the staff: the switchboard logs a call, everyone in the control room reads
and filters requests, the service in charge updates their status and public notes, and anyone who
logs a request first sees the open ones of the same category nearby.

The requester's name, phone and e-mail are in the answer only for the roles that need them (the
switchboard, supervisors, admins, the DPO, and the coordinator of the request's service); everyone
else gets the request without them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from citypilot.auth.accounts import Principal
from citypilot.auth.roles import (PERSONAL_DATA_READERS, REQUEST_READERS, REQUEST_TAKERS, WORK_ORDER_CREATORS,
                                  WORK_ORDER_READERS, Role)
from citypilot.citizens import store
from citypilot.citizens.reports import MAX_DESCRIPTION, ReportError, check_report
from citypilot.journal import store as journal
from citypilot.journal.query import JournalFilter, list_entries
from citypilot.workorders import lifecycle
from citypilot.workorders import service as orders
from citypilot.workorders import store as order_store
from citypilot.workorders.lifecycle import TransitionError

from ..context import AppContext, get_context
from ..interventions import actor_of, interventions, now, photos_of, read_photo, store_photo
from ..problems import Problem
from ..responses import FastJSONResponse
from ..security import allow
from .assets import _floats, _split

router = APIRouter(tags=["citizens' requests"])
MAX_PAGE = 500
# Who may change a request's status and public notes: the service in charge (checked per request).
REQUEST_EDITORS = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.SERVICE_COORDINATOR})


def sees_personal_data(principal: Principal, request: dict[str, Any]) -> bool:
    if principal.role in PERSONAL_DATA_READERS:
        return True
    return principal.role == Role.SERVICE_COORDINATOR and principal.service == request["service"]


def request_json(request: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in request.items()}


class Call(BaseModel):
    """A request logged by the switchboard (a phone call) or by staff."""
    model_config = ConfigDict(extra="forbid")
    service_code: str = Field(max_length=64)
    lat: float | None = None
    lon: float | None = None
    address: str | None = Field(None, max_length=300, description="Searched in the local address index when lat/lon "
                                                                   "are not given")
    address_id: str | None = Field(None, max_length=300, description="An id from GET /api/v1/addresses")
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    attributes: dict[str, Any] = Field(default_factory=dict)
    first_name: str | None = Field(None, max_length=100)
    last_name: str | None = Field(None, max_length=100)
    email: str | None = Field(None, max_length=254)
    phone: str | None = Field(None, max_length=30)


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str | None = Field(None, pattern="^(open|closed)$")
    status_notes: str | None = Field(None, max_length=1000, description="What the requester reads (public)")
    version: int = Field(ge=1, description="The version you saw")


def report_problem(exc: ReportError) -> Problem:
    status = 404 if exc.code == "unknown-service" else 422
    return Problem(status, f"{exc.field}: {exc.reason}", type_=f"invalid-request-{exc.code}", field=exc.field)


@router.get("/api/v1/requests/services", summary="The request categories (with their questions, SLA and service)")
async def categories(principal: Principal = allow(REQUEST_READERS | {Role.FIELD_AGENT}),
                     context: AppContext = Depends(get_context)) -> FastJSONResponse:
    catalogue = interventions(context).catalogue
    return FastJSONResponse({"source": catalogue.source, "services": [{
        "code": s.code, "name": s.name, "name_fr": s.name_fr, "description": s.description,
        "description_fr": s.description_fr, "group": s.group, "service": s.service, "priority": s.priority,
        "response_h": s.response_h, "resolution_h": s.resolution_h, "keywords": list(s.keywords),
        "attributes": [{"code": a.code, "datatype": a.datatype, "required": a.required, "description": a.description,
                        "order": a.order, "values": [{"key": k, "name": n} for k, n in a.values]}
                       for a in s.attributes]} for s in catalogue.services]})


@router.get("/api/v1/addresses", summary="Search the local address index (built from the registry's addresses)")
async def addresses(q: str = Query(min_length=1, max_length=200), limit: int = Query(10, ge=1, le=50),
                    principal: Principal = allow(REQUEST_READERS | {Role.FIELD_AGENT}),
                    context: AppContext = Depends(get_context)) -> FastJSONResponse:
    index = await interventions(context).addresses.get()
    return FastJSONResponse({"items": [a.__dict__ for a in index.search(q, limit)]})


@router.get("/api/v1/requests/nearby", summary="Open requests of a category near a point (check before logging one)")
async def nearby(service_code: str = Query(max_length=64), lat: float = Query(ge=-90, le=90),
                 lon: float = Query(ge=-180, le=180), radius_m: float | None = Query(None, gt=0, le=2000),
                 principal: Principal = allow(REQUEST_READERS), context: AppContext = Depends(get_context)) -> FastJSONResponse:
    runtime = interventions(context)
    if runtime.catalogue.get(service_code) is None:
        raise Problem(404, f"unknown service_code {service_code!r}", type_="not-found", field="service_code")
    radius = radius_m or float(context.config.requests_duplicate_radius_m)
    since = now() - dt.timedelta(hours=context.config.requests_duplicate_window_h)
    async with context.pool.connection() as conn:
        found = await store.nearby_open(conn, service_code, lat, lon, radius, since, limit=10)
    return FastJSONResponse({"radius_m": radius, "since": since.isoformat(),
                             "would_link_to": found[0]["id"] if found and found[0]["distance_m"] <=
                             context.config.requests_duplicate_radius_m else None,
                             "items": [request_json(r) for r in found]})


async def submit_report(context: AppContext, report: Any) -> tuple[store.Submitted, int | None]:
    """Record a checked report, and open the service's work order for a new request (one transaction)."""
    async with context.pool.connection() as conn, conn.transaction(), journal.deferred(conn):
        return await submit_in(conn, context, report, now())


async def submit_in(conn: Any, context: AppContext, report: Any, at: dt.datetime) -> tuple[store.Submitted, int | None]:
    """``submit_report`` in the caller's transaction (Open311 checks its key and keeps the photo in it)."""
    open_order = None
    if context.config.requests_auto_work_order:
        async def open_order(draft: dict[str, Any]) -> tuple[int, str]:
            order = await orders.for_new_request(conn, draft, report.service, "system", at, context.communes)
            return order.id, orders.PUBLIC_NOTES["workorder.created"]
    submitted = await store.submit(conn, report, now=at, radius_m=float(context.config.requests_duplicate_radius_m),
                                   window=dt.timedelta(hours=context.config.requests_duplicate_window_h),
                                   open_order=open_order)
    return submitted, submitted.request["work_order_id"]


@router.post("/api/v1/requests", status_code=201, summary="Log a citizen's request (a phone call at the switchboard)")
async def log_call(body: Call, principal: Principal = allow(REQUEST_TAKERS),
                   context: AppContext = Depends(get_context)) -> FastJSONResponse:
    runtime = interventions(context)
    index = await runtime.addresses.get() if body.lat is None else None
    try:
        report = check_report(runtime.catalogue, context.communes, index,
                              channel="switchboard" if principal.role == Role.SWITCHBOARD else "staff",
                              client=principal.username, service_code=body.service_code, lat=body.lat, long=body.lon,
                              address_string=body.address, address_id=body.address_id, description=body.description,
                              attributes=body.attributes, first_name=body.first_name, last_name=body.last_name,
                              email=body.email, phone=body.phone)
    except ReportError as exc:
        raise report_problem(exc) from None
    submitted, order_id = await submit_report(context, report)
    return FastJSONResponse({**request_json(submitted.request), "linked": submitted.linked,
                             "report_id": submitted.report_id, "token": submitted.token, "work_order_id": order_id},
                            status_code=201 if not submitted.linked else 200,
                            headers={"Location": f"/api/v1/requests/{submitted.request['id']}"})


@router.get("/api/v1/requests", summary="List citizens' requests (filters; newest first; cursor pagination)")
async def list_requests(
    status: str | None = Query(None, pattern="^(open|closed)$"), service_: str | None = Query(None, alias="service",
                                                                                              max_length=200),
    service_code: str | None = Query(None, max_length=500), commune: str | None = Query(None, max_length=500),
    bbox: str | None = Query(None, max_length=200), since: dt.datetime | None = None, until: dt.datetime | None = None,
    limit: int = Query(100, ge=1, le=MAX_PAGE), cursor: int | None = Query(None, ge=1),
    principal: Principal = allow(REQUEST_READERS), context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    clauses, params = [], {}
    if status:
        clauses.append("status = %(status)s")
        params["status"] = status
    for name, values in (("service", _split(service_)), ("service_code", _split(service_code)),
                         ("commune", _split(commune))):
        if values:
            clauses.append(f"{name} = ANY(%({name})s)")
            params[name] = values
    for name, value, op in (("since", since, ">="), ("until", until, "<")):
        if value is not None:
            if value.tzinfo is None:
                raise Problem(400, f"{name} needs a time zone", type_="invalid-parameter", field=name)
            clauses.append(f"requested_at {op} %({name})s")
            params[name] = value
    if bbox:
        min_lon, min_lat, max_lon, max_lat = _floats(bbox, 4, "bbox", "min_lon,min_lat,max_lon,max_lat in degrees")
        clauses.append("lon BETWEEN %(x1)s AND %(x2)s AND lat BETWEEN %(y1)s AND %(y2)s")
        params.update(x1=min_lon, x2=max_lon, y1=min_lat, y2=max_lat)
    if cursor is not None:
        clauses.append("id < %(cursor)s")
        params["cursor"] = cursor
    async with context.pool.connection() as conn:
        rows = await store.search(conn, clauses=clauses, params=params, order="id DESC", limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return FastJSONResponse({"items": [request_json(r) for r in rows], "next_cursor": rows[-1]["id"] if more else None})


@router.get("/api/v1/requests/{request_id}", summary="One request, its reports, work order, photos and history")
async def get_request(request_id: int, principal: Principal = allow(REQUEST_READERS),
                      context: AppContext = Depends(get_context)) -> FastJSONResponse:
    async with context.pool.connection() as conn:
        request = await store.get(conn, request_id)
        if request is None:
            raise Problem(404, f"no request {request_id}", type_="not-found")
        personal = sees_personal_data(principal, request)
        reports = await store.reports_of(conn, request_id, personal)
        pictures = await photos_of(conn, request_id=request_id)
        history, _ = await list_entries(conn, JournalFilter(request_id=request_id), limit=200)
        order = await order_store.load(conn, request["work_order_id"]) if request["work_order_id"] else None
    return FastJSONResponse({**request_json(request), "personal_data": personal, "reports_detail": reports,
                             "photos": pictures, "history": history,
                             "work_order": order_store.to_json(order, now()) if order else None},
                            headers={"ETag": f'"{request["version"]}"'})


@router.post("/api/v1/requests/{request_id}/status", summary="Change a request's status and public notes")
async def change_status(request_id: int, body: StatusChange, principal: Principal = allow(REQUEST_EDITORS),
                        context: AppContext = Depends(get_context)) -> FastJSONResponse:
    at = now()
    async with context.pool.connection() as conn, conn.transaction():
        request = await store.get(conn, request_id, lock=True)
        if request is None:
            raise Problem(404, f"no request {request_id}", type_="not-found")
        if principal.role == Role.SERVICE_COORDINATOR and principal.service != request["service"]:
            raise Problem(403, f"request {request_id} belongs to the {request['service']} service")
        if body.version != request["version"]:
            raise Problem(409, f"request {request_id} changed (now version {request['version']}): look again",
                          type_="version-conflict", current=request_json(request))
        if body.status is None and body.status_notes is None:
            raise Problem(422, "nothing to change: give status and/or status_notes", type_="invalid")
        updated = await store.set_status(conn, request, status=body.status, notes=body.status_notes,
                                         actor=principal.username, now=at)
    return FastJSONResponse(request_json(updated), headers={"ETag": f'"{updated["version"]}"'})


@router.post("/api/v1/requests/{request_id}/photos", status_code=201, summary="Attach a photo to a request")
async def add_photo(request_id: int, request: Request, principal: Principal = allow(REQUEST_TAKERS),
                    context: AppContext = Depends(get_context)) -> FastJSONResponse:
    async with context.pool.connection() as conn:
        if await store.get(conn, request_id) is None:
            raise Problem(404, f"no request {request_id}", type_="not-found")
    photo = await read_photo(request, context.config.requests_photo_max_bytes)
    async with context.pool.connection() as conn, conn.transaction():
        saved = await store_photo(conn, photo, principal.username, request_id=request_id)
    return FastJSONResponse(saved, status_code=201)


@router.post("/api/v1/requests/{request_id}/work-order", status_code=201,
             summary="The work order that answers a request (the open one, or a new one: 201)")
async def request_work_order(request_id: int, principal: Principal = allow(WORK_ORDER_CREATORS),
                             context: AppContext = Depends(get_context)) -> FastJSONResponse:
    runtime = interventions(context)
    at = now()
    async with context.pool.connection() as conn, conn.transaction():
        request = await store.get(conn, request_id, lock=True)
        if request is None:
            raise Problem(404, f"no request {request_id}", type_="not-found")
        if request["status"] == "closed":
            raise Problem(409, f"request {request_id} is closed", type_="illegal-transition")
        category = runtime.catalogue.get(request["service_code"])
        if category is None:
            raise Problem(409, f"request {request_id}'s category {request['service_code']!r} is no longer offered",
                          type_="unknown-service")
        actor = await actor_of(conn, principal)
        if not lifecycle.may_create(actor, category.service):
            raise Problem(403, f"a coordinator opens work orders for his own service ({principal.service})")
        existing = request["work_order_id"]
        try:
            order = await orders.from_request(conn, request, category, principal.username, at, context.communes)
        except TransitionError as exc:
            raise Problem(exc.status, exc.reason, type_=exc.code) from None
    created = order.id != existing
    return FastJSONResponse({**order_store.to_json(order, at), "created": created}, status_code=201 if created else 200,
                            headers={"Location": f"/api/v1/work-orders/{order.id}"})


@router.get("/api/v1/photos/{photo_id}", summary="A photo of a request or a work order (logged-in staff only)")
async def photo(photo_id: str, principal: Principal = allow(REQUEST_READERS | WORK_ORDER_READERS),
                context: AppContext = Depends(get_context)) -> Response:
    import uuid

    try:
        ident = uuid.UUID(photo_id)
    except ValueError:
        raise Problem(404, f"no photo {photo_id!r}", type_="not-found") from None
    async with context.pool.connection() as conn:
        row = await (await conn.execute("SELECT p.content_type, p.data, p.work_order_id, w.team_id, w.restricted "
                                        "FROM photos p LEFT JOIN work_orders w ON w.id = p.work_order_id "
                                        "WHERE p.id = %s", (ident,))).fetchone()
        actor = await actor_of(conn, principal)
    if row is None:
        raise Problem(404, f"no photo {photo_id!r}", type_="not-found")
    content_type, data, order_id, team_id, restricted = row
    if principal.role == Role.FIELD_AGENT and (order_id is None or team_id != actor.team_id):
        raise Problem(404, f"no photo {photo_id!r}", type_="not-found")
    if restricted and principal.role not in (Role.ADMIN, Role.SUPERVISOR, Role.POLICE):
        raise Problem(404, f"no photo {photo_id!r}", type_="not-found")
    return Response(bytes(data), media_type=content_type,
                    headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff",
                             "Content-Security-Policy": "default-src 'none'"})
