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
    stored_at: dt.datetime | None = None

    def __post_init__(self) -> None:
        # Reasons quote the input; PostgreSQL text cannot hold NUL (the payload, bytea, keeps it as sent).
        self.reason = self.reason.replace("\x00", "\\0")[:1000]
        self.subject = self.subject.replace("\x00", "\\0")
        if self.device_id is not None:
            self.device_id = self.device_id.replace("\x00", "")


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

# Staging rows go in by binary COPY: psycopg's C dumpers write timestamps and text, and jsonb through
# msgspec (db.use_fast_json): twice as fast as building COPY text, where formatting five timestamps a
# reading was a sixth of a worker's time.
_READING_TYPES = ["text", "text", "timestamptz", "timestamptz", "jsonb", "int8"]
_TWIN_TYPES = ["text", "text", "timestamptz", "timestamptz", "jsonb", "timestamptz", "int8"]



@dataclass
class TwinUpdate:
    """Everything one batch says about one asset's live state: its readings merged in time order."""

    asset_id: str
    kind: str
    ts: dt.datetime
    values: dict[str, Any]
    received_at: dt.datetime
    seq: int


# The device time of a twin row that has no values yet (a gateway heard only through its children):
# earlier than any reading, and unlike '-infinity', readable back into a Python datetime.
NEVER = dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def merge_readings(readings: Sequence[StagedReading]) -> list[StagedReading]:
    """One row per (asset, timestamp): two messages about the same instant (telemetry and state, a
    duplicate) merge their values, the later-delivered winning a value both carry."""
    if len({(s.reading.asset_id, s.reading.ts) for s in readings}) == len(readings):
        return list(readings)  # the common case: nothing to merge
    merged: dict[tuple[str, dt.datetime], StagedReading] = {}
    for staged in sorted(readings, key=lambda s: s.stream_seq):
        key = (staged.reading.asset_id, staged.reading.ts)
        existing = merged.get(key)
        if existing is None:
            merged[key] = StagedReading(AcceptedReading(staged.reading.asset_id, staged.reading.kind, staged.reading.ts,
                                                        dict(staged.reading.values)), staged.received_at, staged.stream_seq)
        else:
            existing.reading.values.update(staged.reading.values)
            existing.stream_seq = max(existing.stream_seq, staged.stream_seq)
    return list(merged.values())


def twin_updates(readings: Sequence[StagedReading], floor: dict[str, dt.datetime] | None = None) -> dict[str, TwinUpdate]:
    """Per asset, the batch's readings merged in device-time order (a later reading's values win).

    ``floor``: the device time the twin already holds per asset; readings older than it belong to the
    history only and are left out (a reading at that very instant merges).
    """
    floor = floor or {}
    updates: dict[str, TwinUpdate] = {}
    if len({s.reading.asset_id for s in readings}) == len(readings):
        # The common case (a gateway's lights, one reading each): nothing to merge, no order to follow.
        for staged in readings:
            r = staged.reading
            if r.asset_id not in floor or r.ts >= floor[r.asset_id]:
                updates[r.asset_id] = TwinUpdate(r.asset_id, r.kind, r.ts, dict(r.values), staged.received_at,
                                                 staged.stream_seq)
        return updates
    for staged in sorted(readings, key=lambda s: (s.reading.ts, s.stream_seq)):
        r = staged.reading
        if r.asset_id in floor and r.ts < floor[r.asset_id]:
            continue
        update = updates.get(r.asset_id)
        if update is None:
            updates[r.asset_id] = TwinUpdate(r.asset_id, r.kind, r.ts, dict(r.values), staged.received_at, staged.stream_seq)
        else:
            update.values.update(r.values)
            update.ts, update.received_at, update.seq = r.ts, staged.received_at, max(update.seq, staged.stream_seq)
    return updates


_UPSERT_TWIN = """
INSERT INTO twin AS t (asset_id, kind, ts, received_at, values, last_seen, connectivity, stream_seq)
SELECT asset_id, kind, ts, received_at, values, last_seen, 'online', seq FROM staging_twin
ON CONFLICT (asset_id) DO UPDATE SET
    values = CASE WHEN EXCLUDED.ts >= t.ts THEN t.values || EXCLUDED.values ELSE t.values END,
    received_at = CASE WHEN EXCLUDED.ts > t.ts THEN EXCLUDED.received_at ELSE t.received_at END,
    ts = GREATEST(t.ts, EXCLUDED.ts),
    kind = EXCLUDED.kind,
    last_seen = GREATEST(t.last_seen, EXCLUDED.last_seen),
    connectivity = 'online',
    offline_since = NULL,
    stream_seq = GREATEST(t.stream_seq, EXCLUDED.stream_seq)
"""


