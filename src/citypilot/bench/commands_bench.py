"""``citypilot bench commands``: commands to the simulated city, one device at a time, then a zone-wide
dimming of 5,000 street lights.

On a throw-away embedded stack it imports the simulated Dijon métropole, starts a real ``citypilot
serve`` (ingest worker, alarm engine, command sweeper), runs the simulator's devices over MQTT and
waits until every asset has reported. Then:

- **one device**: commands to single street lights (dim to 70 or 80 %, above every safety floor),
  one after another at a steady rate, each timed from the POST to the moment the device's answer has
  been applied (the worker's ``citypilot.command.result`` message). The answer goes device → MQTT →
  the durable stream → the ingest worker → the commands table, the same path as production. The
  simulator loses 1 % of commands on purpose and fails 2 %: a failed answer is an answer (timed), a lost
  one is retried by the sweeper after the acknowledgement time-out and counted apart (``retried``);
- **zone**: the 5,000 lights nearest the centre of Dijon that are online and not in fault, dimmed in one
  batch (confirmed by the operator, approved by a supervisor: more than the approval threshold), timed
  from the approval to every light's answer applied, with the batch's per-asset outcome.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import platform
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import nats
from psycopg_pool import AsyncConnectionPool

from citypilot.auth import accounts
from citypilot.commands.service import RESULT_SUBJECT
from citypilot.config import Config
from citypilot.equipment.catalog import default_catalog
from citypilot.geo.communes import metropole
from citypilot.registry import service
from citypilot.runtime.embedded_nats import mqtt_login
from citypilot.runtime.ports import free_port
from citypilot.sim.city import build_city
from citypilot.sim.clock import SimClock
from citypilot.sim.registry_file import registry_bytes
from citypilot.sim.runner import MqttTarget, Runner
from citypilot.sim.simulation import Simulation

from .alarms_bench import _pct, _start_serve, _wait_ready
from .ingest_bench import throwaway_stack

CENTRE = (47.3220, 5.0415)  # place de la Libération, Dijon
ANSWERED = ("done", "rejected", "failed")


def run_commands_benchmark(config: Config, singles: int, rate: float, zone: int, warmup_s: float) -> dict[str, Any]:
    with throwaway_stack(config) as (cfg, database_url, nats_url):
        return asyncio.run(_run(cfg, database_url, nats_url, singles, rate, zone, warmup_s))


class Results:
    """The worker's notifications of applied answers, by command id (arrival time, status)."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[float, str]] = {}
        self.event = asyncio.Event()

    async def on_message(self, msg: Any) -> None:
        at = time.perf_counter()
        for item in json.loads(msg.data):
            self.seen.setdefault(item["id"], (at, item["status"]))
        self.event.set()

    async def wait_for(self, ids: set[str], timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        while not ids <= self.seen.keys():
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), left)
            except asyncio.TimeoutError:
                return False
        return True


