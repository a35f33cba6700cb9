"""PostgreSQL adapter of commands: targets, batches, per-asset commands, device answers, what is due.

Statements take many rows at once (arrays unnested server-side): a zone-wide dimming is 5,000 commands,
and one statement for them costs about what one row does in round trips.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import psycopg
from psycopg.types.json import Jsonb

from citypilot.geo import paths
from citypilot.registry.streets import STREET_NAME_SQL
from citypilot.safety.interlocks import AssetFacts

from .lifecycle import CommandError

MAX_TARGETS = 50_000
PATH_WITHIN_M = 30.0  # a junction on the route: its stop lines within a street's width of the drawn path


def new_id() -> str:
    """A command or batch id: 16 hex characters of randomness (unguessable: a device cannot forge the
    acknowledgement of a command it has not been sent)."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Target:
    facts: AssetFacts
    service: str
    device_id: str


_TARGETS = """
SELECT a.id, a.kind, a.status, a.service, a.reported_by, a.attributes, t.connectivity, t.values, a.lon, a.lat
FROM assets a LEFT JOIN twin t ON t.asset_id = a.id
WHERE {where}
ORDER BY a.id
LIMIT %(limit)s
"""


async def targets(conn: psycopg.AsyncConnection, selector: Mapping[str, Any]) -> list[Target]:
    """The assets a selector names: ``assets`` (ids), or ``kind`` with optional ``communes``,
    ``reported_by`` (a cabinet's lights), ``street`` (its name, without number or commune: "rue Monge"),
    ``street_type``, ``bbox`` [west, south, east, north] and
    ``path`` [[lon, lat], ...] with ``within_m`` (the junctions along an emergency vehicle's route, in
    the route's order; otherwise by id)."""
    where: list[str] = []
    params: dict[str, Any] = {"limit": MAX_TARGETS + 1}
    if selector.get("assets"):
        where.append("a.id = ANY(%(ids)s)")
        params["ids"] = list(selector["assets"])
    if selector.get("kind"):
        where.append("a.kind = %(kind)s")
        params["kind"] = selector["kind"]
    if selector.get("communes"):
        where.append("a.commune = ANY(%(communes)s)")
        params["communes"] = list(selector["communes"])
    if selector.get("reported_by"):
        where.append("a.reported_by = %(reported_by)s")
        params["reported_by"] = selector["reported_by"]
    if selector.get("street"):
        where.append(f"lower({STREET_NAME_SQL}) = lower(%(street)s)")
        params["street"] = selector["street"].strip()
    if selector.get("street_type"):
        where.append("a.attributes->>'street_type' = %(street_type)s")
        params["street_type"] = selector["street_type"]
    if selector.get("bbox"):
        west, south, east, north = selector["bbox"]
        where.append("a.lon BETWEEN %(west)s AND %(east)s AND a.lat BETWEEN %(south)s AND %(north)s")
        params.update(west=west, south=south, east=east, north=north)
    path = selector.get("path")
    if path:
        within = float(selector.get("within_m") or PATH_WITHIN_M)
        margin_lat, margin_lon = within / 111_000 + 1e-4, within / 70_000 + 1e-4  # a little more than within_m
        lons, lats = [p[0] for p in path], [p[1] for p in path]
        where.append("a.lon BETWEEN %(p_west)s AND %(p_east)s AND a.lat BETWEEN %(p_south)s AND %(p_north)s")
        params.update(p_west=min(lons) - margin_lon, p_east=max(lons) + margin_lon, p_south=min(lats) - margin_lat,
                      p_north=max(lats) + margin_lat)
    if not where:
        raise CommandError(422, "name the assets: assets, or a kind with communes, reported_by, street, street_type, "
                                "bbox or path", field="targets")
    rows = await (await conn.execute(_TARGETS.format(where=" AND ".join(where)), params)).fetchall()
    if path:  # the assets along the route, in the order the route meets them
        rows = [rows[i] for i, _ in paths.along(path, [r[-2] for r in rows], [r[-1] for r in rows], within)]
    if len(rows) > MAX_TARGETS:
        raise CommandError(422, f"more than {MAX_TARGETS} assets: narrow the selection", field="targets")
    out = []
    for asset_id, kind, status, service, reported_by, attributes, connectivity, values, _lon, _lat in rows:
        facts = AssetFacts(asset_id, kind, status, attributes or {}, connectivity, values or {})
        out.append(Target(facts, service, reported_by or asset_id))
    return out


_INSERT_COMMANDS = """
INSERT INTO commands (id, batch_id, asset_id, device_id, kind, command, params, status, reason, max_attempts, follow_up)
SELECT c.id, %(batch)s, c.asset_id, c.device_id, %(kind)s, %(command)s, %(params)s, c.status, c.reason,
       %(max_attempts)s, %(follow_up)s
FROM unnest(%(ids)s::text[], %(assets)s::text[], %(devices)s::text[], %(statuses)s::text[], %(reasons)s::text[])
     AS c(id, asset_id, device_id, status, reason)
"""


