"""The event journal over HTTP: everything that happened, by time, asset, commune, zone, domain, type."""

from __future__ import annotations

import datetime as dt
import json

from fastapi import APIRouter, Depends, Query
from shapely.geometry import shape
from shapely.validation import explain_validity

from citypilot.auth.accounts import Principal
from citypilot.auth.roles import JOURNAL_READERS, sees_restricted
from citypilot.journal.entries import TYPE_QUERY
from citypilot.journal.query import MAX_PAGE, JournalFilter, list_entries

from ..context import AppContext, get_context
from ..problems import Problem
from ..responses import FastJSONResponse
from ..security import allow
from .assets import _floats, _split

router = APIRouter(prefix="/api/v1/journal", tags=["journal"])


def _aware(value: dt.datetime | None, field: str) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        raise Problem(400, f"{field} needs a time zone (e.g. 2026-11-21T08:00:00+01:00)", type_="invalid-parameter",
                      field=field)
    return value


@router.get("", summary="Journal entries (filters; newest first, or oldest first after a cursor)")
async def list_journal(
    since: dt.datetime | None = Query(None, description="Entries at or after this time (with a time zone)"),
    until: dt.datetime | None = Query(None, description="Entries before this time"),
    asset: str | None = Query(None, max_length=1000, description="Asset id(s), comma-separated"),
    commune: str | None = Query(None, max_length=500, description="INSEE code(s), comma-separated"),
    domain: str | None = Query(None, max_length=200), type: str | None = Query(None, max_length=300, pattern=TYPE_QUERY,
                                                                               description="Type(s), comma-separated; "
                                                                                           "'alarm.*' for a family"),
    severity: str | None = Query(None, max_length=100), alarm: int | None = Query(None, ge=1),
    actor: str | None = Query(None, max_length=64),
    bbox: str | None = Query(None, max_length=200, description="min_lon,min_lat,max_lon,max_lat"),
    polygon: str | None = Query(None, max_length=20_000, description="A GeoJSON Polygon in lon/lat"),
    after: int | None = Query(None, ge=0, description="Oldest first, after this id (a client catching up)"),
    before: int | None = Query(None, ge=1, description="Newest first, before this id (next_cursor)"),
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    principal: Principal = allow(JOURNAL_READERS),
    context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    flt = JournalFilter(since=_aware(since, "since"), until=_aware(until, "until"), assets=_split(asset),
                        communes=_split(commune), domains=_split(domain), types=_split(type), severities=_split(severity),
                        alarm_id=alarm, actor=actor, include_restricted=sees_restricted(principal.role))
    if bbox:
        min_lon, min_lat, max_lon, max_lat = _floats(bbox, 4, "bbox", "min_lon,min_lat,max_lon,max_lat in degrees")
        if min_lon >= max_lon or min_lat >= max_lat:
            raise Problem(400, "bbox must be min_lon,min_lat,max_lon,max_lat with min < max", type_="invalid-parameter",
                          field="bbox")
        flt.bbox = (min_lon, min_lat, max_lon, max_lat)
    if polygon:
        try:
            geometry = shape(json.loads(polygon))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise Problem(400, f"polygon is not a GeoJSON geometry: {exc}", type_="invalid-parameter", field="polygon") from None
        if geometry.geom_type not in ("Polygon", "MultiPolygon") or not geometry.is_valid:
            why = "not a polygon" if geometry.geom_type not in ("Polygon", "MultiPolygon") else explain_validity(geometry)
            raise Problem(400, f"polygon: {why}", type_="invalid-parameter", field="polygon")
        flt.polygon = geometry
    if after is not None and before is not None:
        raise Problem(400, "give after or before, not both", type_="invalid-parameter", field="after")
    async with context.pool.connection() as conn:
        items, cursor = await list_entries(conn, flt, after=after, before=before, newest_first=after is None, limit=limit)
    return FastJSONResponse({"items": items, "next_cursor": cursor,
                             "order": "oldest_first" if after is not None else "newest_first"})
