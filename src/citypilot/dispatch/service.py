"""Recommend the teams to send: candidates from the database, travel times from the routing adapter,
the ranking from the pure domain (``nearest.py``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import psycopg

from . import nearest, teams
from .routing import Origin, Routing, StraightLine


async def recommend(conn: psycopg.AsyncConnection, service: str, lat: float, lon: float, routing: Routing,
                    now: dt.datetime, stale_after_s: float, limit: int = 5) -> dict[str, Any]:
    """The nearest available teams of ``service`` to (lat, lon), best first, and why the others are not."""
    if isinstance(routing, StraightLine):
        # The ranking computes the straight line itself, vectorised, on what the database shortlisted.
        short = await teams.shortlist(conn, service, lat, lon, now, stale_after_s, limit)
        ok, excluded = nearest.eligible(short.candidates, service, now, stale_after_s)
        ranked, method = nearest.rank(ok, lat, lon, None, limit, routing.detour), routing.name
        considered, eligible = short.considered, short.eligible
    else:  # a routing service may put any of them first: it is asked about every eligible team
        candidates = await teams.candidates(conn, service)
        ok, excluded = nearest.eligible(candidates, service, now, stale_after_s)
        times, method = await routing.travel_times([Origin(c.lat, c.lon, c.vehicle_type)  # type: ignore[arg-type]
                                                    for c, _ in ok], lat, lon)
        ranked = nearest.rank(ok, lat, lon, times, limit)
        considered, eligible = len(candidates), len(ok)
    return {"service": service, "routing": method, "considered": considered, "eligible": eligible,
            "recommendations": [dataclasses.asdict(r) for r in ranked],
            "excluded": [dataclasses.asdict(e) for e in excluded]}
