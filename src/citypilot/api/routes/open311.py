"""Open311 GeoReport v2 at ``/open311/v2/``: citizens' apps list the categories, report problems
(with an ``api_key``), and follow them.

Deliberately public, as the specification makes them: anyone may read the categories and the
requests, which never carry who reported them. Creating a request needs a client key issued by an
administrator (``POST /api/v1/open311/clients``). Errors are the specification's (``<errors><error>``
with a code and a description; in JSON an array of them), not problem documents, so that existing
Open311 clients understand them. Each resource takes its format from its extension: ``.xml`` or
``.json``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import FormData, UploadFile
from starlette.responses import Response

from citypilot import __version__
from citypilot.auth.accounts import Principal
from citypilot.auth.roles import Role
from citypilot.citizens import clients, open311, photos
from citypilot.citizens import store as requests
from citypilot.citizens.reports import ReportError, check_report
from citypilot.db.reading import reading
from citypilot.journal import store as journal

from ..context import AppContext, get_context
from ..interventions import interventions, now, store_photo
from ..problems import Problem
from ..responses import FastJSONResponse
from ..security import PUBLIC, allow
from .requests import submit_in

router = APIRouter(tags=["Open311 GeoReport v2"])
MAX_DAYS = 90          # the longest start_date..end_date span, and the default window
MAX_RESULTS = 1000
_STARTED = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


class Open311Error(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status, self.description = status, description


def _format(fmt: str) -> str:
    if fmt not in open311.FORMATS:
        raise Open311Error(404, f"format {fmt!r} is not served: use .xml or .json")
    return fmt


def _answer(fmt: str, root: str, body: Any, status: int = 200) -> Response:
    return Response(open311.render(fmt, root, body), status_code=status, media_type=open311.FORMATS[fmt].split(";")[0],
                    headers={"Content-Type": open311.FORMATS[fmt], "Access-Control-Allow-Origin": "*"})


def _error(fmt: str, exc: Open311Error) -> Response:
    fmt = fmt if fmt in open311.FORMATS else "json"
    return Response(open311.errors(fmt, [(exc.status, exc.description)]), status_code=exc.status,
                    headers={"Content-Type": open311.FORMATS[fmt], "Access-Control-Allow-Origin": "*"})


def _jurisdiction(context: AppContext, value: str | None) -> None:
    """One jurisdiction is served: jurisdiction_id may be left out; another one is not found."""
    if value is not None and value != context.config.open311_jurisdiction_id:
        raise Open311Error(404, f"jurisdiction_id {value[:100]!r} not found: this server serves "
                                f"{context.config.open311_jurisdiction_id!r}")


def _agency(context: AppContext, service: str) -> str:
    return context.catalog.services.get(service, service)


def _split_format(name: str) -> tuple[str, str]:
    """('services', 'json') from 'services.json'; the format is what follows the last dot."""
    base, dot, fmt = name.rpartition(".")
    if not dot or not base:
        raise Open311Error(404, f"{name!r}: add the format to the resource (.xml or .json)")
    return base, _format(fmt)


@router.get("/open311/discovery.{fmt}", dependencies=[PUBLIC], summary="Open311 service discovery")
@router.get("/open311/v2/discovery.{fmt}", dependencies=[PUBLIC], summary="Open311 service discovery (v2 path)")
async def discovery(fmt: str, request: Request, context: AppContext = Depends(get_context)) -> Response:
    try:
        fmt = _format(fmt)
        base = str(request.base_url).rstrip("/") + "/open311/v2/"
        body = open311.discovery(base, _STARTED, f"citypilot {__version__} - the city's control centre",
                                 "API keys for creating requests are issued by the city's administrators")
        return _answer(fmt, "discovery", body)
    except Open311Error as exc:
        return _error(fmt, exc)


@router.get("/open311/v2/services.{fmt}", dependencies=[PUBLIC], summary="GET Service List")
async def service_list(fmt: str, request: Request, context: AppContext = Depends(get_context)) -> Response:
    try:
        fmt = _format(fmt)
        _jurisdiction(context, request.query_params.get("jurisdiction_id"))
        catalogue = interventions(context).catalogue
        return _answer(fmt, "services", [open311.service_item(s, _agency(context, s.service))
                                         for s in catalogue.services])
    except Open311Error as exc:
        return _error(fmt, exc)


@router.get("/open311/v2/services/{name}", dependencies=[PUBLIC], summary="GET Service Definition")
async def service_definition(name: str, request: Request, context: AppContext = Depends(get_context)) -> Response:
    fmt = name.rpartition(".")[2]
    try:
        code, fmt = _split_format(name)
        _jurisdiction(context, request.query_params.get("jurisdiction_id"))
        service = interventions(context).catalogue.get(code)
        if service is None:
            raise Open311Error(404, f"service_code {code[:64]!r} not found")
        return _answer(fmt, "service_definition", open311.service_definition(service))
    except Open311Error as exc:
        return _error(fmt, exc)


async def _form(request: Request, max_bytes: int) -> FormData:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise Open311Error(400, "send the request as a form (application/x-www-form-urlencoded, or "
                                "multipart/form-data with a 'media' photo)")
    try:
        return await request.form(max_files=1, max_fields=200, max_part_size=max_bytes + 1)
    except Exception as exc:  # noqa: BLE001 - starlette raises several types for malformed multipart bodies
        raise Open311Error(400, f"the form cannot be read: {type(exc).__name__}") from None


async def _submit(context: AppContext, conn: Any, form: FormData, field: dict[str, str],
                  client: str) -> Any:
    """Check the form of a keyed client and submit it in ``conn``'s transaction."""
    media = form.get("media")
    photo = None
    if isinstance(media, UploadFile):
        try:
            photo = photos.clean(await media.read(context.config.requests_photo_max_bytes + 1),
                                 context.config.requests_photo_max_bytes)
        except photos.PhotoError as exc:
            raise Open311Error(400, f"media: {exc.reason}") from None
    runtime = interventions(context)
    index = await runtime.addresses.get() if not field.get("lat") and not field.get("long") else None
    try:
        report = check_report(
            runtime.catalogue, context.communes, index, channel="open311", client=client,
            service_code=field.get("service_code"), lat=field.get("lat"), long=field.get("long"),
            address_string=field.get("address_string"), address_id=field.get("address_id"),
            zipcode=field.get("zipcode"), description=field.get("description"),
            attributes=open311.answers_from_form(form.multi_items()), media_url=field.get("media_url"),
            first_name=field.get("first_name"), last_name=field.get("last_name"), email=field.get("email"),
            phone=field.get("phone"), device_id=field.get("device_id"), account_id=field.get("account_id"))
    except ReportError as exc:
        raise Open311Error(404 if exc.code == "unknown-service" else 400, f"{exc.field}: {exc.reason}") from None
    submitted, _ = await submit_in(conn, context, report, now())
    if photo is not None:
        await store_photo(conn, photo, f"open311:{client}", request_id=submitted.request["id"])
    return submitted, report


