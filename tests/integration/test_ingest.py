"""Device ingestion end to end, as devices and the control room rely on it, on both backends.

Devices publish with real MQTT clients (gmqtt and Debian's ``mosquitto_pub``, QoS 1) on the embedded
MQTT listener; the external NATS has no MQTT listener, so there the same messages go straight to the
JetStream subjects the listener feeds (which is what a device's MQTT publish becomes) and over HTTP.
What the control room sees is read through the API: the twin, the series, the dead letters, /metrics.
The database is shared by the session: every test works on its own assets (``uid`` prefix).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from citypilot.ingest import protocol
from citypilot.runtime.embedded_nats import mqtt_login

from .conftest import eventually, iso, reading, utcnow

CITYPILOT = str(Path(sys.executable).parent / "citypilot")
PARIS = (48.8566, 2.3522)
BUS_DEADLINE_S = 15.0  # bus: 5 s interval + max(10 s, 50 %) with the default grace settings


def when(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def require_mqtt(stack: Any) -> None:
    if stack.backend != "embedded":
        pytest.skip("the external NATS (127.0.0.1:4222) has no MQTT listener; "
                    "the JetStream and HTTP variants cover this backend")


async def gmqtt_publish(port: int, items: list[tuple[str, bytes]]) -> None:
    """Publish at QoS 1 with gmqtt (MQTT 3.1.1) and return once the broker acknowledged every message.
    Logged in as citypilot's internal user: these tests are about the pipeline (devices logging in
    with their own credentials: test_mqtt_auth.py)."""
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv311

    client = gmqtt.Client(f"citypilot-test-{uuid.uuid4().hex[:8]}")
    client.set_auth_credentials(*mqtt_login(port))
    await client.connect("127.0.0.1", port, version=MQTTv311, keepalive=30)
    try:
        for topic, payload in items:
            client.publish(topic, payload, qos=1)
        await asyncio.wait_for(client._persistent_storage.wait_empty(), 10)  # every PUBACK received
    finally:
        await client.disconnect()


def mosquitto_pub(port: int, topic: str, *args: str) -> None:
    user, password = mqtt_login(port)
    done = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic,
                           "-i", f"citypilot-test-{uuid.uuid4().hex[:8]}", "-u", user, "-P", password, *args],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr


class BusListener:
    """Collects what citypilot publishes on the bus (core NATS) while the block runs."""

    def __init__(self, nats_url: str, subject: str) -> None:
        self.nats_url = nats_url
        self.subject = subject
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        import nats

        nc = await nats.connect(self.nats_url)

        async def received(msg: Any) -> None:
            self.messages.append((msg.subject, json.loads(msg.data)))

        await nc.subscribe(self.subject, cb=received)
        await nc.flush()
        self._ready.set()
        while not self._stop.is_set():
            await asyncio.sleep(0.02)
        await nc.close()

    def __enter__(self) -> "BusListener":
        self._thread.start()
        assert self._ready.wait(10), "could not subscribe to the bus"
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)

    def about(self, asset_id: str, subject_prefix: str = "") -> list[dict[str, Any]]:
        """What was said about one asset (a message may be one object or an array of them)."""
        return [item for subject, body in self.messages if subject.startswith(subject_prefix)
                for item in (body if isinstance(body, list) else [body]) if item.get("asset") == asset_id]


def base64_payload(letter: dict[str, Any]) -> bytes:
    return base64.b64decode(letter["payload_base64"])


def dead_letter_total(metrics: dict[tuple[str, str], float], reason: str) -> float:
    return metrics.get(("citypilot_ingest_dead_letters_total", f'{{reason="{reason}"}}'), 0.0)


# --- real MQTT clients (embedded MQTT listener) --------------------------------------------------------

def test_gmqtt_qos1_messages_reach_the_twin_and_the_series(city, stack):
    require_mqtt(stack)
    light, = city.import_assets({"id": "SL-1", "kind": "street_light"})
    base = utcnow().replace(microsecond=0) - dt.timedelta(minutes=5)
    payloads = [reading(base + dt.timedelta(seconds=10 * i), power_w=30.0 + i, dimming_pct=50 + i, power_state="on")
                for i in range(5)]
    with BusListener(stack.endpoints.nats_url, "citypilot.twin.>") as bus:
        asyncio.run(gmqtt_publish(stack.config.mqtt_port, [(protocol.topic(light, "telemetry"), p) for p in payloads]))
        state = city.wait_state(light, lambda s: s["values"].get("power_w") == 34.0, "the last reading applied")
        deltas = eventually(lambda: bus.about(light), "a twin delta on the bus")
    assert state["values"] == {"power_w": 34.0, "dimming_pct": 54, "power_state": "on"}
    assert when(state["ts"]) == base + dt.timedelta(seconds=40)
    assert state["connectivity"] == "online" and state["offline_since"] is None
    assert [p["values"]["power_w"] for p in city.points(light)] == [30.0, 31.0, 32.0, 33.0, 34.0]
    assert [when(p["ts"]) for p in city.points(light)] == [base + dt.timedelta(seconds=10 * i) for i in range(5)]
    assert deltas[0]["changed"]["power_w"] in (30.0, 31.0, 32.0, 33.0, 34.0)

    # The state channel feeds the same twin.
    asyncio.run(gmqtt_publish(stack.config.mqtt_port, [(protocol.topic(light, "state"),
                                                        reading(base + dt.timedelta(seconds=50), power_state="off"))]))
    state = city.wait_state(light, lambda s: s["values"]["power_state"] == "off", "the state message applied")
    assert state["values"]["power_w"] == 34.0  # a partial message merges into the twin


def test_mosquitto_pub_qos1_good_and_bad_messages(city, stack, tmp_path):
    require_mqtt(stack)
    light, = city.import_assets({"id": "SL-1", "kind": "street_light"})
    port, topic = stack.config.mqtt_port, protocol.topic(light, "telemetry")
    ts = utcnow().replace(microsecond=0) - dt.timedelta(seconds=30)

    mosquitto_pub(port, topic, "-m", reading(ts, power_w=41.5, fault="none").decode())
    state = city.wait_state(light, lambda s: s["values"].get("power_w") == 41.5, "mosquitto_pub's reading")
    assert state["values"] == {"power_w": 41.5, "fault": "none"}

    broken = b'{"ts": "' + iso(ts).encode() + b'", "values": {"power_w": 4'
    mosquitto_pub(port, topic, "-m", broken.decode())
    big = tmp_path / "big.json"
    oversized = b'{"values": {"power_w": 1}, "padding": "' + b"x" * (300 * 1024) + b'"}'
    big.write_bytes(oversized)
    mosquitto_pub(port, topic, "-f", str(big))
    mosquitto_pub(port, topic, "-m", reading(ts + dt.timedelta(seconds=5), power_w=42.0).decode())

    letters = {d["reason_code"]: d for d in city.wait_dead_letters(light, 2)}
    assert set(letters) == {"malformed", "oversized"}
    assert letters["malformed"]["payload_text"].encode() == broken
    assert letters["malformed"]["source"] == "mqtt" and letters["malformed"]["subject"] == protocol.subject(light, "telemetry")
    assert letters["oversized"]["payload_size"] == len(oversized) and letters["oversized"]["payload_truncated"]
    assert oversized.startswith(base64_payload(letters["oversized"]))
    city.wait_state(light, lambda s: s["values"]["power_w"] == 42.0, "the good message after the bad ones")
    assert len(city.points(light)) == 2

    # A device without a clock sends no ts: the reading is stamped when the broker received it.
    before = utcnow()
    mosquitto_pub(port, topic, "-m", '{"values": {"power_w": 43.0}}')
    state = city.wait_state(light, lambda s: s["values"]["power_w"] == 43.0, "the reading without a timestamp")
    assert before - dt.timedelta(seconds=1) <= when(state["ts"]) <= utcnow()
    assert len(city.points(light)) == 3


# --- gateways ------------------------------------------------------------------------------------------

def test_gateway_batch_applies_its_lights_and_dead_letters_the_others(city):
    cabinet, *lights = city.import_assets(
        {"id": "CAB-1", "kind": "lighting_cabinet"}, {"id": "CAB-2", "kind": "lighting_cabinet"},
        *({"id": f"SL-{i}", "kind": "street_light", "reported_by": "CAB-1"} for i in (1, 2, 3)),
        {"id": "SL-9", "kind": "street_light", "reported_by": "CAB-2"},
        {"id": "SL-10", "kind": "street_light"})
    other_cabinet, mine, foreign, independent = lights[0], lights[1:4], lights[4], lights[5]
    city.introduce(cabinet)
    ts = utcnow().replace(microsecond=0) - dt.timedelta(seconds=20)
    batch = {"ts": iso(ts), "readings": [
        {"asset": cabinet, "values": {"mains": "ok", "power_kw": 1.2}},
        *({"asset": light, "values": {"power_w": 30.0 + n, "dimming_pct": 70}} for n, light in enumerate(mine)),
        {"asset": foreign, "values": {"power_w": 99.0}},        # another cabinet's light
        {"asset": independent, "values": {"power_w": 98.0}},    # a light nobody reports for
        {"asset": city.id("SL-404"), "values": {"power_w": 97.0}},  # not in the registry
        {"asset": mine[0], "ts": iso(ts - dt.timedelta(seconds=1)), "values": {"colour": "red"}},  # schema
    ]}
    payload = json.dumps(batch).encode()
    city.publish([(cabinet, "telemetry", payload)])

    for n, light in enumerate(mine):
        state = city.wait_state(light, lambda s: True, "the light's reading from its cabinet")
        assert state["values"] == {"power_w": 30.0 + n, "dimming_pct": 70} and when(state["ts"]) == ts
    assert city.state(cabinet)["values"] == {"mains": "ok", "power_kw": 1.2}
    letters = city.wait_dead_letters(cabinet, 4)
    by_asset = {(d["asset_id"], d["reason_code"]) for d in letters}
    assert (foreign, "not_reported_by") in by_asset and (independent, "not_reported_by") in by_asset
    assert (mine[0], "schema") in by_asset
    assert any(code == "unknown_device" for _, code in by_asset)
    assert all(base64_payload(d) == payload for d in letters)
    for light in (foreign, independent):
        assert city.state(light) is None  # nothing applied to an asset the gateway does not report for
    assert other_cabinet != cabinet and city.state(other_cabinet) is None


def test_gateway_batch_with_two_unknown_assets_dead_letters_each(city):
    cabinet, light = city.import_assets({"id": "CAB-1", "kind": "lighting_cabinet"},
                                        {"id": "SL-1", "kind": "street_light", "reported_by": "CAB-1"})
    city.introduce(cabinet)
    ts = utcnow() - dt.timedelta(seconds=5)
    payload = json.dumps({"ts": iso(ts), "readings": [
        {"asset": light, "values": {"power_w": 20.0}},
        {"asset": city.id("GHOST-1"), "values": {"power_w": 1.0}},
        {"asset": city.id("GHOST-2"), "values": {"power_w": 2.0}}]}).encode()
    city.publish([(cabinet, "telemetry", payload)])
    city.wait_state(light, lambda s: s["values"]["power_w"] == 20.0, "the known light applied")
    letters = city.wait_dead_letters(cabinet, 2)
    assert [d["reason_code"] for d in letters] == ["unknown_device", "unknown_device"]
    reasons = " ".join(d["reason"] for d in letters)
    assert city.id("GHOST-1") in reasons and city.id("GHOST-2") in reasons


class _StreamMessage:
    """What the worker reads of a message JetStream delivers: subject, bytes, headers, and the ack subject
    that carries its stream sequence and storage time."""

    def __init__(self, subject: str, data: bytes, seq: int) -> None:
        self.subject, self.data, self.headers = subject, data, None
        # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<stored ns>.<pending>: acks nothing real
        self.reply = f"$JS.ACK.{protocol.STREAM}.ingest-p00.1.{seq}.{seq}.{time.time_ns()}.0"


def test_a_new_gateways_first_batch_applies_its_lights(city, stack):
    """A cabinet and its lights imported after the worker's last registry refresh; the cabinet's first
    message is a batch for its lights. Deterministic: the worker's cache is loaded before the import."""
    import nats
    from psycopg_pool import AsyncConnectionPool

    from citypilot.equipment.catalog import default_catalog
    from citypilot.geo.communes import metropole
    from citypilot.ingest.service import limits_from
    from citypilot.ingest.worker import IngestWorker

    async def scenario() -> list[str]:
        nc = await nats.connect(stack.endpoints.nats_url)
        try:
            async with AsyncConnectionPool(stack.endpoints.database_url, min_size=1, max_size=2, open=False) as pool:
                await pool.open(wait=True, timeout=15)
                worker = IngestWorker(nc, pool, default_catalog(), limits_from(stack.config, metropole()),
                                      stack.endpoints.database_url)
                async with pool.connection() as conn:
                    await worker.cache.refresh(conn)
                worker._last_refresh = time.monotonic()
                cabinet, *lights = await asyncio.to_thread(
                    city.import_assets, {"id": "CAB-1", "kind": "lighting_cabinet"},
                    *({"id": f"SL-{i}", "kind": "street_light", "reported_by": "CAB-1"} for i in (1, 2)))
                payload = json.dumps({"ts": iso(utcnow()), "readings": [
                    {"asset": a, "values": {"power_w": 30.0}} for a in lights]}).encode()
                message = _StreamMessage(protocol.subject(cabinet, "telemetry"), payload, 10**12 + uuid.uuid4().int % 10**9)
                await worker.process([message])
                return [cabinet, *lights]
        finally:
            await nc.close()

    cabinet, *lights = asyncio.run(scenario())
    assert [d["reason"] for d in city.dead_letters(cabinet)] == []
    assert [city.state(light) is not None for light in lights] == [True, True]


