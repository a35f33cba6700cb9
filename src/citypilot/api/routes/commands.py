"""Commands over HTTP: preview, ask, confirm, approve, cancel, and follow batches and assets.

A command goes to assets named by id or selected (a kind in communes, a cabinet's lights, a street type,
a bounding box). The answer is the batch with its per-asset outcomes; ``Idempotency-Key`` makes a
repeated request (a double click, a client retrying) return the first batch instead of a second one.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, Query
from pydantic import BaseModel, ConfigDict, Field

from citypilot.auth.accounts import Principal
from citypilot.auth.roles import COMMAND_READERS, COMMANDERS, sees_restricted
from citypilot.commands import store
from citypilot.commands.lifecycle import BATCH_STATES, STATES, CommandError
from citypilot.commands.service import Commands
from citypilot.db.reading import reading
from citypilot.geo import paths

from ..context import AppContext, get_context
from ..problems import Problem
from ..responses import FastJSONResponse
from ..security import allow

router = APIRouter(prefix="/api/v1/commands", tags=["commands"])


class Targets(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: str = Field(min_length=1, max_length=64)
    kind: str | None = Field(None, max_length=64, description="Needed with a selection; checked against assets")
    assets: list[str] | None = Field(None, min_length=1, max_length=store.MAX_TARGETS)
    communes: list[str] | None = Field(None, min_length=1, max_length=40)
    reported_by: str | None = Field(None, max_length=64, description="A gateway's assets (a cabinet's lights)")
    street: str | None = Field(None, min_length=2, max_length=200, description="A street's name, without number "
                                                                             "(with communes if it runs through several)")
    street_type: str | None = Field(None, max_length=40)
    bbox: tuple[float, float, float, float] | None = Field(None, description="west, south, east, north (WGS84)")
    path: list[list[float]] | None = Field(None, description="A route as [[lon, lat], ...]: the assets along it, "
                                                             "in its order (an emergency vehicle's way)")
    within_m: float | None = Field(None, gt=0, le=500, description="How near the path (default 30 m)")
    params: dict[str, Any] = Field(default_factory=dict)


class NewCommand(Targets):
    reason: str = Field(min_length=3, max_length=500, description="Why: journaled with the command")


class Cancel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=500)


def commands(context: AppContext) -> Commands:
    service = context.extra.get("commands")
    if service is None:
        raise Problem(503, "commands need the message bus, which this server is not connected to")
    return service


def problem_of(exc: CommandError) -> Problem:
    extra = {"field": exc.field} if exc.field else {}
    return Problem(exc.status, exc.detail, type_=exc.code, **extra)


def selector_of(body: Targets) -> dict[str, Any]:
    selector = {k: v for k, v in body.model_dump(include={"assets", "communes", "reported_by", "street", "street_type",
                                                          "bbox", "path", "within_m"}).items()
                if v is not None}
    if "path" in selector:
        try:
            selector["path"] = paths.check_path(selector["path"])
        except ValueError as exc:
            raise Problem(422, f"path: {exc}", field="path") from None
    elif "within_m" in selector:
        raise Problem(422, "within_m goes with a path", field="within_m")
    if "bbox" in selector:
        west, south, east, north = selector["bbox"]
        if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
            raise Problem(422, "bbox: west < east and south < north, in degrees", field="bbox")
        selector["bbox"] = list(selector["bbox"])
    if "assets" not in selector and body.kind is None:
        raise Problem(422, "a selection (communes, reported_by, street, street_type, bbox, path) needs a kind", field="kind")
    return selector


@router.post("/preview")
async def preview(body: Targets, principal: Principal = allow(COMMANDERS),
                  context: AppContext = Depends(get_context)) -> Any:
    """What the command would do, writing and sending nothing: how many assets, which are refused and
    why, whether it needs a confirmation or a second person; for a panel, the message as it will show."""
    try:
        planned = await commands(context).plan(principal, command=body.command, selector=selector_of(body),
                                               params=body.params, kind=body.kind)
    except CommandError as exc:
        raise problem_of(exc) from None
    planned.pop("rows")
    planned["refused"] = planned["refused"][:200]
    if planned["command"] == "display":
        planned["preview"] = {"message": planned["params"]["message"], "duration_s": planned["params"].get("duration_s")}
    return FastJSONResponse(planned)


@router.post("", status_code=201)
async def ask(body: NewCommand, principal: Principal = allow(COMMANDERS), context: AppContext = Depends(get_context),
              idempotency_key: str | None = Header(None, max_length=100)) -> Any:
    """Ask for a command. Answers 201 with the batch: ``status`` says whether it went out
    (``authorised``), waits for you (``pending_confirmation``) or for a second person (``pending_approval``);
    ``items`` give each asset's outcome. When every asset is refused: 409 with the reasons."""
    try:
        batch = await commands(context).request(principal, command=body.command, selector=selector_of(body),
                                                params=body.params, reason=body.reason, kind=body.kind,
                                                idempotency_key=idempotency_key)
    except CommandError as exc:
        raise problem_of(exc) from None
    if batch["status"] == "finished" and batch["counts"].get("refused") == batch["total"]:
        reasons = [i["reason"] for i in batch["items"]]
        detail = reasons[0] if batch["total"] == 1 else f"all {batch['total']} assets refused; first: {reasons[0]}"
        raise Problem(409, f"refused: {detail}", type_="command-refused", batch_id=batch["id"],
                      refused=[{"asset_id": i["asset_id"], "reason": i["reason"]} for i in batch["items"][:20]])
    return FastJSONResponse(batch, status_code=200 if batch.get("replayed") else 201,
                            headers={"Location": f"/api/v1/commands/batches/{batch['id']}"})


