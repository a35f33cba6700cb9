"""A work order's life: new -> assigned -> en route -> on site -> done (confirmed), or cancelled.

Pure domain (no I/O). Each action returns the changed order and the journal type that records it;
an action its state does not allow raises ``TransitionError`` with the HTTP status and a reason the
person can act on. Who may act is decided here too (``may_act``): the coordinators of the service in
charge dispatch, the team it is assigned to moves it forward, nobody else touches it. That a team
reports "done" does not close the incident: the coordinator confirms the repair (the alarm clears and
the requests close then) or reopens it.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

STATES = ("new", "assigned", "en_route", "on_site", "done", "cancelled")
OPEN_STATES = ("new", "assigned", "en_route", "on_site")
PRIORITIES = ("urgent", "high", "normal", "low")
ORIGINS = ("alarm", "request", "manual", "planned")
MAX_NOTE = 4000
# The field team's moves, in order. A team already near may go straight on site from assigned.
FIELD_MOVES = {"en_route": ("assigned",), "on_site": ("assigned", "en_route"), "done": ("on_site",)}
# SLA of orders that come from alarms (requests take their category's): hours to be on site, to be done.
ALARM_SLA_H = {"urgent": (2.0, 8.0), "high": (8.0, 24.0), "normal": (48.0, 72.0), "low": (120.0, 240.0)}
SEVERITY_PRIORITY = {"critical": "urgent", "major": "high", "minor": "normal", "warning": "low"}
RECURRENCE_UNITS = ("day", "week", "month")
DISPATCHERS = ("admin", "supervisor", "service_coordinator")
CREATORS = ("admin", "supervisor", "operator", "service_coordinator")


class TransitionError(Exception):
    def __init__(self, status: int, reason: str, code: str = "illegal-transition") -> None:
        super().__init__(reason)
        self.status, self.reason, self.code = status, reason, code


@dataclass(frozen=True)
class WorkOrder:
    id: int
    title: str
    service: str
    category: str
    priority: str
    state: str
    origin: str
    lat: float
    lon: float
    sla_response_due: dt.datetime
    sla_resolution_due: dt.datetime
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
    version: int = 1
    description: str | None = None
    alarm_id: int | None = None
    asset_id: str | None = None
    restricted: bool = False
    team_id: str | None = None
    commune: str | None = None
    address: str | None = None
    planned_for: dt.datetime | None = None
    recurrence: dict[str, Any] | None = None
    previous_id: int | None = None
    assigned_at: dt.datetime | None = None
    accepted_at: dt.datetime | None = None
    en_route_at: dt.datetime | None = None
    on_site_at: dt.datetime | None = None
    done_at: dt.datetime | None = None
    confirmed_at: dt.datetime | None = None
    confirmed_by: str | None = None
    cancelled_at: dt.datetime | None = None
    outcome_note: str | None = None

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES

    def overdue(self, now: dt.datetime) -> dict[str, bool]:
        """Which SLA deadlines are missed: on site late (or still not there), done late (or still not done)."""
        on_site = self.on_site_at or (self.done_at if self.state == "done" else None)
        return {"response": (on_site or now) > self.sla_response_due if self.state != "cancelled" else False,
                "resolution": (self.done_at or now) > self.sla_resolution_due if self.state != "cancelled" else False}


@dataclass(frozen=True)
class Actor:
    """Who acts: user name, role, service (coordinators, field agents) and team (field agents)."""
    username: str
    role: str
    service: str | None = None
    team_id: str | None = None


def may_dispatch(actor: Actor, order: WorkOrder) -> bool:
    """Assign, reassign, cancel, confirm, reopen: admins and supervisors, the coordinator of its service."""
    if actor.role in ("admin", "supervisor"):
        return True
    return actor.role == "service_coordinator" and actor.service == order.service


def may_create(actor: Actor, service: str) -> bool:
    if actor.role in ("admin", "supervisor", "operator"):
        return True
    return actor.role == "service_coordinator" and actor.service == service


def may_work(actor: Actor, order: WorkOrder) -> bool:
    """Accept, en route, on site, done, note: the team it is assigned to (and those who dispatch it)."""
    if actor.role == "field_agent":
        return actor.team_id is not None and actor.team_id == order.team_id
    return may_dispatch(actor, order)


def _check_note(note: str | None, required: bool, what: str) -> str | None:
    if note is not None:
        note = note.strip()
    if required and not note:
        raise TransitionError(422, f"{what}: a note is required", "note-required")
    if note and len(note) > MAX_NOTE:
        raise TransitionError(422, f"the note is longer than {MAX_NOTE} characters", "note-too-long")
    return note or None


def _stamp(order: WorkOrder, at: dt.datetime, **changes: Any) -> WorkOrder:
    return replace(order, updated_at=at, version=order.version + 1, **changes)


def assign(order: WorkOrder, team_id: str, team_service: str, at: dt.datetime) -> tuple[WorkOrder, str]:
    """Give the order to a team of its service (or to another team: a reassignment)."""
    if order.state not in ("new", "assigned", "en_route"):
        raise TransitionError(409, f"work order {order.id} is {order.state}: only a new, assigned or en-route order "
                                   "can be (re)assigned")
    if team_service != order.service:
        raise TransitionError(422, f"team {team_id} belongs to the {team_service} service; this order is for "
                                   f"{order.service}", "wrong-service")
    if order.team_id == team_id and order.state == "assigned":
        raise TransitionError(409, f"work order {order.id} is already assigned to {team_id}", "already-assigned")
    journal = "workorder.reassigned" if order.team_id else "workorder.assigned"
    return _stamp(order, at, state="assigned", team_id=team_id, assigned_at=at, accepted_at=None,
                  en_route_at=None), journal


def unassign(order: WorkOrder, at: dt.datetime) -> tuple[WorkOrder, str]:
    if order.state not in ("assigned", "en_route"):
        raise TransitionError(409, f"work order {order.id} is {order.state}: only an assigned or en-route order can "
                                   "be taken back")
    return _stamp(order, at, state="new", team_id=None, assigned_at=None, accepted_at=None, en_route_at=None), \
        "workorder.unassigned"


def accept(order: WorkOrder, at: dt.datetime) -> tuple[WorkOrder, str]:
    """The team saw it and takes it (its coordinator sees that the order reached someone)."""
    if order.state not in ("assigned", "en_route", "on_site"):
        raise TransitionError(409, f"work order {order.id} is {order.state}: only an assigned order can be accepted")
    if order.accepted_at is not None:
        raise TransitionError(409, f"work order {order.id} was already accepted", "already-accepted")
    return _stamp(order, at, accepted_at=at), "workorder.accepted"


def advance(order: WorkOrder, to: str, at: dt.datetime, note: str | None = None) -> tuple[WorkOrder, str]:
    """The field team's moves: en route, on site, done (done needs a note: what was done)."""
    if to not in FIELD_MOVES:
        raise TransitionError(422, f"unknown move {to!r}: en_route, on_site or done", "unknown-move")
    if order.state not in FIELD_MOVES[to]:
        allowed = " or ".join(FIELD_MOVES[to])
        raise TransitionError(409, f"work order {order.id} is {order.state}: {to.replace('_', ' ')} follows {allowed}")
    note = _check_note(note, to == "done", "reporting it done")
    changes: dict[str, Any] = {"state": to, f"{to}_at": at}
    if order.accepted_at is None:
        changes["accepted_at"] = at
    if to == "on_site" and order.en_route_at is None:
        changes["en_route_at"] = at
    if to == "done":
        changes["outcome_note"] = note
    return _stamp(order, at, **changes), f"workorder.{to}"


