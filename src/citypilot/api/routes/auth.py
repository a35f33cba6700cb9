"""Login, logout and who am I."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from citypilot.auth import accounts, tokens
from citypilot.auth.accounts import Principal
from citypilot.auth.roles import ROLES
from citypilot.journal import store as journal

from ..context import AppContext, get_context
from ..problems import Problem
from ..security import PUBLIC, SESSION_COOKIE, allow

router = APIRouter(prefix="/api/v1/auth", tags=["authentication"])


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class LoginResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    username: str
    role: str
    service: str | None = None


@router.post("/login", dependencies=[PUBLIC], response_model=LoginResponse,
             summary="Log in with a user name and password",
             responses={401: {"description": "wrong user name or password"}, 429: {"description": "too many failures"}})
async def login(body: LoginRequest, request: Request, response: Response,
                context: AppContext = Depends(get_context)) -> LoginResponse:
    throttle = request.app.state.login_throttle
    address = request.client.host if request.client else "unknown"
    username = body.username.strip().lower()
    wait = throttle.retry_after(address, username)
    if wait:
        raise Problem(429, f"too many failed logins; try again in {wait} s", headers={"Retry-After": str(wait)})
    async with context.pool.connection() as conn:
        principal = await accounts.authenticate(conn, username, body.password)
        if principal is None:
            throttle.failed(address, username)
            # Same answer whether the account exists or not.
            raise Problem(401, "wrong user name or password", headers={"WWW-Authenticate": 'Bearer realm="citypilot"'})
        throttle.succeeded(address, username)
        ttl = dt.timedelta(minutes=context.config.auth_token_ttl_minutes)
        token, claims = tokens.issue(context.secret_key, principal.username, principal.role, ttl)
        await accounts.open_session(conn, claims, request.headers.get("user-agent"))
        await journal.record_action(conn, principal.username, "session.opened",
                                    f"{principal.username} ({principal.role}) logged in from {address}",
                                    {"role": principal.role, "address": address,
                                     "client": (request.headers.get("user-agent") or "")[:200]})
    response.set_cookie(SESSION_COOKIE, token, max_age=int(ttl.total_seconds()), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return LoginResponse(access_token=token, expires_in=int(ttl.total_seconds()), username=principal.username,
                         role=principal.role, service=principal.service)


@router.post("/logout", status_code=204, summary="End this session (the token stops working)")
async def logout(response: Response, principal: Principal = allow(ROLES),
                 context: AppContext = Depends(get_context)) -> Response:
    async with context.pool.connection() as conn:
        if principal.session_id:
            await accounts.revoke_session(conn, principal.session_id)
        await journal.record_action(conn, principal.username, "session.closed", f"{principal.username} logged out")
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.status_code = 204
    return response


@router.get("/me", summary="The logged-in user")
async def me(principal: Principal = allow(ROLES)) -> dict[str, str | None]:
    return {"username": principal.username, "role": principal.role, "service": principal.service}