async def apply_batch(conn: psycopg.AsyncConnection, readings: Sequence[StagedReading], events: Sequence[tuple[AcceptedEvent, dt.datetime]],
                      dead_letters: Sequence[DeadLetter], seen: dict[str, tuple[str, dt.datetime]] | None = None) -> BatchResult:
    """Write one batch; the caller runs it in a transaction and acknowledges the messages after commit.

    ``seen``: devices heard from in this batch (id -> (kind, when)), such as a gateway that reported
    only for its children, or a device that sent an event: a sign of life for offline detection.
    """
    result = BatchResult()
    readings = merge_readings(readings)
    # Everything heard from is a sign of life: the devices that sent, and the assets read about.
    alive: dict[str, tuple[str, dt.datetime]] = dict(seen or {})
    for staged in readings:
        previous = alive.get(staged.reading.asset_id)
        if previous is None or previous[1] < staged.received_at:
            alive[staged.reading.asset_id] = (staged.reading.kind, staged.received_at)
    if readings:
        await conn.execute("""CREATE TEMP TABLE IF NOT EXISTS staging_readings (
            asset_id text, kind text, ts timestamptz, received_at timestamptz, values jsonb, seq bigint)
            ON COMMIT DELETE ROWS""")
        async with conn.cursor().copy("COPY staging_readings (asset_id, kind, ts, received_at, values, seq) "
                                      "FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_READING_TYPES)
            for staged in readings:
                r = staged.reading
                await copy.write_row((r.asset_id, r.kind, r.ts, staged.received_at, r.values,
                                      staged.stream_seq))
        cur = await conn.execute(
            "INSERT INTO readings AS r (asset_id, ts, received_at, values) "
            "SELECT asset_id, ts, received_at, values FROM staging_readings "
            "ON CONFLICT (asset_id, ts) DO UPDATE SET values = r.values || EXCLUDED.values "
            "WHERE r.values IS DISTINCT FROM r.values || EXCLUDED.values")
        result.readings_inserted = cur.rowcount
    if alive:
        ids = sorted(alive)
        # Lock the rows in id order (every worker does the same: no deadlock) and read what they hold:
        # the merge leaves out readings older than the stored state, and the published changes are exact.
        old = {row[0]: row[1:] for row in await (await conn.execute(
            "SELECT asset_id, ts, values, connectivity FROM twin WHERE asset_id = ANY(%s) ORDER BY asset_id FOR UPDATE",
            (ids,))).fetchall()}
        updates = twin_updates(readings, {asset_id: state[0] for asset_id, state in old.items()})
        touched = {asset_id: info for asset_id, info in alive.items() if asset_id not in updates}
        await conn.execute("""CREATE TEMP TABLE IF NOT EXISTS staging_twin (
            asset_id text, kind text, ts timestamptz, received_at timestamptz, values jsonb, last_seen timestamptz,
            seq bigint) ON COMMIT DELETE ROWS""")
        rows = []
        for asset_id in ids:
            update = updates.get(asset_id)
            if update is None:
                kind, when = touched[asset_id]
                update = TwinUpdate(asset_id, kind, NEVER, {}, when, 0)
            rows.append((asset_id, update.kind, update.ts, update.received_at, update.values,
                         update.received_at, update.seq))
            previous = old.get(asset_id)
            if previous is None:
                if update.values:
                    result.twin_changes.append(TwinChange(asset_id, update.kind, update.ts, dict(update.values),
                                                          back_online=False, new=True))
                continue
            old_ts, old_values, old_connectivity = previous
            changed = {k: v for k, v in update.values.items() if old_values.get(k) != v} if update.ts >= old_ts else {}
            back_online = old_connectivity != "online"
            if changed or back_online:
                result.twin_changes.append(TwinChange(asset_id, update.kind, max(update.ts, old_ts), changed,
                                                      back_online, new=False))
        async with conn.cursor().copy("COPY staging_twin (asset_id, kind, ts, received_at, values, last_seen, seq) "
                                      "FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_TWIN_TYPES)
            for row in rows:
                await copy.write_row(row)
        await conn.execute(_UPSERT_TWIN)
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
                "payload_size, stream_seq, stored_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [(d.source, d.subject, d.device_id, d.asset_id, d.reason_code, d.reason[:1000],
                  d.payload[:DEAD_LETTER_PAYLOAD_LIMIT], len(d.payload), d.stream_seq, d.stored_at) for d in dead_letters])
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


DELTAS_PER_MESSAGE = 2000  # about 300 KB: well under NATS's 1 MiB message limit


def encode_deltas(changes: Sequence[TwinChange]) -> list[tuple[str, bytes]]:
    """The twin changes of one batch as (kind, JSON array) messages, at most DELTAS_PER_MESSAGE each."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for change in changes:
        by_kind.setdefault(change.kind, []).append(
            {"asset": change.asset_id, "ts": change.ts, "changed": change.changed, "back_online": change.back_online,
             "new": change.new})
    return [(kind, _delta_encoder.encode(items[i:i + DELTAS_PER_MESSAGE]))
            for kind, items in by_kind.items() for i in range(0, len(items), DELTAS_PER_MESSAGE)]
