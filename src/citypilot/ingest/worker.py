"""The ingest worker: take a batch delivered by JetStream, validate it, commit it, then acknowledge it.

At-least-once: a message is acknowledged only after its batch is committed, so a worker killed at any
moment loses nothing (its messages are redelivered), and the store's idempotence makes the redelivery
harmless. Back-pressure: the server delivers at most the consumer's ``max_ack_pending`` messages that
are not yet acknowledged, so a worker's memory is bounded whatever the rate; the rest waits in the
stream, on disk.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass

import msgspec
import psycopg
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import Counter, Histogram
from psycopg_pool import AsyncConnectionPool

from citypilot.db import use_fast_json
from citypilot.equipment.catalog import Catalog

from . import protocol
from .normalise import AssetInfo, Limits, Outcome, normalise
from .store import BatchResult, DeadLetter, PartitionManager, RegistryCache, StagedReading, apply_batch, day_of, encode_deltas
from .stream import ACK_WAIT_S, DELIVER_GROUP, DELIVER_SUBJECT, MAX_ACK_PENDING, ensure_stream

log = logging.getLogger("citypilot.ingest")
_encoder = msgspec.json.Encoder()
BATCH_LINGER_S = 0.02

MESSAGES = Counter("citypilot_ingest_messages_total", "Device messages taken from the stream", ["outcome"])
READINGS = Counter("citypilot_ingest_readings_total", "Readings accepted (one per asset and timestamp)")
DEAD_LETTERS = Counter("citypilot_ingest_dead_letters_total", "Messages or readings dead-lettered", ["reason"])
BATCH_SECONDS = Histogram("citypilot_ingest_batch_seconds", "Time to validate and commit one batch",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
STRAY = Counter("citypilot_ingest_stray_messages_total", "Messages on the deliver subject not sent by the consumer")


@dataclass
class Parsed:
    msg: Msg
    device: str | None
    channel: str | None
    seq: int
    received_at: dt.datetime  # when the broker stored it (the stream's clock), not when we got to it
    source: str
    authenticated: str | None


class IngestWorker:
    def __init__(self, nc: NATS, pool: AsyncConnectionPool, catalog: Catalog, limits: Limits, *,
                 batch_size: int = 1000, stream_max_bytes: int = 10 * 1024**3, stream_replicas: int = 1,
                 name: str = "ingest") -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.pool = pool
        self.catalog = catalog
        self.limits = limits
        self.batch_size = batch_size
        self.stream_max_bytes = stream_max_bytes
        self.stream_replicas = stream_replicas
        self.name = name
        self.cache = RegistryCache()
        self.partitions = PartitionManager()
        self._last_refresh = 0.0
        self._buffer: list[Msg] = []
        self._held: dict[int, str] = {}  # stream seq -> latest ack subject, of messages we hold unacknowledged
        self._wake = asyncio.Event()
        use_fast_json()

    async def start(self) -> None:
        await ensure_stream(self.js, self.stream_max_bytes, self.stream_replicas)
        async with self.pool.connection() as conn:
            count = await self.cache.refresh(conn)
        self._last_refresh = time.monotonic()
        self.subscription = await self.nc.subscribe(DELIVER_SUBJECT, queue=DELIVER_GROUP, cb=self._on_msg,
                                                    pending_msgs_limit=MAX_ACK_PENDING * 2,
                                                    pending_bytes_limit=512 * 1024 * 1024)
        log.info("ingest worker ready", extra={"worker": self.name, "registry_assets": count})

    async def _on_msg(self, msg: Msg) -> None:
        info = ack_info(msg.reply)
        if info is not None:
            if info[0] in self._held:  # a redelivery of a message we still hold: keep one copy, its latest reply
                self._held[info[0]] = msg.reply
                return
            self._held[info[0]] = msg.reply
        self._buffer.append(msg)
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    async def _ack(self, msg: Msg) -> None:
        """Acknowledge (through the latest delivery's subject) and forget a message."""
        info = ack_info(msg.reply)
        reply = self._held.pop(info[0], msg.reply) if info is not None else msg.reply
        if reply:
            await self.nc.publish(reply, b"")

    async def _keep_held_messages(self, stop: asyncio.Event) -> None:
        """Tell the server every few seconds that the messages we hold are being worked on, so that a
        slow database does not make it redeliver them (which would duplicate them in memory); if this
        process dies, the heartbeats stop and the messages go to another worker after ACK_WAIT_S."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=ACK_WAIT_S / 2.5)
            except asyncio.TimeoutError:
                pass
            for reply in list(self._held.values()):
                await self.nc.publish(reply, b"+WPI")

    async def run(self, stop: asyncio.Event) -> None:
        """Commit batches until ``stop`` is set, then finish what was delivered and leave the group."""
        heartbeat = asyncio.create_task(self._keep_held_messages(stop), name=f"{self.name}-heartbeat")
        while not stop.is_set():
            if len(self._buffer) < self.batch_size:
                self._wake.clear()
                try:  # linger a little so that batches fill when traffic is light
                    await asyncio.wait_for(self._wake.wait(), timeout=BATCH_LINGER_S)
                except asyncio.TimeoutError:
                    pass
            await self._take_batch()
        await self.subscription.unsubscribe()
        while self._buffer:  # delivered to us before we left: commit them rather than wait for redelivery
            await self._take_batch()
        await heartbeat

    async def _take_batch(self) -> None:
        msgs, self._buffer = self._buffer[:self.batch_size], self._buffer[self.batch_size:]
        if msgs:
            await self.handle(msgs)

    async def handle(self, msgs: list[Msg]) -> None:
        """Apply one batch, retrying while the database is unavailable (messages stay unacknowledged).

        Any other failure is a message the store cannot take (a bug, or input the checks missed): the
        batch is split in two and retried, down to the one message, which is dead-lettered rather than
        blocking the stream for ever.
        """
        while True:
            try:
                await self.process(msgs)
                return
            except (psycopg.OperationalError, psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                log.warning("batch not committed; retrying", extra={"worker": self.name, "error": str(exc)[:300]})
                await asyncio.sleep(1.0)  # the heartbeat keeps the messages ours meanwhile
            except Exception as exc:
                if len(msgs) > 1:
                    half = len(msgs) // 2
                    await self.handle(msgs[:half])
                    await self.handle(msgs[half:])
                    return
                await self._dead_letter_alone(msgs[0], exc)
                return

    async def _dead_letter_alone(self, msg: Msg, exc: Exception) -> None:
        log.error("message could not be applied; dead-lettered", extra={"worker": self.name, "subject": msg.subject,
                                                                         "error": f"{type(exc).__name__}: {exc}"[:500]})
        info = ack_info(msg.reply)
        parsed = protocol.parse_subject(msg.subject)
        letter = DeadLetter("unknown", msg.subject, parsed[0] if parsed else None, None, "store_error",
                            f"{type(exc).__name__}: {exc}", msg.data, info[0] if info else None,
                            dt.datetime.fromtimestamp(info[1] / 1e9, dt.timezone.utc) if info else None)
        async with self.pool.connection() as conn:
            async with conn.transaction():
                await apply_batch(conn, [], [], [letter])
        DEAD_LETTERS.labels("store_error").inc()
        await self._ack(msg)

    def _parse(self, msg: Msg) -> Parsed | None:
        info = ack_info(msg.reply)
        if info is None:  # not delivered by our consumer (someone published on the deliver subject)
            STRAY.inc()
            return None
        seq, stored_ns = info
        headers = msg.headers or {}
        parsed = protocol.parse_subject(msg.subject)
        device, channel = parsed if parsed else (None, None)
        source = headers.get(protocol.SOURCE_HEADER, "mqtt")
        authenticated = headers.get(protocol.AUTHENTICATED_DEVICE_HEADER) if source == "http" else None
        received_at = dt.datetime.fromtimestamp(stored_ns / 1e9, dt.timezone.utc)
        return Parsed(msg, device, channel, seq, received_at, source, authenticated)

    def _normalise(self, item: Parsed, misses: set[str]) -> Outcome:
        def lookup(asset_id: str) -> AssetInfo | None:
            found = self.cache.get(asset_id)
            if found is None:
                misses.add(asset_id)
            return found

        if item.device is None or item.channel is None:
            return Outcome(None).reject("malformed", f"not an inbound subject: {item.msg.subject}")
        if item.channel not in protocol.INBOUND_CHANNELS:
            return Outcome(item.device).reject("malformed", f"unknown channel {item.channel!r} (devices publish on "
                                                            f"{', '.join(protocol.INBOUND_CHANNELS)})")
        return normalise(item.device, item.channel, item.msg.data, received_at=item.received_at, lookup=lookup,
                         catalog=self.catalog, limits=self.limits, authenticated_device=item.authenticated)

    async def process(self, msgs: list[Msg]) -> BatchResult:
        started = time.perf_counter()
        items = [item for item in (self._parse(m) for m in msgs) if item is not None]
        misses: set[str] = set()
        outcomes = [self._normalise(item, misses) for item in items]
        async with self.pool.connection() as conn:
            if time.monotonic() - self._last_refresh > 10:
                await self.cache.refresh(conn)
                self._last_refresh = time.monotonic()
            # Ids missing from the cache are looked up; what is found can reveal more (a new cabinet's
            # lights), so repeat until a pass finds nothing new (bounded: each pass resolves ids).
            looked_up: set[str] = set()
            for _ in range(4):
                new_misses = misses - looked_up
                if not new_misses:
                    break
                looked_up |= new_misses
                await self.cache.resolve(conn, new_misses, time.monotonic())
                if not any(self.cache.get(i) is not None for i in new_misses):
                    break
                misses = set()
                outcomes = [self._normalise(item, misses) for item in items]

            readings: list[StagedReading] = []
            events = []
            dead: list[DeadLetter] = []
            seen: dict[str, tuple[str, dt.datetime]] = {}
            for item, outcome in zip(items, outcomes):
                readings += [StagedReading(r, item.received_at, item.seq) for r in outcome.readings]
                events += [(e, item.received_at) for e in outcome.events]
                dead += [DeadLetter(item.source, item.msg.subject, item.device, rej.asset_id, rej.reason_code,
                                    rej.reason, item.msg.data, item.seq, item.received_at) for rej in outcome.rejections]
                if outcome.readings or outcome.events:
                    device = self.cache.get(item.device or "")
                    if device is not None:  # the sender is alive, whatever it reported about
                        seen[device.id] = (device.kind, max(item.received_at, seen.get(device.id, (None, item.received_at))[1]))
                    MESSAGES.labels("applied" if not outcome.rejections else "partly_applied").inc()
                else:
                    MESSAGES.labels("dead_lettered").inc()
            await self.partitions.ensure(conn, {day_of(s.reading.ts) for s in readings})
            async with conn.transaction():
                result = await apply_batch(conn, readings, events, dead, seen)
        # Committed: only now may the stream forget these messages. (An ack is an empty message to the
        # reply subject; published directly, without building each message's metadata.)
        for msg in msgs:
            await self._ack(msg)
        READINGS.inc(result.readings_inserted)
        for letter in dead:
            DEAD_LETTERS.labels(letter.reason_code).inc()
        try:
            await self._publish(result)
        except Exception as exc:  # committed and acknowledged: never re-run the batch for a notification
            log.warning("twin changes not published", extra={"worker": self.name, "error": f"{type(exc).__name__}: {exc}"})
        BATCH_SECONDS.observe(time.perf_counter() - started)
        return result

    async def _publish(self, result: BatchResult) -> None:
        """Tell the rest of the system what changed, one message per kind and batch (core NATS: the twin
        in PostgreSQL is the truth; a subscriber that misses a delta reads the twin)."""
        for kind, payload in encode_deltas(result.twin_changes):
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


def ack_info(reply: str | None) -> tuple[int, int] | None:
    """(stream sequence, stored-at nanoseconds) of a JetStream message, read from its ack subject (cheaper
    than nats-py's full metadata): ``$JS.ACK.<stream>.<consumer>.<delivered>.<seq>.<consumer seq>.<ns>.<pending>``,
    or the newer ``$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<seq>.<consumer seq>.<ns>...``.
    None for anything else."""
    if not reply or not reply.startswith("$JS.ACK."):
        return None
    parts = reply.split(".")
    try:
        if len(parts) == 9:
            return int(parts[5]), int(parts[7])
        if len(parts) >= 11:
            return int(parts[7]), int(parts[9])
    except ValueError:
        return None
    return None
