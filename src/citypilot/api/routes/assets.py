"""The equipment registry over HTTP: list, read, create, update, retire, import, export."""

from __future__ import annotations

import re
from typing import Any, AsyncIterator

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import StreamingResponse

from citypilot.auth.accounts import Principal
from citypilot.auth.roles import REGISTRY_EDITORS, REGISTRY_READERS, sees_restricted
from citypilot.registry import repository as repo
from citypilot.registry import service
from citypilot.registry.formats import FORMATS, detect_format, write_csv, write_geojson
from citypilot.registry.sheet import STATUSES

from ..context import AppContext, get_context
from ..problems import Problem
from ..responses import FastJSONResponse
from ..security import allow

router = APIRouter(prefix="/api/v1/assets", tags=["registry"])
MAX_RADIUS_M = 50_000
DEFAULT_RADIUS_M = 500.0

_ASSET_EXAMPLE = {
    "id": "SL-DIJ-000123", "kind": "street_light", "name": "Rue de la Liberté 12", "lat": 47.3220, "lon": 5.0380,
    "address": "12 rue de la Liberté, Dijon", "manufacturer": "Comatelec", "model": "Ampera Midi",
    "installed_on": "2018-10-02", "status": "in_service", "reported_by": "CAB-DIJ-0042",
    "attributes": {"lamp_power_w": 39, "street_type": "commercial"},
}


def _hidden_kinds(principal: Principal, context: AppContext) -> list[str]:
    return [] if sees_restricted(principal.role) else context.catalog.restricted_kinds()


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _floats(value: str, count: int, name: str, shape: str) -> list[float]:
    parts = value.split(",")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) != count or not all(n == n and abs(n) != float("inf") for n in numbers):
        raise Problem(400, f"{name} must be {shape}", type_="invalid-parameter", field=name)
    return numbers


def build_filter(context: AppContext, principal: Principal, kind: str | None, commune: str | None,
                 status: str | None, service_: str | None, bbox: str | None, near: str | None,
                 radius_m: float, q: str | None, reported_by: str | None) -> repo.AssetFilter:
    flt = repo.AssetFilter(kinds=_split(kind), communes=_split(commune), statuses=_split(status),
                           services=_split(service_), reported_by=reported_by, text=q,
                           hide_kinds=_hidden_kinds(principal, context))
    for value in flt.kinds:
        if value not in context.catalog.kinds:
            raise Problem(400, f"unknown kind {value!r}", type_="invalid-parameter", field="kind")
    for value in flt.communes:
        if value not in context.communes.by_insee:
            raise Problem(400, f"unknown commune {value!r} (use INSEE codes, see /api/v1/communes)",
                          type_="invalid-parameter", field="commune")
    for value in flt.statuses:
        if value not in STATUSES:
            raise Problem(400, f"unknown status {value!r} (one of {', '.join(STATUSES)})", type_="invalid-parameter",
                          field="status")
    for value in flt.services:
        if value not in context.catalog.services:
            raise Problem(400, f"unknown service {value!r}", type_="invalid-parameter", field="service")
    if bbox:
        min_lon, min_lat, max_lon, max_lat = _floats(bbox, 4, "bbox", "min_lon,min_lat,max_lon,max_lat in degrees")
        if not (-180 <= min_lon < max_lon <= 180 and -90 <= min_lat < max_lat <= 90):
            raise Problem(400, "bbox must be min_lon,min_lat,max_lon,max_lat with min < max, in degrees",
                          type_="invalid-parameter", field="bbox")
        flt.bbox = (min_lon, min_lat, max_lon, max_lat)
    if q is not None and not any(ch.isalnum() for ch in q):
        raise Problem(400, "q must contain letters or digits", type_="invalid-parameter", field="q")
    if radius_m != DEFAULT_RADIUS_M and not near:
        raise Problem(400, "radius_m needs near=lat,lon (the centre of the circle)", type_="invalid-parameter",
                      field="radius_m")
    if near:
        lat, lon = _floats(near, 2, "near", "lat,lon in degrees")
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise Problem(400, "near must be lat,lon in degrees", type_="invalid-parameter", field="near")
        if not 0 < radius_m <= MAX_RADIUS_M:
            raise Problem(400, f"radius_m must be between 0 and {MAX_RADIUS_M}", type_="invalid-parameter",
                          field="radius_m")
        flt.near = (lat, lon)
        flt.radius_m = radius_m
    return flt


def decode_cursor(cursor: str | None, flt: repo.AssetFilter) -> repo.Cursor | None:
    """The position a list resumes from; a cursor from another kind of list (by id vs nearest first)
    or a damaged one is a 400."""
    try:
        position = repo.Cursor.decode(cursor) if cursor else None
        if position is not None and (position.after_distance is None) != (flt.near is None):
            raise ValueError("malformed cursor: it belongs to a list with other parameters")
    except ValueError as exc:
        raise Problem(400, str(exc), type_="invalid-parameter", field="cursor") from None
    return position


