"""The field tablet's API: the team's task list, and the actions it sends, including those it queued
while the network was down.

Each queued action carries an id made by the tablet and the version of the order it was based on.
Sending it again (the tablet cannot know whether its last attempt arrived) changes nothing twice: the
outcome of an action is kept under its id. If the order changed in the meantime (a coordinator
reassigned it, another member already reported it on site), the action is not applied blindly: the
answer is a conflict with the order as it is now, and the agent decides (apply it on the new version,
or drop it). That is the explicit resolution the tablet shows.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
from fastapi import APIRouter, Depends, Query
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field

from citypilot.auth.accounts import Principal
from citypilot.auth.roles import Role
from citypilot.dispatch import nearest, teams
from citypilot.journal import store as journal
from citypilot.workorders import lifecycle, service, store
from citypilot.workorders.lifecycle import TransitionError

from ..context import AppContext, get_context
from ..interventions import actor_of, now
from ..problems import Problem
from ..responses import FastJSONResponse
from ..security import allow

router = APIRouter(prefix="/api/v1/field", tags=["field tablet"])
FIELD_ACTIONS = ("accept", "en_route", "on_site", "done", "comment")
PRIORITY_RANK = {p: i for i, p in enumerate(lifecycle.PRIORITIES)}
MAX_BATCH = 100


class QueuedAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: uuid.UUID = Field(description="Made by the tablet: the same action sent twice is applied once")
    work_order_id: int = Field(ge=1)
    action: str = Field(pattern="^(accept|en_route|on_site|done|comment)$")
    base_version: int = Field(ge=1, description="The version of the order the agent saw when acting")
    note: str | None = Field(None, max_length=lifecycle.MAX_NOTE)
    at: dt.datetime | None = Field(None, description="When the agent acted, by the tablet's clock (for the record)")


class Sync(BaseModel):
    model_config = ConfigDict(extra="forbid")
    actions: list[QueuedAction] = Field(max_length=MAX_BATCH)


def navigation_link(lat: float, lon: float) -> str:
    """A geo: URI: the tablet's own navigation app opens it (no online map service from citypilot)."""
    return f"geo:{lat:.6f},{lon:.6f}?q={lat:.6f},{lon:.6f}"


@router.get("/tasks", summary="The team's open work orders, by priority then distance")
async def tasks(lat: float | None = Query(None, ge=-90, le=90), lon: float | None = Query(None, ge=-180, le=180),
                principal: Principal = allow(Role.FIELD_AGENT),
                context: AppContext = Depends(get_context)) -> FastJSONResponse:
    async with context.pool.connection() as conn:
        team_id = await teams.team_of(conn, principal.username)
        if team_id is None:
            raise Problem(404, f"{principal.username} belongs to no team: ask your coordinator", type_="not-found")
        if lat is None or lon is None:
            row = await (await conn.execute(
                "SELECT (w.values->>'lat')::float8, (w.values->>'lon')::float8 FROM teams t "
                "JOIN twin w ON w.asset_id = t.vehicle_id WHERE t.id = %s", (team_id,))).fetchone()
            lat, lon = (row[0], row[1]) if row and row[0] is not None else (None, None)
        rows = await (await conn.execute(f"SELECT {store.COLUMNS} FROM work_orders WHERE team_id = %s "
                                         "AND state IN ('assigned', 'en_route', 'on_site')", (team_id,))).fetchall()
        descriptions = await _requests_of(conn, [r[0] for r in rows])
    at = now()
    items = []
    for order in (store.from_row(r) for r in rows):
        distance = nearest.haversine_m(lat, lon, order.lat, order.lon) if lat is not None and lon is not None else None
        items.append({**store.to_json(order, at), "distance_m": round(distance) if distance is not None else None,
                      "navigation": navigation_link(order.lat, order.lon),
                      "requests": descriptions.get(order.id, [])})
    items.sort(key=lambda t: (t["state"] != "on_site", PRIORITY_RANK[t["priority"]],
                              t["distance_m"] if t["distance_m"] is not None else float("inf"), t["id"]))
    return FastJSONResponse({"team_id": team_id, "from": {"lat": lat, "lon": lon} if lat is not None else None,
                             "items": items})