async def _run(cfg: Config, database_url: str, nats_url: str, singles: int, rate: float, zone: int,
               warmup_s: float) -> dict[str, Any]:
    catalog, communes = default_catalog(), metropole()
    city = build_city(1, 1, communes)
    passwords = {"bench-operator": secrets.token_urlsafe(18), "bench-supervisor": secrets.token_urlsafe(18)}
    async with AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False) as pool:
        await pool.open(wait=True)
        await service.import_file(pool, registry_bytes(city), "csv", actor="bench", source="bench", catalog=catalog,
                                  communes=communes)
        async with pool.connection() as conn:
            await accounts.add_user(conn, "bench-operator", "operator", passwords["bench-operator"],
                                    services=dict(catalog.services))
            await accounts.add_user(conn, "bench-supervisor", "supervisor", passwords["bench-supervisor"],
                                    services=dict(catalog.services))

    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYPILOT_")}
    env.update(CITYPILOT_DATABASE_URL=database_url, CITYPILOT_NATS_URL=nats_url, CITYPILOT_DATA_DIR=str(cfg.data_dir),
               CITYPILOT_LOG_LEVEL="warning", CITYPILOT_INGEST_WORKERS="1",
               CITYPILOT_AUTH_SECRET_KEY=secrets.token_urlsafe(32),
               # the command settings under test are the caller's (CITYPILOT_COMMANDS_ACK_TIMEOUT_S...)
               CITYPILOT_COMMANDS_ACK_TIMEOUT_S=str(cfg.commands_ack_timeout_s),
               CITYPILOT_COMMANDS_MAX_ATTEMPTS=str(cfg.commands_max_attempts))
    port = free_port()
    serve = _start_serve(env, port)
    nc = await nats.connect(nats_url)
    runner: Runner | None = None
    results = Results()
    try:
        base = f"http://127.0.0.1:{port}"
        await _wait_ready(base, serve)
        await nc.subscribe(RESULT_SUBJECT, cb=results.on_message)
        sim = Simulation(city, SimClock(dt.datetime.now(dt.timezone.utc), 1.0), "normal", 1)
        runner = Runner(sim, MqttTarget("127.0.0.1", cfg.mqtt_port, *mqtt_login(cfg.mqtt_port)))
        await runner.connect()
        simulating = asyncio.create_task(runner.run(3600))
        # Idle connections dropped before the server's 5 s keep-alive ends: a request never races its close.
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(keepalive_expiry=2)) as http:
            tokens = {}
            for user, password in passwords.items():
                r = await http.post("/api/v1/auth/login", json={"username": user, "password": password})
                r.raise_for_status()
                tokens[user] = {"Authorization": f"Bearer {r.json()['access_token']}"}
            reported_s = await _everything_reported(http, tokens["bench-operator"], warmup_s)
            lights = await _lights_near_centre(database_url, max(zone, singles) + singles)
            single = await _singles(http, tokens["bench-operator"], results, lights[zone:zone + singles], rate)
            zone_figures = await _zone(http, tokens, results, lights[:zone])
        sim_stats = runner.stats
        simulating.cancel()
    except BaseException:
        _show_serve_log(cfg)
        raise
    finally:
        if runner is not None:
            await runner.close(wait_s=5)
        await nc.close()
        serve.terminate()
        try:
            serve.wait(timeout=30)
        except Exception:  # noqa: BLE001 - a server that does not stop is killed
            serve.kill()
    return {"benchmark": "commands", "assets": len(city.assets), "city_reported_s": reported_s, **single, **zone_figures,
            "simulator_messages": sim_stats.messages, "simulator_commands": sim_stats.commands,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}


def _show_serve_log(cfg: Config, lines: int = 60) -> None:
    """The server's last words on stderr: the throw-away data directory goes with the stack."""
    log_path = Path(cfg.data_dir) / "serve.log"
    if log_path.exists():
        tail = log_path.read_text(errors="replace").splitlines()[-lines:]
        print("--- citypilot serve (last lines) ---", *tail, sep="\n", file=sys.stderr)


async def _everything_reported(http: httpx.AsyncClient, headers: dict[str, str], at_least_s: float) -> float:
    started = time.perf_counter()
    await asyncio.sleep(at_least_s)
    while time.perf_counter() - started < 300:
        summary = (await http.get("/api/v1/twin/summary", headers=headers)).json()
        if summary["total"]["never_reported"] == 0:
            return round(time.perf_counter() - started, 1)
        await asyncio.sleep(1)
    raise RuntimeError("the simulated city did not report within 5 minutes")


async def _lights_near_centre(database_url: str, count: int) -> list[str]:
    async with AsyncConnectionPool(database_url, min_size=1, max_size=1, open=False) as pool:
        await pool.open(wait=True)
        async with pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT a.id FROM assets a JOIN twin t ON t.asset_id = a.id WHERE a.kind = 'street_light' "
                "AND a.status = 'in_service' AND t.connectivity = 'online' AND t.values->>'fault' = 'none' "
                "ORDER BY (a.lat - %s) ^ 2 + ((a.lon - %s) * 0.68) ^ 2 LIMIT %s", (*CENTRE, count))).fetchall()
    if len(rows) < count:
        raise RuntimeError(f"only {len(rows)} street lights online and without fault; {count} wanted")
    return [r[0] for r in rows]


