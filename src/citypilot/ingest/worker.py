"""The ingest worker: fetch a batch from JetStream, validate it, commit it, then acknowledge it.

At-least-once: a message is acknowledged only after its batch is committed, so a worker killed at any
moment loses nothing (its messages are redelivered), and the store's idempotence makes the redelivery
harmless. Back-pressure: the next batch is fetched only when the previous one is committed, so memory
holds one batch whatever the rate; the rest waits in the stream.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import Counter, Gauge, Histogram
from psycopg_pool import AsyncConnectionPool

from citypilot.db import use_fast_json
from citypilot.equipment.catalog import Catalog

from . import protocol
from .normalise import AssetInfo, Limits, Outcome, normalise
from .store import BatchResult, DeadLetter, PartitionManager, RegistryCache, StagedReading, apply_batch, day_of, encode_deltas
from .stream import ensure_stream

log = logging.getLogger("citypilot.ingest")
_encoder = msgspec.json.Encoder()

MESSAGES = Counter("citypilot_ingest_messages_total", "Device messages taken from the stream", ["outcome"])
READINGS = Counter("citypilot_ingest_readings_total", "Readings accepted (one per asset and timestamp)")
DEAD_LETTERS = Counter("citypilot_ingest_dead_letters_total", "Messages or readings dead-lettered", ["reason"])
BATCH_SECONDS = Histogram("citypilot_ingest_batch_seconds", "Time to validate and commit one batch",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
LAG = Gauge("citypilot_ingest_pending_messages", "Messages waiting in the ingest stream")


@dataclass
class Parsed:
    msg: Msg
    device: str | None
    channel: str | None
    seq: int
    source: str
    authenticated: str | None


class IngestWorker:
    def __init__(self, nc: NATS, pool: AsyncConnectionPool, catalog: Catalog, limits: Limits, *,
                 batch_size: int = 1000, stream_max_bytes: int = 10 * 1024**3, name: str = "ingest") -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.pool = pool
        self.catalog = catalog
        self.limits = limits
        self.batch_size = batch_size
        self.stream_max_bytes = stream_max_bytes
        self.name = name
        self.cache = RegistryCache()
        self.partitions = PartitionManager()
        self._last_refresh = 0.0
        self.processed = 0
        use_fast_json()

    async def start(self) -> None:
        await ensure_stream(self.js, self.stream_max_bytes)
        async with self.pool.connection() as conn:
            count = await self.cache.refresh(conn)
        self._last_refresh = time.monotonic()
        log.info("ingest worker ready", extra={"worker": self.name, "registry_assets": count})
        self.subscription = await self.js.pull_subscribe_bind(protocol.CONSUMER, protocol.STREAM)

    async def run(self, stop: asyncio.Event) -> None:
        """Process batches until ``stop`` is set; transient failures wait and retry."""
        while not stop.is_set():
            try:
                msgs = await self.subscription.fetch(self.batch_size, timeout=0.5)
            except (asyncio.TimeoutError, TimeoutError):
                continue
            except Exception as exc:  # NATS reconnecting, etc.
                log.warning("fetch failed", extra={"worker": self.name, "error": f"{type(exc).__name__}: {exc}"})
                await asyncio.sleep(0.5)
                continue
            await self.handle(msgs)

    async def handle(self, msgs: list[Msg]) -> None:
        """Apply one batch, retrying while the database is unavailable (messages stay unacknowledged)."""
        while True:
            try:
                await self.process(msgs)
                return
            except (psycopg.OperationalError, psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                log.warning("batch not committed; retrying", extra={"worker": self.name, "error": str(exc)[:300]})
                await asyncio.sleep(1.0)
                for msg in msgs:  # keep them ours while we retry
                    try:
                        await msg.in_progress()
                    except Exception:
                        pass

    def _parse(self, msg: Msg) -> Parsed:
        headers = msg.headers or {}
        parsed = protocol.parse_subject(msg.subject)
        device, channel = parsed if parsed else (None, None)
        source = headers.get(protocol.SOURCE_HEADER, "mqtt")
        authenticated = headers.get(protocol.AUTHENTICATED_DEVICE_HEADER) if source == "http" else None
        return Parsed(msg, device, channel, stream_sequence(msg.reply), source, authenticated)

    def _normalise(self, item: Parsed, received_at: dt.datetime, misses: set[str]) -> Outcome:
        def lookup(asset_id: str) -> AssetInfo | None:
            found = self.cache.get(asset_id)
            if found is None:
                misses.add(asset_id)
            return found

        if item.device is None or item.channel is None:
            return Outcome(None).reject("malformed", f"not an inbound subject: {item.msg.subject}")
        return normalise(item.device, item.channel, item.msg.data, received_at=received_at, lookup=lookup,
                         catalog=self.catalog, limits=self.limits, authenticated_device=item.authenticated)

    async def process(self, msgs: list[Msg]) -> BatchResult:
        started = time.perf_counter()
        received_at = dt.datetime.now(dt.timezone.utc)
        items = [self._parse(m) for m in msgs]
        misses: set[str] = set()
        outcomes = [self._normalise(item, received_at, misses) for item in items]
        async with self.pool.connection() as conn:
            if time.monotonic() - self._last_refresh > 10:
                await self.cache.refresh(conn)
                self._last_refresh = time.monotonic()
            if misses:
                before = set(misses)
                await self.cache.resolve(conn, before, time.monotonic())
                if any(self.cache.get(i) is not None for i in before):  # new assets: validate again
                    outcomes = [self._normalise(item, received_at, set()) for item in items]

            readings: list[StagedReading] = []
            events = []
            dead: list[DeadLetter] = []
            for item, outcome in zip(items, outcomes):
                readings += [StagedReading(r, received_at, item.seq) for r in outcome.readings]
                events += [(e, received_at) for e in outcome.events]
                dead += [DeadLetter(item.source, item.msg.subject, item.device, rej.asset_id, rej.reason_code,
                                    rej.reason, item.msg.data, item.seq) for rej in outcome.rejections]
                if not outcome.readings and not outcome.events:
                    MESSAGES.labels("dead_lettered").inc()
                else:
                    MESSAGES.labels("applied" if not outcome.rejections else "partly_applied").inc()
            await self.partitions.ensure(conn, {day_of(s.reading.ts) for s in readings})
            async with conn.transaction():
                result = await apply_batch(conn, readings, events, dead)
        # Committed: only now may the stream forget these messages. (An ack is an empty message to the
        # reply subject; published directly, without building each message's metadata.)
        for msg in msgs:
            await self.nc.publish(msg.reply, b"")
        READINGS.inc(result.readings_inserted)
        for letter in dead:
            DEAD_LETTERS.labels(letter.reason_code).inc()
        await self._publish(result)
        self.processed += len(msgs)
        BATCH_SECONDS.observe(time.perf_counter() - started)
        return result

    async def _publish(self, result: BatchResult) -> None:
        """Tell the rest of the system what changed, one message per kind and batch (core NATS: the twin
        in PostgreSQL is the truth; a subscriber that misses a delta reads the twin)."""
        for kind, payload in encode_deltas(result.twin_changes).items():
            await self.nc.publish(protocol.TWIN_DELTA_SUBJECT.format(kind=kind), payload)
        for change in result.twin_changes:
            if change.back_online:
                await self.nc.publish(protocol.CONNECTIVITY_SUBJECT.format(kind=change.kind, asset=change.asset_id),
                                      _encoder.encode({"asset": change.asset_id, "kind": change.kind,
                                                       "connectivity": "online"}))
        for event in result.events_inserted:
            await self.nc.publish(protocol.DEVICE_EVENT_SUBJECT.format(kind=event.kind, asset=event.asset_id),
                                  _encoder.encode({"asset": event.asset_id, "ts": event.ts, "code": event.code,
                                                   "severity": event.severity, "message": event.message,
                                                   "data": event.data}))


def stream_sequence(reply: str) -> int:
    """The stream sequence of a JetStream message, read from its ack subject (cheaper than nats-py's
    full metadata): ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``,
    or the newer ``$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<stream seq>...``."""
    parts = reply.split(".")
    return int(parts[5] if len(parts) == 9 else parts[7])


async def pending_messages(js: Any) -> int:
    """Messages waiting for a worker (for /metrics and the benchmark)."""
    info = await js.consumer_info(protocol.STREAM, protocol.CONSUMER)
    return int(info.num_pending) + int(info.num_ack_pending)
