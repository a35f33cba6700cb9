"""The ingest stream and its consumer on JetStream, created or brought up to date at start.

Work-queue retention: a message stays in the stream until a worker acknowledges it, after its batch
is committed to PostgreSQL; when the database is slow, messages wait on disk (bounded by
``max_bytes``), not in memory. One durable pull consumer is shared by every worker: each message goes
to one worker, and a worker that dies leaves its unacknowledged messages to be redelivered to another.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from .protocol import CONSUMER, STREAM, STREAM_SUBJECTS

ACK_WAIT_S = 30.0
MAX_ACK_PENDING = 50_000


def stream_config(max_bytes: int) -> StreamConfig:
    return StreamConfig(
        name=STREAM, subjects=list(STREAM_SUBJECTS), retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE, max_bytes=max_bytes, discard=DiscardPolicy.NEW,
        max_msg_size=1024 * 1024, duplicate_window=120.0,
        description="citypilot device messages awaiting ingestion",
    )


def consumer_config() -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
        ack_wait=ACK_WAIT_S, max_deliver=-1, max_ack_pending=MAX_ACK_PENDING, max_waiting=512,
        description="citypilot ingest workers (shared)",
    )


async def ensure_stream(js: JetStreamContext, max_bytes: int) -> None:
    config = stream_config(max_bytes)
    try:
        await js.stream_info(STREAM)
    except NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)
    try:
        await js.consumer_info(STREAM, CONSUMER)
    except NotFoundError:
        await js.add_consumer(STREAM, consumer_config())
