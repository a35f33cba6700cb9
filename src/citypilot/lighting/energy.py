"""Street lighting's energy: the programme's forecast, the pre-LED baseline, and the saving against both.

Why these definitions:
- The **forecast** of a light is what its programme should cost: its LED power times its planned
  level, integrated over the dark hours (``policy.night_timeline``, without traffic information: the
  adaptive dimming it cannot foresee is what the telemetry should beat).
- The **pre-LED baseline** is what the same light cost before the renovation: the sodium lamp it
  replaced (its sheet's ``pre_led_power_w``, else the usual high-pressure sodium wattage for its street
  type) burning at full power from dusk to dawn, as the old cabinets did, with no dimming.
- The **saving** is 1 − actual / baseline: the figure of the energy-performance contract, whose goal is
  65 %.
The functions take spans of time so that a partial month (the current one, or a light that started
reporting mid-month) is compared with a forecast and a baseline over the same span, not the whole month.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .astro import PARIS
from .policy import Segment, night_of, night_timeline

GOAL_SAVING_PCT = 65.0
# Before LED, by street type: high-pressure sodium lamps (100 W in housing streets, 150 W in commercial
# ones, 250 W on through roads, 70 W on footpaths); the ballast's losses are left out, so the baseline
# errs low and the saving is never flattered.
PRE_LED_DEFAULT_W: Mapping[str, float] = {"residential": 100.0, "commercial": 150.0, "bypass": 250.0,
                                          "pedestrian": 70.0}
PRE_LED_FALLBACK_W = 100.0


def pre_led_power_w(attributes: Mapping[str, Any]) -> float:
    """The power of the lamp a light replaced: its sheet's figure, else the default for its street."""
    explicit = attributes.get("pre_led_power_w")
    if isinstance(explicit, (int, float)) and not isinstance(explicit, bool) and explicit >= 0:
        return float(explicit)
    return PRE_LED_DEFAULT_W.get(str(attributes.get("street_type")), PRE_LED_FALLBACK_W)


def nights_between(start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    """The evenings whose night overlaps [start, end)."""
    first = start.astimezone(PARIS).date() - dt.timedelta(days=1)
    last = end.astimezone(PARIS).date()
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    return [d for d in days if (n := night_of(d)).sunrise > start and n.sunset < end]


def overlap_hours(segments: Sequence[Segment], start: dt.datetime, end: dt.datetime) -> float:
    """Full-power-equivalent hours of ``segments`` within [start, end): Σ overlap × level / 100."""
    total = 0.0
    for seg in segments:
        s, e = max(seg.start, start), min(seg.end, end)
        if e > s:
            total += (e - s).total_seconds() / 3600 * seg.level_pct / 100.0
    return total


def timeline(start: dt.datetime, end: dt.datetime, street_type: str | None, *, floor_pct: float = 0.0,
             corridor: bool = False, presence_detection: bool = False) -> list[Segment]:
    """The planned segments of every night overlapping [start, end), as the forecast counts them."""
    return [seg for day in nights_between(start, end)
            for seg in night_timeline(day, street_type, floor_pct=floor_pct, corridor=corridor,
                                      presence_detection=presence_detection)]


def dark_segments(start: dt.datetime, end: dt.datetime) -> list[Segment]:
    """Dusk to dawn at full power: the pre-LED cabinets' timeline."""
    return [Segment((n := night_of(day)).sunset, n.sunrise, 100.0) for day in nights_between(start, end)]


def forecast_kwh(lamp_power_w: float, start: dt.datetime, end: dt.datetime, street_type: str | None, *,
                 floor_pct: float = 0.0, corridor: bool = False, presence_detection: bool = False) -> float:
    """The energy one light's programme should use over [start, end)."""
    segs = timeline(start, end, street_type, floor_pct=floor_pct, corridor=corridor,
                    presence_detection=presence_detection)
    return lamp_power_w * overlap_hours(segs, start, end) / 1000.0


def baseline_kwh(pre_led_w: float, start: dt.datetime, end: dt.datetime) -> float:
    """The energy the light's pre-LED lamp used over [start, end): full power dusk to dawn."""
    return pre_led_w * overlap_hours(dark_segments(start, end), start, end) / 1000.0


def saving_pct(actual_kwh: float | None, baseline: float | None) -> float | None:
    """1 − actual / baseline, in %; None without data (no data is not a 100 % saving)."""
    if actual_kwh is None or not baseline:
        return None
    return 100.0 * (1.0 - actual_kwh / baseline)


def vs_forecast_pct(actual_kwh: float | None, forecast: float | None) -> float | None:
    """How far the telemetry is from the programme's forecast: +10 means 10 % more than planned."""
    if actual_kwh is None or not forecast:
        return None
    return 100.0 * (actual_kwh / forecast - 1.0)


def meets_goal(saving: float | None, goal: float = GOAL_SAVING_PCT) -> bool | None:
    return None if saving is None else bool(saving >= goal)


# --- many spans at once (the monthly KPI: thousands of lights or cabinets) -------------------------

ProfileKey = tuple[str | None, float, bool, bool]  # street type, floor, corridor, presence


class SpanHours:
    """Full-power-equivalent hours over many [start, end) spans at once, per light profile.

    The month's timeline of each profile is built once (a few dozen segments), then the overlap with
    every span is one numpy broadcast: 34,000 lights cost milliseconds, not a loop over nights each."""

    def __init__(self, start: dt.datetime, end: dt.datetime) -> None:
        self.start, self.end = start, end
        self._cache: dict[ProfileKey | None, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _arrays(self, key: ProfileKey | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if key not in self._cache:
            self._cache[key] = self._build(key)
        return self._cache[key]

    def _build(self, key: ProfileKey | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pad = dt.timedelta(days=1)
        if key is None:
            segs = dark_segments(self.start - pad, self.end + pad)
        else:
            street_type, floor, corridor, presence = key
            segs = timeline(self.start - pad, self.end + pad, street_type, floor_pct=floor, corridor=corridor,
                            presence_detection=presence)
        return (np.array([s.start.timestamp() for s in segs]), np.array([s.end.timestamp() for s in segs]),
                np.array([s.level_pct / 100.0 for s in segs]))

    def hours(self, key: ProfileKey | None, starts: Iterable[float], ends: Iterable[float]) -> np.ndarray:
        """For epoch-second spans: the profile's equivalent hours (``key`` None: the dark hours)."""
        s0, s1, level = self._arrays(key)
        a = np.asarray(list(starts), dtype=float)[:, None]
        b = np.asarray(list(ends), dtype=float)[:, None]
        overlap = np.clip(np.minimum(b, s1) - np.maximum(a, s0), 0.0, None)
        return (overlap @ level) / 3600.0 if len(s0) else np.zeros(len(a))
