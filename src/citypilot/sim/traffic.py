"""Signalised junctions: timing plans by time of day, faults, bus-priority requests served.

A controller runs its plan for the hour (night, morning peak, day, evening peak). Now and then a signal
lamp goes out or a loop detector fails; more rarely a conflict makes it fall back to flashing amber (the
controller's own safety reaction) until a technician resets it; sometimes its link drops and it goes
silent. Junctions with bus priority count the requests the buses make, and how many were granted; each
request is also reported as a ``bus_priority`` event naming the bus line, whether it was granted and the
red wait it spared the bus, from which the control centre reports priority per line.

Each junction runs a signal-group controller (``signals.py``) that is safe on its own: commands reach
it, and it refuses what it must (a plan nobody checked, a signal group set by hand).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from citypilot.geo.paths import distances_m
from citypilot.safety.junctions import Plan, four_arm_layout, standard_plans

from .city import City, Route
from .model import CommandRefused, Outgoing, Schedule, hours, struck
from .signals import SignalController

# (fault, incidents per junction per year, mean duration s, severity)
FAULT_RATES = [("lamp_out", 4.0, 6 * 3600, "minor"), ("detector_fault", 6.0, 2 * 86_400, "minor"),
               ("conflict", 0.3, 2 * 3600, "critical")]
LINK_LOSSES_PER_YEAR = 2.0
LINK_LOSS_MEAN_S = 3600.0
CONTROLLER_TICKS_PER_STEP = 4  # coarse ticks keep 113 controllers cheap at 30x; the guards stay exact
_LAYOUT = four_arm_layout()
_PLANS = standard_plans()
LINE_WITHIN_M = 300.0  # a junction serves the bus lines passing this close (the lines are drawn, not surveyed)


def lines_near(lon: float, lat: float, lines: list[Route], within_m: float = LINE_WITHIN_M) -> list[str]:
    """The bus lines whose route passes within ``within_m`` of the point; the nearest one when none does
    (a junction equipped for bus priority is on some line)."""
    if not lines:
        return []
    distances = [float(distances_m(line.points, [lon], [lat])[0]) for line in lines]
    near = [line.name for line, d in zip(lines, distances) if d <= within_m]
    return near or [lines[int(np.argmin(distances))].name]


def red_wait_s(plan: Plan, groups: frozenset[str]) -> float:
    """The red a bus on the bus group waits when it just misses its green: the cycle less the group's
    green. A granted hold lets the bus through before the green ends, so that is the time it saves."""
    green = max((sum(d for _, d in plan.greens.get(g, ())) for g in groups), default=0.0)
    return max(0.0, plan.cycle_s - green)


def plan_for(hour: float, weekday: int) -> int:
    """The timing plan in force: 1 night, 2 morning peak, 3 day, 4 evening peak (weekdays only)."""
    if hour < 6 or hour >= 22:
        return 1
    if weekday < 5 and 7 <= hour < 9:
        return 2
    if weekday < 5 and 16.5 <= hour < 19:
        return 4
    return 3


@dataclass
class Junction:
    id: str
    bus_priority: bool
    controller: SignalController = field(default_factory=lambda: SignalController(_LAYOUT, _PLANS, default_plan=3))
    fault: str = "none"
    fault_until: float = 0.0
    silent_until: float = 0.0
    forced: str | None = None  # mode set by a scenario (damaged by an accident, flooded)
    requests: int = 0
    lines: list[str] = field(default_factory=list)  # the bus lines through the junction
    last_event_ts: dt.datetime | None = None

    @property
    def mode(self) -> str:
        return self.controller.mode

    @mode.setter
    def mode(self, value: str) -> None:  # the controller's own reactions and the scenarios
        self.controller.mode = value


class Traffic:
    kinds = ("traffic_controller",)

    def __init__(self, city: City, rng: np.random.Generator, start: dt.datetime) -> None:
        self.rng = rng
        self.junctions = [Junction(a.id, bool(a.attributes["bus_priority"]),
                                   lines=lines_near(a.lon, a.lat, city.lines) if a.attributes["bus_priority"] else [])
                          for a in city.of_kind("traffic_controller")]
        self.by_id = {j.id: j for j in self.junctions}
        self.schedule = Schedule({j.id: 60.0 for j in self.junctions})
        self.urgent: set[str] = set()
        self.now = start
        # One or two detector faults are always waiting for a technician.
        for j in rng.choice(self.junctions, size=min(2, len(self.junctions)), replace=False):
            j.fault, j.fault_until = "detector_fault", start.timestamp() + rng.exponential(86_400)

    def devices(self) -> Iterable[str]:
        return self.by_id

    def advance(self, now: dt.datetime, elapsed_s: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        now_s = now.timestamp()
        self.now = now
        hour = hours(now)
        for name, per_year, mean_s, severity in FAULT_RATES:
            healthy = [j for j in self.junctions if j.fault == "none" and j.forced is None]
            for j in struck(self.rng, healthy, per_year, elapsed_s):
                j.fault, j.fault_until = name, now_s + self.rng.exponential(mean_s)
                if name == "conflict":
                    j.controller.fault = "conflict"  # the controller's own fallback
                    j.mode = "flashing_amber"
                out.append(Outgoing(j.id, "event", {"code": name, "severity": severity,
                                                    "message": {"lamp_out": "a signal lamp is out",
                                                                "detector_fault": "loop detector fault",
                                                                "conflict": "conflicting greens detected: "
                                                                            "fallen back to flashing amber"}[name]}))
                self.urgent.add(j.id)
        linked = [j for j in self.junctions if j.silent_until <= now_s]
        for j in struck(self.rng, linked, LINK_LOSSES_PER_YEAR, elapsed_s):
            j.silent_until = now_s + self.rng.exponential(LINK_LOSS_MEAN_S)
        for j in self.junctions:
            if j.fault != "none" and j.fault_until <= now_s:
                if j.fault == "conflict":
                    j.controller.reset_fault()  # the technician's visit
                j.fault, j.fault_until = "none", 0.0
                self.urgent.add(j.id)
            j.controller.set_timetable(plan_for(hour, now.weekday()))
            j.controller.advance(elapsed_s, max_ticks=CONTROLLER_TICKS_PER_STEP)
            if j.bus_priority and j.lines and 6 <= hour < 22:
                for _ in range(int(self.rng.poisson(12 * elapsed_s / 3600))):  # a dozen buses an hour by day
                    out.append(self._bus_request(j))
        self.schedule.silent = {j.id for j in self.junctions if j.silent_until > now_s}
        return out

    def _bus_request(self, j: Junction) -> Outgoing:
        """A bus of one of the junction's lines asks for priority; the controller grants it or not."""
        j.requests += 1
        line = j.lines[int(self.rng.integers(len(j.lines)))]
        plan = j.controller.plans.get(j.controller.running)
        try:
            j.controller.command("bus_priority", {})
            granted, why = True, None
            saved = red_wait_s(plan, _LAYOUT.bus_groups) if plan is not None else 0.0
        except CommandRefused as exc:
            granted, why, saved = False, str(exc), 0.0  # red, or already served this cycle: the bus waits
        # Device time, unique per request: the event's identity is (junction, time, code).
        ts = dt.datetime.now(dt.timezone.utc)
        ts = ts.replace(microsecond=ts.microsecond // 1000 * 1000)  # sent to the millisecond
        if j.last_event_ts is not None and ts <= j.last_event_ts:
            ts = j.last_event_ts + dt.timedelta(milliseconds=1)
        j.last_event_ts = ts
        data: dict[str, Any] = {"line": line, "granted": granted, "saved_s": round(saved, 1)}
        if why:
            data["refused"] = why
        return Outgoing(j.id, "event", {"ts": ts.isoformat(timespec="milliseconds"), "code": "bus_priority",
                                        "severity": "info", "data": data})

    def values(self, j: Junction) -> dict[str, Any]:
        mode = j.forced or j.mode
        c = j.controller
        return {"mode": mode, "plan": 0 if mode != "normal" else c.plan_in_force, "fault": j.fault,
                "bus_priority_requests": j.requests, "bus_priority_granted": c.bus_granted,
                "bus_time_saved_s": round(c.bus_saved_s, 1)}

    def due(self, wall_s: float) -> list[Outgoing]:
        ids = set(self.schedule.due(wall_s)) | (self.urgent - self.schedule.silent)
        self.urgent.clear()
        return [Outgoing(i, "telemetry", {"values": self.values(self.by_id[i])}) for i in sorted(ids)]

    def command(self, device: str, asset: str, name: str, params: dict[str, Any], now: dt.datetime) -> list[Outgoing]:
        j = self.by_id.get(device)
        if j is None or asset != device:
            raise CommandRefused(f"{asset} is not a junction controller")
        if j.forced == "off":
            raise CommandRefused("the controller is without power")
        if j.forced is not None:
            raise CommandRefused(f"the controller is damaged ({j.forced}): it keeps its own safe state")
        j.controller.command(name, params)  # refuses what is unsafe, with the reason
        if name != "bus_priority":
            self.urgent.add(j.id)
        return []
