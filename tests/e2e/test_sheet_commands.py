"""Commands from the asset sheet, in a real browser on a real citypilot, down to a device that answers.

The assets (a lighting cabinet with one street light, a junction) report once through the real ingest
stream, so that they are online; a fake device per gateway (``Device`` of tests/integration/test_commands.py)
subscribes to its command subject on NATS and answers ``done`` on its cmd-ack channel, through the ingest
stream that the test client's application ingests. The browser sends through the web server's API.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest

from ..integration.conftest import City, eventually, iso, reading, utcnow
from ..integration.test_commands import Device
from .conftest import ControlRoom, off_thread

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
WHERE = (47.3362, 5.0081)  # Talant, beside test_control_room.py's assets
REASON = "e2e: works in the street"


@dataclasses.dataclass
class Scene:
    city: City
    cabinet: str
    light: str
    junction: str
    lighting: Device  # the cabinet: it answers for its lights
    traffic: Device


@pytest.fixture(scope="module")
def scene(stack: Any, app_client: Any, tokens: dict[str, str]) -> Iterator[Scene]:
    import uuid

    city = City(stack, app_client, tokens, uuid.uuid4().hex[:8].upper())
    lat, lon = WHERE
    cabinet, light, junction = city.import_assets(
        {"id": "CAB", "kind": "lighting_cabinet", "lat": lat, "lon": lon},
        {"id": "SL", "kind": "street_light", "lat": lat + 0.0003, "lon": lon + 0.0003, "reported_by": "CAB"},
        {"id": "TC", "kind": "traffic_controller", "lat": lat - 0.0004, "lon": lon + 0.0006})
    now = utcnow()
    batch = json.dumps({"ts": iso(now), "readings": [
        {"asset": cabinet, "values": {"mains": "ok"}},
        {"asset": light, "values": {"power_state": "on", "dimming_pct": 100, "power_w": 38.0, "fault": "none"}}]}).encode()
    off_thread(city.publish, [(cabinet, "telemetry", batch),
                              (junction, "telemetry", reading(now, mode="normal", plan=3, fault="none"))])
    for asset in (cabinet, light, junction):
        off_thread(city.wait_state, asset, lambda s: True, "a state")
    nats_url = stack.endpoints.nats_url
    lighting, traffic = off_thread(Device, nats_url, cabinet), off_thread(Device, nats_url, junction)
    try:
        yield Scene(city, cabinet, light, junction, lighting, traffic)
    finally:
        off_thread(lighting.close)
        off_thread(traffic.close)


def open_sheet(room: ControlRoom, asset: str) -> Any:
    room.page.evaluate("(id) => window.citypilot.openSheet(id)", asset)
    sheet = room.page.locator(f'[data-testid="sheet"][data-asset="{asset}"]')
    sheet.wait_for(state="visible")
    sheet.locator('[data-testid="sheet-commands"] button.command').first.wait_for()
    return sheet


def commands_of(city: City, asset: str) -> list[dict[str, Any]]:
    r = city.client.get("/api/v1/commands", params={"asset": asset}, headers=city.headers("read_only"))
    assert r.status_code == 200, r.text
    return r.json()["items"]


def expect(predicate: Any, what: str, timeout: float = 10.0) -> Any:
    return eventually(predicate, what, timeout=timeout, interval=0.1)


def test_an_operator_dims_a_light_from_its_sheet(control_room, scene, accounts):
    room = control_room("operator", locale="en-GB")
    page = room.page
    sheet = open_sheet(room, scene.light)
    history = sheet.locator('[data-testid="command-history-empty"]')
    history.wait_for()  # nothing sent to it yet

    dim = sheet.locator('button.command[data-command="dim"]')
    assert dim.is_enabled() and dim.get_attribute("aria-expanded") == "false"
    dim.focus()
    page.keyboard.press("Enter")  # keyboard: the button opens the form, focus goes to its first field
    form = sheet.locator('[data-testid="command-form"][data-command="dim"]')
    form.wait_for()
    assert dim.get_attribute("aria-expanded") == "true"
    level = form.locator('[data-param="level_pct"]')
    assert page.evaluate("() => document.activeElement.dataset.param") == "level_pct"
    assert level.get_attribute("type") == "number" and level.get_attribute("max") == "100"
    assert level.get_attribute("required") is not None

    # Out of range: the server's 422 is shown in place, on the field; nothing is written or sent.
    page.keyboard.type("130")
    form.locator('[name="reason"]').fill(REASON)
    form.locator('[data-action="send"]').click()
    error = form.locator('[data-testid="command-error"]')
    error.wait_for()
    assert "level_pct" in error.inner_text() and "130" in error.inner_text(), error.inner_text()
    assert error.get_attribute("data-status") == "422" and error.get_attribute("data-field") == "params.level_pct"
    field_error = form.locator('.field-error[data-error-for="params.level_pct"]')
    assert field_error.is_visible() and "above the maximum 100" in field_error.inner_text()
    assert level.get_attribute("aria-invalid") == "true"
    assert commands_of(scene.city, scene.light) == [] and scene.lighting.received == []

    # The preview: what the server would send, nothing refused, no confirmation for one light.
    level.fill("60")
    form.locator('[data-action="preview"]').click()
    preview = form.locator('[data-testid="command-preview"]')
    expect(lambda: "dim(level_pct=60)" in preview.inner_text(), "the preview shows the command as sent")
    assert form.locator('[data-testid="command-error"]').count() == 0, "the old error stays"
    assert level.get_attribute("aria-invalid") is None
    assert preview.locator('[data-testid="preview-refused"]').count() == 0
    assert preview.locator('[data-testid="preview-confirm"]').count() == 0
    assert not scene.lighting.received

    # Send, twice in the same instant (a double click): Send is disabled at once, one command goes out.
    disabled_at_once = page.evaluate("""() => {
        const send = document.querySelector('[data-testid="command-form"] [data-action="send"]');
        send.click();
        const disabled = send.disabled;
        send.click();
        return disabled;
    }""")
    assert disabled_at_once, "Send stays enabled while its request is in flight"
    result = form.locator('[data-testid="command-result"]')
    outcome = form.locator(f'[data-testid="command-outcome"][data-asset="{scene.light}"]')
    expect(lambda: outcome.count() and outcome.get_attribute("data-status") == "done", "the light's answer: done")
    expect(lambda: result.get_attribute("data-status") == "finished", "the batch finished")
    assert "done" in outcome.inner_text().lower()
    sent = [r for r in room.responses if r.request.method == "POST" and r.url.endswith("/api/v1/commands")]
    assert sent and all(r.request.headers.get("idempotency-key") for r in sent), "no Idempotency-Key"
    assert [(c["command"], c["asset"], c["params"]) for c in scene.lighting.received] == [("dim", scene.light, {"level_pct": 60})]
    items = commands_of(scene.city, scene.light)
    assert [(c["command"], c["status"]) for c in items] == [("dim", "done")], items

    # The recent commands: when, what, who, the outcome.
    row = sheet.locator('[data-testid="command-history-item"]')
    expect(lambda: row.count() == 1 and row.first.get_attribute("data-status") == "done", "the recent commands list it")
    text = row.first.inner_text()
    assert "level_pct=60" in text and accounts["operator"] in text, text
    assert row.first.get_attribute("data-command-id") == items[0]["id"]

    # Escape closes the form (not the sheet); focus goes back to its button.
    form.locator('[data-param="level_pct"]').focus()
    page.keyboard.press("Escape")
    form.wait_for(state="detached")
    assert sheet.is_visible()
    assert page.evaluate("() => document.activeElement.dataset.command") == "dim"
    room.check_no_page_errors()


def test_read_only_sees_the_commands_disabled_and_the_recent_ones(control_room, scene):
    room = control_room("read_only")
    sheet = open_sheet(room, scene.light)
    for name in ("dim", "switch"):
        button = sheet.locator(f'button.command[data-command="{name}"]')
        assert button.is_disabled(), name
        assert "operator" in (button.get_attribute("title") or ""), button.get_attribute("title")
    assert "operator" in sheet.locator('[data-testid="command-roles-note"]').inner_text()  # in words, for the keyboard
    sheet.locator('[data-testid="command-history"]').wait_for()  # read_only reads commands (French page)
    assert sheet.locator('[data-testid="command-form"]').count() == 0
    room.check_no_page_errors()


def test_a_junction_on_flashing_amber_is_confirmed_first_and_cancel_sends_nothing(control_room, scene):
    room = control_room("operator")  # French
    page = room.page
    sheet = open_sheet(room, scene.junction)
    sheet.locator('button.command[data-command="set_mode"]').click()
    form = sheet.locator('[data-testid="command-form"][data-command="set_mode"]')
    form.wait_for()
    mode = form.locator('[data-param="mode"]')
    assert mode.evaluate("(el) => el.tagName") == "SELECT"
    assert set(mode.locator("option").all_inner_texts()) >= {"normal", "flashing_amber", "all_red"}
    revert = form.locator('[data-param="revert_after_s"]')
    assert revert.get_attribute("min") == "10" and revert.get_attribute("required") is None

    # A reason is required before anything is sent.
    mode.select_option("flashing_amber")
    form.locator('[data-action="send"]').click()
    reason_error = form.locator('.field-error[data-error-for="reason"]')
    reason_error.wait_for()
    assert not commands_of(scene.city, scene.junction)

    form.locator('[data-action="preview"]').click()
    form.locator('[data-testid="preview-confirm"]').wait_for()  # it says a confirmation will be needed

    # Sent, then cancelled at the confirmation step: nothing goes out.
    form.locator('[name="reason"]').fill("e2e: accident, clear the way")
    form.locator('[data-action="send"]').click()
    step = form.locator('[data-testid="command-confirm-step"]')
    step.wait_for()
    assert form.locator('[data-testid="command-result"]').get_attribute("data-status") == "pending_confirmation"
    assert not scene.traffic.received
    step.locator('[data-action="cancel"]').click()
    expect(lambda: form.locator('[data-testid="command-result"]').get_attribute("data-status") == "cancelled", "cancelled")
    assert [c["status"] for c in commands_of(scene.city, scene.junction)] == ["cancelled"]

    # Again, confirmed: the junction answers.
    form.locator('[data-action="send"]').click()
    step.wait_for()
    confirm = step.locator('[data-action="confirm"]')
    assert page.evaluate("() => document.activeElement.dataset.action") == "confirm"  # Enter confirms
    page.keyboard.press("Enter")
    outcome = form.locator(f'[data-testid="command-outcome"][data-asset="{scene.junction}"]')
    expect(lambda: outcome.count() and outcome.get_attribute("data-status") == "done", "the junction's answer: done")
    assert confirm.count() == 0
    assert [(c["command"], c["params"]) for c in scene.traffic.received] == [("set_mode", {"mode": "flashing_amber"})]
    rows = sheet.locator('[data-testid="command-history-item"]')
    expect(lambda: [rows.nth(i).get_attribute("data-status") for i in range(rows.count())] == ["done", "cancelled"],
           "the recent commands: the confirmed one first, then the cancelled one")
    room.check_no_page_errors()
