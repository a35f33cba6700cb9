"""PostgreSQL adapter of the journal: append entries, read them back.

Ids, hashes and the chain are the database's job (a trigger under the lock of ``journal_head``, see
migration 0004): ids are committed in order and no writer can skip the chain. Appending is part of the
caller's transaction, so an alarm and its journal entry are written together or not at all.
"""

from __future__ import annotations

import datetime as dt
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Sequence

import psycopg
from psycopg.types.json import Jsonb

from citypilot.geo.projection import point_to_lambert93

from .entries import NewEntry

ENTRY_COLUMNS = ("id, at, recorded_at, domain, type, severity, asset_id, kind, commune, lat, lon, alarm_id, actor, "
                 "restricted, service, summary, data")

# Commune and position come from the registry when the writer did not give them. The entries travel as
# one JSON document (one parameter, encoded by msgspec): binding seventeen arrays cost more CPU than the
# insert itself on a request's path.
_APPEND = """
INSERT INTO journal (at, domain, type, severity, asset_id, kind, commune, lat, lon, pt, alarm_id, actor, restricted,
                     service, summary, data)
SELECT e.at, e.domain, e.type, e.severity, e.asset_id, COALESCE(e.kind, a.kind), COALESCE(e.commune, a.commune),
       COALESCE(e.lat, a.lat), COALESCE(e.lon, a.lon), CASE WHEN e.x IS NULL THEN a.pt ELSE point(e.x, e.y) END,
       e.alarm_id, e.actor,
       e.restricted, COALESCE(e.service, a.service), e.summary, COALESCE(e.data, '{}'::jsonb)
FROM jsonb_to_recordset(%s::jsonb) AS e(at timestamptz, domain text, type text, severity text, asset_id text,
                                        kind text, commune text, lat float8, lon float8, x float8, y float8,
                                        alarm_id int8, actor text, restricted bool, service text, summary text,
                                        data jsonb, n int)
LEFT JOIN assets a ON a.id = e.asset_id
ORDER BY e.n
RETURNING id
"""
_NAMES = ("at", "domain", "type", "severity", "asset_id", "kind", "commune", "lat", "lon", "x", "y", "alarm_id",
          "actor", "restricted", "service", "summary", "data", "n")


# Connections inside ``deferred``: their entries wait for the end of the block.
_DEFERRED: dict[int, list[NewEntry]] = {}


@asynccontextmanager
async def deferred(conn: psycopg.AsyncConnection) -> AsyncIterator[None]:
    """Write the entries appended inside the block in one statement when it ends without an error.

    Why: appending takes the lock of the journal's head row (ids committed in order) and holds it to the
    end of the transaction. A transaction that journals early and then does more work (a citizen's request
    that opens a work order) keeps every other writer waiting meanwhile. Enter this just inside the
    transaction, so the lock is taken at the last moment and held only for the insert and the commit."""
    key = id(conn)
    if key in _DEFERRED:  # nested: the outer block writes
        yield
        return
    _DEFERRED[key] = []
    try:
        yield
    except BaseException:
        _DEFERRED.pop(key, None)  # the transaction rolls back: nothing to write
        raise
    await _write(conn, _DEFERRED.pop(key))


async def append(conn: psycopg.AsyncConnection, entries: Sequence[NewEntry]) -> list[int]:
    """Append entries in the caller's transaction; return their ids, in order (none yet when the caller
    deferred them: see ``deferred``).

    Entries that carry their own position (a storm over a commune) are projected here; the others take
    the registry's point."""
    buffer = _DEFERRED.get(id(conn))
    if buffer is not None:
        buffer.extend(entries)
        return []
    return await _write(conn, entries)


async def _write(conn: psycopg.AsyncConnection, entries: Sequence[NewEntry]) -> list[int]:
    if not entries:
        return []
    documents = []
    for n, e in enumerate(entries):
        x = y = None
        if e.lat is not None and e.lon is not None:
            x, y = point_to_lambert93(e.lon, e.lat)
        documents.append(dict(zip(_NAMES, (e.at.isoformat(), e.domain, e.type, e.severity, e.asset_id, e.kind, e.commune, e.lat,
                                           e.lon, x, y, e.alarm_id, e.actor, e.restricted, e.service,
                                           e.summary[:1000], e.data, n))))
    rows = await (await conn.execute(_APPEND, (Jsonb(documents),))).fetchall()
    return [r[0] for r in rows]


def row_to_entry(row: Sequence[Any]) -> dict[str, Any]:
    """A journal row as the API and the live feed show it."""
    out = dict(zip(ENTRY_COLUMNS.split(", "), row))
    for key in ("at", "recorded_at"):
        value = out[key]
        if isinstance(value, dt.datetime):
            out[key] = value.isoformat()
    return out


async def head(conn: psycopg.AsyncConnection) -> int:
    """The id of the latest committed entry (0 when the journal is empty)."""
    row = await (await conn.execute("SELECT last_id FROM journal_head")).fetchone()
    return int(row[0]) if row else 0


async def record_action(conn: psycopg.AsyncConnection, actor: str, type_: str, summary: str,
                        data: dict[str, Any] | None = None, domain: str = "operations") -> None:
    """An operator's action that concerns no asset (a login, an account change), in the caller's
    transaction: the journal is where the DPO audits them."""
    from .entries import NewEntry

    await append(conn, [NewEntry(at=dt.datetime.now(dt.timezone.utc), domain=domain, type=type_, actor=actor,
                                 summary=summary, data=data or {})])
