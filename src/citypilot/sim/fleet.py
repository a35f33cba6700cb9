"""Geolocated vehicles: buses running their lines, and the services' vans and trucks going to work sites.

Buses drive back and forth along their line from early morning to past midnight, stopping at stops and
lights, late or early against the timetable (later at peak hours and in snow). Service vehicles leave
their depot in the morning, drive to a work site, work there, drive to the next, and go home at night;
police cars run all day. Both report their position every 5 s (wall clock).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from .city import M_PER_DEG_LAT, M_PER_DEG_LON, City, Route, distance_m
from .model import CommandRefused, Outgoing, Schedule, hours

BUS_SERVICE_HOURS = (5.5, 24.5)  # 05:30 to 00:30
WORK_HOURS = (6.0, 20.0)


@dataclass
class Bus:
    id: str
    line: Route
    distance_m: float
    delay_s: float = 0.0
    speed_kmh: float = 0.0
    slowdown: float = 1.0  # 1 normal; lower in snow or near an accident
    extra_delay_per_h: float = 0.0


@dataclass
class Vehicle:
    id: str
    service: str
    depot: tuple[float, float]
    lon: float
    lat: float
    status: str = "off_duty"
    target: tuple[float, float] | None = None
    until_s: float = 0.0  # end of the current wait or work
    speed_kmh: float = 0.0
    heading: float = 0.0
    pinned: bool = False  # held on an incident by a scenario


class Fleet:
    kinds = ("bus", "service_vehicle")

    def __init__(self, city: City, rng: np.random.Generator, start: dt.datetime) -> None:
        self.rng = rng
        lines = {line.name: line for line in city.lines}
        buses = city.of_kind("bus")
        per_line: dict[str, int] = {}
        rank: dict[str, int] = {}
        self.buses: dict[str, Bus] = {}
        for asset in buses:
            line = lines[asset.attributes["line"]]
            rank[asset.id] = per_line.get(line.name, 0)
            per_line[line.name] = rank[asset.id] + 1
            self.buses[asset.id] = Bus(asset.id, line, 0.0)
        for bus in self.buses.values():  # evenly spaced along the line, both ways
            bus.distance_m = 2 * bus.line.length_m * rank[bus.id] / per_line[bus.line.name]
        sites = [(a.lon, a.lat) for a in city.of_kind("street_light")] or [(a.lon, a.lat) for a in city.assets]
        self.sites = np.array(sites)
        self.vehicles: dict[str, Vehicle] = {}
        for asset in city.of_kind("service_vehicle"):
            depot = (asset.lon, asset.lat)
            self.vehicles[asset.id] = Vehicle(asset.id, asset.service or "roads", depot, *depot)
        self.schedule = Schedule({i: 5.0 for i in [*self.buses, *self.vehicles]})
        self.snow = False
        self.now = start
        self.advance(start, 0.0)

    def devices(self) -> Iterable[str]:
        return [*self.buses, *self.vehicles]

    # --- movement -------------------------------------------------------------------------------

    def advance(self, now: dt.datetime, elapsed_s: float) -> list[Outgoing]:
        self.now = now
        hour = hours(now)
        if hour < 1.0:
            hour += 24.0  # 00:30 is still the previous service day
        in_service = BUS_SERVICE_HOURS[0] <= hour < BUS_SERVICE_HOURS[1]
        peak = 7 <= hour < 9 or 16.5 <= hour < 19
        for bus in self.buses.values():
            if not in_service:
                bus.speed_kmh, bus.delay_s = 0.0, 0.0
                continue
            stopped = self.rng.random() < 0.25  # at a stop or a red light
            bus.speed_kmh = 0.0 if stopped else float(np.clip(self.rng.normal(24, 6), 6, 50)) * bus.slowdown
            # Average speed over the interval (stops included), not the instantaneous one.
            bus.distance_m += 17.0 / 3.6 * bus.slowdown * elapsed_s
            drift = (25 if peak else -5) * elapsed_s / 3600 + bus.extra_delay_per_h * elapsed_s / 3600
            bus.delay_s = float(np.clip(bus.delay_s + drift + self.rng.normal(0, 4) * math.sqrt(max(elapsed_s, 0) / 5),
                                        -120, 1800))
        work = WORK_HOURS[0] <= hours(now) < WORK_HOURS[1]
        now_s = now.timestamp()
        for v in self.vehicles.values():
            self._drive(v, now_s, elapsed_s, work or v.service == "police" or (self.snow and v.service == "snow"))
        return []

    def _drive(self, v: Vehicle, now_s: float, elapsed_s: float, on_duty: bool) -> None:
        if not on_duty and not v.pinned:
            if v.status != "off_duty":
                v.status, v.target = "en_route", v.depot
            if (v.lon, v.lat) == v.depot:
                v.status, v.speed_kmh = "off_duty", 0.0
                return
        elif v.status == "off_duty":
            v.status, v.until_s = "available", now_s + self.rng.exponential(1200)
        if v.status == "available" and now_s >= v.until_s:
            site = self.sites[self.rng.integers(len(self.sites))]
            v.status, v.target = "en_route", (float(site[0]), float(site[1]))
        if v.status == "en_route" and v.target is not None:
            cruise = 18.0 if v.service == "snow" and self.snow else 32.0  # gritting, or driving through town
            v.speed_kmh = float(np.clip(self.rng.normal(cruise, 6), 5, 70))
            step = cruise / 3.6 * elapsed_s
            left = distance_m((v.lon, v.lat), v.target)
            if left > 0:
                dx, dy = (v.target[0] - v.lon) * M_PER_DEG_LON, (v.target[1] - v.lat) * M_PER_DEG_LAT
                v.heading = round((math.degrees(math.atan2(dx, dy)) + 360) % 360, 1)
            if step >= left:
                v.lon, v.lat = v.target
                v.speed_kmh = 0.0
                if v.target == v.depot and not on_duty:
                    v.status = "off_duty"
                elif self.snow and v.service == "snow" and not v.pinned:  # a gritting circuit: on to the next street
                    site = self.sites[self.rng.integers(len(self.sites))]
                    v.target = (float(site[0]), float(site[1]))
                else:
                    v.status, v.until_s = "on_site", now_s + (10**9 if v.pinned else self.rng.exponential(2700))
            else:
                f = step / left
                v.lon += (v.target[0] - v.lon) * f
                v.lat += (v.target[1] - v.lat) * f
        elif v.status == "on_site":
            v.speed_kmh = 0.0
            if now_s >= v.until_s:
                v.status, v.until_s = "available", now_s + self.rng.exponential(600)

    def dispatch(self, service: str, count: int, lon: float, lat: float) -> list[str]:
        """Send the ``count`` nearest vehicles of ``service`` to an incident, where they stay."""
        candidates = sorted((v for v in self.vehicles.values() if v.service == service and not v.pinned),
                            key=lambda v: distance_m((v.lon, v.lat), (lon, lat)))[:count]
        for v in candidates:
            v.pinned, v.status, v.target = True, "en_route", (lon, lat)
        return [v.id for v in candidates]

    def slow_buses_near(self, lon: float, lat: float, radius_m: float, factor: float, delay_per_h: float) -> int:
        count = 0
        for bus in self.buses.values():
            blon, blat, _ = bus.line.at(bus.distance_m)
            if distance_m((blon, blat), (lon, lat)) <= radius_m or any(
                    distance_m((float(p[0]), float(p[1])), (lon, lat)) <= radius_m for p in bus.line.points):
                bus.slowdown, bus.extra_delay_per_h = factor, delay_per_h
                count += 1
        return count

    # --- reports --------------------------------------------------------------------------------

    def _bus_values(self, bus: Bus) -> dict[str, Any]:
        lon, lat, heading = bus.line.at(bus.distance_m)
        return {"lat": round(lat, 6), "lon": round(lon, 6), "speed_kmh": round(bus.speed_kmh, 1), "heading_deg": heading,
                "delay_s": int(bus.delay_s), "line": bus.line.name, "priority_request": bus.speed_kmh > 0 and self.rng.random() < 0.1}

    @staticmethod
    def _vehicle_values(v: Vehicle) -> dict[str, Any]:
        return {"lat": round(v.lat, 6), "lon": round(v.lon, 6), "speed_kmh": round(v.speed_kmh, 1),
                "heading_deg": v.heading, "work_status": v.status}

    def due(self, wall_s: float) -> list[Outgoing]:
        out = []
        for device in self.schedule.due(wall_s):
            bus = self.buses.get(device)
            values = self._bus_values(bus) if bus else self._vehicle_values(self.vehicles[device])
            out.append(Outgoing(device, "telemetry", {"values": values}))
        return out

    def command(self, device: str, asset: str, name: str, params: dict[str, Any], now: dt.datetime) -> list[Outgoing]:
        raise CommandRefused("vehicles take no remote commands")
