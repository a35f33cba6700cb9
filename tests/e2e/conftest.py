"""The control room in a real browser: Debian's Chromium, driven by Playwright, on a real citypilot.

``web_server`` serves citypilot's application (the web UI, the API and the live feed) with uvicorn on
a free port, on the ``stack`` under test. Like ``live_server`` in tests/integration/test_live.py, it
runs no ingest worker and no alarm engine of its own: the test client's application (``app_client``)
keeps those, so a device message goes through the real path (ingest, alarm engine, journal) and
reaches the browser through this server's live feed.

``control_room(role)`` opens a fresh browser context (1440×900, no cookies) on the page and logs in.
Playwright's sync API keeps an event loop marked as running in this thread while the browser is open:
anything that calls ``asyncio.run`` (``City.publish``) goes through ``off_thread``.

Only the embedded backend: the web UI talks to the API, which is the same on both backends (they are
covered by tests/integration), and a browser run per backend would double the suite's slowest part.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import re
import threading
import time
from typing import Any, Callable, Iterator, TypeVar

import httpx
import pytest

from citypilot.bench.map_bench import CHROMIUM, launch_options
from citypilot.runtime.ports import free_port

from ..conftest import PASSWORD

T = TypeVar("T")
SCREEN = {"width": 1440, "height": 900}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if "/e2e/" in item.nodeid.replace("\\", "/") and callspec and callspec.params.get("stack") == "external":
            item.add_marker(pytest.mark.skip(reason="the web UI only talks to the API: browser tests run on the "
                                                    "embedded backend (both backends are covered by tests/integration)"))


def off_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` in another thread and wait: for code that calls ``asyncio.run`` while the browser is open."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


@dataclasses.dataclass
class WebServer:
    url: str
    app: Any


@pytest.fixture(scope="session")
def web_server(stack: Any, tokens: dict[str, str]) -> Iterator[WebServer]:
    """citypilot's application on a free port (the accounts exist before the browser starts)."""
    import uvicorn

    from citypilot.api.app import create_app

    config = dataclasses.replace(stack.config, ingest_workers=0, alarms_engine=False)
    app = create_app(config, dataclasses.replace(stack.endpoints, nats_server=None))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on",
                                           ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, name="e2e-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    try:
        page = httpx.get(url + "/", timeout=10)
        if page.status_code != 200 or "text/html" not in page.headers.get("content-type", ""):
            pytest.fail(f"the web UI is not served at / (HTTP {page.status_code}): build it with "
                        f"`cd web && npm ci && npm run build`\n{page.text[:300]}")
        yield WebServer(url, app)
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.fixture(scope="module")
def browser(web_server: WebServer) -> Iterator[Any]:
    """Debian's Chromium, headless, WebGL in software. Module-scoped: Playwright's sync API must be stopped
    before other modules' tests call ``asyncio.run``. Missing Chromium fails (CI installs it)."""
    import os

    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"no Chromium at {CHROMIUM}: the web UI's tests need Debian's chromium package "
                    "(apt-get install chromium; .ci/run installs it)", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: pip install -e '.[test]'", pytrace=False)

    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(**launch_options())
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


class ControlRoom:
    """One operator's browser tab on the control room, and what it saw: page errors, console errors,
    the live feed's frames and the API responses."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.ws_frames: list[str] = []
        self.responses: list[Any] = []
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("console", lambda msg: self.console_errors.append(msg.text) if msg.type == "error" else None)
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))
        page.on("response", lambda r: self.responses.append(r) if "/api/" in r.url else None)

    def received(self, needle: str) -> bool:
        """Has a live-feed frame mentioning ``needle`` arrived? (The sync API hands over events only while
        it runs: wait a little in it first.)"""
        self.page.wait_for_timeout(50)
        return any(needle in frame for frame in self.ws_frames)

    def _frame(self, payload: str | bytes) -> None:
        self.ws_frames.append(payload if isinstance(payload, str) else payload.decode("utf-8", "replace"))

    def open(self) -> None:
        self.page.goto(self.base_url + "/", wait_until="load")
        self.page.locator("form#login").wait_for(state="visible", timeout=15_000)

    def submit_login(self, username: str, password: str) -> None:
        form = self.page.locator("form#login")
        form.locator('[name="username"]').fill(username)
        form.locator('[name="password"]').fill(password)
        form.locator('[type="submit"]').click()

    def login(self, username: str, password: str = PASSWORD) -> None:
        self.open()
        self.submit_login(username, password)
        self.page.locator("#map").wait_for(state="visible", timeout=15_000)
        self.wait_ready()

    def wait_ready(self, timeout_ms: float = 30_000) -> None:
        self.page.wait_for_function("() => window.citypilot && window.citypilot.ready", timeout=timeout_ms)
        self.page.evaluate("() => window.citypilot.ready.then(() => true)")

    def asset_count(self) -> int:
        text = self.page.locator('[data-testid="asset-count"]').inner_text().strip()
        assert re.fullmatch(r"\d+", text), f"asset-count is not digits only: {text!r}"
        return int(text)

    def seen_text(self) -> str:
        """Everything this tab received from the API and the live feed (bodies still held by the browser)."""
        self.page.wait_for_timeout(50)  # events still queued in Playwright's connection
        bodies = []
        for response in self.responses:
            try:
                bodies.append(response.text())
            except Exception:  # a redirect or a body the browser let go of
                pass
        return "\n".join(bodies + self.ws_frames)

    def check_no_page_errors(self) -> None:
        assert not self.page_errors, f"uncaught errors in the page: {self.page_errors}"

    def describe(self) -> str:
        return f"page errors: {self.page_errors[:5]}; console errors: {self.console_errors[:5]}"


@pytest.fixture
def control_room(browser: Any, web_server: WebServer, accounts: dict[str, str], request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ControlRoom]]:
    """control_room("operator") -> a logged-in tab (login=False: on the login form, not logged in)."""
    contexts: list[Any] = []
    rooms: list[ControlRoom] = []

    def open_room(role: str = "operator", login: bool = True, locale: str = "fr-FR") -> ControlRoom:
        context = browser.new_context(viewport=SCREEN, locale=locale)
        context.set_default_timeout(15_000)
        contexts.append(context)
        room = ControlRoom(context.new_page(), web_server.url)
        rooms.append(room)
        if login:
            room.login(accounts[role])
        else:
            room.open()
        return room

    yield open_room
    failed = getattr(request.node, "rep_call", None)
    for n, room in enumerate(rooms):
        if failed is not None and failed.failed:
            path = tmp_path_factory.getbasetemp() / f"{request.node.name}-{n}.png"
            try:
                room.page.screenshot(path=str(path))
                print(f"screenshot of the failed test: {path}; {room.describe()}")
            except Exception:
                pass
    for context in contexts:
        context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, so that fixtures know whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
