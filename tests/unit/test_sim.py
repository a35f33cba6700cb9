"""The virtual city without a broker: its equipment, its day, its incidents, its scenarios and its commands."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from typing import Any

import numpy as np
import pytest

from citypilot.equipment.catalog import default_catalog
from citypilot.geo.communes import metropole
from citypilot.registry.service import parse_and_validate
from citypilot.sim import simulation as simulation_module
from citypilot.sim.city import DIJON, M_PER_DEG_LAT, M_PER_DEG_LON, build_city
from citypilot.sim.clock import PARIS, SimClock
from citypilot.sim.lighting import Lighting
from citypilot.sim.model import Outgoing, Schedule
from citypilot.sim.registry_file import registry_bytes
from citypilot.sim.scenarios import SCENARIOS
from citypilot.sim.simulation import Simulation

KIND_COUNTS = {"street_light": DIJON.street_lights, "lighting_cabinet": DIJON.lighting_cabinets,
               "traffic_controller": DIJON.junctions, "bus": DIJON.buses, "service_vehicle": DIJON.service_vehicles,
               "camera": DIJON.cameras, "bollard_site": DIJON.bollard_sites, "information_panel": DIJON.information_panels,
               "building_alarm_panel": DIJON.buildings, "parking_sensor": DIJON.parking_sensors,
               "air_quality_station": DIJON.air_quality_stations}


@pytest.fixture(scope="module")
def city():
    return build_city(seed=1, scale=1)


class Wall:
    """A wall clock turned by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(city, start: dt.datetime, scenario: str = "normal", speed: float = 1.0) -> tuple[Simulation, Wall]:
    wall = Wall()
    return Simulation(city, SimClock(start, speed, wall), scenario), wall


def run(sim: Simulation, wall: Wall, seconds: float, tick: float = 0.25, since: float = 0.0) -> list[Outgoing]:
    """Step the city for ``seconds`` of wall time from run second ``since``; everything it sent."""
    out = []
    steps = int(seconds / tick)
    for k in range(steps):
        wall.t += tick
        out += sim.step(since + (k + 1) * tick)
    return out


def local(year: int, month: int, day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=PARIS)


# --- the city -------------------------------------------------------------------------------------

def test_the_city_has_dijon_metropoles_equipment_and_imports_as_it_is(city):
    assert city.counts() == KIND_COUNTS
    assert len({a.id for a in city.assets}) == len(city.assets)
    for fmt in ("csv", "geojson"):  # every asset passes the registry's own checks (inside a commune, typed attributes)
        sheets, _ = parse_and_validate(registry_bytes(city, fmt), fmt, default_catalog(), metropole())
        assert len(sheets) == len(city.assets)
    communes = Counter(s.commune for s in sheets)
    assert len(communes) >= 20, "assets spread over the metropole's communes"
    assert communes.most_common(1)[0][0] == "21231", "Dijon has the most"


def test_the_same_seed_gives_the_same_city_and_another_seed_another(city):
    again = build_city(seed=1, scale=1)
    assert [(a.id, a.lon, a.lat, a.attributes) for a in again.assets] == [(a.id, a.lon, a.lat, a.attributes) for a in city.assets]
    other = build_city(seed=2, scale=1)
    assert [(a.lon, a.lat) for a in other.assets] != [(a.lon, a.lat) for a in city.assets]


def test_lights_stand_in_rows_near_their_cabinet(city):
    by_id = {a.id: a for a in city.assets}
    spacings = []
    for cabinet, lights in list(city.lights_of.items())[:200]:
        c = by_id[cabinet]
        assert all(by_id[light].reported_by == cabinet for light in lights)
        for light in lights:
            a = by_id[light]
            assert math.hypot((a.lon - c.lon) * M_PER_DEG_LON, (a.lat - c.lat) * M_PER_DEG_LAT) < 2500
        for a, b in zip(lights, lights[1:]):
            pa, pb = by_id[a], by_id[b]
            if pa.address.split(" ", 1)[1] == pb.address.split(" ", 1)[1]:  # same street: the next pole
                spacings.append(math.hypot((pa.lon - pb.lon) * M_PER_DEG_LON, (pa.lat - pb.lat) * M_PER_DEG_LAT))
    assert 20 < float(np.median(spacings)) < 45


