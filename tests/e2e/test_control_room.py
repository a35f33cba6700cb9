"""The control room as an operator uses it: a real browser on a real citypilot.

Devices report through the real ingest stream (``City.publish``); the test client's application ingests
and raises alarms; the browser, on ``web_server``, sees them through the live feed without a reload.
The module's assets are in Talant (INSEE 21617), away from the Dijon assets of the integration tests.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ..conftest import PASSWORD
from ..integration.conftest import City, eventually, reading, utcnow
from .conftest import ControlRoom, off_thread

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
TALANT = (47.3370, 5.0062)
ALARMS_HEADING = {"fr": "Alarmes", "en": "Alarms"}
SEVERITIES = {"critical", "major", "minor", "warning"}


@dataclasses.dataclass
class Scene:
    city: City
    lights: list[str]
    cabinet: str
    camera: str
    junction: str

    @property
    def everything(self) -> list[str]:
        return [*self.lights, self.cabinet, self.camera, self.junction]


@pytest.fixture(scope="module")
def scene(stack: Any, app_client: Any, tokens: dict[str, str]) -> Scene:
    """A few assets at known positions, each with a state (the devices reported once)."""
    import uuid

    city = City(stack, app_client, tokens, uuid.uuid4().hex[:8].upper())
    lat, lon = TALANT
    rows = [{"id": f"SL{i}", "kind": "street_light", "lat": lat + 0.0004 * i, "lon": lon + 0.0005 * i} for i in range(1, 6)]
    rows += [{"id": "CAB", "kind": "lighting_cabinet", "lat": lat - 0.0004, "lon": lon},
             {"id": "CAM", "kind": "camera", "lat": lat, "lon": lon - 0.0006},
             {"id": "TC", "kind": "traffic_controller", "lat": lat + 0.0008, "lon": lon - 0.0008}]
    ids = city.import_assets(*rows)
    scene = Scene(city, ids[:5], ids[5], ids[6], ids[7])
    now = utcnow()
    messages = [(light, "telemetry", reading(now, power_state="on", dimming_pct=80, power_w=31.5, fault="none"))
                for light in scene.lights]
    messages += [(scene.cabinet, "telemetry", reading(now, mains="ok")),
                 (scene.camera, "telemetry", reading(now, status="online", recording=True)),
                 (scene.junction, "telemetry", reading(now, mode="normal", plan=3, fault="none"))]
    off_thread(city.publish, messages)
    for asset in scene.everything:
        off_thread(city.wait_state, asset, lambda s: True, "a state")
    return scene


# --- helpers --------------------------------------------------------------------------------------------

def visible_to(city: City, role: str) -> tuple[int, list[str]]:
    """How many assets the API gives ``role`` for its map, and their ids."""
    r = city.client.get("/api/v1/twin/map", headers=city.headers(role))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["ids"])
    return body["count"], body["ids"]


def alarm_item(room: ControlRoom, asset: str) -> Any:
    return room.page.locator(f'[data-testid="alarm-list"] [data-testid="alarm-item"][data-asset="{asset}"]')


def api_alarm(city: City, alarm_id: str | int) -> dict[str, Any]:
    r = city.client.get(f"/api/v1/alarms/{alarm_id}", headers=city.headers("operator"))
    assert r.status_code == 200, r.text
    return r.json()


def fail_a_lamp(scene: Scene, light: str, room: ControlRoom) -> tuple[Any, float]:
    """The light reports a lamp failure; wait for its alarm in the room's list: (item, seconds it took)."""
    sent = time.monotonic()
    off_thread(scene.city.publish, [(light, "telemetry", reading(utcnow(), power_state="on", fault="lamp_failure"))])
    item = alarm_item(room, light)
    try:
        item.wait_for(state="visible", timeout=10_000)
    except Exception as exc:
        raise AssertionError(f"no alarm item for {light} within 10 s without reload; {room.describe()}") from exc
    return item, time.monotonic() - sent


def lang(room: ControlRoom) -> str:
    return room.page.evaluate("() => document.documentElement.lang")


def heading(room: ControlRoom) -> str:
    return room.page.locator('[data-testid="alarms-heading"]').inner_text().strip()


