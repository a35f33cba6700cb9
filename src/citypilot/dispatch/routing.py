"""Travel times for dispatch: the straight line with a detour factor by default, or a routing service.

A city that runs a routing engine (OSRM, or anything that answers OSRM's ``table`` service) sets
``CITYPILOT_DISPATCH_ROUTING_URL`` and dispatch ranks teams by its road travel times. When the service
is down or slow, dispatch does not stop: it falls back to the straight line and says so in its answer
(``routing``), because a coordinator must still be able to send someone.
"""

from __future__ import annotations

import logging
from typing import NamedTuple, Protocol, Sequence

import httpx

from citypilot.config import Config

from .nearest import haversine_m, straight_line_travel_s

log = logging.getLogger("citypilot.dispatch")
ROUTING_TIMEOUT_S = 2.0


class Origin(NamedTuple):
    """Where a vehicle is (a tuple: one per candidate, a thousand per recommendation)."""

    lat: float
    lon: float
    vehicle_type: str | None


class Routing(Protocol):
    name: str

    async def travel_times(self, origins: Sequence[Origin], lat: float, lon: float) -> tuple[list[float], str]:
        """Seconds from each origin to (lat, lon), and the method that gave them."""
        ...


class StraightLine:
    """Distance as the crow flies times the detour factor, at the vehicle type's urban speed."""

    name = "straight_line"

    def __init__(self, detour: float = 1.3) -> None:
        self.detour = detour

    async def travel_times(self, origins: Sequence[Origin], lat: float, lon: float) -> tuple[list[float], str]:
        return [straight_line_travel_s(haversine_m(o.lat, o.lon, lat, lon), o.vehicle_type, self.detour)
                for o in origins], self.name


class OsrmTable:
    """OSRM's table service: ``GET {url}/table/v1/driving/{lon,lat;...}?sources=1;2;..&destinations=0``."""

    name = "osrm"

    def __init__(self, url: str, fallback: StraightLine, timeout_s: float = ROUTING_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.fallback = fallback
        self.client = httpx.AsyncClient(timeout=timeout_s)

    async def travel_times(self, origins: Sequence[Origin], lat: float, lon: float) -> tuple[list[float], str]:
        if not origins:
            return [], self.name
        coordinates = ";".join(f"{p[1]:.6f},{p[0]:.6f}" for p in [(lat, lon), *((o.lat, o.lon) for o in origins)])
        sources = ";".join(str(i) for i in range(1, len(origins) + 1))
        try:
            response = await self.client.get(f"{self.url}/table/v1/driving/{coordinates}",
                                             params={"sources": sources, "destinations": "0"})
            response.raise_for_status()
            body = response.json()
            if body.get("code") != "Ok":
                raise ValueError(f"routing service answered {body.get('code')!r}: {body.get('message', '')}")
            durations = [row[0] for row in body["durations"]]
            if len(durations) != len(origins):
                raise ValueError("routing service answered for another number of vehicles")
        except (httpx.HTTPError, ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning("routing service failed; straight line used", extra={"error": f"{type(exc).__name__}: {exc}"})
            times, _ = await self.fallback.travel_times(origins, lat, lon)
            return times, f"straight_line (routing service failed: {type(exc).__name__})"
        fallback, _ = await self.fallback.travel_times(origins, lat, lon)
        # An unroutable pair (null) keeps the straight-line estimate rather than dropping the vehicle.
        return [float(d) if isinstance(d, (int, float)) else f for d, f in zip(durations, fallback)], self.name


def routing_for(config: Config) -> Routing:
    straight = StraightLine(config.dispatch_detour_percent / 100)
    if config.dispatch_routing_url:
        return OsrmTable(config.dispatch_routing_url, straight)
    return straight