async def _singles(http: httpx.AsyncClient, headers: dict[str, str], results: Results, lights: list[str],
                   rate: float) -> dict[str, Any]:
    """One command per light, paced at ``rate``; POST → the answer applied."""
    sent: dict[str, float] = {}
    statuses: dict[str, int] = {}
    refused = 0
    for i, light in enumerate(lights):
        started = time.perf_counter()
        r = await http.post("/api/v1/commands", headers=headers, json={
            "command": "dim", "assets": [light], "params": {"level_pct": 70 + 10 * (i % 2)}, "reason": "bench: one light"})
        if r.status_code != 201:
            refused += 1
            statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
            continue
        sent[r.json()["items"][0]["id"]] = started
        await asyncio.sleep(max(0.0, 1.0 / rate - (time.perf_counter() - started)))
    await results.wait_for(set(sent), timeout=30)
    # How many times each was sent, as the control centre counts it: the first tries are the figure.
    r = await http.get("/api/v1/commands", headers=headers, params={"limit": 1000})
    r.raise_for_status()
    attempts = {c["id"]: c["attempts"] for c in r.json()["items"]}
    latencies = [(results.seen[cid][0] - at) * 1000 for cid, at in sent.items() if cid in results.seen]
    first_try = [(results.seen[cid][0] - at) * 1000 for cid, at in sent.items()
                 if cid in results.seen and attempts.get(cid) == 1]
    for cid in sent:
        status = results.seen[cid][1] if cid in results.seen else "unanswered"
        statuses[status] = statuses.get(status, 0) + 1
    return {"single_commands": len(lights), "single_outcomes": statuses, "single_refused": refused,
            "single_retried": len(latencies) - len(first_try), "single_unanswered": len(sent) - len(latencies),
            "single_ack_p50_ms": _pct(first_try, 0.5), "single_ack_p99_ms": _pct(first_try, 0.99),
            "single_ack_max_ms": round(max(first_try), 1) if first_try else None,
            "single_ack_p99_all_ms": _pct(latencies, 0.99)}


async def _zone(http: httpx.AsyncClient, tokens: dict[str, dict[str, str]], results: Results,
                lights: list[str]) -> dict[str, Any]:
    operator, supervisor = tokens["bench-operator"], tokens["bench-supervisor"]
    asked = time.perf_counter()
    r = await http.post("/api/v1/commands", headers=operator, json={
        "command": "dim", "assets": lights, "params": {"level_pct": 60}, "reason": "bench: the zone at 60 %"})
    r.raise_for_status()
    batch = r.json()
    request_ms = (time.perf_counter() - asked) * 1000
    r = await http.post(f"/api/v1/commands/batches/{batch['id']}/confirm", headers=operator)
    r.raise_for_status()
    approved = time.perf_counter()
    r = await http.post(f"/api/v1/commands/batches/{batch['id']}/approve", headers=supervisor)
    r.raise_for_status()
    approve_ms = (time.perf_counter() - approved) * 1000
    ids = {i["id"] for i in await _items(http, operator, batch["id"]) if i["status"] != "refused"}
    within = await results.wait_for(ids, timeout=10 - (time.perf_counter() - approved))
    await results.wait_for(ids, timeout=30)  # the stragglers' outcome, for the record
    answered = sorted((results.seen[cid][0] - approved) * 1000 for cid in ids if cid in results.seen)
    final = (await http.get(f"/api/v1/commands/batches/{batch['id']}", headers=operator, params={"limit": 1})).json()
    items = await _items(http, operator, batch["id"])
    outcomes: dict[str, int] = {}
    for cid in ids:
        status = results.seen[cid][1] if cid in results.seen else "unanswered"
        outcomes[status] = outcomes.get(status, 0) + 1
    return {"zone_lights": len(lights), "zone_sent": len(ids), "zone_request_ms": round(request_ms, 1),
            "zone_approve_ms": round(approve_ms, 1), "zone_all_acked_within_10s": within,
            "zone_answered_within_10s": sum(1 for ms in answered if ms <= 10_000),
            "zone_last_answer_s": round(answered[-1] / 1000, 2) if answered else None,
            "zone_p50_ms": _pct(answered, 0.5), "zone_p99_ms": _pct(answered, 0.99),
            "zone_sent_more_than_once": sum(1 for i in items if i.get("attempts", 0) > 1),
            "zone_outcomes": outcomes, "zone_batch_counts": final.get("counts"),
            "zone_not_done_reasons": _reasons(items)}


async def _items(http: httpx.AsyncClient, headers: dict[str, str], batch_id: str) -> list[dict[str, Any]]:
    """The batch's per-asset commands, paged by asset id."""
    items: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 5000, **({"after": after} if after else {})}
        r = await http.get(f"/api/v1/commands/batches/{batch_id}", headers=headers, params=params)
        r.raise_for_status()
        page = r.json()["items"]
        items += page
        if len(page) < 5000:
            return items
        after = page[-1]["asset_id"]


def _reasons(items: list[dict[str, Any]], top: int = 5) -> dict[str, int]:
    """The commonest reasons the commands that were not done give (the device's answer)."""
    counts: dict[str, int] = {}
    for item in items:
        if item["status"] != "done":
            reason = str(item.get("reason") or item["status"])[:120]
            counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:top])
