"""Public transport figures: bus priority at the junctions, per line."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Query

from citypilot.auth.accounts import Principal
from citypilot.auth.roles import REGISTRY_READERS
from citypilot.transport.bus_priority import per_line

from ..context import AppContext, get_context
from ..problems import Problem
from ..responses import FastJSONResponse
from ..security import allow

router = APIRouter(prefix="/api/v1/kpi", tags=["kpi"])
MAX_PERIOD = dt.timedelta(days=366)


@router.get("/bus-priority", summary="Bus priority per line: requests, share served, bus time saved")
async def bus_priority(
    since: dt.datetime | None = Query(None, description="From (default: 24 hours before until)"),
    until: dt.datetime | None = Query(None, description="...until (default: now)"),
    principal: Principal = allow(REGISTRY_READERS),
    context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    """Per bus line, the priority requests the junctions received over the period, how many were
    granted (``share_served_pct``) and the red wait the granted ones spared the buses (``time_saved_s``).
    A line with no request in the period is absent; a period without any gives an empty list and a
    null share, not 0 %."""
    until = until or dt.datetime.now(dt.timezone.utc)
    since = since or until - dt.timedelta(hours=24)
    for name, value in (("since", since), ("until", until)):
        if value.tzinfo is None:
            raise Problem(400, f"{name} needs a time zone (e.g. 2026-11-21T08:00:00+01:00)", type_="invalid-parameter",
                          field=name)
    if since >= until:
        raise Problem(400, "since must be before until", type_="invalid-parameter", field="since")
    if until - since > MAX_PERIOD:
        raise Problem(400, "the period is longer than a year: ask year by year", type_="invalid-parameter",
                      field="since")
    async with context.pool.connection() as conn:
        return FastJSONResponse(await per_line(conn, since, until))