def test_scale_multiplies_every_kind():
    big = build_city(seed=1, scale=2)
    assert big.counts() == {kind: 2 * n for kind, n in KIND_COUNTS.items()}


@pytest.mark.parametrize("scale", [0, -1, 51])
def test_an_absurd_scale_is_refused(scale):
    with pytest.raises(ValueError, match="scale"):
        build_city(seed=1, scale=scale)


# --- time, sun and reports ------------------------------------------------------------------------

def test_every_device_reports_within_seconds_of_the_start_then_at_its_interval():
    devices = {f"CAB-{i:05d}": 300.0 for i in range(1000)} | {"BUS-1": 5.0, "PS-1": 3600.0}
    schedule = Schedule(devices)
    times: dict[str, list[float]] = {}
    for k in range(0, 2000):  # 1,000 s, a call every half second
        for device in schedule.due(k * 0.5):
            times.setdefault(device, []).append(k * 0.5)
    assert set(times) == set(devices) and all(t[0] <= 10 for t in times.values())
    assert len(times["BUS-1"]) == pytest.approx(200, abs=2) and len(times["PS-1"]) == 1
    cabinets = [t for d, t in times.items() if d.startswith("CAB-")]
    assert all(t[2] - t[1] == pytest.approx(300, abs=0.5) and t[1] - t[0] <= 300.5 for t in cabinets)
    # After the first reports, their phases spread over the interval: no burst every five minutes.
    seconds = Counter(int(t[1] // 10) for t in cabinets)
    assert max(seconds.values()) < 80, "at most a few per cent of the cabinets in any 10 s"
    schedule.silent.add("BUS-1")
    assert "BUS-1" not in schedule.due(10_000)


def lights_of_cabinet(messages: list[Outgoing], cabinet: str) -> list[dict[str, Any]]:
    reports = [m for m in messages if m.device == cabinet and m.channel == "telemetry"]
    assert reports, f"{cabinet} sent no report"
    return [r["values"] for r in reports[-1].payload["readings"][1:]]


def test_lights_are_off_by_day_on_after_sunset_and_dimmed_late_at_night(city):
    cabinet = "CAB-00001"
    for start, expect_on, level in [(local(2026, 6, 21, 13), False, 0.0), (local(2026, 11, 22, 18, 30), True, 100.0),
                                    (local(2026, 11, 22, 23, 30), True, 50.0), (local(2026, 6, 21, 21, 20), False, 0.0)]:
        sim, wall = make(city, start)
        values = [v for v in lights_of_cabinet(run(sim, wall, 12), cabinet) if v["fault"] == "none"]
        assert {v["power_state"] for v in values} == {"on" if expect_on else "off"}, start
        assert {v["dimming_pct"] for v in values} <= {level, 30.0, 50.0} and level in {v["dimming_pct"] for v in values}
        assert all((v["power_w"] > 0) == expect_on for v in values)


def test_the_lights_switch_on_at_dusk_within_minutes_of_sunset(city):
    # Sunset at Dijon on 2026-11-22 is 16:59; cabinets differ by up to seven minutes.
    sim, wall = make(city, local(2026, 11, 22, 16, 40), speed=60)
    before = lights_of_cabinet(run(sim, wall, 12), "CAB-00001")  # 12 s wall = 12 simulated minutes: 16:52
    assert before[0]["power_state"] == "off"
    after = lights_of_cabinet(run(sim, wall, 20, since=12), "CAB-00001")  # 17:12
    assert after[0]["power_state"] == "on"


def test_lamps_fail_at_their_yearly_rate_and_a_backlog_awaits_repair(city):
    start = local(2026, 3, 1, 12)
    lighting = Lighting(city, np.random.default_rng(5), start)
    assert 5 <= int((lighting.fault != 0).sum()) <= 80, "a few lights already wait for the contractor"
    events = lighting.advance(start + dt.timedelta(days=30), 30 * 86_400)
    failures = [e for e in events if e.payload["code"] in ("lamp_failure", "driver_failure")]
    expected = DIJON.street_lights * 0.08 * 30 / 365.25  # about 223
    assert abs(len(failures) - expected) < 5 * math.sqrt(expected)
    reporter = {a.id: a.reported_by for a in city.assets}
    assert all(e.device == reporter[e.payload["asset"]] for e in failures), "a light's failure comes from its cabinet"


def test_buses_move_along_their_lines_by_day_and_rest_at_night(city):
    sim, wall = make(city, local(2026, 11, 23, 10), speed=10)
    messages = run(sim, wall, 12)
    first = {m.device: m.payload["values"] for m in messages if m.device.startswith("BUS-")}
    later = run(sim, wall, 12, since=12)
    last = {m.device: m.payload["values"] for m in later if m.device.startswith("BUS-")}
    moved = [b for b in first if (first[b]["lat"], first[b]["lon"]) != (last[b]["lat"], last[b]["lon"])]
    assert len(first) == DIJON.buses and len(moved) == DIJON.buses
    assert {v["line"] for v in last.values()} == {line.name for line in city.lines}
    night, wall = make(city, local(2026, 11, 23, 3), speed=10)
    quiet = [m.payload["values"] for m in run(night, wall, 12) if m.device.startswith("BUS-")]
    assert quiet and all(v["speed_kmh"] == 0 for v in quiet)


def test_every_message_is_what_the_protocol_and_the_catalogue_accept(city):
    """The payloads pass the ingest's own validation (no dead letter from the simulator)."""
    from citypilot.ingest.normalise import AssetInfo, Limits, normalise

    catalog = default_catalog()
    assets = {a.id: AssetInfo(a.id, a.kind, "in_service", a.reported_by) for a in city.assets}
    for scenario in SCENARIOS:
        sim, wall = make(city, local(2026, 1, 15, 17, 0), scenario, speed=120)
        messages = run(sim, wall, 40)
        assert messages
        received = dt.datetime.now(dt.timezone.utc)
        for m in messages:
            payload = json.dumps({"ts": received.isoformat(), **m.payload}).encode()
            outcome = normalise(m.device, m.channel, payload, received_at=received, lookup=assets.get,
                                catalog=catalog, limits=Limits())
            assert not outcome.rejections, (scenario, m, outcome.rejections)


# --- scenarios ------------------------------------------------------------------------------------

def events(messages: list[Outgoing]) -> Counter:
    return Counter(m.payload["code"] for m in messages if m.channel == "event")


def test_nothing_special_happens_before_the_scenario_starts(city):
    sim, wall = make(city, local(2026, 11, 23, 10), "building_fire")
    assert "fire_alarm" not in events(run(sim, wall, SCENARIOS["building_fire"].delay_s - 1))


def test_flood_darkens_and_silences_the_zone_and_sends_crews(city):
    sim, wall = make(city, local(2026, 11, 23, 21), "flood", speed=10)
    before = run(sim, wall, 25)
    flooded_junctions = [j for j in sim.traffic.by_id if sim.traffic.by_id[j].forced == "off"]
    assert flooded_junctions, "junction controllers in the zone lose power"
    after = run(sim, wall, 120, since=25)
    assert events(before)["mains_failure"] >= 3
    assert not [m for m in after if m.device in flooded_junctions], "a flooded controller is silent"
    cabinet = next(m.device for m in before if m.payload.get("code") == "mains_failure")
    dark = lights_of_cabinet(before + after, cabinet)  # it reported at once, on battery
    assert {v["power_state"] for v in dark} == {"off"}
    crews = [v for v in sim.fleet.vehicles.values() if v.pinned]
    assert {v.service for v in crews} == {"roads", "police"} and len(crews) == 6
    assert all(v.status in ("en_route", "on_site") for v in crews)
    panels = {m.payload["values"]["message"] for m in before + after if m.device.startswith("PAN-") and m.channel == "telemetry"}
    assert any("Inondation" in p for p in panels)


def test_a_cabinet_power_cut_silences_a_group_of_gateways(city):
    sim, wall = make(city, local(2026, 11, 23, 21), "cabinet_power_cut")
    run(sim, wall, 25)
    cut = sorted(sim.lighting.schedule.silent)
    assert len(cut) == 8
    after = run(sim, wall, 400, since=25)  # longer than a cabinet's 300 s interval
    assert not [m for m in after if m.device in cut]
    assert len({m.device for m in after if m.device.startswith("CAB-")}) == DIJON.lighting_cabinets - 8


def test_a_major_accident_puts_its_junction_in_flashing_amber_and_slows_the_buses(city):
    sim, wall = make(city, local(2026, 11, 23, 10), "major_accident")
    out = run(sim, wall, 90)
    junction = next(m.device for m in out if m.payload.get("message", "").startswith("signal pole knocked down"))
    states = [m.payload["values"] for m in out if m.device == junction and m.channel == "telemetry"]
    assert states[-1]["mode"] == "flashing_amber" and states[-1]["fault"] == "lamp_out"
    assert sum(1 for b in sim.fleet.buses.values() if b.slowdown < 1) > 0
    assert sorted(v.service for v in sim.fleet.vehicles.values() if v.pinned) == ["police", "police", "roads"]


def test_a_building_fire_rings_its_alarm_and_lowers_the_bollards_for_the_brigade(city):
    sim, wall = make(city, local(2026, 11, 23, 10), "building_fire")
    out = run(sim, wall, 40)
    assert events(out)["fire_alarm"] >= 1
    burning = next(m.device for m in out if m.payload.get("code") == "fire_alarm" and "zone 2" in m.payload.get("message", ""))
    assert [m.payload["values"]["fire"] for m in out if m.device == burning and m.channel == "telemetry"][-1] == "alarm"
    lowered = [m.payload["values"]["position"] for m in out if m.device.startswith("BOL-") and m.channel == "telemetry"]
    assert "moving" in lowered


def test_snow_puts_the_snow_fleet_on_the_roads_and_makes_the_buses_late(city):
    sim, wall = make(city, local(2026, 1, 10, 22), "snow", speed=60)  # at night: only the snow crews work
    out = run(sim, wall, 60)
    moving = {m.device for m in out if m.device.startswith("SV-") and m.payload["values"]["work_status"] == "en_route"}
    snow = {v.id for v in sim.fleet.vehicles.values() if v.service == "snow"}
    assert snow <= moving | {v.id for v in sim.fleet.vehicles.values() if v.status == "on_site"}
    delays = {m.device: m.payload["values"]["delay_s"] for m in out if m.device.startswith("BUS-")}
    assert sum(delays.values()) / len(delays) > 120, "buses run late in the snow"
    temps = [sim.air.values(station)["temperature_c"] for station in sim.air.items.values()]  # their next reports
    assert max(temps) < 1


# --- commands -------------------------------------------------------------------------------------

@pytest.fixture
def reliable(monkeypatch):
    """Devices that never fail nor lose a command (the real rates are random: tested apart)."""
    monkeypatch.setattr(simulation_module, "COMMAND_FAILURE_RATE", 0.0)
    monkeypatch.setattr(simulation_module, "COMMAND_TIMEOUT_RATE", 0.0)


def command(sim: Simulation, device: str, **body: Any) -> list[Outgoing]:
    return sim.command(device, json.dumps({"id": "c-1", **body}).encode())


@pytest.mark.usefixtures("reliable")
def test_a_light_dims_on_command_and_its_cabinet_acknowledges(city):
    sim, wall = make(city, local(2026, 11, 22, 20))
    run(sim, wall, 12)
    light = city.lights_of["CAB-00002"][3]
    sim.lighting.fault[sim.lighting.light_index[light]] = 0
    ack = command(sim, "CAB-00002", asset=light, command="dim", params={"level_pct": 35})
    assert [(m.device, m.channel, m.payload["status"]) for m in ack] == [("CAB-00002", "cmd-ack", "done")]
    assert ack[0].payload["id"] == "c-1" and ack[0].payload["asset"] == light
    report = run(sim, wall, 1, since=12)
    values = {r["asset"]: r["values"] for r in lights_of_report(report, "CAB-00002")}
    assert values[light]["dimming_pct"] == 35.0


def lights_of_report(messages: list[Outgoing], cabinet: str) -> list[dict[str, Any]]:
    report = [m for m in messages if m.device == cabinet and m.channel == "telemetry"][-1]
    return report.payload["readings"][1:]


@pytest.mark.usefixtures("reliable")
@pytest.mark.parametrize("device, body, reason", [
    ("CAB-00002", {"command": "dim", "asset": "SL-000001", "params": {"level_pct": 10}}, "not on this cabinet"),
    ("CAB-00002", {"command": "apply_programme", "params": {"programme": "disco"}}, "unknown programme"),
    ("TL-0001", {"command": "fly"}, "never sets signal groups"),
    ("TL-0001", {"command": "set_group", "params": {"group": "V1", "aspect": "green"}}, "never sets signal groups"),
    ("TL-0001", {"command": "select_plan", "params": {"plan": 42}}, "not a checked plan"),
    ("BUS-0001", {"command": "stop"}, "no remote commands"),
    ("TL-0001", {"command": 3}, "malformed"),
    ("TL-0001", {"command": "set_mode", "params": {"mode": "normal"}, "expires_at": "2020-01-01T00:00:00Z"}, "expired"),
])
def test_a_command_the_device_cannot_do_is_rejected_with_a_reason(city, device, body, reason):
    sim, wall = make(city, local(2026, 11, 22, 20))
    ack = command(sim, device, **body)
    assert len(ack) == 1 and ack[0].channel == "cmd-ack" and ack[0].payload["status"] == "rejected"
    assert reason in ack[0].payload["reason"]


@pytest.mark.usefixtures("reliable")
def test_garbage_gets_no_answer_and_changes_nothing(city):
    sim, wall = make(city, local(2026, 11, 22, 20))
    assert sim.command("TL-0001", b"\xff not json") == []
    assert sim.command("TL-0001", b'{"command": "set_mode"}') == []  # no id: nothing to acknowledge
    assert sim.command("TL-0001", b"{" + b" " * 10_000 + b"}") == []
    assert sim.command("NOPE-1", b'{"id": "x", "command": "set_mode"}') == []  # not a device of this city


@pytest.mark.usefixtures("reliable")
def test_junction_bollard_and_panel_obey(city):
    sim, wall = make(city, local(2026, 11, 23, 14))
    run(sim, wall, 12)
    assert command(sim, "TL-0003", command="set_mode", params={"mode": "flashing_amber"})[0].payload["status"] == "done"
    assert command(sim, "PAN-001", command="display", params={"message": "Marathon dimanche"})[0].payload["status"] == "done"
    site = "BOL-001"
    sim.bollards.items[site].state["fault"] = "none"
    assert command(sim, site, command="lower", params={"reason": "livraison", "duration_s": 60})[0].payload["status"] == "done"
    out = run(sim, wall, 20, since=12)  # 8 s to move
    last = {m.device: m.payload["values"] for m in out if m.channel == "telemetry" and "values" in m.payload}
    assert last["TL-0003"]["mode"] == "flashing_amber" and last["TL-0003"]["plan"] == 0
    assert last["PAN-001"]["message"] == "Marathon dimanche"
    positions = [m.payload["values"]["position"] for m in out if m.device == site]
    assert positions[0] == "moving" and positions[-1] == "lowered"


def test_some_commands_fail_or_get_no_answer_at_a_small_rate(city):
    sim, wall = make(city, local(2026, 11, 23, 14))
    answers = Counter()
    for k in range(2000):
        ack = sim.command("PAN-002", json.dumps({"id": f"c{k}", "command": "display", "params": {"message": "x"}}).encode())
        answers[ack[0].payload["status"] if ack else "no answer"] += 1
    assert answers["done"] > 1900
    assert 15 <= answers["failed"] <= 70 and 5 <= answers["no answer"] <= 45
