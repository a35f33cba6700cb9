"""Bus priority per line over a period, from the junctions' ``bus_priority`` events (PostgreSQL adapter).

A junction equipped for bus priority reports each request it receives as a device event:
``{"code": "bus_priority", "data": {"line": "L4", "granted": true, "saved_s": 46.0}}`` (see
docs/protocol.md). The share of requests served and the bus time saved are the network's figures for
the transport authority, per line. Event data is what devices sent: a ``granted`` that is not a JSON
boolean counts as not granted, a ``saved_s`` that is not a number, negative or above ``MAX_SAVED_S``
counts for nothing, and events without a line are grouped under ``line: null`` rather than dropped.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

MAX_SAVED_S = 300.0  # no bus waits longer than a signal cycle (the plans' cycles are at most 200 s)

_PER_LINE = """
SELECT line, count(*) AS requests, count(*) FILTER (WHERE granted) AS granted,
       coalesce(sum(saved) FILTER (WHERE granted), 0) AS saved_s, count(DISTINCT asset_id) AS junctions
FROM (
    SELECT asset_id,
           CASE WHEN jsonb_typeof(data->'line') = 'string' THEN data->>'line' END AS line,
           coalesce(data->'granted' = 'true'::jsonb, false) AS granted,
           CASE WHEN jsonb_typeof(data->'saved_s') = 'number'
                     AND (data->>'saved_s')::float8 BETWEEN 0 AND %(max_saved)s
                THEN (data->>'saved_s')::float8 ELSE 0 END AS saved
    FROM device_events
    WHERE code = 'bus_priority' AND ts >= %(since)s AND ts < %(until)s
) e
GROUP BY line
ORDER BY line NULLS LAST
"""


def _figures(requests: int, granted: int, saved_s: float) -> dict[str, Any]:
    return {"requests": requests, "granted": granted,
            "share_served_pct": round(100.0 * granted / requests, 1) if requests else None,
            "time_saved_s": round(saved_s, 1),
            "time_saved_per_granted_s": round(saved_s / granted, 1) if granted else None}


async def per_line(conn: psycopg.AsyncConnection, since: dt.datetime, until: dt.datetime) -> dict[str, Any]:
    """Requests, requests granted, share served and bus time saved, per line and for the network."""
    rows = await (await conn.execute(_PER_LINE, {"since": since, "until": until, "max_saved": MAX_SAVED_S})).fetchall()
    lines = [{"line": line, "junctions": junctions, **_figures(requests, granted, float(saved))}
             for line, requests, granted, saved, junctions in rows]
    total = _figures(sum(r[1] for r in rows), sum(r[2] for r in rows), float(sum(r[3] for r in rows)))
    return {"since": since.isoformat(), "until": until.isoformat(), "lines": lines, "network": total}
