"""Public lighting: the dimming programmes, and the monthly energy KPI against the forecast and the
pre-LED baseline (the figures themselves are computed in ``citypilot.lighting``; this is the adapter)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Hashable
from typing import Any

from fastapi import APIRouter, Depends, Query

from citypilot.auth.accounts import Principal
from citypilot.auth.roles import REGISTRY_READERS
from citypilot.lighting import energy, policy, report
from citypilot.lighting.astro import PARIS
from citypilot.registry.streets import STREET_SQL
from citypilot.safety.interlocks import DEFAULT_FLOOR_PCT

from ..context import AppContext, get_context
from ..problems import Problem
from ..responses import FastJSONResponse
from ..security import allow

router = APIRouter(tags=["lighting"])
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
GROUPINGS = ("commune", "cabinet", "street")
_PROFILE_SQL = ("a.attributes->>'street_type' AS street_type, a.attributes->'safety_floor_pct' AS floor, "
                "a.attributes->'ecological_corridor' AS corridor, a.attributes->'presence_detection' AS presence")
_NUMBER = "jsonb_typeof(a.attributes->'{0}') = 'number'"


def _segments(segments: list[policy.Segment]) -> list[dict[str, Any]]:
    return [{"from": s.start.isoformat(), "to": s.end.isoformat(), "level_pct": s.level_pct} for s in segments]


@router.get("/api/v1/lighting/programmes", summary="The dimming programmes per street type, and a night's timeline")
async def programmes(
    date: dt.date | None = Query(None, description="The evening whose night to show (local date; default today)"),
    principal: Principal = allow(REGISTRY_READERS),
) -> FastJSONResponse:
    """The programmes as data (windows anchored on sunset, sunrise or the clock), the rules applied on top
    of them, and for ``date`` the night's sunset and sunrise at Dijon with each programme's timeline
    (safety floors are per light and come on top: a light never burns below its own)."""
    day = date or dt.datetime.now(PARIS).date()
    night = policy.night_of(day)
    return FastJSONResponse({
        "programmes": [p.as_dict() for p in policy.PROGRAMMES.values()],
        "rules": {
            "safety_floor": "never below the light's safety_floor_pct (default by street type: "
                            + ", ".join(f"{k} {v:g} %" for k, v in DEFAULT_FLOOR_PCT.items()) + ")",
            "adaptive": {"full_activity": policy.ADAPTIVE_FULL_ACTIVITY, "max_cut_pct": 100 * policy.ADAPTIVE_MAX_CUT},
            "presence": {"idle_pct": policy.PRESENCE_IDLE_PCT, "hold_s": policy.PRESENCE_HOLD_S,
                         "expected_duty": policy.PRESENCE_EXPECTED_DUTY},
            "fallback_programme": policy.FALLBACK},
        "night": {"date": day.isoformat(), "sunset": night.sunset.isoformat(), "sunrise": night.sunrise.isoformat(),
                  "hours": round(night.hours, 2)},
        "timelines": {name: _segments(policy.programme_timeline(p, night)) for name, p in policy.PROGRAMMES.items()},
        "goal_saving_pct": energy.GOAL_SAVING_PCT})


def _month(month: str | None) -> tuple[str, dt.datetime, dt.datetime, bool]:
    now = dt.datetime.now(PARIS)
    if month is None:
        year, number = now.year, now.month
    else:
        match = _MONTH.match(month)
        if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1970:
            raise Problem(400, f"month must be YYYY-MM (e.g. 2026-11), not {month!r}", type_="invalid-parameter",
                          field="month")
        year, number = int(match.group(1)), int(match.group(2))
    start = dt.datetime(year, number, 1, tzinfo=PARIS)
    end = dt.datetime(year + number // 12, number % 12 + 1, 1, tzinfo=PARIS)
    if start > now:
        raise Problem(400, f"{year:04d}-{number:02d} has not begun", type_="invalid-parameter", field="month")
    return f"{year:04d}-{number:02d}", start, min(end, now), end > now


def _classes_sql(where: str) -> str:
    return (f"SELECT {{unit}}, {_PROFILE_SQL}, count(*), sum((a.attributes->>'lamp_power_w')::float8) FILTER "
            f"(WHERE {_NUMBER.format('lamp_power_w')}), sum((a.attributes->>'pre_led_power_w')::float8) FILTER "
            f"(WHERE {_NUMBER.format('pre_led_power_w')}), count(*) FILTER (WHERE {_NUMBER.format('pre_led_power_w')}) "
            f"FROM assets a WHERE a.kind = 'street_light' AND a.status <> 'retired' {where} GROUP BY {{groups}}")


def _light_class(row: tuple[Any, ...]) -> report.LightClass:
    street_type, floor, corridor, presence, lights, lamp_w, pre_w, with_pre = row
    attributes = {"street_type": street_type, "safety_floor_pct": floor, "ecological_corridor": corridor,
                  "presence_detection": presence}
    return report.LightClass({k: v for k, v in attributes.items() if v is not None}, lights, lamp_w or 0.0, pre_w,
                             with_pre)


_METER_SQL = """
SELECT c.id, c.name, c.commune, f.t, f.kwh, l.t, l.kwh, b.t, b.kwh, n.t, n.kwh
FROM assets c
LEFT JOIN LATERAL (SELECT extract(epoch FROM r.ts)::float8 AS t, (r.values->>'energy_kwh')::float8 AS kwh FROM readings r
    WHERE r.asset_id = c.id AND r.ts >= %(start)s AND r.ts < %(end)s AND jsonb_typeof(r.values->'energy_kwh') = 'number'
    ORDER BY r.ts LIMIT 1) f ON true