def _visible(principal: Principal, context: AppContext, kind: str) -> bool:
    spec = context.catalog.kinds.get(kind)
    return spec is None or not spec.restricted or sees_restricted(principal.role)


@router.get("/batches/{batch_id}")
async def batch(batch_id: str, principal: Principal = allow(COMMAND_READERS), context: AppContext = Depends(get_context),
                limit: int = Query(100, ge=1, le=5000), after: str | None = Query(None, max_length=64)) -> Any:
    """A batch with its counts by outcome and its commands (by asset id; page with ``after``)."""
    async with reading(context.pool) as conn:
        try:
            out = await commands(context).describe(conn, batch_id, items=limit, after=after)
        except CommandError as exc:
            raise problem_of(exc) from None
    if not _visible(principal, context, out["kind"]):
        raise Problem(404, f"no command batch {batch_id}", type_="not-found")
    return FastJSONResponse(out)


@router.get("/batches")
async def batches(principal: Principal = allow(COMMAND_READERS), context: AppContext = Depends(get_context),
                  status: str | None = Query(None, max_length=40), limit: int = Query(50, ge=1, le=500)) -> Any:
    """Recent batches, newest first; ``status=pending_approval`` is the approvers' queue."""
    if status is not None and status not in BATCH_STATES:
        raise Problem(422, f"status: one of {', '.join(BATCH_STATES)}", field="status")
    async with reading(context.pool) as conn:
        rows = await (await conn.execute(
            f"SELECT {store.BATCH_COLUMNS} FROM command_batches WHERE (%s::text IS NULL OR status = %s) "
            "ORDER BY requested_at DESC LIMIT %s", (status, status, limit))).fetchall()
    items = [dict(zip(store.BATCH_COLUMNS.split(", "), r)) for r in rows]
    for item in items:
        item["selector"] = {k: v for k, v in item["selector"].items() if k != "fingerprint"}
    return FastJSONResponse({"items": [i for i in items if _visible(principal, context, i["kind"])]})


@router.get("")
async def list_commands(principal: Principal = allow(COMMAND_READERS), context: AppContext = Depends(get_context),
                        asset: str | None = Query(None, max_length=64), status: str | None = Query(None, max_length=40),
                        limit: int = Query(100, ge=1, le=1000)) -> Any:
    """Commands, newest first: an asset's command history with ``asset``."""
    if status is not None and status not in STATES:
        raise Problem(422, f"status: one of {', '.join(STATES)}", field="status")
    async with reading(context.pool) as conn:
        items = await store.commands_of(conn, asset_id=asset, status=status, limit=limit)
    return FastJSONResponse({"items": [i for i in items if _visible(principal, context, i["kind"])]})


async def _step(context: AppContext, principal: Principal, batch_id: str, step: str, reason: str | None = None) -> Any:
    service = commands(context)
    try:
        if step == "confirm":
            out = await service.confirm(principal, batch_id)
        elif step == "approve":
            out = await service.approve(principal, batch_id)
        else:
            out = await service.cancel(principal, batch_id, reason)
    except CommandError as exc:
        raise problem_of(exc) from None
    return FastJSONResponse(out)


@router.post("/batches/{batch_id}/confirm")
async def confirm(batch_id: str, principal: Principal = allow(COMMANDERS), context: AppContext = Depends(get_context)) -> Any:
    """The sender confirms a sensitive command: it goes out, or waits for a second person."""
    return await _step(context, principal, batch_id, "confirm")


@router.post("/batches/{batch_id}/approve")
async def approve(batch_id: str, principal: Principal = allow(COMMANDERS), context: AppContext = Depends(get_context)) -> Any:
    """A second person (a supervisor or an administrator, not the sender) approves: it goes out."""
    return await _step(context, principal, batch_id, "approve")


@router.post("/batches/{batch_id}/cancel")
async def cancel(batch_id: str, body: Cancel | None = None, principal: Principal = allow(COMMANDERS),
                 context: AppContext = Depends(get_context)) -> Any:
    """Cancel a batch that waits for confirmation or approval."""
    return await _step(context, principal, batch_id, "cancel", body.reason if body else None)
