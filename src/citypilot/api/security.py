"""Who may call what.

Each route declares its access with exactly one of ``allow(roles...)`` or ``PUBLIC``. ``audit_routes``
runs when the application is built and refuses to start if any route declares neither, so that an
endpoint cannot be left open by forgetting. The allowed roles are also written into the OpenAPI
document (``x-roles``) for integrators.

A caller authenticates with ``Authorization: Bearer <token>`` (API clients) or the session cookie set
at login (the web UI). With the cookie, state-changing requests must come from the same origin.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from typing import Any, Callable, Iterable, TypeVar

from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from citypilot.auth import accounts, tokens
from citypilot.auth.accounts import Principal

from citypilot.db.reading import reading

from .context import context_of
from .problems import Problem

SESSION_COOKIE = "citypilot_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_bearer = HTTPBearer(auto_error=False, description="Token from POST /api/v1/auth/login")


def _unauthenticated(detail: str = "authentication required: log in and send the token") -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": 'Bearer realm="citypilot"'})


def _same_origin(request: HTTPConnection) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return False
    from urllib.parse import urlsplit

    return urlsplit(origin).netloc == request.headers.get("host")


async def _principal(context: Any, token: str) -> Principal:
    """Who a token belongs to: its signature and expiry, then its session (not revoked, account enabled)."""
    try:
        claims = tokens.decode(context.secret_key, token)
    except tokens.InvalidToken:
        raise _unauthenticated("invalid or expired token: log in again") from None
    async with reading(context.pool) as conn:
        principal = await accounts.resolve_session(conn, claims)
    if principal is None:
        raise _unauthenticated("session ended (logged out, expired or account disabled): log in again")
    return principal


async def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    token = credentials.credentials if credentials else None
    from_cookie = False
    if token is None and request.headers.get("authorization"):
        raise _unauthenticated("unsupported Authorization scheme: send 'Authorization: Bearer <token>'")
    if token is None:
        token = request.cookies.get(SESSION_COOKIE)
        from_cookie = token is not None
    if not token:
        raise _unauthenticated()
    principal = await _principal(context_of(request), token)
    if from_cookie and request.method not in SAFE_METHODS and not _same_origin(request):
        raise Problem(403, "cross-origin request refused: a state-changing request with the session cookie "
                           "must come from the citypilot web application")
    request.state.principal = principal
    return principal


async def authenticate_websocket(websocket: WebSocket) -> Principal:
    """Who opens a WebSocket (the live feed). Browsers cannot set headers on a WebSocket, so the token also
    comes as the ``access_token`` query parameter; ``Authorization: Bearer`` works for other clients, and
    the session cookie too, but then only from the same origin: a WebSocket is not bound by CORS, and any
    site could otherwise open the feed with a logged-in operator's cookie. The same checks as
    ``authenticate`` (signature, expiry, session not revoked, account enabled); raises Problem(401/403)."""
    token = websocket.query_params.get("access_token") or None
    from_cookie = False
    header = websocket.headers.get("authorization")
    if token is None and header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _unauthenticated("unsupported Authorization scheme: send 'Authorization: Bearer <token>'")
        token = value.strip()
    if token is None:
        token = websocket.cookies.get(SESSION_COOKIE) or None
        from_cookie = token is not None
    if token is None:
        raise _unauthenticated("authentication required: send access_token=<token> (or the session cookie)")
    principal = await _principal(context_of(websocket), token)  # type: ignore[arg-type]
    if from_cookie and not _same_origin(websocket):
        raise Problem(403, "cross-origin WebSocket refused: with the session cookie, open it from the citypilot "
                           "web application (or send access_token)")
    websocket.state.principal = principal
    return principal


_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])


def websocket_access(*roles: str | Iterable[str]) -> Callable[[_Endpoint], _Endpoint]:
    """Declare the roles a WebSocket endpoint lets in, for ``audit_routes``. A WebSocket cannot answer with
    a problem document, so the endpoint checks them itself after ``authenticate_websocket`` (and closes
    with its own code); this marks the declaration so that no WebSocket route is left open by forgetting."""
    allowed = frozenset(r for role in roles for r in ([role] if isinstance(role, str) else [str(x) for x in role]))

    def mark(endpoint: _Endpoint) -> _Endpoint:
        endpoint.allowed_roles = allowed  # type: ignore[attr-defined]
        return endpoint

    return mark


def allow(*roles: str | Iterable[str]) -> Any:
    """Dependency: the caller must be authenticated and have one of these roles."""
    allowed: set[str] = set()
    for role in roles:
        if isinstance(role, str):
            allowed.add(role)
        else:
            allowed.update(str(r) for r in role)
    frozen = frozenset(allowed)

    async def require_role(request: Request,
                           credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
        principal = await authenticate(request, credentials)
        if principal.role not in frozen:
            raise Problem(403, f"the {principal.role} role may not do this")
        return principal

    require_role.allowed_roles = frozen  # type: ignore[attr-defined]
    return Depends(require_role)


DEVICE_ROLE = "device"


def allow_device() -> Any:
    """Dependency: the caller is a device or gateway presenting its credential (not a person)."""
    from citypilot.auth import devices

    async def require_device(request: Request,
                             credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> devices.DeviceIdentity:
        if credentials is None:
            raise _unauthenticated("device credentials required: 'Authorization: Bearer cpd_...'")
        if not credentials.credentials.startswith(devices.PREFIX):
            raise Problem(403, "this endpoint takes device credentials, not a person's login")
        async with context_of(request).pool.connection() as conn:
            identity = await devices.verify(conn, credentials.credentials)
        if identity is None:
            raise _unauthenticated("unknown or revoked device credential")
        return identity

    require_device.allowed_roles = frozenset({DEVICE_ROLE})  # type: ignore[attr-defined]
    return Depends(require_device)


async def _public() -> None:
    """Marks a route as deliberately public."""


_public.public = True  # type: ignore[attr-defined]
PUBLIC: Any = Depends(_public)


def _declared(route: APIRoute) -> tuple[bool, frozenset[str] | None]:
    stack = list(route.dependant.dependencies)
    public, roles = False, None
    while stack:
        dep = stack.pop()
        if getattr(dep.call, "public", False):
            public = True
        if getattr(dep.call, "allowed_roles", None) is not None:
            roles = dep.call.allowed_roles
        stack.extend(dep.dependencies)
    return public, roles


def audit_routes(routers: Iterable[APIRouter]) -> dict[str, list[str] | str]:
    """Check every route declares its access; record the roles in OpenAPI. Returns "METHOD path" -> roles.

    Runs on the routers before they are included in the application (where FastAPI wraps them).
    """
    declared: dict[str, list[str] | str] = {}
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIWebSocketRoute):  # not in OpenAPI: the roles are checked by the endpoint
                roles = getattr(route.endpoint, "allowed_roles", None)
                if not roles:
                    raise RuntimeError(f"WebSocket route {route.path} must declare its roles with websocket_access(...)")
                declared[f"WEBSOCKET {route.path}"] = sorted(roles)
                continue
            if not isinstance(route, APIRoute):
                raise RuntimeError(f"unexpected route type {type(route).__name__} in a router: audit it")
            public, roles = _declared(route)
            if public == (roles is not None):
                raise RuntimeError(f"route {sorted(route.methods)} {route.path} must declare exactly one of "
                                   "allow(...) or PUBLIC")
            value: list[str] | str = "public" if public else sorted(roles or ())
            route.openapi_extra = {**(route.openapi_extra or {}), "x-roles": value}
            for method in route.methods:
                declared[f"{method} {route.path}"] = value
    if not declared:
        raise RuntimeError("no route was audited")
    return declared


class LoginThrottle:
    """Slows password guessing: after ``limit`` failures for one user name from one address within
    ``window_s``, further attempts are refused for the rest of the window (HTTP 429)."""

    def __init__(self, limit: int = 5, window_s: float = 300.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[tuple[str, str], deque[float]] = defaultdict(deque)

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        failures = self._failures[key]
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    def retry_after(self, address: str, username: str) -> int:
        now = time.monotonic()
        failures = self._recent((address, username), now)
        if len(failures) >= self.limit:
            return int(failures[0] + self.window_s - now) + 1
        return 0

    def failed(self, address: str, username: str) -> None:
        self._recent((address, username), time.monotonic()).append(time.monotonic())
        if len(self._failures) > 100_000:  # bounded memory under a spray of user names
            self._failures.clear()

    def succeeded(self, address: str, username: str) -> None:
        self._failures.pop((address, username), None)
