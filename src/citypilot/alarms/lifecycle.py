"""The alarm lifecycle, as pure functions over an ``Alarm`` (no I/O: the store loads and saves).

    raised ──acknowledge──▶ acknowledged
      │                         │
    clear                     clear
      ▼                         ▼
    cleared ──acknowledge/close──▶ closed

- An alarm is one row per (source, type). Raised again while active, it is *deduplicated*: its count
  and last-seen time grow, and the journal still records the occurrence (``alarm.repeated``).
- Raised again once cleared or closed, it is a *new occurrence of the same alarm*: same id, occurrence
  number + 1, acknowledgement and clearing forgotten.
- Cleared by the device (its condition is gone) or by an operator (with a reason). A cleared alarm
  that was acknowledged is closed at once: nothing is left to do. A cleared alarm nobody acknowledged
  waits in ``cleared`` so that a fault that came and went is still seen; acknowledging or closing it
  closes it.
- Shelving hides an alarm from the default lists and silences its notifications and escalation until
  an expiry (at most ``MAX_SHELVE``); it does not change its state.

Every function returns the journal entry type of the transition, or raises ``TransitionError`` with
the HTTP status the API answers (409: not possible in the alarm's state).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

from .rules import SEVERITIES  # highest first; the rule files name them

SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
ACTIVE = ("raised", "acknowledged")
MAX_SHELVE = dt.timedelta(days=7)
MAX_REASON = 500


class TransitionError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Alarm:
    """One alarm, as stored (columns of the ``alarms`` table)."""

    source: str
    type: str
    rule_id: str
    domain: str
    severity: str
    title: str
    first_seen: dt.datetime
    raised_at: dt.datetime
    last_seen: dt.datetime
    state: str = "raised"
    id: int | None = None
    asset_id: str | None = None
    kind: str | None = None
    service: str | None = None
    notify: tuple[str, ...] = ()
    commune: str | None = None
    lat: float | None = None
    lon: float | None = None
    restricted: bool = False
    occurrence: int = 1
    count: int = 1
    acknowledged_at: dt.datetime | None = None
    acknowledged_by: str | None = None
    cleared_at: dt.datetime | None = None
    cleared_by: str | None = None
    clear_reason: str | None = None
    closed_at: dt.datetime | None = None
    closed_by: str | None = None
    shelved_until: dt.datetime | None = None
    shelved_by: str | None = None
    shelve_reason: str | None = None
    escalated_at: dt.datetime | None = None
    parent_id: int | None = None
    comments: int = 0
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.type)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def shelved(self, now: dt.datetime) -> bool:
        return self.shelved_until is not None and self.shelved_until > now


@dataclass(frozen=True)
class Raise:
    """A rule's verdict: this alarm condition holds (at device time ``at``)."""

    source: str
    type: str
    rule_id: str
    domain: str
    severity: str
    title: str
    at: dt.datetime
    asset_id: str | None = None
    kind: str | None = None
    service: str | None = None
    notify: tuple[str, ...] = ()
    commune: str | None = None
    lat: float | None = None
    lon: float | None = None
    restricted: bool = False
    parent: tuple[str, str] | None = None   # fold under this alarm (source, type)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.type)


def raise_alarm(existing: Alarm | None, r: Raise) -> tuple[Alarm, str | None]:
    """Apply a raise. Returns the alarm and the journal type (None: a replay that changes nothing)."""
    if existing is None:
        return Alarm(source=r.source, type=r.type, rule_id=r.rule_id, domain=r.domain, severity=r.severity,
                     title=r.title, first_seen=r.at, raised_at=r.at, last_seen=r.at, asset_id=r.asset_id, kind=r.kind,
                     service=r.service, notify=r.notify, commune=r.commune, lat=r.lat, lon=r.lon,
                     restricted=r.restricted, data=dict(r.data)), "alarm.raised"
    if r.at <= existing.last_seen and existing.active:
        return existing, None  # a redelivered verdict, or an older one: already counted
    if existing.active:
        return replace(existing, count=existing.count + 1, last_seen=max(existing.last_seen, r.at),
                       severity=r.severity, title=r.title, data={**existing.data, **r.data}), "alarm.repeated"
    if existing.cleared_at is not None and r.at <= existing.cleared_at:
        return existing, None  # the condition this verdict reports was already over
    return replace(existing, state="raised", occurrence=existing.occurrence + 1, count=existing.count + 1,
                   raised_at=r.at, last_seen=r.at, severity=r.severity, title=r.title, acknowledged_at=None,
                   acknowledged_by=None, cleared_at=None, cleared_by=None, clear_reason=None, closed_at=None,
                   closed_by=None, escalated_at=None, parent_id=None, data={**existing.data, **r.data}), "alarm.raised"


