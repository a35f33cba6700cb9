"""The live twin and the HTTP ingest endpoint over HTTP, on both backends: who may send, what is refused
at the door, and how the control room reads current states and time series.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from .conftest import LAT, LON, City, eventually, iso, problem, reading, utcnow


def message(device: str, payload: bytes | dict[str, Any], channel: str = "telemetry") -> dict[str, Any]:
    return {"device": device, "channel": channel,
            "payload": json.loads(payload) if isinstance(payload, bytes) else payload}


def ids(items: list[dict[str, Any]]) -> list[str]:
    return sorted(item["id"] for item in items)


def twin_list(city: City, role: str = "admin", **params: Any) -> list[dict[str, Any]]:
    r = city.client.get("/api/v1/twin", params={"q": city.uid, **params}, headers=city.headers(role))
    assert r.status_code == 200, r.text
    return r.json()["items"]


# --- HTTP ingest: credentials --------------------------------------------------------------------------

def test_http_ingest_takes_only_a_live_device_credential(city):
    light, other = city.import_assets({"id": "SL-1", "kind": "street_light"}, {"id": "SL-2", "kind": "street_light"})
    ts = utcnow().replace(microsecond=0) - dt.timedelta(seconds=30)
    batch = [message(light, reading(ts, power_w=5.0))]

    assert problem(city.post(None, batch), 401)["detail"]
    r = city.client.post("/api/v1/ingest", json={"messages": batch}, headers=city.headers("operator"))
    assert "device credentials" in problem(r, 403)["detail"]  # a person's login is not a device's
    problem(city.post("cpd_000000000000_not-a-secret", batch), 401)
    problem(city.client.post(f"/api/v1/assets/{light}/credentials", headers=city.headers("operator")), 403)

    credential_id, token = city.credential(light)
    r = city.post(token, batch)
    assert r.status_code == 202 and r.json() == {"accepted": 1}, r.text
    city.wait_state(light, lambda s: s["values"] == {"power_w": 5.0}, "the HTTP reading")
    problem(city.post(token[:-2] + "xx", batch), 401)  # right id, wrong secret

    # Revoked: refused at once.
    r = city.client.delete(f"/api/v1/assets/{light}/credentials/{credential_id}", headers=city.headers())
    assert r.status_code == 204, r.text
    problem(city.post(token, batch), 401)
    listed = city.client.get(f"/api/v1/assets/{light}/credentials", headers=city.headers()).json()
    assert [(c["id"], c["revoked_at"] is not None) for c in listed] == [(credential_id, True)]
    assert "token" not in json.dumps(listed) and "secret" not in json.dumps(listed)
    problem(city.client.delete(f"/api/v1/assets/{light}/credentials/{credential_id}", headers=city.headers()), 404)

    # A retired device's credential stops working, and a retired device gets no new one.
    _, other_token = city.credential(other)
    assert city.post(other_token, [message(other, reading(ts, power_w=6.0))]).status_code == 202
    r = city.client.post(f"/api/v1/assets/{other}/retire", json={"reason": "pole removed"}, headers=city.headers())
    assert r.status_code == 200, r.text
    problem(city.post(other_token, [message(other, reading(ts + dt.timedelta(seconds=1), power_w=7.0))]), 401)
    problem(city.client.post(f"/api/v1/assets/{other}/credentials", headers=city.headers()), 409)


def test_http_ingest_refuses_malformed_batches_whole(city):
    light, = city.import_assets({"id": "SL-1", "kind": "street_light"})
    _, token = city.credential(light)
    ts = utcnow().replace(microsecond=0) - dt.timedelta(minutes=1)
    good = message(light, reading(ts, power_w=1.0))
    for batch in ([good, {**good, "channel": "cmd"}],                 # a reserved channel, not an inbound one
                  [good, {**good, "channel": "telemetry/extra"}],
                  [{**good, "device": "bad id!"}],
                  [{**good, "device": "a.b"}],                          # would change the subject's shape
                  [], [good] * 1001,
                  [{**good, "colour": "red"}],
                  [{"device": light, "channel": "telemetry"}]):
        problem(city.post(token, batch), 422)
    for body in (b"not json", b'{"messages": {}}', b'{"messages": [], "extra": 1}', b"[]"):
        problem(city.post(token, body), 422)
    # Nothing of a refused batch was published: only the next good message shows.
    city.post(token, [message(light, reading(ts + dt.timedelta(seconds=1), power_w=2.0))])
    city.wait_state(light, lambda s: True, "the good message")
    assert [p["values"] for p in city.points(light)] == [{"power_w": 2.0}]


def padded(size: int) -> bytes:
    """A telemetry payload of exactly ``size`` bytes."""
    head, tail = b'{"values": {"power_w": 1}, "padding": "', b'"}'
    return head + b"p" * (size - len(head) - len(tail)) + tail


def test_http_ingest_of_large_payloads(city):
    light, = city.import_assets({"id": "SL-1", "kind": "street_light"})
    _, token = city.credential(light)
    bus_limit = city.client.app.state.context.nats.max_payload

    def post_raw(payload: bytes) -> Any:
        return city.post(token, b'{"messages": [{"device": "%s", "channel": "telemetry", "payload": %s}]}'
                         % (light.encode(), payload))

    # Over the ingest limit but within the bus's: accepted, then dead-lettered as oversized.
    big = padded(300 * 1024)
    assert post_raw(big).status_code == 202
    letter, = city.wait_dead_letters(light, 1)
    assert (letter["reason_code"], letter["source"], letter["payload_size"]) == ("oversized", "http", len(big))
    # Over what the bus takes (with the headers the endpoint adds): refused whole, and the bus connection
    # shared by every request stays up: the next batch is accepted at once.
    for size in (bus_limit - 10, bus_limit + 10):
        problem(post_raw(padded(size)), 413)
        ts = utcnow() - dt.timedelta(seconds=size % 7)
        r = city.post(token, [message(light, reading(ts, power_w=float(size % 97)))])
        assert r.status_code == 202, r.text
        city.wait_state(light, lambda s: s["values"]["power_w"] == float(size % 97), "the next message")
    assert len(city.dead_letters(light)) == 1


def test_http_gateway_batch(city):
    cabinet, *lights = city.import_assets({"id": "CAB-1", "kind": "lighting_cabinet"},
                                          *({"id": f"SL-{i}", "kind": "street_light", "reported_by": "CAB-1"}
                                            for i in range(1, 4)))
    city.introduce(cabinet)
    _, token = city.credential(cabinet)
    ts = utcnow().replace(microsecond=0) - dt.timedelta(seconds=10)
    payload = {"ts": iso(ts), "readings": [{"asset": light, "values": {"power_w": 40.0 + n, "power_state": "on"}}
                                           for n, light in enumerate(lights)]}
    r = city.post(token, [message(cabinet, payload), message(cabinet, reading(ts, mains="ok", door_open=False))])
    assert r.status_code == 202 and r.json() == {"accepted": 2}, r.text
    for n, light in enumerate(lights):
        state = city.wait_state(light, lambda s: True, "the light reported by its cabinet over HTTP")
        assert state["values"] == {"power_w": 40.0 + n, "power_state": "on"}
    city.wait_state(cabinet, lambda s: s["values"] == {"mains": "ok", "door_open": False}, "the cabinet's own state")
    # One of its lights' credentials cannot speak for the cabinet.
    _, light_token = city.credential(lights[0])
    assert city.post(light_token, [message(cabinet, payload)]).status_code == 202
    letters = city.wait_dead_letters(cabinet, 1)
    assert letters[0]["reason_code"] == "wrong_topic" and letters[0]["source"] == "http"


# --- the twin: many assets ------------------------------------------------------------------------------

def test_twin_list_filters_connectivity_and_bbox(city):
    near, far, silent, cabinet = city.import_assets(
        {"id": "SL-1", "kind": "street_light"},
        {"id": "SL-2", "kind": "street_light", "lat": LAT + 0.02, "lon": LON + 0.02},
        {"id": "SL-3", "kind": "street_light", "lat": LAT - 0.02, "lon": LON - 0.02},
        {"id": "CAB-1", "kind": "lighting_cabinet", "lat": LAT + 0.001, "lon": LON})
    ts = utcnow().replace(microsecond=0) - dt.timedelta(seconds=30)
    city.publish([(near, "telemetry", reading(ts, power_w=11.0)), (far, "telemetry", reading(ts, power_w=22.0)),
                  (cabinet, "telemetry", reading(ts, mains="fault"))])
    for asset in (near, far, cabinet):
        city.wait_state(asset, lambda s: True, "reported")

    everything = twin_list(city)
    assert ids(everything) == sorted([near, far, silent, cabinet])
    by_id = {item["id"]: item for item in everything}
    assert by_id[silent]["state"] is None
    first = by_id[near]
    assert first["kind"] == "street_light" and first["commune"] == "21231" and first["status"] == "in_service"
    assert (first["lat"], first["lon"]) == (LAT, LON)
    assert first["state"]["values"] == {"power_w": 11.0} and first["state"]["connectivity"] == "online"
    assert dt.datetime.fromisoformat(first["state"]["ts"]) == ts

    assert ids(twin_list(city, kind="street_light")) == sorted([near, far, silent])
    assert ids(twin_list(city, connectivity="online")) == sorted([near, far, cabinet])
    assert ids(twin_list(city, connectivity="never")) == [silent]
    assert ids(twin_list(city, connectivity="offline")) == []
    assert ids(twin_list(city, kind="street_light", connectivity="online")) == sorted([near, far])
    box = f"{LON - 0.005},{LAT - 0.005},{LON + 0.005},{LAT + 0.005}"
    assert ids(twin_list(city, bbox=box)) == sorted([near, cabinet])
    assert ids(twin_list(city, bbox=box, kind="street_light")) == [near]
    nearest = twin_list(city, near=f"{LAT},{LON}", radius_m=500)
    assert [item["id"] for item in nearest] == [near, cabinet] and nearest[0]["distance_m"] < nearest[1]["distance_m"]

    seen, cursor = [], None
    while True:
        r = city.client.get("/api/v1/twin", params={"q": city.uid, "limit": 3, **({"cursor": cursor} if cursor else {})},
                            headers=city.headers("operator"))
        assert r.status_code == 200, r.text
        seen += [item["id"] for item in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted([near, far, silent, cabinet])


# --- the twin: one asset's time series ------------------------------------------------------------------

def test_series_raw_and_downsampled(city):
    light, = city.import_assets({"id": "SL-1", "kind": "street_light"})
    base = utcnow().replace(second=0, microsecond=0) - dt.timedelta(minutes=10)
    plan = [(0, {"power_w": 10.0}), (15, {"power_w": 20.0}), (20, {"dimming_pct": 60}), (30, {"power_w": 30.0}),
            (45, {"power_w": 40.0, "dimming_pct": 70}), (60, {"power_w": 50.0}), (75, {"power_w": 70.0}),
            (130, {"power_w": 5.0})]
    city.publish([(light, "telemetry", reading(base + dt.timedelta(seconds=s), **values)) for s, values in plan])
    eventually(lambda: len(city.points(light)) == len(plan), "every reading in the series")

    window = {"from": iso(base), "to": iso(base + dt.timedelta(seconds=130))}  # "to" is excluded
    raw = city.points(light, **window)
    assert [(dt.datetime.fromisoformat(p["ts"]), p["values"]) for p in raw] == \
        [(base + dt.timedelta(seconds=s), values) for s, values in plan[:-1]]
    power = city.points(light, metric="power_w", **window)
    assert [p["value"] for p in power] == [10.0, 20.0, 30.0, 40.0, 50.0, 70.0]
    assert city.points(light, **{"from": iso(base + dt.timedelta(seconds=1)), "to": iso(base + dt.timedelta(seconds=16))}) \
        == [{"ts": raw[1]["ts"], "values": {"power_w": 20.0}}]

    r = city.series(light, bucket="1min", metric="power_w", **{"from": iso(base), "to": iso(base + dt.timedelta(minutes=3))})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["metric"] == "power_w" and body["bucket"] == "1min"
    assert [(dt.datetime.fromisoformat(p["ts"]), p["avg"], p["min"], p["max"], p["count"]) for p in body["points"]] == [
        (base, 25.0, 10.0, 40.0, 4), (base + dt.timedelta(minutes=1), 60.0, 50.0, 70.0, 2),
        (base + dt.timedelta(minutes=2), 5.0, 5.0, 5.0, 1)]
    r = city.series(light, bucket="1h", metric="dimming_pct", **{"from": iso(base), "to": iso(base + dt.timedelta(hours=1))})
    assert [(p["avg"], p["count"]) for p in r.json()["points"]] == [(65.0, 2)]


def test_twin_and_series_parameters_are_checked(city):
    light, = city.import_assets({"id": "SL-1", "kind": "street_light"})
    now = utcnow()
    day = {"from": iso(now - dt.timedelta(days=1)), "to": iso(now)}
    for params, field in (({"bucket": "fortnight", "metric": "power_w"}, "bucket"),
                          ({"bucket": "0min", "metric": "power_w"}, "bucket"),
                          ({"bucket": "1min"}, "metric"),
                          ({"metric": "colour"}, "metric"),
                          ({"bucket": "1min", "metric": "power_state"}, "metric"),  # text: cannot be averaged
                          ({"bucket": "1s", "metric": "power_w"}, "bucket")):        # 86,400 buckets
        body = problem(city.series(light, **{**day, **params}), 400)
        assert body.get("field") == field, (params, body)
    problem(city.series(light, **{"from": day["to"], "to": day["from"]}), 400)
    problem(city.series(light, **{"from": "2026-01-01T00:00:00", "to": "2026-01-02T00:00:00"}), 400)  # no time zone
    problem(city.series(light, **{"from": "yesterday", "to": day["to"]}), 422)
    problem(city.client.get(f"/api/v1/twin/{light}/series", headers=city.headers()), 422)  # no period at all
    problem(city.series(city.id("NOPE"), **day), 404)
    problem(city.client.get(f"/api/v1/twin/{city.id('NOPE')}", headers=city.headers()), 404)
    for params, status in (({"kind": "spaceship"}, 400), ({"bbox": "1,2,3"}, 400), ({"bbox": "5,47,4,48"}, 400),
                           ({"connectivity": "asleep"}, 422), ({"cursor": "not-a-cursor!"}, 400), ({"limit": 0}, 422)):
        problem(city.client.get("/api/v1/twin", params=params, headers=city.headers()), status)
    for params, status in (({"reason": "bored"}, 400), ({"since": "2026-01-01T00:00:00"}, 400)):
        problem(city.client.get("/api/v1/ingest/dead-letters", params=params, headers=city.headers()), status)
    problem(city.client.get("/api/v1/twin", headers={}), 401)
    problem(city.client.get("/api/v1/ingest/dead-letters", headers=city.headers("read_only")), 403)


def test_restricted_kinds_are_hidden_from_operators(city):
    camera, light = city.import_assets({"id": "CAM-1", "kind": "camera"}, {"id": "SL-1", "kind": "street_light"})
    ts = utcnow().replace(microsecond=0) - dt.timedelta(seconds=20)
    city.publish([(camera, "telemetry", reading(ts, status="online", recording=True)),
                  (camera, "telemetry", reading(ts, status="smashed")),
                  (light, "telemetry", reading(ts, power_w=9.0))])
    city.wait_state(camera, lambda s: s["values"] == {"status": "online", "recording": True}, "the camera's state")
    city.wait_state(light, lambda s: True, "the light's state")
    city.wait_dead_letters(camera, 1)

    for role in ("police", "supervisor", "admin"):
        assert city.twin(camera, role)["state"]["values"]["recording"] is True
        assert ids(twin_list(city, role)) == sorted([camera, light])
        assert city.series(camera, role).status_code == 200
    for role in ("operator", "read_only", "service_coordinator"):
        problem(city.client.get(f"/api/v1/twin/{camera}", headers=city.headers(role)), 404)
        problem(city.series(camera, role), 404)
        assert ids(twin_list(city, role)) == [light]
        assert twin_list(city, role, kind="camera") == []
    assert [d["reason_code"] for d in city.dead_letters(camera, "police")] == ["invalid_value"]
    assert city.dead_letters(camera, "operator") == []


def test_device_events_are_listed_newest_first_and_filtered(app_client, auth, stack, uid):
    """Events a device reported (applied by the ingest worker) through GET /api/v1/twin/{id}/events."""
    import asyncio
    import datetime as dt
    import json as _json
    import time as _time

    import nats as _nats

    admin = auth("admin")
    body = f"id,kind,name,lat,lon\n{uid}-EV-1,information_panel,Panel,47.3220,5.0415\n".encode()
    assert app_client.post("/api/v1/assets/import", content=body, headers={**admin, "Content-Type": "text/csv"}).status_code == 200
    t0 = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=30)

    async def publish() -> None:
        nc = await _nats.connect(stack.endpoints.nats_url)
        js = nc.jetstream()
        for i, code in enumerate(("pixel_failure", "power_loss", "pixel_failure")):
            ts = (t0 + dt.timedelta(seconds=i)).isoformat()
            await js.publish(f"citypilot.v1.{uid}-EV-1.event", _json.dumps({"ts": ts, "code": code, "severity": "minor"}).encode())
        await nc.close()

    asyncio.run(publish())
    deadline = _time.monotonic() + 10
    items = []
    while _time.monotonic() < deadline:
        items = app_client.get(f"/api/v1/twin/{uid}-EV-1/events", headers=auth("operator")).json()["items"]
        if len(items) == 3:
            break
        _time.sleep(0.2)
    assert [i["code"] for i in items] == ["pixel_failure", "power_loss", "pixel_failure"][::-1]
    only = app_client.get(f"/api/v1/twin/{uid}-EV-1/events", params={"code": "power_loss"}, headers=auth("operator")).json()
    assert [i["code"] for i in only["items"]] == ["power_loss"]
    bad = app_client.get(f"/api/v1/twin/{uid}-EV-1/events", params={"from": "2026-11-21T22:00:00"}, headers=admin)
    assert bad.status_code == 400 and bad.headers["content-type"].startswith("application/problem+json")


def test_the_map_snapshot_is_columnar_and_hides_what_a_role_may_not_see(city):
    light, camera, cabinet = city.import_assets({"id": "SL-M", "kind": "street_light", "lat": 47.3301, "lon": 5.0402},
                                                {"id": "CAM-M", "kind": "camera"}, {"id": "CAB-M", "kind": "lighting_cabinet"})
    city.publish([(light, "telemetry", reading(utcnow() - dt.timedelta(seconds=5), fault="lamp_failure"))])
    city.wait_state(light, lambda s: True, "the light's state")

    def snapshot(role: str) -> dict[str, Any]:
        r = city.client.get("/api/v1/twin/map", headers=city.headers(role))
        assert r.status_code == 200, r.text
        return r.json()

    def row(doc: dict[str, Any], asset: str) -> dict[str, Any] | None:
        if asset not in doc["ids"]:
            return None
        i = doc["ids"].index(asset)
        return {"kind": doc["kinds"][doc["kind"][i]], "lon": doc["lon"][i], "lat": doc["lat"][i],
                "state": doc["states"][doc["state"][i]], "alarm": doc["severities"][doc["alarm"][i]]}

    police = snapshot("police")
    assert police["count"] == len(police["ids"]) == len(police["lon"]) == len(police["state"])
    assert row(police, camera) == {"kind": "camera", "lon": LON, "lat": LAT, "state": "never", "alarm": "none"}
    assert row(police, cabinet)["state"] == "never"
    light_row = eventually(lambda: (r := row(snapshot("operator"), light)) and r["alarm"] == "minor" and r,
                           "the lamp alarm on the map")
    assert light_row == {"kind": "street_light", "lon": 5.0402, "lat": 47.3301, "state": "online", "alarm": "minor"}
    operator = snapshot("operator")
    assert row(operator, camera) is None and "camera" not in operator["kinds"]
    problem(city.client.get("/api/v1/twin/map", params={"kind": "tram"}, headers=city.headers()), 400)
    problem(city.client.get("/api/v1/twin/map"), 401)


def test_large_documents_are_compressed_for_clients_that_accept_it(city):
    """The OpenAPI document (well over 32 KB) stands for the map snapshot at city scale."""
    plain = city.client.get("/api/openapi.json", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    zipped = city.client.get("/api/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.json() == plain.json()
    assert int(zipped.headers["content-length"]) < len(plain.content) / 3
    small = city.client.get("/healthz", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers  # not worth it under 32 KB
