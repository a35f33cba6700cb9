"""The ingest stream and its consumers on JetStream, created or brought up to date at start.

Work-queue retention: a message stays in the stream until a worker acknowledges it, after its batch
is committed to PostgreSQL; when the database is slow, messages wait on disk (bounded by
``max_bytes``), not in memory.

Partitioned by device (NATS >= 2.10): a subject transform stores ``citypilot.v1.{device}.{channel}``
as ``citypilot.in.{hash(device) % 16}.{device}.{channel}``, and each partition has its own durable
push consumer. A partition is consumed by one worker at a time (the workers agree through PostgreSQL,
see ``partitions.py``), so a device's messages are applied in order and never by two workers at once.
A last consumer, the *misfit* one, takes what the transform does not (a subject with no channel, or
stored before partitioning): it goes with partition 0. NATS 2.9 has no subject transforms: there the
stream has one partition, consumed by one worker, the others waiting to take over.

Each consumer hands out at most ``MAX_ACK_PENDING`` unacknowledged messages (back-pressure); a worker
that dies leaves its unacknowledged messages to be redelivered to the next owner after ``ACK_WAIT_S``.
(Push consumers rather than pull fetches: nats-py's fetch costs a task and a timer per message, a
quarter of a worker's time. Explicit acknowledgement: a cumulative one would also acknowledge messages
lost in flight during a hand-over; it would save a worker only ~4 % of its time, measured.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    SubjectTransform,
)
from nats.js.errors import NotFoundError

from . import protocol
from .protocol import STREAM, STREAM_SUBJECTS

log = logging.getLogger("citypilot.ingest")

ACK_WAIT_S = 10.0  # a worker holding a message longer (database down) reports progress on it
MAX_ACK_PENDING = 1_000  # per partition: a worker consuming all 16 holds at most 16,000 messages, under two
# seconds of work; holding more only makes messages wait longer in memory (and need progress acks)
MISFIT = -1  # the consumer of what is not partitioned, owned with partition 0


@dataclass(frozen=True)
class Layout:
    """How the stream is cut: ``partitions`` consumers, and whether the server partitions subjects."""

    partitions: int
    transform: bool

    def consumers(self) -> list[int]:
        return list(range(self.partitions)) + ([MISFIT] if self.transform else [])

    def filter_subject(self, partition: int) -> str:
        if not self.transform or partition == MISFIT:
            return f"{protocol.SUBJECT_ROOT}.>"
        return f"{protocol.PARTITIONED_ROOT}.{partition}.>"

    def owner_of(self, consumer: int) -> int:
        """The partition whose owner also consumes this consumer."""
        return 0 if consumer == MISFIT else consumer


def consumer_name(consumer: int) -> str:
    return "ingest-misfit" if consumer == MISFIT else f"ingest-p{consumer:02d}"


def deliver_subject(consumer: int) -> str:
    return f"citypilot.ingest.deliver.{consumer_name(consumer)}"


def layout_for(nc: NATS) -> Layout:
    """16 partitions where the server can transform subjects (2.10 and later), else one."""
    version = nc.connected_server_version
    if (version.major, version.minor) >= (2, 10):
        return Layout(protocol.PARTITIONS, transform=True)
    return Layout(1, transform=False)


def stream_config(max_bytes: int, replicas: int, layout: Layout) -> StreamConfig:
    transform = None
    if layout.transform:
        transform = SubjectTransform(
            src=f"{protocol.SUBJECT_ROOT}.*.>",
            dest=f"{protocol.PARTITIONED_ROOT}.{{{{partition({layout.partitions},1)}}}}.{{{{wildcard(1)}}}}.>")
    return StreamConfig(
        num_replicas=replicas,
        name=STREAM, subjects=list(STREAM_SUBJECTS), retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE, max_bytes=max_bytes, discard=DiscardPolicy.NEW,
        max_msg_size=1024 * 1024, duplicate_window=120.0, subject_transform=transform,
        description="citypilot device messages awaiting ingestion",
    )


def consumer_config(layout: Layout, consumer: int) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=consumer_name(consumer), ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
        ack_wait=ACK_WAIT_S, max_deliver=-1, max_ack_pending=MAX_ACK_PENDING,
        filter_subject=layout.filter_subject(consumer), deliver_subject=deliver_subject(consumer),
        description="citypilot ingest: one partition, consumed by one worker at a time",
    )


async def ensure_stream(nc: NATS, max_bytes: int, replicas: int = 1) -> Layout:
    """Create or update the stream and its consumers for the layout the server allows."""
    js = nc.jetstream()
    layout = layout_for(nc)
    config = stream_config(max_bytes, replicas, layout)
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)
    wanted = {consumer_name(c): c for c in layout.consumers()}
    # Work-queue consumers may not overlap: remove those of an earlier layout first (their unacknowledged
    # messages stay in the stream, and the new consumers deliver them).
    existing = {info.name: info for info in await js.consumers_info(STREAM)}
    for name, info in list(existing.items()):
        consumer = wanted.get(name)
        if consumer is None or info.config.filter_subject != layout.filter_subject(consumer):
            log.info("removing an ingest consumer of an earlier layout", extra={"consumer": name})
            await js.delete_consumer(STREAM, name)
            existing.pop(name)
    for name, consumer in wanted.items():
        config = consumer_config(layout, consumer)
        current = existing[name].config if name in existing else None
        if current is None or (current.deliver_subject, current.max_ack_pending) != (config.deliver_subject,
                                                                                   config.max_ack_pending):
            # (created, or brought up to date; the ack wait is left as an operator may have tuned it)
            if current is not None:
                config.ack_wait = current.ack_wait
            await js.add_consumer(STREAM, config)
    return layout


@dataclass(frozen=True)
class Backlog:
    """What the ingest consumers have not finished: waiting in the stream, and handed out unacknowledged."""

    pending: int
    ack_pending: int
    redelivered: int

    @property
    def total(self) -> int:
        return self.pending + self.ack_pending


async def backlog(js: JetStreamContext) -> Backlog:
    infos = [info for info in await js.consumers_info(STREAM) if info.name.startswith("ingest-")]
    return Backlog(sum(i.num_pending or 0 for i in infos), sum(i.num_ack_pending or 0 for i in infos),
                   sum(i.num_redelivered or 0 for i in infos))
