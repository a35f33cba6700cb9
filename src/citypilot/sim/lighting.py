"""Street lighting: cabinets switch their lights at dusk and dawn, dim them at night, and report for them.

Each lighting cabinet is an MQTT gateway: one message carries its own readings and one per light on
its circuits (see the protocol's gateway batch). Lights in "auto" (every cabinet's default) follow the domain's lighting policy
(``citypilot.lighting.policy``): their street type's programme anchored on sunset and sunrise,
presence detection on footpaths (a passer-by, now and then, lights them fully for a while),
traffic-adaptive dimming where a street has a counter (``adaptive_dimming``: down to half the
programme's level when traffic is low, following ``TRAFFIC_PROFILE``), the low-intensity programme on
ecological corridors, never below their safety floor. The clock-hour programmes below remain, as commands may apply them. Lamps and drivers fail at a yearly rate and are
repaired some days later; a cabinet loses mains power now and then, and its lights go dark together.
State is kept in numpy arrays (34,000 lights at scale 1, ten times more at scale 10): a tick costs a few
vector operations, not a loop over every light.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

import numpy as np

from citypilot.lighting import policy

from .city import City
from .clock import local
from .model import CommandRefused, Outgoing, Schedule, struck
from .sun import sunrise_sunset

LAMP_FAILURES_PER_YEAR = 0.05    # per light: LED module, cabling, a pole hit by a car (about 5 a day at Dijon)
DRIVER_FAILURES_PER_YEAR = 0.03  # LED drivers and the light's control node
LIGHT_REPAIR_MEAN_S = 5 * 86_400  # the lighting contractor's repair time, on average
MAINS_FAULTS_PER_YEAR = 0.5       # per cabinet: one or two cabinets a day at Dijon's size
MAINS_FAULT_MEAN_S = 3 * 3600
FAULTS = ("none", "lamp_failure", "driver_failure")
PRESENCE_PASSES_PER_HOUR = 3.0  # someone walks under a presence-detection light, on average, at night
# Traffic through the day on a street with a counter, as a share of its busiest hour (hour 0 to 23): the
# usual two-peak urban profile. Lights with ``adaptive_dimming`` dim further when it is low.
TRAFFIC_PROFILE = (0.22, 0.14, 0.09, 0.07, 0.08, 0.2, 0.5, 0.9, 1.0, 0.8, 0.7, 0.72,
                   0.75, 0.72, 0.7, 0.75, 0.85, 1.0, 0.95, 0.75, 0.55, 0.45, 0.38, 0.3)


def street_activity(now: dt.datetime) -> float:
    """The street's traffic at ``now`` (0..1), interpolated between the profile's hours."""
    here = local(now)
    hour = here.hour + here.minute / 60
    k = int(hour) % 24
    f = hour - int(hour)
    return TRAFFIC_PROFILE[k] * (1 - f) + TRAFFIC_PROFILE[(k + 1) % 24] * f
# Dimming programmes a command may apply: "auto" is the lighting policy by street type; the others are
# (from hour, to hour, level %) windows of the night, full power otherwise.
AUTO = "auto"
PROGRAMMES: dict[str, list[tuple[float, float, float]]] = {
    AUTO: [],
    "standard": [(22.0, 24.0, 50.0), (0.0, 5.0, 50.0)],
    "eco": [(21.0, 24.0, 40.0), (0.0, 6.0, 30.0)],
    "full": [],
}


class Lighting:
    kinds = ("lighting_cabinet", "street_light")

    def __init__(self, city: City, rng: np.random.Generator, start: dt.datetime) -> None:
        self.rng = rng
        cabinets = city.of_kind("lighting_cabinet")
        lights = {a.id: a for a in city.of_kind("street_light")}
        self.cabinet_ids = [c.id for c in cabinets]
        self.cabinet_index = {c: i for i, c in enumerate(self.cabinet_ids)}
        self.light_ids: list[str] = []
        starts = []
        for cab in self.cabinet_ids:
            starts.append(len(self.light_ids))
            self.light_ids += city.lights_of[cab]
        self.light_index = {light: i for i, light in enumerate(self.light_ids)}
        self.starts = np.array(starts)
        self.counts = np.diff(np.append(self.starts, len(self.light_ids)))  # lights per cabinet
        self.cabinet_of = np.repeat(np.arange(len(cabinets)), self.counts)
        n, m = len(self.light_ids), len(cabinets)
        self.lamp_power = np.array([lights[i].attributes["lamp_power_w"] for i in self.light_ids])
        # Each light's policy profile (street type, floor, corridor, presence): a handful of distinct ones,
        # so a tick asks the policy once per profile and spreads the answers with an index array.
        profiles = [policy.light_profile(lights[i].attributes) for i in self.light_ids]
        self.profiles = sorted(set(profiles), key=repr)
        rank = {p: k for k, p in enumerate(self.profiles)}
        self.profile_of = np.array([rank[p] for p in profiles], dtype=np.int32)
        self.floor = np.array([p[1] for p in profiles], dtype=float)
        self.presence = np.array([p[3] for p in profiles], dtype=bool)
        self.adaptive = np.array([lights[i].attributes.get("adaptive_dimming") is True for i in self.light_ids], dtype=bool)
        self.presence_until = np.zeros(n)  # epoch seconds until which a passer-by keeps the light at full
        self.base_hours = rng.uniform(2_000, 30_000, n).round(1)  # installed over the last years
        self.fault = np.zeros(n, dtype=np.int8)
        self.repair_at = np.full(n, np.inf)
        self.dim_override = np.full(n, np.nan)
        self.switch_override = np.zeros(n, dtype=np.int8)  # 0 follow the cabinet, 1 on, 2 off
        self.offset_s = rng.uniform(-420, 420, m)  # astronomical clocks and light sensors differ by minutes
        self.mode = ["auto"] * m
        self.programme = [AUTO] * m
        self.mains_until = np.zeros(m)  # simulated epoch seconds until which the mains are out
        self.on_hours = np.zeros(m)
        self.energy_kwh = rng.uniform(10_000, 90_000, m).round(1)
        self.cabinet_on = np.zeros(m, dtype=bool)
        self.cabinet_power_kw = np.zeros(m)
        self.schedule = Schedule({c: 300.0 for c in self.cabinet_ids})
        self.urgent: set[int] = set()  # cabinets that report at once (switched, commanded)
        # A city always has a few lights awaiting repair: the steady-state backlog, at start.
        backlog = int(rng.poisson(n * (LAMP_FAILURES_PER_YEAR + DRIVER_FAILURES_PER_YEAR) * LIGHT_REPAIR_MEAN_S / (365.25 * 86_400)))
        now_s = start.timestamp()
        for i in rng.choice(n, size=min(backlog, n), replace=False):
            self.fault[i] = 1 if rng.random() < 0.75 else 2
            self.repair_at[i] = now_s + rng.exponential(LIGHT_REPAIR_MEAN_S)
        self._levels(start)

    def devices(self) -> Iterable[str]:
        return self.cabinet_ids

    # --- state ----------------------------------------------------------------------------------

    @property
    def level(self) -> np.ndarray:
        """Each light's level (%), 0 when dark."""
        self._fresh()
        return self._level

    @property
    def lit(self) -> np.ndarray:
        self._fresh()
        return self._lit

    def _fresh(self) -> None:
        """Apply the commands received since the levels were last computed (once, not once a command:
        a zone of 5,000 dimmings would otherwise recompute 34,000 lights 5,000 times)."""
        if self._stale is not None:
            self._levels(self._stale)

    def _levels(self, now: dt.datetime) -> None:
        """Which cabinets are on and at what level each light burns, at ``now``."""
        here = local(now)
        sunrise, sunset = sunrise_sunset(here.date())
        t = now.timestamp() - self.offset_s
        dark = (t < sunrise.timestamp()) | (t >= sunset.timestamp())
        forced = np.array([{"auto": -1, "on": 1, "off": 0}[m] for m in self.mode])
        on = np.where(forced < 0, dark, forced == 1) & (self.mains_until <= now.timestamp())
        switched = np.flatnonzero(on != self.cabinet_on)
        self.urgent.update(int(i) for i in switched)
        self.cabinet_on = on
        hour = here.hour + here.minute / 60
        levels = np.full(len(self.cabinet_ids), 100.0)
        for name, windows in PROGRAMMES.items():
            level = next((lv for a, b, lv in windows if a <= hour < b), 100.0)
            if level != 100.0:
                levels[[p == name for p in self.programme]] = level
        level = levels[self.cabinet_of]
        auto = np.array([p == AUTO for p in self.programme], dtype=bool)[self.cabinet_of]
        if auto.any():
            detected = self.presence_until > now.timestamp()
            activity = street_activity(now)
            # [profile, detected, adaptive]: the policy asked once per combination, not per light
            planned = np.empty((len(self.profiles), 2, 2))
            for k, (street_type, floor, corridor, presence) in enumerate(self.profiles):
                base = policy.programme_level(now, street_type, corridor)
                for d in (0, 1):
                    for a in (0, 1):
                        planned[k, d, a] = policy.adjusted_level(base, floor_pct=floor, presence_detection=presence,
                                                                 detected=bool(d), activity=activity if a else None)
            level = np.where(auto, planned[self.profile_of, detected.astype(np.int8), self.adaptive.astype(np.int8)], level)
        level = np.maximum(level, self.floor)
        # A commanded level holds (the interlocks refuse one below the floor; the driver's own minimum
        # is the floor too, should a command get through some other way).
        level = np.where(np.isnan(self.dim_override), level, np.maximum(self.dim_override, self.floor))
        lit = self.cabinet_on[self.cabinet_of] & (self.fault == 0)
        lit &= self.switch_override != 2  # switched off by command (on again: back to the cabinet's)
        self._level = np.where(lit, level, 0.0)
        self._lit = lit
        self._stale = None
        power = self.lamp_power * self._level / 100.0
        self.cabinet_power_kw = np.add.reduceat(power, self.starts) / 1000.0 if len(power) else self.cabinet_power_kw

    def advance(self, now: dt.datetime, elapsed_s: float) -> list[Outgoing]:
        self._fresh()
        out: list[Outgoing] = []
        now_s = now.timestamp()
        self.on_hours += np.where(self.cabinet_on, elapsed_s / 3600.0, 0.0)
        self.energy_kwh += self.cabinet_power_kw * elapsed_s / 3600.0
        if self.cabinet_on.any():  # passers-by under presence-detection lights, while they burn
            walkers = np.flatnonzero(self.presence & self.cabinet_on[self.cabinet_of])
            for i in struck(self.rng, walkers, PRESENCE_PASSES_PER_HOUR * 8766, elapsed_s):
                self.presence_until[i] = now_s + policy.PRESENCE_HOLD_S
        working = np.flatnonzero(self.fault == 0)
        for code, rate in ((1, LAMP_FAILURES_PER_YEAR), (2, DRIVER_FAILURES_PER_YEAR)):
            for i in struck(self.rng, working, rate, elapsed_s):
                self.fault[i] = code
                self.repair_at[i] = now_s + self.rng.exponential(LIGHT_REPAIR_MEAN_S)
                cab = int(self.cabinet_of[i])
                out.append(Outgoing(self.cabinet_ids[cab], "event", {
                    "asset": self.light_ids[i], "code": FAULTS[code], "severity": "minor",
                    "message": "lamp out" if code == 1 else "LED driver not responding"}))
                self.urgent.add(cab)
        repaired = np.flatnonzero((self.fault != 0) & (self.repair_at <= now_s))
        if len(repaired):
            self.fault[repaired] = 0
            self.repair_at[repaired] = np.inf
            self.urgent.update(int(self.cabinet_of[i]) for i in repaired)
        healthy = np.flatnonzero(self.mains_until <= now_s)
        for cab in struck(self.rng, healthy, MAINS_FAULTS_PER_YEAR, elapsed_s):
            out += self.cut_mains(int(cab), now, self.rng.exponential(MAINS_FAULT_MEAN_S))
        restored = np.flatnonzero((self.mains_until > 0) & (self.mains_until <= now_s))
        for cab in restored:
            self.mains_until[cab] = 0
            self.urgent.add(int(cab))
            out.append(Outgoing(self.cabinet_ids[cab], "event", {"code": "mains_restored", "severity": "info",
                                                                 "message": "mains power back"}))
        self._levels(now)
        return out

    def cut_mains(self, cab: int, now: dt.datetime, duration_s: float) -> list[Outgoing]:
        """The cabinet's supply fails: its lights go dark; its modem, on battery, says so."""
        self.mains_until[cab] = now.timestamp() + duration_s
        self.urgent.add(cab)
        return [Outgoing(self.cabinet_ids[cab], "event", {"code": "mains_failure", "severity": "major",
                                                          "message": f"mains power lost: {self.lights_count(cab)} lights dark"})]

    def lights_count(self, cab: int) -> int:
        return int(self.counts[cab])

    def silence(self, cabinet_ids: Iterable[str], silent: bool) -> None:
        """The cabinet stops reporting altogether (its modem lost power too): a gateway gone silent."""
        for cab in cabinet_ids:
            (self.schedule.silent.add if silent else self.schedule.silent.discard)(cab)

    # --- reports --------------------------------------------------------------------------------

    def report(self, cab: int) -> Outgoing:
        start = int(self.starts[cab])
        end = start + self.lights_count(cab)
        now_mains = "fault" if self.mains_until[cab] > 0 else "ok"
        readings: list[dict[str, Any]] = [{"values": {
            "mains": now_mains, "door_open": False, "power_kw": round(float(self.cabinet_power_kw[cab]), 2),
            "energy_kwh": round(float(self.energy_kwh[cab]), 1)}}]
        noise = self.rng.uniform(0.97, 1.03, end - start)
        for k, i in enumerate(range(start, end)):
            lit = bool(self.lit[i])
            readings.append({"asset": self.light_ids[i], "values": {
                "power_state": "on" if lit else "off",
                "dimming_pct": float(self.level[i]),
                "power_w": round(float(self.lamp_power[i] * self.level[i] / 100.0 * noise[k]), 1) if lit else 0.0,
                "burning_hours": round(float(self.base_hours[i] + self.on_hours[cab]), 1),
                "fault": FAULTS[self.fault[i]]}})
        return Outgoing(self.cabinet_ids[cab], "telemetry", {"readings": readings})

    def due(self, wall_s: float) -> list[Outgoing]:
        self._fresh()
        due = {self.cabinet_index[c] for c in self.schedule.due(wall_s)}
        due |= {c for c in self.urgent if self.cabinet_ids[c] not in self.schedule.silent}
        self.urgent.clear()
        return [self.report(c) for c in sorted(due)]

    # --- commands -------------------------------------------------------------------------------

    def command(self, device: str, asset: str, name: str, params: dict[str, Any], now: dt.datetime) -> list[Outgoing]:
        cab = self.cabinet_index.get(device)
        if cab is None:
            raise CommandRefused(f"{device} is not a lighting cabinet")
        if asset == device:
            if name == "switch" and params.get("state") in ("on", "off", "auto"):
                self.mode[cab] = params["state"]
            elif name == "apply_programme" and params.get("programme") in PROGRAMMES:
                self.programme[cab] = params["programme"]
            elif name == "apply_programme":
                raise CommandRefused(f"unknown programme {params.get('programme')!r} (known: {', '.join(PROGRAMMES)})")
            else:
                raise CommandRefused(f"a lighting cabinet does not understand {name!r} with {params}")
        else:
            i = self.light_index.get(asset)
            if i is None or self.cabinet_of[i] != cab:
                raise CommandRefused(f"{asset} is not on this cabinet's circuits")
            if self.fault[i]:
                raise CommandRefused(f"{asset} does not answer ({FAULTS[self.fault[i]]})")
            if name == "switch" and params.get("state") in ("on", "off"):
                if params["state"] == "on" and not self.cabinet_on[cab]:
                    raise CommandRefused("the cabinet's circuits are off: a light cannot be lit on its own")
                self.switch_override[i] = 1 if params["state"] == "on" else 2
            elif name == "dim" and isinstance(params.get("level_pct"), (int, float)) and 0 <= params["level_pct"] <= 100:
                self.dim_override[i] = float(params["level_pct"])
            else:
                raise CommandRefused(f"a street light does not understand {name!r} with {params}")
            self.urgent.add(cab)
            self._stale = now  # applied before the next report (see _fresh)
            return []
        self.urgent.add(cab)
        self._levels(now)
        return []
