"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error the API returns has a status, a title, a human ``detail`` and, for invalid input, an
``errors`` list naming each field (and line, for files) that is wrong.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from citypilot.registry.repository import AssetExists, AssetNotFound, VersionConflict
from citypilot.registry.sheet import ValidationFailed

PROBLEM_JSON = "application/problem+json"
# A URN, not a URL: the problem kinds are named, not hosted anywhere (RFC 9457 allows any URI).
TYPE_BASE = "urn:citypilot:problem:"
log = logging.getLogger("citypilot.api")

_TITLES = {400: "Bad request", 401: "Authentication required", 403: "Forbidden", 404: "Not found",
           405: "Method not allowed", 406: "Not acceptable", 409: "Conflict", 412: "Precondition failed",
           413: "Payload too large", 415: "Unsupported media type", 422: "Invalid input", 429: "Too many requests",
           500: "Internal error", 503: "Service unavailable"}


class Problem(Exception):
    """Raise to answer with a problem document."""

    def __init__(self, status: int, detail: str, *, type_: str | None = None, headers: dict[str, str] | None = None,
                 **extensions: Any) -> None:
        self.status = status
        self.detail = detail
        self.type = type_
        self.headers = headers
        self.extensions = extensions
        super().__init__(detail)


def problem_response(status: int, detail: str, *, type_: str | None = None, instance: str | None = None,
                     headers: dict[str, str] | None = None, **extensions: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_BASE + type_ if type_ else "about:blank",
                            "title": _TITLES.get(status, "Error"), "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or str(loc[-1] if loc else "")


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, type_=exc.type, instance=request.url.path,
                                headers=exc.headers, **exc.extensions)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(exc.status_code, str(exc.detail), instance=request.url.path,
                                headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))
            message = err.get("msg", "invalid")
            if err.get("type") == "extra_forbidden":
                message = "unknown field"
            errors.append({"where": loc[0] if loc else "request", "field": _field_of(loc), "message": message})
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3])
        return problem_response(422, detail, type_="invalid-input", instance=request.url.path, errors=errors)

    @app.exception_handler(ValidationFailed)
    async def _invalid(request: Request, exc: ValidationFailed) -> JSONResponse:
        return problem_response(422, str(exc), type_="invalid-input", instance=request.url.path,
                                errors=[p.as_dict() for p in exc.problems], error_count=exc.total)

    @app.exception_handler(AssetNotFound)
    async def _not_found(request: Request, exc: AssetNotFound) -> JSONResponse:
        return problem_response(404, f"no asset {exc.args[0]!r}", instance=request.url.path)

    @app.exception_handler(AssetExists)
    async def _exists(request: Request, exc: AssetExists) -> JSONResponse:
        return problem_response(409, f"an asset {exc.args[0]!r} already exists; use PATCH to change it",
                                type_="duplicate-id", instance=request.url.path)

    @app.exception_handler(VersionConflict)
    async def _conflict(request: Request, exc: VersionConflict) -> JSONResponse:
        return problem_response(412, f"the asset changed since you read it (now version {exc.current}); reload it",
                                type_="version-conflict", instance=request.url.path, current_version=exc.current)

    @app.exception_handler(psycopg.DataError)
    async def _data_error(request: Request, exc: psycopg.DataError) -> JSONResponse:
        # Input the database cannot store (a NUL byte, an out-of-range number) that slipped past the
        # boundary checks: the caller's input is wrong, not the server.
        log.warning("database refused a value", extra={"path": request.url.path, "error": str(exc)})
        return problem_response(422, f"a value cannot be stored: {str(exc).splitlines()[0]}", type_="invalid-input",
                                instance=request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"path": request.url.path})
        return problem_response(500, "an internal error occurred; it has been logged", instance=request.url.path)
