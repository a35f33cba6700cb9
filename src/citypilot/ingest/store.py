"""PostgreSQL adapter of ingestion: apply a batch to the time series and the live twin, in one transaction.

Idempotent by construction, so that at-least-once delivery is safe:
- a reading is identified by (asset, device timestamp): a redelivered or duplicated one inserts nothing;
- the twin moves only forwards in device time: a late or repeated reading never overwrites newer values
  (it still counts as a sign of life: ``last_seen``);
- a dead letter is identified by (stream sequence, asset, reason).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from .normalise import AcceptedEvent, AcceptedReading, AssetInfo

DEAD_LETTER_PAYLOAD_LIMIT = 64 * 1024
PARTITION_LOCK = 0x43505254  # advisory lock id for partition DDL ("CPRT")


@dataclass
class StagedReading:
    reading: AcceptedReading
    received_at: dt.datetime
    stream_seq: int


@dataclass
class DeadLetter:
    source: str
    subject: str
    device_id: str | None
    asset_id: str | None
    reason_code: str
    reason: str
    payload: bytes
    stream_seq: int | None


@dataclass
class TwinChange:
    """What a committed batch changed in the twin, for the events published after commit."""

    asset_id: str
    kind: str
    ts: dt.datetime
    changed: dict[str, Any]
    back_online: bool
    new: bool


@dataclass
class BatchResult:
    readings_inserted: int = 0
    twin_changes: list[TwinChange] = field(default_factory=list)
    events_inserted: list[AcceptedEvent] = field(default_factory=list)
    dead_letters_inserted: int = 0


def day_of(ts: dt.datetime) -> dt.date:
    return ts.astimezone(dt.timezone.utc).date()


class PartitionManager:
    """Creates the readings table's daily partitions on demand (and remembers which exist)."""

    def __init__(self) -> None:
        self.known: set[dt.date] = set()

    async def ensure(self, conn: psycopg.AsyncConnection, days: Iterable[dt.date]) -> None:
        missing = sorted(set(days) - self.known)
        if not missing:
            return
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
            for day in missing:
                name = f"readings_{day:%Y%m%d}"
                start = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
                end = start + dt.timedelta(days=1)
                await conn.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF readings "
                                   f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")
        self.known.update(missing)


async def drop_partitions_before(conn: psycopg.AsyncConnection, cutoff: dt.date) -> list[str]:
    """Retention: drop the daily partitions entirely older than ``cutoff``."""
    rows = await (await conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'readings'")).fetchall()
    dropped = []
    for (name,) in rows:
        try:
            day = dt.datetime.strptime(name, "readings_%Y%m%d").date()
        except ValueError:
            continue
        if day < cutoff:
            await conn.execute(f"DROP TABLE IF EXISTS {name}")
            dropped.append(name)
    return dropped


_json = msgspec.json.Encoder()


def _copy_text(readings: Sequence[StagedReading]) -> bytes:
    """COPY text rows for the staging table, built in one pass (several times faster than a row at a
    time). Ids are asset ids and kinds are catalogue names (no tab, newline or backslash: checked at
    registration); JSON has no raw control characters, only its backslashes need doubling for COPY."""
    lines = []
    for staged in readings:
        r = staged.reading
        values = _json.encode(r.values).replace(b"\\", b"\\\\")
        lines.append(b"%s\t%s\t%s\t%s\t%s\t%d\n" % (r.asset_id.encode(), r.kind.encode(), r.ts.isoformat().encode(),
                                                      staged.received_at.isoformat().encode(), values, staged.stream_seq))
    return b"".join(lines)


_TWIN_SQL = """
WITH latest AS (
    SELECT DISTINCT ON (asset_id) asset_id, kind, ts, received_at, values, seq
    FROM staging_readings ORDER BY asset_id, ts DESC, seq DESC
), old AS (
    SELECT t.asset_id, t.ts, t.values, t.connectivity
    FROM twin t JOIN latest l USING (asset_id)
    ORDER BY t.asset_id
    FOR UPDATE OF t
), up AS (
    INSERT INTO twin AS t (asset_id, kind, ts, received_at, values, last_seen, connectivity, stream_seq)
    SELECT asset_id, kind, ts, received_at, values, received_at, 'online', seq FROM latest ORDER BY asset_id
    ON CONFLICT (asset_id) DO UPDATE SET
        values = CASE WHEN EXCLUDED.ts > t.ts THEN t.values || EXCLUDED.values ELSE t.values END,
        received_at = CASE WHEN EXCLUDED.ts > t.ts THEN EXCLUDED.received_at ELSE t.received_at END,
        ts = GREATEST(t.ts, EXCLUDED.ts),
        kind = EXCLUDED.kind,
        last_seen = GREATEST(t.last_seen, EXCLUDED.last_seen),
        connectivity = 'online',
        offline_since = NULL,
        stream_seq = GREATEST(t.stream_seq, EXCLUDED.stream_seq)
    RETURNING t.asset_id, t.kind, t.ts, t.values
)
SELECT up.asset_id, up.kind, up.ts, up.values, old.values, old.connectivity
FROM up LEFT JOIN old USING (asset_id)
"""


async def apply_batch(conn: psycopg.AsyncConnection, readings: Sequence[StagedReading], events: Sequence[tuple[AcceptedEvent, dt.datetime]],
                      dead_letters: Sequence[DeadLetter]) -> BatchResult:
    """Write one batch; the caller runs it in a transaction and acknowledges the messages after commit."""
    result = BatchResult()
    if readings:
        await conn.execute("""CREATE TEMP TABLE IF NOT EXISTS staging_readings (
            asset_id text, kind text, ts timestamptz, received_at timestamptz, values jsonb, seq bigint)
            ON COMMIT DELETE ROWS""")
        async with conn.cursor().copy("COPY staging_readings (asset_id, kind, ts, received_at, values, seq) "
                                      "FROM STDIN") as copy:
            await copy.write(_copy_text(readings))
        cur = await conn.execute("INSERT INTO readings (asset_id, ts, received_at, values) "
                                 "SELECT asset_id, ts, received_at, values FROM staging_readings "
                                 "ON CONFLICT DO NOTHING")
        result.readings_inserted = cur.rowcount
        for asset_id, kind, ts, values, old_values, old_connectivity in await (await conn.execute(_TWIN_SQL)).fetchall():
            if old_values is None:
                result.twin_changes.append(TwinChange(asset_id, kind, ts, dict(values), back_online=False, new=True))
                continue
            changed = {k: v for k, v in values.items() if old_values.get(k) != v}
            back_online = old_connectivity != "online"
            if changed or back_online:
                result.twin_changes.append(TwinChange(asset_id, kind, ts, changed, back_online, new=False))
    if events:
        async with conn.cursor() as cur:
            for event, received_at in events:
                await cur.execute(
                    "INSERT INTO device_events (asset_id, ts, code, received_at, severity, message, data) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (event.asset_id, event.ts, event.code, received_at, event.severity, event.message, Jsonb(event.data)))
                if cur.rowcount:
                    result.events_inserted.append(event)
    if dead_letters:
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO dead_letters (source, subject, device_id, asset_id, reason_code, reason, payload, "
                "payload_size, stream_seq) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [(d.source, d.subject, d.device_id, d.asset_id, d.reason_code, d.reason[:1000],
                  d.payload[:DEAD_LETTER_PAYLOAD_LIMIT], len(d.payload), d.stream_seq) for d in dead_letters])
        result.dead_letters_inserted = len(dead_letters)
    return result