# --- idempotency, ordering, late messages ---------------------------------------------------------------

def test_duplicates_and_redeliveries_apply_once(city, stack):
    light, = city.import_assets({"id": "SL-1", "kind": "street_light"})
    ts = utcnow().replace(microsecond=0) - dt.timedelta(minutes=1)
    message = reading(ts, power_w=25.0, dimming_pct=40)
    city.publish([(light, "telemetry", message)])
    first = city.wait_state(light, lambda s: True, "the first copy applied")
    # The same message again, then the same bytes once more over another path (HTTP): each is a copy.
    city.publish([(light, "telemetry", message)])
    _, token = city.credential(light)
    r = city.post(token, b'{"messages": [{"device": "%s", "channel": "telemetry", "payload": %s}]}'
                  % (light.encode(), message))
    assert r.status_code == 202, r.text
    eventually(lambda: stream_drained(stack), "the copies taken and acknowledged")
    again = city.state(light)  # (received_at, when the current values were received, moves to the last copy)
    assert {k: again[k] for k in ("ts", "values", "connectivity", "offline_since")} == \
        {k: first[k] for k in ("ts", "values", "connectivity", "offline_since")}
    # A later message is applied as usual.
    city.publish([(light, "telemetry", reading(ts + dt.timedelta(seconds=1), dimming_pct=41))])
    city.wait_state(light, lambda s: s["values"] == {"power_w": 25.0, "dimming_pct": 41}, "the next message")
    points = city.points(light)
    assert [(when(p["ts"]), p["values"]) for p in points] == [
        (ts, {"power_w": 25.0, "dimming_pct": 40}), (ts + dt.timedelta(seconds=1), {"dimming_pct": 41})]
    assert first["values"] == {"power_w": 25.0, "dimming_pct": 40}
    assert city.dead_letters(light) == []