@router.post("/open311/v2/requests.{fmt}", dependencies=[PUBLIC], summary="POST Service Request (api_key required)")
async def create_request(fmt: str, request: Request, context: AppContext = Depends(get_context)) -> Response:
    try:
        fmt = _format(fmt)
        form = await _form(request, context.config.requests_photo_max_bytes)
        field = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        _jurisdiction(context, field.get("jurisdiction_id") or request.query_params.get("jurisdiction_id"))
        key = field.get("api_key") or request.query_params.get("api_key")
        if not key:
            raise Open311Error(403, "api_key was not provided")
        # One connection and one transaction for the whole request: the key is checked in it, the report,
        # its work order, its photo and their journal entries are written by it, or nothing is.
        async with context.pool.connection() as conn, conn.transaction(), journal.deferred(conn):
            client = await clients.verify(conn, key)
            if client is None:
                raise Open311Error(403, "api_key was not provided or is invalid")
            submitted, report = await _submit(context, conn, form, field, client)
        request_row = submitted.request
        if submitted.linked:
            notice = (f"Already reported: your report is linked to request {request_row['id']} "
                      f"({request_row['reports']} reports), which you can follow.")
        else:
            expected = open311.w3c(request_row["expected_at"])
            notice = f"Received by the {_agency(context, request_row['service'])} service; expected by {expected}."
        return _answer(fmt, "service_requests", [{"service_request_id": request_row["id"], "token": submitted.token,
                                                  "service_notice": notice, "account_id": report.account_id}],
                       status=201)
    except Open311Error as exc:
        return _error(fmt, exc)


def _datetime(value: str | None, name: str) -> dt.datetime | None:
    if value is None or value == "":
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise Open311Error(400, f"{name} must be a W3C date and time, e.g. 2026-12-01T08:00:00+01:00") from None
    if moment.tzinfo is None:
        raise Open311Error(400, f"{name} needs a time zone (Z or an offset such as +01:00)")
    return moment