async def _requests_of(conn: psycopg.AsyncConnection, order_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """What the citizens said (without who they are): the team needs the description, not the phone number."""
    rows = await (await conn.execute(
        "SELECT work_order_id, id, service_code, description, address, reports, attributes FROM service_requests "
        "WHERE work_order_id = ANY(%s) ORDER BY id", (order_ids,))).fetchall()
    out: dict[int, list[dict[str, Any]]] = {}
    for order_id, rid, code, description, address, reports, attributes in rows:
        out.setdefault(order_id, []).append({"id": rid, "service_code": code, "description": description,
                                             "address": address, "reports": reports, "attributes": attributes})
    return out


@router.post("/sync", summary="Apply the tablet's queued actions, in order; each answered on its own")
async def sync(body: Sync, principal: Principal = allow(Role.FIELD_AGENT),
               context: AppContext = Depends(get_context)) -> FastJSONResponse:
    results = []
    notify_config = context.extra.get("notify_config")
    for action in body.actions:
        results.append(await _apply(context, principal, action, notify_config))
    return FastJSONResponse({"results": results})


async def _apply(context: AppContext, principal: Principal, queued: QueuedAction, notify_config: Any) -> dict[str, Any]:
    """One queued action: applied, already applied (its stored outcome), a conflict, or refused."""
    at = now()
    if queued.at is not None and queued.at.tzinfo is None:
        return {"id": str(queued.id), "status": "refused", "reason": "at needs a time zone"}
    async with context.pool.connection() as conn:
        done = await (await conn.execute("SELECT outcome FROM field_actions WHERE id = %s", (queued.id,))).fetchone()
        if done is not None:
            return {**done[0], "duplicate": True}
        try:
            async with conn.transaction(), journal.deferred(conn):
                actor = await actor_of(conn, principal)
                order = await store.load(conn, queued.work_order_id, lock=True)
                if order is None or order.team_id != actor.team_id:
                    outcome = {"id": str(queued.id), "status": "refused", "work_order_id": queued.work_order_id,
                               "reason": f"work order {queued.work_order_id} is not assigned to your team"
                                         + (" any more" if order is not None else "")}
                elif queued.action == "comment":
                    await service.comment(conn, order.id, actor, queued.note or "", at)
                    outcome = {"id": str(queued.id), "status": "applied", "work_order": store.to_json(order, at)}
                elif order.version != queued.base_version:
                    # Not stored: once the agent decides, the tablet sends it again on the current version.
                    return {"id": str(queued.id), "status": "conflict", "work_order": store.to_json(order, at),
                            "reason": f"the order changed since you acted on it (version {queued.base_version} -> "
                                      f"{order.version}, now {order.state}): apply your action again or drop it"}
                else:
                    saved, journal_type = await service.perform(
                        conn, order.id, queued.base_version, actor, queued.action, {"note": queued.note}, at,
                        context.communes, notify_config)
                    outcome = {"id": str(queued.id), "status": "applied", "event": journal_type,
                               "work_order": store.to_json(saved, at)}
                await conn.execute("INSERT INTO field_actions (id, username, work_order_id, outcome) "
                                   "VALUES (%s, %s, %s, %s)", (queued.id, principal.username, queued.work_order_id,
                                                               Jsonb(outcome)))
                return outcome
        except TransitionError as exc:
            outcome = {"id": str(queued.id), "status": "refused", "work_order_id": queued.work_order_id,
                       "reason": exc.reason, "code": exc.code}
        except store.VersionConflict as exc:
            return {"id": str(queued.id), "status": "conflict", "work_order": store.to_json(exc.current, at),
                    "reason": "the order changed while your action was applied: apply it again or drop it"}
        async with conn.transaction():  # a refusal is final: sending it again gives the same answer
            await conn.execute("INSERT INTO field_actions (id, username, work_order_id, outcome) VALUES (%s, %s, %s, %s) "
                               "ON CONFLICT (id) DO NOTHING", (queued.id, principal.username, queued.work_order_id,
                                                               Jsonb(outcome)))
        return outcome