def stream_drained(stack: Any) -> bool:
    """Every message in the ingest stream taken by a worker and acknowledged (its batch committed)."""
    info = asyncio.run(_consumer(stack.endpoints.nats_url))
    return info.num_pending == 0 and info.num_ack_pending == 0


def test_a_redelivered_batch_changes_nothing_twice(city, stack):
    """What a worker does when JetStream hands it a message again (its first ack was lost)."""
    from citypilot.ingest.normalise import AcceptedReading
    from citypilot.ingest.store import DeadLetter, StagedReading, apply_batch

    light, = city.import_assets({"id": "SL-1", "kind": "street_light"})
    ts = utcnow().replace(microsecond=0) - dt.timedelta(minutes=2)
    city.publish([(light, "telemetry", reading(ts, power_w=10.0))])
    before = city.wait_state(light, lambda s: True, "the reading applied")
    seq = 10**12 + int(uuid.uuid4().int % 10**9)  # far from real sequences: no clash with the running stream

    async def apply_twice() -> list[Any]:
        import psycopg

        results = []
        async with await psycopg.AsyncConnection.connect(stack.endpoints.database_url) as conn:
            for _ in range(2):
                async with conn.transaction():
                    results.append(await apply_batch(
                        conn, [StagedReading(AcceptedReading(light, "street_light", ts, {"power_w": 10.0}), utcnow(), seq)],
                        [], [DeadLetter("mqtt", protocol.subject(light, "telemetry"), light, light, "schema", "test",
                                        b"{}", seq)]))
        return results

    first, second = asyncio.run(apply_twice())
    assert first.readings_inserted == 0 and second.readings_inserted == 0  # already there from the stream
    assert first.twin_changes == [] and second.twin_changes == []  # nothing to announce
    after = city.state(light)
    assert {k: after[k] for k in ("ts", "values", "connectivity", "offline_since")} == \
        {k: before[k] for k in ("ts", "values", "connectivity", "offline_since")}
    assert len(city.points(light)) == 1
    assert [d["stream_seq"] for d in city.dead_letters(light)] == [seq]  # dead-lettered once