@router.get("/open311/v2/requests.{fmt}", dependencies=[PUBLIC], summary="GET Service Requests")
async def search(fmt: str, request: Request, context: AppContext = Depends(get_context)) -> Response:
    try:
        fmt = _format(fmt)
        params = request.query_params
        _jurisdiction(context, params.get("jurisdiction_id"))
        catalogue = interventions(context).catalogue
        clauses: list[str] = []
        values: dict[str, Any] = {}
        ids = open311.parse_list(params.get("service_request_id"))
        if ids:  # the other filters are ignored when ids are given (specification)
            if not all(i.isdigit() and len(i) < 19 for i in ids) or len(ids) > MAX_RESULTS:
                raise Open311Error(400, "service_request_id: comma-separated request ids (numbers)")
            clauses.append("id = ANY(%(ids)s)")
            values["ids"] = [int(i) for i in ids]
        else:
            codes = open311.parse_list(params.get("service_code"))
            for code in codes:
                if catalogue.get(code) is None:
                    raise Open311Error(400, f"service_code {code[:64]!r} is not a service of this server")
            statuses = open311.parse_list(params.get("status"))
            for status in statuses:
                if status not in ("open", "closed"):
                    raise Open311Error(400, f"status {status[:20]!r}: open or closed")
            start, end = _datetime(params.get("start_date"), "start_date"), _datetime(params.get("end_date"), "end_date")
            if start is not None and end is not None:
                if end < start:
                    raise Open311Error(400, "end_date is before start_date")
                if end - start > dt.timedelta(days=MAX_DAYS):
                    raise Open311Error(400, f"start_date to end_date may not span more than {MAX_DAYS} days")
            elif start is None and end is None:
                start = now() - dt.timedelta(days=MAX_DAYS)
            elif start is None:
                start = end - dt.timedelta(days=MAX_DAYS)  # type: ignore[operator]
            if codes:
                clauses.append("service_code = ANY(%(codes)s)")
                values["codes"] = codes
            if statuses:
                clauses.append("status = ANY(%(statuses)s)")
                values["statuses"] = statuses
            clauses.append("requested_at >= %(start)s")
            values["start"] = start
            if end is not None:
                clauses.append("requested_at <= %(end)s")
                values["end"] = end
        async with reading(context.pool) as conn:
            rows = await requests.search(conn, clauses=clauses, params=values, limit=MAX_RESULTS)
        return _answer(fmt, "service_requests", [
            open311.request_item(r, catalogue.get(r["service_code"]), _agency(context, r["service"])) for r in rows])
    except Open311Error as exc:
        return _error(fmt, exc)


@router.get("/open311/v2/requests/{name}", dependencies=[PUBLIC], summary="GET Service Request")
async def get_request(name: str, request: Request, context: AppContext = Depends(get_context)) -> Response:
    fmt = name.rpartition(".")[2]
    try:
        ident, fmt = _split_format(name)
        _jurisdiction(context, request.query_params.get("jurisdiction_id"))
        row = None
        if ident.isdigit() and len(ident) < 19:
            async with reading(context.pool) as conn:
                row = await requests.get(conn, int(ident))
        if row is None:
            raise Open311Error(404, f"service_request_id {ident[:40]!r} not found")
        catalogue = interventions(context).catalogue
        return _answer(fmt, "service_requests", [open311.request_item(row, catalogue.get(row["service_code"]),
                                                                      _agency(context, row["service"]))])
    except Open311Error as exc:
        return _error(fmt, exc)


@router.get("/open311/v2/tokens/{name}", dependencies=[PUBLIC], summary="GET service_request_id from a token")
async def from_token(name: str, request: Request, context: AppContext = Depends(get_context)) -> Response:
    fmt = name.rpartition(".")[2]
    try:
        token, fmt = _split_format(name)
        _jurisdiction(context, request.query_params.get("jurisdiction_id"))
        async with reading(context.pool) as conn:
            request_id = await requests.by_token(conn, token)
        if request_id is None:
            raise Open311Error(404, f"token {token[:40]!r} not found")
        return _answer(fmt, "service_requests", [{"service_request_id": request_id, "token": token}])
    except Open311Error as exc:
        return _error(fmt, exc)


# --- Client keys, for administrators ---------------------------------------------------------------

class NewClient(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=120, description="Who the key is for (the city's app, a partner)")


@router.post("/api/v1/open311/clients", status_code=201, summary="Issue an Open311 api_key (shown once)")
async def issue_client(body: NewClient, principal: Principal = allow(Role.ADMIN),
                       context: AppContext = Depends(get_context)) -> FastJSONResponse:

    async with context.pool.connection() as conn, conn.transaction():
        client_id, key = await clients.issue(conn, body.name.strip(), principal.username)
        await journal.record_action(conn, principal.username, "open311.client_issued",
                                    f"Open311 key {client_id} issued for {body.name.strip()} by {principal.username}",
                                    {"client_id": client_id, "name": body.name.strip()})
    return FastJSONResponse({"id": client_id, "name": body.name.strip(), "api_key": key}, status_code=201)


@router.get("/api/v1/open311/clients", summary="The Open311 client keys (without the keys)")
async def list_clients(principal: Principal = allow(Role.ADMIN),
                       context: AppContext = Depends(get_context)) -> FastJSONResponse:
    async with context.pool.connection() as conn:
        return FastJSONResponse({"items": await clients.list_all(conn)})


@router.delete("/api/v1/open311/clients/{client_id}", status_code=204, summary="Revoke an Open311 api_key")
async def revoke_client(client_id: str, principal: Principal = allow(Role.ADMIN),
                        context: AppContext = Depends(get_context)) -> Response:

    async with context.pool.connection() as conn, conn.transaction():
        if not await clients.revoke(conn, client_id):
            raise Problem(404, f"no active Open311 client {client_id!r}", type_="not-found")
        await journal.record_action(conn, principal.username, "open311.client_revoked",
                                    f"Open311 key {client_id} revoked by {principal.username}", {"client_id": client_id})
    return Response(status_code=204)
