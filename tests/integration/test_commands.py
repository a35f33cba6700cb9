"""Commands end to end: the API, the safety interlocks, delivery to a device over the bus, its answers
through the ingest stream, retries, time-outs, confirmation, four-eyes approval, follow-ups, the journal.

The device here is a protocol client of our own (it subscribes to its command subject and answers on
its cmd-ack channel, as docs/protocol.md says); the simulator's devices are tested against the same
protocol in test_sim.py and, over MQTT, in test_demo.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from typing import Any, Callable

import nats
import pytest

from citypilot.ingest import protocol

from .conftest import City, eventually, iso, problem, reading, utcnow

Answer = Callable[[dict[str, Any]], list[dict[str, Any]]]


def done(cmd: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": cmd["id"], "asset": cmd.get("asset"), "status": "done"}]


class Device:
    """A device (or gateway) on the bus: it records the commands it receives and answers with ``answer``."""

    def __init__(self, nats_url: str, device: str, answer: Answer | None = done) -> None:
        self.device = device
        self.answer = answer
        self.received: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(nats_url), self.loop).result(10)

    async def _start(self, url: str) -> None:
        self.nc = await nats.connect(url)
        self.js = self.nc.jetstream()

        async def on_command(msg: Any) -> None:
            cmd = json.loads(msg.data)
            self.received.append(cmd)
            for ack in (self.answer(cmd) if self.answer else []):
                await self.send_ack(ack)

        await self.nc.subscribe(protocol.COMMAND_TOPIC.format(device=self.device).replace("/", "."), cb=on_command)
        await self.nc.flush()

    async def send_ack(self, ack: dict[str, Any]) -> None:
        await self.js.publish(protocol.subject(self.device, "cmd-ack"), json.dumps({"ts": iso(utcnow()), **ack}).encode())

    def ack(self, ack: dict[str, Any] | bytes) -> None:
        async def send() -> None:
            if isinstance(ack, bytes):
                await self.js.publish(protocol.subject(self.device, "cmd-ack"), ack)
            else:
                await self.send_ack(ack)
        asyncio.run_coroutine_threadsafe(send(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.nc.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def devices(stack: Any) -> Any:
    opened: list[Device] = []

    def make(device: str, answer: Answer | None = done) -> Device:
        d = Device(stack.endpoints.nats_url, device, answer)
        opened.append(d)
        return d

    yield make
    for d in opened:
        d.close()


def lighting(city: City, lights: int = 3, street_type: str | None = None, prefix: str = "") -> tuple[str, list[str]]:
    """A cabinet and its lights, all reporting (online)."""
    ids = city.import_assets({"id": f"{prefix}CAB", "kind": "lighting_cabinet"},
                             *({"id": f"{prefix}SL-{i}", "kind": "street_light", "reported_by": f"{prefix}CAB"}
                               for i in range(lights)))
    cabinet, lights_ = ids[0], ids[1:]
    if street_type:
        for light in lights_:
            r = city.client.patch(f"/api/v1/assets/{light}", json={"attributes": {"street_type": street_type}},
                                  headers=city.headers())
            assert r.status_code == 200, r.text
    ts = utcnow() - dt.timedelta(seconds=5)
    city.publish([(cabinet, "telemetry", json.dumps({"ts": iso(ts), "readings": [
        {"asset": cabinet, "values": {"mains": "ok"}},
        *({"asset": light, "values": {"power_state": "on", "dimming_pct": 100, "fault": "none"}} for light in lights_)]}).encode())])
    for light in lights_:
        city.wait_state(light, lambda s: True, "reported by its cabinet")
    return cabinet, lights_


def ask(city: City, role: str = "operator", key: str | None = None, **body: Any) -> Any:
    body.setdefault("reason", "test: evening programme")
    headers = {**city.headers(role), **({"Idempotency-Key": key} if key else {})}
    return city.client.post("/api/v1/commands", json=body, headers=headers)


def batch_of(city: City, batch_id: str, role: str = "operator") -> dict[str, Any]:
    r = city.client.get(f"/api/v1/commands/batches/{batch_id}", headers=city.headers(role))
    assert r.status_code == 200, r.text
    return r.json()


def wait_batch(city: City, batch_id: str, predicate: Callable[[dict[str, Any]], bool], what: str,
               timeout: float = 10) -> dict[str, Any]:
    return eventually(lambda: (lambda b: b if predicate(b) else None)(batch_of(city, batch_id)), what, timeout)


def test_a_dimming_goes_to_the_cabinet_and_the_lights_answer_is_journaled(city, devices, accounts):
    cabinet, lights = lighting(city, 1)
    device = devices(cabinet)
    r = ask(city, command="dim", assets=lights, params={"level_pct": 40})
    assert r.status_code == 201, r.text
    batch = r.json()
    assert batch["status"] == "authorised" and batch["total"] == 1 and r.headers["Location"].endswith(batch["id"])
    final = wait_batch(city, batch["id"], lambda b: b["counts"].get("done") == 1, "the light's answer")
    item = final["items"][0]
    assert item["asset_id"] == lights[0] and item["device_id"] == cabinet and item["attempts"] == 1
    assert [(c["command"], c["asset"], c["params"]) for c in device.received] == [("dim", lights[0], {"level_pct": 40})]
    assert device.received[0]["id"] == item["id"] and dt.datetime.fromisoformat(device.received[0]["expires_at"]) > utcnow()
    wait_batch(city, batch["id"], lambda b: b["status"] == "finished", "the batch finished")
    # The asset's history: the command's outcome, with who asked, why and what the device said.
    r = city.client.get("/api/v1/journal", params={"asset": lights[0], "type": "command.*"}, headers=city.headers())
    assert r.status_code == 200, r.text
    entries = [e for e in r.json()["items"] if e["type"] == "command.done"]
    assert len(entries) == 1 and entries[0]["data"]["requested_by"] == accounts["operator"]
    assert entries[0]["data"]["reason"] == "test: evening programme" and entries[0]["data"]["answer"]["status"] == "done"
    history = city.client.get("/api/v1/commands", params={"asset": lights[0]}, headers=city.headers("read_only")).json()
    assert [c["status"] for c in history["items"]] == ["done"]


@pytest.mark.parametrize("body, status, detail", [
    ({"command": "dim", "params": {"level_pct": 130}}, 422, "params.level_pct: 130 is above the maximum 100"),
    ({"command": "dim", "params": {"level_pct": "high"}}, 422, "params.level_pct: expected a number, got text"),
    ({"command": "dim", "params": {}}, 422, "params.level_pct: required"),
    ({"command": "dim", "params": {"level_pct": 40, "colour": "red"}}, 422, "dim takes no parameter colour"),
    ({"command": "explode", "params": {}}, 422, "street_light takes no command 'explode'"),
])
def test_bad_commands_are_refused_with_the_field_and_nothing_is_sent(city, devices, body, status, detail):
    cabinet, lights = lighting(city, 1)
    device = devices(cabinet)
    before = city.sql("SELECT count(*) FROM command_batches")[0][0]
    assert detail in problem(ask(city, assets=lights, **body), status)["detail"]
    assert city.sql("SELECT count(*) FROM command_batches")[0][0] == before
    time.sleep(0.3)
    assert device.received == []


def test_who_may_command_what(city, devices):
    cabinet, lights = lighting(city, 1)
    devices(cabinet)
    assert problem(ask(city, "read_only", command="dim", assets=lights, params={"level_pct": 50}), 403)
    assert problem(ask(city, "field_agent", command="dim", assets=lights, params={"level_pct": 50}), 403)
    site = city.import_assets({"id": "BOL", "kind": "bollard_site"})[0]
    city.publish([(site, "telemetry", reading(utcnow(), position="raised", fault="none"))])
    city.wait_state(site, lambda s: True, "the bollard reporting")
    refused = problem(ask(city, "operator", command="lower", assets=[site], params={"reason": "delivery"}), 403)
    assert "may not send lower to a bollard_site" in refused["detail"]
    # The service coordinator (of the lighting service) commands his service's equipment only.
    assert ask(city, "service_coordinator", command="dim", assets=lights, params={"level_pct": 50}).status_code == 201
    panel = city.import_assets({"id": "PAN", "kind": "information_panel"})[0]
    city.publish([(panel, "telemetry", reading(utcnow(), message="Bienvenue", fault="none"))])
    city.wait_state(panel, lambda s: True, "the panel reporting")
    assert problem(ask(city, "service_coordinator", command="clear", assets=[panel]), 403)  # not in the kind's roles


def test_the_safety_floor_offline_and_retired_assets_are_refused_and_journaled(city, devices, accounts):
    cabinet, lights = lighting(city, 1, street_type="crossing")
    device = devices(cabinet)
    body = problem(ask(city, command="dim", assets=lights, params={"level_pct": 20}), 409)
    assert body["detail"] == "refused: 20 % is below the safety floor of 60 % (crossing)" and body["batch_id"]
    assert "never switched off" in problem(ask(city, command="switch", assets=lights, params={"state": "off"}), 409)["detail"]
    assert ask(city, command="dim", assets=lights, params={"level_pct": 60}).status_code == 201
    entries = city.client.get("/api/v1/journal", params={"asset": lights[0], "type": "command.refused"},
                              headers=city.headers()).json()["items"]
    assert len(entries) == 2 and all(e["actor"] == accounts["operator"] for e in entries)

    never = city.import_assets({"id": "SL-NEW", "kind": "street_light"})[0]
    assert "has never reported" in problem(ask(city, command="dim", assets=[never], params={"level_pct": 50}), 409)["detail"]
    retired = city.client.post(f"/api/v1/assets/{lights[0]}/retire", json={"reason": "pole knocked down"},
                               headers=city.headers())
    assert retired.status_code == 200, retired.text
    assert "is retired" in problem(ask(city, command="dim", assets=lights, params={"level_pct": 80}), 409)["detail"]
    city.sql("UPDATE twin SET connectivity = 'offline', offline_since = now() WHERE asset_id = %s", (never,))
    city.sql("UPDATE twin SET connectivity = 'offline', offline_since = now() WHERE asset_id = %s", (cabinet,))
    assert "is offline" in problem(ask(city, "supervisor", command="switch", assets=[cabinet], params={"state": "on"}), 409)["detail"]
    time.sleep(0.3)
    assert [c["params"] for c in device.received] == [{"level_pct": 60}]  # only the safe one went out


def test_a_zone_is_confirmed_by_its_sender_and_tracked_per_asset(city, devices):
    cabinet, lights = lighting(city, 4)
    device = devices(cabinet, lambda cmd: [] if cmd["asset"] == lights[3] else
                     [{"id": cmd["id"], "asset": cmd["asset"], "status": "failed", "reason": "driver does not answer"}]
                     if cmd["asset"] == lights[2] else done(cmd))
    r = ask(city, command="dim", kind="street_light", reported_by=cabinet, params={"level_pct": 50})
    batch = r.json()
    assert r.status_code == 201 and batch["status"] == "pending_confirmation" and batch["total"] == 4, r.text
    time.sleep(0.3)
    assert device.received == []
    assert problem(city.client.post(f"/api/v1/commands/batches/{batch['id']}/confirm", headers=city.headers("supervisor")),
                   403)["detail"] == "only the person who asked may confirm"
    r = city.client.post(f"/api/v1/commands/batches/{batch['id']}/confirm", headers=city.headers("operator"))
    assert r.status_code == 200 and r.json()["status"] == "authorised", r.text
    final = wait_batch(city, batch["id"], lambda b: b["status"] == "finished", "every light answered or timed out")
    by_asset = {i["asset_id"]: i for i in final["items"]}
    assert [by_asset[a]["status"] for a in lights] == ["done", "done", "failed", "timed_out"]
    assert by_asset[lights[2]]["reason"] == "driver does not answer"
    assert by_asset[lights[3]]["attempts"] == 2  # sent again once, with the same id
    assert [c["id"] for c in device.received if c["asset"] == lights[3]] == [by_asset[lights[3]]["id"]] * 2
    assert problem(city.client.post(f"/api/v1/commands/batches/{batch['id']}/confirm", headers=city.headers("operator")),
                   409)["type"].endswith("illegal-transition")


def test_the_most_sensitive_commands_need_a_second_person(city, devices, accounts):
    cabinet, _ = lighting(city, 1)
    device = devices(cabinet)
    batch = ask(city, "supervisor", command="switch", assets=[cabinet], params={"state": "off"}).json()
    assert batch["status"] == "pending_confirmation" and batch["approval_needed"] is True
    url = f"/api/v1/commands/batches/{batch['id']}"
    assert city.client.post(url + "/confirm", headers=city.headers("supervisor")).json()["status"] == "pending_approval"
    assert problem(city.client.post(url + "/approve", headers=city.headers("supervisor")), 403)["type"].endswith("four-eyes")
    assert "may not approve" in problem(city.client.post(url + "/approve", headers=city.headers("operator")), 403)["detail"]
    time.sleep(0.3)
    assert device.received == []
    r = city.client.post(url + "/approve", headers=city.headers("admin"))
    assert r.status_code == 200 and r.json()["approved_by"] == accounts["admin"], r.text
    wait_batch(city, batch["id"], lambda b: b["counts"].get("done") == 1, "the cabinet switched")
    types = [e["type"] for e in city.client.get("/api/v1/journal", params={"type": "command.*", "limit": 500},
                                                headers=city.headers()).json()["items"]
             if e["data"].get("batch_id") == batch["id"]]
    assert {"command.requested", "command.confirmed", "command.approved", "command.done"} <= set(types)


def test_a_repeated_request_is_one_command_and_a_repeated_answer_changes_nothing(city, devices):
    cabinet, lights = lighting(city, 1)
    device = devices(cabinet)
    first = ask(city, key="click-1", command="dim", assets=lights, params={"level_pct": 70})
    again = ask(city, key="click-1", command="dim", assets=lights, params={"level_pct": 70})
    assert first.status_code == 201 and again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.json()["replayed"] is True
    assert problem(ask(city, key="click-1", command="dim", assets=lights, params={"level_pct": 10}), 409)["type"].endswith(
        "idempotency-conflict")
    batch = wait_batch(city, first.json()["id"], lambda b: b["counts"].get("done") == 1, "answered")
    assert len(device.received) == 1
    command_id = batch["items"][0]["id"]
    device.ack({"id": command_id, "asset": lights[0], "status": "failed", "reason": "late and contradictory"})
    time.sleep(1.0)
    item = batch_of(city, first.json()["id"])["items"][0]
    assert item["status"] == "done" and item["reason"] is None
    outcomes = city.sql("SELECT count(*) FROM journal WHERE type LIKE 'command.%%' AND data->>'command_id' = %s",
                        (command_id,))[0][0]
    assert outcomes == 1


def test_answers_to_commands_never_sent_are_dead_lettered_and_change_nothing(city, devices):
    cabinet, lights = lighting(city, 1)
    other_cabinet, _ = lighting(city, 1, prefix="B-")
    mine = devices(cabinet, answer=None)
    intruder = devices(other_cabinet, answer=None)
    batch = ask(city, command="dim", assets=lights, params={"level_pct": 45}).json()
    eventually(lambda: mine.received, "the command delivered")
    command_id = mine.received[0]["id"]
    intruder.ack({"id": command_id, "asset": lights[0], "status": "done"})   # another device's command
    mine.ack({"id": "0123456789abcdef", "asset": lights[0], "status": "done"})  # never sent
    mine.ack(b'{"id": 12, "status": "done"}')                                   # not an acknowledgement
    letters = city.wait_dead_letters(other_cabinet, 1) + city.wait_dead_letters(cabinet, 2)
    reasons = sorted(d["reason"] for d in letters)
    assert "which was sent to another device" in reasons[0] + reasons[1] + reasons[2]
    assert any("which was never sent" in r for r in reasons) and any("not a command acknowledgement" in r for r in reasons)
    assert batch_of(city, batch["id"])["items"][0]["status"] in ("sent", "timed_out")
    assert city.sql("SELECT count(*) FROM journal WHERE type = 'command.unknown_ack' AND data->>'command_id' = %s",
                    (command_id,))[0][0] == 1


def test_junctions_get_only_safe_modes_and_checked_plans(city, devices):
    junction = city.import_assets({"id": "TL", "kind": "traffic_controller"})[0]
    city.publish([(junction, "telemetry", reading(utcnow(), mode="normal", plan=3, fault="none"))])
    city.wait_state(junction, lambda s: True, "the junction reporting")
    device = devices(junction)
    assert "takes no command 'set_group'" in problem(ask(city, command="set_group", assets=[junction],
                                                         params={"group": "V1"}), 422)["detail"]
    assert "not a checked plan of this junction" in problem(
        ask(city, command="select_plan", assets=[junction], params={"plan": 42}), 409)["detail"]
    batch = ask(city, command="set_mode", assets=[junction], params={"mode": "flashing_amber"},
                reason="fire brigade crossing").json()
    assert batch["status"] == "pending_confirmation"
    confirmed = city.client.post(f"/api/v1/commands/batches/{batch['id']}/confirm", headers=city.headers("operator"))
    assert confirmed.status_code == 200, confirmed.text
    wait_batch(city, batch["id"], lambda b: b["counts"].get("done") == 1, "flashing amber")
    assert device.received[0]["params"] == {"mode": "flashing_amber"}


def test_a_lowered_bollard_rises_again_by_itself(city, devices):
    site = city.import_assets({"id": "BOL", "kind": "bollard_site"})[0]
    city.publish([(site, "telemetry", reading(utcnow(), position="raised", fault="none"))])
    city.wait_state(site, lambda s: True, "the bollard reporting")
    device = devices(site)
    assert "is not one of" in problem(ask(city, "police", command="lower", assets=[site], params={"reason": "party"}), 422)["detail"]
    batch = ask(city, "police", command="lower", assets=[site], params={"reason": "fire_brigade", "duration_s": 10}).json()
    confirmed = city.client.post(f"/api/v1/commands/batches/{batch['id']}/confirm", headers=city.headers("police"))
    assert confirmed.status_code == 200, confirmed.text
    wait_batch(city, batch["id"], lambda b: b["counts"].get("done") == 1, "lowered", timeout=10)
    eventually(lambda: [c for c in device.received if c["command"] == "raise"], "raised again by the control centre",
               timeout=20)
    assert device.received[0]["params"] == {"reason": "fire_brigade", "duration_s": 10}
    history = city.client.get("/api/v1/commands", params={"asset": site}, headers=city.headers("police")).json()["items"]
    assert [c["command"] for c in history][:2] == ["raise", "lower"]


def test_a_panel_message_is_previewed_then_sent_with_its_expiry(city, devices):
    panels = city.import_assets({"id": "PAN-1", "kind": "information_panel"}, {"id": "PAN-2", "kind": "information_panel"})
    for panel in panels:
        city.publish([(panel, "telemetry", reading(utcnow(), message="Bienvenue", fault="none"))])
        city.wait_state(panel, lambda s: True, "the panel reporting")
    first, second = devices(panels[0]), devices(panels[1])
    body = {"command": "display", "assets": panels, "params": {"message": "Crue : quais fermés", "duration_s": 3600}}
    r = city.client.post("/api/v1/commands/preview", json=body, headers=city.headers())
    assert r.status_code == 200, r.text
    assert r.json()["preview"] == {"message": "Crue : quais fermés", "duration_s": 3600}
    assert r.json()["sendable"] == 2 and r.json()["needs_confirmation"] is True
    assert "control characters" in problem(ask(city, command="display", assets=panels,
                                               params={"message": "a\x1bb"}), 422)["detail"]
    batch = ask(city, **body).json()
    confirmed = city.client.post(f"/api/v1/commands/batches/{batch['id']}/confirm", headers=city.headers("operator"))
    assert confirmed.status_code == 200, confirmed.text
    wait_batch(city, batch["id"], lambda b: b["counts"].get("done") == 2, "both panels")
    assert first.received[0]["params"]["message"] == second.received[0]["params"]["message"] == "Crue : quais fermés"


def test_a_route_of_junctions_goes_to_flashing_amber_and_back(city, devices):
    # three junctions along an ambulance's way east, a few metres off it, and one a kilometre away
    spots = {"TL-E": 5.0450, "TL-W": 5.0350, "TL-M": 5.0400}
    ids = city.import_assets(*({"id": s, "kind": "traffic_controller", "lat": 47.32012, "lon": lon} for s, lon in spots.items()),
                             {"id": "TL-FAR", "kind": "traffic_controller", "lat": 47.33, "lon": 5.04})
    city.publish([(j, "telemetry", reading(utcnow(), mode="normal", plan=3, fault="none")) for j in ids])
    for j in ids:
        city.wait_state(j, lambda s: True, "the junction reporting")
    east, west, middle, far = ids
    device = {j: devices(j) for j in ids}
    path = [[5.0300, 47.3200], [5.0500, 47.3200]]
    route = {"command": "set_mode", "kind": "traffic_controller", "path": path,
             "params": {"mode": "flashing_amber", "revert_after_s": 10}}
    preview = city.client.post("/api/v1/commands/preview", json=route, headers=city.headers("operator"))
    assert preview.status_code == 200, preview.text
    assert preview.json()["route"] == [west, middle, east] and preview.json()["needs_confirmation"]
    batch = ask(city, **route, reason="ambulance to the CHU").json()
    assert batch["total"] == 3
    confirmed = city.client.post(f"/api/v1/commands/batches/{batch['id']}/confirm", headers=city.headers("operator"))
    assert confirmed.status_code == 200, confirmed.text
    wait_batch(city, batch["id"], lambda b: b["counts"].get("done") == 3, "the route on flashing amber")
    for j in (west, middle, east):  # what the controller gets is a mode; the way back is the centre's to send
        assert device[j].received[0] == {**device[j].received[0], "command": "set_mode", "params": {"mode": "flashing_amber"}}
    assert device[far].received == []
    for j in (west, middle, east):
        back = eventually(lambda j=j: [c for c in device[j].received if c["params"] == {"mode": "normal"}],
                          f"{j} back to normal by itself", timeout=25)
        assert back[0]["command"] == "set_mode"
    history = city.client.get("/api/v1/commands", params={"asset": middle}, headers=city.headers()).json()["items"]
    assert [(c["command"], c["params"]["mode"]) for c in history][:2] == [("set_mode", "normal"), ("set_mode", "flashing_amber")]
    # the asset's history says who asked and why: the control centre for the way back, the operator first
    assert history[0]["requested_by"] == "system" and "after command" in history[0]["requested_reason"]
    assert history[1]["requested_by"] != "system" and history[1]["requested_reason"] == "ambulance to the CHU"

    assert "not after normal" in problem(ask(city, command="set_mode", assets=[west],
                                             params={"mode": "normal", "revert_after_s": 60}), 409)["detail"]
    assert problem(ask(city, **{**route, "path": [[5.03, 47.32]]}), 422)["field"] == "path"
    assert problem(ask(city, **{**route, "path": [[5.03, 47.32], [500, 47.32]]}), 422)["field"] == "path"
    assert problem(ask(city, command="set_mode", kind="traffic_controller", communes=["Dijon"], within_m=50,
                       params={"mode": "all_red"}), 422)["field"] == "within_m"


def test_a_newer_command_supersedes_an_automatic_follow_up(city, devices):
    site = city.import_assets({"id": "BOL-2", "kind": "bollard_site"})[0]
    city.publish([(site, "telemetry", reading(utcnow(), position="raised", fault="none"))])
    city.wait_state(site, lambda s: True, "the bollard reporting")
    device = devices(site)
    batches = []
    for duration in (10, 600):  # lowered for a delivery, then again for longer: the first raise must not come
        batch = ask(city, "police", command="lower", assets=[site],
                    params={"reason": "delivery", "duration_s": duration}).json()
        confirmed = city.client.post(f"/api/v1/commands/batches/{batch['id']}/confirm", headers=city.headers("police"))
        assert confirmed.status_code == 200, confirmed.text
        wait_batch(city, batch["id"], lambda b: b["counts"].get("done") == 1, "lowered")
        batches.append(batch)

    def superseded() -> list[dict[str, Any]]:
        r = city.client.get("/api/v1/journal", params={"asset": site, "type": "command.follow_up_superseded"},
                            headers=city.headers())
        assert r.status_code == 200, r.text
        return r.json()["items"]

    entry = eventually(superseded, "the first lowering's raise superseded", timeout=25)[0]
    assert entry["data"]["command_id"] == batches[0]["items"][0]["id"]
    assert entry["data"]["superseded_by"] == batches[1]["items"][0]["id"]
    time.sleep(1)
    assert [c["command"] for c in device.received] == ["lower", "lower"], "the bollards stay down"


def test_a_street_is_named_without_its_numbers(city):
    made = []
    for suffix, address in (("SL-M1", "3 rue Monge, Dijon"), ("SL-M2", "12 bis Rue Monge, Dijon"),
                            ("SL-C1", "3 rue Chabot-Charny, Dijon")):
        r = city.client.post("/api/v1/assets", headers=city.headers(), json={
            "id": city.id(suffix), "kind": "street_light", "name": suffix, "lat": 47.3220, "lon": 5.0415,
            "address": address, "attributes": {"street_type": "commercial"}})
        assert r.status_code == 201, r.text
        made.append(city.id(suffix))
    body = {"command": "dim", "kind": "street_light", "street": " rue monge", "params": {"level_pct": 60},
            "communes": ["21231"]}
    preview = city.client.post("/api/v1/commands/preview", json=body, headers=city.headers("operator"))
    assert preview.status_code == 200, preview.text
    ours = {r["asset_id"] for r in preview.json()["refused"]} & set(made)
    assert ours == set(made[:2]), "both numbers of rue Monge, not rue Chabot-Charny"
    assert all("never reported" in r["reason"] for r in preview.json()["refused"] if r["asset_id"] in ours)
