"""The daily per-light energy roll-up behind the monthly KPI by street (PostgreSQL adapter).

Integrating a month of every light's ``power_w`` readings at query time takes minutes at Dijon's scale
(34,000 lights every 5 minutes: 5.7 million readings a night), so each local day (Europe/Paris) is
integrated once into ``light_energy_daily`` (one row per light and day) and the KPI sums those rows.

The rule is the KPI's (``report.HOLD_S``): a reading holds until the light's next one, for
``HOLD_S`` at most (a longer gap is no data); only readings whose ``power_w`` is a JSON number count,
of the lights (``street_light``, not retired). Each step is clipped to the day: the last reading of
the day holds until the day's end at most, and a reading of the previous evening held past midnight
counts for its part after midnight, so that the days of a month add up to the month's integral.

``run`` is the background loop of ``citypilot serve``: it rolls the days that need it (``pending_days``),
one per transaction under an advisory lock, so that several processes never roll a day at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from .astro import PARIS
from .report import HOLD_S

log = logging.getLogger("citypilot.lighting.rollup")
LOCK_KEY = 0x43504C52  # "CPLR": held (per transaction) by the process rolling a day
MAX_DAYS_BACK = 400    # never look further back than this for days to roll, whatever the retention
SETTLE_DAYS = 2        # a day is final once rolled on or after its second day after (D + 2)

_ROLL_UP_SQL = """
WITH lights AS (
    SELECT a.id FROM assets a WHERE a.kind = 'street_light' AND a.status <> 'retired'
), steps AS (
    SELECT r.asset_id, r.ts, (r.values->>'power_w')::float8 AS w,
           lead(r.ts) OVER (PARTITION BY r.asset_id ORDER BY r.ts) AS next_ts
    FROM readings r JOIN lights l ON l.id = r.asset_id
    WHERE r.ts >= %(start)s::timestamptz - %(hold)s::interval AND r.ts < %(end)s
      AND jsonb_typeof(r.values->'power_w') = 'number'
), held AS (
    SELECT asset_id, w, greatest(ts, %(start)s) AS t0,
           least(coalesce(next_ts, %(end)s), ts + %(hold)s::interval, %(end)s) AS t1
    FROM steps
), per_light AS (
    SELECT asset_id, sum(w * extract(epoch FROM t1 - t0)::float8) / 3.6e6 AS kwh,
           sum(extract(epoch FROM t1 - t0)::float8) AS covered_s, min(t0) AS first_ts, max(t1) AS last_ts
    FROM held WHERE t1 > t0 GROUP BY asset_id
), upserted AS (
    INSERT INTO light_energy_daily AS d (day, asset_id, kwh, covered_s, first_ts, last_ts, rolled_at)
    SELECT %(day)s, asset_id, kwh, covered_s, first_ts, last_ts, now() FROM per_light
    ON CONFLICT (day, asset_id) DO UPDATE SET kwh = EXCLUDED.kwh, covered_s = EXCLUDED.covered_s,
        first_ts = EXCLUDED.first_ts, last_ts = EXCLUDED.last_ts, rolled_at = EXCLUDED.rolled_at
    RETURNING d.kwh
), stale AS (  -- a light that had a row and no longer has data (retired since, readings gone)
    DELETE FROM light_energy_daily d WHERE d.day = %(day)s
        AND NOT EXISTS (SELECT 1 FROM per_light p WHERE p.asset_id = d.asset_id)
    RETURNING 1
)
INSERT INTO light_energy_days AS m (day, lights, kwh, rolled_at)
SELECT %(day)s, count(*), coalesce(sum(kwh), 0), now() FROM upserted
ON CONFLICT (day) DO UPDATE SET lights = EXCLUDED.lights, kwh = EXCLUDED.kwh, rolled_at = EXCLUDED.rolled_at
RETURNING m.lights, m.kwh, (SELECT count(*) FROM stale)
"""

_PARTITIONS_SQL = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relname = 'readings' AND c.relname ~ '^readings_[0-9]{8}$' ORDER BY c.relname
"""

# Does any light have a reading in this partition? An index look-up per light, stopping at the first.
_LIGHTS_IN_PARTITION_SQL = """
SELECT EXISTS (SELECT 1 FROM assets a WHERE a.kind = 'street_light'
               AND EXISTS (SELECT 1 FROM {partition} r WHERE r.asset_id = a.id))
"""


@dataclass(frozen=True)
class Rolled:
    day: dt.date
    lights: int       # lights with data that day
    kwh: float
    removed: int      # rows of lights without data any more, deleted
    seconds: float    # how long it took


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The local day's start and end (23 or 25 hours apart on the days the clocks change)."""
    return (dt.datetime.combine(day, dt.time(), PARIS),
            dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), PARIS))


