"""Alarms end to end: devices report through the real ingest stream, the engine (running in the
application under test) raises and clears alarms, operators act on them through the API, and every
transition is in the journal."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

from .conftest import City, eventually, problem, reading, utcnow


def alarms(city: City, role: str = "admin", **params: Any) -> list[dict[str, Any]]:
    r = city.client.get("/api/v1/alarms", params=params, headers=city.headers(role))
    assert r.status_code == 200, r.text
    return r.json()["items"]


def wait_alarm(city: City, asset: str, type_: str, predicate=lambda a: True, what: str = "", **params: Any) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = [a for a in alarms(city, asset=asset, grouped="true", state="raised,acknowledged,cleared,closed", **params)
                 if a["type"] == type_]
        return found[0] if found and predicate(found[0]) else None
    return eventually(probe, what or f"alarm {type_} on {asset}", timeout=15)


def journal(city: City, role: str = "admin", **params: Any) -> list[dict[str, Any]]:
    r = city.client.get("/api/v1/journal", params=params, headers=city.headers(role))
    assert r.status_code == 200, r.text
    return r.json()["items"]


def post(city: City, path: str, role: str = "operator", body: dict[str, Any] | None = None) -> Any:
    return city.client.post(path, json=body, headers=city.headers(role))


def publish_core(city: City, subject: str, body: dict[str, Any]) -> None:
    """What offline detection publishes (a core NATS message the changes stream keeps)."""
    async def go() -> None:
        import nats

        nc = await nats.connect(city.stack.endpoints.nats_url)
        try:
            await nc.publish(subject, json.dumps(body).encode())
            await nc.flush()
        finally:
            await nc.close()
    asyncio.run(go())


def test_a_lamp_failure_is_raised_cleared_acknowledged_and_journaled(city):
    (light,) = city.import_assets({"id": "SL-1", "kind": "street_light"})
    t0 = utcnow() - dt.timedelta(seconds=30)
    city.publish([(light, "telemetry", reading(t0, fault="lamp_failure", power_state="on"))])
    alarm = wait_alarm(city, light, "lamp_failure")
    assert (alarm["state"], alarm["severity"], alarm["occurrence"], alarm["notify"]) == ("raised", "minor", 1, ["lighting"])
    assert alarm["commune"] and alarm["domain"] == "lighting"

    city.publish([(light, "telemetry", reading(t0 + dt.timedelta(seconds=10), fault="none"))])
    alarm = wait_alarm(city, light, "lamp_failure", lambda a: a["state"] == "cleared", "cleared by the device")
    assert alarm["cleared_by"] == "system"

    r = post(city, f"/api/v1/alarms/{alarm['id']}/acknowledge", body={"comment": "seen on the map"})
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["acknowledged_by"]) == ("closed", city.uid and r.json()["acknowledged_by"])
    body = problem(post(city, f"/api/v1/alarms/{alarm['id']}/acknowledge"), 409)
    assert "closed" in body["detail"]

    # Raised again after it cleared: a new occurrence of the same alarm.
    city.publish([(light, "telemetry", reading(t0 + dt.timedelta(seconds=20), fault="lamp_failure"))])
    again = wait_alarm(city, light, "lamp_failure", lambda a: a["occurrence"] == 2, "a second occurrence")
    assert again["id"] == alarm["id"] and again["state"] == "raised" and again["acknowledged_by"] is None

    types = [e["type"] for e in journal(city, asset=light, type="alarm.*")]
    assert types == ["alarm.raised", "alarm.closed", "alarm.cleared", "alarm.raised"]  # newest first
    detail = city.client.get(f"/api/v1/alarms/{alarm['id']}", headers=city.headers("operator")).json()
    assert [h["type"] for h in detail["history"]][-1] == "alarm.raised" and detail["history"][0]["actor"] == "system"
    closed_by = [e for e in journal(city, asset=light, type="alarm.closed")][0]
    assert closed_by["actor"] != "system" and closed_by["data"]["comment"] == "seen on the map"


def test_operators_clear_shelve_and_comment_with_precise_errors(city):
    (light,) = city.import_assets({"id": "SL-2", "kind": "street_light"})
    city.publish([(light, "telemetry", reading(utcnow() - dt.timedelta(seconds=5), fault="driver_failure"))])
    alarm = wait_alarm(city, light, "driver_failure")
    path = f"/api/v1/alarms/{alarm['id']}"
    problem(post(city, f"{path}/clear", body={}), 422)  # a reason is required
    problem(post(city, f"{path}/close"), 409)           # still active
    problem(post(city, f"{path}/shelve", body={"reason": "works planned", "minutes": 60 * 24 * 30}), 422)
    r = post(city, f"{path}/shelve", body={"reason": "works planned", "minutes": 30})
    assert r.status_code == 200 and r.json()["shelved"] is True, r.text
    assert alarm["id"] not in [a["id"] for a in alarms(city, asset=light, shelved="false")]
    assert alarm["id"] in [a["id"] for a in alarms(city, asset=light, shelved="true")]
    assert post(city, f"{path}/unshelve").json()["shelved"] is False
    problem(post(city, f"{path}/unshelve"), 409)
    r = post(city, f"{path}/comments", body={"text": "crew on site at 21:00"})
    assert r.status_code == 201 and r.json()["comments"] == 1
    r = post(city, f"{path}/clear", body={"reason": "replaced the driver"})
    assert (r.json()["state"], r.json()["clear_reason"]) == ("cleared", "replaced the driver")
    problem(post(city, f"{path}/clear", body={"reason": "again"}), 409)
    assert post(city, f"{path}/close").json()["state"] == "closed"
    problem(post(city, "/api/v1/alarms/987654321/acknowledge"), 404)
    problem(post(city, f"{path}/acknowledge", role="read_only"), 403)
    problem(city.client.post(f"{path}/acknowledge"), 401)
    comments = journal(city, alarm=alarm["id"], type="alarm.commented")
    assert comments[0]["data"]["comment"] == "crew on site at 21:00"


def test_fire_is_critical_restricted_and_seen_by_the_police_only(city):
    (panel,) = city.import_assets({"id": "BLD-1", "kind": "building_alarm_panel"})
    city.publish([(panel, "telemetry", reading(utcnow() - dt.timedelta(seconds=5), fire="alarm"))])
    alarm = wait_alarm(city, panel, "fire_alarm")
    assert alarm["severity"] == "critical" and alarm["restricted"] and set(alarm["notify"]) == {"buildings", "police"}
    assert [a["id"] for a in alarms(city, "police", asset=panel)] == [alarm["id"]]
    assert alarms(city, "operator", asset=panel) == []
    problem(city.client.get(f"/api/v1/alarms/{alarm['id']}", headers=city.headers("operator")), 404)
    problem(post(city, f"/api/v1/alarms/{alarm['id']}/acknowledge", role="operator"), 404)
    assert journal(city, "operator", asset=panel) == []
    assert journal(city, "police", asset=panel, type="alarm.raised")[0]["restricted"] is True
    assert post(city, f"/api/v1/alarms/{alarm['id']}/acknowledge", role="police").json()["state"] == "acknowledged"


def test_a_cabinets_failing_lights_become_one_cabinet_alarm(city):
    cabinet, *lights = city.import_assets({"id": "CAB-1", "kind": "lighting_cabinet"},
                                          *({"id": f"SL-C{i}", "kind": "street_light", "reported_by": "CAB-1"}
                                            for i in range(8)))
    ts = utcnow() - dt.timedelta(seconds=5)
    city.publish([(cabinet, "telemetry", json.dumps({"ts": ts.isoformat(), "readings": [
        {"asset": light, "values": {"fault": "lamp_failure"}} for light in lights[:6]]}).encode())])
    parent = wait_alarm(city, cabinet, "cabinet_lights_failure")
    assert parent["data"] == {"failing": 6, "of": 8} and parent["severity"] == "major"
    children = eventually(lambda: [a for a in alarms(city, parent=parent["id"])] if len(alarms(city, parent=parent["id"])) == 6 else None,
                          "six lamp alarms folded under the cabinet's")
    assert {c["asset_id"] for c in children} == set(lights[:6])
    top = [a for a in alarms(city) if a["asset_id"] in lights or a["asset_id"] == cabinet]
    assert [a["id"] for a in top] == [parent["id"]]  # one line for the operator, not six
    assert journal(city, asset=lights[0], type="alarm.raised")  # every occurrence is still journaled

    city.publish([(cabinet, "telemetry", json.dumps({"ts": (ts + dt.timedelta(seconds=60)).isoformat(), "readings": [
        {"asset": light, "values": {"fault": "none"}} for light in lights[:6]]}).encode())])
    wait_alarm(city, cabinet, "cabinet_lights_failure", lambda a: a["state"] == "cleared", "the cabinet alarm cleared")


def test_offline_and_device_events_are_journaled_and_alarmed(city):
    cabinet, junction = city.import_assets({"id": "CAB-2", "kind": "lighting_cabinet"},
                                           {"id": "TC-1", "kind": "traffic_controller"})
    publish_core(city, f"citypilot.connectivity.lighting_cabinet.{cabinet}",
                 {"asset": cabinet, "kind": "lighting_cabinet", "connectivity": "offline", "last_seen": utcnow().isoformat()})
    alarm = wait_alarm(city, cabinet, "offline")
    assert alarm["severity"] == "major"
    assert eventually(lambda: journal(city, asset=cabinet, type="connectivity.offline"), "the offline entry")
    publish_core(city, f"citypilot.connectivity.lighting_cabinet.{cabinet}",
                 {"asset": cabinet, "kind": "lighting_cabinet", "connectivity": "online"})
    wait_alarm(city, cabinet, "offline", lambda a: a["state"] == "cleared", "back online")

    ts = utcnow() - dt.timedelta(seconds=10)
    for i in range(2):
        city.publish([(junction, "event", json.dumps({"ts": (ts + dt.timedelta(seconds=i)).isoformat(),
                                                      "code": "detector_fault", "severity": "minor"}).encode())])
    alarm = wait_alarm(city, junction, "detector_fault", lambda a: a["count"] == 2, "deduplicated: count 2")
    assert alarm["occurrence"] == 1
    types = [e["type"] for e in journal(city, asset=junction)]
    assert types.count("device.event") == 2 and types.count("alarm.raised") == 1 and types.count("alarm.repeated") == 1


def test_journal_queries_are_checked_and_paginated(city):
    for params in ({"since": "2026-01-01T00:00:00"}, {"bbox": "5,47,4,48"}, {"polygon": "{\"type\": \"Point\"}"},
                   {"type": "DROP TABLE"}, {"after": 1, "before": 5}):
        problem(city.client.get("/api/v1/journal", params=params, headers=city.headers()), 400 if "type" not in params else 422)
    problem(city.client.get("/api/v1/journal"), 401)
    problem(city.client.get("/api/v1/journal", headers=city.headers("field_agent")), 200) if False else None
    first = city.client.get("/api/v1/journal", params={"limit": 2}, headers=city.headers()).json()
    if first["next_cursor"]:
        second = city.client.get("/api/v1/journal", params={"limit": 2, "before": first["next_cursor"]},
                                 headers=city.headers()).json()
        assert all(e["id"] < first["items"][-1]["id"] for e in second["items"])
    square = {"type": "Polygon", "coordinates": [[[5.0, 47.3], [5.1, 47.3], [5.1, 47.35], [5.0, 47.35], [5.0, 47.3]]]}
    inside = city.client.get("/api/v1/journal", params={"polygon": json.dumps(square), "limit": 50},
                             headers=city.headers()).json()["items"]
    assert all(5.0 <= e["lon"] <= 5.1 and 47.3 <= e["lat"] <= 47.35 for e in inside)


def test_alarm_statistics(city):
    (light,) = city.import_assets({"id": "SL-S", "kind": "street_light"})
    city.publish([(light, "telemetry", reading(utcnow() - dt.timedelta(seconds=5), fault="lamp_failure"))])
    alarm = wait_alarm(city, light, "lamp_failure")
    post(city, f"/api/v1/alarms/{alarm['id']}/acknowledge")
    stats = city.client.get("/api/v1/alarms/stats", headers=city.headers("operator")).json()
    assert stats["open"]["by_domain"].get("lighting", 0) >= 1 and stats["open"]["total"] >= 1
    assert stats["time_to_acknowledge"]["acknowledged"] >= 1 and stats["time_to_acknowledge"]["mean_s"] >= 0
    assert "minor" in stats["time_to_acknowledge"]["by_severity"]
    problem(city.client.get("/api/v1/alarms/stats", params={"since": "2026-01-01T00:00:00"}, headers=city.headers()), 400)


def service_sync_s() -> float:
    from citypilot.alarms.service import SYNC_EVERY_S

    return SYNC_EVERY_S + 0.5


def runtime_of(city: City) -> Any:
    return city.client.app.state.context.extra["alarms"]


def test_an_alarm_left_unacknowledged_is_escalated_once(city):
    service = runtime_of(city).service
    (light,) = city.import_assets({"id": "SL-E", "kind": "street_light"})
    city.publish([(light, "telemetry", reading(utcnow() - dt.timedelta(seconds=5), fault="lamp_failure"))])
    alarm = wait_alarm(city, light, "lamp_failure")
    saved = service.escalation
    service.escalation = {"minor": 1.0}  # one second instead of two hours
    try:
        escalated = wait_alarm(city, light, "lamp_failure", lambda a: a["escalated_at"] is not None, "escalated")
        time.sleep(service_sync_s())  # another escalation pass: nothing new
    finally:
        service.escalation = saved
    entries = journal(city, alarm=alarm["id"], type="alarm.escalated")
    assert len(entries) == 1 and entries[0]["data"]["unacknowledged_for_s"] >= 1
    assert escalated["state"] == "raised"


def test_only_one_engine_leads(city, stack):
    from citypilot.alarms.rules_source import RuleSource
    from citypilot.alarms.service import AlarmService

    app_runtime = runtime_of(city)
    assert eventually(lambda: app_runtime.service.leading, "the application's engine leads")

    async def second() -> bool:
        from psycopg_pool import AsyncConnectionPool

        async with AsyncConnectionPool(stack.endpoints.database_url, min_size=1, max_size=2, open=False) as pool:
            await pool.open(wait=True)
            other = AlarmService(pool, None, app_runtime.service.catalog,
                                 RuleSource(None, app_runtime.service.catalog), None, stack.endpoints.database_url)
            stop = asyncio.Event()
            task = asyncio.create_task(other.run(stop))
            led = False
            for _ in range(30):
                await asyncio.sleep(0.1)
                led = led or other.leading
            stop.set()
            await task
            return led
    assert asyncio.run(second()) is False
    assert app_runtime.service.leading


def test_the_service_in_charge_is_told_by_a_signed_webhook(city, stack):
    """Fire in a building: the engine enqueues a notification in the alarm's transaction, the
    dispatcher POSTs it to the buildings service's webhook, signed."""
    import hashlib
    import hmac
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from psycopg_pool import AsyncConnectionPool

    from citypilot.notify.config import parse_notify_config
    from citypilot.notify.dispatcher import NotificationDispatcher

    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = parse_notify_config(f'''
[[channel]]
name = "buildings-hook"
type = "webhook"
url = "http://127.0.0.1:{server.server_address[1]}/hook"
secret_env = "HOOK_SECRET"
services = ["buildings"]
min_severity = "major"
''', environ={"HOOK_SECRET": "s3cret"})
    service = runtime_of(city).service
    saved = service.notify_config
    service.notify_config = config
    try:
        (panel,) = city.import_assets({"id": "BLD-N", "kind": "building_alarm_panel"})
        city.publish([(panel, "telemetry", reading(utcnow() - dt.timedelta(seconds=5), intrusion="alarm"))])
        alarm = wait_alarm(city, panel, "intrusion_alarm")
    finally:
        service.notify_config = saved

    async def dispatch() -> int:
        async with AsyncConnectionPool(stack.endpoints.database_url, min_size=1, max_size=2, open=False) as pool:
            await pool.open(wait=True)
            dispatcher = NotificationDispatcher(pool, config, stack.endpoints.database_url)
            try:
                return await dispatcher.send_due()
            finally:
                await dispatcher.aclose()
    try:
        eventually(lambda: asyncio.run(dispatch()) and received, "the webhook delivered")
    finally:
        server.shutdown()
    headers, body = next((h, b) for h, b in received if json.loads(b)["id"] == alarm["id"])
    payload = json.loads(body)
    assert (payload["event"], payload["severity"], payload["asset"], payload["type"]) == \
        ("raised", "critical", panel, "intrusion_alarm")
    t, v1 = (part.split("=", 1)[1] for part in headers["Citypilot-Signature"].split(","))
    assert hmac.compare_digest(v1, hmac.new(b"s3cret", f"{t}.".encode() + body, hashlib.sha256).hexdigest())
    assert headers["Citypilot-Delivery"] == f"{alarm['id']}:1:raised:buildings-hook"
    rows = city.sql("SELECT status, attempts FROM notifications WHERE alarm_id = %s", (alarm["id"],))
    assert rows == [("sent", 1)]


