"""PostgreSQL adapter of field teams: who they are, their status, where their vehicle is.

A team's position is its vehicle's, read from the live twin (the vehicle reports every few seconds
over MQTT); the team's status is set by the team on its tablet, by the coordinator, and by the work
orders it moves forward (en route, on scene, available again when done).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple, Sequence

import psycopg

from citypilot.journal import store as journal
from citypilot.journal.entries import NewEntry

from .nearest import DISPATCHABLE, Candidate

TEAM_STATUSES = ("available", "en_route", "on_scene", "busy", "off_duty")
# A vehicle terminal's work_status (equipment catalogue) as a team status.
VEHICLE_STATUS = {"available": "available", "en_route": "en_route", "on_site": "on_scene", "off_duty": "off_duty"}
TEAM_FIELDS = ("id", "name", "service", "vehicle_id", "status", "status_at", "active", "created_at", "version")
COLUMNS = ", ".join(TEAM_FIELDS)
# Extra nearest teams of each vehicle type kept by ``shortlist`` beyond the ones asked for, against
# rounding differences between the database's distances and the domain's.
SHORTLIST_MARGIN = 8


def team_json(row: Sequence[Any]) -> dict[str, Any]:
    out = dict(zip(TEAM_FIELDS, row))
    for key in ("status_at", "created_at"):
        out[key] = out[key].isoformat()
    return out


async def get(conn: psycopg.AsyncConnection, team_id: str, lock: bool = False) -> dict[str, Any] | None:
    row = await (await conn.execute(f"SELECT {COLUMNS} FROM teams WHERE id = %s{' FOR UPDATE' if lock else ''}",
                                    (team_id,))).fetchone()
    return dict(zip(TEAM_FIELDS, row)) if row else None


async def team_of(conn: psycopg.AsyncConnection, username: str) -> str | None:
    row = await (await conn.execute("SELECT team_id FROM team_members WHERE username = %s", (username,))).fetchone()
    return row[0] if row else None


async def members(conn: psycopg.AsyncConnection, team_id: str) -> list[str]:
    rows = await (await conn.execute("SELECT username FROM team_members WHERE team_id = %s ORDER BY username",
                                     (team_id,))).fetchall()
    return [r[0] for r in rows]


async def set_status(conn: psycopg.AsyncConnection, team_id: str, status: str, actor: str, now: dt.datetime,
                     reason: str | None = None) -> dict[str, Any] | None:
    """Set a team's status (journaled when it changes); None when there is no such team."""
    if status not in TEAM_STATUSES:
        raise ValueError(f"unknown team status {status!r} (one of {', '.join(TEAM_STATUSES)})")
    team = await get(conn, team_id, lock=True)
    if team is None:
        return None
    if team["status"] == status:
        return team
    row = await (await conn.execute(
        f"UPDATE teams SET status = %s, status_at = %s, version = version + 1 WHERE id = %s RETURNING {COLUMNS}",
        (status, now, team_id))).fetchone()
    assert row is not None
    await journal.append(conn, [NewEntry(
        at=now, domain="interventions", type="team.status",
        summary=f"team {team_id} {team['status']} -> {status}{'' if actor == 'system' else ' by ' + actor}"
                f"{' (' + reason + ')' if reason else ''}",
        actor=actor, asset_id=team["vehicle_id"], service=team["service"],
        data={"team_id": team_id, "from": team["status"], "to": status, **({"reason": reason} if reason else {})})])
    return dict(zip(TEAM_FIELDS, row))


async def release_if_idle(conn: psycopg.AsyncConnection, team_id: str | None, actor: str, now: dt.datetime) -> None:
    """After a job ends: the team is available again, unless it is already on its way to or at another one
    (or off duty: its shift ended)."""
    if team_id is None:
        return
    busy = await (await conn.execute(
        "SELECT count(*) FROM work_orders WHERE team_id = %s AND state IN ('en_route', 'on_site')", (team_id,))).fetchone()
    team = await get(conn, team_id)
    if team is not None and busy is not None and busy[0] == 0 and team["status"] in ("en_route", "on_scene", "busy"):
        await set_status(conn, team_id, "available", actor, now)


async def candidates(conn: psycopg.AsyncConnection, service: str) -> list[Candidate]:
    """The active teams of a service with their vehicle's last position and type, and their status: the
    latest word of the team (tablet, coordinator) or of its vehicle's terminal (``work_status``)."""
    # Binary results and the status comparison done by the database: a thousand rows per recommendation,
    # and parsing their timestamps as text was most of the time it took.
    cursor = conn.cursor(binary=True)
    await cursor.execute(
        "SELECT t.id, t.name, t.service, t.status, t.vehicle_id, a.attributes->>'vehicle_type', "
        "(w.values->>'lat')::float8, (w.values->>'lon')::float8, w.ts, "
        "CASE WHEN w.ts > t.status_at THEN w.values->>'work_status' END "
        "FROM teams t LEFT JOIN LATERAL (SELECT attributes FROM assets WHERE id = t.vehicle_id LIMIT 1) a ON true "
        "LEFT JOIN LATERAL (SELECT values, ts FROM twin WHERE asset_id = t.vehicle_id LIMIT 1) w ON true "
        "WHERE t.active AND t.service = %s", (service,))  # looked up by key: see _SHORTLIST
    out = []
    for team_id, name, svc, status, vehicle, vtype, lat, lon, ts, newer_work_status in await cursor.fetchall():
        out.append(Candidate(team_id, svc, VEHICLE_STATUS.get(newer_work_status, status) if newer_work_status else status,
                             vehicle, vtype, lat, lon, ts if lat is not None else None, name))
    return out