def expect(predicate: Any, what: str, timeout: float = 10.0) -> Any:
    return eventually(predicate, what, timeout=timeout, interval=0.1)


# --- logging in and the map -----------------------------------------------------------------------------

def test_login_refuses_a_wrong_password_then_shows_the_city(control_room, scene, accounts):
    room = control_room("operator", login=False)
    page = room.page
    room.submit_login(accounts["operator"], "not-the-password")
    error = page.locator("#login-error")
    error.wait_for(state="visible")
    assert error.inner_text().strip(), "the login error says nothing"
    assert not page.locator('[data-testid="user"]').is_visible()

    room.submit_login(accounts["operator"], PASSWORD)
    page.locator("#map").wait_for(state="visible")
    user = page.locator('[data-testid="user"]')
    user.wait_for(state="visible")
    assert accounts["operator"] in user.inner_text(), user.inner_text()
    room.wait_ready()

    expected, ids = visible_to(scene.city, "operator")
    assert set(scene.lights) <= set(ids)
    assert room.asset_count() == expected
    assert page.evaluate("() => window.citypilot.assetCount()") == expected
    perf = page.evaluate("() => window.citypilot.perf")
    assert isinstance(perf["loadMs"], (int, float)) and perf["loadMs"] > 0, perf
    room.check_no_page_errors()

    page.locator('[data-testid="logout"]').click()
    page.locator("form#login").wait_for(state="visible")
    assert not page.locator('[data-testid="user"]').is_visible()


# --- alarms, live ---------------------------------------------------------------------------------------

def test_a_live_alarm_appears_without_reload_and_is_acknowledged(control_room, scene, accounts):
    room = control_room("operator")
    page = room.page
    page.evaluate("() => { window.__sameDocument = true; }")
    light = scene.lights[0]

    item, took = fail_a_lamp(scene, light, room)
    assert page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"
    alarm_id = item.get_attribute("data-alarm-id")
    assert alarm_id and alarm_id.isdigit(), alarm_id
    alarm = api_alarm(scene.city, alarm_id)
    assert alarm["asset_id"] == light and alarm["type"] == "lamp_failure" and alarm["state"] == "raised", alarm
    assert item.get_attribute("data-severity") == alarm["severity"] in SEVERITIES
    assert item.get_attribute("data-state") == "raised"

    item.locator('[data-action="acknowledge"]').click()
    expect(lambda: item.get_attribute("data-state") == "acknowledged", "the item shows acknowledged")
    alarm = api_alarm(scene.city, alarm_id)
    assert alarm["state"] == "acknowledged" and alarm["acknowledged_by"] == accounts["operator"], alarm
    assert page.evaluate("() => window.__sameDocument === true"), "the page was reloaded"
    print(f"fault to alarm item in the browser: {took:.2f} s")
    room.check_no_page_errors()


def test_clicking_an_alarm_opens_the_asset_sheet(control_room, scene):
    room = control_room("operator")
    page = room.page
    light = scene.lights[1]
    item, _ = fail_a_lamp(scene, light, room)
    item.click(position={"x": 6, "y": 6})  # on the item, not on one of its buttons
    sheet = page.locator(f'[data-testid="sheet"][data-asset="{light}"]')
    sheet.wait_for(state="visible")
    title = sheet.locator('[data-testid="sheet-title"]').inner_text().strip()
    assert title, "the sheet has no title"
    assert light in sheet.inner_text() or f"street_light {light}" in title, sheet.inner_text()[:500]

    page.evaluate("(id) => window.citypilot.openSheet(id)", scene.cabinet)
    page.locator(f'[data-testid="sheet"][data-asset="{scene.cabinet}"]').wait_for(state="visible")
    room.check_no_page_errors()