LEFT JOIN LATERAL (SELECT extract(epoch FROM r.ts)::float8 AS t, (r.values->>'energy_kwh')::float8 AS kwh FROM readings r
    WHERE r.asset_id = c.id AND r.ts >= %(start)s AND r.ts < %(end)s AND jsonb_typeof(r.values->'energy_kwh') = 'number'
    ORDER BY r.ts DESC LIMIT 1) l ON true
LEFT JOIN LATERAL (SELECT extract(epoch FROM r.ts)::float8 AS t, (r.values->>'energy_kwh')::float8 AS kwh FROM readings r
    WHERE r.asset_id = c.id AND r.ts >= %(start)s - interval '1 day' AND r.ts < %(start)s
      AND jsonb_typeof(r.values->'energy_kwh') = 'number' ORDER BY r.ts DESC LIMIT 1) b ON true
LEFT JOIN LATERAL (SELECT extract(epoch FROM r.ts)::float8 AS t, (r.values->>'energy_kwh')::float8 AS kwh FROM readings r
    WHERE r.asset_id = c.id AND r.ts >= %(end)s AND r.ts < %(end)s + interval '1 day'
      AND jsonb_typeof(r.values->'energy_kwh') = 'number' ORDER BY r.ts LIMIT 1) n ON true
WHERE c.kind = 'lighting_cabinet' AND c.status <> 'retired' {where}
ORDER BY c.id
"""

# By street: the lights' daily energy as rolled up by lighting/rollup.py (a row per light and local day,
# 31 × 34,000 at most a month), not their readings: integrating a month of those took minutes.
_LIGHTS_SQL = """
WITH lights AS (
    SELECT a.id, a.commune, {street} AS street, {profile},
           CASE WHEN {lamp} THEN (a.attributes->>'lamp_power_w')::float8 END AS lamp_w,
           CASE WHEN {pre} THEN (a.attributes->>'pre_led_power_w')::float8 END AS pre_w
    FROM assets a WHERE a.kind = 'street_light' AND a.status <> 'retired' {where}
), per_light AS (
    SELECT d.asset_id, sum(d.kwh) AS kwh, sum(d.covered_s) AS covered_s,
           extract(epoch FROM min(d.first_ts))::float8 AS t0, extract(epoch FROM max(d.last_ts))::float8 AS t1
    FROM light_energy_daily d JOIN lights l ON l.id = d.asset_id
    WHERE d.day >= %(first_day)s AND d.day < %(end_day)s
    GROUP BY d.asset_id
)
SELECT l.street, l.commune, l.street_type, l.floor, l.corridor, l.presence, l.lamp_w, l.pre_w,
       p.kwh, p.covered_s, p.t0, p.t1
