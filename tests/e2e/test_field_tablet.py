"""The field tablet (/tablet) in a real browser, through network drops: the agent works offline (en route,
on site, done with a note, a photo), the page shows the queued actions and keeps them across a reload
(IndexedDB; the page itself from its service worker), and they reach the server when the network is
back. An order the coordinator changed meanwhile comes back as a conflict the agent resolves: apply the
action on the new version, or drop it; one taken from the team is refused.

The field agent's account is the session's (tests/conftest.py: role field_agent, service lighting); the
module puts it in a team of its own. Orders are in Chenôve (INSEE 21166).
"""

from __future__ import annotations

import dataclasses
import io
import uuid
from typing import Any, Iterator

import pytest

from ..conftest import PASSWORD
from ..integration.conftest import City, eventually
from .conftest import ControlRoom, off_thread
from .interventions import act, create_order, drive, get_order, make_team

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
CHENOVE = (47.2950, 5.0060)
TABLET_SCREEN = {"width": 1024, "height": 768}


@dataclasses.dataclass
class Crew:
    city: City
    team: str
    other: str


@pytest.fixture(scope="module")
def crew(stack: Any, app_client: Any, tokens: dict[str, str], accounts: dict[str, str]) -> Crew:
    city = City(stack, app_client, tokens, uuid.uuid4().hex[:8].upper())
    lat, lon = CHENOVE
    team, vehicle = make_team(city, "TAB", lat + 0.003, lon, members=[accounts["field_agent"]])
    other, _ = make_team(city, "OTHER", lat - 0.003, lon)
    off_thread(drive, city, vehicle, lat + 0.003, lon)  # the browser may be open already (asyncio.run elsewhere)
    return Crew(city, team, other)


class Tablet(ControlRoom):
    """The agent's tablet: the page, its browser context (to cut the network) and the queue it shows."""

    def __init__(self, context: Any, base_url: str) -> None:
        super().__init__(context.new_page(), base_url)
        self.context = context

    def login(self, username: str, password: str = PASSWORD) -> None:
        self.page.goto(self.base_url + "/tablet", wait_until="load")
        form = self.page.locator("form#login")
        form.wait_for(state="visible")
        form.locator('[name="username"]').fill(username)
        form.locator('[name="password"]').fill(password)
        form.locator('[type="submit"]').click()
        self.page.locator('[data-testid="task-list"]').wait_for(state="visible")
        self.page.evaluate("() => window.citypilotTablet.ready")

    def task(self, order_id: int) -> Any:
        return self.page.locator(f'[data-testid="task"][data-order-id="{order_id}"]')

    def waiting(self) -> int:
        return int(self.page.locator('[data-testid="queue-count"]').get_attribute("data-count") or "0")

    def describe_queue(self) -> str:
        """The queue and the last sync error, for a failure's message."""
        return str(self.page.evaluate("""async () => ({
            items: (await window.citypilotTablet.queue()).map((i) => [i.kind, i.action, i.state, i.base_version, i.reason]),
            error: String(window.citypilotTablet.state.syncer && window.citypilotTablet.state.syncer.lastError),
            failures: window.citypilotTablet.state.syncer && window.citypilotTablet.state.syncer.failures,
            online: navigator.onLine })""")) + f"; {self.describe()}"

    def offline(self, on: bool) -> None:
        self.context.set_offline(on)
        expect(lambda: self.page.locator('[data-testid="net-status"]').get_attribute("data-online") == str(not on).lower(),
               f"the tablet says it is {'offline' if on else 'online'}")


@pytest.fixture
def tablet(browser: Any, web_server: Any, accounts: dict[str, str], crew: Crew) -> Iterator[Tablet]:
    context = browser.new_context(viewport=TABLET_SCREEN, locale="en-GB", service_workers="allow")
    context.set_default_timeout(15_000)
    pad = Tablet(context, web_server.url)
    try:
        pad.login(accounts["field_agent"])
        yield pad
    finally:
        context.close()


def expect(predicate: Any, what: str, timeout: float = 10.0) -> Any:
    return eventually(predicate, what, timeout=timeout, interval=0.1)


def png() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(out, "PNG")
    return out.getvalue()


def assigned_order(crew: Crew, title: str, dlat: float) -> dict[str, Any]:
    lat, lon = CHENOVE
    order = create_order(crew.city, f"{title} {crew.city.uid}", lat + dlat, lon)
    return act(crew.city, order, "assign", team_id=crew.team)


