"""``citypilot bench requests``: citizens' requests through Open311 while the simulated city runs, and the
nearest-team recommendation among a thousand vehicles.

On a throw-away embedded stack it imports the simulated Dijon métropole, starts a real ``citypilot
serve`` (with its ingest worker and alarm engine), runs the simulator's devices over MQTT, and creates
a thousand field teams with vehicles whose positions arrive through the real ingest stream. Then it
POSTs Open311 requests open-loop at the target rate (each one scheduled at its instant: a slow answer
does not delay the next request, so latencies are not flattered by a waiting generator) from a process
of its own (``http_load``), and times each from its scheduled instant to the answer. Last, it asks for the teams to send to work orders of
the roads service, whose thousand teams all compete, and times the answers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import platform
import random
import secrets
import time
from typing import Any

import httpx
import nats
import psycopg
from psycopg_pool import AsyncConnectionPool

from citypilot.auth import accounts
from citypilot.citizens import clients
from citypilot.citizens.services import load_services
from citypilot.config import Config
from citypilot.dispatch import nearest
from citypilot.equipment.catalog import default_catalog
from citypilot.geo.communes import metropole
from citypilot.ingest import protocol
from citypilot.ingest.stream import ensure_stream
from citypilot.registry import service
from citypilot.runtime.embedded_nats import mqtt_login
from citypilot.runtime.ports import free_port
from citypilot.sim.city import build_city
from citypilot.sim.clock import SimClock
from citypilot.sim.registry_file import registry_bytes
from citypilot.sim.runner import MqttTarget, Runner
from citypilot.sim.simulation import Simulation

from .alarms_bench import _pct, _start_serve, _wait_ready
from .http_load import get_each, post_forms
from .ingest_bench import throwaway_stack

TEAM_SERVICE = "roads"  # potholes, obstructions and street furniture go to roads: its teams compete
POSITION_EVERY_S = 20.0


def run_requests_benchmark(config: Config, rate: float, duration_s: float, vehicles: int, recommendations: int,
                           warmup_s: float) -> dict[str, Any]:
    with throwaway_stack(config) as (cfg, database_url, nats_url):
        return asyncio.run(_run(cfg, database_url, nats_url, rate, duration_s, vehicles, recommendations, warmup_s))


def _vehicles_csv(count: int, rng: random.Random, points: list[tuple[float, float]]) -> tuple[bytes, list[str]]:
    lines = ["id,kind,name,lat,lon,service,attr.vehicle_type"]
    ids = []
    for i in range(count):
        lat, lon = rng.choice(points)
        vid = f"BENCH-VAN-{i + 1:04d}"
        ids.append(vid)
        lines.append(f"{vid},service_vehicle,Bench van {i + 1},{lat:.6f},{lon:.6f},{TEAM_SERVICE},"
                     f"{rng.choice(['van', 'truck', 'utility', 'car'])}")
    return ("\n".join(lines) + "\n").encode(), ids


async def _run(cfg: Config, database_url: str, nats_url: str, rate: float, duration_s: float, vehicle_count: int,
               recommendation_count: int, warmup_s: float) -> dict[str, Any]:
    catalog, communes = default_catalog(), metropole()
    categories = load_services(cfg.requests_services_file, dict(catalog.services))
    rng = random.Random(7)
    city = build_city(1, 1, communes)
    points = [(a.lat, a.lon) for a in city.assets if a.kind == "street_light"]
    vehicles_csv, vehicle_ids = _vehicles_csv(vehicle_count, rng, points)
    password = secrets.token_urlsafe(18)
    async with AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False) as pool:
        await pool.open(wait=True)
        await service.import_file(pool, registry_bytes(city), "csv", actor="bench", source="bench", catalog=catalog,
                                  communes=communes)
        await service.import_file(pool, vehicles_csv, "csv", actor="bench", source="bench", catalog=catalog,
                                  communes=communes)
        async with pool.connection() as conn:
            await accounts.add_user(conn, "bench", "supervisor", password, services=dict(catalog.services))
            _, api_key = await clients.issue(conn, "bench", "bench")
            async with conn.transaction():
                for i, vid in enumerate(vehicle_ids):
                    await conn.execute("INSERT INTO teams (id, name, service, vehicle_id, status) "
                                       "VALUES (%s, %s, %s, %s, 'available')",
                                       (f"BENCH-T{i + 1:04d}", f"Bench crew {i + 1}", TEAM_SERVICE, vid))

    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYPILOT_")}
    env.update(CITYPILOT_DATABASE_URL=database_url, CITYPILOT_NATS_URL=nats_url, CITYPILOT_DATA_DIR=str(cfg.data_dir),
               CITYPILOT_LOG_LEVEL="warning", CITYPILOT_INGEST_WORKERS="1",
               CITYPILOT_AUTH_SECRET_KEY=secrets.token_urlsafe(32))
    port = free_port()
    serve = _start_serve(env, port)
    nc = await nats.connect(nats_url)
    runner: Runner | None = None
    stop = asyncio.Event()
    try:
        base = f"http://127.0.0.1:{port}"
        await _wait_ready(base, serve)
        await ensure_stream(nc, cfg.ingest_stream_max_bytes)
        js = nc.jetstream()
        positions = asyncio.create_task(_drive(js, vehicle_ids, points, rng, stop))
        sim = Simulation(city, SimClock(dt.datetime.now(dt.timezone.utc), 1.0), "normal", 1)
        runner = Runner(sim, MqttTarget("127.0.0.1", cfg.mqtt_port, *mqtt_login(cfg.mqtt_port)))
        await runner.connect()
        simulating = asyncio.create_task(runner.run(duration_s + warmup_s + 120))
        await asyncio.sleep(warmup_s)  # the city's start-up burst (every device reports at once) is absorbed
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
            token = (await http.post("/api/v1/auth/login", json={"username": "bench", "password": password})
                     ).json()["access_token"]
            load = await _open311_load(port, api_key, categories, points, rng, rate, duration_s)
            rec = await _recommendations(http, port, token, recommendation_count)
        stop.set()
        await positions
        sim_stats = runner.stats
        simulating.cancel()
    finally:
        stop.set()
        if runner is not None:
            await runner.close(wait_s=5)
        await nc.close()
        serve.terminate()
        try:
            serve.wait(timeout=30)
        except Exception:  # noqa: BLE001 - a server that does not stop is killed
            serve.kill()
    rank_ms = _rank_only(vehicle_count, rng, points)
    with psycopg.connect(database_url) as conn:
        stored_requests, reports, linked, orders = conn.execute(
            "SELECT (SELECT count(*) FROM service_requests), (SELECT count(*) FROM request_reports), "
            "(SELECT count(*) FROM request_reports WHERE linked), (SELECT count(*) FROM work_orders)").fetchone()
    return {"benchmark": "requests", "rate_target": rate, "duration_s": duration_s, **load,
            "requests_stored": stored_requests, "reports_stored": reports, "linked_duplicates": linked,
            "work_orders": orders, "lost": load["created"] - reports,
            "simulator_messages": sim_stats.messages, "simulator_msgs_per_s": round(sim_stats.messages / max(
                1.0, duration_s + warmup_s)),
            **rec, "rank_only_ms": rank_ms,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}


async def _drive(js: Any, vehicle_ids: list[str], points: list[tuple[float, float]], rng: random.Random,
                 stop: asyncio.Event) -> None:
    """Every vehicle reports its position through the ingest stream every 20 s (spread over the period)."""
    per_tick = max(1, int(len(vehicle_ids) / POSITION_EVERY_S))
    index = 0
    while not stop.is_set():
        batch = []
        for _ in range(per_tick):
            vid = vehicle_ids[index % len(vehicle_ids)]
            index += 1
            lat, lon = rng.choice(points)
            body = {"ts": dt.datetime.now(dt.timezone.utc).isoformat(),
                    "values": {"lat": lat, "lon": lon, "speed_kmh": 0.0, "work_status": "available"}}
            batch.append(js.publish(protocol.subject(vid, "telemetry"), json.dumps(body).encode(), timeout=10))
        await asyncio.gather(*batch)
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass


def _form(categories: Any, points: list[tuple[float, float]], rng: random.Random, key: str) -> dict[str, str]:
    category = rng.choice(categories.services)
    communes = metropole()
    while True:  # a point near a street light, jittered, but still inside the metropole (or it is refused)
        lat, lon = rng.choice(points)
        lat += rng.uniform(-0.0005, 0.0005)
        lon += rng.uniform(-0.0005, 0.0005)
        if communes.locate(lon, lat) is not None:
            break
    form = {"api_key": key, "service_code": category.code, "lat": f"{lat:.6f}", "long": f"{lon:.6f}",
            "description": rng.choice(["Seen this morning", "It has been like this for a week", "Dangerous for bikes",
                                       "Please come quickly"]),
            "email": f"citizen{rng.randrange(10**6)}@example.org"}
    for attribute in category.attributes:
        if attribute.datatype == "singlevaluelist":
            form[f"attribute[{attribute.code}]"] = rng.choice(attribute.values)[0]
        elif attribute.datatype == "number":
            form[f"attribute[{attribute.code}]"] = str(rng.randrange(1, 30))
    return form


async def _open311_load(port: int, key: str, categories: Any, points: list[tuple[float, float]],
                        rng: random.Random, rate: float, duration_s: float) -> dict[str, Any]:
    total = int(rate * duration_s)
    forms = [_form(categories, points, rng, key) for _ in range(total)]
    result = await post_forms("127.0.0.1", port, "/open311/v2/requests.json", forms, rate)
    latencies = result.latencies_ms
    return {"requests": total, "created": result.statuses.get("201", 0), "statuses": result.statuses,
            "achieved_per_s": round(total / result.elapsed_s, 1), "p50_ms": _pct(latencies, 0.5),
            "p99_ms": _pct(latencies, 0.99), "max_ms": round(max(latencies), 1)}


async def _recommendations(http: httpx.AsyncClient, port: int, token: str, count: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    orders = (await http.get("/api/v1/work-orders", params={"service": TEAM_SERVICE, "state": "new", "limit": 200},
                             headers=headers)).json()["items"]
    if not orders:
        return {"recommend_calls": 0}
    # Timed from a process of its own: this one runs the simulated city, whose messages would delay
    # the answers' reading here (they were a third of the measured time).
    paths = [f"/api/v1/work-orders/{orders[i % len(orders)]['id']}/recommendations" for i in range(count)]
    result, last = await get_each("127.0.0.1", port, paths, [("Authorization", f"Bearer {token}")])
    answer = json.loads(last)
    latencies = result.latencies_ms
    return {"recommend_calls": count, "recommend_statuses": result.statuses,
            "recommend_vehicles_considered": answer["considered"], "recommend_eligible": answer["eligible"],
            "recommend_p50_ms": _pct(latencies, 0.5), "recommend_p99_ms": _pct(latencies, 0.99)}


def _rank_only(count: int, rng: random.Random, points: list[tuple[float, float]]) -> float:
    """The pure ranking alone, for a thousand candidates (what the domain costs, without the database)."""
    now = dt.datetime.now(dt.timezone.utc)
    fleet = [nearest.Candidate(f"T{i}", TEAM_SERVICE, "available", f"V{i}", "van", *rng.choice(points), now)
             for i in range(count)]
    runs = 50
    started = time.perf_counter()
    for _ in range(runs):
        ok, _ = nearest.eligible(fleet, TEAM_SERVICE, now)
        nearest.rank(ok, 47.322, 5.041)
    return round((time.perf_counter() - started) * 1000 / runs, 2)
