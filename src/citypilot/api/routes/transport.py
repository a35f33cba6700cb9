"""Public transport figures: bus priority at the junctions, per line."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Query

from citypilot.auth.accounts import Principal
from citypilot.auth.roles import REGISTRY_READERS
from citypilot.transport.bus_priority import per_line

from ..context import AppContext, get_context
from ..periods import checked_period
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
    since, until = checked_period(since, until, dt.timedelta(hours=24), MAX_PERIOD)
    async with context.pool.connection() as conn:
        return FastJSONResponse(await per_line(conn, since, until))
