"""Offline detection and retention, run by one citypilot process at a time.

Every kind has an expected reporting interval (the catalogue). A device silent past its interval plus a
grace is marked offline by a check that runs every ``CHECK_EVERY_S`` seconds, so within that delay of
its deadline (ThingsBoard's default: a 600 s timeout checked every 60 s). When a gateway goes offline,
what it reports for becomes *unreachable*, not offline: one failure, not hundreds. Any message brings
a device back online (ingest/store.py).

Leadership: the process holding a PostgreSQL advisory lock runs the checks; if it dies, its connection
closes, the lock is released and another process takes over at its next attempt.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from typing import Any

import psycopg
from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from citypilot.equipment.catalog import Catalog
from citypilot.runtime.leadership import pause, run_as_leader

from . import protocol
from .store import drop_partitions_before

log = logging.getLogger("citypilot.connectivity")
LEADER_LOCK = 0x4350434E  # "CPCN"
CHECK_EVERY_S = 2.0
RETENTION_EVERY_S = 3600.0
TRANSITIONS = Counter("citypilot_connectivity_transitions_total", "Devices marked offline or unreachable", ["to"])

# Silent past its deadline: an online device, or an unreachable one whose gateway is back (it reports
# for others again but not for this one: its own failure now, which stays unreachable forever otherwise).
_OFFLINE_SQL = """
WITH deadlines(kind, secs) AS (SELECT * FROM unnest(%(kinds)s::text[], %(secs)s::float8[])),
gone AS (
    UPDATE twin t SET connectivity = 'offline', offline_since = now()
    FROM deadlines d
    WHERE t.kind = d.kind AND t.connectivity = 'online' AND t.last_seen < now() - make_interval(secs => d.secs)
    RETURNING t.asset_id, t.kind, t.last_seen
),
stranded AS (
    UPDATE twin t SET connectivity = 'offline', offline_since = COALESCE(t.offline_since, now())
    FROM deadlines d
    WHERE t.kind = d.kind AND t.connectivity = 'unreachable' AND t.last_seen < now() - make_interval(secs => d.secs)
      AND NOT EXISTS (SELECT 1 FROM assets a JOIN twin g ON g.asset_id = a.reported_by
                      WHERE a.id = t.asset_id AND g.connectivity <> 'online')
    RETURNING t.asset_id, t.kind, t.last_seen
)
SELECT asset_id, kind, last_seen FROM gone UNION ALL SELECT asset_id, kind, last_seen FROM stranded ORDER BY asset_id
"""

# What an offline gateway reports for is unreachable (it may be fine; we cannot know): at the moment
# the gateway goes offline, and for an asset whose own deadline passes while its gateway is offline.
# An asset heard from afterwards (directly, or through a gateway back online) stays online.
_UNREACHABLE_SQL = """
UPDATE twin c SET connectivity = 'unreachable', offline_since = COALESCE(c.offline_since, now())
FROM assets a JOIN twin g ON g.asset_id = a.reported_by
WHERE a.id = c.asset_id AND g.connectivity <> 'online' AND c.connectivity <> 'unreachable'
  AND ((g.asset_id = ANY(%(gone)s) AND c.connectivity = 'online') OR c.asset_id = ANY(%(gone)s))
RETURNING c.asset_id, c.kind, a.reported_by
"""


def deadlines(catalog: Catalog, grace_percent: int, min_grace_s: int) -> dict[str, float]:
    """Seconds of silence after which each kind of device is offline."""
    out = {}
    for name, spec in catalog.kinds.items():
        if spec.reporting_interval_s:
            interval = spec.reporting_interval_s
            out[name] = float(interval + max(min_grace_s, interval * grace_percent / 100))
    return out


class ConnectivityWatch:
    def __init__(self, pool: AsyncConnectionPool, nc: Any, catalog: Catalog, *, grace_percent: int, min_grace_s: int,
                 retention_days: int, database_url: str) -> None:
        self.pool = pool
        self.nc = nc
        self.deadlines = deadlines(catalog, grace_percent, min_grace_s)
        self.retention_days = retention_days
        self.database_url = database_url
        self._last_retention = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Try to lead; while leading, check every CHECK_EVERY_S seconds."""
        async def lead(leader: psycopg.AsyncConnection[Any]) -> None:
            while not stop.is_set():
                await leader.execute("SELECT 1")  # still holding the lock?
                await self.check()
                await self._retention()
                await pause(stop, CHECK_EVERY_S)

        await run_as_leader(self.database_url, LEADER_LOCK, stop, lead, duty="offline detection and retention", log=log,
                            retry_s=CHECK_EVERY_S * 2)

    async def check(self) -> list[dict[str, Any]]:
        """Mark silent devices; return and publish the transitions."""
        kinds = list(self.deadlines)
        changes: list[dict[str, Any]] = []
        async with self.pool.connection() as conn:
            async with conn.transaction():
                gone = await (await conn.execute(_OFFLINE_SQL, {"kinds": kinds, "secs": [self.deadlines[k] for k in kinds]})).fetchall()
                unreachable = await (await conn.execute(_UNREACHABLE_SQL, {"gone": [g[0] for g in gone]})).fetchall()
        via = {asset_id: (kind, gateway) for asset_id, kind, gateway in unreachable}
        for asset_id, kind, last_seen in gone:
            if asset_id not in via:
                changes.append({"asset": asset_id, "kind": kind, "connectivity": "offline",
                                "last_seen": last_seen.isoformat()})
        for asset_id, (kind, gateway) in via.items():
            changes.append({"asset": asset_id, "kind": kind, "connectivity": "unreachable", "via": gateway})
        for change in changes:
            TRANSITIONS.labels(change["connectivity"]).inc()
            if self.nc is not None:
                await self.nc.publish(protocol.CONNECTIVITY_SUBJECT.format(kind=change["kind"], asset=change["asset"]),
                                      json.dumps(change).encode())
        return changes

    async def _retention(self) -> None:
        loop_time = asyncio.get_running_loop().time()
        if loop_time - self._last_retention < RETENTION_EVERY_S:
            return
        self._last_retention = loop_time
        cutoff = dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=self.retention_days)
        async with self.pool.connection() as conn:
            dropped = await drop_partitions_before(conn, cutoff)
        if dropped:
            log.info("readings retention", extra={"dropped": dropped})
