"""``citypilot bench alarms``: faults to alarms to operators' screens, under load, on a throw-away stack.

One run, everything real: embedded PostgreSQL and NATS, ``citypilot worker`` processes ingesting,
one ``citypilot serve`` process running the alarm engine and the WebSocket feed (no ingest of its
own), MQTT devices (gmqtt, QoS 1) and WebSocket clients (the ``websockets`` library) in this process.

1. Background: street lights report telemetry at ``rate`` messages/s for ``duration_s``.
2. ``clients`` operators keep the live feed open, all events, and the first ``twin_clients`` of them
   also the twin deltas of the whole city (map screens); each records how far behind it is: for an
   event, now minus the entry's ``recorded_at``; for a twin frame, now minus its newest delta's device
   time (that includes the feed's one-second batching).
3. Probes: ``probes_per_s`` times a second, one light (each under its own cabinet, so nothing is
   correlated away) reports a lamp failure; its latency is from the publish to the ``alarm.raised``
   event on each client's feed. Probes sent in the 10 s after the power cut began are reported apart.
4. A power cut at ``power_cut_at_s``: ``power_cut_lights`` lights of whole cabinets report a failure
   within one second. Measured: how long until all of them are alarms, how many top-level alarms
   that makes (correlation and storms), and the background's ingest latency (device -> twin delta)
   in the 10 s before and after.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import platform
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gmqtt
import httpx
import msgspec
import nats
import psycopg
from gmqtt.mqtt.constants import MQTTv311
from psycopg_pool import AsyncConnectionPool

from citypilot.auth import accounts
from citypilot.config import Config
from citypilot.equipment.catalog import default_catalog
from citypilot.geo.communes import metropole
from citypilot.ingest import protocol
from citypilot.registry import service
from citypilot.runtime.embedded_nats import mqtt_login
from citypilot.runtime.ports import free_port

from .ingest_bench import _deltas, _devices, _wait_for_balance, publish_jobs, start_worker, stop_workers, throwaway_stack
from .synthetic import registry_csv


CUT_WINDOW_S = 10.0  # probes sent this long after the power cut began are reported apart


@dataclass
class AlarmPlan:
    rate: float = 10_000.0
    duration_s: float = 60.0
    clients: int = 50
    twin_clients: int = 5
    probes_per_s: float = 4.0
    power_cut_at_s: float = 30.0
    power_cut_lights: int = 1000
    workers: int = 1
    publishers: int = 4
    lights: int = 34_000
    gateway: bool = False  # background as cabinet messages (31 lights' readings each): ``rate`` is then readings/s


class _Entry(msgspec.Struct):
    type: str
    recorded_at: dt.datetime
    asset_id: str | None = None


class _Delta(msgspec.Struct):
    ts: dt.datetime


class _Event(msgspec.Struct):
    entry: _Entry


class _Frame(msgspec.Struct):
    type: str
    entry: _Entry | None = None
    deltas: list[_Delta] | None = None
    events: list[_Event] | None = None  # an "events" frame: a burst, several event frames in one


_frames = msgspec.json.Decoder(_Frame)


@dataclass
class _Client:
    index: int
    twin: bool
    events: int = 0
    twin_frames: int = 0
    event_lag_max_s: float = 0.0
    twin_lag_max_s: float = 0.0
    closed: str | None = None


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))], 1)


def _start_serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    log_path = Path(env["CITYPILOT_DATA_DIR"]) / "serve.log"
    return subprocess.Popen([str(Path(sys.executable).parent / "citypilot"), "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=log_path.open("wb"))


async def _wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"citypilot serve exited with {process.returncode}")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("citypilot serve was not ready within a minute")


def run_alarms_benchmark(config: Config, plan: AlarmPlan) -> dict[str, Any]:
    with throwaway_stack(config) as (cfg, database_url, nats_url):
        return asyncio.run(_run(cfg, database_url, nats_url, plan))


async def _run(cfg: Config, database_url: str, nats_url: str, plan: AlarmPlan) -> dict[str, Any]:
    import websockets

    catalog, communes = default_catalog(), metropole()
    registry = registry_csv(communes, plan.lights + plan.lights // 31 + 1, seed=11)
    lights, by_cabinet = _devices(registry)
    cabinets = sorted(by_cabinet)
    password = secrets.token_urlsafe(18)
    async with AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False) as pool:
        await pool.open(wait=True)
        await service.import_file(pool, registry, "csv", actor="bench", source="bench", catalog=catalog, communes=communes)
        async with pool.connection() as conn:
            await accounts.add_user(conn, "bench", "supervisor", password, services=dict(catalog.services))

    # Cabinets whose lights go dark in the power cut; one light each of other cabinets for the probes.
    cut_cabinets: list[str] = []
    for cabinet in cabinets[len(cabinets) // 2:]:
        if sum(len(by_cabinet[c]) for c in cut_cabinets) >= plan.power_cut_lights:
            break
        cut_cabinets.append(cabinet)
    cut_lights = [light for c in cut_cabinets for light in by_cabinet[c]][:plan.power_cut_lights]
    probe_count = int(plan.duration_s * plan.probes_per_s) + 1
    probe_lights = [by_cabinet[c][0] for c in cabinets[:len(cabinets) // 2]][:probe_count]

    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYPILOT_")}
    env.update(CITYPILOT_DATABASE_URL=database_url, CITYPILOT_NATS_URL=nats_url, CITYPILOT_DATA_DIR=str(cfg.data_dir),
               CITYPILOT_LOG_LEVEL="warning", CITYPILOT_INGEST_WORKERS="0",
               CITYPILOT_AUTH_SECRET_KEY=secrets.token_urlsafe(32))
    port = free_port()
    serve = _start_serve(env, port)
    workers: list[subprocess.Popen[bytes]] = []
    nc = await nats.connect(nats_url)
    try:
        base = f"http://127.0.0.1:{port}"
        await _wait_ready(base, serve)
        workers = [start_worker(env) for _ in range(plan.workers)]
        await _wait_for_balance(database_url, plan.workers)
        async with httpx.AsyncClient(base_url=base) as http:
            token = (await http.post("/api/v1/auth/login", json={"username": "bench", "password": password})).json()["access_token"]
        return await _measure(cfg, plan, nc, database_url, f"ws://127.0.0.1:{port}/api/v1/live", token, lights,
                              by_cabinet, probe_lights, cut_lights, websockets)
    finally:
        await nc.close()
        stop_workers(workers)
        serve.terminate()
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()


async def _measure(cfg: Config, plan: AlarmPlan, nc: Any, database_url: str, ws_url: str, token: str, lights: list[str],
                   by_cabinet: dict[str, list[str]], probe_lights: list[str], cut_lights: list[str],
                   websockets: Any) -> dict[str, Any]:
    probe_sent: dict[str, float] = {}
    probe_latencies: list[float] = []  # steady state
    cut_latencies: list[float] = []    # probes sent in the 10 s after the power cut began
    cut_started = [0.0]
    to_commit: list[float] = []
    to_screen: list[float] = []
    clients = [_Client(i, i < plan.twin_clients) for i in range(plan.clients)]
    measuring = [False]

    async def operator(client: _Client, ready: asyncio.Event) -> None:
        url = f"{ws_url}?access_token={token}&twin={'true' if client.twin else 'false'}"
        try:
            async with websockets.connect(url, max_size=16 * 1024 * 1024, open_timeout=30) as ws:
                ready.set()
                async for message in ws:
                    now = time.time()
                    frame = _frames.decode(message)
                    entries = [frame.entry] if frame.type == "event" and frame.entry is not None else \
                        [e.entry for e in frame.events] if frame.type == "events" and frame.events else []
                    for entry in entries:
                        client.events += 1
                        if measuring[0]:
                            client.event_lag_max_s = max(client.event_lag_max_s, now - entry.recorded_at.timestamp())
                        if entry.type == "alarm.raised" and entry.asset_id in probe_sent:
                            sent = probe_sent[entry.asset_id]
                            in_cut = cut_started[0] and cut_started[0] <= sent < cut_started[0] + CUT_WINDOW_S
                            (cut_latencies if in_cut else probe_latencies).append((now - sent) * 1000)
                            if client.index == 0:  # where the time goes: to the alarm's commit, then to the screen
                                to_commit.append((entry.recorded_at.timestamp() - sent) * 1000)
                                to_screen.append((now - entry.recorded_at.timestamp()) * 1000)
                    if frame.type == "twin" and frame.deltas:
                        client.twin_frames += 1
                        if measuring[0]:
                            newest = max(d.ts for d in frame.deltas).timestamp()
                            client.twin_lag_max_s = max(client.twin_lag_max_s, now - newest)
        except Exception as exc:  # a client the server closed: recorded, and counted as fallen behind
            client.closed = f"{type(exc).__name__}: {exc}"[:200]
            ready.set()

    readies = [asyncio.Event() for _ in clients]
    tasks = [asyncio.create_task(operator(c, r)) for c, r in zip(clients, readies)]
    await asyncio.gather(*(r.wait() for r in readies))

    # Ingest latency of the background (device -> twin delta), by second since the start.
    start = time.time()
    ingest_latency: list[tuple[float, float]] = []

    async def on_delta(msg: Any) -> None:
        now = time.time()
        for delta in _deltas.decode(msg.data):
            ingest_latency.append((now - start, now - delta.ts.timestamp()))

    subscription = await nc.subscribe("citypilot.twin.street_light", cb=on_delta)
    counter = [0]

    def payload(_: str, __: Any) -> bytes:
        counter[0] += 1
        ts = dt.datetime.now(dt.timezone.utc).isoformat()
        return b'{"ts":"%s","values":{"power_w":%d.5,"burning_hours":%d}}' % (ts.encode(), counter[0] % 70, counter[0])

    def gateway_payload(_: str, readings: list[str]) -> bytes:
        counter[0] += 1
        ts = dt.datetime.now(dt.timezone.utc).isoformat()
        return msgspec.json.encode({"ts": ts, "readings": [{"asset": a, "values": {"power_w": counter[0] % 70 + 0.5}}
                                                           for a in readings]})

    if plan.gateway:
        cabinets = sorted(by_cabinet)
        per_message = sum(len(v) for v in by_cabinet.values()) / len(cabinets)
        total = int(plan.rate / per_message * plan.duration_s)
        background = [(protocol.topic(cabinets[i % len(cabinets)], "telemetry"), None, cabinets[i % len(cabinets)],
                       by_cabinet[cabinets[i % len(cabinets)]]) for i in range(total)]
        make = gateway_payload
    else:
        total = int(plan.rate * plan.duration_s)
        background = [(protocol.topic(lights[i % len(lights)], "telemetry"), None, lights[i % len(lights)], None)
                      for i in range(total)]
        make = payload
    jobs = [background[i::plan.publishers] for i in range(plan.publishers)]
    message_rate = total / plan.duration_s

    prober = gmqtt.Client(f"bench-probe-{os.getpid()}")
    prober.set_auth_credentials(*mqtt_login(cfg.mqtt_port))
    await prober.connect("127.0.0.1", cfg.mqtt_port, keepalive=60, version=MQTTv311)

    def fault(light: str) -> None:
        ts = dt.datetime.now(dt.timezone.utc).isoformat()
        prober.publish(protocol.topic(light, "telemetry"),
                       b'{"ts":"%s","values":{"fault":"lamp_failure"}}' % ts.encode(), qos=1)

    async def probes() -> None:
        await asyncio.sleep(5)  # the feed and the workers settle
        measuring[0] = True
        for light in probe_lights:
            if time.time() - start > plan.duration_s - 2:
                break
            probe_sent[light] = time.time()
            fault(light)
            await asyncio.sleep(1 / plan.probes_per_s)

    async def power_cut() -> None:
        await asyncio.sleep(plan.power_cut_at_s)
        cut_started[0] = time.time()
        for i, light in enumerate(cut_lights):
            fault(light)
            if i % 50 == 49:
                await asyncio.sleep(max(0.0, cut_started[0] + (i + 1) / len(cut_lights) - time.time()))

    publish_elapsed, *_ = await asyncio.gather(publish_jobs(cfg.mqtt_port, jobs, message_rate, make), probes(),
                                               power_cut())
    achieved = total / publish_elapsed

    # The power cut, seen from the database.
    cut_at = dt.datetime.fromtimestamp(cut_started[0], dt.timezone.utc)
    all_raised_s = None
    deadline = time.monotonic() + 60
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            raised = (await (await conn.execute("SELECT count(*), max(updated_at) FROM alarms WHERE asset_id = ANY(%s)",
                                                (cut_lights,))).fetchone())
            if raised[0] >= len(cut_lights):
                all_raised_s = round((raised[1] - cut_at).total_seconds(), 2)
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # probes still in flight reach the feed
        top_level = (await (await conn.execute(
            "SELECT count(*) FROM alarms WHERE parent_id IS NULL AND first_seen >= %s - interval '1 second' "
            "AND first_seen < %s + interval '15 seconds' AND (asset_id IS NULL OR NOT asset_id = ANY(%s))",
            (cut_at, cut_at, probe_lights))).fetchone())[0]
        folded = (await (await conn.execute("SELECT count(*) FROM alarms WHERE asset_id = ANY(%s) AND parent_id IS NOT NULL",
                                            (cut_lights,))).fetchone())[0]
        by_type = dict(await (await conn.execute(
            "SELECT type, count(*) FROM alarms WHERE parent_id IS NULL AND first_seen >= %s - interval '1 second' "
            "AND first_seen < %s + interval '15 seconds' AND (asset_id IS NULL OR NOT asset_id = ANY(%s)) GROUP BY type",
            (cut_at, cut_at, probe_lights))).fetchall())
        cabinet_alarms = (await (await conn.execute(
            "SELECT count(*) FROM alarms WHERE type = 'cabinet_lights_failure' AND first_seen >= %s - interval '1 second'",
            (cut_at,))).fetchone())[0]
        journal_entries = (await (await conn.execute("SELECT last_id FROM journal_head")).fetchone())[0]
    await subscription.unsubscribe()
    await prober.disconnect()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    cut_offset = cut_started[0] - start
    before = [lat * 1000 for t, lat in ingest_latency if cut_offset - 10 <= t < cut_offset]
    after = [lat * 1000 for t, lat in ingest_latency if cut_offset <= t < cut_offset + 10]
    per_client = [{"events": c.events, "twin_frames": c.twin_frames} for c in clients]
    return {
        "benchmark": "alarms",
        "background": "gateway (cabinet messages, 31 readings each)" if plan.gateway else "one reading per message",
        "background_target_msgs_per_s": round(message_rate), "background_msgs_per_s": round(achieved),
        "background_readings_per_s": round(achieved * (plan.rate / message_rate)),
        "duration_s": plan.duration_s, "workers": plan.workers,
        "fault_to_websocket_ms": {"p50": _pct(probe_latencies, 0.5), "p99": _pct(probe_latencies, 0.99),
                                  "max": _pct(probe_latencies, 1.0), "samples": len(probe_latencies),
                                  "probes": len(probe_sent), "clients": plan.clients,
                                  "to_alarm_committed_p50": _pct(to_commit, 0.5), "to_alarm_committed_p99": _pct(to_commit, 0.99),
                                  "commit_to_screen_p50": _pct(to_screen, 0.5), "commit_to_screen_p99": _pct(to_screen, 0.99)},
        "fault_to_websocket_during_power_cut_ms": {"p50": _pct(cut_latencies, 0.5), "p99": _pct(cut_latencies, 0.99),
                                                   "max": _pct(cut_latencies, 1.0), "samples": len(cut_latencies)},
        "clients": {"connected": plan.clients, "with_twin": plan.twin_clients,
                    "closed_by_server": sum(1 for c in clients if c.closed),
                    "max_event_lag_s": round(max(c.event_lag_max_s for c in clients), 2),
                    "max_twin_lag_s": round(max((c.twin_lag_max_s for c in clients if c.twin), default=0.0), 2),
                    "fell_behind_2s": sum(1 for c in clients if c.closed or c.event_lag_max_s > 2 or c.twin_lag_max_s > 2),
                    "events_min": min(p["events"] for p in per_client),
                    "twin_frames_min": min((p["twin_frames"] for p, c in zip(per_client, clients) if c.twin), default=0),
                    "closed_reasons": sorted({c.closed for c in clients if c.closed})[:3]},
        "power_cut": {"lights": len(cut_lights), "all_alarms_in_s": all_raised_s, "top_level_alarms": top_level,
                      "top_level_by_type": by_type, "cabinet_alarms": cabinet_alarms, "lamp_alarms_folded": folded,
                      "ingest_p99_ms_10s_before": _pct(before, 0.99), "ingest_p99_ms_10s_after": _pct(after, 0.99),
                      "ingest_max_ms_10s_after": _pct(after, 1.0)},
        "journal_entries": journal_entries,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
