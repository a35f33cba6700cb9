"""What the interventions' browser tests set up through the API: assets with addresses, field teams with
a vehicle at a live position, work orders and the coordinator's actions on them.

``City.publish`` calls ``asyncio.run``: while a browser is open, call ``drive`` (which publishes) through
``off_thread``.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from ..integration.conftest import City, reading, utcnow


def import_assets(city: City, *rows: dict[str, Any]) -> list[str]:
    """Import assets with an address column (id suffix, kind, lat, lon, address) as admin."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "kind", "name", "lat", "lon", "address"])
    ids = []
    for row in rows:
        asset_id = city.id(row["id"])
        ids.append(asset_id)
        writer.writerow([asset_id, row["kind"], f"{row['kind']} {asset_id}", row["lat"], row["lon"], row.get("address", "")])
    r = city.client.post("/api/v1/assets/import", content=out.getvalue().encode(),
                         headers={**city.headers(), "Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json()["created"] == len(rows), r.text
    return ids


def make_team(city: City, suffix: str, lat: float, lon: float, members: list[str] | None = None) -> tuple[str, str]:
    """A lighting team with its own service vehicle (no position yet: ``drive`` gives one), available."""
    (vehicle,) = city.import_assets({"id": f"VAN-{suffix}", "kind": "service_vehicle", "lat": lat, "lon": lon})
    team_id = city.id(suffix)
    r = city.client.post("/api/v1/teams", headers=city.headers(), json={
        "id": team_id, "name": f"Crew {suffix}", "service": "lighting", "vehicle_id": vehicle, "members": members or []})
    assert r.status_code == 201, r.text
    r = city.client.post(f"/api/v1/teams/{team_id}/status", json={"status": "available"},
                         headers=city.headers("service_coordinator"))
    assert r.status_code == 200, r.text
    return team_id, vehicle


def drive(city: City, vehicle: str, lat: float, lon: float) -> None:
    """The vehicle reports a position now (through the real ingest stream) and the twin has it."""
    city.publish([(vehicle, "telemetry", reading(utcnow(), lat=lat, lon=lon, speed_kmh=0.0))])
    city.wait_state(vehicle, lambda s: abs(s["values"].get("lat", 0) - lat) < 1e-9, "vehicle position applied")


def create_order(city: City, title: str, lat: float, lon: float, priority: str = "normal",
                 role: str = "service_coordinator") -> dict[str, Any]:
    r = city.client.post("/api/v1/work-orders", headers=city.headers(role), json={
        "title": title, "service": "lighting", "lat": lat, "lon": lon, "priority": priority})
    assert r.status_code == 201, r.text
    return r.json()


def get_order(city: City, order_id: int, role: str = "admin") -> dict[str, Any]:
    r = city.client.get(f"/api/v1/work-orders/{order_id}", headers=city.headers(role))
    assert r.status_code == 200, r.text
    return r.json()


def act(city: City, order: dict[str, Any] | int, action: str, role: str = "service_coordinator", **body: Any) -> dict[str, Any]:
    """An action on the order as it is now (its current version read first)."""
    current = get_order(city, order if isinstance(order, int) else order["id"])
    r = city.client.post(f"/api/v1/work-orders/{current['id']}/{action}", json=body,
                         headers={**city.headers(role), "If-Match": current["etag"]})
    assert r.status_code == 200, r.text
    return r.json()
