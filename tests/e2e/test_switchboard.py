"""The switchboard in a real browser: a citizen's phone call logged in a few keystrokes, the place typed
as an address (the type-ahead on the local address index, built from the registry's addresses) or
clicked on the map, and the "already reported" warning before a second call about the same place.

The module's street lights stand along a street of its own in Quetigny (INSEE 21515), with addresses,
so that the address index has a street no other test has.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from ..integration.conftest import City, eventually
from .conftest import ControlRoom
from .interventions import import_assets

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
QUETIGNY = (47.3139, 5.1064)
NUMBERS = (2, 4, 10, 12, 14)


@dataclasses.dataclass
class Street:
    city: City
    name: str          # "Allée Bdcafe"
    typed: str         # what the agent types for number 12: "12 allée bdca"
    points: dict[int, tuple[float, float]]


@pytest.fixture(scope="module")
def street(stack: Any, app_client: Any, tokens: dict[str, str], web_server: Any) -> Street:
    uid = uuid.uuid4().hex[:8].upper()
    city = City(stack, app_client, tokens, uid)
    word = "".join(chr(ord("a") + int(c, 16)) for c in uid[:6])
    name = f"Allée {word.capitalize()}"
    lat, lon = QUETIGNY
    points = {n: (lat + 0.00012 * n, lon + 0.00003 * n) for n in NUMBERS}
    import_assets(city, *[{"id": f"SL{n}", "kind": "street_light", "lat": p[0], "lon": p[1],
                           "address": f"{n} {name}, Quetigny"} for n, p in points.items()])
    # The web server's address index is rebuilt when the registry changed, looked at every 30 s at most:
    # let it look now rather than wait (the index of a process that already searched is up to 30 s old).
    web_server.app.state.context.extra["interventions"].addresses._checked = 0.0
    return Street(city, name, f"12 allée {word[:4]}", points)


def call_panel(room: ControlRoom) -> Any:
    return room.page.locator('[data-testid="call-panel"]')


def pick_address(room: ControlRoom, typed: str, expected: str) -> None:
    page = room.page
    address = page.locator("#call-address")
    address.click()
    address.press_sequentially(typed, delay=15)
    option = page.locator('[data-testid="address-option"]').first
    option.wait_for(state="visible")
    assert expected in option.inner_text(), option.inner_text()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    location = page.locator('[data-testid="call-location"]')
    eventually(lambda: location.get_attribute("data-from") == "address", "the address picked", timeout=5, interval=0.1)
    assert expected in location.inner_text()


def request_of(city: City, request_id: str | int) -> dict[str, Any]:
    r = city.client.get(f"/api/v1/requests/{request_id}", headers=city.headers("switchboard"))
    assert r.status_code == 200, r.text
    return r.json()


def test_a_call_is_logged_with_the_keyboard_and_a_typed_address(control_room, street):
    room = control_room("switchboard")
    page = room.page
    panel = call_panel(room)
    panel.wait_for(state="visible")  # the switchboard's desk opens on the call form
    page.keyboard.press("Escape")
    panel.wait_for(state="hidden")
    page.keyboard.press("n")  # the shortcut: the form, the focus on its first field
    panel.wait_for(state="visible")
    eventually(lambda: page.evaluate("() => document.activeElement.id") == "call-first-name", "focus on the first field",
               timeout=5, interval=0.05)
    for text in ("Jeanne", "Martin", "+33 6 12 34 56 78", "jeanne@example.org"):
        page.keyboard.type(text)
        page.keyboard.press("Enter")  # to the next field
    assert page.evaluate("() => document.activeElement.id") == "call-category"
    page.locator("#call-category").select_option("street_light")
    page.locator('[name="attribute[lights_out]"]').select_option("one")  # the category's questions, by datatype
    page.locator('[name="attribute[pole_number]"]').fill("P-12")
    pick_address(room, street.typed, f"12 {street.name}")
    nearby = page.locator('[data-testid="call-nearby"]')
    nearby.wait_for(state="visible")
    assert page.locator('[data-testid="duplicate-warning"]').count() == 0
    page.locator("#call-description").fill("The light in front of number 12 is out since yesterday")
    page.keyboard.press("Control+Enter")

    result = page.locator('[data-testid="call-result"]')
    result.wait_for(state="visible")
    assert result.get_attribute("data-linked") == "false", result.inner_text()
    request_id = result.get_attribute("data-request-id")
    assert request_id and request_id in result.inner_text()
    saved = request_of(street.city, request_id)
    assert saved["service_code"] == "street_light" and street.name in saved["address"]
    assert saved["attributes"] == {"lights_out": "one", "pole_number": "P-12"}
    lat, lon = street.points[12]
    assert abs(saved["lat"] - lat) < 1e-6 and abs(saved["lon"] - lon) < 1e-6
    (report,) = saved["reports_detail"]
    assert (report["channel"], report["first_name"], report["last_name"], report["email"]) == \
        ("switchboard", "Jeanne", "Martin", "jeanne@example.org")
    assert saved["work_order"] and saved["work_order"]["service"] == "lighting"
    # the form is empty again for the next call
    assert page.locator("#call-first-name").input_value() == ""
    room.check_no_page_errors()


def test_a_second_call_about_the_same_place_is_told_already_reported(control_room, street):
    city = street.city
    lat, lon = street.points[4]
    r = city.client.post("/api/v1/requests", headers=city.headers("switchboard"), json={
        "service_code": "street_light", "lat": lat, "lon": lon, "address": f"4 {street.name}, Quetigny",
        "description": "Out since Monday", "first_name": "Ana"})
    assert r.status_code == 201, r.text
    first = r.json()

    room = control_room("switchboard")
    page = room.page
    call_panel(room).wait_for(state="visible")
    page.locator("#call-first-name").fill("Paul")
    page.locator("#call-email").fill("not-an-e-mail")
    page.locator("#call-category").select_option("street_light")
    pick_address(room, street.typed.replace("12", "4"), f"4 {street.name}")
    warning = page.locator('[data-testid="duplicate-warning"]')
    warning.wait_for(state="visible")
    assert warning.get_attribute("data-request-id") == str(first["id"]), warning.inner_text()
    assert str(first["id"]) in warning.inner_text()
    page.locator(f'[data-testid="nearby-item"][data-request-id="{first["id"]}"]').wait_for(state="visible")

    page.locator('[data-testid="call-save"]').click()  # the server refuses the e-mail: said next to the field
    error = page.locator('.field-error[data-error-for="email"]')
    error.wait_for(state="visible")
    assert "e-mail" in error.inner_text(), error.inner_text()
    assert page.locator("#call-email").get_attribute("aria-invalid") == "true"
    assert page.locator('[data-testid="call-result"]').is_hidden()

    page.locator("#call-email").fill("paul@example.org")
    page.keyboard.press("Control+Enter")
    result = page.locator('[data-testid="call-result"]')
    result.wait_for(state="visible")
    assert result.get_attribute("data-linked") == "true", result.inner_text()
    assert result.get_attribute("data-request-id") == str(first["id"])
    saved = request_of(city, first["id"])
    assert saved["reports"] == 2 and [r["linked"] for r in saved["reports_detail"]] == [False, True]
    room.check_no_page_errors()


def test_an_operator_places_a_call_with_a_click_on_the_map(control_room, street):
    room = control_room("operator")
    page = room.page
    toggle = page.locator('[data-testid="call-toggle"]')
    assert toggle.is_visible()
    toggle.click()
    call_panel(room).wait_for(state="visible")
    page.locator("#call-category").select_option("pothole")
    page.locator('[name="attribute[size]"]').select_option("large")  # a list
    page.locator('[name="attribute[depth_cm]"]').fill("12")          # a number
    lat, lon = street.points[2]
    page.evaluate("([lon, lat]) => window.citypilot.app.map.map.jumpTo({center: [lon, lat], zoom: 16})", [lon, lat])
    box = page.locator("#map").bounding_box()
    x, y = box["width"] - 150, box["height"] / 2  # right of the call form, which covers the map's left side
    expected = page.evaluate("([x, y]) => window.citypilot.app.map.map.unproject([x, y]).toArray()", [x, y])
    page.mouse.click(box["x"] + x, box["y"] + y)
    location = page.locator('[data-testid="call-location"]')
    eventually(lambda: location.get_attribute("data-from") == "map", "the map click placed the call", timeout=5, interval=0.1)
    clicked = (float(location.get_attribute("data-lon")), float(location.get_attribute("data-lat")))
    assert abs(clicked[0] - expected[0]) < 1e-4 and abs(clicked[1] - expected[1]) < 1e-4, (clicked, expected)
    assert page.locator('[data-testid="sheet"]').is_hidden()  # the click placed the call, it opened no sheet
    page.locator('[data-testid="call-save"]').click()
    result = page.locator('[data-testid="call-result"]')
    result.wait_for(state="visible")
    saved = request_of(street.city, result.get_attribute("data-request-id"))
    assert saved["service_code"] == "pothole" and saved["attributes"] == {"size": "large", "depth_cm": 12}
    assert abs(saved["lon"] - expected[0]) < 1e-4 and abs(saved["lat"] - expected[1]) < 1e-4
    room.check_no_page_errors()