def test_the_bus_announces_real_changes_only(city, stack):
    light, = city.import_assets({"id": "SL-1", "kind": "street_light"})
    ts = utcnow().replace(microsecond=0) - dt.timedelta(minutes=1)
    with BusListener(stack.endpoints.nats_url, "citypilot.>") as bus:
        city.publish([(light, "telemetry", reading(ts, power_w=25.0, dimming_pct=40))])
        city.wait_state(light, lambda s: True, "the first message applied")
        city.publish([(light, "telemetry", reading(ts, power_w=25.0, dimming_pct=40))])  # a copy
        city.publish([(light, "telemetry", reading(ts - dt.timedelta(minutes=5), power_w=3.0))])  # late
        city.publish([(light, "telemetry", reading(ts + dt.timedelta(seconds=1), dimming_pct=41))])
        city.wait_state(light, lambda s: s["values"]["dimming_pct"] == 41, "the newer message applied")
        city.sql("UPDATE twin SET last_seen = now() - interval '2 hours' WHERE asset_id = %s", (light,))
        asyncio.run(_check_connectivity(stack))
        city.wait_state(light, lambda s: s["connectivity"] == "offline", "the light offline")
        city.publish([(light, "telemetry", reading(ts + dt.timedelta(seconds=2), dimming_pct=41))])
        city.wait_state(light, lambda s: s["connectivity"] == "online", "the light back online")
        time.sleep(0.3)
    deltas = [(b["new"], b["changed"], b["back_online"]) for b in bus.about(light, "citypilot.twin.")]
    assert deltas == [(True, {"power_w": 25.0, "dimming_pct": 40}, False), (False, {"dimming_pct": 41}, False),
                      (False, {}, True)]
    assert [b["connectivity"] for b in bus.about(light, "citypilot.connectivity.")] == ["offline", "online"]


def test_late_messages_update_history_not_the_live_state(city):
    light, = city.import_assets({"id": "SL-1", "kind": "street_light"})
    t0 = utcnow().replace(microsecond=0) - dt.timedelta(minutes=10)
    city.publish([(light, "telemetry", reading(t0, power_w=30.0, dimming_pct=80))])
    live = city.wait_state(light, lambda s: True, "the first reading")

    city.publish([(light, "telemetry", reading(t0 - dt.timedelta(minutes=5), power_w=12.0, fault="lamp_failure"))])
    eventually(lambda: len(city.points(light)) == 2, "the late reading in the series")
    state = city.state(light)
    assert when(state["ts"]) == t0 and state["values"] == {"power_w": 30.0, "dimming_pct": 80}
    assert state["received_at"] == live["received_at"]
    assert when(state["last_seen"]) >= when(live["last_seen"])  # still a sign of life

    city.publish([(light, "telemetry", reading(t0 + dt.timedelta(minutes=1), power_w=31.0))])
    state = city.wait_state(light, lambda s: s["values"]["power_w"] == 31.0, "the newer reading")
    assert when(state["ts"]) == t0 + dt.timedelta(minutes=1)
    assert state["values"] == {"power_w": 31.0, "dimming_pct": 80}
    assert [p["value"] for p in city.points(light, metric="power_w")] == [12.0, 30.0, 31.0]


def test_readings_in_one_batch_merge_in_device_time_order(city, stack):
    """The twin after several messages must not depend on how the worker happened to batch them."""
    from citypilot.ingest.normalise import AcceptedReading
    from citypilot.ingest.store import StagedReading, apply_batch

    one, two = city.import_assets({"id": "SL-1", "kind": "street_light"}, {"id": "SL-2", "kind": "street_light"})
    t0 = utcnow().replace(microsecond=0) - dt.timedelta(minutes=3)
    # SL-1: the two messages reach the worker in separate batches.
    city.publish([(one, "telemetry", reading(t0, power_w=10.0, dimming_pct=100))])
    city.wait_state(one, lambda s: True, "the first reading")
    city.publish([(one, "telemetry", reading(t0 + dt.timedelta(seconds=1), power_w=20.0))])
    city.wait_state(one, lambda s: s["values"]["power_w"] == 20.0, "the power reading")
    city.publish([(one, "telemetry", reading(t0 + dt.timedelta(seconds=2), dimming_pct=50))])
    separate = city.wait_state(one, lambda s: s["values"]["dimming_pct"] == 50, "the dimming reading")

    # SL-2: the same messages; the last two reach the worker in one batch.
    city.publish([(two, "telemetry", reading(t0, power_w=10.0, dimming_pct=100))])
    city.wait_state(two, lambda s: True, "the first reading")

    async def one_batch() -> None:
        import psycopg

        now = utcnow()
        async with await psycopg.AsyncConnection.connect(stack.endpoints.database_url) as conn:
            async with conn.transaction():
                await apply_batch(conn, [
                    StagedReading(AcceptedReading(two, "street_light", t0 + dt.timedelta(seconds=1), {"power_w": 20.0}), now, 1),
                    StagedReading(AcceptedReading(two, "street_light", t0 + dt.timedelta(seconds=2), {"dimming_pct": 50}), now, 2),
                ], [], [])

    asyncio.run(one_batch())
    assert separate["values"] == {"power_w": 20.0, "dimming_pct": 50}
    assert city.state(two)["values"] == separate["values"]