class FilterParams:
    """The registry's list filters, shared by listing and export."""

    def __init__(
        self,
        kind: str | None = Query(None, description="Kind(s), comma-separated", max_length=500),
        commune: str | None = Query(None, description="INSEE code(s), comma-separated", max_length=500),
        status: str | None = Query(None, description="Lifecycle status(es), comma-separated", max_length=200),
        service: str | None = Query(None, description="Service(s) in charge, comma-separated", max_length=500),
        bbox: str | None = Query(None, description="min_lon,min_lat,max_lon,max_lat", max_length=200),
        near: str | None = Query(None, description="lat,lon: only assets within radius_m of this point, nearest first",
                                 max_length=100),
        radius_m: float = Query(DEFAULT_RADIUS_M, description="Radius around `near`, metres"),
        q: str | None = Query(None, description="Text search in id, name, address, commune, kind, make", max_length=100),
        reported_by: str | None = Query(None, description="Assets reported by this device", max_length=64),
    ) -> None:
        self.values = dict(kind=kind, commune=commune, status=status, service_=service, bbox=bbox, near=near,
                           radius_m=radius_m, q=q, reported_by=reported_by)

    def build(self, context: AppContext, principal: Principal) -> repo.AssetFilter:
        return build_filter(context, principal, **self.values)


@router.get("", summary="List assets (filters, cursor pagination; by id, or nearest first with near)")
async def list_assets(
    filters: FilterParams = Depends(),
    limit: int = Query(100, ge=1, le=repo.MAX_PAGE),
    cursor: str | None = Query(None, max_length=400, description="next_cursor of the previous page"),
    principal: Principal = allow(REGISTRY_READERS),
    context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    flt = filters.build(context, principal)
    position = decode_cursor(cursor, flt)
    async with context.pool.connection() as conn:
        rows, next_cursor = await repo.list_assets(conn, flt, cursor=position, limit=limit)
    items = [repo.row_to_asset(r, context.communes) for r in rows]
    return FastJSONResponse({"items": items, "next_cursor": next_cursor.encode() if next_cursor else None})


@router.get("/export", summary="Export assets as CSV or GeoJSON (same filters as the list)")
async def export_assets(
    filters: FilterParams = Depends(),
    format: str = Query("csv", pattern="^(csv|geojson)$"),
    principal: Principal = allow(REGISTRY_READERS),
    context: AppContext = Depends(get_context),
) -> StreamingResponse:
    flt = filters.build(context, principal)
    kinds = flt.kinds or [k for k in context.catalog.kinds if k not in flt.hide_kinds]
    attribute_names = sorted({a.name for k in kinds for a in context.catalog.kinds[k].attributes})

    async def rows() -> AsyncIterator[dict[str, Any]]:
        async with context.pool.connection() as conn:
            async for row in repo.stream_assets(conn, flt):
                yield repo.row_to_asset(row, context.communes)

    async def body() -> AsyncIterator[bytes]:
        batch: list[dict[str, Any]] = []
        first = True
        async for row in rows():
            batch.append(row)
            if len(batch) >= 2000:
                for chunk in _render(format, batch, attribute_names, first, last=False):
                    yield chunk
                first, batch = False, []
        for chunk in _render(format, batch, attribute_names, first, last=True):
            yield chunk

    media = "text/csv; charset=utf-8" if format == "csv" else "application/geo+json"
    filename = f"citypilot-assets.{format}"
    return StreamingResponse(body(), media_type=media,
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _render(fmt: str, batch: list[dict[str, Any]], attribute_names: list[str], first: bool, last: bool):
    """Render one batch of an export; the CSV header and GeoJSON envelope only once."""
    if fmt == "csv":
        chunks = list(write_csv(batch, attribute_names))
        text = "".join(chunks)
        if not first:
            text = text.split("\n", 1)[1]
        yield text.encode()
        return
    parts = list(write_geojson(batch))
    inner = "".join(parts[1:-1])
    out = (parts[0] if first else ("," if batch else "")) + inner
    if last:
        out += parts[-1]
    yield out.encode()


@router.post("/import", summary="Import a CSV or GeoJSON file of assets (all or nothing, idempotent)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "text/csv": {"schema": {"type": "string"}},
                 "application/geo+json": {"schema": {"type": "object"}}}}},
             responses={422: {"description": "the file has errors; nothing was written"}})
