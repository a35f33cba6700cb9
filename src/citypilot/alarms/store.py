"""PostgreSQL adapter of alarms: load rows into ``Alarm`` objects (locked for the caller's
transaction) and write them back. The lifecycle itself is in lifecycle.py."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

import psycopg
from psycopg.types.json import Jsonb

from citypilot.geo.projection import point_to_lambert93

from .lifecycle import Alarm

FIELDS = [f.name for f in dataclasses.fields(Alarm)]
COLUMNS = ", ".join(FIELDS)
_WRITABLE = [f for f in FIELDS if f != "id"]


def alarm_from_row(row: Sequence[Any]) -> Alarm:
    values = dict(zip(FIELDS, row))
    values["notify"] = tuple(values["notify"] or ())
    values["data"] = values["data"] or {}
    return Alarm(**values)


async def load_by_keys(conn: psycopg.AsyncConnection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Alarm]:
    """The alarms of these (source, type) keys, locked in a stable order (no deadlock between writers)."""
    keys = sorted(set(keys))
    if not keys:
        return {}
    rows = await (await conn.execute(
        f"SELECT {COLUMNS} FROM alarms WHERE (source, type) IN (SELECT * FROM unnest(%s::text[], %s::text[])) "
        "ORDER BY source, type FOR UPDATE", ([k[0] for k in keys], [k[1] for k in keys]))).fetchall()
    return {(a.source, a.type): a for a in map(alarm_from_row, rows)}


async def load_by_id(conn: psycopg.AsyncConnection, alarm_id: int, *, lock: bool = False) -> Alarm | None:
    row = await (await conn.execute(f"SELECT {COLUMNS} FROM alarms WHERE id = %s" + (" FOR UPDATE" if lock else ""),
                                    (alarm_id,))).fetchone()
    return alarm_from_row(row) if row else None


async def load_active(conn: psycopg.AsyncConnection) -> list[Alarm]:
    rows = await (await conn.execute(f"SELECT {COLUMNS} FROM alarms WHERE state IN ('raised', 'acknowledged')")).fetchall()
    return [alarm_from_row(r) for r in rows]


def _values(alarm: Alarm) -> list[Any]:
    out = []
    for name in _WRITABLE:
        value = getattr(alarm, name)
        if name == "notify":
            value = list(value)
        elif name == "data":
            value = Jsonb(value)
        out.append(value)
    return out


def _point(alarm: Alarm) -> Any:
    if alarm.lat is None or alarm.lon is None:
        return None
    x, y = point_to_lambert93(alarm.lon, alarm.lat)
    return f"({x},{y})"


_INSERT = (f"INSERT INTO alarms ({', '.join(_WRITABLE)}, pt) VALUES ({', '.join(['%s'] * len(_WRITABLE))}, %s::point) "
           "RETURNING id")
_UPDATE = (f"UPDATE alarms SET {', '.join(f'{c} = %s' for c in _WRITABLE)}, updated_at = now() WHERE id = %s")


async def save(conn: psycopg.AsyncConnection, alarms: Sequence[Alarm]) -> list[Alarm]:
    """Insert the new alarms (giving them ids) and update the others; return them with their ids."""
    async with conn.cursor() as cur:
        updates = [a for a in alarms if a.id is not None]
        if updates:
            await cur.executemany(_UPDATE, [[*_values(a), a.id] for a in updates])
        new = [a for a in alarms if a.id is None]
        ids: list[int] = []
        if new:  # one round trip for all of them (a power cut raises hundreds at once)
            await cur.executemany(_INSERT, [[*_values(a), _point(a)] for a in new], returning=True)
            while True:
                ids.append((await cur.fetchone())[0])
                if not cur.nextset():
                    break
    given = iter(ids)
    return [dataclasses.replace(a, id=next(given)) if a.id is None else a for a in alarms]


def to_json(alarm: Alarm, now: Any = None) -> dict[str, Any]:
    """An alarm as the API and the live feed show it."""
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = getattr(alarm, name)
        if hasattr(value, "isoformat"):
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    if now is not None:
        out["shelved"] = alarm.shelved(now)
    return out
