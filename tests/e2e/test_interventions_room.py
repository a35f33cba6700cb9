"""Interventions in the control room, in a real browser: the work orders' panel and map layer kept
current by the live feed, a coordinator sending the recommended team, a change by someone else shown
as a conflict and redone, an alarm turned into a work order from the feed and from the asset sheet,
and the intervention KPIs.

The module's orders and teams are in Ahuy (INSEE 21003), away from the other tests' places.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from ..integration.conftest import City, eventually, reading, utcnow
from .conftest import ControlRoom, off_thread
from .interventions import act, create_order, drive, get_order, make_team

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
AHUY = (47.3640, 5.0310)


@dataclasses.dataclass
class Desk:
    city: City
    near: tuple[str, str]      # team, vehicle ~250 m away
    far: tuple[str, str]       # ~2 km away
    parked: str                # a team whose vehicle never reported: not recommended, with the reason


@pytest.fixture(scope="module")
def desk(stack: Any, app_client: Any, tokens: dict[str, str]) -> Desk:
    city = City(stack, app_client, tokens, uuid.uuid4().hex[:8].upper())
    lat, lon = AHUY
    near = make_team(city, "NEAR", lat + 0.002, lon)
    far = make_team(city, "FAR", lat - 0.018, lon)
    parked, _ = make_team(city, "PARKED", lat, lon + 0.01)
    return Desk(city, near, far, parked)


def positions(desk: Desk) -> None:
    """Fresh positions for the two driving teams (older than 2 min, a position is not used to dispatch)."""
    lat, lon = AHUY
    off_thread(drive, desk.city, desk.near[1], lat + 0.002, lon)
    off_thread(drive, desk.city, desk.far[1], lat - 0.018, lon)


def order_item(room: ControlRoom, order_id: int) -> Any:
    return room.page.locator(f'[data-testid="order-list"] [data-testid="order-item"][data-order-id="{order_id}"]')


def sheet(room: ControlRoom, order_id: int) -> Any:
    return room.page.locator(f'[data-testid="order-sheet"][data-order-id="{order_id}"]')


def expect(predicate: Any, what: str, timeout: float = 10.0) -> Any:
    return eventually(predicate, what, timeout=timeout, interval=0.1)


def test_a_coordinator_sends_the_recommended_team_from_the_panel(control_room, desk):
    positions(desk)
    lat, lon = AHUY
    order = create_order(desk.city, f"Lamp out {desk.city.uid}", lat, lon, priority="high")
    room = control_room("service_coordinator")
    page = room.page
    page.locator("#tab-orders").click()
    item = order_item(room, order["id"])
    item.wait_for(state="visible")
    assert item.get_attribute("data-priority") == "high" and item.get_attribute("data-state") == "new"
    assert page.evaluate("(id) => window.citypilot.app.interventions.orders.has(id)", order["id"])  # on the map layer

    item.click()
    shown = sheet(room, order["id"])
    shown.wait_for(state="visible")
    expect(lambda: (lambda c: abs(c["lat"] - lat) < 0.002 and abs(c["lng"] - lon) < 0.01)(
        page.evaluate("() => window.citypilot.app.map.map.getCenter()")), "the map flew to the order")
    shown.locator('[data-testid="order-actions"] [data-action="assign"]').click()
    first = shown.locator('[data-testid="recommendation"]').first
    first.wait_for(state="visible")
    assert first.get_attribute("data-team-id") == desk.near[0], shown.inner_text()
    assert "km" in first.inner_text()
    ranked = [el.get_attribute("data-team-id") for el in shown.locator('[data-testid="recommendation"]').all()]
    assert ranked.index(desk.near[0]) < ranked.index(desk.far[0]), ranked
    excluded = shown.locator(f'[data-testid="excluded"][data-team-id="{desk.parked}"]')
    assert excluded.is_visible() and "position" in excluded.inner_text(), shown.inner_text()

    first.locator('[data-action="assign-team"]').click()
    expect(lambda: shown.get_attribute("data-state") == "assigned", "the sheet shows the order assigned")
    assert shown.get_attribute("data-team") == desk.near[0]
    saved = get_order(desk.city, order["id"])
    assert (saved["state"], saved["team_id"]) == ("assigned", desk.near[0])
    expect(lambda: item.get_attribute("data-state") == "assigned" if item.count() else False, "the list follows")
    room.check_no_page_errors()


def test_a_change_by_someone_else_is_shown_and_the_action_redone(control_room, desk):
    lat, lon = AHUY
    order = create_order(desk.city, f"Cabinet door {desk.city.uid}", lat + 0.001, lon + 0.001)
    room = control_room("service_coordinator")
    page = room.page
    page.evaluate("(id) => window.citypilot.openOrder(id)", order["id"])
    shown = sheet(room, order["id"])
    shown.wait_for(state="visible")
    shown.locator('[data-action="cancel"]').click()
    form = shown.locator('[data-testid="order-form"]')
    form.locator("textarea").fill("Duplicate of another order")

    act(desk.city, order, "assign", role="supervisor", team_id=desk.far[0])  # meanwhile, in another office
    shown.locator('[data-testid="order-stale"]').wait_for(state="visible")  # the feed told the sheet
    form.locator('[type="submit"]').click()
    conflict = shown.locator('[data-testid="order-conflict"]')
    conflict.wait_for(state="visible")
    text = conflict.inner_text()
    assert f"{order['version']}" in text and f"{order['version'] + 1}" in text and desk.far[0] in text, text
    assert shown.get_attribute("data-state") == "assigned" and shown.get_attribute("data-team") == desk.far[0]
    assert get_order(desk.city, order["id"])["state"] == "assigned"  # nothing overwritten

    conflict.locator('[data-action="redo"]').click()  # the coordinator still wants it cancelled
    expect(lambda: shown.get_attribute("data-state") == "cancelled", "the order cancelled on its current version")
    saved = get_order(desk.city, order["id"])
    assert saved["state"] == "cancelled" and saved["outcome_note"] == "Duplicate of another order"
    room.check_no_page_errors()


def test_a_repair_is_commented_confirmed_reopened_and_taken_back(control_room, desk):
    lat, lon = AHUY
    done = []
    for k in range(2):
        order = create_order(desk.city, f"Repair {k} {desk.city.uid}", lat + 0.0005 * k, lon - 0.002)
        act(desk.city, order, "assign", team_id=desk.far[0])
        act(desk.city, order, "on_site")
        done.append(act(desk.city, order, "done", note="Lamp replaced"))
    room = control_room("service_coordinator")
    page = room.page
    page.evaluate("(id) => window.citypilot.openOrder(id)", done[0]["id"])
    shown = sheet(room, done[0]["id"])
    shown.wait_for(state="visible")
    assert "Lamp replaced" in shown.inner_text()
    shown.locator('[data-action="comment"]').click()
    shown.locator('[data-testid="order-form"] textarea').fill("Checked from the street camera")
    shown.locator('[data-testid="order-form"] [type="submit"]').click()
    shown.locator('[data-testid="order-history"]', has_text="Checked from the street camera").wait_for(state="visible")
    shown.locator('[data-action="confirm"]').click()
    expect(lambda: get_order(desk.city, done[0]["id"])["confirmed_at"] is not None, "the repair confirmed")
    expect(lambda: shown.locator('[data-action="confirm"]').count() == 0, "no confirm button on a confirmed order")

    page.evaluate("(id) => window.citypilot.openOrder(id)", done[1]["id"])
    shown = sheet(room, done[1]["id"])
    shown.wait_for(state="visible")
    shown.locator('[data-action="reopen"]').click()
    shown.locator('[data-testid="order-form"] textarea').fill("Still dark tonight")
    shown.locator('[data-testid="order-form"] [type="submit"]').click()
    expect(lambda: shown.get_attribute("data-state") == "assigned", "reopened: back to its team")
    shown.locator('[data-action="unassign"]').click()
    expect(lambda: shown.get_attribute("data-state") == "new", "taken back from the team")
    saved = get_order(desk.city, done[1]["id"])
    assert (saved["state"], saved["team_id"]) == ("new", None)
    room.check_no_page_errors()


def test_an_alarm_becomes_a_work_order_from_the_feed_and_the_sheet(control_room, desk):
    city = desk.city
    lat, lon = AHUY
    (light,) = city.import_assets({"id": "SL-WO", "kind": "street_light", "lat": lat - 0.001, "lon": lon - 0.001})
    room = control_room("operator")
    page = room.page
    off_thread(city.publish, [(light, "telemetry", reading(utcnow(), power_state="on", fault="lamp_failure"))])
    alarm = page.locator(f'[data-testid="alarm-item"][data-asset="{light}"]')
    alarm.wait_for(state="visible")
    alarm.locator('[data-action="work-order"]').click()
    shown = page.locator('[data-testid="order-sheet"]')
    shown.wait_for(state="visible")
    notice = shown.locator('[data-testid="order-notice"]')
    notice.wait_for(state="visible")
    order_id = int(shown.get_attribute("data-order-id"))
    r = city.client.get("/api/v1/work-orders", params={"asset": light}, headers=city.headers())
    assert [o["id"] for o in r.json()["items"]] == [order_id]
    assert get_order(city, order_id)["alarm_id"] == int(alarm.get_attribute("data-alarm-id"))

    # The asset's sheet lists the alarm and its order; the button there gives the same order (200, existing).
    page.evaluate("(id) => window.citypilot.openSheet(id)", light)
    box = page.locator('[data-testid="sheet-interventions"]')
    box.locator(f'[data-order-id="{order_id}"]').wait_for(state="visible")
    box.locator('[data-action="work-order"]').click()
    expect(lambda: shown.is_visible() and shown.get_attribute("data-order-id") == str(order_id), "the same order opened")
    assert str(order_id) in shown.locator('[data-testid="order-notice"]').inner_text()

    # An order opened elsewhere appears on this screen without reload; the layer can be switched off.
    other = create_order(city, f"Pole check {city.uid}", lat + 0.003, lon)
    page.locator("#tab-orders").click()
    order_item(room, other["id"]).wait_for(state="visible")
    layer = page.locator('input[data-layer="interventions"]')
    layer.uncheck()
    assert page.evaluate("() => window.citypilot.app.layers.isVisible('interventions')") is False
    layer.check()

    page.keyboard.press("Escape")
    page.locator('[data-testid="kpi-toggle"]').click()
    for card in ("kpi-interventions", "kpi-backlog", "kpi-overdue"):
        page.locator(f'[data-testid="{card}"]').wait_for(state="visible")
    backlog = page.locator('[data-testid="kpi-backlog"]').inner_text()
    assert any(ch.isdigit() for ch in backlog), backlog
    page.locator('[data-testid="kpi-wo-row"][data-key="lighting"]').wait_for(state="visible")
    room.check_no_page_errors()
