"""The control room's web application: its page, its built files and the settings it reads at start;
and the field tablet's page (``/tablet``) with its service worker (``/tablet/sw.js``).

The pages and the files are public on purpose: they hold no data (everything the application shows
comes from the API after login). Built file names do not change between versions, so the page links
them with a content hash (``/static/app.js?v=<hash>``): a browser keeps a hashed URL for a year and
asks again for the page, which is small, on every visit.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, Response

from citypilot import __version__
from citypilot.auth.accounts import Principal
from citypilot.auth.roles import REGISTRY_READERS
from citypilot.web import INDEX, StaticFile, bundle

from ..context import AppContext, get_context
from ..problems import Problem
from ..security import PUBLIC, allow

router = APIRouter(tags=["web application"])
TABLET = "tablet.html"
TABLET_WORKER = "tablet-sw.js"
PAGES = (INDEX, TABLET)  # served at their own address, with their security headers, not under /static
YEAR = 365 * 24 * 3600
_NOT_BUILT = ("<!doctype html><meta charset=utf-8><title>citypilot</title><p>The web application is not built in "
              "this installation. From a source checkout: <code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>.")


def _content_security_policy(style_url: str | None) -> str:
    """Only this origin, except the tile server of a configured map style (whose tiles and glyphs may
    come from other hosts of the same provider: any https origin is then allowed for images and fetches).
    No inline or remote script; 'unsafe-eval' is allowed because browser automation (the UI tests, the
    benchmark, an operator's own scripts through the DevTools protocol) evaluates expressions in the page."""
    remote = ""
    if style_url:
        parts = urlsplit(style_url)
        remote = " https:" if parts.scheme == "https" else f" {parts.scheme}://{parts.netloc}" if parts.netloc else ""
    return ("default-src 'self'; script-src 'self' 'unsafe-eval'; worker-src 'self' blob:; child-src 'self' blob:; "
            f"connect-src 'self'{remote}; img-src 'self' data: blob:{remote}; style-src 'self' 'unsafe-inline'; "
            "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


async def _file(name: str) -> StaticFile | None:
    if name in PAGES:
        bundle.rebuilt()
    if not bundle.loaded:
        await run_in_threadpool(bundle.load)  # reads and gzips the bundle once: off the event loop
    return bundle.get(name)


def _send(request: Request, file: StaticFile, cache_control: str, headers: dict[str, str] | None = None) -> Response:
    headers = {"Cache-Control": cache_control, "ETag": file.etag, "Vary": "Accept-Encoding",
               "X-Content-Type-Options": "nosniff", **(headers or {})}
    if request.headers.get("if-none-match") == file.etag:
        return Response(status_code=304, headers=headers)
    body = file.body
    if file.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        body = file.gzipped
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=file.media_type, headers=headers)


@router.get("/", dependencies=[PUBLIC], include_in_schema=False, response_class=HTMLResponse)
async def index(request: Request, context: AppContext = Depends(get_context)) -> Response:
    file = await _file(INDEX)
    if file is None:
        return HTMLResponse(_NOT_BUILT, status_code=503)
    return _send(request, file, "no-cache", {
        "Content-Security-Policy": _content_security_policy(context.config.map_style_url),
        "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"})


@router.get("/tablet", dependencies=[PUBLIC], include_in_schema=False, response_class=HTMLResponse)
async def tablet(request: Request) -> Response:
    """The field teams' page: a light page of its own (no map), made to keep working offline."""
    file = await _file(TABLET)
    if file is None:
        return HTMLResponse(_NOT_BUILT, status_code=503)
    return _send(request, file, "no-cache", {
        "Content-Security-Policy": _content_security_policy(None), "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY"})


@router.get("/tablet/sw.js", dependencies=[PUBLIC], include_in_schema=False)
async def tablet_service_worker(request: Request) -> Response:
    """The tablet's service worker. Its scope is the page /tablet, which is outside its own folder
    (/tablet/): ``Service-Worker-Allowed`` lets it take that scope. Revalidated on each visit, so that a
    new version of the page is installed as soon as the tablet has network."""
    file = await _file(TABLET_WORKER)
    if file is None:
        raise Problem(404, "the field tablet is not built in this installation", type_="not-found")
    return _send(request, file, "no-cache", {"Service-Worker-Allowed": "/tablet"})


@router.get("/static/{name}", dependencies=[PUBLIC], include_in_schema=False)
async def static(name: str, request: Request) -> Response:
    file = None if name in PAGES or name == TABLET_WORKER else await _file(name)
    if file is None:
        raise Problem(404, f"no file {name!r} in the web application", type_="not-found")
    # Linked with its content hash (?v=...): cache for a year; asked for without it: revalidate each time.
    cache = f"public, max-age={YEAR}, immutable" if request.query_params.get("v") else "no-cache"
    return _send(request, file, cache)


@router.get("/api/v1/ui/config", summary="What the web application needs at start: map style, version")
async def ui_config(principal: Principal = allow(REGISTRY_READERS),
                    context: AppContext = Depends(get_context)) -> dict[str, str | None]:
    return {"map_style_url": context.config.map_style_url, "version": __version__}