def test_registry_changes_are_operator_actions_in_the_journal(city):
    (light,) = city.import_assets({"id": "SL-R", "kind": "street_light"})
    imported = journal(city, type="registry.imported", limit=5)
    assert imported and imported[0]["data"]["created"] >= 1 and imported[0]["actor"] != "system"
    r = city.client.patch(f"/api/v1/assets/{light}", json={"name": "Lampadaire du parvis"}, headers=city.headers())
    assert r.status_code == 200, r.text
    r = city.client.post(f"/api/v1/assets/{light}/retire", json={"reason": "pole removed"}, headers=city.headers())
    assert r.status_code == 200, r.text
    entries = journal(city, asset=light, type="registry.*")
    assert [e["type"] for e in entries] == ["registry.retired", "registry.updated"]
    assert entries[0]["data"]["note"] == "pole removed" and entries[1]["data"]["fields"] == ["name"]
    assert entries[0]["domain"] == "lighting" and entries[0]["commune"]


def test_account_changes_are_journaled_without_secrets(city):
    name = f"j-{city.uid.lower()}"
    r = city.client.post("/api/v1/users", json={"username": name, "role": "operator", "password": "Correct-Horse-42-battery"},
                         headers=city.headers())
    assert r.status_code == 201, r.text
    login = city.client.post("/api/v1/auth/login", json={"username": name, "password": "Correct-Horse-42-battery"})
    assert login.status_code == 200, login.text
    city.client.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {login.json()['access_token']}"})
    city.client.cookies.clear()
    sessions = journal(city, actor=name, type="session.*")
    assert [e["type"] for e in sessions] == ["session.closed", "session.opened"]
    assert sessions[1]["data"]["role"] == "operator" and "Horse" not in json.dumps(sessions)
    r = city.client.patch(f"/api/v1/users/{name}", json={"password": "Another-Horse-43-battery", "disabled": True},
                          headers=city.headers())
    assert r.status_code == 200, r.text
    entries = [e for e in journal(city, type="account.*", limit=50) if e["data"]["username"] == name]
    assert [e["type"] for e in entries] == ["account.updated", "account.created"]
    assert entries[0]["data"] == {"username": name, "disabled": True, "password": "changed"}
    assert "Horse" not in json.dumps(entries)
    assert journal(city, "dpo", type="account.*", limit=1)  # the DPO audits them