def confirm(order: WorkOrder, by: str, at: dt.datetime) -> tuple[WorkOrder, str]:
    """The coordinator confirms the repair: its alarm clears and its requests close (the store does that)."""
    if order.state != "done":
        raise TransitionError(409, f"work order {order.id} is {order.state}: only a done order can be confirmed")
    if order.confirmed_at is not None:
        raise TransitionError(409, f"work order {order.id} was already confirmed by {order.confirmed_by}",
                              "already-confirmed")
    return _stamp(order, at, confirmed_at=at, confirmed_by=by), "workorder.confirmed"


def reopen(order: WorkOrder, at: dt.datetime, note: str | None) -> tuple[WorkOrder, str]:
    """The repair did not hold (or was not done): back to its team."""
    if order.state != "done" or order.confirmed_at is not None:
        raise TransitionError(409, f"work order {order.id} is {order.state}"
                                   f"{' and confirmed' if order.confirmed_at else ''}: only a done, unconfirmed order "
                                   "can be reopened")
    _check_note(note, True, "reopening")
    return _stamp(order, at, state="assigned" if order.team_id else "new", done_at=None, on_site_at=None,
                  en_route_at=None, outcome_note=None), "workorder.reopened"


def cancel(order: WorkOrder, at: dt.datetime, reason: str | None) -> tuple[WorkOrder, str]:
    if not order.open:
        raise TransitionError(409, f"work order {order.id} is {order.state}: it cannot be cancelled")
    reason = _check_note(reason, True, "cancelling")
    return _stamp(order, at, state="cancelled", cancelled_at=at, outcome_note=reason), "workorder.cancelled"


def sla_deadlines(start: dt.datetime, response_h: float, resolution_h: float) -> tuple[dt.datetime, dt.datetime]:
    return start + dt.timedelta(hours=response_h), start + dt.timedelta(hours=resolution_h)


def check_recurrence(raw: Any) -> dict[str, Any] | None:
    """{"every": 3, "unit": "month"} (optionally "until": ISO date): a planned order that comes back."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"every", "unit", "until"} or not {"every", "unit"} <= set(raw):
        raise ValueError('recurrence is {"every": N, "unit": "day" | "week" | "month"} with an optional "until" date')
    every, unit = raw["every"], raw["unit"]
    if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= 365:
        raise ValueError("recurrence.every must be a whole number from 1 to 365")
    if unit not in RECURRENCE_UNITS:
        raise ValueError(f"recurrence.unit must be one of {', '.join(RECURRENCE_UNITS)}")
    out: dict[str, Any] = {"every": every, "unit": unit}
    if raw.get("until") is not None:
        try:
            out["until"] = dt.date.fromisoformat(str(raw["until"])).isoformat()
        except ValueError:
            raise ValueError("recurrence.until must be a date such as 2027-12-31") from None
    return out


def next_occurrence(planned_for: dt.datetime, recurrence: dict[str, Any], after: dt.datetime) -> dt.datetime | None:
    """The first date of the series after both this occurrence and ``after`` (done early, the next one is
    still a period later; done late, missed ones do not pile up); None once the series has ended."""
    every, unit = recurrence["every"], recurrence["unit"]
    after = max(after, planned_for)
    moment, step = planned_for, 0
    while moment <= after:
        step += 1
        if unit == "month":
            months = planned_for.month - 1 + every * step
            year, month = planned_for.year + months // 12, months % 12 + 1
            day = min(planned_for.day, calendar.monthrange(year, month)[1])
            moment = planned_for.replace(year=year, month=month, day=day)
        else:
            moment = planned_for + dt.timedelta(days=every * step * (7 if unit == "week" else 1))
        if step > 100_000:  # cannot happen with every >= 1; a guard against a clock far in the future
            return None
    until = recurrence.get("until")
    if until and moment.date() > dt.date.fromisoformat(until):
        return None
    return moment
