"""Dimming programmes per street type, and the planned level of a light at any moment.

Why relative anchors: a programme written in clock hours (dim at 22:00) is wrong half the year, because
the night at Dijon lasts from under 8 hours in June to over 15 in December. Windows are written as
anchors on the night (``sunset``, ``sunset+30``, ``sunrise-45``) or on the clock (``22:00``, for what
follows human activity), resolved for each night and clipped to it. Outside its windows a programme
burns at its ``default_pct`` from dusk to dawn; in daylight every light is off.

The binding rule from the safety interlocks holds whatever the programme, the traffic or the detectors
say: a planned level is never below the light's safety floor (crossings, stairs) and never above 100.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from citypilot.safety.interlocks import AssetFacts, safety_floor

from .astro import PARIS, sunrise_sunset

# Traffic-adaptive dimming: at or above this activity (0..1, the street's share of its busiest hour)
# the programme level holds; below, the level falls linearly to half of it when nothing moves.
ADAPTIVE_FULL_ACTIVITY = 0.5
ADAPTIVE_MAX_CUT = 0.5
# Presence detection: in a programme's dimmed windows the light idles at this level (or its safety
# floor, if higher) and goes to 100 % for PRESENCE_HOLD_S after each detection.
PRESENCE_IDLE_PCT = 10.0
PRESENCE_HOLD_S = 120.0
# For the forecast only: the expected share of the dimmed hours a presence street spends at full power
# (someone passes every few minutes early in the night, almost never at 3 a.m.: a tenth on average).
PRESENCE_EXPECTED_DUTY = 0.1
CORRIDOR = "ecological_corridor"
_ANCHOR = re.compile(r"^(?:(sunset|sunrise)([+-]\d{1,3})?|([01]\d|2[0-3]):([0-5]\d))$")


@dataclass(frozen=True)
class Window:
    """From ``start`` to ``end`` the programme burns at ``level_pct`` (anchors: see the module)."""

    start: str
    end: str
    level_pct: float

    def __post_init__(self) -> None:
        for anchor in (self.start, self.end):
            if not _ANCHOR.match(anchor):
                raise ValueError(f"bad anchor {anchor!r}: sunset, sunset+30, sunrise-45 or HH:MM")
        if not 0 <= self.level_pct <= 100:
            raise ValueError(f"level {self.level_pct} outside 0..100")


@dataclass(frozen=True)
class Programme:
    name: str
    description: str
    windows: tuple[Window, ...]
    default_pct: float = 100.0  # the dark hours outside every window

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "default_pct": self.default_pct,
                "windows": [{"from": w.start, "to": w.end, "level_pct": w.level_pct} for w in self.windows]}


# The programmes as data. Levels follow the usual French practice for LED renovations (full power in the
# evening while people are about, half or less in the dead of night, back up for the early commute).
PROGRAMMES: dict[str, Programme] = {p.name: p for p in (
    Programme("residential", "Housing streets: full in the evening, half from 22:00, 80 % before dawn",
              (Window("22:00", "05:30", 50.0), Window("05:30", "sunrise", 80.0))),
    Programme("commercial", "Shopping and centre streets: full until shops and bars close, 60 % from 23:00",
              (Window("23:00", "05:00", 60.0),)),
    Programme("bypass", "Through roads and bypasses: traffic all night, 70 % from 23:00 to 05:00",
              (Window("23:00", "05:00", 70.0),)),
    Programme("pedestrian", "Footpaths, parks, squares: 40 % from 22:00 to half an hour before sunrise "
              "(presence-detection streets idle lower and light up when someone passes)",
              (Window("22:00", "sunrise-30", 40.0),)),
    Programme(CORRIDOR, "Ecological corridor (green and blue belt): low intensity all night for bats and "
              "insects, 40 % for the first hour, 20 % after", (Window("sunset", "sunset+60", 40.0),),
              default_pct=20.0),
)}
FALLBACK = "residential"  # a street type without a programme of its own (crossing, stairs...) is lit as housing


@dataclass(frozen=True)
class Night:
    """The night that starts on the evening of ``date`` at Dijon."""

    date: dt.date
    sunset: dt.datetime
    sunrise: dt.datetime

    @property
    def hours(self) -> float:
        return (self.sunrise - self.sunset).total_seconds() / 3600


@dataclass(frozen=True)
class Segment:
    start: dt.datetime
    end: dt.datetime
    level_pct: float


def night_of(date: dt.date) -> Night:
    """The night from sunset on ``date`` to sunrise the next morning (local dates, astral at Dijon)."""
    _, sunset = sunrise_sunset(date)
    sunrise, _ = sunrise_sunset(date + dt.timedelta(days=1))
    return Night(date, sunset, sunrise)


def night_at(moment: dt.datetime) -> Night | None:
    """The night ``moment`` falls in, or None in daylight. ``moment`` must be aware."""
    if moment.tzinfo is None:
        raise ValueError("an aware datetime is needed (local time at Dijon is Europe/Paris)")
    here = moment.astimezone(PARIS)
    night = night_of(here.date() if here.hour >= 12 else here.date() - dt.timedelta(days=1))
    return night if night.sunset <= here < night.sunrise else None


def resolve(anchor: str, night: Night) -> dt.datetime:
    """The moment an anchor names on this night, clipped to it (22:00 before a June sunset is the sunset)."""
    match = _ANCHOR.match(anchor)
    if not match:
        raise ValueError(f"bad anchor {anchor!r}")
    if match.group(1):
        base = night.sunset if match.group(1) == "sunset" else night.sunrise
        moment = base + dt.timedelta(minutes=int(match.group(2) or 0))
    else:
        hour, minute = int(match.group(3)), int(match.group(4))
        day = night.date if hour >= 12 else night.date + dt.timedelta(days=1)
        moment = dt.datetime.combine(day, dt.time(hour, minute), PARIS)
    return min(max(moment, night.sunset), night.sunrise)


def programme_for(street_type: str | None, corridor: bool = False) -> Programme:
    """An ecological corridor's programme replaces its street's; unknown types are lit as housing."""
    if corridor:
        return PROGRAMMES[CORRIDOR]
    return PROGRAMMES.get(str(street_type), PROGRAMMES[FALLBACK])


def programme_timeline(programme: Programme, night: Night) -> list[Segment]:
    """The programme's levels over one night: contiguous segments from sunset to sunrise."""
    windows = sorted(((resolve(w.start, night), resolve(w.end, night), w.level_pct) for w in programme.windows),
                     key=lambda w: w[0])
    out: list[Segment] = []
    cursor = night.sunset
    for start, end, level in windows:
        start = max(start, cursor)
        if end <= start:
            continue
        if start > cursor:
            out.append(Segment(cursor, start, programme.default_pct))
        out.append(Segment(start, end, level))
        cursor = end
    if cursor < night.sunrise:
        out.append(Segment(cursor, night.sunrise, programme.default_pct))
    merged: list[Segment] = []
    for seg in out:
        if merged and merged[-1].level_pct == seg.level_pct:
            merged[-1] = Segment(merged[-1].start, seg.end, seg.level_pct)
        else:
            merged.append(seg)
    return merged