def test_comment_shelve_and_clear_through_their_forms(control_room, scene, accounts):
    room = control_room("operator")
    page = room.page
    form = page.locator('[data-testid="action-form"]')

    item, _ = fail_a_lamp(scene, scene.lights[2], room)
    alarm_id = item.get_attribute("data-alarm-id")
    item.locator('[data-action="comment"]').click()
    form.wait_for(state="visible")
    form.locator('textarea[name="text"]').fill("crew on site at 21:00")
    form.locator('[type="submit"]').click()
    expect(lambda: api_alarm(scene.city, alarm_id)["comments"] == 1, "the comment saved")

    item.locator('[data-action="shelve"]').click()
    form.wait_for(state="visible")
    form.locator('textarea[name="reason"]').fill("works planned tonight")
    form.locator('input[name="minutes"]').fill("30")
    form.locator('[type="submit"]').click()
    alarm = expect(lambda: (lambda a: a if a["shelved"] else None)(api_alarm(scene.city, alarm_id)), "the alarm shelved")
    assert alarm["shelved_by"] == accounts["operator"] and alarm["shelve_reason"] == "works planned tonight", alarm

    item, _ = fail_a_lamp(scene, scene.lights[3], room)
    alarm_id = item.get_attribute("data-alarm-id")
    item.locator('[data-action="clear"]').click()
    form.wait_for(state="visible")
    form.locator('textarea[name="reason"]').fill("lamp replaced, checked on site")
    form.locator('[type="submit"]').click()
    alarm = expect(lambda: (lambda a: a if a["state"] == "cleared" else None)(api_alarm(scene.city, alarm_id)),
                   "the alarm cleared")
    assert alarm["cleared_by"] == accounts["operator"] and alarm["clear_reason"] == "lamp replaced, checked on site"
    room.check_no_page_errors()


# --- the rest of the room -------------------------------------------------------------------------------

def test_the_language_switch_toggles_french_and_english(control_room, scene):
    room = control_room("operator")
    first = lang(room)
    assert first in ALARMS_HEADING, first
    assert heading(room).startswith(ALARMS_HEADING[first]), heading(room)
    switch = room.page.locator('[data-testid="lang-switch"]')
    other = "en" if first == "fr" else "fr"
    for expected in (other, first):
        switch.click()
        expect(lambda: lang(room) == expected, f"<html lang={expected}>", timeout=5)
        expect(lambda: heading(room).startswith(ALARMS_HEADING[expected]), f"the heading in {expected}", timeout=5)
    room.check_no_page_errors()


def test_an_operator_does_not_receive_public_safety_assets(control_room, scene):
    operator, police = control_room("operator"), control_room("police")
    op_count, op_ids = visible_to(scene.city, "operator")
    police_count, police_ids = visible_to(scene.city, "police")
    assert scene.camera in police_ids and scene.camera not in op_ids
    assert police_count > op_count
    assert operator.asset_count() == op_count
    assert police.asset_count() == police_count

    # Both feeds are live: a light and the camera report; the police sees both, the operator the light only.
    off_thread(scene.city.publish, [(scene.camera, "telemetry", reading(utcnow(), status="tampered", recording=False)),
                                    (scene.lights[4], "telemetry", reading(utcnow(), dimming_pct=40, power_w=17.0))])
    expect(lambda: police.received(scene.camera), "the camera's change on the police feed")
    expect(lambda: operator.received(scene.lights[4]), "the light's change on the operator's feed")
    operator.page.wait_for_timeout(1500)  # a twin flush more: nothing about the camera follows for the operator
    assert scene.camera not in operator.seen_text(), "the operator's browser received the camera"
    assert scene.camera in police.seen_text()
    operator.check_no_page_errors()
    police.check_no_page_errors()


def test_the_kpi_board_opens(control_room, scene):
    # the junction's buses asked for priority: two requests of a line of this test's own, one granted
    line = f"{scene.city.uid}-L9"
    t0 = utcnow() - dt.timedelta(minutes=10)
    off_thread(scene.city.publish, [(scene.junction, "event", json.dumps({
        "ts": (t0 + dt.timedelta(seconds=k)).isoformat(), "code": "bus_priority",
        "data": {"line": line, "granted": k == 0, "saved_s": 42.0 if k == 0 else 0}}).encode()) for k in range(2)])
    expect(lambda: any(r["line"] == line for r in scene.city.client.get(
        "/api/v1/kpi/bus-priority", headers=scene.city.headers()).json()["lines"]), "the requests counted")
    room = control_room("operator")
    board = room.page.locator('[data-testid="kpi-board"]')
    room.page.locator('[data-testid="kpi-toggle"]').click()
    board.wait_for(state="visible")
    assert board.inner_text().strip(), "the KPI board is empty"
    for card in ("kpi-availability-domain", "kpi-alarms", "kpi-mtta", "kpi-energy", "kpi-lighting-goal",
                 "kpi-bus-priority"):
        room.page.locator(f'[data-testid="{card}"]').wait_for(state="visible")
    goal = room.page.locator('[data-testid="kpi-lighting-goal"]').inner_text()
    assert "65" in goal, goal  # the contract's goal is shown
    row = room.page.locator(f'[data-testid="kpi-bus-row"][data-line="{line}"]')
    row.wait_for(state="visible")
    cells = row.locator("td").all_inner_texts()
    assert cells[0] == "2" and cells[1].replace("\u202f", " ").startswith("50"), cells
    room.check_no_page_errors()


