"""Simulated time: a start instant and a speed, read against the wall clock.

The city behaves at simulated time (the sun, the timetables, the failure rates), while the messages
carry the wall-clock time they are sent at: citypilot refuses timestamps in the future, and a
control room reads its devices' reports in real time.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Callable
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")


@dataclass
class SimClock:
    start: dt.datetime  # aware
    speed: float = 1.0
    source: Callable[[], float] = time.monotonic  # the wall clock (tests turn it by hand)
    _wall0: float = field(init=False)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("the simulated start needs a time zone")
        if not self.speed > 0:
            raise ValueError("speed must be positive")
        self._wall0 = self.source()

    def now(self) -> dt.datetime:
        """The simulated instant now."""
        return self.start + dt.timedelta(seconds=(self.source() - self._wall0) * self.speed)


def local(moment: dt.datetime) -> dt.datetime:
    """The instant in Dijon's time zone."""
    return moment.astimezone(PARIS)
