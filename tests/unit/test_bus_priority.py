"""Bus priority per line in the simulated city: which lines a junction serves, and the events it reports."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import numpy as np
import pytest

from citypilot.safety.junctions import four_arm_layout, standard_plans
from citypilot.sim.city import M_PER_DEG_LAT, M_PER_DEG_LON, Route, build_city
from citypilot.sim.clock import PARIS
from citypilot.sim.traffic import Traffic, lines_near, red_wait_s


def _route(name: str, *points_m: tuple[float, float]) -> Route:
    """A line through points given in metres east and north of (5.04, 47.32)."""
    return Route(name, np.array([(5.04 + x / M_PER_DEG_LON, 47.32 + y / M_PER_DEG_LAT) for x, y in points_m]))


def test_a_junction_serves_the_lines_passing_near_it_and_else_the_nearest() -> None:
    east_west = _route("L1", (-2000, 0), (2000, 0))
    north_south = _route("L2", (500, -2000), (500, 2000))
    far = _route("L3", (5000, 5000), (6000, 5000))
    at = (5.04, 47.32 + 100 / M_PER_DEG_LAT)  # 100 m north of L1, 500 m west of L2
    assert lines_near(*at, [east_west, north_south, far]) == ["L1"]
    assert lines_near(*at, [east_west, north_south, far], within_m=600) == ["L1", "L2"]
    # between the ends of a segment, not only at its points: L2's segment passes 500 m away
    assert lines_near(*at, [north_south, far]) == ["L2"]
    assert lines_near(*at, []) == []


def test_the_time_a_granted_request_saves_is_the_red_of_the_bus_group() -> None:
    layout = four_arm_layout()
    for plan in standard_plans().values():
        wait = red_wait_s(plan, layout.bus_groups)
        green = sum(d for _, d in plan.greens["B1"])
        assert wait == pytest.approx(plan.cycle_s - green)
        assert 0 < wait < plan.cycle_s


def test_each_request_is_reported_with_its_line_and_outcome() -> None:
    city = build_city(seed=3, scale=1)
    start = dt.datetime(2026, 6, 3, 9, 30, tzinfo=PARIS)  # a Wednesday morning: buses run, plan 3 (day)
    traffic = Traffic(city, np.random.default_rng(3), start)
    equipped = [j for j in traffic.junctions if j.bus_priority]
    names = {line.name for line in city.lines}
    assert equipped and all(j.lines and set(j.lines) <= names for j in equipped)
    assert all(not j.lines for j in traffic.junctions if not j.bus_priority)
    events = []
    now = start
    for _ in range(600):  # ten simulated hours in one-minute steps
        now += dt.timedelta(seconds=60)
        events += [m for m in traffic.advance(now, 60.0) if m.payload.get("code") == "bus_priority"]
    by_junction = defaultdict(list)
    for m in events:
        by_junction[m.device].append(m.payload)
    assert len(events) == sum(j.requests for j in equipped) > 500
    for j in equipped:
        mine = by_junction[j.id]
        assert all(p["data"]["line"] in j.lines for p in mine)
        assert sum(p["data"]["granted"] for p in mine) == j.controller.bus_granted
        stamps = [p["ts"] for p in mine]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), "each request is its own event"
    granted = [p["data"] for p in (m.payload for m in events) if p["data"]["granted"]]
    refused = [p["data"] for p in (m.payload for m in events) if not p["data"]["granted"]]
    assert granted and refused, "some buses find their lane green, others wait"
    assert all(d["saved_s"] > 0 for d in granted) and all(d["saved_s"] == 0 and d["refused"] for d in refused)
    assert len({d["line"] for d in granted}) > 3, "priority is reported for many lines"
