"""Scenarios: what happens to the city, on top of its everyday life, a little after the simulator starts.

Each scenario says what an operator should see in the control room; ``docs/operators/simulator.md``
repeats it. A scenario starts ``Scenario.delay_s`` wall-clock seconds after the simulator (so that the
city is on the map first) and lasts the given simulated time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .model import Outgoing

if TYPE_CHECKING:
    from .simulation import Simulation

FLOOD_CENTRE = (5.0262, 47.3148)       # the Ouche valley, south-west of Dijon's centre
POWER_CUT_CENTRE = (5.0560, 47.3260)   # east of the centre
ACCIDENT_NEAR = (5.0480, 47.3180)      # a busy junction south-east of the centre
FIRE_NEAR = (5.0400, 47.3225)          # a building in the centre


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    operator_sees: str
    begin: Callable[["Simulation", dt.datetime], list[Outgoing]]
    delay_s: float = 20.0


def _normal(sim: "Simulation", now: dt.datetime) -> list[Outgoing]:
    return []


def _snow(sim: "Simulation", now: dt.datetime) -> list[Outgoing]:
    sim.fleet.snow = True
    for vehicle in sim.fleet.vehicles.values():  # the gritters go out at once
        if vehicle.service == "snow" and not vehicle.pinned:
            vehicle.status, vehicle.until_s = "available", 0.0
    for bus in sim.fleet.buses.values():
        bus.slowdown, bus.extra_delay_per_h = 0.6, 400.0
    sim.air.cold = True
    sim.panels.show(sim.panels.items, "Neige : prudence, salage en cours")
    out = []
    for junction in sim.nearest("traffic_controller", sim.centre, 5):  # snow masks the loop detectors
        j = sim.traffic.by_id[junction]
        j.fault, j.fault_until = "detector_fault", now.timestamp() + 6 * 3600
        sim.traffic.urgent.add(junction)
        out.append(Outgoing(junction, "event", {"code": "detector_fault", "severity": "minor",
                                                "message": "loop detector fault (snow)"}))
    return out


def _flood(sim: "Simulation", now: dt.datetime) -> list[Outgoing]:
    out: list[Outgoing] = []
    radius = 900.0
    for cab in sim.within("lighting_cabinet", FLOOD_CENTRE, radius):
        out += sim.lighting.cut_mains(sim.lighting.cabinet_index[cab], now, 12 * 3600)
    for junction in sim.within("traffic_controller", FLOOD_CENTRE, radius):  # without power: silent
        j = sim.traffic.by_id[junction]
        j.forced, j.silent_until = "off", now.timestamp() + 12 * 3600
    sim.parking.schedule.silent.update(sim.within("parking_sensor", FLOOD_CENTRE, radius))  # under water
    for cam in sim.within("camera", FLOOD_CENTRE, radius):
        device = sim.cameras.items[cam]
        sim.cameras._start(device, "flood", now.timestamp() + 12 * 3600, {"status": "offline", "recording": False})
    sim.panels.show(sim.panels.items, "Inondation : secteur de l'Ouche fermé, suivez les déviations")
    sim.fleet.dispatch("roads", 4, *FLOOD_CENTRE)
    sim.fleet.dispatch("police", 2, *FLOOD_CENTRE)
    sim.fleet.slow_buses_near(*FLOOD_CENTRE, radius, 0.3, 900.0)
    return out


def _power_cut(sim: "Simulation", now: dt.datetime) -> list[Outgoing]:
    # Three simulated hours, but at least a quarter of an hour of wall clock: devices report on real
    # clocks, so a silence shorter than a cabinet's interval and grace (7.5 min) could not be noticed.
    duration_s = max(3 * 3600, sim.clock.speed * 900)
    cabinets = sim.nearest("lighting_cabinet", POWER_CUT_CENTRE, 8)
    for cab in cabinets:  # the supply and the modem's battery both gone: the gateways fall silent
        sim.lighting.mains_until[sim.lighting.cabinet_index[cab]] = now.timestamp() + duration_s
    sim.lighting.silence(cabinets, True)
    sim.later(duration_s, lambda s, t: s.lighting.silence(cabinets, False) or [])
    return []


def _accident(sim: "Simulation", now: dt.datetime) -> list[Outgoing]:
    junction = sim.nearest("traffic_controller", ACCIDENT_NEAR, 1)[0]
    lon, lat = sim.positions[junction]
    j = sim.traffic.by_id[junction]
    j.fault, j.fault_until, j.forced = "lamp_out", now.timestamp() + 4 * 3600, "flashing_amber"
    sim.traffic.urgent.add(junction)
    sim.later(4 * 3600, lambda s, t: setattr(j, "forced", None) or [])
    sim.fleet.dispatch("police", 2, lon, lat)
    sim.fleet.dispatch("roads", 1, lon, lat)
    sim.fleet.slow_buses_near(lon, lat, 1500, 0.2, 1200.0)
    sim.panels.show(sim.nearest("information_panel", (lon, lat), 3), "Accident : évitez le secteur, déviation en place")
    return [Outgoing(junction, "event", {"code": "lamp_out", "severity": "major",
                                         "message": "signal pole knocked down: controller in flashing amber"})]


def _fire(sim: "Simulation", now: dt.datetime) -> list[Outgoing]:
    building = sim.nearest("building_alarm_panel", FIRE_NEAR, 1)[0]
    lon, lat = sim.positions[building]
    out = sim.buildings.fire(building, now, 2 * 3600)
    for site in sim.nearest("bollard_site", (lon, lat), 2):  # emergency access for the fire engines
        sim.bollards.command(site, site, "lower", {"reason": "fire brigade access", "duration_s": 3600}, now)
    sim.fleet.dispatch("police", 2, lon, lat)
    sim.panels.show(sim.nearest("information_panel", (lon, lat), 2), "Incendie : secteur fermé, suivez les déviations")
    return out


SCENARIOS = {s.name: s for s in [
    Scenario("normal", "A normal day",
             "The whole city live: lights switching at dusk and dawn and dimmed at night, buses moving on their "
             "lines, service vehicles going to work sites, parking bays filling and emptying. Now and then a lamp "
             "failure, a camera offline, a false fire alarm, a door held open, a junction detector fault.",
             _normal),
    Scenario("snow", "Snow episode",
             "Temperatures below zero at the air-quality stations; every snow-clearing vehicle on duty and moving "
             "(gritting); buses slowed down and late (delays growing to many minutes); every panel shows the snow "
             "warning; detector faults at five central junctions.",
             _snow),
    Scenario("flood", "Flood in the Ouche valley",
             "Within 900 m of the Ouche, south-west of the centre: lighting cabinets report mains failure and their "
             "lights go dark; junction controllers fall silent (offline); parking sensors fall silent; cameras go "
             "offline. Roads and police vehicles drive to the zone and stay; buses crossing it are badly late; "
             "every panel shows the closure.",
             _flood),
    Scenario("cabinet_power_cut", "Power cut on a group of lighting cabinets",
             "Eight neighbouring lighting cabinets east of the centre stop reporting altogether (supply and modem "
             "battery gone): after their reporting interval and grace, they are offline and the street lights "
             "they report for become unreachable, as one group, not as hundreds of separate failures. They come "
             "back three simulated hours later, and never before a quarter of an hour of real time.",
             _power_cut),
    Scenario("major_accident", "Major accident at a junction",
             "A junction south-east of the centre reports a signal lamp out and runs in flashing amber; two police "
             "cars and a roads vehicle drive there and stay on site; buses within 1.5 km slow to a crawl and their "
             "delay climbs; the three nearest panels display the accident warning.",
             _accident),
    Scenario("building_fire", "Fire in a public building",
             "A building in the centre raises a critical fire alarm; the two nearest bollard sites lower for the "
             "fire brigade; two police cars drive there; the nearest panels announce the closure.",
             _fire),
]}
