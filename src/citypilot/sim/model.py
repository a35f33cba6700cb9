"""What every simulated equipment family shares: outgoing messages, report schedules, random incidents.

The families (``lighting``, ``traffic``, ``fleet``, ``sites``) are plain Python with no I/O: given the
simulated time, they change their state and say what their devices send. The runner (``runner``)
puts that on MQTT. A family is driven by three calls:

- ``advance(now, elapsed_s)``: the state moves on by ``elapsed_s`` simulated seconds (vehicles drive,
  lamps fail, alarms ring), at the rates of a real city;
- ``due(wall_s)``: the reports that are due at wall-clock second ``wall_s``. Devices report on their own
  clocks, which are real: speeding the city up changes what they say, not how often they say it, so
  that the control centre's offline detection sees the intervals it expects;
- ``command(device, asset, name, params)``: a command received through the protocol, applied or refused.
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, Sequence, TypeVar

import numpy as np

from .clock import local

T = TypeVar("T")
YEAR_S = 365.25 * 86_400
FIRST_REPORT_WITHIN_S = 10.0


@dataclass
class Outgoing:
    """One MQTT message a device sends: on ``citypilot/v1/{device}/{channel}``."""

    device: str
    channel: str  # telemetry, state, event or cmd-ack
    payload: dict[str, Any]


class CommandRefused(Exception):
    """The device cannot do what it was asked (the reason goes back in its acknowledgement)."""


class Family(Protocol):
    kinds: tuple[str, ...]
    schedule: "Schedule"

    def advance(self, now: dt.datetime, elapsed_s: float) -> list[Outgoing]: ...

    def due(self, wall_s: float) -> list[Outgoing]: ...

    def command(self, device: str, asset: str, name: str, params: dict[str, Any], now: dt.datetime) -> list[Outgoing]: ...

    def devices(self) -> Iterable[str]: ...


@dataclass
class Schedule:
    """When each device next reports, on the wall clock: every ``interval`` seconds, each at its own phase
    of the interval (a city's devices do not all report on the same second). A silenced device is skipped.

    Every device also reports once within the first ``FIRST_REPORT_WITHIN_S`` seconds, as a real device
    does when it connects, so that the whole city is on the map at once, not after its slowest interval
    (an hour); then it keeps its own phase, so that this start-up burst does not come back every interval."""

    interval_s: dict[str, float]
    _heap: list[tuple[float, str]] = field(default_factory=list)
    _phase: dict[str, float] = field(default_factory=dict)
    silent: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for device, interval in self.interval_s.items():
            spread = (zlib.crc32(device.encode()) % 10_000) / 10_000
            self._phase[device] = spread * interval
            self._heap.append((spread * min(interval, FIRST_REPORT_WITHIN_S), device))
        heapq.heapify(self._heap)

    def due(self, wall_s: float) -> list[str]:
        """Devices whose report came due at or before ``wall_s`` (each once, however late the call)."""
        out = []
        while self._heap and self._heap[0][0] <= wall_s:
            _, device = heapq.heappop(self._heap)
            interval, phase = self.interval_s[device], self._phase[device]
            # The next instant of the device's phase after now: a late call (the process was busy) sends
            # one report, then the device keeps its rhythm.
            next_at = phase + interval * (math.floor((wall_s - phase) / interval) + 1)
            heapq.heappush(self._heap, (next_at, device))
            if device not in self.silent:
                out.append(device)
        return out


def incidents(rng: np.random.Generator, population: int, per_year: float, elapsed_s: float) -> int:
    """How many of ``population`` items suffer an incident happening ``per_year`` times a year to each,
    over ``elapsed_s`` simulated seconds (a Poisson draw)."""
    if population <= 0 or elapsed_s <= 0:
        return 0
    return int(rng.poisson(population * per_year * elapsed_s / YEAR_S))


def struck(rng: np.random.Generator, items: Sequence[T], per_year: float, elapsed_s: float) -> list[T]:
    """Which of ``items`` suffer an incident that happens ``per_year`` times a year to each, over
    ``elapsed_s`` simulated seconds: a Poisson count of distinct items."""
    count = min(incidents(rng, len(items), per_year, elapsed_s), len(items))
    return [items[i] for i in rng.choice(len(items), size=count, replace=False)] if count else []


def hours(now: dt.datetime) -> float:
    """Local time of day at Dijon, in hours (14.5 is half past two in the afternoon)."""
    here = local(now)
    return here.hour + here.minute / 60 + here.second / 3600


def iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="milliseconds")
