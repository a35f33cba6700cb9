"""``citypilot bench sim``: the simulated city at a given scale against a throw-away embedded stack.

It imports the city's registry, starts ``citypilot worker`` processes, runs the simulator for a while
and says whether the machine sustains that city: the simulator kept its ticks (``max_lag_s``), the
workers kept up (``backlog_max`` and the drain after the end), and every reading the devices sent is
stored or dead-lettered (``lost``). Latency runs from the device's send time to the twin change the
worker publishes after commit, for all messages and for the steady state: the messages sent after the
start-up burst (every device reports within its first ten seconds) has been absorbed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import time
from typing import Any

import nats
import nats.errors
import psycopg
from psycopg_pool import AsyncConnectionPool

from citypilot.config import Config
from citypilot.equipment.catalog import default_catalog
from citypilot.geo.communes import metropole
from citypilot.ingest.stream import backlog, ensure_stream
from citypilot.registry import service
from citypilot.runtime.embedded_nats import mqtt_login
from citypilot.sim.city import build_city
from citypilot.sim.clock import SimClock
from citypilot.sim.registry_file import registry_bytes
from citypilot.sim.runner import MqttTarget, Runner
from citypilot.sim.simulation import Simulation

from .ingest_bench import (
    _deltas,
    start_worker,
    _wait_for_balance,
    stop_workers,
    throwaway_stack,
)

DRAIN_LIMIT_S = 10.0
FIRST_REPORTS_S = 10.0  # every device reports once within its first 10 s (the start-up burst)
STEADY_BACKLOG = 200    # the burst is absorbed when the stream holds no more than this  # a city is sustained if the stream is empty this soon after the simulator stops


def scheduled_rates(sim: Simulation) -> tuple[float, float]:
    """Messages and readings a second that the devices' report intervals make, on average (arrivals and
    departures of parked cars and incidents come on top): the city's steady load."""
    messages = readings = 0.0
    for family in sim.families:
        for device, interval in family.schedule.interval_s.items():
            messages += 1 / interval
            per_message = 1 + sim.lighting.lights_count(sim.lighting.cabinet_index[device]) \
                if device in sim.lighting.cabinet_index else 1
            readings += per_message / interval
    return messages, readings


async def _backlog(js: Any) -> int:
    """Messages in the stream not yet acknowledged; -1 when JetStream is too busy to say within its timeout
    (under a start-up burst at scale 10 it can be): the sample is skipped, the run goes on."""
    try:
        return (await backlog(js)).total
    except nats.errors.TimeoutError:
        return -1


def run_sim_benchmark(config: Config, scale: int, duration_s: float, speed: float, workers: int, seed: int = 1) -> dict[str, Any]:
    with throwaway_stack(config) as (cfg, database_url, nats_url):
        return asyncio.run(_run(cfg, database_url, nats_url, scale, duration_s, speed, workers, seed))