# --- the benchmark --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_bench_map_prints_sane_figures(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYPILOT_")}
    env["CITYPILOT_DATA_DIR"] = str(tmp_path)
    done = subprocess.run([str(Path(sys.executable).parent / "citypilot"), "bench", "map", "--assets", "2000",
                           "--seconds", "5"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("assets", "load_ms", "update_ms_p50", "update_ms_p99", "max_task_ms", "ws_bytes_per_s", "draw_calls",
                "fps", "machine"):
        assert key in figures, (key, figures)
    assert figures["assets"] == 2000 and figures["assets_shown"] == 2000, figures
    assert 0 < figures["load_ms"] < 60_000, figures
    assert figures["updates"] >= 1, figures
    assert 0 <= figures["update_ms_p50"] <= figures["update_ms_p99"] < 5_000, figures
    assert 0 <= figures["max_task_ms"] < 10_000, figures
    assert figures["ws_bytes_per_s"] > 1000, figures  # 100 changed lights a second
    assert figures["fps"] is None or figures["fps"] >= 0
    assert figures["draw_calls"] is None or figures["draw_calls"] >= 0
    assert not figures["page_errors"], figures


def test_low_zoom_draws_cells_and_a_click_on_one_zooms_in(control_room, scene):
    room = control_room("operator")
    page = room.page
    page.set_viewport_size({"width": 1280, "height": 800})
    page.evaluate("() => window.citypilot.app.map.map.jumpTo({zoom: 11})")
    expect(lambda: page.evaluate("() => window.citypilot.app.layers.level") == 11, "the map aggregates at zoom 11")
    cell = page.evaluate("""() => {
        const app = window.citypilot.app;
        const group = app.store.groups.find((g) => g.cells && g.cells.size > 0);
        const [lon, lat] = [group.cells.positions[0], group.cells.positions[1]];
        const point = app.map.map.project([lon, lat]);
        return {x: point.x, y: point.y, name: group.name};
    }""")
    # A cell takes its worst asset's colour as the asset's state changes, and gives it back.
    colours = page.evaluate("""() => {
        const store = window.citypilot.app.store;
        // an asset in a cell whose assets are all online, without alarm
        const group = store.groups.find((g) => g.cells && g.cells.counts.some((n, k) => k % 8 === 7 && n === g.cells.totals[k >> 3]));
        const c = group.cells.totals.findIndex((n, k) => group.cells.counts[k * 8 + 7] === n);
        const i = group.members[group.cells.cellOf.indexOf(c)];
        const colour = () => Array.from(group.cells.colors.slice(c * 4, c * 4 + 3));
        const before = colour();
        const state = store.state[i];
        store.setState(i, 1);
        const offline = colour();
        store.setAlarm(i, 1);
        const critical = colour();
        store.setAlarm(i, 0);
        store.setState(i, state);
        return {before, offline, critical, after: colour()};
    }""")
    assert colours["offline"] == [100, 116, 139], colours
    assert colours["critical"] == [255, 59, 48], colours
    assert colours["after"] == colours["before"], colours
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + cell["x"], box["y"] + cell["y"])
    expect(lambda: page.evaluate("() => window.citypilot.app.map.map.getZoom()") >= 13.9, "the click zoomed in on the cell")
    expect(lambda: page.evaluate("() => window.citypilot.app.layers.level") is None, "points are drawn again")
    room.check_no_page_errors()