FROM lights l LEFT JOIN per_light p ON p.asset_id = l.id
"""
_ROLLED_DAYS_SQL = "SELECT max(day), count(*) FROM light_energy_days WHERE day >= %(first_day)s AND day < %(end_day)s"


@router.get("/api/v1/kpi/lighting-energy/monthly",
            summary="Street lighting's energy over a month per commune, cabinet or street: actual, forecast, pre-LED")
async def lighting_energy_monthly(
    month: str | None = Query(None, description="YYYY-MM, local (Europe/Paris); default the current month"),
    by: str = Query("commune", description="commune | cabinet (the cabinets' meters) or street (the lights' telemetry)"),
    commune: str | None = Query(None, description="Only this commune (INSEE code)"),
    principal: Principal = allow(REGISTRY_READERS),
    context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    """Per group: the energy used (``actual_kwh``), what the dimming programmes forecast for the same
    lights over the same span (``forecast_kwh``), what the sodium lamps they replaced would have used
    at full power from dusk to dawn (``baseline_kwh``), ``saving_pct`` = 1 − actual / baseline,
    ``vs_forecast_pct`` = actual / forecast − 1, and ``coverage_pct``, the share of the period the data
    covers. Against the contract's goal of 65 % (``goal_saving_pct``, ``meets_goal``).

    By commune and cabinet the actual energy is the cabinets' meters (``energy_kwh``, cumulative: the
    month's increase, interpolated at the month's boundaries): it is what is billed, losses included,
    and it costs four index look-ups per cabinet. A light's commune there is its cabinet's. By street
    it is the lights' own ``power_w`` readings integrated over time (a reading holds until the next, 15
    minutes at most), as only lights know their street: the street is the sheet's ``street`` attribute,
    else the address without its house number. The integration is the daily roll-up's
    (``lighting/rollup.py``): only the days rolled up count (never today), ``through`` is the last of
    them in the month (null if none) and ``days_rolled_up`` how many there are. A group without data
    has nulls, not zeros; its forecast and baseline are then over the whole period."""
    if by not in GROUPINGS:
        raise Problem(400, f"by must be one of {', '.join(GROUPINGS)}, not {by!r}", type_="invalid-parameter", field="by")
    label, start, end, partial = _month(month)
    # the local days of the period; today, not over, is never rolled up (end is then now)
    params: dict[str, Any] = {"start": start, "end": end, "commune": commune, "first_day": start.date(),
                              "end_day": end.date()}
    rolled: dict[str, Any] = {}
    units: list[report.Unit] = []
    covered: dict[int, float] | None = None
    names: dict[Hashable, dict[str, Any]] = {}
    async with context.pool.connection() as conn:
        if by in ("commune", "cabinet"):
            where = "AND c.commune = %(commune)s" if commune else ""
            cabinets = await (await conn.execute(_METER_SQL.format(where=where), params)).fetchall()
            sql = _classes_sql("AND a.reported_by IN (SELECT c.id FROM assets c WHERE c.kind = 'lighting_cabinet' "
                               f"AND c.status <> 'retired' {where})").format(
                unit="a.reported_by", groups="1, 2, 3, 4, 5")
            classes: dict[str, list[report.LightClass]] = {}
            for row in await (await conn.execute(sql, params)).fetchall():
                classes.setdefault(row[0], []).append(_light_class(row[1:]))
            s0, s1 = start.timestamp(), end.timestamp()
            for cab, name, code, *meter in cabinets:
                pairs = [None if meter[i] is None or meter[i + 1] is None else (meter[i], meter[i + 1])
                         for i in range(0, 8, 2)]
                group = cab if by == "cabinet" else code
                units.append(report.meter_unit(group, classes.get(cab, []), s0, s1, *pairs))
                names[group] = ({"cabinet": cab, "name": name, "commune": code} if by == "cabinet"
                                else {"commune": code})
        else:
            sql = _LIGHTS_SQL.format(street=STREET_SQL, profile=_PROFILE_SQL, lamp=_NUMBER.format("lamp_power_w"),
                                     pre=_NUMBER.format("pre_led_power_w"),
                                     where="AND a.commune = %(commune)s" if commune else "")
            through, days = (await (await conn.execute(_ROLLED_DAYS_SQL, params)).fetchone()) or (None, 0)
            rolled = {"through": through.isoformat() if through else None, "days_rolled_up": days}
            covered = {}
            for street, code, *profile, lamp_w, pre_w, kwh, covered_s, t0, t1 in await (
                    await conn.execute(sql, params)).fetchall():
                group = (street, code)
                cls = _light_class((*profile, 1, lamp_w, pre_w, 1 if pre_w is not None else 0))
                if kwh is not None:
                    covered[len(units)] = covered_s
                units.append(report.Unit(group, [cls], kwh, t0, min(t1, end.timestamp()) if t1 else t1))
                names[group] = {"street": street, "commune": code}
    groups = report.figures(units, start, end, covered)
    rows = []
    for key, fig in groups.items():
        row = {**names[key], "commune_name": context.communes.name(names[key]["commune"])}
        if by == "commune":
            row["cabinets"] = fig.units
        elif by == "cabinet" and fig.meter_resets:
            row["meter_reset"] = True
        rows.append({**row, **fig.as_dict()})
    rows.sort(key=lambda r: (r.get("commune_name") or "", r.get("street") or "", r.get("cabinet") or ""))
    whole = report.total(groups)
    summary = whole.as_dict()
    return FastJSONResponse({
        "month": label, "by": by, "from": start.isoformat(), "to": end.isoformat(), "partial_month": partial,
        "source": "light_telemetry" if by == "street" else "cabinet_meters", **rolled,
        "goal_saving_pct": energy.GOAL_SAVING_PCT, "meets_goal": summary["meets_goal"],
        "total": summary, "groups_without_data": sum(1 for f in groups.values() if f.units_with_data == 0),
        "groups": rows})
