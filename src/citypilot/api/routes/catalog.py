"""The equipment catalogue, the city's services and the communes' outlines."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from citypilot.auth.accounts import Principal
from citypilot.auth.roles import REGISTRY_READERS, sees_restricted

from ..context import AppContext, get_context
from ..problems import Problem
from ..security import allow

router = APIRouter(prefix="/api/v1", tags=["catalogue"])


@router.get("/kinds", summary="Kinds of equipment: attributes, telemetry, reporting interval, commands")
async def list_kinds(principal: Principal = allow(REGISTRY_READERS),
                     context: AppContext = Depends(get_context)) -> list[dict[str, Any]]:
    show_restricted = sees_restricted(principal.role)
    return [spec.describe() for name, spec in sorted(context.catalog.kinds.items())
            if show_restricted or not spec.restricted]


@router.get("/kinds/{kind}", summary="One kind of equipment")
async def get_kind(kind: str, principal: Principal = allow(REGISTRY_READERS),
                   context: AppContext = Depends(get_context)) -> dict[str, Any]:
    spec = context.catalog.kinds.get(kind)
    if spec is None or (spec.restricted and not sees_restricted(principal.role)):
        raise Problem(404, f"no kind {kind!r}")
    return spec.describe()


@router.get("/services", summary="The city's services in charge of equipment")
async def list_services(principal: Principal = allow(REGISTRY_READERS),
                        context: AppContext = Depends(get_context)) -> list[dict[str, str]]:
    return [{"id": sid, "label": label} for sid, label in context.catalog.services.items()]


@router.get("/communes", summary="The communes of the metropole (GeoJSON outlines, with attribution)")
async def list_communes(principal: Principal = allow(REGISTRY_READERS),
                        context: AppContext = Depends(get_context)) -> dict[str, Any]:
    return context.communes.feature_collection()