def test_the_agent_works_offline_and_the_queue_syncs_when_the_network_is_back(tablet, crew):
    order = assigned_order(crew, "Lamp out", 0.001)
    page = tablet.page
    page.locator('[data-testid="refresh"]').click()
    task = tablet.task(order["id"])
    task.wait_for(state="visible")
    assert task.locator('[data-testid="task-navigate"]').get_attribute("href").startswith("geo:")
    assert page.evaluate("() => window.citypilotTablet.offlineReady") is True  # the page opens without network too

    tablet.offline(True)
    task.locator('[data-testid="task-en_route"]').click()
    expect(lambda: task.get_attribute("data-state") == "en_route", "en route, shown at once")
    task.locator('[data-testid="task-on_site"]').click()
    expect(lambda: task.get_attribute("data-state") == "on_site", "on site, shown at once")
    task.locator('[data-testid="task-done"]').click()
    note = task.locator('[data-testid="done-note"]')
    note.wait_for(state="visible")
    task.locator('[data-testid="done-submit"]').click()  # a done needs its note: nothing queued without
    assert tablet.waiting() == 2
    note.fill("Lamp replaced, pole checked")
    task.locator('[data-testid="done-submit"]').click()
    task.locator('[data-testid="task-photo-input"]').set_input_files(
        files=[{"name": "pole.png", "mimeType": "image/png", "buffer": png()}])
    expect(lambda: tablet.waiting() == 4, "four actions queued")
    pill = page.locator('[data-testid="queue-count"]').inner_text()
    assert "4" in pill and "network" in pill, pill
    assert page.locator('[data-testid="queued-item"]').count() == 4
    assert get_order(crew.city, order["id"])["state"] == "assigned"  # nothing reached the server

    page.reload(wait_until="load")  # offline: the page from the service worker, the queue from IndexedDB
    page.evaluate("() => window.citypilotTablet.ready")
    task = tablet.task(order["id"])
    task.wait_for(state="visible")
    expect(lambda: tablet.waiting() == 4, "the queue survived the reload")
    assert task.get_attribute("data-state") == "done"

    tablet.offline(False)
    try:
        expect(lambda: tablet.waiting() == 0, "the queue sent", timeout=20)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {tablet.describe_queue()}") from None
    saved = get_order(crew.city, order["id"])
    assert saved["state"] == "done" and saved["outcome_note"] == "Lamp replaced, pole checked", saved
    assert len(saved["photos"]) == 1 and saved["photos"][0]["content_type"] == "image/png"
    steps = [e["type"] for e in reversed(saved["history"])]
    moves = [s for s in steps if s in ("workorder.en_route", "workorder.on_site", "workorder.done")]
    assert moves == ["workorder.en_route", "workorder.on_site", "workorder.done"], steps  # in the agent's order
    assert "workorder.photo" in steps, steps
    expect(lambda: tablet.task(order["id"]).count() == 0, "a done order leaves the task list")
    tablet.check_no_page_errors()


def test_conflicts_are_resolved_by_the_agent_and_refusals_shown(tablet, crew):
    applied = assigned_order(crew, "Flickering", 0.002)
    dropped = assigned_order(crew, "Dim lamp", 0.0025)
    taken = assigned_order(crew, "Bent pole", 0.0015)
    page = tablet.page
    page.locator('[data-testid="refresh"]').click()
    for order in (applied, dropped, taken):
        tablet.task(order["id"]).wait_for(state="visible")

    tablet.offline(True)
    tablet.task(applied["id"]).locator('[data-testid="task-en_route"]').click()
    tablet.task(dropped["id"]).locator('[data-testid="task-on_site"]').click()
    tablet.task(taken["id"]).locator('[data-testid="task-en_route"]').click()
    expect(lambda: tablet.waiting() == 3, "three actions queued")

    # Meanwhile the coordinator changes two orders (to another team and back) and takes the third away.
    for order in (applied, dropped):
        act(crew.city, order, "assign", team_id=crew.other)
        act(crew.city, order, "assign", team_id=crew.team)
    act(crew.city, taken, "assign", team_id=crew.other)

    tablet.offline(False)
    first = page.locator(f'[data-testid="conflict"][data-order-id="{applied["id"]}"]')
    second = page.locator(f'[data-testid="conflict"][data-order-id="{dropped["id"]}"]')
    first.wait_for(state="visible", timeout=20_000)
    second.wait_for(state="visible")
    assert "2 time" in first.inner_text(), first.inner_text()  # what changed: two changes by others
    refused = page.locator('[data-testid="refused"]')
    refused.wait_for(state="visible")
    assert "team" in refused.inner_text(), refused.inner_text()
    assert get_order(crew.city, applied["id"])["state"] == "assigned"  # nothing applied blindly

    first.locator('[data-testid="conflict-apply"]').click()
    expect(lambda: get_order(crew.city, applied["id"])["state"] == "en_route", "applied on the new version")
    second.locator('[data-testid="conflict-drop"]').click()
    refused.locator('[data-testid="refused-dismiss"]').click()
    expect(lambda: tablet.waiting() == 0 and page.locator('[data-testid="conflict"], [data-testid="refused"]').count() == 0,
           "nothing left in the queue")
    assert get_order(crew.city, dropped["id"])["state"] == "assigned"  # the dropped action never applied
    assert get_order(crew.city, taken["id"])["team_id"] == crew.other
    expect(lambda: tablet.task(applied["id"]).get_attribute("data-state") == "en_route", "the task list follows")
    tablet.check_no_page_errors()


def test_the_team_status_and_the_language(tablet, crew):
    page = tablet.page
    page.locator('[data-testid="team-busy"]').click()
    expect(lambda: crew.city.client.get(f"/api/v1/teams/{crew.team}", headers=crew.city.headers()).json()["status"] == "busy",
           "the team is busy")
    page.locator('[data-testid="team-available"]').click()
    expect(lambda: crew.city.client.get(f"/api/v1/teams/{crew.team}", headers=crew.city.headers()).json()["status"]
           == "available", "the team is available again")
    page.locator('[data-testid="lang-switch"]').click()
    expect(lambda: page.evaluate("() => document.documentElement.lang") == "fr", "French")
    assert "Mes interventions" in page.locator("#tasks-heading").inner_text()
    tablet.check_no_page_errors()


def test_the_tablet_page_is_public_holds_no_data_and_has_its_service_worker(web_server):
    import httpx

    page = httpx.get(web_server.url + "/tablet", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache" and "script-src 'self'" in page.headers["content-security-policy"]
    assert "/static/tablet.js?v=" in page.text and "maplibre" not in page.text.lower()
    worker = httpx.get(web_server.url + "/tablet/sw.js", timeout=10)
    assert worker.status_code == 200 and worker.headers["service-worker-allowed"] == "/tablet"
    assert "javascript" in worker.headers["content-type"] and "__FILES__" not in worker.text
    for name in ("tablet.html", "tablet-sw.js"):  # the page and its worker only at their own addresses
        assert httpx.get(f"{web_server.url}/static/{name}", timeout=10).status_code == 404
