"""Apply the engine's decisions and the operators' actions to the alarms, in the caller's transaction:
the alarm rows, their journal entries and their notifications are written together or not at all."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Callable, Sequence

import psycopg

from citypilot.journal import store as journal
from citypilot.journal.entries import NewEntry
from citypilot.notify.config import NotifyConfig
from citypilot.notify.outbox import AlarmNotice, enqueue

from . import store
from .engine import Clear, Decision, Fold, Key
from .lifecycle import Alarm, Raise, clear, raise_alarm, summary_of

# Journal types after which the services are told, and the notification event they become.
_NOTIFIED = {"alarm.raised": "raised", "alarm.cleared": "cleared", "alarm.escalated": "escalated"}


def entry_for(alarm: Alarm, journal_type: str, actor: str, at: dt.datetime, extra: dict[str, Any] | None = None) -> NewEntry:
    """The journal entry of one transition: the alarm as it is after it, so a reader needs nothing else."""
    data = {"state": alarm.state, "occurrence": alarm.occurrence, "count": alarm.count, "title": alarm.title,
            "type": alarm.type, "source": alarm.source, "parent_id": alarm.parent_id, "rule_id": alarm.rule_id,
            "notify": list(alarm.notify), "first_seen": alarm.first_seen.isoformat(),
            "last_seen": alarm.last_seen.isoformat()}
    if alarm.shelved_until is not None:
        data["shelved_until"] = alarm.shelved_until.isoformat()
    if alarm.clear_reason and journal_type == "alarm.cleared":
        data["reason"] = alarm.clear_reason
    data.update(extra or {})
    return NewEntry(at=at, domain=alarm.domain, type=journal_type, summary=summary_of(alarm, journal_type, actor),
                    actor=actor, severity=alarm.severity, asset_id=alarm.asset_id, kind=alarm.kind,
                    commune=alarm.commune, lat=None if alarm.asset_id else alarm.lat,
                    lon=None if alarm.asset_id else alarm.lon, alarm_id=alarm.id, restricted=alarm.restricted,
                    service=alarm.service, data=data)


def notice_for(alarm: Alarm, journal_type: str, at: dt.datetime) -> AlarmNotice | None:
    event = _NOTIFIED.get(journal_type)
    if event is None or alarm.id is None or alarm.shelved(at):
        return None  # shelved: silenced until the expiry an operator gave
    if event == "raised" and alarm.parent_id is not None:
        return None  # folded under a correlation or storm alarm: the services are told about that one
    return AlarmNotice(alarm_id=alarm.id, occurrence=alarm.occurrence, event=event, severity=alarm.severity,
                       services=tuple(alarm.notify), title=alarm.title, type=alarm.type, asset_id=alarm.asset_id,
                       kind=alarm.kind, commune=alarm.commune, at=at, state=alarm.state, restricted=alarm.restricted,
                       data={"source": alarm.source, "count": alarm.count,
                             **({"reason": alarm.clear_reason} if event == "cleared" and alarm.clear_reason else {})})


async def record(conn: psycopg.AsyncConnection, transitions: Sequence[tuple[Alarm, str, str, dt.datetime, dict[str, Any]]],
                 notify_config: NotifyConfig | None, now: dt.datetime) -> None:
    """Journal and notify saved transitions: (alarm, journal type, actor, at, extra data)."""
    await journal.append(conn, [entry_for(a, jt, actor, at, extra) for a, jt, actor, at, extra in transitions])
    if notify_config is not None:
        notices = [n for a, jt, _, at, _ in transitions if (n := notice_for(a, jt, at)) is not None]
        if notices:
            await enqueue(conn, notify_config, notices, now)


async def apply_decisions(conn: psycopg.AsyncConnection, decisions: Sequence[Decision],
                          notify_config: NotifyConfig | None, now: dt.datetime) -> list[tuple[Alarm, str]]:
    """Write what the engine decided; return the transitions (alarm after, journal type)."""
    keys: set[Key] = set()
    for d in decisions:
        if isinstance(d, Raise):
            keys.add(d.key)
            if d.parent:
                keys.add(d.parent)
        elif isinstance(d, Clear):
            keys.add(d.key)
        elif isinstance(d, Fold):
            keys |= {d.child, d.parent}
    alarms = await store.load_by_keys(conn, keys)
    changed: dict[Key, Alarm] = {}
    steps: list[tuple[Key, str, dt.datetime]] = []
    links: dict[Key, Key] = {}
    for d in decisions:
        if isinstance(d, Raise):
            alarm, journal_type = raise_alarm(alarms.get(d.key), d)
            if journal_type is None:
                continue
            alarms[d.key] = changed[d.key] = alarm
            steps.append((d.key, journal_type, d.at))
            if d.parent is not None and alarm.parent_id is None:
                links[d.key] = d.parent
        elif isinstance(d, Clear):
            alarm = alarms.get(d.key)
            if alarm is None or not alarm.active:
                continue
            alarm, journal_type = clear(alarm, "system", d.at, d.reason)
            alarms[d.key] = changed[d.key] = alarm
            steps.append((d.key, journal_type, d.at))
        elif isinstance(d, Fold):
            child = alarms.get(d.child)
            if child is not None and child.active and child.parent_id is None:
                links[d.child] = d.parent
                steps.append((d.child, "alarm.grouped", now))
    saved = {a.key: a for a in await store.save(conn, list(changed.values()))}
    alarms.update(saved)
    if links:
        updates = []
        for child_key, parent_key in links.items():
            parent, child = alarms.get(parent_key), alarms.get(child_key)
            if parent is not None and child is not None and parent.id is not None and child.id is not None:
                alarms[child_key] = dataclasses.replace(child, parent_id=parent.id)
                updates.append((parent.id, child.id))
        async with conn.cursor() as cur:
            await cur.executemany("UPDATE alarms SET parent_id = %s, updated_at = now() WHERE id = %s", updates)
    transitions = []
    for key, journal_type, at in steps:
        alarm = alarms[key]
        extra = {"parent_id": alarm.parent_id} if journal_type == "alarm.grouped" else {}
        transitions.append((alarm, journal_type, "system", at, extra))
    await record(conn, transitions, notify_config, now)
    return [(alarms[key], jt) for key, jt, _ in steps]


async def act(conn: psycopg.AsyncConnection, alarm_id: int, actor: str, action: Callable[[Alarm], tuple[Alarm, str]],
              notify_config: NotifyConfig | None, now: dt.datetime, extra: dict[str, Any] | None = None,
              visible: Callable[[Alarm], bool] = lambda a: True) -> Alarm:
    """An operator's action on one alarm, in the caller's transaction. Raises LookupError when the alarm
    does not exist (or the caller may not see it), TransitionError when the action is not possible."""
    alarm = await store.load_by_id(conn, alarm_id, lock=True)
    if alarm is None or not visible(alarm):
        raise LookupError(f"no alarm {alarm_id}")
    updated, journal_type = action(alarm)
    (updated,) = await store.save(conn, [updated])
    await record(conn, [(updated, journal_type, actor, now, extra or {})], notify_config, now)
    return updated