# --- bad input ------------------------------------------------------------------------------------------

def test_every_bad_input_is_dead_lettered_with_its_reason_and_bytes(city):
    light, bus, light_b = city.import_assets({"id": "SL-1", "kind": "street_light"}, {"id": "BUS-1", "kind": "bus"},
                                             {"id": "SL-2", "kind": "street_light"})
    ghost = city.id("GHOST")
    now = utcnow().replace(microsecond=0)
    cases: list[tuple[str, str, bytes] | tuple[str, str, bytes, str]] = [
        ("malformed", light, b'{"ts": "' + iso(now).encode() + b'", "values": {"power_w": 3'),
        ("malformed", light, b'[1, 2, 3]'),
        ("malformed", light, b'\xff\xfe not even text'),
        ("unknown_device", ghost, reading(now, power_w=1.0)),
        ("schema", light, reading(now - dt.timedelta(seconds=1), colour="red")),
        ("schema", light, reading(now - dt.timedelta(seconds=2), power_w="high")),
        ("schema", light, json.dumps({"type": "Vehicle", "values": {"power_w": 1.0}}).encode()),
        ("invalid_value", light, reading(now - dt.timedelta(seconds=3), power_w=-5.0)),
        ("future_timestamp", light, reading(now + dt.timedelta(hours=1), power_w=5.0)),
        ("too_old", light, reading(dt.datetime(1996, 5, 4, 12, tzinfo=dt.timezone.utc), power_w=5.0)),
        ("off_map", bus, reading(now, lat=PARIS[0], lon=PARIS[1], speed_kmh=30.0)),
        ("oversized", light, b'{"values": {"power_w": 1}, "padding": "' + b"y" * (300 * 1024) + b'"}'),
        ("malformed", light, reading(now, power_w=2.0), "diagnostics"),  # not a channel devices publish on
        ("malformed", light, json.dumps({"code": "Lamp Failure!"}).encode(), "event"),
        ("invalid_value", light, json.dumps({"ts": iso(now), "code": "lamp_failure", "severity": "apocalyptic"}).encode(),
         "event"),
    ]
    cases = [(c[0], c[1], c[2], c[3] if len(c) > 3 else "telemetry") for c in cases]
    expected: dict[str, int] = {}
    for code, *_ in cases:
        expected[code] = expected.get(code, 0) + 1
    expected["wrong_topic"] = 1
    metrics_before = city.metrics()

    city.publish([(device, channel, payload) for _, device, payload, channel in cases])
    # Over HTTP, the credential of SL-1 used to publish as SL-2.
    _, token = city.credential(light)
    spoofed = reading(now, power_w=77.0)
    r = city.post(token, b'{"messages": [{"device": "%s", "channel": "telemetry", "payload": %s}]}'
                  % (light_b.encode(), spoofed))
    assert r.status_code == 202, r.text
    # The stream keeps flowing: good messages after the bad ones are applied.
    city.publish([(light, "telemetry", reading(now, power_w=33.0)), (bus, "telemetry", reading(now, lat=47.33, lon=5.03))])
    city.wait_state(light, lambda s: s["values"] == {"power_w": 33.0}, "the good message after the bad ones")
    city.wait_state(bus, lambda s: s["values"] == {"lat": 47.33, "lon": 5.03}, "the bus's good position")

    by_device = {light: city.wait_dead_letters(light, sum(1 for _, d, *_ in cases if d == light)),
                 bus: city.wait_dead_letters(bus, 1), ghost: city.wait_dead_letters(ghost, 1),
                 light_b: city.wait_dead_letters(light_b, 1)}
    got = sorted((d["reason_code"], d["device_id"], base64_payload(d)[:65536]) for items in by_device.values() for d in items)
    want = sorted([(code, device, payload[:65536]) for code, device, payload, _ in cases] + [("wrong_topic", light_b, spoofed)])
    assert got == want
    for items in by_device.values():
        for letter in items:
            assert letter["reason"] and letter["payload_size"] >= len(base64_payload(letter))
    wrong = by_device[light_b][0]
    assert wrong["source"] == "http" and light in wrong["reason"]
    assert city.state(light_b) is None  # nothing applied to the device whose topic was used
    assert city.points(light) == [{"ts": city.points(light)[0]["ts"], "values": {"power_w": 33.0}}]
    assert [d["reason_code"] for d in city.dead_letters(light, reason="too_old")] == ["too_old"]

    metrics_after = city.metrics()
    for code, count in expected.items():
        grown = dead_letter_total(metrics_after, code) - dead_letter_total(metrics_before, code)
        assert grown >= count, (code, grown)


