"""The monthly energy report: actual, forecast and pre-LED baseline per group, and the saving.

Pure: the API's adapter reads the meters and the lights' telemetry in SQL (aggregated server-side) and
hands the rows here. Two sources, each where it is right:
- **meters** (by cabinet, by commune): a cabinet's ``energy_kwh`` is the cumulative meter on its supply,
  the energy actually billed (lamps, drivers, control nodes, the cabinet's losses). The month's energy is
  the meter at the end of the month minus the meter at its start, each interpolated between the
  readings either side of the boundary when there are some; without, the span shrinks to the first
  and last reading of the month, and the forecast and baseline are taken over that same span.
- **light telemetry** (by street): only the lights know which street they stand on, so each light's
  ``power_w`` readings are integrated (each reading holds until the next one, for at most
  ``HOLD_S``: a longer gap is no data, not the last value repeated), again against a forecast and a
  baseline over the span it reported.
Groups with no data give nulls, never zeros: no data is not no consumption.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .energy import (
    GOAL_SAVING_PCT,
    PRE_LED_DEFAULT_W,
    PRE_LED_FALLBACK_W,
    SpanHours,
    meets_goal,
    saving_pct,
    vs_forecast_pct,
)
from .policy import light_profile

HOLD_S = 900.0  # a light reading holds 15 minutes at most (three of the cabinets' 5-minute reports)


@dataclass
class LightClass:
    """Lights of one profile under one reporting unit (a cabinet, or a single light)."""

    attributes: Mapping[str, Any]  # street_type, safety_floor_pct, ecological_corridor, presence_detection
    lights: int
    lamp_w: float           # Σ lamp_power_w of those that have one
    pre_led_w: float | None  # Σ pre_led_power_w of those that have one
    with_pre_led: int


@dataclass
class Unit:
    """A cabinet (meter) or a light (telemetry): its measured energy over [t0, t1], and its lights."""

    group: Hashable
    classes: list[LightClass]
    actual_kwh: float | None = None
    t0: float | None = None  # epoch seconds
    t1: float | None = None
    meter_reset: bool = False


@dataclass
class Figures:
    units: int = 0
    units_with_data: int = 0
    lights: int = 0
    actual: float = 0.0
    forecast: float = 0.0
    baseline: float = 0.0
    forecast_all: float = 0.0   # over the whole period, for groups without data
    baseline_all: float = 0.0
    covered_s: float = 0.0
    period_s: float = 0.0
    meter_resets: int = 0

    def add(self, other: Figures) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, Any]:
        data = self.units_with_data > 0
        actual = self.actual if data else None
        forecast = self.forecast if data else self.forecast_all
        baseline = self.baseline if data else self.baseline_all
        saving = saving_pct(actual, baseline)
        return {"actual_kwh": _round(actual), "forecast_kwh": _round(forecast), "baseline_kwh": _round(baseline),
                "saving_pct": _round(saving), "vs_forecast_pct": _round(vs_forecast_pct(actual, forecast)),
                "meets_goal": meets_goal(saving, GOAL_SAVING_PCT),
                "coverage_pct": _round(100.0 * self.covered_s / self.period_s) if self.period_s else None,
                "lights": self.lights}


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


def interpolated(boundary: float, inside: tuple[float, float] | None,
                 outside: tuple[float, float] | None) -> tuple[float, float] | None:
    """The meter (time, kWh) at ``boundary``: interpolated from the readings either side, else the
    nearest reading inside the period (the span then starts or ends there)."""
    if inside is None:
        return None
    if outside is None or outside[0] == inside[0]:
        return inside
    (ti, vi), (to, vo) = inside, outside
    return boundary, vo + (vi - vo) * (boundary - to) / (ti - to)


def meter_unit(group: Hashable, classes: list[LightClass], start: float, end: float,
               first: tuple[float, float] | None, last: tuple[float, float] | None,
               before: tuple[float, float] | None, after: tuple[float, float] | None) -> Unit:
    """A cabinet's month from its meter readings (epoch seconds, cumulative kWh)."""
    a = interpolated(start, first, before)
    b = interpolated(end, last, after)
    unit = Unit(group, classes)
    if a is None or b is None or b[0] <= a[0]:
        return unit
    used = b[1] - a[1]
    if used < 0:  # the meter was replaced or reset: this month's figure is unknown
        unit.meter_reset = True
        return unit
    unit.actual_kwh, unit.t0, unit.t1 = used, a[0], b[0]
    return unit


def _profile_key(attributes: Mapping[str, Any]) -> tuple[str | None, float, bool, bool]:
    return light_profile(attributes)


def _pre_led_total(cls: LightClass) -> float:
    default = PRE_LED_DEFAULT_W.get(str(cls.attributes.get("street_type")), PRE_LED_FALLBACK_W)
    return (cls.pre_led_w or 0.0) + (cls.lights - cls.with_pre_led) * default


def figures(units: Iterable[Unit], start: dt.datetime, end: dt.datetime,
            covered: Mapping[int, float] | None = None) -> dict[Hashable, Figures]:
    """The figures of each group. ``covered`` (unit index → seconds), for telemetry units, says how much of
    their span had readings; a meter's span is covered whole."""
    units = list(units)
    spans = SpanHours(start, end)
    s0, s1 = start.timestamp(), end.timestamp()
    period = s1 - s0
    out: dict[Hashable, Figures] = defaultdict(Figures)
    # (profile, unit index, lamp W, pre-LED W, t0, t1, with data) rows, evaluated per profile at once
    rows: dict[Any, list[tuple[int, float, float, float, float, bool]]] = defaultdict(list)
    for k, unit in enumerate(units):
        fig = out[unit.group]
        fig.units += 1
        fig.lights += sum(c.lights for c in unit.classes)
        fig.period_s += period
        fig.meter_resets += unit.meter_reset
        data = unit.actual_kwh is not None
        if data:
            fig.units_with_data += 1
            fig.actual += unit.actual_kwh or 0.0
            fig.covered_s += covered.get(k, 0.0) if covered is not None else (unit.t1 or 0) - (unit.t0 or 0)
        for cls in unit.classes:
            rows[_profile_key(cls.attributes)].append((k, cls.lamp_w, _pre_led_total(cls),
                                                       unit.t0 if data else s0, unit.t1 if data else s1, data))
    for key, items in rows.items():
        arr = np.array([(t0, t1) for _, _, _, t0, t1, _ in items], dtype=float)
        plan = spans.hours(key, arr[:, 0], arr[:, 1])
        dark = spans.hours(None, arr[:, 0], arr[:, 1])
        full_plan = float(spans.hours(key, [s0], [s1])[0])
        full_dark = float(spans.hours(None, [s0], [s1])[0])
        for (k, lamp_w, pre_w, _, _, data), p, d in zip(items, plan.tolist(), dark.tolist()):
            fig = out[units[k].group]
            if data:
                fig.forecast += lamp_w * p / 1000.0
                fig.baseline += pre_w * d / 1000.0
            fig.forecast_all += lamp_w * full_plan / 1000.0
            fig.baseline_all += pre_w * full_dark / 1000.0
    return dict(out)


def total(groups: Mapping[Hashable, Figures]) -> Figures:
    out = Figures()
    for fig in groups.values():
        out.add(fig)
    return out
