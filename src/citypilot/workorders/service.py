"""Work orders with their consequences, each in the caller's transaction.

Opening an order from an alarm or a request, and every action on it, changes more than the order: the
team's status follows the order (en route, on scene, available again), the requests it answers get
their public status notes (and close when the repair is confirmed), the alarm it repairs clears, and
a recurring maintenance order plans its next occurrence. All of it is written in one transaction with
the journal entries, or nothing is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg

from citypilot.alarms import lifecycle as alarm_lifecycle
from citypilot.alarms import store as alarm_store
from citypilot.alarms.apply import act as alarm_act
from citypilot.citizens import store as requests
from citypilot.citizens.services import RequestService
from citypilot.dispatch import teams
from citypilot.geo.communes import Communes

from . import lifecycle, store
from .lifecycle import Actor, TransitionError, WorkOrder

# What the citizens who reported read (Open311 status_notes) as the order moves.
PUBLIC_NOTES = {
    "workorder.created": "Received: passed to the service in charge.",
    "workorder.assigned": "A team has been assigned.",
    "workorder.reassigned": "A team has been assigned.",
    "workorder.unassigned": "Waiting for a team.",
    "workorder.en_route": "A team is on its way.",
    "workorder.on_site": "A team is on site.",
    "workorder.done": "Work done; the service is checking it.",
    "workorder.confirmed": "Resolved.",
    "workorder.reopened": "The work continues.",
    "workorder.cancelled": "The planned intervention was cancelled; the service will follow up.",
}
TEAM_FOLLOWS = {"workorder.en_route": "en_route", "workorder.on_site": "on_scene"}


@dataclass(frozen=True)
class NewOrder:
    title: str
    service: str
    category: str
    priority: str
    lat: float
    lon: float
    origin: str = "manual"
    description: str | None = None
    asset_id: str | None = None
    alarm_id: int | None = None
    address: str | None = None
    planned_for: dt.datetime | None = None
    recurrence: dict[str, Any] | None = None
    response_h: float | None = None
    resolution_h: float | None = None
    previous_id: int | None = None
    restricted: bool = False
    sla_start: dt.datetime | None = None  # when the clock started (a request: when it was reported)


async def create(conn: psycopg.AsyncConnection, new: NewOrder, actor: str, now: dt.datetime,
                 communes: Communes) -> WorkOrder:
    """Insert an order and journal it; its SLA runs from now (or from the planned date)."""
    if new.priority not in lifecycle.PRIORITIES:
        raise TransitionError(422, f"priority must be one of {', '.join(lifecycle.PRIORITIES)}", "invalid")
    default_response, default_resolution = lifecycle.ALARM_SLA_H[new.priority]
    start = new.sla_start or new.planned_for or now
    response_due, resolution_due = lifecycle.sla_deadlines(start, new.response_h or default_response,
                                                           new.resolution_h or default_resolution)
    order = WorkOrder(id=0, title=new.title, service=new.service, category=new.category, priority=new.priority,
                      state="new", origin=new.origin, lat=new.lat, lon=new.lon, sla_response_due=response_due,
                      sla_resolution_due=resolution_due, created_by=actor, created_at=now, updated_at=now,
                      description=new.description, alarm_id=new.alarm_id, asset_id=new.asset_id,
                      commune=communes.locate(new.lon, new.lat), address=new.address, planned_for=new.planned_for,
                      recurrence=new.recurrence, previous_id=new.previous_id, restricted=new.restricted)
    order = await store.insert(conn, order)
    await store.record(conn, order, "workorder.created", actor, now,
                       {"planned_for": new.planned_for.isoformat() if new.planned_for else None,
                        "recurrence": new.recurrence, "previous_id": new.previous_id})
    return order


async def from_alarm(conn: psycopg.AsyncConnection, alarm_id: int, actor: str, now: dt.datetime, communes: Communes,
                     priority: str | None = None, description: str | None = None,
                     visible: Any = lambda a: True) -> tuple[WorkOrder, bool]:
    """The open order that repairs this alarm: the existing one, or a new one (True)."""
    alarm = await alarm_store.load_by_id(conn, alarm_id, lock=True)
    if alarm is None or not visible(alarm):
        raise LookupError(f"no alarm {alarm_id}")
    row = await (await conn.execute(f"SELECT {store.COLUMNS} FROM work_orders WHERE alarm_id = %s "
                                    "AND state NOT IN ('done', 'cancelled')", (alarm_id,))).fetchone()
    if row is not None:
        return store.from_row(row), False
    if alarm.state == "closed":
        raise TransitionError(409, f"alarm {alarm_id} is closed: there is nothing left to repair")
    if alarm.lat is None or alarm.lon is None:
        raise TransitionError(422, f"alarm {alarm_id} has no location to send a team to", "no-location")
    service = alarm.service or (alarm.notify[0] if alarm.notify else None)
    if service is None:
        raise TransitionError(422, f"alarm {alarm_id} names no service in charge", "no-service")
    order = await create(conn, NewOrder(
        title=alarm.title[:200], service=service, category=alarm.type, origin="alarm",
        priority=priority or lifecycle.SEVERITY_PRIORITY.get(alarm.severity, "normal"), lat=alarm.lat, lon=alarm.lon,
        description=description, asset_id=alarm.asset_id, alarm_id=alarm.id, restricted=alarm.restricted),
        actor, now, communes)
    return order, True


async def for_new_request(conn: psycopg.AsyncConnection, request: dict[str, Any], category: RequestService, actor: str,
                          now: dt.datetime, communes: Communes) -> WorkOrder:
    """The order that answers a citizen's request about to be written (``request`` without its id yet),
    with its category's priority and SLA from when it was reported: the citizen waits from then, not
    from when the order was opened."""
    return await create(conn, NewOrder(
        title=f"{category.name}{' - ' + request['address'] if request.get('address') else ''}"[:200],
        service=category.service, category=category.code, origin="request", priority=category.priority,
        lat=request["lat"], lon=request["lon"], description=request.get("description"), asset_id=request["asset_id"],
        address=request.get("address"), response_h=category.response_h, resolution_h=category.resolution_h,
        sla_start=request["requested_at"]), actor, now, communes)


async def from_request(conn: psycopg.AsyncConnection, request: dict[str, Any], category: RequestService, actor: str,
                       now: dt.datetime, communes: Communes) -> WorkOrder:
    """The open order of an existing request: its current one, or a new one linked to it."""
    if request["work_order_id"] is not None:
        existing = await store.load(conn, request["work_order_id"])
        if existing is not None and existing.open:
            return existing
    order = await for_new_request(conn, request, category, actor, now, communes)
    await requests.set_status(conn, request, status=None, notes=PUBLIC_NOTES["workorder.created"], actor=actor, now=now,
                              work_order_id=order.id)
    return order


async def perform(conn: psycopg.AsyncConnection, order_id: int, expected_version: int | None, actor: Actor,
                  action: str, params: dict[str, Any], now: dt.datetime, communes: Communes,
                  notify_config: Any = None) -> tuple[WorkOrder, str]:
    """One action on one order, with its consequences. Raises LookupError (no such order),
    TransitionError (not allowed now, or not by this person), store.VersionConflict (it changed)."""
    order = await store.load(conn, order_id, lock=True)
    if order is None:
        raise LookupError(f"no work order {order_id}")
    if expected_version is not None and expected_version != order.version:
        raise store.VersionConflict(order)
    dispatch_actions = ("assign", "unassign", "confirm", "reopen", "cancel")
    allowed = lifecycle.may_dispatch(actor, order) if action in dispatch_actions else lifecycle.may_work(actor, order)
    if not allowed:
        who = "the coordinators of the " + order.service + " service" if action in dispatch_actions \
            else "the team it is assigned to"
        raise TransitionError(403, f"only {who} may {action.replace('_', ' ')} work order {order.id}", "forbidden")
    extra: dict[str, Any] = {}
    if action == "assign":
        team_id = params.get("team_id")
        team = await teams.get(conn, team_id) if isinstance(team_id, str) else None
        if team is None or not team["active"]:
            raise TransitionError(422, f"no active team {team_id!r}", "unknown-team")
        previous_team = order.team_id
        updated, journal_type = lifecycle.assign(order, team["id"], team["service"], now)
        extra = {"previous_team_id": previous_team} if previous_team else {}
    elif action == "unassign":
        previous_team = order.team_id
        updated, journal_type = lifecycle.unassign(order, now)
        extra = {"previous_team_id": previous_team}
    elif action == "accept":
        updated, journal_type = lifecycle.accept(order, now)
    elif action in lifecycle.FIELD_MOVES:
        updated, journal_type = lifecycle.advance(order, action, now, params.get("note"))
    elif action == "confirm":
        updated, journal_type = lifecycle.confirm(order, actor.username, now)
    elif action == "reopen":
        updated, journal_type = lifecycle.reopen(order, now, params.get("note"))
        extra = {"note": params.get("note")}
    elif action == "cancel":
        updated, journal_type = lifecycle.cancel(order, now, params.get("reason"))
    else:
        raise TransitionError(422, f"unknown action {action!r}", "unknown-action")
    if params.get("note") and action in lifecycle.FIELD_MOVES:
        extra["note"] = lifecycle._check_note(params.get("note"), False, action)
    saved = await store.save(conn, updated, order.version)
    await store.record(conn, saved, journal_type, actor.username, now, extra)
    await _consequences(conn, order, saved, journal_type, actor.username, now, communes, notify_config)
    return saved, journal_type


async def comment(conn: psycopg.AsyncConnection, order_id: int, actor: Actor, text: str, now: dt.datetime) -> WorkOrder:
    """A note on an order: journaled, and the order's version does not change (it conflicts with nothing)."""
    order = await store.load(conn, order_id)
    if order is None:
        raise LookupError(f"no work order {order_id}")
    if not lifecycle.may_work(actor, order) and actor.role not in ("operator",):
        raise TransitionError(403, f"you may not comment on work order {order.id}", "forbidden")
    note = lifecycle._check_note(text, True, "a comment")
    await store.record(conn, order, "workorder.commented", actor.username, now, {"note": note})
    return order