async def _run(cfg: Config, database_url: str, nats_url: str, scale: int, duration_s: float, speed: float,
               workers_count: int, seed: int) -> dict[str, Any]:
    catalog, communes = default_catalog(), metropole()
    began = time.perf_counter()
    city = build_city(seed, scale, communes)
    build_s = time.perf_counter() - began
    began = time.perf_counter()
    async with AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False) as pool:
        await pool.open(wait=True)
        await service.import_file(pool, registry_bytes(city), "csv", actor="bench", source="bench", catalog=catalog,
                                  communes=communes)
    import_s = time.perf_counter() - began

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(nc, cfg.ingest_stream_max_bytes)
    latencies: list[float] = []
    steady: list[float] = []  # of messages sent after the first reports of every device (the start-up burst)
    steady_from = [float("inf")]

    async def on_delta(msg: Any) -> None:
        now = time.time()
        for delta in _deltas.decode(msg.data):
            sent = delta.ts.timestamp()
            (steady if sent >= steady_from[0] else latencies).append((now - sent) * 1000)

    await nc.subscribe("citypilot.twin.>", cb=on_delta)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYPILOT_")}
    env.update(CITYPILOT_DATABASE_URL=database_url, CITYPILOT_NATS_URL=nats_url, CITYPILOT_DATA_DIR=str(cfg.data_dir),
               CITYPILOT_LOG_LEVEL="warning")
    workers = [start_worker(env) for _ in range(workers_count)]
    backlog_max = 0
    steady_counts = (0, 0)
    try:
        await _wait_for_balance(database_url, workers_count)
        sim = Simulation(city, SimClock(dt.datetime.now(dt.timezone.utc), speed), "normal", seed)
        scheduled = scheduled_rates(sim)
        runner = Runner(sim, MqttTarget("127.0.0.1", cfg.mqtt_port, *mqtt_login(cfg.mqtt_port)))
        await runner.connect()
        cpu0 = time.process_time()
        started = time.time()
        running = asyncio.create_task(runner.run(duration_s))
        while not running.done():
            pending = await _backlog(js)
            backlog_max = max(backlog_max, pending)
            if steady_from[0] == float("inf") and 0 <= pending <= STEADY_BACKLOG and time.time() - started > FIRST_REPORTS_S:
                steady_from[0] = time.time()  # the first reports of every device are stored: steady state
                steady_counts = (runner.stats.messages, runner.stats.readings)
            await asyncio.sleep(0.5)
        stats = await running
        ended = time.time()
        sim_cpu = time.process_time() - cpu0
        await runner.close(wait_s=30)
        stopped = time.perf_counter()
        while await _backlog(js) and time.perf_counter() - stopped < 120:
            await asyncio.sleep(0.1)
        drain_s = time.perf_counter() - stopped
        await asyncio.sleep(0.5)  # the last twin changes
    finally:
        stop_workers(workers)
    await nc.close()
    with psycopg.connect(database_url) as conn:
        stored, dead, twin = conn.execute("SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM dead_letters), "
                                          "(SELECT count(*) FROM twin)").fetchone()
    latencies += steady
    latencies.sort()
    steady.sort()

    def pct(p: float, samples: list[float] = latencies) -> float | None:
        return round(samples[min(len(samples) - 1, int(len(samples) * p))], 1) if samples else None


    def steady_rate(which: int) -> int | None:
        if steady_from[0] == float("inf") or ended <= steady_from[0]:
            return None
        total = (stats.messages, stats.readings)[which]
        return round((total - steady_counts[which]) / (ended - steady_from[0]))

    sustained = stats.max_lag_s < 1.0 and drain_s <= DRAIN_LIMIT_S
    return {
        "benchmark": "sim", "scale": scale, "assets": len(city.assets), "speed": speed, "workers": workers_count,
        "duration_s": duration_s, "city_build_s": round(build_s, 2), "registry_import_s": round(import_s, 2),
        "messages": stats.messages, "msgs_per_s": round(stats.messages / duration_s),
        "readings": stats.readings, "readings_per_s": round(stats.readings / duration_s),
        "by_channel": stats.by_channel, "simulator_process_cpu_s": round(sim_cpu, 1),
        "simulator_max_lag_s": round(stats.max_lag_s, 3), "backlog_max": backlog_max, "drain_after_end_s": round(drain_s, 2),
        "p50_ms": pct(0.5), "p99_ms": pct(0.99),
        "startup_burst_absorbed_s": round(steady_from[0] - started, 1) if steady_from[0] != float("inf") else None,
        "schedule_msgs_per_s": round(scheduled[0]), "schedule_readings_per_s": round(scheduled[1]),
        "steady_msgs_per_s": steady_rate(0), "steady_readings_per_s": steady_rate(1),
        "steady_p50_ms": pct(0.5, steady), "steady_p99_ms": pct(0.99, steady), "steady_samples": len(steady), "readings_stored": stored, "dead_lettered": dead,
        "lost": stats.readings - stored - dead, "assets_in_twin": twin, "sustained": sustained,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