class RegistryCache:
    """The registry as ingestion needs it (kind, status, reporter of every asset), kept in memory.

    Loaded whole at start, then refreshed from ``assets.updated_at``; an id not found is looked up once
    and remembered as unknown for ``negative_ttl`` seconds, so an unknown device flooding the stream
    costs no query per message.
    """

    def __init__(self, negative_ttl: float = 30.0) -> None:
        self.assets: dict[str, AssetInfo] = {}
        self.unknown: dict[str, float] = {}
        self.negative_ttl = negative_ttl
        self.loaded_until: dt.datetime | None = None

    def get(self, asset_id: str) -> AssetInfo | None:
        return self.assets.get(asset_id)

    async def refresh(self, conn: psycopg.AsyncConnection) -> int:
        """Load what changed since the last refresh (everything the first time); return how many."""
        since = self.loaded_until
        now_row = await (await conn.execute("SELECT now()")).fetchone()
        query = "SELECT id, kind, status, reported_by FROM assets"
        params: tuple[Any, ...] = ()
        if since is not None:
            query += " WHERE updated_at >= %s"
            params = (since - dt.timedelta(seconds=5),)  # overlap: commits that started before our look
        rows = await (await conn.execute(query, params)).fetchall()
        for asset_id, kind, status, reported_by in rows:
            self.assets[asset_id] = AssetInfo(asset_id, kind, status, reported_by)
            self.unknown.pop(asset_id, None)
        self.loaded_until = now_row[0]
        return len(rows)

    async def resolve(self, conn: psycopg.AsyncConnection, ids: Iterable[str], now: float) -> None:
        """Look up ids missing from the cache (unless recently found unknown)."""
        wanted = [i for i in set(ids) if i not in self.assets and self.unknown.get(i, 0) < now]
        if not wanted:
            return
        rows = await (await conn.execute("SELECT id, kind, status, reported_by FROM assets WHERE id = ANY(%s)",
                                         (wanted,))).fetchall()
        for asset_id, kind, status, reported_by in rows:
            self.assets[asset_id] = AssetInfo(asset_id, kind, status, reported_by)
        found = {r[0] for r in rows}
        for asset_id in wanted:
            if asset_id not in found:
                self.unknown[asset_id] = now + self.negative_ttl
        if len(self.unknown) > 100_000:
            self.unknown = {k: v for k, v in self.unknown.items() if v > now}


_delta_encoder = msgspec.json.Encoder()


def encode_deltas(changes: Sequence[TwinChange]) -> dict[str, bytes]:
    """The twin changes of one batch, one JSON array per kind."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for change in changes:
        by_kind.setdefault(change.kind, []).append(
            {"asset": change.asset_id, "ts": change.ts, "changed": change.changed, "back_online": change.back_online,
             "new": change.new})
    return {kind: _delta_encoder.encode(items) for kind, items in by_kind.items()}