def clamp_floor(floor_pct: float) -> float:
    """A floor as a usable number: 0..100 (a floor above 100 % means full power; NaN means none)."""
    return 0.0 if not math.isfinite(floor_pct) else min(100.0, max(0.0, floor_pct))


def adaptive_factor(activity: float | None) -> float:
    """The share of the programme level kept for this activity: 1 when busy, down to 0.5 when empty."""
    if activity is None or not math.isfinite(activity):
        return 1.0
    return 1.0 - ADAPTIVE_MAX_CUT * (1.0 - min(1.0, max(0.0, activity) / ADAPTIVE_FULL_ACTIVITY))


def adjusted_level(programme_pct: float, *, floor_pct: float = 0.0, activity: float | None = None,
                   presence_detection: bool = False, detected: bool = False) -> float:
    """The programme's level at a moment of darkness, once traffic, presence and the floor are applied.

    Presence acts only where the programme dims (its evening full power is for everyone); elsewhere
    traffic-adaptive dimming takes off up to half. Then the safety floor, then 100 %."""
    if presence_detection and programme_pct < 100.0:
        level = 100.0 if detected else PRESENCE_IDLE_PCT
    else:
        level = programme_pct * adaptive_factor(activity)
    return float(min(100.0, max(clamp_floor(floor_pct), level)))