async def _consequences(conn: psycopg.AsyncConnection, before: WorkOrder, order: WorkOrder, journal_type: str,
                        actor: str, now: dt.datetime, communes: Communes, notify_config: Any) -> None:
    if journal_type in TEAM_FOLLOWS and order.team_id:
        await teams.set_status(conn, order.team_id, TEAM_FOLLOWS[journal_type], actor, now,
                               f"work order {order.id}")
    if journal_type in ("workorder.done", "workorder.cancelled"):
        await teams.release_if_idle(conn, before.team_id, actor, now)
    if journal_type in ("workorder.reassigned", "workorder.unassigned") and before.team_id != order.team_id:
        await teams.release_if_idle(conn, before.team_id, actor, now)
    notes = PUBLIC_NOTES.get(journal_type)
    if notes is not None:
        for request in await requests.of_work_order(conn, order.id):
            if journal_type == "workorder.confirmed":
                await requests.set_status(conn, request, status="closed", notes=notes, actor=actor, now=now)
            elif journal_type == "workorder.cancelled":
                await requests.set_status(conn, request, status=None, notes=notes, actor=actor, now=now,
                                          work_order_id=None)
            else:
                await requests.set_status(conn, request, status=None, notes=notes, actor=actor, now=now)
    if journal_type == "workorder.confirmed" and order.alarm_id is not None:
        await _clear_alarm(conn, order, actor, now, notify_config)
    if journal_type in ("workorder.confirmed", "workorder.cancelled") and order.recurrence and order.planned_for:
        await _plan_next(conn, order, actor, now, communes)


