"""Field teams over HTTP: who they are, their vehicle, their members, their status and position.

Coordinators manage their own service's teams; a team's members set its status from the tablet (on
duty, busy, off duty); work orders move it too (en route, on scene, available again).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from citypilot.auth.accounts import Principal
from citypilot.auth.roles import REGISTRY_READERS, TEAM_MANAGERS, Role
from citypilot.dispatch import teams
from citypilot.journal import store as journal

from ..context import AppContext, get_context
from ..interventions import now
from ..problems import Problem
from ..responses import FastJSONResponse
from ..security import allow

router = APIRouter(prefix="/api/v1/teams", tags=["teams"])
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class NewTeam(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=ID_PATTERN)
    name: str = Field(min_length=1, max_length=120)
    service: str = Field(max_length=40)
    vehicle_id: str | None = Field(None, max_length=64)
    members: list[str] = Field(default_factory=list, max_length=20)


class TeamChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=120)
    vehicle_id: str | None = Field(None, max_length=64)
    active: bool | None = None
    members: list[str] | None = Field(None, max_length=20)


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str = Field(pattern="^(available|en_route|on_scene|busy|off_duty)$")
    reason: str | None = Field(None, max_length=500)


def _manages(principal: Principal, service: str) -> bool:
    return principal.role in (Role.ADMIN, Role.SUPERVISOR) or (
        principal.role == Role.SERVICE_COORDINATOR and principal.service == service)


async def _describe(conn: psycopg.AsyncConnection, where: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    rows = await (await conn.execute(
        f"SELECT t.{', t.'.join(teams.TEAM_FIELDS)}, (w.values->>'lat')::float8, (w.values->>'lon')::float8, w.ts, "
        "w.values->>'work_status', a.attributes->>'vehicle_type', "
        "(SELECT array_agg(username ORDER BY username) FROM team_members m WHERE m.team_id = t.id), "
        "(SELECT count(*) FROM work_orders o WHERE o.team_id = t.id AND o.state IN ('assigned', 'en_route', 'on_site')) "
        "FROM teams t LEFT JOIN twin w ON w.asset_id = t.vehicle_id LEFT JOIN assets a ON a.id = t.vehicle_id "
        f"WHERE {where} ORDER BY t.service, t.id", params)).fetchall()
    at = now()
    out = []
    n = len(teams.TEAM_FIELDS)
    for row in rows:
        team = teams.team_json(row[:n])
        lat, lon, ts, work_status, vehicle_type, members, open_orders = row[n:]
        team.update(
            effective_status=teams.effective_status(row[4], row[5], work_status, ts), vehicle_type=vehicle_type,
            position={"lat": lat, "lon": lon, "at": ts.isoformat(), "age_s": round((at - ts).total_seconds(), 1)}
            if lat is not None and ts is not None else None,
            members=list(members or []), open_orders=open_orders)
        out.append(team)
    return out


async def _check_members(conn: psycopg.AsyncConnection, members: list[str], service: str, team_id: str) -> None:
    for username in members:
        row = await (await conn.execute("SELECT role, service, disabled FROM users WHERE username = %s",
                                        (username,))).fetchone()
        if row is None or row[2]:
            raise Problem(422, f"no active account {username!r}", type_="invalid", field="members")
        if row[0] != Role.FIELD_AGENT or row[1] != service:
            raise Problem(422, f"{username} is not a field agent of the {service} service", type_="invalid",
                          field="members")
    await conn.execute("DELETE FROM team_members WHERE team_id = %s", (team_id,))
    for username in members:
        await conn.execute("INSERT INTO team_members (username, team_id) VALUES (%s, %s) ON CONFLICT (username) "
                           "DO UPDATE SET team_id = EXCLUDED.team_id", (username, team_id))


async def _check_vehicle(conn: psycopg.AsyncConnection, vehicle_id: str | None) -> None:
    if vehicle_id is None:
        return
    row = await (await conn.execute("SELECT kind, status FROM assets WHERE id = %s", (vehicle_id,))).fetchone()
    if row is None or row[1] == "retired":
        raise Problem(422, f"no vehicle {vehicle_id!r} in the registry", type_="invalid", field="vehicle_id")
    if row[0] != "service_vehicle":
        raise Problem(422, f"{vehicle_id} is a {row[0]}, not a service vehicle", type_="invalid", field="vehicle_id")


@router.get("", summary="The teams (of a service), with status, vehicle position and open orders")
async def list_teams(service: str | None = Query(None, max_length=40), active: bool = True,
                     principal: Principal = allow(REGISTRY_READERS),
                     context: AppContext = Depends(get_context)) -> FastJSONResponse:
    where, params = "t.active = %(active)s", {"active": active}
    if service:
        where += " AND t.service = %(service)s"
        params["service"] = service
    async with context.pool.connection() as conn:
        return FastJSONResponse({"items": await _describe(conn, where, params)})


@router.get("/me", summary="The caller's own team (field agents)")
async def my_team(principal: Principal = allow(Role.FIELD_AGENT),
                  context: AppContext = Depends(get_context)) -> FastJSONResponse:
    async with context.pool.connection() as conn:
        team_id = await teams.team_of(conn, principal.username)
        if team_id is None:
            raise Problem(404, f"{principal.username} belongs to no team: ask your coordinator", type_="not-found")
        found = await _describe(conn, "t.id = %(id)s", {"id": team_id})
    return FastJSONResponse(found[0])


@router.get("/{team_id}", summary="One team")
async def get_team(team_id: str, principal: Principal = allow(REGISTRY_READERS),
                   context: AppContext = Depends(get_context)) -> FastJSONResponse:
    async with context.pool.connection() as conn:
        found = await _describe(conn, "t.id = %(id)s", {"id": team_id})
    if not found:
        raise Problem(404, f"no team {team_id!r}", type_="not-found")
    return FastJSONResponse(found[0])


@router.post("", status_code=201, summary="Create a team")
async def create_team(body: NewTeam, principal: Principal = allow(TEAM_MANAGERS),
                      context: AppContext = Depends(get_context)) -> FastJSONResponse:
    if body.service not in context.catalog.services:
        raise Problem(422, f"unknown service {body.service!r}", type_="invalid", field="service")
    if not _manages(principal, body.service):
        raise Problem(403, f"a coordinator manages his own service's teams ({principal.service})")
    async with context.pool.connection() as conn, conn.transaction():
        if await teams.get(conn, body.id) is not None:
            raise Problem(409, f"team {body.id!r} already exists", type_="duplicate", field="id")
        await _check_vehicle(conn, body.vehicle_id)
        try:
            await conn.execute("INSERT INTO teams (id, name, service, vehicle_id) VALUES (%s, %s, %s, %s)",
                               (body.id, body.name.strip(), body.service, body.vehicle_id))
        except psycopg.errors.UniqueViolation:
            raise Problem(409, f"vehicle {body.vehicle_id} already belongs to another active team", type_="duplicate",
                          field="vehicle_id") from None
        await _check_members(conn, body.members, body.service, body.id)
        await journal.record_action(conn, principal.username, "team.created", f"team {body.id} created by "
                                    f"{principal.username}", {"team_id": body.id, "service": body.service,
                                                              "vehicle_id": body.vehicle_id, "members": body.members},
                                    domain="interventions")
        found = await _describe(conn, "t.id = %(id)s", {"id": body.id})
    return FastJSONResponse(found[0], status_code=201, headers={"Location": f"/api/v1/teams/{body.id}"})


@router.patch("/{team_id}", summary="Change a team: name, vehicle, members, active")
async def change_team(team_id: str, body: TeamChange, principal: Principal = allow(TEAM_MANAGERS),
                      context: AppContext = Depends(get_context)) -> FastJSONResponse:
    async with context.pool.connection() as conn, conn.transaction():
        team = await teams.get(conn, team_id, lock=True)
        if team is None:
            raise Problem(404, f"no team {team_id!r}", type_="not-found")
        if not _manages(principal, team["service"]):
            raise Problem(403, f"a coordinator manages his own service's teams ({principal.service})")
        changes = body.model_dump(exclude_unset=True)
        if "vehicle_id" in changes:
            await _check_vehicle(conn, body.vehicle_id)
        try:
            for column in ("name", "vehicle_id", "active"):
                if column in changes:
                    await conn.execute(f"UPDATE teams SET {column} = %s, version = version + 1 WHERE id = %s",
                                       (changes[column], team_id))
        except psycopg.errors.UniqueViolation:
            raise Problem(409, f"vehicle {body.vehicle_id} already belongs to another active team", type_="duplicate",
                          field="vehicle_id") from None
        if body.members is not None:
            await _check_members(conn, body.members, team["service"], team_id)
        await journal.record_action(conn, principal.username, "team.changed", f"team {team_id} changed by "
                                    f"{principal.username}", {"team_id": team_id, **changes}, domain="interventions")
        found = await _describe(conn, "t.id = %(id)s", {"id": team_id})
    return FastJSONResponse(found[0])


@router.post("/{team_id}/status", summary="Set a team's status (its members, or its coordinators)")
async def set_status(team_id: str, body: StatusChange,
                     principal: Principal = allow(TEAM_MANAGERS | {Role.FIELD_AGENT}),
                     context: AppContext = Depends(get_context)) -> FastJSONResponse:
    at: dt.datetime = now()
    async with context.pool.connection() as conn, conn.transaction():
        team = await teams.get(conn, team_id)
        if team is None:
            raise Problem(404, f"no team {team_id!r}", type_="not-found")
        if principal.role == Role.FIELD_AGENT:
            if await teams.team_of(conn, principal.username) != team_id:
                raise Problem(403, f"{principal.username} is not a member of team {team_id}")
        elif not _manages(principal, team["service"]):
            raise Problem(403, f"a coordinator manages his own service's teams ({principal.service})")
        await teams.set_status(conn, team_id, body.status, principal.username, at, body.reason)
        found = await _describe(conn, "t.id = %(id)s", {"id": team_id})
    return FastJSONResponse(found[0])
