"""Which team should go: the nearest available team of the right service, from live vehicle positions.

Pure domain. By default the time to get there is the straight-line distance times a detour factor
(streets are not straight lines: 1.3 is the usual ratio in a European city) at a speed that depends on
the vehicle (a sweeper is slow, a car is not). A city that runs a routing service plugs it in
(``dispatch/routing.py``) and the same ranking uses its travel times. A position older than the
staleness limit is not trusted: that team is listed apart, with why, rather than sent from where it
was ten minutes ago.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

import numpy as np

DETOUR_FACTOR = 1.3
# Average urban speed by vehicle type, km/h, door to door (traffic lights, parking on arrival).
SPEED_KMH = {"car": 30.0, "van": 27.0, "utility": 25.0, "bucket_truck": 22.0, "truck": 20.0, "gritter": 20.0,
             "sweeper": 12.0}
DEFAULT_SPEED_KMH = 25.0
STALE_AFTER_S = 120.0  # service vehicles report every 5 s: two minutes of silence is a lost position
EARTH_RADIUS_M = 6_371_008.8
# Which team statuses can take a new job, best first: a team on its way to a lower-priority job may be
# diverted, but an available one is preferred at equal time.
DISPATCHABLE = ("available",)


class Candidate(NamedTuple):
    """A team that might go (a tuple: a thousand are built per recommendation, a frozen dataclass costs
    seven times more to build)."""

    team_id: str
    service: str
    status: str
    vehicle_id: str | None
    vehicle_type: str | None
    lat: float | None
    lon: float | None
    position_at: dt.datetime | None
    name: str = ""


@dataclass(frozen=True)
class Recommendation:
    team_id: str
    name: str
    vehicle_id: str | None
    distance_m: float          # as the crow flies
    travel_s: float            # estimated, with the detour factor or the routing service
    position_age_s: float
    status: str


@dataclass(frozen=True)
class Excluded:
    team_id: str
    reason: str                # wrong service, off duty, no vehicle position, stale position...


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def straight_line_travel_s(distance_m: float, vehicle_type: str | None, detour: float = DETOUR_FACTOR) -> float:
    speed = SPEED_KMH.get(vehicle_type or "", DEFAULT_SPEED_KMH)
    return distance_m * detour / (speed / 3.6)


def eligible(candidates: Iterable[Candidate], service: str, now: dt.datetime,
             stale_after_s: float = STALE_AFTER_S) -> tuple[list[tuple[Candidate, float]], list[Excluded]]:
    """Candidates that may go now, with their position's age; the others with the reason."""
    ok: list[tuple[Candidate, float]] = []
    excluded: list[Excluded] = []
    for c in candidates:
        if c.service != service:
            continue  # another service's team is not a candidate at all (not worth listing)
        if c.status not in DISPATCHABLE:
            excluded.append(Excluded(c.team_id, f"status {c.status}"))
        elif c.lat is None or c.lon is None or c.position_at is None:
            excluded.append(Excluded(c.team_id, "no vehicle position" if c.vehicle_id else "no vehicle"))
        else:
            age = (now - c.position_at).total_seconds()
            if age > stale_after_s:
                excluded.append(Excluded(c.team_id, f"position {int(age)} s old (limit {int(stale_after_s)} s)"))
            else:
                ok.append((c, max(0.0, age)))
    return ok, excluded


def rank(eligible_teams: Sequence[tuple[Candidate, float]], lat: float, lon: float,
         travel_s: Sequence[float] | None = None, limit: int = 5, detour: float = DETOUR_FACTOR) -> list[Recommendation]:
    """The teams by estimated travel time (the routing service's when given, in the same order as
    ``eligible_teams``; otherwise the straight line with ``detour``), nearest first; ties broken by
    distance, then team id (a stable answer).

    Vectorised (numpy): a recommendation weighs a thousand vehicles, and only the best few become
    Recommendations."""
    n = len(eligible_teams)
    if n == 0:
        return []
    lats = np.fromiter((c.lat for c, _ in eligible_teams), float, n)
    lons = np.fromiter((c.lon for c, _ in eligible_teams), float, n)
    p1, p2 = np.radians(lats), math.radians(lat)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * math.cos(p2) * np.sin(np.radians(lon - lons) / 2) ** 2
    distance = np.round(2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(a))), 1)
    if travel_s is None:
        speed = np.fromiter((SPEED_KMH.get(c.vehicle_type or "", DEFAULT_SPEED_KMH) for c, _ in eligible_teams),
                            float, n)
        seconds = np.round(distance * detour / (speed / 3.6), 1)
    else:
        seconds = np.round(np.asarray(travel_s, float), 1)
    if n > limit:  # every team that ties with the limit-th best stays in, for the tie-break
        cut = np.partition(seconds, limit - 1)[limit - 1]
        shortlist = np.nonzero(seconds <= cut)[0]
    else:
        shortlist = np.arange(n)
    keyed = sorted((float(seconds[i]), float(distance[i]), eligible_teams[i][0].team_id, int(i)) for i in shortlist)
    out = []
    for secs, metres, _team, i in keyed[:limit]:
        c, age = eligible_teams[i]
        out.append(Recommendation(c.team_id, c.name, c.vehicle_id, metres, secs, round(age, 1), c.status))
    return out