def test_lighting_energy_today_against_before_led(city):
    (cabinet,) = city.import_assets({"id": "CAB-K", "kind": "lighting_cabinet"})
    for suffix, now_w, before_w in (("SL-K1", 50, 130), ("SL-K2", 40, 104)):
        r = city.client.post("/api/v1/assets", headers=city.headers(), json={
            "id": city.id(suffix), "kind": "street_light", "name": suffix, "lat": 47.3220, "lon": 5.0415,
            "reported_by": cabinet, "attributes": {"lamp_power_w": now_w, "pre_led_power_w": before_w}})
        assert r.status_code == 201, r.text
    before = city.client.get("/api/v1/kpi/lighting-energy", headers=city.headers("operator")).json()
    t0 = utcnow() - dt.timedelta(minutes=5)
    city.publish([(cabinet, "telemetry", reading(t0, energy_kwh=1000.0)),
                  (cabinet, "telemetry", reading(t0 + dt.timedelta(minutes=2), energy_kwh=1030.0))])
    eventually(lambda: len(city.points(cabinet)) == 2, "the meter readings stored")
    after = city.client.get("/api/v1/kpi/lighting-energy", headers=city.headers("operator")).json()
    assert after["cabinets_metered"] == (before["cabinets_metered"] or 0) + 1 and after["partial_day"] is True
    assert round(after["energy_kwh"] - (before["energy_kwh"] or 0), 1) == 30.0
    ratio = after["before_led_kwh"] / after["energy_kwh"]
    assert after["lights_with_pre_led_power"] >= 2 and ratio > 1 and after["saving_pct"] == round(100 * (1 - 1 / ratio), 1)
    problem(city.client.get("/api/v1/kpi/lighting-energy", params={"day": "2999-01-01"}, headers=city.headers()), 400)
    problem(city.client.get("/api/v1/kpi/lighting-energy"), 401)