async def insert_batch(conn: psycopg.AsyncConnection, batch: Mapping[str, Any], rows: Sequence[tuple[str, str, str, str, str | None]],
                       *, max_attempts: int, follow_up: Mapping[str, Any] | None) -> None:
    """One batch and its commands: rows of (id, asset, device, status, reason)."""
    await conn.execute(
        "INSERT INTO command_batches (id, kind, command, params, reason, selector, status, requested_by, requested_role, "
        "requested_at, approval_needed, authorised_at, finished_at, expires_at, idempotency_key, parent_command, total) "
        "VALUES (%(id)s, %(kind)s, %(command)s, %(params)s, %(reason)s, %(selector)s, %(status)s, %(requested_by)s, "
        "%(requested_role)s, %(requested_at)s, %(approval_needed)s, %(authorised_at)s, %(finished_at)s, %(expires_at)s, "
        "%(idempotency_key)s, %(parent_command)s, %(total)s)",
        {**batch, "params": Jsonb(batch["params"]), "selector": Jsonb(batch["selector"])})
    await conn.execute(_INSERT_COMMANDS, {
        "batch": batch["id"], "kind": batch["kind"], "command": batch["command"], "params": Jsonb(batch["params"]),
        "max_attempts": max_attempts, "follow_up": Jsonb(follow_up) if follow_up else None,
        "ids": [r[0] for r in rows], "assets": [r[1] for r in rows], "devices": [r[2] for r in rows],
        "statuses": [r[3] for r in rows], "reasons": [r[4] for r in rows]})


BATCH_COLUMNS = ("id, kind, command, params, reason, selector, status, requested_by, requested_role, requested_at, "
                 "confirmed_by, confirmed_at, approval_needed, approved_by, approved_at, authorised_at, finished_at, "
                 "expires_at, idempotency_key, parent_command, total")


async def batch(conn: psycopg.AsyncConnection, batch_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    row = await (await conn.execute(f"SELECT {BATCH_COLUMNS} FROM command_batches WHERE id = %s"
                                    + (" FOR UPDATE" if lock else ""), (batch_id,))).fetchone()
    return dict(zip(BATCH_COLUMNS.split(", "), row)) if row else None


async def batch_by_key(conn: psycopg.AsyncConnection, username: str, key: str) -> dict[str, Any] | None:
    row = await (await conn.execute(f"SELECT {BATCH_COLUMNS} FROM command_batches WHERE requested_by = %s "
                                    "AND idempotency_key = %s", (username, key))).fetchone()
    return dict(zip(BATCH_COLUMNS.split(", "), row)) if row else None


async def counts(conn: psycopg.AsyncConnection, batch_id: str) -> dict[str, int]:
    rows = await (await conn.execute("SELECT status, count(*) FROM commands WHERE batch_id = %s GROUP BY status",
                                     (batch_id,))).fetchall()
    return {status: n for status, n in rows}


COMMAND_COLUMNS = ("id, batch_id, asset_id, device_id, kind, command, params, status, reason, attempts, max_attempts, "
                   "created_at, sent_at, answered_at, expires_at, answer")


async def commands_of(conn: psycopg.AsyncConnection, *, batch_id: str | None = None, asset_id: str | None = None,
                      status: str | None = None, limit: int = 100, after: str | None = None) -> list[dict[str, Any]]:
    """A batch's commands (by asset id), or commands newest first; outside a batch each one says who
    asked and why (``requested_by``, ``requested_reason``: its batch's), for an asset's history."""
    where, params = [], []
    if batch_id is not None:
        where.append("c.batch_id = %s")
        params.append(batch_id)
    if asset_id is not None:
        where.append("c.asset_id = %s")
        params.append(asset_id)
    if status is not None:
        where.append("c.status = %s")
        params.append(status)
    order = "c.asset_id, c.id" if batch_id is not None else "c.created_at DESC, c.id"
    if after is not None and batch_id is not None:
        where.append("c.asset_id > %s")
        params.append(after)
    columns = COMMAND_COLUMNS.split(", ")
    select = ", ".join(f"c.{name}" for name in columns)
    if batch_id is None:
        select += ", b.requested_by, b.reason"
        columns += ["requested_by", "requested_reason"]
    sql = (f"SELECT {select} FROM commands c {'' if batch_id is not None else 'JOIN command_batches b ON b.id = c.batch_id'} "
           f"WHERE {' AND '.join(where) or 'true'} ORDER BY {order} LIMIT %s")
    rows = await (await conn.execute(sql, (*params, limit))).fetchall()
    return [dict(zip(columns, r)) for r in rows]


async def mark_sent(conn: psycopg.AsyncConnection, batch_id: str, now: dt.datetime, ack_timeout_s: float,
                    expires_at: dt.datetime) -> list[tuple[str, str, str]]:
    """The batch's requested commands become sent (first attempt); returns (id, asset, device) to publish."""
    rows = await (await conn.execute(
        "UPDATE commands SET status = 'sent', attempts = 1, sent_at = %s, next_attempt_at = %s, expires_at = %s "
        "WHERE batch_id = %s AND status = 'requested' RETURNING id, asset_id, device_id",
        (now, now + dt.timedelta(seconds=ack_timeout_s), expires_at, batch_id))).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


async def refuse(conn: psycopg.AsyncConnection, refusals: Mapping[str, str]) -> None:
    """Commands refused when their batch was authorised (the asset changed while it waited)."""
    if refusals:
        await conn.execute("UPDATE commands c SET status = 'refused', reason = r.reason "
                           "FROM unnest(%s::text[], %s::text[]) AS r(id, reason) WHERE c.id = r.id AND c.status = 'requested'",
                           (list(refusals), list(refusals.values())))