def programme_level(moment: dt.datetime, street_type: str | None, corridor: bool = False) -> float:
    """The programme's own level at ``moment``; in daylight, the level it starts or ends the night at.

    For cabinets whose astronomical clocks or light sensors switch a few minutes before sunset or after
    sunrise: they burn at the programme's edge level, not at nothing."""
    programme = programme_for(street_type, corridor)
    night = night_at(moment)
    if night is not None:
        here = moment.astimezone(PARIS)
        return next(s.level_pct for s in programme_timeline(programme, night) if s.start <= here < s.end)
    here = moment.astimezone(PARIS)
    if here.hour >= 12:
        return programme_timeline(programme, night_of(here.date()))[0].level_pct
    return programme_timeline(programme, night_of(here.date() - dt.timedelta(days=1)))[-1].level_pct


def planned_level(moment: dt.datetime, street_type: str | None, *, floor_pct: float = 0.0,
                  activity: float | None = None, presence_detection: bool = False,
                  since_detection_s: float | None = None, corridor: bool = False) -> float:
    """The level (%) a light should burn at ``moment``: 0 in daylight, else within [floor, 100].

    ``activity`` is the street's traffic or pedestrian activity (0..1, None when unknown: no adaptive
    dimming); ``since_detection_s`` the seconds since its presence detector last saw someone."""
    if night_at(moment) is None:
        return 0.0
    level = programme_level(moment, street_type, corridor)
    detected = since_detection_s is not None and 0.0 <= since_detection_s < PRESENCE_HOLD_S
    return adjusted_level(level, floor_pct=floor_pct, activity=activity, presence_detection=presence_detection,
                          detected=detected)


def night_timeline(date: dt.date, street_type: str | None, *, floor_pct: float = 0.0, corridor: bool = False,
                   presence_detection: bool = False, expected: bool = True) -> list[Segment]:
    """The planned levels of one night (sunset on ``date`` to sunrise), without traffic information.

    With ``expected`` (the forecast), a presence street's dimmed hours count at their expected mean,
    idle plus PRESENCE_EXPECTED_DUTY of full power; without it, at the idle level."""
    night = night_of(date)
    out = []
    for seg in programme_timeline(programme_for(street_type, corridor), night):
        level = adjusted_level(seg.level_pct, floor_pct=floor_pct, presence_detection=presence_detection)
        if expected and presence_detection and seg.level_pct < 100.0:
            level = min(100.0, level + PRESENCE_EXPECTED_DUTY * (100.0 - level))
        out.append(Segment(seg.start, seg.end, level))
    return out


def light_profile(attributes: Mapping[str, Any]) -> tuple[str | None, float, bool, bool]:
    """(street type, safety floor, corridor, presence detection) from a light's sheet attributes.

    The floor is the interlocks' own (``safety_floor_pct`` or the default by street type), so that the
    plan and the commands can never disagree about it."""
    street_type = attributes.get("street_type")
    floor = safety_floor(AssetFacts(id="", kind="street_light", status="in_service", attributes=attributes))
    return (str(street_type) if street_type is not None else None, floor,
            attributes.get(CORRIDOR) is True, attributes.get("presence_detection") is True)