async def _clear_alarm(conn: psycopg.AsyncConnection, order: WorkOrder, actor: str, now: dt.datetime,
                       notify_config: Any) -> None:
    """The repair is confirmed: the alarm clears (or closes, when the device had already cleared it)."""
    assert order.alarm_id is not None
    alarm = await alarm_store.load_by_id(conn, order.alarm_id)
    if alarm is None or alarm.state == "closed":
        return
    reason = f"repaired: work order {order.id} confirmed by {actor}"
    if alarm.active:
        await alarm_act(conn, alarm.id, actor, lambda a: alarm_lifecycle.clear(a, actor, now, reason), notify_config,
                        now, {"work_order_id": order.id})
    else:
        await alarm_act(conn, alarm.id, actor, lambda a: alarm_lifecycle.close(a, actor, now), notify_config, now,
                        {"work_order_id": order.id})


async def _plan_next(conn: psycopg.AsyncConnection, order: WorkOrder, actor: str, now: dt.datetime,
                     communes: Communes) -> None:
    assert order.recurrence is not None and order.planned_for is not None
    moment = lifecycle.next_occurrence(order.planned_for, order.recurrence, now)
    if moment is None:
        return
    response_h = (order.sla_response_due - order.planned_for).total_seconds() / 3600
    resolution_h = (order.sla_resolution_due - order.planned_for).total_seconds() / 3600
    await create(conn, NewOrder(
        title=order.title, service=order.service, category=order.category, priority=order.priority, lat=order.lat,
        lon=order.lon, origin="planned", description=order.description, asset_id=order.asset_id,
        address=order.address, planned_for=moment, recurrence=order.recurrence, response_h=max(response_h, 0.01),
        resolution_h=max(resolution_h, 0.01), previous_id=order.id, restricted=order.restricted), "system", now, communes)
