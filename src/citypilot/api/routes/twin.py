"""The live twin over HTTP: the current state of one asset or many, and an asset's time series."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from fastapi import APIRouter, Depends, Query

from citypilot.auth.accounts import Principal
from citypilot.auth.roles import REGISTRY_READERS, sees_restricted
from citypilot.ingest.store import NEVER
from citypilot.registry import repository as repo

from ..context import AppContext, get_context
from ..problems import Problem
from ..responses import FastJSONResponse
from ..security import allow
from .assets import FilterParams, decode_cursor

router = APIRouter(prefix="/api/v1/twin", tags=["live twin"])
MAX_RAW_POINTS = 10_000
MAX_BUCKETS = 10_000
_BUCKET = re.compile(r"^(\d{1,4})(s|min|h|d)$")
_UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86400}
STATE_COLUMNS = "asset_id, kind, ts, received_at, values, last_seen, connectivity, offline_since"


def _state(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    out = {k: v for k, v in row.items() if k not in ("asset_id", "kind")}
    if out.get("ts") == NEVER:  # heard from (a gateway reporting for others) but no values of its own yet
        out["ts"] = out["received_at"] = None
    for key in ("ts", "received_at", "last_seen", "offline_since"):
        if out.get(key) is not None:
            out[key] = out[key].isoformat()
    return out


async def _visible_asset(context: AppContext, principal: Principal, asset_id: str) -> dict[str, Any]:
    hidden = [] if sees_restricted(principal.role) else context.catalog.restricted_kinds()
    async with context.pool.connection() as conn:
        return await repo.get_asset(conn, asset_id, hide_kinds=hidden)


@router.get("", summary="Current state of many assets (the registry's filters, cursor pagination)")
async def list_states(
    filters: FilterParams = Depends(),
    connectivity: str | None = Query(None, pattern="^(online|offline|unreachable|never)$",
                                     description="Only assets in this state ('never': never reported)"),
    limit: int = Query(500, ge=1, le=repo.MAX_PAGE),
    cursor: str | None = Query(None, max_length=400),
    principal: Principal = allow(REGISTRY_READERS),
    context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    flt = filters.build(context, principal)
    if connectivity is not None:
        flt.connectivity = connectivity
    position = decode_cursor(cursor, flt)
    async with context.pool.connection() as conn:
        rows, next_cursor = await repo.list_assets(conn, flt, cursor=position, limit=limit)
        ids = [r["id"] for r in rows]
        states = {r[0]: dict(zip(STATE_COLUMNS.split(", "), r)) for r in await (await conn.execute(
            f"SELECT {STATE_COLUMNS} FROM twin WHERE asset_id = ANY(%s)", (ids,))).fetchall()}
    items = [{"id": r["id"], "kind": r["kind"], "name": r["name"], "commune": r["commune"], "lat": r["lat"],
              "lon": r["lon"], "status": r["status"], **({"distance_m": r["distance_m"]} if "distance_m" in r else {}),
              "state": _state(states.get(r["id"]))} for r in rows]
    return FastJSONResponse({"items": items, "next_cursor": next_cursor.encode() if next_cursor else None})


@router.get("/summary", summary="How many assets of each kind there are, and how many are online, offline, unreachable or never heard from")
async def summary(
    commune: str | None = Query(None, pattern=r"^\d[0-9AB]\d{3}$", description="Only this commune (INSEE code)"),
    principal: Principal = allow(REGISTRY_READERS),
    context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    """The control room's first glance: per kind, the assets in service (retired ones left out) and their
    connectivity. Kinds the caller may not see (restricted) are left out too."""
    hidden = [] if sees_restricted(principal.role) else list(context.catalog.restricted_kinds())
    async with context.pool.connection() as conn:
        rows = await (await conn.execute(
            "SELECT a.kind, count(*), count(*) FILTER (WHERE t.connectivity = 'online'), "
            "count(*) FILTER (WHERE t.connectivity = 'offline'), count(*) FILTER (WHERE t.connectivity = 'unreachable'), "
            "count(*) FILTER (WHERE t.asset_id IS NULL) "
            "FROM assets a LEFT JOIN twin t ON t.asset_id = a.id "
            "WHERE a.status <> 'retired' AND NOT (a.kind = ANY(%(hidden)s)) "
            "AND (%(commune)s::text IS NULL OR a.commune = %(commune)s) GROUP BY a.kind ORDER BY a.kind",
            {"hidden": hidden, "commune": commune})).fetchall()
    kinds = {kind: {"assets": n, "online": online, "offline": offline, "unreachable": unreachable, "never_reported": never}
             for kind, n, online, offline, unreachable, never in rows}
    totals = {key: sum(k[key] for k in kinds.values()) for key in ("assets", "online", "offline", "unreachable", "never_reported")}
    return FastJSONResponse({"kinds": kinds, "total": totals})


MAP_STATES = ("online", "offline", "unreachable", "never")
MAP_SEVERITIES = ("none", "critical", "major", "minor", "warning")


@router.get("/map", summary="Every visible asset in one compact, columnar document: what a map draws first")
async def map_snapshot(
    kind: str | None = Query(None, description="Kind(s), comma-separated; default all visible", max_length=500),
    principal: Principal = allow(REGISTRY_READERS),
    context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    """One array per column (ids, kind index, lon, lat, connectivity index, worst open alarm severity
    index), not one object per asset: 40,000 assets in about 1.5 MB, decoded by a browser in a few
    milliseconds into typed arrays. Retired assets are left out, and kinds the caller may not see."""
    hidden = set() if sees_restricted(principal.role) else set(context.catalog.restricted_kinds())
    kinds = [k for k in context.catalog.kinds if k not in hidden]
    if kind:
        wanted = [k.strip() for k in kind.split(",") if k.strip()]
        unknown = [k for k in wanted if k not in context.catalog.kinds]
        if unknown:
            raise Problem(400, f"unknown kind {unknown[0]!r}", type_="invalid-parameter", field="kind")
        kinds = [k for k in kinds if k in wanted]
    kind_index = {k: i for i, k in enumerate(kinds)}
    async with context.pool.connection() as conn:
        rows = await (await conn.execute(
            "WITH worst AS (SELECT asset_id, min(CASE severity WHEN 'critical' THEN 1 WHEN 'major' THEN 2 "
            "WHEN 'minor' THEN 3 ELSE 4 END) AS rank FROM alarms WHERE state IN ('raised', 'acknowledged') "
            "AND asset_id IS NOT NULL GROUP BY asset_id) "
            "SELECT a.id, a.kind, a.lon, a.lat, COALESCE(t.connectivity, 'never'), COALESCE(w.rank, 0) "
            "FROM assets a LEFT JOIN twin t ON t.asset_id = a.id LEFT JOIN worst w ON w.asset_id = a.id "
            "WHERE a.status <> 'retired' AND a.kind = ANY(%s) ORDER BY a.id", (kinds,))).fetchall()
    state_index = {s: i for i, s in enumerate(MAP_STATES)}
    return FastJSONResponse({
        "kinds": kinds, "domains": [context.catalog.kinds[k].domain for k in kinds], "states": list(MAP_STATES),
        "severities": list(MAP_SEVERITIES), "count": len(rows),
        "ids": [r[0] for r in rows], "kind": [kind_index[r[1]] for r in rows],
        "lon": [round(r[2], 6) for r in rows], "lat": [round(r[3], 6) for r in rows],
        "state": [state_index.get(r[4], 3) for r in rows], "alarm": [r[5] for r in rows],
    })


@router.get("/{asset_id}", summary="Current state of one asset")
async def get_state(asset_id: str, principal: Principal = allow(REGISTRY_READERS),
                    context: AppContext = Depends(get_context)) -> FastJSONResponse:
    asset = await _visible_asset(context, principal, asset_id)
    async with context.pool.connection() as conn:
        row = await (await conn.execute(f"SELECT {STATE_COLUMNS} FROM twin WHERE asset_id = %s", (asset_id,))).fetchone()
    state = _state(dict(zip(STATE_COLUMNS.split(", "), row))) if row else None
    return FastJSONResponse({"id": asset_id, "kind": asset["kind"], "state": state})


def _parse_bucket(text: str) -> dt.timedelta:
    match = _BUCKET.match(text)
    if not match or int(match.group(1)) == 0:
        raise Problem(400, "bucket is a number and a unit: 30s, 5min, 1h, 1d", type_="invalid-parameter", field="bucket")
    return dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


@router.get("/{asset_id}/series", summary="Time series of one asset over a period (raw, or downsampled per bucket)")
async def get_series(
    asset_id: str,
    start: dt.datetime = Query(..., alias="from", description="Start (ISO 8601 with time zone), included"),
    end: dt.datetime = Query(..., alias="to", description="End (ISO 8601 with time zone), excluded"),
    metric: str | None = Query(None, max_length=48, description="A numeric or boolean telemetry value; required with bucket"),
    bucket: str | None = Query(None, max_length=10, description="Downsample: 30s, 5min, 1h, 1d (avg, min, max, count)"),
    principal: Principal = allow(REGISTRY_READERS),
    context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    if start.tzinfo is None or end.tzinfo is None:
        raise Problem(400, "from and to need a time zone (e.g. 2026-11-21T22:00:00+01:00)", type_="invalid-parameter")
    if end <= start:
        raise Problem(400, "to must be after from", type_="invalid-parameter", field="to")
    asset = await _visible_asset(context, principal, asset_id)
    fields = {f.name: f for f in context.catalog.kinds[asset["kind"]].telemetry}
    if metric is not None and metric not in fields:
        raise Problem(400, f"unknown metric {metric!r} for a {asset['kind']} (known: {', '.join(fields)})",
                      type_="invalid-parameter", field="metric")
    async with context.pool.connection() as conn:
        if bucket is None:
            rows = await (await conn.execute(
                "SELECT ts, values FROM readings WHERE asset_id = %s AND ts >= %s AND ts < %s ORDER BY ts LIMIT %s",
                (asset_id, start, end, MAX_RAW_POINTS + 1))).fetchall()
            points = [{"ts": ts.isoformat(), **({"value": values.get(metric)} if metric else {"values": values})}
                      for ts, values in rows[:MAX_RAW_POINTS]
                      if metric is None or metric in values]
            return FastJSONResponse({"id": asset_id, "metric": metric, "points": points,
                                     "truncated": len(rows) > MAX_RAW_POINTS})
        width = _parse_bucket(bucket)
        if metric is None:
            raise Problem(400, "bucket needs a metric", type_="invalid-parameter", field="metric")
        if fields[metric].type not in ("number", "integer", "boolean"):
            raise Problem(400, f"{metric} is not numeric: it cannot be averaged", type_="invalid-parameter", field="metric")
        if (end - start) / width > MAX_BUCKETS:
            raise Problem(400, f"more than {MAX_BUCKETS} buckets: widen the bucket or shorten the period",
                          type_="invalid-parameter", field="bucket")
        value = "((values->>%(metric)s)::boolean)::int::float8" if fields[metric].type == "boolean" \
            else "(values->>%(metric)s)::float8"
        rows = await (await conn.execute(
            f"SELECT date_bin(%(width)s, ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket, avg({value}), "
            f"min({value}), max({value}), count(*) FROM readings WHERE asset_id = %(asset)s AND ts >= %(start)s "
            f"AND ts < %(end)s AND values ? %(metric)s GROUP BY 1 ORDER BY 1",
            {"width": width, "asset": asset_id, "start": start, "end": end, "metric": metric})).fetchall()
    return FastJSONResponse({"id": asset_id, "metric": metric, "bucket": bucket, "points": [
        {"ts": b.isoformat(), "avg": a, "min": lo, "max": hi, "count": n} for b, a, lo, hi, n in rows]})


@router.get("/{asset_id}/events", summary="Events the device reported (fault codes, alarms), newest first")
async def get_events(
    asset_id: str,
    start: dt.datetime | None = Query(None, alias="from", description="From (ISO 8601 with time zone), included"),
    end: dt.datetime | None = Query(None, alias="to", description="To (ISO 8601 with time zone), excluded"),
    code: str | None = Query(None, max_length=64, pattern=r"^[a-z0-9_]+$"),
    limit: int = Query(100, ge=1, le=1000),
    principal: Principal = allow(REGISTRY_READERS),
    context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    for name, value in (("from", start), ("to", end)):
        if value is not None and value.tzinfo is None:
            raise Problem(400, f"{name} needs a time zone (e.g. 2026-11-21T22:00:00+01:00)", type_="invalid-parameter",
                          field=name)
    await _visible_asset(context, principal, asset_id)
    clauses, params = ["asset_id = %(asset)s"], {"asset": asset_id, "limit": limit}
    for clause, name, value in (("ts >= %(start)s", "start", start), ("ts < %(end)s", "end", end), ("code = %(code)s", "code", code)):
        if value is not None:
            clauses.append(clause)
            params[name] = value
    async with context.pool.connection() as conn:
        rows = await (await conn.execute(
            f"SELECT ts, code, severity, message, data, received_at FROM device_events WHERE {' AND '.join(clauses)} "
            f"ORDER BY ts DESC LIMIT %(limit)s", params)).fetchall()
    return FastJSONResponse({"id": asset_id, "items": [
        {"ts": ts.isoformat(), "code": c, "severity": sev, "message": msg, "data": data, "received_at": rec.isoformat()}
        for ts, c, sev, msg, data, rec in rows]})
