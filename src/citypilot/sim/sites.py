"""Fixed equipment that is not lighting or traffic: cameras, bollards, panels, buildings, parking, air.

Each family has its everyday rhythm (bollards lowered for the morning deliveries, intrusion detection
armed at night and at weekends, parking bays filling by day) and its incidents at a yearly rate
(a camera's link drops, a false fire alarm, a bollard blocked by a car). Incident rates are per item and
per year; a real alarm is rare, false alarms much less so.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .city import City
from .clock import local
from .model import CommandRefused, Outgoing, Schedule, hours, iso, struck
from .sun import sunrise_sunset


@dataclass
class _Device:
    id: str
    state: dict[str, Any]
    until: dict[str, float] = field(default_factory=dict)  # incident -> when it ends (simulated epoch s)


class _Simple:
    """A family of devices with a few state fields, a report interval and timed incidents."""

    kinds: tuple[str, ...] = ()
    interval_s = 300.0

    def __init__(self, ids: list[str], rng: np.random.Generator, initial: dict[str, Any]) -> None:
        self.rng = rng
        self.items = {i: _Device(i, dict(initial)) for i in ids}
        self.schedule = Schedule({i: self.interval_s for i in ids})
        self.urgent: set[str] = set()

    def devices(self) -> Iterable[str]:
        return self.items

    def values(self, device: _Device) -> dict[str, Any]:
        return dict(device.state)

    def due(self, wall_s: float) -> list[Outgoing]:
        ids = set(self.schedule.due(wall_s)) | (self.urgent - self.schedule.silent)
        self.urgent.clear()
        return [Outgoing(i, "telemetry", {"values": self.values(self.items[i])}) for i in sorted(ids)]

    def _start(self, device: _Device, name: str, until: float, changes: dict[str, Any]) -> None:
        device.until[name] = until
        device.state.update(changes)
        self.urgent.add(device.id)

    def _ended(self, now_s: float) -> list[tuple[_Device, str]]:
        ended = []
        for device in self.items.values():
            for name, until in list(device.until.items()):
                if until <= now_s:
                    del device.until[name]
                    ended.append((device, name))
                    self.urgent.add(device.id)
        return ended

    def command(self, device: str, asset: str, name: str, params: dict[str, Any], now: dt.datetime) -> list[Outgoing]:
        raise CommandRefused(f"{asset} takes no remote commands")


class Cameras(_Simple):
    kinds = ("camera",)
    interval_s = 60.0

    def __init__(self, city: City, rng: np.random.Generator, start: dt.datetime) -> None:
        cams = city.of_kind("camera")
        super().__init__([c.id for c in cams], rng, {"status": "online", "recording": True})
        self.ptz = {c.id for c in cams if c.attributes["camera_type"] in ("ptz", "dome")}
        # A few cameras are always broken and waiting for the contractor.
        for cam in rng.choice(np.array(list(self.items.values()), dtype=object), size=min(4, len(self.items)), replace=False):
            self._start(cam, "hardware", start.timestamp() + rng.exponential(5 * 86_400), {"status": "offline", "recording": False})

    def advance(self, now: dt.datetime, elapsed_s: float) -> list[Outgoing]:
        out, now_s = [], now.timestamp()
        healthy = [d for d in self.items.values() if not d.until]
        for cam in struck(self.rng, healthy, 12.0, elapsed_s):  # about monthly: a switch, a fibre, a power supply
            self._start(cam, "network", now_s + self.rng.exponential(2 * 3600), {"status": "offline", "recording": False})
            out.append(Outgoing(cam.id, "event", {"code": "camera_offline", "severity": "major",
                                                  "message": "video stream lost (reported by the video management system)"}))
        for cam in struck(self.rng, healthy, 0.5, elapsed_s):
            self._start(cam, "tampered", now_s + self.rng.exponential(86_400), {"status": "tampered"})
            out.append(Outgoing(cam.id, "event", {"code": "camera_tampered", "severity": "major",
                                                  "message": "image masked or camera moved"}))
        for cam, _ in self._ended(now_s):
            if not cam.until:
                cam.state.update(status="online", recording=True)
        return out

    def command(self, device: str, asset: str, name: str, params: dict[str, Any], now: dt.datetime) -> list[Outgoing]:
        cam = self.items.get(device)
        if cam is None or asset != device:
            raise CommandRefused(f"{asset} is not a camera")
        if name != "goto_preset" or not isinstance(params.get("preset"), int):
            raise CommandRefused(f"a camera does not understand {name!r} with {params}")
        if device not in self.ptz:
            raise CommandRefused("a fixed camera has no presets")
        if cam.state["status"] != "online":
            raise CommandRefused(f"the camera is {cam.state['status']}")
        cam.state["preset"] = params["preset"]
        return []

    def values(self, device: _Device) -> dict[str, Any]:
        return {"status": device.state["status"], "recording": device.state["recording"]}


class Bollards(_Simple):
    """Retractable bollards of the pedestrian centre: lowered for deliveries from 6 to 11, raised otherwise."""

    kinds = ("bollard_site",)
    MOVE_S = 8.0

    def __init__(self, city: City, rng: np.random.Generator, start: dt.datetime) -> None:
        super().__init__([s.id for s in city.of_kind("bollard_site")], rng, {"position": "raised", "fault": "none"})
        self._schedule(start)

    def _schedule(self, now: dt.datetime) -> None:
        wanted = "lowered" if 6 <= hours(now) < 11 else "raised"
        for site in self.items.values():
            if site.state["fault"] == "none" and "manual" not in site.until and "moving" not in site.until \
                    and site.state["position"] != wanted:
                self._move(site, wanted, now.timestamp())

    def _move(self, site: _Device, to: str, now_s: float) -> None:
        site.state["target"] = to
        self._start(site, "moving", now_s + self.MOVE_S, {"position": "moving"})

    def advance(self, now: dt.datetime, elapsed_s: float) -> list[Outgoing]:
        out, now_s = [], now.timestamp()
        working = [d for d in self.items.values() if d.state["fault"] == "none"]
        for site, (code, mean_s, per_year) in [(s, ("obstruction", 900, 6.0)) for s in struck(self.rng, working, 6.0, elapsed_s)] + \
                [(s, ("hydraulic", 2 * 86_400, 1.0)) for s in struck(self.rng, working, 1.0, elapsed_s)]:
            self._start(site, "fault", now_s + self.rng.exponential(mean_s), {"position": "fault", "fault": code})
            out.append(Outgoing(site.id, "event", {"code": f"bollard_{code}", "severity": "major",
                                                   "message": {"obstruction": "a vehicle blocks the bollard",
                                                               "hydraulic": "hydraulic unit failure"}[code]}))
        for site, name in self._ended(now_s):
            if name == "moving":
                target = site.state.pop("target", "raised")
                if site.state["fault"] == "none":
                    site.state["position"] = target
            elif name == "fault":
                site.state.update(fault="none", position="raised")
            elif name == "manual":
                self._move(site, "raised", now_s)
        self._schedule(now)
        return out

    def command(self, device: str, asset: str, name: str, params: dict[str, Any], now: dt.datetime) -> list[Outgoing]:
        site = self.items.get(device)
        if site is None or asset != device:
            raise CommandRefused(f"{asset} is not a bollard site")
        if site.state["fault"] != "none":
            raise CommandRefused(f"the bollards are in fault ({site.state['fault']})")
        if name == "lower":
            duration = params.get("duration_s") or 600
            self._move(site, "lowered", now.timestamp())
            site.until["manual"] = now.timestamp() + float(duration)
        elif name == "raise":
            site.until.pop("manual", None)
            self._move(site, "raised", now.timestamp())
        else:
            raise CommandRefused(f"a bollard site does not understand {name!r}")
        return []

    def values(self, device: _Device) -> dict[str, Any]:
        return {"position": device.state["position"], "fault": device.state["fault"]}


PANEL_MESSAGES = ["Bienvenue dans la métropole de Dijon", "Marché des Halles : mardi, jeudi, vendredi, samedi",
                  "Parkings centre : Darcy 120 places, Grangier 85 places", "Fête de la musique : rues fermées le 21 juin",
                  "Travaux avenue Jean Jaurès : déviation par le boulevard"]


class Panels(_Simple):
    kinds = ("information_panel",)

    def __init__(self, city: City, rng: np.random.Generator, start: dt.datetime) -> None:
        super().__init__([p.id for p in city.of_kind("information_panel")], rng,
                         {"message": PANEL_MESSAGES[0], "brightness_pct": 100.0, "fault": "none"})
        self.override: dict[str, str] = {}
        self.override_until: dict[str, float] = {}  # a message with an expiry: the panel clears it itself

    def advance(self, now: dt.datetime, elapsed_s: float) -> list[Outgoing]:
        out, now_s = [], now.timestamp()
        for panel_id, until in list(self.override_until.items()):
            if until <= now_s:
                del self.override_until[panel_id]
                self.override.pop(panel_id, None)
        here = local(now)
        sunrise, sunset = sunrise_sunset(here.date())
        brightness = 100.0 if sunrise <= here < sunset else 40.0
        rota = PANEL_MESSAGES[int(now_s // 900) % len(PANEL_MESSAGES)]  # the rota changes every quarter hour
        for panel in struck(self.rng, [d for d in self.items.values() if d.state["fault"] == "none"], 2.0, elapsed_s):
            self._start(panel, "fault", now_s + self.rng.exponential(7 * 86_400), {"fault": "pixel_failure"})
            out.append(Outgoing(panel.id, "event", {"code": "pixel_failure", "severity": "minor",
                                                    "message": "a block of pixels is dark"}))
        for panel, _ in self._ended(now_s):
            panel.state["fault"] = "none"
        for panel in self.items.values():
            message = self.override.get(panel.id, rota)
            if panel.state["message"] != message or panel.state["brightness_pct"] != brightness:
                panel.state.update(message=message, brightness_pct=brightness)
                self.urgent.add(panel.id)
        return out

    def show(self, ids: Iterable[str], message: str | None) -> None:
        for i in ids:
            if message is None:
                self.override.pop(i, None)
            else:
                self.override[i] = message

    def command(self, device: str, asset: str, name: str, params: dict[str, Any], now: dt.datetime) -> list[Outgoing]:
        panel = self.items.get(device)
        if panel is None or asset != device:
            raise CommandRefused(f"{asset} is not an information panel")
        if panel.state["fault"] == "power":
            raise CommandRefused("the panel is without power")
        if name == "display" and isinstance(params.get("message"), str):
            self.show([device], params["message"][:500])
            duration = params.get("duration_s")
            if isinstance(duration, int) and not isinstance(duration, bool) and duration > 0:
                self.override_until[device] = now.timestamp() + duration
            else:
                self.override_until.pop(device, None)
        elif name == "clear":
            self.show([device], "")
            self.override_until.pop(device, None)
        else:
            raise CommandRefused(f"a panel does not understand {name!r}")
        self.advance(now, 0.0)
        return []


class Buildings(_Simple):
    """Fire, intrusion and access control of public buildings: armed out of hours, alarms now and then."""

    kinds = ("building_alarm_panel",)
    # (system, alarm state, incidents per building per year, mean duration s, event code, severity)
    INCIDENTS = [("fire", "alarm", 1.0, 1200, "fire_alarm", "critical"),      # nearly all false alarms
                 ("access", "held_open", 20.0, 300, "door_held_open", "warning"),
                 ("access", "forced_door", 0.5, 1800, "door_forced", "major")]
    INTRUSIONS_PER_YEAR = 2.0  # while armed

    def __init__(self, city: City, rng: np.random.Generator, start: dt.datetime) -> None:
        super().__init__([b.id for b in city.of_kind("building_alarm_panel")], rng,
                         {"fire": "normal", "intrusion": "disarmed", "access": "normal"})
        self.manual: dict[str, str] = {}  # armed/disarmed by command, until the next scheduled change
        self._armed_now = self._armed(start)
        self._arm(start)

    @staticmethod
    def _armed(now: dt.datetime) -> bool:
        here = local(now)
        return here.weekday() >= 5 or not 7.5 <= hours(now) < 19

    def _arm(self, now: dt.datetime) -> None:
        armed = self._armed(now)
        if armed != self._armed_now:
            self.manual.clear()
            self._armed_now = armed
        for b in self.items.values():
            if b.state["intrusion"] in ("alarm", "fault"):
                continue
            state = self.manual.get(b.id, "armed" if armed else "disarmed")
            if b.state["intrusion"] != state:
                b.state["intrusion"] = state
                self.urgent.add(b.id)

    def fire(self, building: str, now: dt.datetime, duration_s: float) -> list[Outgoing]:
        b = self.items[building]
        self._start(b, "fire", now.timestamp() + duration_s, {"fire": "alarm"})
        return [Outgoing(b.id, "event", {"code": "fire_alarm", "severity": "critical",
                                         "message": "fire detection: smoke detectors zone 2 in alarm"})]

    def advance(self, now: dt.datetime, elapsed_s: float) -> list[Outgoing]:
        out, now_s = [], now.timestamp()
        for system, state, per_year, mean_s, code, severity in self.INCIDENTS:
            quiet = [b for b in self.items.values() if b.state[system] == "normal"]
            for b in struck(self.rng, quiet, per_year, elapsed_s):
                self._start(b, system, now_s + self.rng.exponential(mean_s), {system: state})
                out.append(Outgoing(b.id, "event", {"code": code, "severity": severity}))
        armed = [b for b in self.items.values() if b.state["intrusion"] == "armed"]
        for b in struck(self.rng, armed, self.INTRUSIONS_PER_YEAR, elapsed_s):
            self._start(b, "intrusion", now_s + self.rng.exponential(900), {"intrusion": "alarm"})
            out.append(Outgoing(b.id, "event", {"code": "intrusion_alarm", "severity": "major",
                                                "message": "volumetric detector triggered"}))
        for b, system in self._ended(now_s):
            b.state[system] = "armed" if system == "intrusion" else "normal"
        self._arm(now)
        return out

    def command(self, device: str, asset: str, name: str, params: dict[str, Any], now: dt.datetime) -> list[Outgoing]:
        b = self.items.get(device)
        if b is None or asset != device:
            raise CommandRefused(f"{asset} is not a building alarm panel")
        if name not in ("arm", "disarm"):
            raise CommandRefused(f"an alarm panel does not understand {name!r}")
        if name == "arm" and b.state["access"] != "normal":
            raise CommandRefused(f"cannot arm: a door is {b.state['access'].replace('_', ' ')}")
        self.manual[device] = "armed" if name == "arm" else "disarmed"
        if b.state["intrusion"] == "alarm" and name == "disarm":
            b.until.pop("intrusion", None)
            b.state["intrusion"] = "armed"
        self._arm(now)
        return []


class Parking(_Simple):
    """On-street bay sensors: report each arrival and departure, plus an hourly heartbeat."""

    kinds = ("parking_sensor",)
    interval_s = 3600.0
    STAY_MEAN_MIN = {"standard": 90, "short_stay": 20, "delivery": 20, "disabled": 150, "electric": 120}

    def __init__(self, city: City, rng: np.random.Generator, start: dt.datetime) -> None:
        sensors = city.of_kind("parking_sensor")
        super().__init__([s.id for s in sensors], rng, {})
        self.ids = [s.id for s in sensors]
        self._index = {d: i for i, d in enumerate(self.ids)}
        self.bay = [s.attributes["bay_type"] for s in sensors]
        n = len(sensors)
        day = 8 <= hours(start) < 19
        self.occupied = rng.random(n) < (0.8 if day else 0.45)
        self.since = np.where(self.occupied, start.timestamp() - rng.exponential(3000, n), np.nan)
        self.change_at = start.timestamp() + rng.exponential(1800, n)
        self.battery = rng.uniform(55, 100, n).round(0)

    def advance(self, now: dt.datetime, elapsed_s: float) -> list[Outgoing]:
        now_s = now.timestamp()
        hour = hours(now)
        free_mean = 900 if 8 <= hour < 19 else 3600 if 19 <= hour < 23 else 14_400
        for i in np.flatnonzero(self.change_at <= now_s):
            if self.occupied[i]:
                self.occupied[i], self.since[i] = False, np.nan
                self.change_at[i] = now_s + self.rng.exponential(free_mean)
            else:
                self.occupied[i], self.since[i] = True, now_s
                stay = self.STAY_MEAN_MIN[self.bay[i]] * 60
                if self.bay[i] == "delivery" and self.rng.random() < 0.1:
                    stay = 7200  # a car parked on a delivery bay: an overstay
                self.change_at[i] = now_s + self.rng.exponential(stay)
            self.urgent.add(self.ids[i])
        return []

    def values(self, device: _Device) -> dict[str, Any]:
        i = self._index[device.id]
        values: dict[str, Any] = {"occupied": bool(self.occupied[i]), "battery_pct": float(self.battery[i])}
        if self.occupied[i]:
            values["occupied_since"] = iso(dt.datetime.fromtimestamp(float(self.since[i]), dt.timezone.utc))
        return values


class AirQuality(_Simple):
    """Air-quality stations: NO2 and particles follow the traffic, ozone the afternoon sun."""

    kinds = ("air_quality_station",)
    interval_s = 900.0

    def __init__(self, city: City, rng: np.random.Generator, start: dt.datetime) -> None:
        super().__init__([s.id for s in city.of_kind("air_quality_station")], rng, {})
        self.cold = False
        self.now = start

    def advance(self, now: dt.datetime, elapsed_s: float) -> list[Outgoing]:
        self.now = now
        return []

    def values(self, device: _Device) -> dict[str, Any]:
        here = local(self.now)
        hour = hours(self.now)
        traffic = math.exp(-((hour - 8) ** 2) / 2) + math.exp(-((hour - 18) ** 2) / 3)
        season = math.cos(2 * math.pi * (here.timetuple().tm_yday - 200) / 365)  # 1 in July, -1 in January
        temp = 11.5 + 9.5 * season + 4 * math.sin(2 * math.pi * (hour - 9) / 24) + self.rng.normal(0, 0.8)
        if self.cold:
            temp = min(temp, -2.0 + self.rng.normal(0, 1))
        no2 = max(5.0, 18 + 30 * traffic + self.rng.normal(0, 4))
        pm10 = max(3.0, 16 + 10 * traffic + (8 if self.cold else 0) + self.rng.normal(0, 3))
        o3 = max(2.0, 40 + 35 * max(season, 0) * max(math.sin(math.pi * (hour - 9) / 12), 0) + self.rng.normal(0, 5))
        return {"no2_ugm3": round(no2, 1), "pm10_ugm3": round(pm10, 1), "pm25_ugm3": round(pm10 * 0.62, 1),
                "o3_ugm3": round(o3, 1), "temperature_c": round(temp, 1)}
