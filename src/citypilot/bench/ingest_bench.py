"""``citypilot bench ingest``: real MQTT devices against a throw-away embedded stack, end to end.

In one run, on the same stack:
1. the raw rate: the same number of QoS 1 MQTT messages published to a plain JetStream stream with no
   consumer (what the broker alone sustains), for our ratio to it;
2. the real thing: devices publish telemetry (QoS 1) on their topics; ``citypilot worker`` processes
   validate, persist every reading and update the twin; the run ends when the stream is drained.
Latency is measured from the device's publish time (its message timestamp) to the twin delta the
worker publishes after commit. ``lost`` counts messages neither applied nor dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import io
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import gmqtt
import msgspec
import nats
import psycopg
from gmqtt.mqtt.constants import MQTTv311
from nats.js.api import StreamConfig
from psycopg_pool import AsyncConnectionPool

from citypilot.config import Config
from citypilot.equipment.catalog import default_catalog
from citypilot.geo.communes import metropole
from citypilot.ingest import protocol
from citypilot.ingest.stream import backlog, ensure_stream
from citypilot.registry import service
from citypilot.runtime.embedded_nats import mqtt_login
from citypilot.runtime.infrastructure import Infrastructure
from citypilot.runtime.ports import free_port

from .synthetic import registry_csv

IN_FLIGHT_PER_CLIENT = 2000


class _Delta(msgspec.Struct):
    """What the benchmark reads of a twin change: its device time (the publisher's clock)."""

    ts: dt.datetime


# msgspec, not json + fromisoformat: the benchmark shares the two cores with what it measures.
_deltas = msgspec.json.Decoder(list[_Delta])


@dataclass
class Plan:
    messages: int
    mode: str            # "single": one reading per message; "gateway": a cabinet reports its lights
    publishers: int
    workers: int
    rate: float          # messages/s to publish at; 0 = as fast as the broker takes them
    kill_worker_after_s: float | None


def _devices(csv_bytes: bytes) -> tuple[list[str], dict[str, list[str]]]:
    lights, by_cabinet = [], {}
    for row in csv.DictReader(io.StringIO(csv_bytes.decode())):
        if row["kind"] == "street_light":
            lights.append(row["id"])
            by_cabinet.setdefault(row["reported_by"], []).append(row["id"])
    return lights, by_cabinet


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


async def publish_jobs(mqtt_port: int, jobs: list[list[tuple[str, bytes | None, str | None, list[str] | None]]],
                   rate: float, make_payload: Any) -> float:
    """Publish every job list over its own MQTT connection (QoS 1); return when all are acknowledged."""
    clients = []
    for index in range(len(jobs)):
        client = gmqtt.Client(f"bench-{os.getpid()}-{index}-{time.monotonic_ns()}")
        client.set_auth_credentials(*mqtt_login(mqtt_port))  # citypilot's internal user on the embedded broker
        await client.connect("127.0.0.1", mqtt_port, keepalive=60, version=MQTTv311)  # NATS speaks 3.1.1 only
        clients.append(client)
    per_client_rate = rate / len(jobs) if rate else 0.0
    start = time.perf_counter()

    async def run(client: gmqtt.Client, items: list[Any]) -> None:
        storage = client._persistent_storage  # in-flight QoS 1 messages (gmqtt keeps them until PUBACK)
        for count, (topic, payload, device, readings) in enumerate(items, start=1):
            client.publish(topic, payload if payload is not None else make_payload(device, readings), qos=1)
            if per_client_rate and count % 20 == 0:
                ahead = count / per_client_rate - (time.perf_counter() - start)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            elif count % 200 == 0:
                while len(storage._messages) > IN_FLIGHT_PER_CLIENT:
                    await asyncio.sleep(0.001)
                await asyncio.sleep(0)
        await storage.wait_empty()

    await asyncio.gather(*(run(c, items) for c, items in zip(clients, jobs)))
    elapsed = time.perf_counter() - start
    await asyncio.gather(*(c.disconnect() for c in clients))
    return elapsed


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every worker (each commits what it holds), then wait for them all."""
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(timeout=30)


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    log_path = Path(env["CITYPILOT_DATA_DIR"]) / f"worker-{time.monotonic_ns()}.log"
    process = subprocess.Popen([str(Path(sys.executable).parent / "citypilot"), "worker"], env=env,
                               stdout=subprocess.PIPE, stderr=log_path.open("wb"))
    assert process.stdout is not None
    line = process.stdout.readline().decode()
    if "ingest worker" not in line:
        raise RuntimeError(f"citypilot worker did not start: {line!r}")
    return process


async def _wait_for_balance(database_url: str, workers: int, timeout: float = 15.0) -> None:
    """Measure the steady state: wait until the workers have shared out the stream's partitions (a hand-over
    under load delays the messages pushed at that moment by the consumers' ack wait; see production.md)."""
    from citypilot.ingest.partitions import PARTITION_LOCK

    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            rows = await (await conn.execute(
                "SELECT pid, count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s::oid "
                "AND objsubid = 2 GROUP BY pid", (PARTITION_LOCK,))).fetchall()
            counts = [n for _, n in rows]
            share = -(-protocol.PARTITIONS // workers)  # what each may hold (partitions.plan)
            if len(counts) == min(workers, protocol.PARTITIONS) and sum(counts) == protocol.PARTITIONS \
                    and max(counts) <= share:
                await asyncio.sleep(0.5)  # the last drains finish
                return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the {workers} workers did not share out the partitions within {timeout} s")


@contextlib.contextmanager
def throwaway_stack(config: Config) -> Iterator[tuple[Config, str, str]]:
    """Embedded PostgreSQL and NATS in a temporary directory, on free ports, with no ingest worker of
    their own: (configuration, database URL, NATS URL). Stopped and deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="citypilot-bench-") as tmp:
        cfg = replace(config, data_dir=Path(tmp), database_url=None, nats_url=None, nats_port=free_port(),
                      mqtt_port=free_port(), nats_monitor_port=0, ingest_workers=0)
        infra = Infrastructure(cfg)
        endpoints = infra.start()
        try:
            yield cfg, endpoints.database_url, endpoints.nats_url or ""
        finally:
            infra.stop()


def run_ingest_benchmark(config: Config, plan: Plan) -> dict[str, Any]:
    with throwaway_stack(config) as (cfg, database_url, nats_url):
        return asyncio.run(_run(cfg, database_url, nats_url, plan))


async def _run(cfg: Config, database_url: str, nats_url: str, plan: Plan) -> dict[str, Any]:
    catalog, communes = default_catalog(), metropole()
    lights_count = max(plan.publishers * 31, min(34_000, plan.messages // 10))
    registry = registry_csv(communes, lights_count + lights_count // 30 + 1, seed=7)
    lights, by_cabinet = _devices(registry)
    cabinets = sorted(by_cabinet)
    async with AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False) as pool:
        await pool.open(wait=True)
        await service.import_file(pool, registry, "csv", actor="bench", source="bench", catalog=catalog, communes=communes)

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_stream(nc, cfg.ingest_stream_max_bytes)
    await js.add_stream(StreamConfig(name="BENCH_RAW", subjects=["bench.raw.>"]))

    counter = [0]

    def single_payload(device: str, _: Any) -> bytes:
        counter[0] += 1
        return b'{"ts":"%s","values":{"power_w":%d.5,"burning_hours":%d}}' % (_now().encode(), counter[0] % 70, counter[0])

    def gateway_payload(_: str, readings: list[str]) -> bytes:
        counter[0] += 1
        ts = _now()
        return json.dumps({"readings": [{"asset": a, "ts": ts, "values": {"power_w": counter[0] % 70 + 0.5,
                                                                         "burning_hours": counter[0]}}
                                        for a in readings]}).encode()

    if plan.mode == "single":
        devices = [(protocol.topic(lights[i % len(lights)], "telemetry"), lights[i % len(lights)], None)
                   for i in range(plan.messages)]
        payload_of, readings_per_message = single_payload, 1
    else:
        devices = [(protocol.topic(cabinets[i % len(cabinets)], "telemetry"), cabinets[i % len(cabinets)],
                    by_cabinet[cabinets[i % len(cabinets)]]) for i in range(plan.messages)]
        payload_of = gateway_payload
        readings_per_message = statistics.mean(len(by_cabinet[c]) for c in cabinets)

    def split(items: list[Any]) -> list[list[Any]]:
        return [items[i::plan.publishers] for i in range(plan.publishers)]

    # 1. Raw MQTT -> JetStream, same messages, same publishers.
    raw_jobs = split([(f"bench/raw/{device}", None, device, readings) for _, device, readings in devices])
    raw_elapsed = await publish_jobs(cfg.mqtt_port, raw_jobs, 0.0, payload_of)
    raw_stored = (await js.stream_info("BENCH_RAW")).state.messages
    await js.delete_stream("BENCH_RAW")

    # 2. End to end.
    latencies: list[float] = []

    async def on_delta(msg: Any) -> None:
        now = time.time()
        for delta in _deltas.decode(msg.data):  # one array per kind and committed batch
            latencies.append((now - delta.ts.timestamp()) * 1000)

    await nc.subscribe("citypilot.twin.>", cb=on_delta)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYPILOT_")}
    env.update(CITYPILOT_DATABASE_URL=database_url, CITYPILOT_NATS_URL=nats_url, CITYPILOT_DATA_DIR=str(cfg.data_dir),
               CITYPILOT_LOG_LEVEL="warning", CITYPILOT_INGEST_BATCH_SIZE=str(cfg.ingest_batch_size))
    workers = [start_worker(env) for _ in range(plan.workers)]
    try:
        await _wait_for_balance(database_url, plan.workers)
    except BaseException:
        for worker in workers:
            worker.kill()
            worker.wait(timeout=30)
        raise
    killed = 0
    counter[0] = 0
    jobs = split([(topic, None, device, readings) for topic, device, readings in devices])
    start = time.perf_counter()
    publishing = asyncio.create_task(publish_jobs(cfg.mqtt_port, jobs, plan.rate, payload_of))
    if plan.kill_worker_after_s is not None:
        await asyncio.sleep(plan.kill_worker_after_s)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait()
        killed = 1
        workers[0] = start_worker(env)
    publish_elapsed = await publishing
    last_print = 0.0
    while True:
        info = await backlog(js)
        if info.total == 0:
            break
        if os.environ.get("CITYPILOT_BENCH_DEBUG") and time.perf_counter() - last_print > 1:
            last_print = time.perf_counter()
            print(f"t={last_print - start:.1f} pending={info.pending} ack_pending={info.ack_pending} "
                  f"redelivered={info.redelivered}", file=sys.stderr)
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - start
    await asyncio.sleep(0.3)  # last deltas
    stop_workers(workers)
    await nc.close()

    with psycopg.connect(database_url) as conn:
        readings = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        dead_by_reason = dict(conn.execute("SELECT reason_code, count(*) FROM dead_letters GROUP BY 1").fetchall())
        first_reasons = [r[0] for r in conn.execute("SELECT DISTINCT left(reason, 200) FROM dead_letters LIMIT 3")]
    expected_readings = round(plan.messages * readings_per_message) if plan.mode == "single" else \
        sum(len(readings) for _, _, readings in devices)
    latencies.sort()

    def pct(p: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))], 1) if latencies else None

    msgs_per_s = plan.messages / elapsed
    raw_rate = plan.messages / raw_elapsed
    return {
        "benchmark": "ingest", "mode": plan.mode, "messages": plan.messages,
        "readings_per_message": round(readings_per_message, 1), "publishers": plan.publishers, "workers": plan.workers,
        "target_rate": plan.rate or "max", "msgs_per_s": round(msgs_per_s), "datapoints_per_s": round(readings / elapsed),
        "p50_ms": pct(0.50), "p99_ms": pct(0.99), "latency_samples": len(latencies),
        "readings_stored": readings, "readings_expected": expected_readings, "dead_lettered": dead, "dead_letters_by_reason": dead_by_reason, "dead_letter_examples": first_reasons,
        "lost": expected_readings - readings - dead, "publish_s": round(publish_elapsed, 2), "drained_s": round(elapsed, 2),
        "raw_mqtt_to_jetstream_msgs_per_s": round(raw_rate), "raw_stored": raw_stored,
        "ratio_to_raw": round(msgs_per_s / raw_rate, 3), "workers_killed": killed,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
