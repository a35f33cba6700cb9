"""The database's shortlist gives the same recommendations as ranking every team in Python.

``dispatch.teams.shortlist`` lets PostgreSQL keep only the nearest eligible teams of each vehicle type;
the domain then ranks them. This checks, on a mixed fleet written straight into the database (several
vehicle types, unknown ones, every status, stale and missing positions, a vehicle terminal's newer work
status, teams parked at the same spot so that the tie-break decides), that the answer is exactly the
one the full ranking gives, excluded teams and their reasons included.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
from typing import Any

import psycopg

from citypilot.dispatch import nearest, teams
from citypilot.dispatch.routing import StraightLine
from citypilot.dispatch.service import recommend

STALE_S = 120.0
TYPES = ["van", "car", "sweeper", "bucket_truck", None, "hovercraft"]  # None: no type; hovercraft: unknown speed


async def _fleet(conn: psycopg.AsyncConnection, service: str, now: dt.datetime, rng: random.Random, size: int) -> None:
    spots = [(47.30 + rng.random() * 0.06, 4.98 + rng.random() * 0.12) for _ in range(size // 3)]
    for i in range(size):
        team_id, vehicle = f"{service}-T{i:03d}", f"{service}-V{i:03d}"
        has_vehicle = rng.random() > 0.05
        if has_vehicle:
            lat, lon = rng.choice(spots) if rng.random() < 0.3 else (47.28 + rng.random() * 0.1,
                                                                   4.95 + rng.random() * 0.18)
            vtype = rng.choice(TYPES)
            await conn.execute(
                "INSERT INTO assets (id, kind, name, commune, lat, lon, pt, service, status, attributes, search_text) "
                "VALUES (%s, 'service_vehicle', %s, 'Dijon', %s, %s, point(%s, %s), %s, 'in_service', %s, %s)",
                (vehicle, vehicle, lat, lon, lon, lat, service,
                 json.dumps({"vehicle_type": vtype} if vtype else {}), vehicle))
        status_at = now - dt.timedelta(seconds=rng.uniform(0, 600))
        await conn.execute(
            "INSERT INTO teams (id, name, service, vehicle_id, status, status_at) VALUES (%s, %s, %s, %s, %s, %s)",
            (team_id, f"Crew {i}", service, vehicle if has_vehicle else None,
             rng.choice(["available"] * 6 + ["en_route", "on_scene", "busy", "off_duty"]), status_at))
        if has_vehicle and rng.random() > 0.05:  # some vehicles have never reported
            age = rng.choice([rng.uniform(0, 60)] * 8 + [rng.uniform(STALE_S - 1, STALE_S + 1), rng.uniform(200, 900)])
            values: dict[str, Any] = {"lat": lat, "lon": lon}
            if rng.random() < 0.3:
                values["work_status"] = rng.choice(["available", "en_route", "on_site", "off_duty", "lunch"])
            await conn.execute(
                "INSERT INTO twin (asset_id, kind, ts, received_at, values, last_seen) "
                "VALUES (%s, 'service_vehicle', %s, %s, %s, %s)",
                (vehicle, now - dt.timedelta(seconds=age), now, json.dumps(values), now))


async def _compare(database_url: str) -> int:
    rng = random.Random(20261206)
    now = dt.datetime.now(dt.timezone.utc)
    service = "shortlist-test"
    compared = 0
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        try:
            await _fleet(conn, service, now, rng, 400)
            for _ in range(25):
                lat, lon = 47.28 + rng.random() * 0.1, 4.95 + rng.random() * 0.18
                for limit in (1, 5, 50):
                    got = await recommend(conn, service, lat, lon, StraightLine(), now, STALE_S, limit)
                    everyone = await teams.candidates(conn, service)
                    ok, excluded = nearest.eligible(everyone, service, now, STALE_S)
                    expected = [r.team_id for r in nearest.rank(ok, lat, lon, None, limit)]
                    assert [r["team_id"] for r in got["recommendations"]] == expected, (lat, lon, limit)
                    assert sorted((e["team_id"], e["reason"]) for e in got["excluded"]) == sorted(
                        (e.team_id, e.reason) for e in excluded)
                    assert (got["considered"], got["eligible"]) == (len(everyone), len(ok))
                    compared += 1
        finally:
            await conn.rollback()  # the fleet was never committed: nothing is left behind
    return compared


def test_the_shortlist_recommends_exactly_what_ranking_every_team_would(stack):
    assert asyncio.run(_compare(stack.endpoints.database_url)) == 75
