"""PostgreSQL adapter of citizens' requests: submit a report (linked to an open near-duplicate when
there is one), read requests and their reports, and follow a work order's progress.

A report is checked before it reaches here (``citizens/reports.py``). Submitting takes advisory locks
for the transaction on the category's grid cells around the point (``area_lock_keys``), so that two
people reporting the same pothole at the same instant still end up on one request, while reports of
the same category elsewhere in the city do not wait for each other. The requester's personal data stays in ``request_reports`` and is only
read by ``reports_of`` for roles allowed to see it.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zlib
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

import psycopg
from psycopg.types.json import Jsonb

from citypilot.geo.projection import point_to_lambert93
from citypilot.journal import store as journal
from citypilot.journal.entries import NewEntry

from .reports import CheckedReport

INTERVENTIONS = "interventions"
REQUEST_FIELDS = ("id", "service_code", "service", "status", "status_notes", "description", "lat", "lon", "commune",
                  "address", "address_id", "zipcode", "attributes", "media_url", "priority", "reports", "work_order_id",
                  "asset_id", "requested_at", "updated_at", "expected_at", "closed_at", "version")
COLUMNS = ", ".join(REQUEST_FIELDS)
REPORT_FIELDS = ("id", "request_id", "channel", "client", "reported_at", "description", "attributes", "lat", "lon",
                 "first_name", "last_name", "email", "phone", "device_id", "account_id", "linked")
PERSONAL_FIELDS = ("first_name", "last_name", "email", "phone", "device_id", "account_id")


@dataclass(frozen=True)
class Submitted:
    request: dict[str, Any]
    report_id: int
    token: str
    linked: bool          # True: a near-duplicate, linked to an open request rather than a new one


def _row(row: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(REQUEST_FIELDS, row))


LOCK_CELL_M = 1000.0  # the grid of duplicate locks, Lambert-93 metres; larger than any duplicate radius


def area_lock_keys(service_code: str, x: float, y: float, radius_m: float) -> list[int]:
    """The advisory lock keys of the grid cells that a duplicate of this report could lie in: every cell
    the square of side 2 x radius around the point touches (one to four cells; more only for a radius
    above the cell). Two reports that could be duplicates share at least one cell, so they take turns;
    two reports far apart share none. Sorted, so that every transaction takes them in the same order."""
    category = zlib.crc32(service_code.encode()) & 0x7FFF_FFFF
    cells_x = range(int((x - radius_m) // LOCK_CELL_M), int((x + radius_m) // LOCK_CELL_M) + 1)
    cells_y = range(int((y - radius_m) // LOCK_CELL_M), int((y + radius_m) // LOCK_CELL_M) + 1)
    return sorted({category << 32 | (cx & 0xFFFF) << 16 | (cy & 0xFFFF) for cx in cells_x for cy in cells_y})


# Open requests of a category near a point, nearest first (the switchboard's check, and the duplicate
# check of a new report).
_NEARBY = (f"SELECT {COLUMNS}, pt <-> point(%(x)s, %(y)s) AS distance FROM service_requests "
           "WHERE status = 'open' AND service_code = %(code)s AND requested_at >= %(since)s "
           "AND pt <@ box(point(%(x)s - %(r)s, %(y)s - %(r)s), point(%(x)s + %(r)s, %(y)s + %(r)s)) "
           "AND pt <-> point(%(x)s, %(y)s) <= %(r)s ORDER BY pt <-> point(%(x)s, %(y)s), id LIMIT %(limit)s")
# The equipment a report is probably about: the nearest asset of the category's kinds, in service.
_NEAREST_ASSET = ("SELECT id FROM assets WHERE kind = ANY(%(kinds)s) AND status <> 'retired' "
                  "AND pt <@ box(point(%(x)s - %(ar)s, %(y)s - %(ar)s), point(%(x)s + %(ar)s, %(y)s + %(ar)s)) "
                  "AND pt <-> point(%(x)s, %(y)s) <= %(ar)s ORDER BY pt <-> point(%(x)s, %(y)s) LIMIT 1")
# Both in one round trip, for a report being submitted.
_DUPLICATE_OR_ASSET = f"SELECT ({_NEAREST_ASSET}), d.* FROM (SELECT 1) one LEFT JOIN LATERAL ({_NEARBY}) d ON true"
# The new request and its first report, in one statement.
_INSERT_REQUEST = (
    f"WITH r AS (INSERT INTO service_requests (service_code, service, description, lat, lon, pt, commune, address, "
    f"address_id, zipcode, attributes, media_url, priority, asset_id, requested_at, updated_at, expected_at, "
    f"work_order_id, status_notes) VALUES (%(code)s, %(service)s, %(description)s, %(lat)s, %(lon)s, "
    f"point(%(x)s, %(y)s), %(commune)s, %(address)s, %(address_id)s, %(zipcode)s, %(attributes)s, %(media_url)s, "
    f"%(priority)s, %(asset_id)s, %(now)s, %(now)s, %(expected_at)s, %(work_order_id)s, %(status_notes)s) "
    f"RETURNING {COLUMNS}), rep AS (INSERT INTO request_reports %(report)s SELECT r.id, %(report_values)s FROM r "
    f"RETURNING id) SELECT r.*, rep.id FROM r, rep")
# A near-duplicate: one more report on the existing request, in one statement.
_LINK_REPORT = (
    f"WITH r AS (UPDATE service_requests SET reports = reports + 1, updated_at = %(now)s, version = version + 1 "
    f"WHERE id = %(request_id)s RETURNING {COLUMNS}), rep AS (INSERT INTO request_reports %(report)s "
    f"SELECT r.id, %(report_values)s FROM r RETURNING id) SELECT r.*, rep.id FROM r, rep")
_REPORT_COLUMNS = ("(request_id, token, channel, client, reported_at, description, attributes, lat, lon, first_name, "
                   "last_name, email, phone, device_id, account_id, linked)")
_REPORT_VALUES = ("%(token)s, %(channel)s, %(client)s, %(now)s, %(description)s, %(attributes)s, %(lat)s, %(lon)s, "
                  "%(first_name)s, %(last_name)s, %(email)s, %(phone)s, %(device_id)s, %(account_id)s, %(linked)s")
_INSERT_REQUEST = _INSERT_REQUEST.replace("%(report)s", _REPORT_COLUMNS).replace("%(report_values)s", _REPORT_VALUES)
_LINK_REPORT = _LINK_REPORT.replace("%(report)s", _REPORT_COLUMNS).replace("%(report_values)s", _REPORT_VALUES)

# What opens the work order of a new request, before the request is written (so that the request is
# written once, with its order): given the request as it will be, it answers (order id, public notes).
OpenOrder = Callable[[dict[str, Any]], Awaitable[tuple[int, str]]]


async def nearby_open(conn: psycopg.AsyncConnection, service_code: str, lat: float, lon: float, radius_m: float,
                      since: dt.datetime, limit: int = 5) -> list[dict[str, Any]]:
    """Open requests of this category within ``radius_m`` reported since ``since``, nearest first."""
    x, y = point_to_lambert93(lon, lat)
    rows = await (await conn.execute(_NEARBY, {"x": x, "y": y, "r": radius_m, "code": service_code, "since": since,
                                               "limit": limit})).fetchall()
    return [{**_row(r[:-1]), "distance_m": round(float(r[-1]), 1)} for r in rows]


async def nearest_asset(conn: psycopg.AsyncConnection, kinds: Sequence[str], lat: float, lon: float,
                        radius_m: float) -> str | None:
    """The equipment the request is probably about: the nearest asset of these kinds, in service."""
    if not kinds:
        return None
    x, y = point_to_lambert93(lon, lat)
    row = await (await conn.execute(_NEAREST_ASSET, {"kinds": list(kinds), "x": x, "y": y, "ar": radius_m})).fetchone()
    return row[0] if row else None


async def submit(conn: psycopg.AsyncConnection, report: CheckedReport, *, now: dt.datetime, radius_m: float,
                 window: dt.timedelta, open_order: OpenOrder | None = None) -> Submitted:
    """Record a report in the caller's transaction: linked to the nearest open request of its category
    within ``radius_m`` and ``window``, or as a new request (with its work order from ``open_order``).

    Four round trips to the database (the lock, the duplicate and equipment lookup, the order, the
    request with its report): on the switchboard's and Open311's path, each costs more than the SQL."""
    x, y = point_to_lambert93(report.lon, report.lat)
    await conn.execute("SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT unnest(%s::int8[]) AS k ORDER BY 1) keys",
                       (area_lock_keys(report.service.code, x, y, radius_m),))
    found = await (await conn.execute(_DUPLICATE_OR_ASSET, {
        "x": x, "y": y, "r": radius_m, "code": report.service.code, "since": now - window, "limit": 1,
        "kinds": list(report.service.asset_kinds), "ar": report.service.asset_radius_m})).fetchone()
    assert found is not None
    asset_id, duplicate = found[0], found[1:]
    linked = duplicate[0] is not None
    params: dict[str, Any] = {
        "token": str(uuid.uuid4()), "channel": report.channel, "client": report.client, "now": now,
        "description": report.description, "attributes": Jsonb(report.attributes), "lat": report.lat,
        "lon": report.lon, "first_name": report.first_name, "last_name": report.last_name, "email": report.email,
        "phone": report.phone, "device_id": report.device_id, "account_id": report.account_id, "linked": linked}
    if linked:
        row = await (await conn.execute(_LINK_REPORT, {**params, "request_id": duplicate[0]})).fetchone()
    else:
        draft = {"service_code": report.service.code, "service": report.service.service,
                 "description": report.description, "lat": report.lat, "lon": report.lon, "commune": report.commune,
                 "address": report.address, "address_id": report.address_id, "zipcode": report.zipcode,
                 "asset_id": asset_id, "requested_at": now, "work_order_id": None, "status_notes": None}
        if open_order is not None:
            draft["work_order_id"], draft["status_notes"] = await open_order(draft)
        row = await (await conn.execute(_INSERT_REQUEST, {
            **params, **draft, "code": report.service.code, "x": x, "y": y, "media_url": report.media_url,
            "priority": report.service.priority,
            "expected_at": now + dt.timedelta(hours=report.service.resolution_h)})).fetchone()
    assert row is not None
    request, report_id = _row(row[:-1]), row[-1]
    if linked:
        request["distance_m"] = round(float(duplicate[-1]), 1)
    what = "linked to" if linked else "created:"
    await journal.append(conn, [NewEntry(
        at=now, domain=INTERVENTIONS, type="request.linked" if linked else "request.created",
        summary=f"request {request['id']} {what} {report.service.name}"
                f"{' at ' + request['address'] if request.get('address') else ''} ({report.channel})",
        actor=report.client if report.channel != "open311" else f"open311:{report.client}",
        asset_id=request["asset_id"], commune=request["commune"] if not request["asset_id"] else None,
        lat=None if request["asset_id"] else request["lat"], lon=None if request["asset_id"] else request["lon"],
        service=request["service"],
        data={"request_id": request["id"], "report_id": report_id, "service_code": report.service.code,
              "channel": report.channel, "reports": request["reports"], "status": request["status"],
              "work_order_id": request["work_order_id"]})])
    return Submitted(request, report_id, params["token"], linked)


async def get(conn: psycopg.AsyncConnection, request_id: int, lock: bool = False) -> dict[str, Any] | None:
    row = await (await conn.execute(f"SELECT {COLUMNS} FROM service_requests WHERE id = %s"
                                    f"{' FOR UPDATE' if lock else ''}", (request_id,))).fetchone()
    return _row(row) if row else None


async def many(conn: psycopg.AsyncConnection, ids: Sequence[int]) -> list[dict[str, Any]]:
    rows = await (await conn.execute(f"SELECT {COLUMNS} FROM service_requests WHERE id = ANY(%s) ORDER BY id",
                                     (list(ids),))).fetchall()
    return [_row(r) for r in rows]


async def by_token(conn: psycopg.AsyncConnection, token: str) -> int | None:
    try:
        uuid.UUID(token)
    except ValueError:
        return None
    row = await (await conn.execute("SELECT request_id FROM request_reports WHERE token = %s", (token,))).fetchone()
    return row[0] if row else None


async def search(conn: psycopg.AsyncConnection, *, clauses: Sequence[str], params: dict[str, Any],
                 order: str = "requested_at DESC, id DESC", limit: int = 1000) -> list[dict[str, Any]]:
    where = " AND ".join(clauses) or "true"
    rows = await (await conn.execute(f"SELECT {COLUMNS} FROM service_requests WHERE {where} ORDER BY {order} "
                                     f"LIMIT %(limit)s", {**params, "limit": limit})).fetchall()
    return [_row(r) for r in rows]


async def reports_of(conn: psycopg.AsyncConnection, request_id: int, personal: bool) -> list[dict[str, Any]]:
    """The reports of one request; without personal data unless ``personal``."""
    rows = await (await conn.execute(f"SELECT {', '.join(REPORT_FIELDS)} FROM request_reports WHERE request_id = %s "
                                     "ORDER BY id", (request_id,))).fetchall()
    out = []
    for row in rows:
        item = dict(zip(REPORT_FIELDS, row))
        item["reported_at"] = item["reported_at"].isoformat()
        if not personal:
            for name in PERSONAL_FIELDS:
                item.pop(name)
        out.append(item)
    return out


async def set_status(conn: psycopg.AsyncConnection, request: dict[str, Any], *, status: str | None, notes: str | None,
                     actor: str, now: dt.datetime, work_order_id: int | None | type[...] = ...) -> dict[str, Any]:
    """Change a request's status and public notes (and its work order link), journaled when it opens or closes."""
    new_status = status or request["status"]
    closed_at = now if new_status == "closed" and request["status"] != "closed" else (
        None if new_status == "open" else request["closed_at"])
    link = request["work_order_id"] if work_order_id is ... else work_order_id
    row = await (await conn.execute(
        f"UPDATE service_requests SET status = %s, status_notes = %s, closed_at = %s, work_order_id = %s, "
        f"updated_at = %s, version = version + 1 WHERE id = %s RETURNING {COLUMNS}",
        (new_status, notes if notes is not None else request["status_notes"], closed_at, link, now,
         request["id"]))).fetchone()
    assert row is not None
    updated = _row(row)
    if new_status != request["status"]:
        await journal.append(conn, [NewEntry(
            at=now, domain=INTERVENTIONS, type=f"request.{'closed' if new_status == 'closed' else 'reopened'}",
            summary=f"request {request['id']} {'closed' if new_status == 'closed' else 'reopened'}"
                    f"{'' if actor == 'system' else ' by ' + actor}: {updated['status_notes'] or ''}".rstrip(": "),
            actor=actor, asset_id=updated["asset_id"], commune=updated["commune"] if not updated["asset_id"] else None,
            lat=None if updated["asset_id"] else updated["lat"], lon=None if updated["asset_id"] else updated["lon"],
            service=updated["service"], data={"request_id": updated["id"], "status": new_status,
                                              "work_order_id": updated["work_order_id"]})])
    return updated


async def of_work_order(conn: psycopg.AsyncConnection, work_order_id: int) -> list[dict[str, Any]]:
    rows = await (await conn.execute(f"SELECT {COLUMNS} FROM service_requests WHERE work_order_id = %s ORDER BY id "
                                     "FOR UPDATE", (work_order_id,))).fetchall()
    return [_row(r) for r in rows]
