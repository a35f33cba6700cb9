"""The outbox: which channels a notice goes to, and writing it down in the alarm engine's transaction.

Writing the notification in the same transaction as the alarm transition means no alarm is committed
without its notifications and no notification exists for a transition that was rolled back. The key
(alarm, occurrence, event, channel) makes a replay of the same transition a no-op.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import psycopg
from psycopg.types.json import Jsonb

from .config import SEVERITY_RANK, ChannelSpec, NotifyConfig
from .quiet import deferred_until


@dataclass(frozen=True)
class AlarmNotice:
    """What the alarm engine hands over: one alarm transition worth telling someone about."""

    alarm_id: int
    occurrence: int
    event: str                   # raised | escalated | cleared
    severity: str
    services: tuple[str, ...]    # the services told (alarms.notify)
    title: str
    type: str
    asset_id: str | None
    kind: str | None
    commune: str | None
    at: dt.datetime              # when it happened (aware)
    state: str
    restricted: bool
    data: dict[str, Any] = field(default_factory=dict)  # extra fields copied into the payload


def routes(config: NotifyConfig, notice: AlarmNotice) -> list[ChannelSpec]:
    """The channels that receive ``notice``, in configuration order.

    A channel takes a notice of one of its ``events``, at or above its ``min_severity``, about one of its
    services (or any, with "*"). Escalations also go to the [escalation] channels whatever their
    services. A restricted (public-safety) notice only reaches channels that name one of its services,
    escalation channels (supervisors), and "*" channels that opted in with ``restricted = true``: a
    catch-all webhook must not leak police alarms by accident.
    """
    rank = SEVERITY_RANK.get(notice.severity, len(SEVERITY_RANK))
    out = []
    for spec in config.channels:
        if notice.event not in spec.events or rank > SEVERITY_RANK[spec.min_severity]:
            continue
        named = any(s in spec.services for s in notice.services)
        everything = "*" in spec.services and (spec.restricted or not notice.restricted)
        escalation = notice.event == "escalated" and spec.name in config.escalation_channels
        if named or everything or escalation:
            out.append(spec)
    return out


def notification_key(notice: AlarmNotice, channel: str) -> str:
    return f"{notice.alarm_id}:{notice.occurrence}:{notice.event}:{channel}"


def payload(notice: AlarmNotice, base_url: str | None = None) -> dict[str, Any]:
    """The JSON object a webhook receives and an e-mail is written from (documented for integrators)."""
    out: dict[str, Any] = {
        "id": notice.alarm_id,
        "occurrence": notice.occurrence,
        "event": notice.event,
        "severity": notice.severity,
        "type": notice.type,
        "title": notice.title,
        "asset": notice.asset_id,
        "kind": notice.kind,
        "commune": notice.commune,
        "at": notice.at.isoformat(),
        "state": notice.state,
        "services": list(notice.services),
        "restricted": notice.restricted,
        "data": notice.data,
    }
    if base_url:
        out["url"] = f"{base_url}/alarms/{notice.alarm_id}"
    return out


_INSERT = """
INSERT INTO notifications (key, channel, alarm_id, service, severity, event, payload, next_attempt_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (key) DO NOTHING
"""


async def enqueue(conn: psycopg.AsyncConnection[Any], config: NotifyConfig, notices: Sequence[AlarmNotice],
                  now: dt.datetime) -> int:
    """Write the notifications of ``notices`` in the caller's transaction; return the rows inserted.

    A notice for a channel in its quiet hours (and not of an exempt severity) is written due at the end
    of them, so nothing wakes anyone before then. Already-written keys are skipped.
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    rows = []
    for notice in notices:
        body = None
        for spec in routes(config, notice):
            if body is None:
                body = Jsonb(payload(notice, config.base_url), dumps=_dumps)
            due = deferred_until(spec, notice.severity, now) or now
            rows.append((notification_key(notice, spec.name), spec.name, notice.alarm_id, _service(spec, notice),
                         notice.severity, notice.event, body, due))
    if not rows:
        return 0
    async with conn.cursor() as cur:
        await cur.executemany(_INSERT, rows)
        return max(cur.rowcount, 0)


def _service(spec: ChannelSpec, notice: AlarmNotice) -> str | None:
    """The service this notification is for: the first of the notice's services the channel names."""
    for service in notice.services:
        if service in spec.services:
            return service
    return notice.services[0] if notice.services else None


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
