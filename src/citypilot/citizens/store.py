"""PostgreSQL adapter of citizens' requests: submit a report (linked to an open near-duplicate when
there is one), read requests and their reports, and follow a work order's progress.

A report is checked before it reaches here (``citizens/reports.py``). Submitting takes a per-category
advisory lock for the transaction, so that two people reporting the same pothole at the same instant
still end up on one request. The requester's personal data stays in ``request_reports`` and is only
read by ``reports_of`` for roles allowed to see it.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

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


def _lock_key(service_code: str) -> int:
    return 0x4F333131_00000000 | zlib.crc32(service_code.encode())  # "O311" + the category


async def nearby_open(conn: psycopg.AsyncConnection, service_code: str, lat: float, lon: float, radius_m: float,
                      since: dt.datetime, limit: int = 5) -> list[dict[str, Any]]:
    """Open requests of this category within ``radius_m`` reported since ``since``, nearest first."""
    x, y = point_to_lambert93(lon, lat)
    rows = await (await conn.execute(
        f"SELECT {COLUMNS}, pt <-> point(%(x)s, %(y)s) AS distance FROM service_requests "
        "WHERE status = 'open' AND service_code = %(code)s AND requested_at >= %(since)s "
        "AND pt <@ box(point(%(x)s - %(r)s, %(y)s - %(r)s), point(%(x)s + %(r)s, %(y)s + %(r)s)) "
        "AND pt <-> point(%(x)s, %(y)s) <= %(r)s ORDER BY pt <-> point(%(x)s, %(y)s), id LIMIT %(limit)s",
        {"x": x, "y": y, "r": radius_m, "code": service_code, "since": since, "limit": limit})).fetchall()
    return [{**_row(r[:-1]), "distance_m": round(float(r[-1]), 1)} for r in rows]


async def nearest_asset(conn: psycopg.AsyncConnection, kinds: Sequence[str], lat: float, lon: float,
                        radius_m: float) -> str | None:
    """The equipment the request is probably about: the nearest asset of these kinds, in service."""
    if not kinds:
        return None
    x, y = point_to_lambert93(lon, lat)
    row = await (await conn.execute(
        "SELECT id FROM assets WHERE kind = ANY(%(kinds)s) AND status <> 'retired' "
        "AND pt <@ box(point(%(x)s - %(r)s, %(y)s - %(r)s), point(%(x)s + %(r)s, %(y)s + %(r)s)) "
        "AND pt <-> point(%(x)s, %(y)s) <= %(r)s ORDER BY pt <-> point(%(x)s, %(y)s) LIMIT 1",
        {"kinds": list(kinds), "x": x, "y": y, "r": radius_m})).fetchone()
    return row[0] if row else None


async def submit(conn: psycopg.AsyncConnection, report: CheckedReport, *, now: dt.datetime, radius_m: float,
                 window: dt.timedelta) -> Submitted:
    """Record a report in the caller's transaction: linked to the nearest open request of its category
    within ``radius_m`` and ``window``, or as a new request."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(report.service.code) & 0x7FFFFFFFFFFFFFFF,))
    token = str(uuid.uuid4())
    existing = await nearby_open(conn, report.service.code, report.lat, report.lon, radius_m, now - window, limit=1)
    if existing:
        request = existing[0]
        row = await (await conn.execute(
            f"UPDATE service_requests SET reports = reports + 1, updated_at = %s, version = version + 1 "
            f"WHERE id = %s RETURNING {COLUMNS}", (now, request["id"]))).fetchone()
        assert row is not None
        request = {**_row(row), "distance_m": request["distance_m"]}
    else:
        asset_id = await nearest_asset(conn, report.service.asset_kinds, report.lat, report.lon,
                                       report.service.asset_radius_m)
        x, y = point_to_lambert93(report.lon, report.lat)
        row = await (await conn.execute(
            f"INSERT INTO service_requests (service_code, service, description, lat, lon, pt, commune, address, "
            f"address_id, zipcode, attributes, media_url, priority, asset_id, requested_at, updated_at, expected_at) "
            f"VALUES (%s, %s, %s, %s, %s, point(%s, %s), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {COLUMNS}",
            (report.service.code, report.service.service, report.description, report.lat, report.lon, x, y,
             report.commune, report.address, report.address_id, report.zipcode, Jsonb(report.attributes),
             report.media_url, report.service.priority, asset_id, now, now,
             now + dt.timedelta(hours=report.service.resolution_h)))).fetchone()
        assert row is not None
        request = _row(row)
    linked = bool(existing)
    report_row = await (await conn.execute(
        "INSERT INTO request_reports (request_id, token, channel, client, reported_at, description, attributes, lat, "
        "lon, first_name, last_name, email, phone, device_id, account_id, linked) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (request["id"], token, report.channel, report.client, now, report.description, Jsonb(report.attributes),
         report.lat, report.lon, report.first_name, report.last_name, report.email, report.phone, report.device_id,
         report.account_id, linked))).fetchone()
    assert report_row is not None
    what = "linked to" if linked else "created:"
    await journal.append(conn, [NewEntry(
        at=now, domain=INTERVENTIONS, type="request.linked" if linked else "request.created",
        summary=f"request {request['id']} {what} {report.service.name}"
                f"{' at ' + request['address'] if request.get('address') else ''} ({report.channel})",
        actor=report.client if report.channel != "open311" else f"open311:{report.client}",
        asset_id=request["asset_id"], commune=request["commune"] if not request["asset_id"] else None,
        lat=None if request["asset_id"] else request["lat"], lon=None if request["asset_id"] else request["lon"],
        service=request["service"],
        data={"request_id": request["id"], "report_id": report_row[0], "service_code": report.service.code,
              "channel": report.channel, "reports": request["reports"], "status": request["status"]})])
    return Submitted(request, report_row[0], token, linked)


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
