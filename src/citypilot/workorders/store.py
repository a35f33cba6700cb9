"""PostgreSQL adapter of work orders: rows to ``WorkOrder`` and back, with optimistic locking.

``save`` writes only if the row still has the version the change was computed from: two people
acting on one order at once cannot overwrite each other (the second gets ``VersionConflict`` and
sees the current order). Journal entries of work orders carry the order as it is after the change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Sequence

import psycopg
from psycopg.types.json import Jsonb

from citypilot.geo.projection import point_to_lambert93
from citypilot.journal import store as journal
from citypilot.journal.entries import NewEntry

from .lifecycle import WorkOrder

INTERVENTIONS = "interventions"  # the journal and live-feed domain of requests and work orders
_FIELDS = [f.name for f in dataclasses.fields(WorkOrder)]
COLUMNS = ", ".join(_FIELDS)
_UPDATABLE = [f for f in _FIELDS if f not in ("id", "created_by", "created_at", "origin", "previous_id")]


class VersionConflict(Exception):
    def __init__(self, current: WorkOrder) -> None:
        super().__init__(f"work order {current.id} changed (now version {current.version})")
        self.current = current


def from_row(row: Sequence[Any]) -> WorkOrder:
    return WorkOrder(**dict(zip(_FIELDS, row)))


def to_json(order: WorkOrder, now: dt.datetime) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(order, name)
        out[name] = value.isoformat() if isinstance(value, dt.datetime) else value
    out["open"] = order.open
    out["overdue"] = order.overdue(now)
    out["etag"] = f'"{order.version}"'
    return out


async def insert(conn: psycopg.AsyncConnection, order: WorkOrder) -> WorkOrder:
    """Insert a new order (its id is given by the database)."""
    names = [f for f in _FIELDS if f not in ("id",)]
    values = [Jsonb(getattr(order, f)) if f == "recurrence" and order.recurrence is not None else getattr(order, f)
              for f in names]
    x, y = point_to_lambert93(order.lon, order.lat)
    row = await (await conn.execute(
        f"INSERT INTO work_orders ({', '.join(names)}, pt) VALUES ({', '.join(['%s'] * len(names))}, point(%s, %s)) "
        f"RETURNING {COLUMNS}", [*values, x, y])).fetchone()
    assert row is not None
    return from_row(row)


async def load(conn: psycopg.AsyncConnection, order_id: int, lock: bool = False) -> WorkOrder | None:
    row = await (await conn.execute(f"SELECT {COLUMNS} FROM work_orders WHERE id = %s{' FOR UPDATE' if lock else ''}",
                                    (order_id,))).fetchone()
    return from_row(row) if row else None


async def save(conn: psycopg.AsyncConnection, order: WorkOrder, expected_version: int) -> WorkOrder:
    """Write ``order`` (computed from version ``expected_version``); VersionConflict if it moved since."""
    sets = ", ".join(f"{f} = %s" for f in _UPDATABLE)
    values = [Jsonb(getattr(order, f)) if f == "recurrence" and order.recurrence is not None else getattr(order, f)
              for f in _UPDATABLE]
    x, y = point_to_lambert93(order.lon, order.lat)
    row = await (await conn.execute(
        f"UPDATE work_orders SET {sets}, pt = point(%s, %s) WHERE id = %s AND version = %s RETURNING {COLUMNS}",
        [*values, x, y, order.id, expected_version])).fetchone()
    if row is None:
        current = await load(conn, order.id)
        if current is None:
            raise LookupError(f"no work order {order.id}")
        raise VersionConflict(current)
    return from_row(row)


def summary_of(order: WorkOrder, journal_type: str, actor: str) -> str:
    what = journal_type.split(".", 1)[1].replace("_", " ")
    team = f" ({order.team_id})" if order.team_id and journal_type in ("workorder.assigned", "workorder.reassigned") else ""
    by = "" if actor == "system" else f" by {actor}"
    return f"work order {order.id} [{order.priority}] {what}{team}{by}: {order.title}"


async def record(conn: psycopg.AsyncConnection, order: WorkOrder, journal_type: str, actor: str, at: dt.datetime,
                 extra: dict[str, Any] | None = None) -> None:
    """The order's journal entry: who did what, when, and the order as it is after it."""
    data = {"work_order_id": order.id, "state": order.state, "team_id": order.team_id, "priority": order.priority,
            "category": order.category, "origin": order.origin, "version": order.version,
            "sla_response_due": order.sla_response_due.isoformat(),
            "sla_resolution_due": order.sla_resolution_due.isoformat(), **(extra or {})}
    await journal.append(conn, [NewEntry(
        at=at, domain=INTERVENTIONS, type=journal_type, summary=summary_of(order, journal_type, actor), actor=actor,
        asset_id=order.asset_id, commune=order.commune if not order.asset_id else None,
        lat=None if order.asset_id else order.lat, lon=None if order.asset_id else order.lon,
        alarm_id=order.alarm_id, restricted=order.restricted, service=order.service, data=data)])
