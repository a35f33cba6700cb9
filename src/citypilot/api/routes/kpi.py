"""Key performance indicators that need a computation over the time series (the others come from the
twin summary and the alarm statistics)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query

from citypilot.auth.accounts import Principal
from citypilot.auth.roles import REGISTRY_READERS, WORK_ORDER_READERS, Role

from ..context import AppContext, get_context
from ..periods import checked_period
from ..problems import Problem
from ..responses import FastJSONResponse
from ..security import allow

router = APIRouter(prefix="/api/v1/kpi", tags=["kpi"])
LOCAL = ZoneInfo("Europe/Paris")


@router.get("/lighting-energy", summary="Street lighting's energy on a day, and what it would have been before LED")
async def lighting_energy(
    day: dt.date | None = Query(None, description="The local day (Europe/Paris); default today"),
    principal: Principal = allow(REGISTRY_READERS),
    context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    """The energy the lighting cabinets' meters counted over the day (the increase of each cabinet's
    ``energy_kwh`` between its first and last reading of the day), and an estimate of the same day
    before LED: that energy scaled by the lights' power before LED over their power now (the sheets'
    ``pre_led_power_w`` and ``lamp_power_w``; lights without both are left out of the ratio).
    A day with no meter reading gives nulls, not zeros: no data is not no consumption."""
    today = dt.datetime.now(LOCAL).date()
    day = day or today
    if day > today:
        raise Problem(400, f"{day} is in the future", type_="invalid-parameter", field="day")
    start = dt.datetime.combine(day, dt.time(), LOCAL)
    end = start + dt.timedelta(days=1)
    async with context.pool.connection() as conn:
        meters = await (await conn.execute(
            "SELECT count(*), sum(used) FROM (SELECT r.asset_id, max((r.values->>'energy_kwh')::float8) "
            "- min((r.values->>'energy_kwh')::float8) AS used FROM readings r JOIN assets a ON a.id = r.asset_id "
            "WHERE a.kind = 'lighting_cabinet' AND r.ts >= %s AND r.ts < %s AND r.values ? 'energy_kwh' "
            "GROUP BY r.asset_id) m", (start, end))).fetchone()
        powers = await (await conn.execute(
            "SELECT count(*), sum((attributes->>'pre_led_power_w')::float8), sum((attributes->>'lamp_power_w')::float8) "
            "FROM assets WHERE kind = 'street_light' AND status <> 'retired' AND attributes ? 'pre_led_power_w' "
            "AND attributes ? 'lamp_power_w'")).fetchone()
    cabinets, used = meters
    lights, before_w, now_w = powers
    ratio = before_w / now_w if lights and now_w else None
    energy = round(used, 1) if cabinets else None
    before = round(used * ratio, 1) if cabinets and ratio else None
    return FastJSONResponse({
        "day": day.isoformat(), "energy_kwh": energy, "before_led_kwh": before,
        "saving_pct": round(100 * (1 - 1 / ratio), 1) if before and ratio else None,
        "cabinets_metered": cabinets, "lights_with_pre_led_power": lights, "partial_day": day == today})


@router.get("/interventions", summary="Response and resolution times against their SLAs, backlog, overdue orders")
async def interventions(
    since: dt.datetime | None = Query(None, description="Orders opened from (default: 30 days ago)"),
    until: dt.datetime | None = Query(None, description="...until (default: now)"),
    principal: Principal = allow(WORK_ORDER_READERS - {Role.FIELD_AGENT}),
    context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    from citypilot.auth.roles import sees_restricted
    from citypilot.workorders.kpi import intervention_kpis

    since, until = checked_period(since, until, dt.timedelta(days=30))
    async with context.pool.connection() as conn:
        return FastJSONResponse(await intervention_kpis(conn, since, until, sees_restricted(principal.role)))