async def roll_up(conn: psycopg.AsyncConnection[Any], day: dt.date) -> Rolled:
    """Integrate the local ``day``'s readings of every light into ``light_energy_daily``, in one
    statement and one transaction (a savepoint inside the caller's): all of the day or nothing.
    Idempotent: rolling a day again replaces its rows (late readings count, lights without data
    any more lose their row)."""
    start, end = day_bounds(day)
    began = time.perf_counter()
    async with conn.transaction():
        row = await (await conn.execute(_ROLL_UP_SQL, {"day": day, "start": start, "end": end,
                                                       "hold": dt.timedelta(seconds=HOLD_S)})).fetchone()
    assert row is not None
    return Rolled(day, row[0], row[1], row[2], time.perf_counter() - began)


def days_to_roll(first: dt.date | None, today: dt.date, rolled: Mapping[dt.date, dt.date],
                 horizon_days: int) -> list[dt.date]:
    """The days to roll, oldest first (pure; ``pending_days`` reads its inputs).

    ``first`` is the earliest day with light readings (None: none); ``rolled`` maps each day already
    rolled to the local date it was last rolled on. Every day from ``first`` (but not before
    ``today - horizon_days``) to yesterday that was never rolled, plus each day rolled before it was
    settled, i.e. before D + 2, once D + 2 has come: yesterday is rolled just after midnight, then
    rolled once more the next day, when it is the day before yesterday, to count the readings that
    gateways buffered and delivered late. After that a day is final."""
    if first is None:
        return []
    day = max(first, today - dt.timedelta(days=horizon_days))
    out = []
    while day < today:
        settled = day + dt.timedelta(days=SETTLE_DAYS)
        last = rolled.get(day)
        if last is None or (last < settled <= today):
            out.append(day)
        day += dt.timedelta(days=1)
    return out


async def first_light_day(conn: psycopg.AsyncConnection[Any], since: dt.date) -> dt.date | None:
    """The earliest local day with a light's reading: the oldest daily partition (UTC day, from
    ``since``) holding one. Partitions are probed oldest first and the first with lights answers, so
    in practice this is one probe."""
    for (name,) in await (await conn.execute(_PARTITIONS_SQL)).fetchall():
        day = dt.datetime.strptime(name, "readings_%Y%m%d").date()
        if day < since - dt.timedelta(days=1):  # UTC day D - 1 holds the first hours of local day D
            continue
        found = await (await conn.execute(_LIGHTS_IN_PARTITION_SQL.format(partition=name))).fetchone()
        if found and found[0]:
            return max(day, since)
    return None


async def pending_days(conn: psycopg.AsyncConnection[Any], today: dt.date, *, retention_days: int = 90) -> list[dt.date]:
    """The local days to roll, oldest first: from the earliest day with light readings, looking back at
    most the readings' retention (older readings are gone) and never more than ``MAX_DAYS_BACK``
    days, to yesterday (today is not over), every day not rolled yet; and each day once more on its
    second day after (D + 2) if it was last rolled before, so that yesterday, rolled just after
    midnight, is rolled again the next day with the readings that arrived late (gateways that
    buffered). See ``days_to_roll``."""
    horizon = min(retention_days, MAX_DAYS_BACK)
    since = today - dt.timedelta(days=horizon)
    rows = await (await conn.execute(
        "SELECT day, (rolled_at AT TIME ZONE 'Europe/Paris')::date FROM light_energy_days WHERE day >= %s AND day < %s",
        (since, today))).fetchall()
    rolled = {day: on for day, on in rows}
    first = await first_light_day(conn, since)
    return days_to_roll(first, today, rolled, horizon)


async def roll_pending(pool: AsyncConnectionPool, *, retention_days: int = 90, today: dt.date | None = None,
                       stop: asyncio.Event | None = None) -> list[Rolled]:
    """Roll the pending days, oldest first, one per transaction. Each transaction first tries the
    advisory lock: if another process holds it, that one is rolling and this pass ends."""
    done: list[Rolled] = []
    seen: set[dt.date] = set()
    while stop is None or not stop.is_set():
        async with pool.connection() as conn, conn.transaction():
            locked = await (await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (LOCK_KEY,))).fetchone()
            if not (locked and locked[0]):
                break
            day_now = today or dt.datetime.now(PARIS).date()
            days = [d for d in await pending_days(conn, day_now, retention_days=retention_days) if d not in seen]
            if not days:
                break
            rolled = await roll_up(conn, days[0])
        seen.add(rolled.day)
        done.append(rolled)
        log.info("lighting energy rolled up", extra={"day": rolled.day.isoformat(), "lights": rolled.lights,
                                                     "kwh": round(rolled.kwh, 1), "removed": rolled.removed,
                                                     "duration_s": round(rolled.seconds, 2)})
    return done


async def run(pool: AsyncConnectionPool, stop: asyncio.Event, every_s: float = 600.0, *,
              retention_days: int = 90) -> None:
    """Roll the pending days now, then every ``every_s`` seconds, until ``stop``. A database error is
    logged and the pass tried again at the next tick: the loop never dies."""
    while not stop.is_set():
        try:
            await roll_pending(pool, retention_days=retention_days, stop=stop)
        except Exception as exc:  # the database away, or a statement failed: nothing written, try again
            log.warning("lighting energy roll-up failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
        try:
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        except TimeoutError:
            pass

