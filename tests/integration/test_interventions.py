"""Interventions end to end: a citizen reports through Open311, the request becomes a work order of the
service in charge, the coordinator sends the nearest team (from its vehicle's live position, reported
through the real ingest stream), the team works it from its tablet's API, the coordinator confirms, and
the citizen sees every step in Open311 — with every transition in the journal."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from .conftest import LAT, LON, City, eventually, problem, reading, utcnow

pytestmark = pytest.mark.integration


def api_key(city: City) -> str:
    r = city.client.post("/api/v1/open311/clients", json={"name": f"app {city.uid}"}, headers=city.headers())
    assert r.status_code == 201, r.text
    return r.json()["api_key"]


def report(city: City, key: str, fmt: str = "json", **fields: Any) -> Any:
    form = {"api_key": key, "service_code": "street_light", "lat": str(LAT), "long": str(LON),
            "description": "The light in front of number 12 is out", "email": "jeanne@example.org",
            "first_name": "Jeanne", "phone": "+33 6 12 34 56 78", **fields}
    return city.client.post(f"/open311/v2/requests.{fmt}", data={k: v for k, v in form.items() if v is not None})


def open311_request(city: City, request_id: int) -> dict[str, Any]:
    r = city.client.get(f"/open311/v2/requests/{request_id}.json")
    assert r.status_code == 200, r.text
    (item,) = r.json()
    return item


def act(city: City, order: dict[str, Any], action: str, role: str = "service_coordinator", **body: Any) -> Any:
    return city.client.post(f"/api/v1/work-orders/{order['id']}/{action}", json=body,
                            headers={**city.headers(role), "If-Match": order["etag"]})


def make_team(city: City, accounts: dict[str, str], lat: float, lon: float, suffix: str = "T1",
              members: bool = True) -> tuple[str, str]:
    (vehicle,) = city.import_assets({"id": f"VAN-{suffix}", "kind": "service_vehicle", "lat": lat, "lon": lon})
    team_id = city.id(suffix)
    r = city.client.post("/api/v1/teams", headers=city.headers(), json={
        "id": team_id, "name": f"Lighting crew {suffix}", "service": "lighting", "vehicle_id": vehicle,
        "members": [accounts["field_agent"]] if members else []})
    assert r.status_code == 201, r.text
    r = city.client.post(f"/api/v1/teams/{team_id}/status", json={"status": "available"},
                         headers=city.headers("service_coordinator"))
    assert r.status_code == 200, r.text
    return team_id, vehicle


def drive(city: City, vehicle: str, lat: float, lon: float, ts: dt.datetime | None = None) -> None:
    city.publish([(vehicle, "telemetry", reading(ts or utcnow(), lat=lat, lon=lon, speed_kmh=0.0))])
    city.wait_state(vehicle, lambda s: abs(s["values"]["lat"] - lat) < 1e-9, "vehicle position applied")


def test_a_citizens_report_is_followed_from_open311_to_a_confirmed_repair(city, accounts):
    key = api_key(city)
    # Move the field agent to a team of this test (the shared account may belong to another test's team).
    team_id, vehicle = make_team(city, accounts, LAT + 0.01, LON)
    drive(city, vehicle, LAT + 0.004, LON + 0.002)
    far_team, far_vehicle = make_team(city, accounts, LAT + 0.05, LON, "T2", members=False)
    drive(city, far_vehicle, LAT + 0.03, LON + 0.03)

    r = report(city, key)
    assert r.status_code == 201, r.text
    (created,) = r.json()
    request_id = created["service_request_id"]
    assert isinstance(request_id, int) and "expected by" in created["service_notice"]

    public = open311_request(city, request_id)
    assert public["status"] == "open" and public["service_code"] == "street_light"
    assert public["agency_responsible"] == "Public lighting"
    for leak in ("jeanne", "+33", "example.org"):
        assert leak not in city.client.get(f"/open311/v2/requests/{request_id}.json").text.lower()
        assert leak not in city.client.get("/open311/v2/requests.xml").text.lower()

    staff = city.client.get(f"/api/v1/requests/{request_id}", headers=city.headers("switchboard")).json()
    assert staff["personal_data"] and staff["reports_detail"][0]["email"] == "jeanne@example.org"
    hidden = city.client.get(f"/api/v1/requests/{request_id}", headers=city.headers("operator")).json()
    assert not hidden["personal_data"] and "email" not in hidden["reports_detail"][0]

    order = staff["work_order"]
    assert order and order["state"] == "new" and order["service"] == "lighting" and order["origin"] == "request"
    assert order["category"] == "street_light" and order["priority"] == "normal"
    requested = dt.datetime.fromisoformat(staff["requested_at"])
    assert dt.datetime.fromisoformat(order["sla_response_due"]) - requested == dt.timedelta(hours=48)

    recommended = city.client.get(f"/api/v1/work-orders/{order['id']}/recommendations",
                                  headers=city.headers("service_coordinator")).json()
    mine = [t["team_id"] for t in recommended["recommendations"] if t["team_id"] in (team_id, far_team)]
    assert mine == [team_id, far_team], recommended
    assert recommended["routing"] == "straight_line"

    r = act(city, order, "assign", team_id=team_id)
    assert r.status_code == 200, r.text
    order = r.json()
    assert order["state"] == "assigned" and order["team_id"] == team_id
    assert open311_request(city, request_id)["status_notes"] == "A team has been assigned."

    tasks = city.client.get("/api/v1/field/tasks", headers=city.headers("field_agent")).json()
    assert [t["id"] for t in tasks["items"]] == [order["id"]]
    task = tasks["items"][0]
    assert task["navigation"].startswith("geo:") and task["requests"][0]["description"].startswith("The light")
    assert "email" not in task["requests"][0]

    actions = [{"id": str(uuid.uuid4()), "work_order_id": order["id"], "action": "accept", "base_version": order["version"]}]
    r = city.client.post("/api/v1/field/sync", json={"actions": actions}, headers=city.headers("field_agent"))
    (result,) = r.json()["results"]
    assert result["status"] == "applied", result
    version = result["work_order"]["version"]
    for step in ("en_route", "on_site"):
        r = city.client.post("/api/v1/field/sync", headers=city.headers("field_agent"), json={"actions": [
            {"id": str(uuid.uuid4()), "work_order_id": order["id"], "action": step, "base_version": version}]})
        (result,) = r.json()["results"]
        assert result["status"] == "applied", result
        version = result["work_order"]["version"]
    assert open311_request(city, request_id)["status_notes"] == "A team is on site."
    team = city.client.get(f"/api/v1/teams/{team_id}", headers=city.headers("operator")).json()
    assert team["status"] == "on_scene"

    done_id = str(uuid.uuid4())
    done = {"id": done_id, "work_order_id": order["id"], "action": "done", "base_version": version,
            "note": "Lamp replaced"}
    r = city.client.post("/api/v1/field/sync", json={"actions": [done]}, headers=city.headers("field_agent"))
    (result,) = r.json()["results"]
    assert result["status"] == "applied" and result["work_order"]["state"] == "done", result
    again = city.client.post("/api/v1/field/sync", json={"actions": [done]}, headers=city.headers("field_agent"))
    assert again.json()["results"][0]["duplicate"] is True  # a resent action changes nothing twice
    assert city.client.get(f"/api/v1/teams/{team_id}", headers=city.headers("operator")).json()["status"] == "available"

    order = city.client.get(f"/api/v1/work-orders/{order['id']}", headers=city.headers("service_coordinator")).json()
    r = act(city, order, "confirm")
    assert r.status_code == 200, r.text
    public = open311_request(city, request_id)
    assert (public["status"], public["status_notes"]) == ("closed", "Resolved.")

    history = [e["type"] for e in reversed(city.client.get(f"/api/v1/work-orders/{order['id']}",
                                                          headers=city.headers()).json()["history"])]
    assert history == ["workorder.created", "workorder.assigned", "workorder.accepted", "workorder.en_route",
                       "workorder.on_site", "workorder.done", "workorder.confirmed"]
    r = city.client.get("/api/v1/journal", params={"type": "workorder.*,request.*", "limit": 50}, headers=city.headers())
    kinds = {e["type"] for e in r.json()["items"] if e["data"].get("request_id") == request_id
             or e["data"].get("work_order_id") == order["id"]}
    assert {"request.created", "request.closed", "workorder.confirmed"} <= kinds


def test_a_near_duplicate_is_linked_and_its_reporter_follows_the_first_request(city):
    key = api_key(city)
    lat, lon = LAT - 0.004, LON + 0.006
    first = report(city, key, service_code="pothole", lat=str(lat), long=str(lon)).json()[0]
    near = report(city, key, service_code="pothole", lat=str(lat + 0.0002), long=str(lon)).json()[0]  # ~22 m
    far = report(city, key, service_code="pothole", lat=str(lat + 0.002), long=str(lon)).json()[0]   # ~220 m
    other = report(city, key, service_code="graffiti", lat=str(lat), long=str(lon)).json()[0]
    assert near["service_request_id"] == first["service_request_id"] and "Already reported" in near["service_notice"]
    assert len({first["service_request_id"], far["service_request_id"], other["service_request_id"]}) == 3
    staff = city.client.get(f"/api/v1/requests/{first['service_request_id']}", headers=city.headers()).json()
    assert staff["reports"] == 2 and [r["linked"] for r in staff["reports_detail"]] == [False, True]
    token = city.client.get(f"/open311/v2/tokens/{near['token']}.json").json()
    assert token == [{"service_request_id": first["service_request_id"], "token": near["token"]}]


def test_two_coordinators_acting_at_once_do_not_overwrite_each_other(city, accounts):
    team_id, _ = make_team(city, accounts, LAT, LON, "C1", members=False)
    r = city.client.post("/api/v1/work-orders", headers=city.headers("service_coordinator"), json={
        "title": "Replace a cabinet lock", "service": "lighting", "lat": LAT, "lon": LON, "priority": "high"})
    assert r.status_code == 201, r.text
    order = r.json()
    first = act(city, order, "assign", team_id=team_id)
    second = act(city, order, "cancel", role="supervisor", reason="duplicate")  # based on the same version
    assert first.status_code == 200
    body = problem(second, 409)
    assert body["current"]["state"] == "assigned" and body["current"]["version"] == order["version"] + 1
    no_version = city.client.post(f"/api/v1/work-orders/{order['id']}/cancel", json={"reason": "x"},
                                  headers=city.headers("supervisor"))
    problem(no_version, 428)
    after = city.client.get(f"/api/v1/work-orders/{order['id']}", headers=city.headers()).json()
    assert after["state"] == "assigned"


def test_illegal_transitions_and_wrong_callers_are_refused_precisely(city, accounts):
    r = city.client.post("/api/v1/work-orders", headers=city.headers("operator"), json={
        "title": "Check a pole", "service": "lighting", "lat": LAT, "lon": LON})
    order = r.json()
    problem(act(city, order, "done", note="x"), 409)           # not on site
    problem(act(city, order, "confirm"), 409)                  # not done
    body = problem(act(city, order, "assign", role="operator", team_id="nope"), 403)
    assert "coordinators" in body["detail"]
    problem(act(city, order, "assign", team_id="no-such-team"), 422)
    problem(act(city, order, "cancel"), 422)                   # a reason is required
    problem(act(city, order, "fly"), 404)
    problem(city.client.post("/api/v1/work-orders/999999999/cancel", json={"version": 1, "reason": "x"},
                             headers=city.headers("supervisor")), 404)
    problem(city.client.post("/api/v1/work-orders", headers=city.headers("operator"), json={
        "title": "Outside", "service": "lighting", "lat": 48.85, "lon": 2.35}), 422)
    problem(city.client.post("/api/v1/work-orders", headers=city.headers("switchboard"), json={
        "title": "Not mine", "service": "lighting", "lat": LAT, "lon": LON}), 403)


def test_an_alarm_becomes_a_work_order_and_the_confirmed_repair_clears_it(city, accounts):
    from .test_alarms import wait_alarm

    (light,) = city.import_assets({"id": "SL-W", "kind": "street_light", "lat": LAT + 0.001, "lon": LON})
    city.publish([(light, "telemetry", reading(utcnow() - dt.timedelta(seconds=20), fault="lamp_failure",
                                               power_state="on"))])
    alarm = wait_alarm(city, light, "lamp_failure")
    r = city.client.post(f"/api/v1/alarms/{alarm['id']}/work-order", headers=city.headers("operator"))
    assert r.status_code == 201, r.text
    order = r.json()
    assert (order["origin"], order["alarm_id"], order["asset_id"], order["service"], order["priority"]) == \
        ("alarm", alarm["id"], light, "lighting", "normal")  # a minor alarm: a normal-priority order
    again = city.client.post(f"/api/v1/alarms/{alarm['id']}/work-order", headers=city.headers("supervisor"))
    assert again.status_code == 200 and again.json()["id"] == order["id"]  # one open order per alarm
    team_id, _ = make_team(city, accounts, LAT, LON, "A1", members=False)
    order = act(city, order, "assign", team_id=team_id).json()
    order = act(city, order, "on_site").json()
    order = act(city, order, "done", note="Driver replaced").json()
    still = city.client.get(f"/api/v1/alarms/{alarm['id']}", headers=city.headers()).json()
    assert still["state"] == "raised"  # done is not yet a confirmed repair
    r = act(city, order, "confirm")
    assert r.status_code == 200, r.text
    cleared = city.client.get(f"/api/v1/alarms/{alarm['id']}", headers=city.headers()).json()
    assert cleared["state"] == "cleared" and f"work order {order['id']}" in cleared["clear_reason"]
    problem(city.client.post("/api/v1/alarms/999999999/work-order", headers=city.headers("operator")), 404)


def test_restricted_alarms_give_restricted_work_orders(city):
    from .test_alarms import wait_alarm

    (panel,) = city.import_assets({"id": "BAP-W", "kind": "building_alarm_panel"})
    city.publish([(panel, "telemetry", reading(utcnow() - dt.timedelta(seconds=10), intrusion="alarm"))])
    alarm = wait_alarm(city, panel, "intrusion_alarm")
    problem(city.client.post(f"/api/v1/alarms/{alarm['id']}/work-order", headers=city.headers("operator")), 404)
    r = city.client.post(f"/api/v1/alarms/{alarm['id']}/work-order", headers=city.headers("supervisor"))
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["restricted"] and order["priority"] == "urgent"
    problem(city.client.get(f"/api/v1/work-orders/{order['id']}", headers=city.headers("operator")), 404)
    assert city.client.get(f"/api/v1/work-orders/{order['id']}", headers=city.headers("police")).status_code == 200
    listed = city.client.get("/api/v1/work-orders", params={"alarm": alarm["id"]}, headers=city.headers("operator"))
    assert listed.json()["items"] == []


def test_planned_maintenance_comes_back_after_it_is_done(city, accounts):
    planned = (utcnow() + dt.timedelta(days=2)).replace(microsecond=0)
    r = city.client.post("/api/v1/work-orders", headers=city.headers("service_coordinator"), json={
        "title": "Clean the cabinet's filters", "service": "lighting", "lat": LAT, "lon": LON, "category": "maintenance",
        "planned_for": planned.isoformat(), "recurrence": {"every": 3, "unit": "month"}, "response_h": 8,
        "resolution_h": 24})
    assert r.status_code == 201, r.text
    order = r.json()
    assert order["origin"] == "planned"
    assert dt.datetime.fromisoformat(order["sla_response_due"]) == planned + dt.timedelta(hours=8)
    team_id, _ = make_team(city, accounts, LAT, LON, "P1", members=False)
    order = act(city, order, "assign", team_id=team_id).json()
    order = act(city, order, "on_site").json()
    order = act(city, order, "done", note="Filters cleaned").json()
    assert act(city, order, "confirm").status_code == 200
    following = city.client.get("/api/v1/work-orders", params={"planned": "true", "state": "new"},
                                headers=city.headers()).json()["items"]
    (nxt,) = [o for o in following if o["previous_id"] == order["id"]]
    assert nxt["recurrence"] == {"every": 3, "unit": "month"} and nxt["title"] == order["title"]
    assert dt.datetime.fromisoformat(nxt["planned_for"]).month == (planned.month + 2) % 12 + 1
    bad = city.client.post("/api/v1/work-orders", headers=city.headers("service_coordinator"), json={
        "title": "x", "service": "lighting", "lat": LAT, "lon": LON, "recurrence": {"every": 1, "unit": "year"},
        "planned_for": planned.isoformat()})
    assert "recurrence.unit" in problem(bad, 422)["detail"]


def test_stale_positions_and_other_services_are_not_recommended(city, accounts):
    team_id, vehicle = make_team(city, accounts, LAT, LON, "S1", members=False)
    drive(city, vehicle, LAT + 0.001, LON, ts=utcnow() - dt.timedelta(minutes=10))
    r = city.client.post("/api/v1/work-orders", headers=city.headers("service_coordinator"), json={
        "title": "Check", "service": "lighting", "lat": LAT, "lon": LON})
    answer = city.client.get(f"/api/v1/work-orders/{r.json()['id']}/recommendations",
                             headers=city.headers("service_coordinator")).json()
    assert team_id not in [t["team_id"] for t in answer["recommendations"]]
    (excluded,) = [e for e in answer["excluded"] if e["team_id"] == team_id]
    assert "old" in excluded["reason"]

