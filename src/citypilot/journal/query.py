"""Reading the journal back: filters by time, asset, commune, zone, domain, type and severity, with
cursor pagination on the entry id (ids are committed in order, so a cursor never skips an entry)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import psycopg
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry
from shapely.prepared import prep

from citypilot.geo.projection import to_lambert93

from .store import ENTRY_COLUMNS, row_to_entry

MAX_PAGE = 1000


@dataclass
class JournalFilter:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    assets: list[str] = field(default_factory=list)
    communes: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)          # exact, or a prefix ending in '.*' (alarm.*)
    severities: list[str] = field(default_factory=list)
    alarm_id: int | None = None
    actor: str | None = None
    bbox: tuple[float, float, float, float] | None = None   # min lon, min lat, max lon, max lat
    polygon: BaseGeometry | None = None                      # lon/lat; checked after the bbox prefilter
    include_restricted: bool = False
    service: str | None = None                               # only entries of this service
    work_order_id: int | None = None                         # entries about this work order
    request_id: int | None = None                            # entries about this citizen's request

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if self.since is not None:
            clauses.append("at >= %(since)s")
            params["since"] = self.since
        if self.until is not None:
            clauses.append("at < %(until)s")
            params["until"] = self.until
        for name, column in (("assets", "asset_id"), ("communes", "commune"), ("domains", "domain"),
                             ("severities", "severity")):
            values = getattr(self, name)
            if values:
                clauses.append(f"{column} = ANY(%({name})s)")
                params[name] = values
        if self.types:
            exact = [t for t in self.types if not t.endswith(".*")]
            prefixes = [t[:-1] for t in self.types if t.endswith(".*")]
            parts = []
            if exact:
                parts.append("type = ANY(%(types)s)")
                params["types"] = exact
            for i, prefix in enumerate(prefixes):
                parts.append(f"starts_with(type, %(prefix{i})s)")
                params[f"prefix{i}"] = prefix
            clauses.append("(" + " OR ".join(parts) + ")")
        if self.alarm_id is not None:
            clauses.append("alarm_id = %(alarm_id)s")
            params["alarm_id"] = self.alarm_id
        if self.actor is not None:
            clauses.append("actor = %(actor)s")
            params["actor"] = self.actor
        if self.service is not None:
            clauses.append("service = %(service)s")
            params["service"] = self.service
        for name in ("work_order_id", "request_id"):  # expression indexes of migration 0005
            value = getattr(self, name)
            if value is not None:
                clauses.append(f"(data->>'{name}')::bigint = %({name})s AND data ? '{name}'")
                params[name] = value
        if not self.include_restricted:
            clauses.append("NOT restricted")
        box = self.bbox
        if self.polygon is not None:
            min_lon, min_lat, max_lon, max_lat = self.polygon.bounds
            if box is not None:
                box = (max(box[0], min_lon), max(box[1], min_lat), min(box[2], max_lon), min(box[3], max_lat))
            else:
                box = (min_lon, min_lat, max_lon, max_lat)
        if box is not None:
            min_lon, min_lat, max_lon, max_lat = box
            xs, ys = to_lambert93([min_lon, min_lon, max_lon, max_lon], [min_lat, max_lat, min_lat, max_lat])
            clauses.append("pt <@ box(point(%(bx1)s, %(by1)s), point(%(bx2)s, %(by2)s)) "
                           "AND lon BETWEEN %(min_lon)s AND %(max_lon)s AND lat BETWEEN %(min_lat)s AND %(max_lat)s")
            params.update(bx1=float(min(xs)) - 1, by1=float(min(ys)) - 1, bx2=float(max(xs)) + 1,
                          by2=float(max(ys)) + 1, min_lon=min_lon, max_lon=max_lon, min_lat=min_lat, max_lat=max_lat)
        return (" AND ".join(clauses) or "true"), params


async def list_entries(conn: psycopg.AsyncConnection, flt: JournalFilter, *, after: int | None = None,
                       before: int | None = None, newest_first: bool = True,
                       limit: int = 100) -> tuple[list[dict[str, Any]], int | None]:
    """One page of entries and the cursor of the next page (None at the end).

    Newest first by default (``before`` pages back in time); oldest first with ``after`` (a client
    catching up). A polygon is applied after the bounding-box prefilter, page by page, so a page may
    need several reads."""
    where, params = flt.where()
    if after is not None:
        where += " AND id > %(after)s"
        params["after"] = after
    if before is not None:
        where += " AND id < %(before)s"
        params["before"] = before
    order = "DESC" if newest_first else "ASC"
    inside = prep(flt.polygon) if flt.polygon is not None else None
    items: list[dict[str, Any]] = []
    last_id: int | None = None
    while len(items) < limit:
        page_params = dict(params)
        page_where = where
        if last_id is not None:
            page_where += " AND id < %(last)s" if newest_first else " AND id > %(last)s"
            page_params["last"] = last_id
        rows = await (await conn.execute(f"SELECT {ENTRY_COLUMNS} FROM journal WHERE {page_where} "
                                         f"ORDER BY id {order} LIMIT %(limit)s", {**page_params, "limit": limit + 1})).fetchall()
        for row in rows:
            entry = row_to_entry(row)
            last_id = entry["id"]
            if inside is not None:
                if entry["lon"] is None or not inside.contains(Point(entry["lon"], entry["lat"])):
                    continue
            items.append(entry)
            if len(items) > limit:
                break
        if len(rows) <= limit:  # nothing more to read
            break
    if len(items) > limit:
        items = items[:limit]
        return items, items[-1]["id"]
    return items, None