# The vehicle terminal's work status as a team status, in SQL (constants of this module, not input).
_WORK_STATUS_SQL = "CASE w.values->>'work_status' " + " ".join(
    f"WHEN '{k}' THEN '{v}'" for k, v in VEHICLE_STATUS.items()) + " ELSE t.status END"
# Each row's values are read out of the twin once (a materialised step), then ranked; the distance's
# square root and arcsine are left out: the haversine term orders the same way. The vehicle and its
# twin are looked up by key for each team (LATERAL ... LIMIT 1): with tens of thousands of assets the
# planner otherwise hashes the whole registry and twin, three times slower for a thousand teams.
_SHORTLIST = (
    "WITH c AS MATERIALIZED (SELECT t.id, t.service, t.vehicle_id, a.vtype, "
    "  (w.values->>'lat')::float8 AS lat, (w.values->>'lon')::float8 AS lon, w.ts, t.name, "
    f"  CASE WHEN w.ts > t.status_at THEN {_WORK_STATUS_SQL} ELSE t.status END AS status "
    "  FROM teams t "
    "  LEFT JOIN LATERAL (SELECT attributes->>'vehicle_type' AS vtype FROM assets "
    "    WHERE id = t.vehicle_id LIMIT 1) a ON true "
    "  LEFT JOIN LATERAL (SELECT values, ts FROM twin WHERE asset_id = t.vehicle_id LIMIT 1) w ON true "
    "  WHERE t.active AND t.service = %(service)s), "
    "e AS MATERIALIZED (SELECT c.*, coalesce(status = ANY(%(dispatchable)s::text[]) AND lat IS NOT NULL "
    "  AND lon IS NOT NULL AND %(now)s - ts <= %(stale)s * interval '1 second', false) AS ok FROM c), "
    "r AS (SELECT e.*, count(*) OVER () AS considered, count(*) FILTER (WHERE ok) OVER () AS eligible, "
    "  row_number() OVER (PARTITION BY ok, vtype ORDER BY CASE WHEN ok THEN "
    "    sin(radians(%(lat)s - lat) / 2) ^ 2 + cos(radians(lat)) * cos(radians(%(lat)s)) "
    "      * sin(radians(%(lon)s - lon) / 2) ^ 2 END, id) AS n FROM e) "
    "SELECT id, service, status, vehicle_id, vtype, lat, lon, CASE WHEN lat IS NOT NULL THEN ts END, name, "
    "considered, eligible FROM r WHERE NOT ok OR n <= %(keep)s")


class Shortlist(NamedTuple):
    """What the database kept of a service's teams: every team that may not go (to say why), and of those
    that may, only the few that can be among the best; with the counts over all of them."""

    candidates: list[Candidate]
    considered: int
    eligible: int


async def shortlist(conn: psycopg.AsyncConnection, service: str, lat: float, lon: float, now: dt.datetime,
                    stale_after_s: float, keep: int) -> Shortlist:
    """The straight-line ranking's input, cut down by the database.

    Why: reading a thousand rows into Python costs more than everything else a recommendation does.
    Within one vehicle type the travel time only grows with the distance (one speed, one detour
    factor), so the ``keep`` nearest eligible teams of each type hold the ``keep`` quickest of all.
    The database computes the great-circle distance and keeps those (plus a margin against float
    rounding at the tie-break, which the domain does on distances rounded to 0.1 m); the pure domain
    (``nearest.eligible`` and ``nearest.rank``) still decides, on these rows, exactly as on all of them.
    Eligibility here mirrors ``nearest.eligible``; a row it wrongly calls ineligible is still returned
    (every ineligible team is), so the domain has the last word."""
    cursor = conn.cursor(binary=True)
    await cursor.execute(_SHORTLIST, {"service": service, "dispatchable": list(DISPATCHABLE), "now": now,
                                      "stale": stale_after_s, "lat": lat, "lon": lon,
                                      "keep": keep + SHORTLIST_MARGIN})
    rows = await cursor.fetchall()
    if not rows:
        return Shortlist([], 0, 0)
    return Shortlist([Candidate(*row[:9]) for row in rows], rows[0][9], rows[0][10])


def effective_status(status: str, status_at: dt.datetime, work_status: str | None, reported_at: dt.datetime | None) -> str:
    """The team's status, or its vehicle terminal's when that was reported later."""
    if work_status and reported_at is not None and reported_at > status_at:
        return VEHICLE_STATUS.get(work_status, status)
    return status