def acknowledge(alarm: Alarm, by: str, at: dt.datetime) -> tuple[Alarm, str]:
    if alarm.state == "closed":
        raise TransitionError(409, f"alarm {alarm.id} is closed")
    if alarm.state == "acknowledged":
        raise TransitionError(409, f"alarm {alarm.id} was already acknowledged by {alarm.acknowledged_by}")
    if alarm.state == "cleared":
        return replace(alarm, state="closed", acknowledged_at=at, acknowledged_by=by, closed_at=at,
                       closed_by=by), "alarm.closed"
    return replace(alarm, state="acknowledged", acknowledged_at=at, acknowledged_by=by), "alarm.acknowledged"


def clear(alarm: Alarm, by: str, at: dt.datetime, reason: str) -> tuple[Alarm, str]:
    """Clear an active alarm: by the system (its condition is gone) or an operator (with a reason)."""
    if not alarm.active:
        raise TransitionError(409, f"alarm {alarm.id} is not active (it is {alarm.state})")
    cleared = replace(alarm, cleared_at=at, cleared_by=by, clear_reason=reason[:MAX_REASON])
    if alarm.state == "acknowledged":
        return replace(cleared, state="closed", closed_at=at, closed_by=by), "alarm.cleared"
    return replace(cleared, state="cleared"), "alarm.cleared"


def close(alarm: Alarm, by: str, at: dt.datetime) -> tuple[Alarm, str]:
    if alarm.state == "closed":
        raise TransitionError(409, f"alarm {alarm.id} is already closed")
    if alarm.active:
        raise TransitionError(409, f"alarm {alarm.id} is still active: clear it first (with a reason)")
    return replace(alarm, state="closed", closed_at=at, closed_by=by,
                   acknowledged_at=alarm.acknowledged_at or at, acknowledged_by=alarm.acknowledged_by or by), "alarm.closed"


def shelve(alarm: Alarm, by: str, at: dt.datetime, until: dt.datetime, reason: str) -> tuple[Alarm, str]:
    if alarm.state == "closed":
        raise TransitionError(409, f"alarm {alarm.id} is closed")
    if until <= at:
        raise TransitionError(422, "the shelving expiry must be in the future")
    if until - at > MAX_SHELVE:
        raise TransitionError(422, f"an alarm may be shelved for {MAX_SHELVE.days} days at most")
    return replace(alarm, shelved_until=until, shelved_by=by, shelve_reason=reason[:MAX_REASON]), "alarm.shelved"


def unshelve(alarm: Alarm, by: str, at: dt.datetime) -> tuple[Alarm, str]:
    if not alarm.shelved(at):
        raise TransitionError(409, f"alarm {alarm.id} is not shelved")
    return replace(alarm, shelved_until=None, shelved_by=None, shelve_reason=None), "alarm.unshelved"


def escalate(alarm: Alarm, at: dt.datetime) -> tuple[Alarm, str]:
    return replace(alarm, escalated_at=at), "alarm.escalated"


def summary_of(alarm: Alarm, journal_type: str, actor: str) -> str:
    """The journal line of a transition, readable on its own."""
    what = journal_type.split(".", 1)[1]
    where = alarm.asset_id or alarm.source
    by = "" if actor in ("system", "device") else f" by {actor}"
    text = f"{alarm.severity} alarm {alarm.type} on {where} {what}{by}: {alarm.title}"
    if journal_type == "alarm.cleared" and alarm.clear_reason:
        text += f" ({alarm.clear_reason})"
    return text


def comment(alarm: Alarm) -> tuple[Alarm, str]:
    """A comment changes nothing but the count; its text goes in the journal entry."""
    return replace(alarm, comments=alarm.comments + 1), "alarm.commented"