async def import_assets(
    request: Request,
    format: str | None = Query(None, pattern="^(csv|geojson)$", description="Default: from the content type"),
    dry_run: bool = Query(False, description="Check everything and report what the import would do; write nothing"),
    principal: Principal = allow(REGISTRY_EDITORS),
    context: AppContext = Depends(get_context),
) -> dict[str, Any]:
    data = await request.body()
    if not data:
        raise Problem(400, "empty body: send the file's content")
    fmt = format or detect_format(None, request.headers.get("content-type"), data[:64])
    if fmt not in FORMATS:
        raise Problem(415, f"unsupported format {fmt!r}")
    result = await service.import_file(context.pool, data, fmt, actor=principal.username, source=f"import:{fmt}",
                                       catalog=context.catalog, communes=context.communes, dry_run=dry_run)
    return {"dry_run": dry_run, **result.as_dict(), "total": result.created + result.updated + result.unchanged}


@router.post("", status_code=201, summary="Create an asset",
             responses={409: {"description": "an asset with this id exists"}, 422: {"description": "invalid sheet"}})
async def create_asset(
    body: dict[str, Any] = Body(..., examples=[_ASSET_EXAMPLE]),
    principal: Principal = allow(REGISTRY_EDITORS),
    context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    row = await service.create_asset(context.pool, body, actor=principal.username, catalog=context.catalog,
                                     communes=context.communes)
    return FastJSONResponse(repo.row_to_asset(row, context.communes), status_code=201,
                            headers={"Location": f"/api/v1/assets/{row['id']}", "ETag": f'"{row["version"]}"'})


@router.get("/{asset_id}", summary="One asset with its recent history")
async def get_asset(asset_id: str, principal: Principal = allow(REGISTRY_READERS),
                    context: AppContext = Depends(get_context)) -> FastJSONResponse:
    async with context.pool.connection() as conn:
        row = await repo.get_asset(conn, asset_id, hide_kinds=_hidden_kinds(principal, context))
        history = await repo.asset_history(conn, asset_id, limit=50)
    asset = repo.row_to_asset(row, context.communes)
    asset["history"] = history
    return FastJSONResponse(asset, headers={"ETag": f'"{row["version"]}"'})


@router.get("/{asset_id}/history", summary="Every change of an asset's sheet, newest first")
async def get_history(asset_id: str, limit: int = Query(200, ge=1, le=1000),
                      principal: Principal = allow(REGISTRY_READERS),
                      context: AppContext = Depends(get_context)) -> FastJSONResponse:
    async with context.pool.connection() as conn:
        await repo.get_asset(conn, asset_id, hide_kinds=_hidden_kinds(principal, context))
        history = await repo.asset_history(conn, asset_id, limit=limit)
    return FastJSONResponse({"asset_id": asset_id, "items": history})


def _expected_version(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    match = re.fullmatch(r'\s*(?:W/)?"?(\d+)"?\s*', if_match)
    if not match:
        raise Problem(400, 'If-Match must be the ETag of the asset, e.g. "3"', field="If-Match")
    return int(match.group(1))


@router.patch("/{asset_id}", summary="Change some fields of an asset (null clears an optional field)",
              responses={412: {"description": "If-Match does not match the current version"}})
async def update_asset(
    asset_id: str,
    body: dict[str, Any] = Body(..., examples=[{"name": "Rue de la Liberté 12 bis", "attributes": {"lamp_power_w": 30}}]),
    if_match: str | None = Header(None, description="ETag of the version you edited (optimistic locking)"),
    principal: Principal = allow(REGISTRY_EDITORS),
    context: AppContext = Depends(get_context),
) -> FastJSONResponse:
    if not body:
        raise Problem(422, "nothing to change: send at least one field", type_="invalid-input")
    row = await service.update_asset(context.pool, asset_id, body, actor=principal.username,
                                     expected_version=_expected_version(if_match), catalog=context.catalog,
                                     communes=context.communes, hide_kinds=_hidden_kinds(principal, context))
    return FastJSONResponse(repo.row_to_asset(row, context.communes), headers={"ETag": f'"{row["version"]}"'})


class RetireRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3, max_length=500, description="Why the asset is retired (kept in its history)")


@router.post("/{asset_id}/retire", summary="Retire an asset (it stays in the registry with its history)")
async def retire_asset(asset_id: str, body: RetireRequest, principal: Principal = allow(REGISTRY_EDITORS),
                       context: AppContext = Depends(get_context)) -> FastJSONResponse:
    row = await service.update_asset(context.pool, asset_id, {"status": "retired"}, actor=principal.username,
                                     expected_version=None, catalog=context.catalog, communes=context.communes,
                                     hide_kinds=_hidden_kinds(principal, context), note=body.reason)
    return FastJSONResponse(repo.row_to_asset(row, context.communes))