def test_bytes_the_database_cannot_store_are_dead_lettered_and_the_stream_keeps_flowing(city):
    """NUL characters and absurd nesting: valid JSON that PostgreSQL (or Python) cannot take as is."""
    light, = city.import_assets({"id": "SL-1", "kind": "street_light"})
    now = utcnow().replace(microsecond=0)
    cases = {
        "invalid_value": [
            json.dumps({"ts": iso(now), "code": "lamp_failure", "message": "lamp\u0000 failed"}).encode(),
            json.dumps({"ts": iso(now), "code": "door_open", "data": {"note": "a\u0000b"}}).encode(),
            b'{"code": "deep", "data": ' + b'{"a": ' * 100 + b'1' + b'}' * 100 + b'}',
        ],
        "malformed": [
            b'{"values": {"power_w": 1}, "a\\u0000b": 1}',  # msgspec quotes the unknown field in its reason
            b'{"values": {"power_w": ' + b'[' * 5000 + b']' * 5000 + b'}}',
        ],
    }
    sent = [(code, payload, "event" if code == "invalid_value" else "telemetry")
            for code, payloads in cases.items() for payload in payloads]
    city.publish([(light, channel, payload) for _, payload, channel in sent])
    city.publish([(light, "telemetry", reading(now, power_w=12.5))])
    city.wait_state(light, lambda s: s["values"] == {"power_w": 12.5}, "the reading after the bad messages")
    letters = city.wait_dead_letters(light, len(sent))
    assert sorted((d["reason_code"], base64_payload(d)) for d in letters) == sorted((c, p) for c, p, _ in sent)
    assert all("\x00" not in d["reason"] for d in letters)


