"""Alarms over HTTP: list and filter them, read one with its history, act on it (acknowledge, clear,
close, shelve, unshelve, comment), and the control room's statistics.

Every action is a journal entry with the operator's name (``alarms/apply.py``). An alarm the caller
may not see (public safety, for roles that do not see it) does not exist for them: 404, as for an id
that was never used. An action the alarm's state does not allow is a 409 that says why.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from citypilot.alarms import lifecycle, store
from citypilot.alarms.apply import act
from citypilot.alarms.lifecycle import SEVERITIES, Alarm, TransitionError
from citypilot.auth.accounts import Principal
from citypilot.auth.roles import ALARM_HANDLERS, REGISTRY_READERS, Role, sees_restricted
from citypilot.geo.projection import to_lambert93
from citypilot.journal.query import JournalFilter, list_entries

from ..context import AppContext, get_context
from ..problems import Problem
from ..responses import FastJSONResponse
from ..security import allow
from .assets import _floats, _split

router = APIRouter(prefix="/api/v1/alarms", tags=["alarms"])
STATES = ("raised", "acknowledged", "cleared", "closed")
OPEN_STATES = ("raised", "acknowledged", "cleared")
MAX_PAGE = 500


def _may_see(principal: Principal) -> Callable[[Alarm], bool]:
    restricted_ok = sees_restricted(principal.role)
    return lambda alarm: restricted_ok or not alarm.restricted


def _may_act(principal: Principal, alarm: Alarm) -> bool:
    if principal.role == Role.SERVICE_COORDINATOR:
        return principal.service is not None and (principal.service in alarm.notify or principal.service == alarm.service)
    return True


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _check_in(values: list[str], allowed: tuple[str, ...] | Any, field: str) -> list[str]:
    for value in values:
        if value not in allowed:
            raise Problem(400, f"unknown {field} {value!r} (one of {', '.join(sorted(allowed))})",
                          type_="invalid-parameter", field=field)
    return values


@router.get("", summary="List alarms (filters, newest first, cursor pagination)")
async def list_alarms(
    state: str | None = Query(None, max_length=100, description="State(s), comma-separated; default: the open ones "
                                                                "(raised, acknowledged, cleared)"),
    severity: str | None = Query(None, max_length=100, description="Severities, comma-separated"),
    domain: str | None = Query(None, max_length=200), commune: str | None = Query(None, max_length=500),
    kind: str | None = Query(None, max_length=500), service: str | None = Query(None, max_length=200,
                                                                                  description="Alarms this service is told about"),
    asset: str | None = Query(None, max_length=64), type: str | None = Query(None, max_length=200),
    bbox: str | None = Query(None, max_length=200, description="min_lon,min_lat,max_lon,max_lat"),
    shelved: bool | None = Query(None, description="true: only shelved ones; false: hide them; unset: both"),
    parent: int | None = Query(None, ge=1, description="The alarms folded under this one"),
    grouped: bool = Query(False, description="Also list alarms folded under a correlation or storm alarm"),
    limit: int = Query(100, ge=1, le=MAX_PAGE), cursor: int | None = Query(None, ge=1, description="next_cursor of the previous page"),
    principal: Principal = allow(REGISTRY_READERS),
    context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    clauses, params = ["true"], {}
    states = _check_in(_split(state), STATES, "state") or list(OPEN_STATES)
    clauses.append("state = ANY(%(states)s)")
    params["states"] = states
    for name, values, column in (("severity", _check_in(_split(severity), SEVERITIES, "severity"), "severity"),
                                 ("domain", _split(domain), "domain"), ("commune", _split(commune), "commune"),
                                 ("kind", _split(kind), "kind"), ("type", _split(type), "type")):
        if values:
            clauses.append(f"{column} = ANY(%({name})s)")
            params[name] = values
    if service:
        clauses.append("(service = ANY(%(service)s) OR notify && %(service)s::text[])")
        params["service"] = _split(service)
    if asset:
        clauses.append("asset_id = %(asset)s")
        params["asset"] = asset
    if not sees_restricted(principal.role):
        clauses.append("NOT restricted")
    if shelved is True:
        clauses.append("shelved_until > now()")
    elif shelved is False:
        clauses.append("(shelved_until IS NULL OR shelved_until <= now())")
    if parent is not None:
        clauses.append("parent_id = %(parent)s")
        params["parent"] = parent
    elif not grouped:
        clauses.append("(parent_id IS NULL OR parent_id IN (SELECT id FROM alarms WHERE state = 'closed'))")
    if bbox:
        min_lon, min_lat, max_lon, max_lat = _floats(bbox, 4, "bbox", "min_lon,min_lat,max_lon,max_lat in degrees")
        if min_lon >= max_lon or min_lat >= max_lat:
            raise Problem(400, "bbox must be min_lon,min_lat,max_lon,max_lat with min < max", type_="invalid-parameter",
                          field="bbox")
        xs, ys = to_lambert93([min_lon, min_lon, max_lon, max_lon], [min_lat, max_lat, min_lat, max_lat])
        clauses.append("pt <@ box(point(%(bx1)s, %(by1)s), point(%(bx2)s, %(by2)s)) AND lon BETWEEN %(min_lon)s AND "
                       "%(max_lon)s AND lat BETWEEN %(min_lat)s AND %(max_lat)s")
        params.update(bx1=float(min(xs)) - 1, by1=float(min(ys)) - 1, bx2=float(max(xs)) + 1, by2=float(max(ys)) + 1,
                      min_lon=min_lon, max_lon=max_lon, min_lat=min_lat, max_lat=max_lat)
    if cursor is not None:
        clauses.append("id < %(cursor)s")
        params["cursor"] = cursor
    async with context.pool.connection() as conn:
        rows = await (await conn.execute(f"SELECT {store.COLUMNS} FROM alarms WHERE {' AND '.join(clauses)} "
                                         "ORDER BY id DESC LIMIT %(limit)s", {**params, "limit": limit + 1})).fetchall()
    now = _now()
    alarms = [store.alarm_from_row(r) for r in rows]
    more = len(alarms) > limit
    alarms = alarms[:limit]
    return FastJSONResponse({"items": [store.to_json(a, now) for a in alarms],
                             "next_cursor": alarms[-1].id if more else None})


@router.get("/stats", summary="Open alarms by domain, severity and commune; mean time to acknowledge")
async def stats(
    since: dt.datetime | None = Query(None, description="Start of the period for the times to acknowledge "
                                                        "(default: 7 days ago)"),
    principal: Principal = allow(REGISTRY_READERS),
    context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    since = since or _now() - dt.timedelta(days=7)
    if since.tzinfo is None:
        raise Problem(400, "since needs a time zone (e.g. 2026-11-21T08:00:00+01:00)", type_="invalid-parameter",
                      field="since")
    hidden = "" if sees_restricted(principal.role) else " AND NOT restricted"
    open_ = f"state IN ('raised', 'acknowledged', 'cleared') AND parent_id IS NULL{hidden}"
    async with context.pool.connection() as conn:
        by = {}
        for column in ("domain", "severity", "commune", "state"):
            rows = await (await conn.execute(f"SELECT coalesce({column}, ''), count(*) FROM alarms WHERE {open_} "
                                             f"GROUP BY 1 ORDER BY 1")).fetchall()
            by[column] = {k: n for k, n in rows}
        unacknowledged = (await (await conn.execute(
            f"SELECT count(*) FROM alarms WHERE state = 'raised' AND parent_id IS NULL{hidden}")).fetchone())[0]
        shelved_count = (await (await conn.execute(
            f"SELECT count(*) FROM alarms WHERE shelved_until > now() AND state <> 'closed'{hidden}")).fetchone())[0]
        mtta = await (await conn.execute(
            "SELECT severity, count(*), avg(extract(epoch FROM acknowledged_at - raised_at)), "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM acknowledged_at - raised_at)) "
            f"FROM alarms WHERE acknowledged_at >= %s AND acknowledged_at >= raised_at{hidden} GROUP BY severity",
            (since,))).fetchall()
        overall = (await (await conn.execute(
            "SELECT count(*), avg(extract(epoch FROM acknowledged_at - raised_at)) FROM alarms "
            f"WHERE acknowledged_at >= %s AND acknowledged_at >= raised_at{hidden}", (since,))).fetchone())
    return FastJSONResponse({
        "open": {"total": sum(by["state"].values()), "unacknowledged": unacknowledged, "shelved": shelved_count,
                 "by_domain": by["domain"], "by_severity": by["severity"], "by_commune": by["commune"],
                 "by_state": by["state"]},
        "time_to_acknowledge": {
            "since": since.isoformat(), "acknowledged": overall[0],
            "mean_s": round(float(overall[1]), 1) if overall[1] is not None else None,
            "by_severity": {sev: {"acknowledged": n, "mean_s": round(float(mean), 1), "median_s": round(float(median), 1)}
                            for sev, n, mean, median in mtta}},
    })


@router.get("/rules", summary="The alarm rules in force, where they come from, and the last refused edit")
async def rules(principal: Principal = allow(Role.ADMIN, Role.SUPERVISOR),
                context: AppContext = Depends(get_context)) -> FastJSONResponse:
    runtime = context.extra.get("alarms")
    if runtime is None:
        raise Problem(503, "the alarm engine does not run in this process (no message bus)", type_="unavailable")
    return FastJSONResponse(runtime.rules.describe())


async def _visible(context: AppContext, principal: Principal, alarm_id: int) -> Alarm:
    async with context.pool.connection() as conn:
        alarm = await store.load_by_id(conn, alarm_id)
    if alarm is None or not _may_see(principal)(alarm):
        raise Problem(404, f"no alarm {alarm_id}", type_="not-found")
    return alarm


@router.get("/{alarm_id}", summary="One alarm, the alarms folded under it and its history (journal)")
async def get_alarm(alarm_id: int, principal: Principal = allow(REGISTRY_READERS),
                    context: AppContext = Depends(get_context)) -> FastJSONResponse:
    alarm = await _visible(context, principal, alarm_id)
    async with context.pool.connection() as conn:
        children = (await (await conn.execute("SELECT count(*) FROM alarms WHERE parent_id = %s", (alarm_id,))).fetchone())[0]
        history, _ = await list_entries(conn, JournalFilter(alarm_id=alarm_id, include_restricted=True), limit=200)
    return FastJSONResponse({**store.to_json(alarm, _now()), "children": children, "history": history})


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: str | None = Field(None, max_length=lifecycle.MAX_REASON)


class ClearRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3, max_length=lifecycle.MAX_REASON, description="Why it is cleared (required)")


class ShelveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3, max_length=lifecycle.MAX_REASON)
    until: dt.datetime | None = Field(None, description="Expiry, with a time zone")
    minutes: int | None = Field(None, ge=1, le=int(lifecycle.MAX_SHELVE.total_seconds() // 60),
                                description="Or: a duration from now")


class CommentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=2000)


async def _act(context: AppContext, principal: Principal, alarm_id: int,
               action: Callable[[Alarm], tuple[Alarm, str]], extra: dict[str, Any] | None = None) -> FastJSONResponse:
    now = _now()
    visible = _may_see(principal)
    try:
        async with context.pool.connection() as conn:
            async with conn.transaction():
                def checked(alarm: Alarm) -> tuple[Alarm, str]:
                    if not _may_act(principal, alarm):
                        raise Problem(403, f"alarm {alarm_id} belongs to services "
                                           f"{', '.join(alarm.notify) or alarm.service}, not {principal.service}",
                                      type_="forbidden")
                    return action(alarm)

                alarm = await act(conn, alarm_id, principal.username, checked,
                                  context.extra.get("notify_config"), now, extra, visible)
    except LookupError:
        raise Problem(404, f"no alarm {alarm_id}", type_="not-found") from None
    except TransitionError as exc:
        raise Problem(exc.status, exc.reason, type_="conflict" if exc.status == 409 else "invalid-input") from None
    runtime = context.extra.get("alarms")
    if runtime is not None:
        runtime.wake_notifications()
    return FastJSONResponse(store.to_json(alarm, now))


def _with_comment(extra: dict[str, Any], comment: str | None) -> dict[str, Any]:
    return {**extra, "comment": comment} if comment else extra


@router.post("/{alarm_id}/acknowledge", summary="Acknowledge an alarm (a cleared one is closed)",
             responses={404: {"description": "no such alarm"}, 409: {"description": "already acknowledged or closed"}})
async def acknowledge(alarm_id: int, body: Note | None = None, principal: Principal = allow(ALARM_HANDLERS),
                      context: AppContext = Depends(get_context)) -> FastJSONResponse:
    now = _now()
    return await _act(context, principal, alarm_id, lambda a: lifecycle.acknowledge(a, principal.username, now),
                      _with_comment({}, body.comment if body else None))


@router.post("/{alarm_id}/clear", summary="Clear an active alarm by hand, with a reason",
             responses={404: {"description": "no such alarm"}, 409: {"description": "not active"}})
async def clear(alarm_id: int, body: ClearRequest, principal: Principal = allow(ALARM_HANDLERS),
                context: AppContext = Depends(get_context)) -> FastJSONResponse:
    now = _now()
    return await _act(context, principal, alarm_id, lambda a: lifecycle.clear(a, principal.username, now, body.reason))


@router.post("/{alarm_id}/close", summary="Close a cleared alarm",
             responses={404: {"description": "no such alarm"}, 409: {"description": "still active, or closed"}})
async def close(alarm_id: int, body: Note | None = None, principal: Principal = allow(ALARM_HANDLERS),
                context: AppContext = Depends(get_context)) -> FastJSONResponse:
    now = _now()
    return await _act(context, principal, alarm_id, lambda a: lifecycle.close(a, principal.username, now),
                      _with_comment({}, body.comment if body else None))


@router.post("/{alarm_id}/shelve", summary="Shelve an alarm until an expiry (hidden, no notification or escalation)",
             responses={404: {"description": "no such alarm"}, 409: {"description": "closed"}})
async def shelve(alarm_id: int, body: ShelveRequest, principal: Principal = allow(ALARM_HANDLERS),
                 context: AppContext = Depends(get_context)) -> FastJSONResponse:
    now = _now()
    if (body.until is None) == (body.minutes is None):
        raise Problem(422, "give either until or minutes", type_="invalid-input")
    if body.until is not None and body.until.tzinfo is None:
        raise Problem(422, "until needs a time zone", type_="invalid-input", field="until")
    until = body.until or now + dt.timedelta(minutes=body.minutes or 0)
    return await _act(context, principal, alarm_id,
                      lambda a: lifecycle.shelve(a, principal.username, now, until, body.reason),
                      {"reason": body.reason})


@router.post("/{alarm_id}/unshelve", summary="Put a shelved alarm back in sight",
             responses={404: {"description": "no such alarm"}, 409: {"description": "not shelved"}})
async def unshelve(alarm_id: int, principal: Principal = allow(ALARM_HANDLERS),
                   context: AppContext = Depends(get_context)) -> FastJSONResponse:
    now = _now()
    return await _act(context, principal, alarm_id, lambda a: lifecycle.unshelve(a, principal.username, now))


@router.post("/{alarm_id}/comments", status_code=201, summary="Comment on an alarm (kept in its history)",
             responses={404: {"description": "no such alarm"}})
async def comment(alarm_id: int, body: CommentRequest, principal: Principal = allow(ALARM_HANDLERS),
                  context: AppContext = Depends(get_context)) -> FastJSONResponse:
    response = await _act(context, principal, alarm_id, lifecycle.comment, {"comment": body.text})
    response.status_code = 201
    return response
