"""The simulated city as a whole: its equipment families, its scenario, and the commands it obeys.

Pure: ``step`` says what the devices send at a given wall-clock second, ``command`` what a device answers
to a command payload. The runner does the MQTT.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
from typing import Any, Callable

import msgspec
import numpy as np

from .city import CENTRE, City, distance_m
from .clock import SimClock
from .fleet import Fleet
from .lighting import Lighting
from .model import CommandRefused, Family, Outgoing
from .scenarios import SCENARIOS, Scenario
from .sites import AirQuality, Bollards, Buildings, Cameras, Panels, Parking
from .traffic import Traffic

COMMAND_FAILURE_RATE = 0.02  # the device tried and could not (a node that does not answer, a jammed actuator)
COMMAND_TIMEOUT_RATE = 0.01  # the command or its acknowledgement is lost: no answer at all
MAX_COMMAND_BYTES = 4096
ANSWERS_KEPT = 50_000


class Command(msgspec.Struct, forbid_unknown_fields=False):
    """A command as citypilot sends it on ``citypilot/cmd/v1/{device}`` (see docs/protocol.md)."""

    id: str
    command: str
    params: dict[str, Any] = {}
    asset: str | None = None
    expires_at: dt.datetime | None = None


_decode_command = msgspec.json.Decoder(Command).decode


class Simulation:
    def __init__(self, city: City, clock: SimClock, scenario: str = "normal", seed: int = 1) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r} (one of: {', '.join(SCENARIOS)})")
        self.city = city
        self.clock = clock
        self.rng = np.random.default_rng(seed + 7919)
        start = clock.now()
        self.lighting = Lighting(city, self.rng, start)
        self.traffic = Traffic(city, self.rng, start)
        self.fleet = Fleet(city, self.rng, start)
        self.cameras = Cameras(city, self.rng, start)
        self.bollards = Bollards(city, self.rng, start)
        self.panels = Panels(city, self.rng, start)
        self.buildings = Buildings(city, self.rng, start)
        self.parking = Parking(city, self.rng, start)
        self.air = AirQuality(city, self.rng, start)
        self.families: list[Family] = [self.lighting, self.traffic, self.fleet, self.cameras, self.bollards,
                                       self.panels, self.buildings, self.parking, self.air]
        self.family_of: dict[str, Family] = {d: f for f in self.families for d in f.devices()}
        self.positions = {a.id: (a.lon, a.lat) for a in city.assets}
        self.kind_of = {a.id: a.kind for a in city.assets}
        self.centre = CENTRE
        self.scenario: Scenario = SCENARIOS[scenario]
        self.scenario_started = False
        self._later: list[tuple[float, int, Callable[["Simulation", dt.datetime], list[Outgoing]]]] = []
        self._order = itertools.count()
        self._last = start
        self.commands_received = 0
        # Answers to the commands received lately, by id: a command delivered twice (QoS 1, a retry) is
        # answered again and done once.
        self._answered: dict[str, dict[str, Any]] = {}

    # --- time -----------------------------------------------------------------------------------

    def step(self, wall_s: float) -> list[Outgoing]:
        """Everything the devices send at wall-clock second ``wall_s`` of the run (since its start)."""
        now = self.clock.now()
        elapsed = max(0.0, (now - self._last).total_seconds())
        self._last = now
        out: list[Outgoing] = []
        if not self.scenario_started and wall_s >= self.scenario.delay_s:
            self.scenario_started = True
            out += self.scenario.begin(self, now)
        while self._later and self._later[0][0] <= now.timestamp():
            _, _, action = heapq.heappop(self._later)
            out += action(self, now)
        for family in self.families:
            out += family.advance(now, elapsed)
        for family in self.families:
            out += family.due(wall_s)
        silent = self.silent()
        return [m for m in out if m.device not in silent] if silent else out

    def later(self, after_s: float, action: Callable[["Simulation", dt.datetime], list[Outgoing]]) -> None:
        """Run ``action`` ``after_s`` simulated seconds from now (a scenario's end)."""
        heapq.heappush(self._later, (self.clock.now().timestamp() + after_s, next(self._order), action))

    def silent(self) -> set[str]:
        """Devices that send nothing at all just now (no power, no link)."""
        out: set[str] = set()
        for family in self.families:
            out |= family.schedule.silent
        return out

    # --- geography ------------------------------------------------------------------------------

    def nearest(self, kind: str, point: tuple[float, float], count: int) -> list[str]:
        ids = [a for a, k in self.kind_of.items() if k == kind]
        return sorted(ids, key=lambda a: distance_m(self.positions[a], point))[:count]

    def within(self, kind: str, point: tuple[float, float], radius_m: float) -> list[str]:
        return [a for a, k in self.kind_of.items() if k == kind and distance_m(self.positions[a], point) <= radius_m]

    # --- commands -------------------------------------------------------------------------------

    def command(self, device: str, payload: bytes) -> list[Outgoing]:
        """What ``device`` answers to a command payload: an acknowledgement, sometimes nothing (a timeout),
        and, when the command changed something, an immediate report from the device's family."""
        self.commands_received += 1
        if len(payload) > MAX_COMMAND_BYTES:
            return []  # not for us to parse; citypilot never sends such a command
        try:
            cmd = _decode_command(payload)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            reason = str(exc)
            try:
                cid = msgspec.json.decode(payload).get("id")
            except Exception:
                return []
            return [Outgoing(device, "cmd-ack", {"id": cid, "status": "rejected", "reason": f"malformed command: {reason}"})] \
                if isinstance(cid, str) else []
        asset = cmd.asset or device
        seen = self._answered.get(f"{device}/{cmd.id}")
        if seen is not None:
            return [Outgoing(device, "cmd-ack", dict(seen))]
        answer = self._answer(device, asset, cmd)
        for message in answer:
            if message.channel == "cmd-ack":
                self._answered[f"{device}/{cmd.id}"] = message.payload
                while len(self._answered) > ANSWERS_KEPT:
                    del self._answered[next(iter(self._answered))]
        return answer

    def _answer(self, device: str, asset: str, cmd: Command) -> list[Outgoing]:
        ack: dict[str, Any] = {"id": cmd.id, "asset": asset}
        now = self.clock.now()
        family = self.family_of.get(device)
        if self.rng.random() < COMMAND_TIMEOUT_RATE or family is None or device in self.silent():
            return []  # lost on the way, or a device that is not there to answer
        if cmd.expires_at is not None and cmd.expires_at < dt.datetime.now(dt.timezone.utc):
            return [Outgoing(device, "cmd-ack", {**ack, "status": "rejected", "reason": "expired before it arrived"})]
        if self.rng.random() < COMMAND_FAILURE_RATE:
            return [Outgoing(device, "cmd-ack", {**ack, "status": "failed", "reason": "the equipment did not respond"})]
        try:
            out = family.command(device, asset, cmd.command, cmd.params, now)
        except CommandRefused as exc:
            return [Outgoing(device, "cmd-ack", {**ack, "status": "rejected", "reason": str(exc)})]
        return [Outgoing(device, "cmd-ack", {**ack, "status": "done"}), *out]