def test_no_message_vanishes(city):
    """Good and bad readings interleaved: applied readings and dead letters account for every one."""
    devices = city.import_assets(*({"id": f"SL-{i}", "kind": "street_light"} for i in range(4)))
    base = utcnow().replace(microsecond=0) - dt.timedelta(hours=1)
    messages, good = [], {d: 0 for d in devices}
    bad_kinds = [b'{"values": ', reading(base, power_w=-1.0), reading(base, colour="blue"),
                 reading(base + dt.timedelta(days=1), power_w=1.0)]
    for i in range(60):
        device = devices[i % 4]
        if i % 3 == 2:
            messages.append((device, "telemetry", bad_kinds[(i // 3) % 4]))
        else:
            messages.append((device, "telemetry", reading(base + dt.timedelta(seconds=i), power_w=float(i))))
            good[device] += 1
    seqs = city.publish(messages)
    assert len(set(seqs)) == len(messages)  # all durably in the stream

    def accounted() -> int:
        return sum(len(city.points(d)) + len(city.dead_letters(d)) for d in devices)

    eventually(lambda: accounted() >= len(messages), f"{len(messages)} messages applied or dead-lettered")
    time.sleep(0.3)
    assert accounted() == len(messages)
    for device in devices:
        assert len(city.points(device)) == good[device]
        assert {d["stream_seq"] for d in city.dead_letters(device)} <= set(seqs)


# --- offline detection -----------------------------------------------------------------------------------

def test_a_silent_bus_goes_offline_on_time_and_back_online(city):
    bus, = city.import_assets({"id": "BUS-1", "kind": "bus"})
    city.publish([(bus, "telemetry", reading(utcnow(), lat=47.32, lon=5.04, speed_kmh=20.0))])
    state = city.wait_state(bus, lambda s: s["connectivity"] == "online", "the bus online")
    deadline = when(state["last_seen"]) + dt.timedelta(seconds=BUS_DEADLINE_S)

    offline = city.wait_state(bus, lambda s: s["connectivity"] == "offline", "the bus offline", timeout=BUS_DEADLINE_S + 15)
    noticed = utcnow()
    assert deadline <= noticed <= deadline + dt.timedelta(seconds=10), (deadline, noticed)
    assert deadline <= when(offline["offline_since"]) <= noticed
    listed = city.client.get("/api/v1/twin", params={"q": city.uid, "connectivity": "offline"}, headers=city.headers())
    assert [item["id"] for item in listed.json()["items"]] == [bus]

    city.publish([(bus, "telemetry", reading(utcnow(), lat=47.321, lon=5.041))])
    back = city.wait_state(bus, lambda s: s["connectivity"] == "online", "the bus back online")
    assert back["offline_since"] is None and back["values"]["lat"] == 47.321


async def _check_connectivity(stack: Any) -> list[dict[str, Any]]:
    import nats
    from psycopg_pool import AsyncConnectionPool

    from citypilot.equipment.catalog import default_catalog
    from citypilot.ingest.connectivity import ConnectivityWatch

    nc = await nats.connect(stack.endpoints.nats_url)
    try:
        async with AsyncConnectionPool(stack.endpoints.database_url, min_size=1, max_size=2, open=False) as pool:
            await pool.open(wait=True, timeout=15)
            watch = ConnectivityWatch(pool, nc, default_catalog(), grace_percent=stack.config.offline_grace_percent,
                                      min_grace_s=stack.config.offline_min_grace_s,
                                      retention_days=stack.config.ingest_retention_days,
                                      database_url=stack.endpoints.database_url)
            changes = await watch.check()
        await nc.flush()
        return changes
    finally:
        await nc.close()


def test_a_silent_gateway_makes_its_lights_unreachable_not_offline(city, stack):
    cabinet, *lights = city.import_assets({"id": "CAB-1", "kind": "lighting_cabinet"},
                                          *({"id": f"SL-{i}", "kind": "street_light", "reported_by": "CAB-1"}
                                            for i in range(1, 5)))
    now = utcnow()

    def report(assets: list[str]) -> None:
        city.publish([(cabinet, "telemetry", json.dumps({"ts": iso(utcnow()), "readings": [
            {"asset": a, "values": {"mains": "ok"} if a == cabinet else {"power_w": 30.0}} for a in assets]}).encode())])

    def silence(asset_ids: list[str], seconds: int) -> None:
        city.sql("UPDATE twin SET last_seen = now() - make_interval(secs => %s) WHERE asset_id = ANY(%s)",
                 (seconds, asset_ids))

    def connectivity() -> dict[str, str]:
        return {a: (city.state(a) or {}).get("connectivity", "never") for a in [cabinet, *lights]}

    city.introduce(cabinet)
    report([cabinet, *lights])
    eventually(lambda: set(connectivity().values()) == {"online"}, "cabinet and lights online")
    with BusListener(stack.endpoints.nats_url, "citypilot.connectivity.>") as events:
        # A light silent past its own deadline while its cabinet is fine: its own failure.
        silence([lights[3]], 2 * 3600)
        changes = asyncio.run(_check_connectivity(stack))
        eventually(lambda: connectivity()[lights[3]] == "offline", "the silent light offline")
        assert [c["connectivity"] for c in changes if c["asset"] == lights[3]] in ([], ["offline"])

        # The cabinet goes silent (one light with it): what it reports for is unreachable, not offline.
        silence([cabinet], 3600)
        silence([lights[2]], 2 * 3600)
        changes += asyncio.run(_check_connectivity(stack))
        expected = {cabinet: "offline", lights[0]: "unreachable", lights[1]: "unreachable",
                    lights[2]: "unreachable", lights[3]: "offline"}
        eventually(lambda: connectivity() == expected, "the cabinet offline, its lights unreachable")
        mine = [c for c in changes if c["asset"] in expected]
        assert all(c["connectivity"] == "unreachable" and c["via"] == cabinet for c in mine if c["asset"] in lights[:3])
        eventually(lambda: {a: events.about(a)[-1]["connectivity"] for a in expected if events.about(a)} == expected,
                   "the transitions announced on the bus")
        assert not [b for a in lights[:3] for b in events.about(a) if b["connectivity"] == "offline"]
        listed = city.client.get("/api/v1/twin", params={"q": city.uid, "connectivity": "unreachable"},
                                 headers=city.headers()).json()["items"]
        assert sorted(item["id"] for item in listed) == sorted(lights[:3])

    # The cabinet is back and reports for two of its lights; the third stays silent.
    report([cabinet, *lights[:2]])
    eventually(lambda: connectivity() == {**expected, cabinet: "online", lights[0]: "online", lights[1]: "online"},
               "the cabinet and the lights it reported for online")
    # With its gateway back, the silent light is silent past its own deadline: offline, its own failure.
    asyncio.run(_check_connectivity(stack))
    eventually(lambda: connectivity()[lights[2]] == "offline", "the light its cabinet no longer reports for offline")
    assert now <= when(city.state(lights[2])["offline_since"])


# --- scale-out: a worker killed mid-run ------------------------------------------------------------------

async def _consumer(nats_url: str, ack_wait: float | None = None) -> Any:
    """The ingest consumers' state, summed over the partitions; with ``ack_wait``, set it on each first."""
    import types

    import nats

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()

        async def infos() -> list[Any]:
            return [i for i in await js.consumers_info(protocol.STREAM) if i.name.startswith("ingest-")]

        if ack_wait is not None:
            for info in await infos():
                await js.add_consumer(protocol.STREAM, dataclasses.replace(info.config, ack_wait=ack_wait))
        found = await infos()
        return types.SimpleNamespace(num_pending=sum(i.num_pending for i in found),
                                     num_ack_pending=sum(i.num_ack_pending for i in found),
                                     num_redelivered=sum(i.num_redelivered for i in found),
                                     ack_wait=found[0].config.ack_wait, consumers=len(found))
    finally:
        await nc.close()


async def publish_burst(nats_url: str, messages: list[tuple[str, str, bytes]]) -> None:
    import nats

    nc = await nats.connect(nats_url)
    try:
        for device, channel, payload in messages:
            await nc.publish(protocol.subject(device, channel), payload)
        await nc.flush(timeout=10)
    finally:
        await nc.close()


def _wait_for_line(process: subprocess.Popen, words: str, timeout: float, *, logs: bool = False) -> str:
    """Wait for a line of the process's output (``logs``: of its log, on stderr) that contains ``words``."""
    deadline = time.monotonic() + timeout
    stream = process.stderr if logs else process.stdout
    assert stream is not None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"citypilot worker exited ({process.returncode}): {process.stderr.read().decode()[-2000:]}")
        ready, _, _ = select.select([stream], [], [], 0.2)
        if ready:
            line = stream.readline().decode()
            if words in line:
                return line
    raise AssertionError(f"citypilot worker did not say {words!r} within {timeout} s")


def test_a_killed_worker_loses_nothing_and_applies_nothing_twice(city, stack):
    devices = city.import_assets(*({"id": f"SL-{i:02d}", "kind": "street_light"} for i in range(20)))
    per_device = 600
    total = len(devices) * per_device
    base = utcnow().replace(microsecond=0) - dt.timedelta(hours=2)
    messages = [(device, "telemetry", reading(base + dt.timedelta(seconds=n), power_w=float(n % 500)))
                for n in range(per_device) for device in devices]

    def applied() -> int:
        return city.sql("SELECT count(*) FROM readings WHERE asset_id LIKE %s", (f"{city.uid}-%",))[0][0]

    env = {**os.environ, "CITYPILOT_DATABASE_URL": stack.endpoints.database_url,
           "CITYPILOT_NATS_URL": stack.endpoints.nats_url, "CITYPILOT_DATA_DIR": str(stack.config.data_dir)}
    ack_wait = 6.0  # the consumer's 30 s redelivery delay, shortened for the test and restored after
    before = asyncio.run(_consumer(stack.endpoints.nats_url))
    if before.consumers == 1:
        pytest.skip("NATS 2.9 has no subject transforms: one partition, held by serve's worker (the killed "
                    "worker would hold nothing); the hand-over is tested on the embedded NATS")
    original = before.ack_wait
    asyncio.run(_consumer(stack.endpoints.nats_url, ack_wait=ack_wait))
    worker = subprocess.Popen([CITYPILOT, "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_line(worker, "ingest worker", timeout=30)
        # serve's worker gives back half of the partitions, and this one takes them
        _wait_for_line(worker, "partition taken", timeout=15, logs=True)
        # A burst, as after a power cut: published at once (core NATS, as the MQTT listener does), so that
        # both workers take full batches. Had the stream missed one, the final count would say so.
        asyncio.run(publish_burst(stack.endpoints.nats_url, messages))
        eventually(lambda: applied() >= total // 10, "the workers under way", interval=0.005)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        killed_at = time.monotonic()
        at_kill = applied()
        assert at_kill < total, "the workers finished before the kill: publish more"

        # The dead worker's unacknowledged messages wait in the stream (some unacknowledged, readings
        # missing; the rest of its partitions queued behind them, in order) until their redelivery delay
        # passes; then the remaining worker, which took over its partitions, applies them.
        stranded: list[tuple[float, int, int]] = []
        samples: list[tuple[float, int, int, int]] = []  # (s since the kill, pending, unacknowledged, applied)

        def stalled() -> bool:
            info = asyncio.run(_consumer(stack.endpoints.nats_url))
            count = applied()
            if info.num_ack_pending > 0 and count < total:
                if stranded and stranded[-1][1] != count:  # still moving: the live worker's own batch
                    stranded.clear()
                stranded.append((time.monotonic(), count, info.num_ack_pending))
            else:
                stranded.clear()
            samples.append((round(time.monotonic() - killed_at, 2), info.num_pending, info.num_ack_pending, count))
            return len(stranded) >= 2 and stranded[-1][0] - stranded[0][0] >= 1.0

        try:
            eventually(stalled, "messages stranded with the killed worker", timeout=ack_wait + 3, interval=0.1)
        except AssertionError:
            raise AssertionError(f"no stranded messages seen after the kill (at {at_kill} of {total} applied): "
                                 f"{samples[-40:]}") from None
        eventually(lambda: applied() == total, f"all {total} readings applied", timeout=ack_wait + 20)
        time.sleep(0.5)
        assert applied() == total
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        assert asyncio.run(_consumer(stack.endpoints.nats_url, ack_wait=original)).ack_wait == original
    last = base + dt.timedelta(seconds=per_device - 1)
    for device in devices[:3]:
        state = city.state(device)
        assert when(state["ts"]) == last and state["values"] == {"power_w": float((per_device - 1) % 500)}
    assert city.sql("SELECT count(*) FROM dead_letters WHERE device_id LIKE %s", (f"{city.uid}-%",)) == [(0,)]
    assert city.sql("SELECT count(DISTINCT (asset_id, ts)) FROM readings WHERE asset_id LIKE %s",
                    (f"{city.uid}-%",)) == [(total,)]


# --- back-pressure: a stalled database ----------------------------------------------------------------

def test_a_stalled_database_leaves_messages_in_the_stream_not_in_memory(city, stack):
    """While PostgreSQL does not answer, the server hands the worker at most MAX_ACK_PENDING messages of a
    partition (one device's messages all go to one) and
    keeps the rest in the stream; the worker's heartbeat stops redeliveries (no copies pile up in
    memory) past the ack wait; once the database answers again, every message is applied."""
    import psycopg

    from citypilot.ingest.stream import ACK_WAIT_S, MAX_ACK_PENDING

    lights = city.import_assets(*({"id": f"SL-{i}", "kind": "street_light"} for i in range(40)))
    t0 = utcnow().replace(microsecond=0) - dt.timedelta(hours=1)
    total = MAX_ACK_PENDING + 4000
    messages = [(lights[0], "telemetry", reading(t0 + dt.timedelta(milliseconds=i), power_w=float(i % 90)))
                for i in range(total)]
    before = asyncio.run(_consumer(stack.endpoints.nats_url)).num_redelivered
    blocker = psycopg.connect(stack.endpoints.database_url)
    try:
        blocker.execute("LOCK TABLE twin IN ACCESS EXCLUSIVE MODE")  # every ingest batch now waits
        asyncio.run(publish_burst(stack.endpoints.nats_url, messages))
        info = eventually(lambda: (lambda i: i if i.num_ack_pending >= MAX_ACK_PENDING // 2
                                   and i.num_pending + i.num_ack_pending >= total else None)(
            asyncio.run(_consumer(stack.endpoints.nats_url))), "every message stored, the worker holding what it may")
        assert info.num_ack_pending <= MAX_ACK_PENDING
        assert info.num_pending >= total - MAX_ACK_PENDING  # the rest waits in the stream, on disk
        time.sleep(ACK_WAIT_S + 2)  # past the ack wait: without the heartbeat, everything would be redelivered
        info = asyncio.run(_consumer(stack.endpoints.nats_url))
        assert info.num_redelivered == before and info.num_ack_pending <= MAX_ACK_PENDING
    finally:
        blocker.rollback()
        blocker.close()
    stored = eventually(lambda: (lambda n: n if n == total else None)(city.sql(
        "SELECT count(*) FROM readings WHERE asset_id = ANY(%s)", (lights,))[0][0]),
        "every reading applied once the database answers", timeout=60)
    assert stored == total
