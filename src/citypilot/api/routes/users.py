"""Accounts administration (admins; the DPO may read the list for audits)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from citypilot.auth import accounts
from citypilot.auth.accounts import AccountError, LastAdmin, Principal, UnknownUser, UserExists
from citypilot.auth.passwords import WeakPassword
from citypilot.auth.roles import ACCOUNT_ADMINS, Role
from citypilot.journal import store as journal

from ..context import AppContext, get_context
from ..problems import Problem
from ..security import allow

router = APIRouter(prefix="/api/v1/users", tags=["accounts"])

RoleName = Literal["admin", "supervisor", "operator", "police", "service_coordinator", "field_agent", "switchboard",
                   "dpo", "read_only"]


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=2, max_length=64)
    role: RoleName
    password: str = Field(min_length=1, max_length=1024)
    service: str | None = Field(None, max_length=40)
    display_name: str | None = Field(None, max_length=120)


class UserChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str | None = Field(None, min_length=1, max_length=1024)
    disabled: bool | None = None
    role: RoleName | None = None
    service: str | None = Field(None, max_length=40, description="With role: the service of a per-service role")


async def _journal(conn: Any, principal: Principal, type_: str, username: str, data: dict[str, Any]) -> None:
    """Account changes are operator actions: in the tamper-evident journal, with who made them."""
    what = ", ".join(f"{k} {v}" for k, v in data.items() if v is not None)
    await journal.record_action(conn, principal.username, type_, f"account {username} {type_.split('.')[1]} by "
                                f"{principal.username}" + (f": {what}" if what else ""), {"username": username, **data})


@router.get("", summary="List accounts")
async def list_users(principal: Principal = allow(ACCOUNT_ADMINS, Role.DPO),
                     context: AppContext = Depends(get_context)) -> list[dict[str, Any]]:
    async with context.pool.connection() as conn:
        return await accounts.list_users(conn)


@router.post("", status_code=201, summary="Create an account", responses={409: {"description": "user exists"}})
async def create_user(body: NewUser, principal: Principal = allow(ACCOUNT_ADMINS),
                      context: AppContext = Depends(get_context)) -> dict[str, Any]:
    try:
        async with context.pool.connection() as conn:
            async with conn.transaction():
                await accounts.add_user(conn, body.username, body.role, body.password,
                                        services=dict(context.catalog.services), service=body.service,
                                        display_name=body.display_name)
                await _journal(conn, principal, "account.created", body.username,
                               {"role": body.role, "service": body.service})
    except UserExists as exc:
        raise Problem(409, str(exc), type_="duplicate-id") from None
    except (AccountError, WeakPassword) as exc:
        raise Problem(422, str(exc), type_="invalid-input") from None
    return {"username": body.username, "role": body.role, "service": body.service}


@router.patch("/{username}", summary="Change an account: password, role (and service), enabled or not",
              responses={404: {"description": "no such user"}, 409: {"description": "would leave no administrator"}})
async def change_user(username: str, body: UserChange, principal: Principal = allow(ACCOUNT_ADMINS),
                      context: AppContext = Depends(get_context)) -> dict[str, Any]:
    if body.password is None and body.disabled is None and body.role is None:
        raise Problem(422, "nothing to change: send password, role or disabled", type_="invalid-input")
    if body.service is not None and body.role is None:
        raise Problem(422, "service goes with role: send both", type_="invalid-input")
    try:
        async with context.pool.connection() as conn:
            async with conn.transaction():
                if body.password is not None:
                    await accounts.set_password(conn, username, body.password)
                if body.role is not None:
                    await accounts.set_role(conn, username, body.role, body.service,
                                            services=dict(context.catalog.services))
                if body.disabled is not None:
                    await accounts.set_disabled(conn, username, body.disabled)
                changed = {k: v for k, v in (("role", body.role), ("service", body.service), ("disabled", body.disabled))
                           if v is not None}
                if body.password is not None:
                    changed["password"] = "changed"  # that it changed, never what to
                await _journal(conn, principal, "account.updated", username, changed)
    except WeakPassword as exc:
        raise Problem(422, str(exc), type_="invalid-input") from None
    except UnknownUser as exc:
        raise Problem(404, str(exc)) from None
    except LastAdmin as exc:
        raise Problem(409, str(exc)) from None
    except AccountError as exc:
        raise Problem(422, str(exc), type_="invalid-input") from None
    return {"username": username, "updated": True}
